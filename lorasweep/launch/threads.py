"""How many CPU threads torch uses in a worker: decided here, for every launcher.

torch's default is one thread per core of the machine, whatever the process may use; on a shared
machine (another job running, a SLURM allocation of 4 cores on a 64-core node, a container's CPU
quota) that oversubscribes the cores and burns CPU spinning. A worker's threads are

.. math::  \\max\\left(1, \\left\\lfloor \\frac{\\text{cores available to the process}}
           {\\text{workers sharing them}} \\right\\rfloor\\right)

where the cores available are the smallest of: the SLURM allocation (``SLURM_CPUS_PER_TASK``, or
``SLURM_CPUS_ON_NODE`` in a job), the process's affinity mask, and the cgroup CPU quota
(``cpu.max``). ``LORASWEEP_THREADS`` overrides the result.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

__all__ = ["available_cores", "configure_threads", "threads_per_worker"]


def _cgroup_quota(root: Path = Path("/sys/fs/cgroup")) -> int | None:
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    return max(1, math.floor(int(quota) / int(period)))


def available_cores(environ: dict[str, str] | None = None) -> int:
    """The cores this process may use (SLURM allocation, affinity mask, cgroup quota)."""
    env = os.environ if environ is None else environ
    limits = []
    for var in ("SLURM_CPUS_PER_TASK", "SLURM_CPUS_ON_NODE"):
        value = env.get(var, "")
        if value.isdigit() and int(value) > 0:
            limits.append(int(value))
            break
    try:
        limits.append(len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        limits.append(os.cpu_count() or 1)
    quota = _cgroup_quota()
    if quota is not None:
        limits.append(quota)
    return max(1, min(limits))


def threads_per_worker(workers: int = 1, cores: int | None = None,
                       environ: dict[str, str] | None = None) -> int:
    """Threads for each of ``workers`` processes sharing the available cores."""
    env = os.environ if environ is None else environ
    override = env.get("LORASWEEP_THREADS", "")
    if override.isdigit() and int(override) > 0:
        return int(override)
    cores = available_cores(env) if cores is None else cores
    return max(1, cores // max(1, workers))


def configure_threads(workers: int = 1) -> int:
    """Set torch's intra-op threads for this worker (and OpenMP's for its children); returns it."""
    import torch

    threads = threads_per_worker(workers)
    torch.set_num_threads(threads)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    try:  # inter-op threads can be set once, before any parallel work
        torch.set_num_interop_threads(max(1, min(threads, 2)))
    except RuntimeError:
        pass
    return threads
