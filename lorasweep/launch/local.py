"""Local launcher: N worker processes on this machine, one GPU each when there are GPUs.

Each process runs the same worker loop against the study store; trials are popped atomically
from the store, so workers never share a trial. The available cores are split between workers
(:mod:`.threads`). Worker output goes to ``logs/worker-I.log`` beside the runs folder
(``lorasweep-out/logs/``); the parent polls the store for progress.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from pathlib import Path

from ..paths import LOGS_DIR
from ..sweep.worker import TrialEvents, WorkerSummary
from .base import Launcher

__all__ = ["LocalLauncher"]


def _worker_main(storage_url: str, study_names: list[str], index: int, workers: int,
                 gpu: int | None, log_path: str, trial_fn=None) -> None:
    import signal
    import sys

    # Ctrl-C reaches the whole process group: the parent alone handles it, and stops this worker
    # with SIGTERM, which checkpoints the running trial before the worker ends.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu)
    log = open(log_path, "a", buffering=1)  # noqa: SIM115  (lives as long as the process)
    sys.stdout = sys.stderr = log
    from ..sweep.worker import run_worker
    from .threads import configure_threads

    print(f"worker {index}: {configure_threads(workers)} torch thread(s)", flush=True)

    summary = run_worker(storage_url, study_names, trial_fn=trial_fn)
    print(f"worker {index} done: {summary}", flush=True)


def _gpu_count() -> int:
    try:
        import torch

        return torch.cuda.device_count()
    except Exception:  # no usable torch/CUDA: CPU workers
        return 0


class LocalLauncher(Launcher):
    name = "local"

    def __init__(self, workers: int = 1, log_dir: str | Path = LOGS_DIR, trial_fn=None):
        self.workers = workers
        self.log_dir = Path(log_dir)
        self.trial_fn = trial_fn  # a picklable stand-in for run_trial (tests, benchmarks)

    def launch(self, storage_url: str, study_names: list[str], total: int,
               events: TrialEvents) -> WorkerSummary:
        from .poll import StoreWatcher, count_finished

        self.log_dir.mkdir(parents=True, exist_ok=True)
        gpus = _gpu_count()
        ctx = mp.get_context("spawn")
        procs = []
        before = count_finished(storage_url, study_names)
        watcher = StoreWatcher(storage_url, study_names)
        for i in range(self.workers):
            gpu = i % gpus if gpus else None
            log = str(self.log_dir / f"worker-{i}.log")
            p = ctx.Process(target=_worker_main, args=(storage_url, study_names, i, self.workers, gpu, log,
                                                            self.trial_fn))
            p.start()
            procs.append(p)
        try:
            while any(p.is_alive() for p in procs):
                events.store_update(watcher.poll())  # result lines and step bars
                time.sleep(2.0)
        except KeyboardInterrupt:
            for p in procs:
                p.terminate()
            raise
        finally:
            for p in procs:
                p.join()
        after = count_finished(storage_url, study_names)
        events.store_update(watcher.poll())
        crashed = [i for i, p in enumerate(procs) if p.exitcode != 0]
        if crashed:
            raise RuntimeError(
                f"local worker(s) {crashed} exited abnormally: see {self.log_dir}/worker-N.log"
            )
        return WorkerSummary(**{k: after[k] - before[k] for k in ("completed", "pruned", "failed", "diverged")})
