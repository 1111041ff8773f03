"""run_sweep: the function behind ``lorasweep run`` (validate -> sync the grid -> launch)."""

from __future__ import annotations

import dataclasses

from ..config import SweepSpec
from .study import GridSync, grid_state, sync_sweep
from .worker import TrialEvents, WorkerSummary

__all__ = ["SweepOutcome", "run_sweep"]


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

        from .store import open_storage

        lines = []
        storage = open_storage(self.storage, create=False)
        for sync in self.syncs:
            state = optuna.load_study(study_name=sync.study, storage=storage).user_attrs.get("search_state")
            if not state:
                continue
            best = f"lr={state['best_lr']:.3g}" if state.get("best_lr") else "not found yet"
            done = "" if state.get("finished") else " (unfinished: rerun to continue)"
            lines.append(f"{sync.variant}: best {best}{done}; {state['spent']:.1f} full trials' "
                         f"steps of the grid's {state['grid']:g}")
            lines += [f"  note: {n}" for n in dict.fromkeys(state.get("notes", []))]
        return lines

    @property
    def missing(self) -> int:
        return sum(s.missing + s.waiting for s in self.final)

    @property
    def running(self) -> int:
        return sum(s.running for s in self.final)


def run_sweep(spec: SweepSpec, events: TrialEvents | None = None,
              progress_factory=None, detach: bool = False) -> SweepOutcome:
    """Validate ``spec``, enqueue its missing grid points, and run them with its launcher.

    Raises ``ConfigError`` / ``StorageError`` before anything is written when the input is bad.
    ``detach``: return once the workers are submitted (launchers that can, i.e. SLURM).
    """
    from ..config import ConfigError
    from ..launch import get_launcher, get_launcher_class
    from .preflight import preflight
    from .store import default_storage_url, open_storage, storage_errors

    spec.validate()
    if detach and not get_launcher_class(spec.launcher).can_detach:
        raise ConfigError(f"--detach needs a launcher whose workers outlive this process "
                          f"(slurm), not {spec.launcher!r}: add --launcher slurm or drop --detach")
    preflight(spec)  # model and data load, before anything is written
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
