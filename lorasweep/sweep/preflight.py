"""Fail fast: before anything is written, check that the model and the data can be loaded.

A sweep that cannot load its model or data would fail every trial the same way, once per grid
point, and leave failed trials in the store. ``preflight`` loads what every trial will load first
(the model's config and tokenizer, each task's data) once, in the launching process, and turns a
failure into one :class:`~lorasweep.sweep.spec.SweepError` line naming the fix. Last, it
estimates the memory a trial needs against what each worker has (:mod:`.memory`). The spec was
checked before (``check_spec``: each task's ``check_available`` ran there), so the data is loaded
here without checking again; with ``keep_data`` (a worker in this process) the data goes into the
worker cache, where the worker's first trial finds it instead of loading it once more.

Offline: when ``HF_HUB_OFFLINE`` is set, or one quick probe finds the Hub unreachable, the Hub's
offline mode is switched on for this process and its workers, so nothing retries the network.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from ..config import SweepSpec
from .memory import check_memory
from .spec import SweepError, offline_model_hint, sweep_tasks

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
    from ..tasks import find_task
    from ..train.model import ModelError, ModelOptions, resolve_model

    if spec.model.startswith("embedded:"):  # shipped files, checked by resolve_model in validate
        return
    options = ModelOptions.parse(spec.model_options)
    folder = Path(spec.model).is_dir()
    tasks = sweep_tasks(spec)
    kinds = {getattr(find_task(t), "model_kind", None) for t in tasks}
    default_of = next((t for t in tasks
                       if getattr(find_task(t), "default_model", None) == spec.model), None)
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
    except (ModelError, SweepError):
        raise
    except Exception as err:  # transformers raises OSError, ValueError, KeyError, hub errors...
        if folder:
            raise SweepError(
                f"model folder {spec.model!r} cannot be loaded by transformers ({_first_line(err)}): "
                "point --model at a saved model (a config.json with its model_type, the weights "
                "and the tokenizer)") from None
        raise SweepError(_hub_problem(spec.model, err, offline, default_of)) from None
    finally:
        hf_logging.set_verbosity(verbosity)


def _check_data(spec: SweepSpec, keep_data: bool) -> None:
    from ..tasks import HubDataError, TaskError, make_task
    from ..train.cache import worker_cache

    for key in sweep_tasks(spec):
        try:  # checked already (check_spec): the task is built without its check_available
            task = make_task(key, **spec.task_options)
            if keep_data:
                worker_cache().task_data(task, key, spec.task_options, check=False)
            else:
                task.load()
        except HubDataError as err:  # the model may need the Hub too: say both at once
            raise SweepError(str(err) + offline_model_hint(spec, key)) from None
        except TaskError as err:
            raise SweepError(str(err)) from None


def preflight(spec: SweepSpec, keep_data: bool = False) -> None:
    """Load the data of each task and the model's config and tokenizer, and check that a trial
    fits in memory, or raise SweepError.

    ``keep_data``: keep the data in this process's worker cache (an in-process worker reuses it).
    """
    hub_model = not spec.model.startswith("embedded:") and not Path(spec.model).is_dir()
    offline = hub_offline() if hub_model else False  # before anything may call the Hub
    _check_data(spec, keep_data)
    _check_model(spec, offline)
    check_memory(spec)  # the model's config is known to load now
