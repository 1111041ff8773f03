"""What a trial costs beyond its training steps and evaluation, and inline vs local throughput.

    python benchmarks/bench_overhead.py                         # arith (SmolLM2) and embedded
    python benchmarks/bench_overhead.py --tasks sentiment --launchers --launcher-steps 20

Part 1, per task: a grid sweep of LoRA over 1 LR x 1 step, then over 4 LRs x 1 step (fresh store,
inline: one worker, in the ``lorasweep run`` process). Printed: the wall time of each sweep, their ratio
(goal on ``arith``: <= 2.2x), and per trial its overhead ``wall_time_s - train_call_s`` (model,
data, variant set-up and saving: everything but the steps and evaluation; goal: <= 1 s once the
worker is warm, i.e. every trial but the first).

Part 2 (``--launchers``): the default sweep (``--launcher-steps`` per trial) run inline and with
``--launcher local --workers 2``, one after the other; printed: trials per minute and CPU seconds
of each (children included), and their ratios.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TASKS = {
    "arith": ["--task", "arith", "--set", "task.eval_limit=2"],
    "sentiment": ["--task", "sentiment", "--set", "task.eval_limit=32"],
}
LRS = "1e-4,3e-4,1e-3,3e-3"


def _run(args: list[str], cwd: str) -> tuple[float, float]:
    """Wall and CPU seconds (this child and its children) of one ``lorasweep`` command."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "lorasweep.cli", *args], cwd=cwd, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def _overheads(storage: str) -> list[float]:
    import optuna

    from lorasweep.sweep.store import open_storage

    storage_obj = open_storage(storage, create=False)
    out = []
    for name in optuna.get_all_study_names(storage_obj):
        for t in optuna.load_study(study_name=name, storage=storage_obj).get_trials():
            if "overhead_s" in t.user_attrs:
                out.append((t.datetime_start, t.user_attrs["overhead_s"]))
    return [o for _, o in sorted(out)]


def overhead(task: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        walls = {}
        for n, lrs in ((1, LRS.split(",")[2]), (4, LRS)):
            store = f"sqlite:///{tmp}/s{n}.db"
            walls[n], _ = _run(["run", *TASKS[task], "--variant", "lora", "--search", "grid",
                                "--launcher", "inline", "--lrs", lrs, "--steps", "1",
                                "--sweep", f"o{n}", "--storage", store], tmp)
            per_trial = ", ".join(f"{o:.2f}" for o in _overheads(store))
            print(f"{task:<10} {n} trial(s): {walls[n]:6.1f} s wall; overhead per trial (s): "
                  f"{per_trial}", flush=True)
        print(f"{task:<10} 4 trials / 1 trial: {walls[4] / walls[1]:.2f}x", flush=True)


def launchers(steps: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        results = {}
        for name, extra in (("inline", ["--launcher", "inline"]),
                            ("local x2", ["--launcher", "local", "--workers", "2"])):
            store = f"sqlite:///{tmp}/{name.replace(' ', '')}.db"
            wall, cpu = _run(["run", "--steps", str(steps), "--storage", store, *extra], tmp)
            trials = len(_overheads(store))
            results[name] = (trials / wall * 60, cpu)
            print(f"default sweep, {name:<9}: {trials} trials, {wall:6.1f} s wall, "
                  f"{trials / wall * 60:.2f} trials/min, {cpu:.0f} CPU s", flush=True)
        (t_in, c_in), (t_lo, c_lo) = results["inline"], results["local x2"]
        print(f"local x2 / inline: throughput {t_lo / t_in:.2f}x, CPU {c_lo / c_in:.2f}x")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", default="arith,sentiment")
    p.add_argument("--launchers", action="store_true", help="also compare inline vs local x2")
    p.add_argument("--launcher-steps", type=int, default=80)
    args = p.parse_args(argv)
    for task in args.tasks.split(","):
        overhead(task)
    if args.launchers:
        launchers(args.launcher_steps)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.exit(main())
