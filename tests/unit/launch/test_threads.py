"""One place decides torch's threads: from the cores the process may use and its worker count."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from lorasweep.launch.threads import available_cores, threads_per_worker

AFFINITY = len(os.sched_getaffinity(0))


def test_slurm_allocation_and_affinity_bound_the_cores():
    assert available_cores({}) <= AFFINITY
    assert available_cores({"SLURM_CPUS_PER_TASK": "1"}) == 1
    assert available_cores({"SLURM_CPUS_ON_NODE": "1"}) == 1
    assert available_cores({"SLURM_CPUS_PER_TASK": "512"}) == available_cores({})  # mask wins


def test_workers_split_the_cores():
    assert threads_per_worker(1, cores=8, environ={}) == 8
    assert threads_per_worker(2, cores=8, environ={}) == 4
    assert threads_per_worker(3, cores=8, environ={}) == 2
    assert threads_per_worker(16, cores=8, environ={}) == 1
    assert threads_per_worker(2, cores=8, environ={"LORASWEEP_THREADS": "3"}) == 3


_PROBE = """
import torch
from lorasweep.launch.threads import configure_threads
print(configure_threads({workers}), torch.get_num_threads())
"""


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs Linux affinity masks")
def test_a_process_pinned_to_one_core_runs_one_thread_per_worker():
    """taskset-like: the child's affinity mask is one core; torch must use one thread."""
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    env.pop("LORASWEEP_THREADS", None)
    out = subprocess.run(
        [sys.executable, "-c", _PROBE.format(workers=1)], env=env, capture_output=True, text=True,
        preexec_fn=lambda: os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}), check=True)
    assert out.stdout.split() == ["1", "1"]
    out = subprocess.run([sys.executable, "-c", _PROBE.format(workers=2)], env=env,
                         capture_output=True, text=True, check=True)
    expected = str(max(1, AFFINITY // 2))
    assert out.stdout.split() == [expected, expected]
