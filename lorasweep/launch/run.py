"""run_sweep: the function behind ``lorasweep run`` (check -> preflight -> sync the grid -> launch).

A spec is checked once per run: :func:`check_spec` (its own values, the launcher, then the
registries) in the CLI, before anything prints; ``run_sweep(spec, checked=True)`` trusts that and
checks nothing again. Called without ``checked``, ``run_sweep`` checks the spec itself.
"""

from __future__ import annotations

import dataclasses

from ..config import SweepSpec
from ..sweep.spec import SweepError, check_registries
from ..sweep.study import GridSync, grid_state, sync_sweep
from ..sweep.worker import TrialEvents, WorkerSummary
from ..text import format_lr

__all__ = ["SweepOutcome", "check_spec", "run_sweep", "spent_text"]


def spent_text(spent: float, grid: float) -> str:
    """An adaptive search's cost in the words a user reads: ``28% of the grid's training``."""
    return f"{spent / grid:.0%} of the grid's training" if grid else f"{spent:.1f} full runs"


@dataclasses.dataclass
class SweepOutcome:
    storage: str
    syncs: list[GridSync]
    summary: WorkerSummary
    #: The grids after the launch: points still missing (failed after their retries) or running.
    final: list[GridSync] = dataclasses.field(default_factory=list)
    #: Cluster job ids the launcher submitted (SLURM), and whether this process left them running.
    jobs: list[str] = dataclasses.field(default_factory=list)
    detached: bool = False

    @property
    def skipped(self) -> int:
        return sum(s.done for s in self.syncs)

    def search_lines(self) -> list[str]:
        """Per adaptive study: its best learning rate, steps spent, and any notes."""
        import optuna

        from ..sweep.store import open_storage

        lines = []
        storage = open_storage(self.storage, create=False)
        for sync in self.syncs:
            state = optuna.load_study(study_name=sync.study, storage=storage).user_attrs.get("search_state")
            if not state:
                continue
            best = f"lr={format_lr(state['best_lr'])}" if state.get("best_lr") else "not found yet"
            done = "" if state.get("finished") else " (unfinished: rerun to continue)"
            lines.append(f"{sync.variant}: best {best}{done}; {spent_text(state['spent'], state['grid'])}")
            lines += [f"  note: {n}" for n in dict.fromkeys(state.get("notes", []))]
        return lines

    @property
    def missing(self) -> int:
        return sum(s.missing + s.waiting for s in self.final)

    @property
    def running(self) -> int:
        return sum(s.running for s in self.final)


def check_launcher(spec: SweepSpec, detach: bool = False) -> None:
    """The launcher's key and options, and what it needs of the store and of ``--detach``."""
    from .base import LauncherError, get_launcher_class

    try:
        cls = get_launcher_class(spec.launcher)
        cls.parse_options(spec.launcher_options)
    except LauncherError as err:
        raise SweepError(str(err)) from None
    if spec.launcher == "slurm" and (spec.storage or "sqlite:///").startswith("sqlite"):
        raise SweepError(
            "--launcher slurm cannot use a SQLite store (SQLite on network file systems "
            "corrupts, and loses workers at 32 processes even on a local disk): pass "
            "--storage journal:/shared/path/sweep.journal or a PostgreSQL URL"
        )
    if detach and not cls.can_detach:
        raise SweepError(f"--detach needs a launcher whose workers outlive this process "
                         f"(slurm), not {spec.launcher!r}: add --launcher slurm or drop --detach")


def check_spec(spec: SweepSpec, detach: bool = False) -> SweepSpec:
    """Everything that can be checked before anything is loaded or written, cheapest first:
    the spec's own values, its launcher, then its names and options against the registries.
    Raises ``ConfigError`` (a :class:`~lorasweep.sweep.spec.SweepError` for what a registry
    refuses) on the first problem."""
    spec.validate()
    check_launcher(spec, detach)
    return check_registries(spec)


def run_sweep(spec: SweepSpec, events: TrialEvents | None = None,
              progress_factory=None, detach: bool = False, checked: bool = False) -> SweepOutcome:
    """Check ``spec`` (unless ``checked``: the caller ran :func:`check_spec` on it), load its
    model and data once (the preflight), enqueue its missing grid points, and run them with its
    launcher.

    Raises ``ConfigError`` / ``StorageError`` before anything is written when the input is bad.
    ``detach``: return once the workers are submitted (launchers that can, i.e. SLURM).
    """
    from ..sweep.preflight import preflight
    from ..sweep.store import default_storage_url, open_storage, storage_errors
    from .base import get_launcher, get_launcher_class

    if not checked:
        check_spec(spec, detach)
    # An in-process launcher's worker keeps the data the preflight loads (the worker cache).
    preflight(spec, keep_data=get_launcher_class(spec.launcher).in_process)
    url = spec.storage or default_storage_url()
    with storage_errors(url):
        storage = open_storage(url)
        syncs = sync_sweep(spec, storage, url)
    pending = sum(s.enqueued + s.waiting + s.planned for s in syncs)
    launcher = get_launcher(spec.launcher, spec.workers, spec.runs_dir, spec.launcher_options)
    launcher.detach = detach
    names = [s.study for s in syncs]
    if not pending:  # nothing to run: start no worker (and submit no job)
        summary = WorkerSummary()
    elif progress_factory is not None and not detach:
        with progress_factory(pending) as progress:
            summary = launcher.launch(url, names, pending, progress)
    else:
        summary = launcher.launch(url, names, pending, events or TrialEvents())
    return SweepOutcome(storage=url, syncs=syncs, summary=summary, final=grid_state(spec, storage),
                        jobs=launcher.submitted, detached=detach)
