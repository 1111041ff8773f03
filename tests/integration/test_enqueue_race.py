"""Exactly once under every race: processes released together by a barrier enqueue each point once.

Two processes sync the same 300-point grid into the same study at the same instant, repeated, on
each storage. Each process opens its storage first, reports ready, then waits on a line from the
parent (the barrier): both start their read-then-enqueue within microseconds of each other.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter

import optuna

from lorasweep.config import SweepSpec, VariantSpec
from lorasweep.sweep.store import open_storage
from lorasweep.sweep.study import study_name

LRS = [round(1e-6 * 1.03**i, 12) for i in range(150)]
SEEDS = [0, 1]  # 150 x 2 = 300 grid points
ROUNDS = 2

_SYNC = """
import json, sys
from lorasweep.config import SweepSpec
from lorasweep.sweep.store import open_storage
from lorasweep.sweep.study import sync_sweep
spec = SweepSpec.from_dict(json.loads(sys.argv[1]))
storage = open_storage(spec.storage)
print("ready", flush=True)
sys.stdin.readline()  # the barrier: released by the parent, both at once
syncs = sync_sweep(spec, storage)
print(json.dumps([s.enqueued for s in syncs]), flush=True)
"""

_SYNC_FRESH = _SYNC.replace("storage = open_storage(spec.storage)\nprint", "print").replace(
    "syncs = sync_sweep(spec, storage)", "syncs = sync_sweep(spec, open_storage(spec.storage))")


def _spec(url: str, name: str, lrs: list[float] = LRS) -> SweepSpec:
    return SweepSpec(name=name, model="embedded:minilm", task="sentiment",
                     variants=[VariantSpec("lora")], lrs=lrs, seeds=SEEDS, storage=url)


def _race(spec: SweepSpec, processes: int = 2, script: str = _SYNC) -> list[int]:
    """Run ``processes`` syncs released together; returns what each says it enqueued."""
    data = json.dumps(spec.to_dict())
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    procs = [subprocess.Popen([sys.executable, "-c", script, data], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for _ in range(processes)]
    for p in procs:
        line = p.stdout.readline()
        assert line.strip() == "ready", p.stderr.read()[-3000:]
    for p in procs:  # release both: one write each, back to back
        p.stdin.write("go\n")
        p.stdin.flush()
    out = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=300)
        assert p.returncode == 0, stderr[-3000:]
        out.append(sum(json.loads(stdout.strip().splitlines()[-1])))
    return out


def _duplicates(spec: SweepSpec) -> int:
    storage = open_storage(spec.storage, create=False)
    study = optuna.load_study(study_name=study_name(spec, spec.variants[0]), storage=storage)
    points = Counter(t.user_attrs["grid_point"] for t in study.get_trials(deepcopy=False))
    assert len(points) == len(spec.lrs) * len(SEEDS)
    return sum(n - 1 for n in points.values())


def test_concurrent_syncs_enqueue_each_point_once(new_store_url):
    found = []
    for i in range(ROUNDS):
        spec = _spec(new_store_url(), f"race{i}")
        open_storage(spec.storage)  # the store exists; the race is on the study's grid
        enqueued = _race(spec)
        found.append(_duplicates(spec))
        assert sum(enqueued) == len(LRS) * len(SEEDS) + found[-1]
    print(f"duplicates per round: {found}")
    assert found == [0] * ROUNDS


def test_concurrent_first_runs_on_a_fresh_store(new_store_url):
    """Two processes that open a store nobody created yet, then sync, at the same instant."""
    for i in range(2):
        spec = _spec(new_store_url(), f"fresh{i}", lrs=LRS[:30])
        enqueued = _race(spec, script=_SYNC_FRESH)
        assert _duplicates(spec) == 0
        assert sum(enqueued) == 30 * len(SEEDS)
