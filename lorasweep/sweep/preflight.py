"""Fail fast: before anything is written, check that the model and the data can be loaded.

A sweep that cannot load its model or data would fail every trial the same way, once per grid
point, and leave failed trials in the store. ``preflight`` loads what every trial will load first
(the model's config and tokenizer, each task's data) once, in the launching process, and turns a
failure into one :class:`~lorasweep.config.ConfigError` line naming the fix.

Offline: when ``HF_HUB_OFFLINE`` is set, or one quick probe finds the Hub unreachable, the Hub's
offline mode is switched on for this process and its workers, so nothing retries the network.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from ..config import ConfigError, SweepSpec

__all__ = ["hub_offline", "preflight"]

_PROBE_TIMEOUT_S = 3.0


def _is_true(value: str | None) -> bool:
    return (value or "").strip().upper() in ("1", "ON", "YES", "TRUE")


def _go_offline() -> None:
    os.environ["HF_HUB_OFFLINE"] = "1"  # inherited by worker processes
    try:
        from huggingface_hub import constants

        constants.HF_HUB_OFFLINE = True  # read at import: set it for this process too
    except ImportError:
        pass


def hub_offline() -> bool:
    """True when the Hub is off: offline mode asked for, or one connection probe failed."""
    if _is_true(os.environ.get("HF_HUB_OFFLINE")) or _is_true(os.environ.get("TRANSFORMERS_OFFLINE")):
        _go_offline()
        return True
    endpoint = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        socket.create_connection((endpoint.hostname or "huggingface.co", port), _PROBE_TIMEOUT_S).close()
        return False
    except OSError:
        _go_offline()
        return True


def _first_line(err: BaseException) -> str:
    from .store import mask_secrets

    text = str(err).strip()
    return mask_secrets(text.splitlines()[0] if text else type(err).__name__)


def _hub_problem(model_id: str, err: BaseException, offline: bool, default_of: str | None) -> str:
    name = type(err).__name__
    whose = f" (task {default_of}'s default model, sized for a GPU)" if default_of else ""
    alternative = "or pass --model DIR with a saved copy (config.json, weights, tokenizer)"
    if "Gated" in name or "gated" in str(err):
        return (f"model {model_id!r}{whose} is gated on the Hugging Face Hub: accept its license "
                f"there and set HF_TOKEN to a token with access, {alternative}")
    if offline:
        return (f"model {model_id!r}{whose} is not in the local cache and the Hugging Face Hub is "
                "offline or unreachable: download it where there is network (with a token in "
                f"HF_TOKEN if the model is gated), {alternative}")
    if "RepositoryNotFound" in name or "404" in str(err):
        return (f"model {model_id!r}{whose} was not found on the Hugging Face Hub (a private or "
                f"gated model needs a token in HF_TOKEN): check --model, {alternative}")
    return f"cannot load model {model_id!r}{whose}: {_first_line(err)}; check --model, {alternative}"


def _check_model(spec: SweepSpec, offline: bool) -> None:
    from ..tasks import task_registry
    from ..train.model import ModelError, ModelOptions, resolve_model

    if spec.model.startswith("embedded:"):  # shipped files, checked by resolve_model in validate
        return
    options = ModelOptions.parse(spec.model_options)
    folder = Path(spec.model).is_dir()
    kinds = {getattr(task_registry().get(t), "model_kind", None) for t in spec.tasks}
    default_of = next((t for t in spec.tasks
                       if getattr(task_registry().get(t), "default_model", None) == spec.model), None)
    path, gguf = resolve_model(spec.model)
    kwargs: dict[str, Any] = {"trust_remote_code": options.trust_remote_code}
    if gguf:
        kwargs["gguf_file"] = gguf
    from transformers import AutoConfig, AutoTokenizer
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        AutoConfig.from_pretrained(path, **kwargs)
        if kinds - {"image-classification"}:  # text tasks need the tokenizer; images a processor
            AutoTokenizer.from_pretrained(path, **kwargs)
    except (ModelError, ConfigError):
        raise
    except Exception as err:  # transformers raises OSError, ValueError, KeyError, hub errors...
        if folder:
            raise ConfigError(
                f"model folder {spec.model!r} cannot be loaded by transformers ({_first_line(err)}): "
                "point --model at a saved model (a config.json with its model_type, the weights "
                "and the tokenizer)") from None
        raise ConfigError(_hub_problem(spec.model, err, offline, default_of)) from None
    finally:
        hf_logging.set_verbosity(verbosity)


def _check_data(spec: SweepSpec) -> None:
    from ..tasks import TaskError, get_task

    for key in spec.tasks:
        try:
            get_task(key, **spec.task_options).load()
        except TaskError as err:
            raise ConfigError(str(err)) from None


def preflight(spec: SweepSpec) -> None:
    """Load the data of each task and the model's config and tokenizer, or raise ConfigError."""
    hub_model = not spec.model.startswith("embedded:") and not Path(spec.model).is_dir()
    offline = hub_offline() if hub_model else False  # before anything may call the Hub
    _check_data(spec)
    _check_model(spec, offline)
