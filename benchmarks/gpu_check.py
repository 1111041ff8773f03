"""The prepared GPU check: one command, one table, at most 8 minutes on one GPU.

    python benchmarks/gpu_check.py          # on a GPU: the study's shapes
    python benchmarks/gpu_check.py --cpu    # the same code on tiny shapes, under a minute (CI)

It prints one table of three parts:

1. ``tests``: the GPU-marked tests (``pytest -m gpu``), passed / failed / skipped;
2. ``step``: every registered variant's median step time and step memory relative to LoRA over
   a bf16 base, and the same variant over an NF4 base beside it (``@nf4``), on a Llama-3.2-1B-
   shaped model with random weights (the study's setting: q/k/v/o, r=8, alpha 16, one sequence
   of 1024 tokens, bf16 autocast). On a GPU each variant runs in its own round with LoRA and
   LoRA@nf4 (four 1B models at a time fit any card), so every ratio has its own reference;
3. ``trial``: one full trial of a real task (``arith``, offline) through the CLI, on a small
   random Llama over NF4 (``--set model.quantize=nf4``), with its score and base.

``--cpu`` (the default where CUDA is missing) runs the tiny Llama (2 layers, hidden 64), all
variants in one round, two timed steps, sequences of 32 and a 1-step trial, so that the script
cannot rot: CI runs it (tests/unit/test_gpu_check.py).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))


def _tests(on_gpu: bool) -> list[tuple[str, str, str]]:
    marked = [str(p) for p in (ROOT / "tests").rglob("test_*.py") if "mark.gpu" in p.read_text()]
    if not on_gpu:
        return [("tests", f"{len(marked)} files with GPU-marked tests", "not run (no GPU)")]
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p",
                           "no:cacheprovider", *marked], capture_output=True, text=True, cwd=ROOT)
    last = (done.stdout.strip().splitlines() or ["no output"])[-1]
    return [("tests", "pytest -m gpu", f"{last} ({time.perf_counter() - started:.0f} s)")]


def _steps(args: argparse.Namespace) -> list[tuple[str, str, str]]:
    import bench_variants

    from lorasweep.variants import registry

    rows = []
    keys = sorted(k for k in registry() if k != "lora")
    groups = [keys[i:i + args.group] for i in range(0, len(keys), args.group)]
    for number, group in enumerate(groups):
        bench = bench_variants.main_args([
            "--model", args.model, "--variants", ",".join(group), "--quantize", "nf4",
            "--steps", str(args.steps), "--warmup", "1", "--batch-size", "1",
            "--seq-len", str(args.seq_len), "--rank", "8", "--alpha", "16",
            "--device", args.device, "--prepare-batches", "1"])
        results = bench_variants.run(bench)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        got = results["variants"]
        lora = got["lora"]
        if number == 0:
            rows.append(("step", "lora (base as loaded)", _cell(lora, lora)))
            rows.append(("step", "lora@nf4", _cell(got["lora@nf4"], lora)))
        for name in (n for key in group for n in (key, f"{key}@nf4")):
            rows.append(("step", name, _cell(got[name], lora) if name in got
                         else f"failed: {results['failed'].get(name, '?')[:60]}"))
    return rows


def _cell(row: dict, lora: dict) -> str:
    mem, ref = row["memory_bytes"], lora["memory_bytes"]
    return (f"{row['step_ms_median'] / lora['step_ms_median']:.2f}x time, "
            f"{mem['step_with_base'] / ref['step_with_base']:.2f}x memory "
            f"({mem['step_with_base'] / 2**20:.0f} MiB incl. base "
            f"{row['base']['base_bytes'] / 2**20:.0f} MiB)")


def _trial(args: argparse.Namespace) -> list[tuple[str, str, str]]:
    sys.path.insert(0, str(ROOT / "tests"))
    from helpers import make_tiny_llama

    with tempfile.TemporaryDirectory() as tmp:
        model = make_tiny_llama(Path(tmp) / "llama")
        store = f"sqlite:///{tmp}/s.db"
        command = [sys.executable, "-m", "lorasweep", "run", "--task", "arith", "--model",
                   str(model), "--variant", "lora", "--search", "grid", "--lrs", "3e-3",
                   "--steps", str(args.trial_steps), "--batch-size", "8", "--launcher", "inline",
                   "--storage", store, "--set", "model.quantize=nf4",
                   "--set", f"task.eval_limit={args.eval_limit}", "--set", "train.max_length=96",
                   "--set", f"train.device={args.device}"]
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, cwd=tmp,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
        seconds = time.perf_counter() - started
        if done.returncode:
            tail = (done.stdout + done.stderr).strip().splitlines()[-1:]
            return [("trial", "arith, lora over nf4 (CLI)", f"failed ({done.returncode}): {tail}")]
        import optuna

        (summary,) = optuna.get_all_study_summaries(store)
        (trial,) = optuna.load_study(study_name=summary.study_name, storage=store).trials
        attrs = trial.user_attrs
        return [("trial", "arith, lora over nf4 (CLI)",
                 f"{trial.state.name.lower()}, validation {trial.value:.3f}, "
                 f"{attrs['steps']} steps, base {attrs['base']['quantize']} "
                 f"{attrs['base']['bits_per_param']} bits/param, {seconds:.0f} s")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu", action="store_true", help="tiny shapes on the CPU (CI)")
    parser.add_argument("--json", type=Path, default=None, help="write the table here too")
    args = parser.parse_args(argv)
    on_gpu = torch.cuda.is_available() and not args.cpu
    args.device = "cuda" if on_gpu else "cpu"
    args.model = "llama-1b" if on_gpu else "tiny-llama"
    args.seq_len, args.steps = (1024, 5) if on_gpu else (32, 2)
    args.trial_steps, args.eval_limit = (60, 64) if on_gpu else (1, 4)
    args.group = 1 if on_gpu else 1000
    if not on_gpu:
        torch.set_num_threads(1)
    started = time.perf_counter()
    rows = _tests(on_gpu) + _steps(args) + _trial(args)
    device = torch.cuda.get_device_name() if on_gpu else "cpu"
    print(f"gpu_check on {device} ({args.model}, q/k/v/o, r=8, 1 x {args.seq_len} tokens; "
          f"ratios vs lora over bf16 in the same round), {time.perf_counter() - started:.0f} s")
    width = max(len(r[1]) for r in rows)
    for part, item, result in rows:
        print(f"{part:<6} {item:<{width}}  {result}")
    if args.json is not None:
        args.json.write_text(json.dumps({"device": device, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
