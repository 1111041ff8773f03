"""Checkpoints of a trial's whole training state, found again by a retried trial of its grid point.

A checkpoint is one file, written atomically (a temporary name in the same folder, flushed to
disk, then renamed over the previous one), so a process killed during a save leaves the previous
checkpoint whole. Only the latest is kept; the trial deletes it when it finishes.

It holds plain data and tensors (``torch.load(weights_only=True)`` reads it back):

* ``adapter``: the variant's tensors and the trained heads (:meth:`Variant.state_dict`), which
  also carry what data-driven inits computed (ranks, initial updates), so they are not redone;
* ``variant``: the variant's own training state (:meth:`Variant.training_state`);
* ``optimizer``, ``scheduler``: their ``state_dict()``;
* ``rng``: the torch CPU (and CUDA) generator, numpy's and Python's, taken at the step boundary;
* ``loop``: the step, the micro-batches drawn so far (the position in the data order), the
  intermediate scores reported, the best score, tokens seen and training seconds;
* ``trial``: what the trial records beside (the prepare facts, how often it resumed).

A checkpoint is only used by a trial of the same configuration: the file records a fingerprint
of the trial's settings (everything but its number, folder, store, budget and bookkeeping
settings). The adaptive search's rungs of one point continue one run: a rung's trial stops after
its fraction of the schedule and keeps its checkpoint, which the next rung's trial resumes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import random
import time
from pathlib import Path
from typing import Any

__all__ = [
    "DEFAULT_INTERVAL_S",
    "Checkpoints",
    "checkpoint_path",
    "delete_checkpoint",
    "fingerprint",
    "rng_state",
    "set_rng_state",
]

FORMAT = 1
_FILE = "checkpoint.pt"
#: With ``train.checkpoint_every`` unset, a checkpoint every this many seconds of training.
DEFAULT_INTERVAL_S = 600.0
# differ between retries of one point, and between the rungs of an adaptive search's point,
# which continue one run (the checkpoint's step says how far it got)
_NOT_SETTINGS = ("trial_number", "run_dir", "storage", "budget")
_NOT_TRAINING = ("checkpoint_every", "device")  # do not change what is computed


def checkpoint_path(spec: Any) -> Path:
    """Where the checkpoint of ``spec``'s grid point lives: in its run folder, which belongs to
    one study and one grid point, so every retry of the point looks here."""
    return Path(spec.run_dir) / _FILE


def delete_checkpoint(run_dir: Path) -> None:
    """Remove a run folder's checkpoint (and temporary files a killed save left behind)."""
    path = Path(run_dir) / _FILE
    path.unlink(missing_ok=True)
    if path.parent.is_dir():
        for leftover in path.parent.glob(f".{_FILE}.*.tmp"):
            leftover.unlink(missing_ok=True)


def fingerprint(spec: Any) -> str:
    """A hash of the settings that decide a trial's computation."""
    data = spec.to_dict()
    for key in _NOT_SETTINGS:
        data.pop(key, None)
    data["train"] = {k: v for k, v in data["train"].items() if k not in _NOT_TRAINING}
    return hashlib.sha1(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def rng_state() -> dict[str, Any]:
    """Every generator a training step may draw from (dropout, sampling, user code)."""
    import numpy as np
    import torch

    np_state = np.random.get_state(legacy=False)
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"key": torch.from_numpy(np_state["state"]["key"].astype("int64")),
                  "pos": int(np_state["state"]["pos"]), "has_gauss": int(np_state["has_gauss"]),
                  "gauss": float(np_state["gauss"])},
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    import numpy as np
    import torch

    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["gauss"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@dataclasses.dataclass
class Checkpoints:
    """One trial's checkpoint file and policy.

    ``every``: steps between checkpoints; ``None``: every :data:`DEFAULT_INTERVAL_S` seconds of
    training (measured); ``0``: none at all, not even when the process is asked to stop.
    ``trial`` is saved with every checkpoint (facts the trial records); ``saved`` describes the
    last save (step, bytes, seconds, time), ``saves`` counts them.
    """

    path: Path
    fingerprint: str
    every: int | None = None
    trial: dict[str, Any] = dataclasses.field(default_factory=dict)
    saved: dict[str, Any] | None = None
    saves: int = 0
    save_seconds: float = 0.0

    @classmethod
    def for_trial(cls, spec: Any) -> Checkpoints:
        return cls(checkpoint_path(spec), fingerprint(spec), spec.train.checkpoint_every)

    @property
    def enabled(self) -> bool:
        return self.every != 0

    def due(self, step: int, seconds_since_last: float) -> bool:
        """Whether the periodic schedule saves after optimizer step ``step``."""
        if self.every is None:
            return seconds_since_last >= DEFAULT_INTERVAL_S
        return self.every > 0 and step % self.every == 0

    def load(self) -> dict[str, Any] | None:
        """The saved state, or None when there is none usable for this trial's settings."""
        import torch

        if not self.enabled or not self.path.is_file():
            return None
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as err:  # unreadable (another format, a damaged disk): start afresh
            print(f"warning: ignoring unreadable checkpoint {self.path.name}: {err}", flush=True)
            return None
        if state.get("format") != FORMAT or state.get("fingerprint") != self.fingerprint:
            print(f"warning: ignoring checkpoint {self.path.name} of other settings", flush=True)
            return None
        return state

    def save(self, state: dict[str, Any]) -> dict[str, Any]:
        """Write ``state`` (plus format, fingerprint and ``trial``) atomically; returns the facts."""
        import torch

        started = time.perf_counter()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        payload = {"format": FORMAT, "fingerprint": self.fingerprint, "trial": self.trial, **state}
        try:
            with open(tmp, "wb") as f:
                torch.save(payload, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        finally:
            tmp.unlink(missing_ok=True)
        seconds = time.perf_counter() - started
        self.saves += 1
        self.save_seconds += seconds
        self.saved = {"step": state["loop"]["step"], "bytes": self.path.stat().st_size,
                      "seconds": round(seconds, 4), "time": time.time()}
        return self.saved

    def delete(self) -> None:
        """Remove the checkpoint (and temporary files a killed save left behind)."""
        delete_checkpoint(self.path.parent)

    def summary(self) -> dict[str, Any]:
        """What the trial records about its checkpoints."""
        last = self.saved or {}
        return {"saves": self.saves, "last_step": last.get("step"), "bytes": last.get("bytes"),
                "save_seconds": round(self.save_seconds, 4), "every": self.every}
