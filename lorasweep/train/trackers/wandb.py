"""Weights & Biases: one run per grid point, group = sweep, job type = task.

The run id is deterministic (``ls-`` and 20 hex digits of the study and grid point), and runs are
opened with ``resume="allow"``: a resumed trial (a preemption's retry, an adaptive search's next
rung) continues its point's run, and steps the run already has (``run.step`` online) are not
logged again. ``WANDB_MODE=offline`` writes the run under ``WANDB_DIR`` (default
``lorasweep-out/wandb``) for ``wandb sync``; offline, W&B cannot see an earlier segment, so each
process of a trial writes its own folder with the same run id (see the README).

Nothing of the machine's code or command line is captured: code and git capture are off, and so
is system metadata (which holds the command line, ``args`` and ``program``). The API key comes
from the environment or netrc alone (:func:`check_access`, before anything runs). Offline mode is
``WANDB_MODE=offline`` or what ``wandb offline`` wrote (its settings file, :func:`mode`).

The project is ``log.project``, else ``WANDB_PROJECT``, else ``lorasweep``. The run's config
holds the trial's provenance (sweep, study, search, lorasweep's version beside the
hyperparameters); with ``log.artifacts`` a completed trial's adapter is logged as an
``Artifact`` of type ``model`` (named ``adapter-<run id>``).
"""

from __future__ import annotations

import configparser
import hashlib
import math
import netrc
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from ...config import TrialSpec
from ...paths import OUTPUT_DIR
from . import scalars

__all__ = ["WandbSink", "check_access", "make_sink", "mode", "project", "run_id", "where"]

_NO_NETWORK = ("offline", "disabled", "dryrun")


def run_id(study: str, point: str) -> str:
    """The point's run id, the same in every process (W&B allows 64 characters)."""
    return "ls-" + hashlib.sha1(f"{study}\n{point}".encode()).hexdigest()[:20]


def _has_netrc_key() -> bool:
    host = urlparse(os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai").hostname
    path = os.environ.get("NETRC") or os.path.expanduser("~/.netrc")
    try:
        found = netrc.netrc(path).authenticators(host or "")
    except (OSError, netrc.NetrcParseError):
        return False
    return bool(found and found[2])


def mode() -> str:
    """W&B's mode as W&B reads it here: ``WANDB_MODE``, else the ``mode`` that ``wandb offline``
    (``online``, ``disabled``) wrote in the workspace's settings file (``wandb/settings`` under
    ``WANDB_DIR`` or the current folder), else in the user's (``WANDB_CONFIG_DIR/settings``,
    default ``~/.config/wandb/settings``); blank when none says."""
    value = os.environ.get("WANDB_MODE")
    if value:
        return value.strip().lower()
    config = os.environ.get("WANDB_CONFIG_DIR") or os.path.join(os.path.expanduser("~"),
                                                                ".config", "wandb")
    workspace = Path(os.environ.get("WANDB_DIR") or os.getcwd()) / "wandb" / "settings"
    for path in (workspace, Path(config) / "settings"):  # the workspace's wins
        parser = configparser.ConfigParser()
        try:
            parser.read(path)
        except (OSError, configparser.Error):
            continue
        found = parser.get("default", "mode", fallback="").strip().lower()
        if found:
            return found
    return ""


def project(options: dict[str, Any] | None = None) -> str:
    """``log.project``, else ``WANDB_PROJECT``, else ``lorasweep``."""
    return str((options or {}).get("project") or os.environ.get("WANDB_PROJECT") or "lorasweep")


def check_access() -> str | None:
    """Why ``--log wandb`` cannot run here (no key and not offline), else None: said before any
    worker starts, so none waits out W&B's init timeout."""
    if mode() in _NO_NETWORK or os.environ.get("WANDB_API_KEY") or _has_netrc_key():
        return None
    return ("--log wandb needs a W&B API key or offline mode: set WANDB_API_KEY in the "
            "environment (or run `wandb login`, which writes ~/.netrc), or WANDB_MODE=offline "
            "(or `wandb offline`) to write the runs for `wandb sync` later")


def _folder() -> str:
    return os.environ.get("WANDB_DIR") or str((OUTPUT_DIR / "wandb").resolve())


def where(sweep: str, label: Any = str, options: dict[str, Any] | None = None) -> str:
    """The closing line: the project and group, and offline the command that uploads the runs
    (a trial's segments share their run id; wandb sync uploads them in order of start time)."""
    group = os.environ.get("WANDB_RUN_GROUP") or sweep
    line = f"wandb: project {project(options)}, group {group}"
    if _offline():
        line += f"; offline: upload with wandb sync {Path(_folder()) / 'wandb'}/offline-run-*"
    return line


def _settings() -> Any:
    import wandb

    return wandb.Settings(save_code=False, disable_code=True, disable_git=True,
                          x_disable_meta=True, x_save_requirements=False, console="off",
                          program="lorasweep", silent=True)


def _offline() -> bool:
    return mode() in _NO_NETWORK


class WandbSink:
    """``replay``: the whole trial again (``lorasweep export --to wandb``)."""

    def __init__(self, replay: bool = False, options: dict[str, Any] | None = None) -> None:
        self.replay, self.options = replay, dict(options or {})
        self.run: Any = None
        self.spec: TrialSpec | None = None
        self.ref = ""
        self.next_step = {"step": 1, "eval": 1}  # per kind of record: the first the run lacks
        self.last_step = 0
        self.metric = "score"

    def open(self, spec: TrialSpec, resume_step: int) -> None:
        import wandb

        from .. import trackers

        self.metric = trackers.metric_of(spec.task)
        folder = _folder()
        Path(folder).mkdir(parents=True, exist_ok=True)
        point = Path(spec.run_dir).name
        search = str(self.options.get("search", ""))
        config = {k: v for k, v in trackers.tracker_config(spec, search).items()
                  if k not in ("trial", "budget")}  # these change as the point resumes
        self.spec = spec
        self.run = wandb.init(
            project=project(self.options), dir=folder,
            group=os.environ.get("WANDB_RUN_GROUP") or spec.sweep, job_type=spec.task,
            id=run_id(spec.study, point), name=f"{spec.variant.tag}/{point}", resume="allow",
            tags=[spec.model.rsplit("/", 1)[-1][:64], spec.variant.key, spec.variant.tag],
            config=config, settings=_settings(), reinit="create_new")
        self.ref = self.run.id
        online = max(int(self.run.step or 0), 1)  # what the resumed run has (0 offline)
        self.next_step = {"step": online, "eval": online}
        if _offline() and not self.replay:
            # offline, W&B cannot see the earlier segment: what it logged is in the event log,
            # read before this attempt cuts it back to its checkpoint
            from ..events import read_events

            for r in read_events(spec.run_dir):
                if r.get("event") in self.next_step:
                    kind = r["event"]
                    self.next_step[kind] = max(self.next_step[kind], int(r["step"]) + 1)
        self.run.summary["trial"] = spec.trial_number

    def log(self, record: dict[str, Any]) -> None:
        step = self.last_step = int(record["step"])
        if step < self.next_step.get(record["event"], 1):
            return  # the run has it (a resumed run, or a second export online)
        values = scalars(record, self.metric)
        # one row per step: an evaluation joins its step's training row
        self.run.log({k: v for k, v in values.items() if v is not None}, step=step)

    def close(self, summary: dict[str, Any], state: str) -> None:
        if self.run is None:
            return
        finals = {k: v for k, v in summary.items() if isinstance(v, (int, float, bool))
                  and (isinstance(v, bool) or math.isfinite(v))}
        self.run.summary.update({**finals, "diverged": bool(summary.get("diverged")),
                                 "state": state})
        if state == "stopped":
            self.run.mark_preempting()
        from . import adapter_files

        files = adapter_files(self.spec, state, self.options) if self.spec else []
        if files:
            import wandb

            artifact = wandb.Artifact(f"adapter-{self.run.id}", type="model",
                                      metadata={"lr": self.spec.lr, "seed": self.spec.seed,
                                                "variant_tag": self.spec.variant.tag})
            for path in files:
                artifact.add_file(str(path), name=path.name)
            self.run.log_artifact(artifact)
        self.run.finish(exit_code=0 if state in ("completed", "diverged", "pruned") else 1)
        self.run = None


def make_sink(replay: bool = False, options: dict[str, Any] | None = None) -> WandbSink:
    return WandbSink(replay, options)  # a replay resumes the point's run and skips the steps it has
