"""What a worker keeps between trials: the loaded base model (restored pristine), the tokenizer,
the task's data.

A trial's own cost is its training and evaluation. Loading the model (reading, de-quantising a
GGUF file), building the tokenizer and loading the task's splits are the same for every trial of
a worker that shares (model, model options, task, task options, device), so the worker does them
once. Before each trial the model is made pristine again:

1. the previous trial's adapter layers are unwrapped (each ``AdapterLayer`` gives back its
   ``base`` linear) and its variant detached;
2. every parameter and buffer is copied back from the snapshot taken right after loading (a CPU
   copy), which undoes residuals written into :math:`W` (PiSSA-style
   :math:`W \\leftarrow W - s B_0 A_0`) and ReLoRA's merges :math:`W \\leftarrow W + s BA`;
3. the fresh heads are initialised again from the trial's seed, the same way on the first trial
   as on a reused model, so a trial's result does not depend on what the worker ran before.

``LORASWEEP_CACHE=0`` turns the cache off (a fresh load per trial).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Any

__all__ = ["CacheStats", "WorkerCache", "weights_checksum", "worker_cache"]


@dataclasses.dataclass
class CacheStats:
    model_loads: int = 0
    model_reuses: int = 0
    data_loads: int = 0
    data_reuses: int = 0


def weights_checksum(model: Any) -> str:
    """SHA-256 over every parameter and buffer of ``model`` (names, dtypes and bytes), in order."""
    import torch

    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().to("cpu").contiguous()
        digest.update(name.encode())
        digest.update(str(t.dtype).encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def _key(*parts: Any) -> str:
    return json.dumps(parts, sort_keys=True, default=str)


class WorkerCache:
    """One model entry and a few data entries, per worker process."""

    def __init__(self, enabled: bool | None = None):
        self.enabled = os.environ.get("LORASWEEP_CACHE", "1") != "0" if enabled is None else enabled
        self.stats = CacheStats()
        self._model_key: str | None = None
        self._loaded: Any = None
        self._pristine: dict[str, Any] | None = None
        self._data: dict[str, Any] = {}

    def task_data(self, task: Any, task_key: str, task_options: dict[str, Any],
                  check: bool = True) -> Any:
        """``task.load()``, once per (task, options); ``check``: ``task.check_available()`` first
        (only when it loads: data already here needs no check that it can be loaded here)."""
        key = _key(task_key, task_options)
        if self.enabled and key in self._data:
            self.stats.data_reuses += 1
            return self._data[key]
        if check:
            task.check_available()
        self.stats.data_loads += 1
        data = task.load()
        if self.enabled:
            self._data = {key: data}  # one task at a time: a worker moves on, it rarely comes back
        return data

    def model(self, model_id: str, task: Any, task_key: str, seed: int,
              options: dict[str, Any], device: Any) -> Any:
        """A pristine :class:`LoadedModel` on ``device``, its heads initialised from ``seed``."""
        from .model import load_model

        key = _key(model_id, options, task_key, task.model_kind, task.num_labels, str(device))
        # a quantized base is not restored in place (its W is gone): loaded afresh per trial
        reuse = self.enabled and (options or {}).get("quantize", "none") == "none"
        if reuse and key == self._model_key and self._loaded is not None:
            self.stats.model_reuses += 1
            self._restore()
        else:
            self.release()
            self.stats.model_loads += 1
            loaded = load_model(model_id, task, seed, options, device.type)
            loaded.model.to(device)
            if reuse:
                self._model_key, self._loaded = key, loaded
                self._pristine = {k: v.detach().to("cpu", copy=True)
                                  for k, v in loaded.model.state_dict().items()}
            else:
                self._loaded = None
            self._reinit_heads(loaded, seed)
            return loaded
        self._reinit_heads(self._loaded, seed)
        return self._loaded

    def release(self) -> None:
        self._model_key = self._loaded = self._pristine = None

    def _restore(self) -> None:
        import torch

        from ..variants import remove_variant

        model = remove_variant(self._loaded.model)
        with torch.no_grad():
            state = model.state_dict()
            for k, v in self._pristine.items():
                state[k].copy_(v)
        for p in model.parameters():
            p.requires_grad_(True)
            p.grad = None

    @staticmethod
    def _reinit_heads(loaded: Any, seed: int) -> None:
        """Fresh heads from ``seed`` (the model's own initialiser), on every trial alike."""
        import torch

        init = getattr(loaded.model, "_init_weights", None)
        if init is None:
            return
        torch.manual_seed(seed)
        with torch.no_grad():
            for name in loaded.heads:
                loaded.model.get_submodule(name).apply(init)


_CACHE: WorkerCache | None = None


def worker_cache() -> WorkerCache:
    """This process's cache."""
    global _CACHE
    if _CACHE is None:
        _CACHE = WorkerCache()
    return _CACHE
