"""Export the tuned adapters: for each (task, variant), the trial the report selected.

The trial is the one at the selected learning rate (chosen on validation, see
:mod:`lorasweep.report.select`) whose seed has the best validation score. Its folder
``OUT/TASK/VARIANT-TAG/`` gets the adapter in lorasweep's format (always), in peft's format
(where the variant's math is a peft LoRA), a ``README.md`` model card with the sweep's curve
(``curve.png``), and with ``merge`` the merged full weights (``merged/``, safetensors, loadable as
a plain transformers model) for variants whose update is a weight: ``W' = W + ΔW``.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

from ..text import format_lr
from .select import VariantSummary

__all__ = ["ExportError", "Exported", "export_tuned"]

_NATIVE = ("lorasweep_adapter.json", "lorasweep_adapter.safetensors")
_PEFT = ("adapter_config.json", "adapter_model.safetensors")


class ExportError(ValueError):
    """Nothing to export (unknown sweep, variant or task): the message names the fix."""


@dataclasses.dataclass
class Exported:
    task: str
    variant_tag: str
    folder: Path
    lr: float
    seed: int
    peft: bool
    merged: bool
    note: str | None = None


def _pick(summary: VariantSummary, rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The completed trial at the selected LR with the best validation score (saved adapter)."""
    candidates = [r for r in rows if (r["sweep"], r["task"], r["model"], r["variant_tag"]) ==
                  (summary.sweep, summary.task, summary.model, summary.variant_tag)
                  and r["state"] == "complete" and r["lr"] == summary.best_lr and r.get("run_dir")
                  and (Path(r["run_dir"]) / "adapter" / _NATIVE[0]).is_file()]
    sign = -1.0 if summary.minimize else 1.0  # a loss: the lowest
    return max(candidates, key=lambda r: (sign * r["select_score"], -r["seed"]), default=None)


def _curve_png(summary: VariantSummary, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lrs = sorted(summary.cells)
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.errorbar(lrs, [summary.cells[lr].mean for lr in lrs],
                yerr=[summary.cells[lr].std for lr in lrs], marker="o", capsize=3,
                label=f"test {summary.metric}")
    ax.plot(lrs, [summary.cells[lr].validation for lr in lrs], "--", marker=".",
            label="validation (selects)")
    ax.scatter([summary.best_lr], [summary.peak], marker="*", s=200, zorder=5, color="black")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_title(f"{summary.variant_tag} on {summary.task}", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _auto_class(task: str) -> str:
    from ..tasks import find_task

    kind = getattr(find_task(task), "model_kind", "")
    return {"sequence-classification": "AutoModelForSequenceClassification",
            "causal-lm": "AutoModelForCausalLM"}.get(kind, "AutoModel")


def _article(word: str) -> str:
    return "An" if word[:1].lower() in "aeiou" else "A"


def _base_model(model: str) -> tuple[list[str], str, str]:
    """``(setup lines, from_pretrained arguments, what else to install)`` that load ``model`` as
    written: an ``embedded:NAME`` alias is no id transformers knows, so the card finds the files
    of the package that ships it (on any machine where that package is installed)."""
    from ..train.model import EMBEDDED_MODELS

    entry = EMBEDDED_MODELS.get(model.split(":", 1)[1]) if model.startswith("embedded:") else None
    if entry is None:
        return [], repr(model), ""
    folder = "" if entry["folder"] == "." else f" / {entry['folder']!r}"
    setup = ["import importlib.util", "from pathlib import Path", "",
             f"# {model}: {entry['summary']}, the files of a PyPI package ({entry['pip']})",
             f"BASE = str(Path(importlib.util.find_spec({entry['package']!r})"
             f".submodule_search_locations[0]){folder})"]
    args = "BASE" + (f", gguf_file={entry['gguf_file']!r}" if entry.get("gguf_file") else "")
    return setup, args, f" and `{entry['pip']}`"


def _card(summary: VariantSummary, row: dict[str, Any], peft: bool, merged: bool) -> str:
    model = row["model"]
    auto = _auto_class(summary.task)
    setup, args, install = _base_model(model)
    score = f"{summary.peak:.4f}" + (f" ± {summary.test_std:.4f}" if summary.seeds > 1 else "")
    base = [*setup, f"base = {auto}.from_pretrained({args})  # the base model"]
    lines = [
        f"# {summary.variant_tag} on {summary.task}", "",
        f"{_article(summary.variant)} `{summary.variant}` adapter of `{model}` for `{summary.task}`, "
        f"trained by lorasweep at the learning rate its sweep `{summary.sweep}` selected.", "",
        "| | |", "|---|---|",
        f"| base model | `{model}` |", f"| task | `{summary.task}` |",
        f"| variant | `{summary.variant}` (`{summary.variant_tag}`) |",
        f"| selected learning rate | {format_lr(summary.best_lr)} (selection: {summary.selection}) |",
        f"| test {summary.metric} | {score} over {summary.seeds} seed(s) |",
        f"| validation {summary.metric} | {summary.validation_score:.4f} |",
        f"| this adapter | seed {row['seed']} (best validation score at that learning rate) |",
        "", "![the sweep's learning-rate curve](curve.png)", "",
        "## Load it", "", f"With lorasweep (every variant; needs lorasweep{install}):",
        "", "```python", f"from transformers import {auto}", "", "import lorasweep", "", *base,
        "model = lorasweep.load_adapter(base, \"path/to/this/folder\")", "```", ""]
    if peft:
        lines += ["With peft instead (this variant's math is a peft LoRA; needs `pip install peft "
                  f"transformers`{install}, not lorasweep):", "", "```python", "from peft import PeftModel",
                  f"from transformers import {auto}", "", *base,
                  "model = PeftModel.from_pretrained(base, \"path/to/this/folder\")", "```", ""]
    if merged:
        lines += ["Merged full weights (no adapter library needed):", "", "```python",
                  f"from transformers import {auto}", "",
                  f"model = {auto}.from_pretrained(\"path/to/this/folder/merged\")", "```", ""]
    return "\n".join(lines)


def _merge(row: dict[str, Any], adapter: Path, dest: Path) -> str | None:
    """Write the merged model to ``dest`` (None), or say why this variant cannot merge."""

    from ..config import TrialSpec
    from ..tasks import get_task
    from ..train.model import load_model
    from ..variants import get_variant, load_adapter, merge_and_unload

    spec = TrialSpec.from_dict(row["provenance"]["config"])
    task = get_task(spec.task, **spec.task_options)
    loaded = load_model(spec.model, task, spec.seed, spec.model_options, "cpu")
    model = load_adapter(loaded.model, adapter)
    variant = get_variant(model)
    if not variant.mergeable:
        return f"{variant.key} is nonlinear in its input: no merged weights"
    merge_and_unload(model)
    model.save_pretrained(dest, safe_serialization=True)
    if loaded.tokenizer is not None:
        loaded.tokenizer.save_pretrained(dest)
    return None


def export_tuned(summaries: list[VariantSummary], rows: list[dict[str, Any]], out_dir: str | Path,
                 merge: bool = False) -> list[Exported]:
    """Export each summarised (task, variant)'s selected trial into ``out_dir``."""
    done = []
    for s in summaries:
        if s.best_lr is None or " (avg of " in s.task:
            continue  # a group average is no trial of its own
        row = _pick(s, rows)
        dest = Path(out_dir) / s.task / s.variant_tag
        if row is None:
            done.append(Exported(s.task, s.variant_tag, dest, s.best_lr, -1, False, False,
                                 "no saved adapter at the selected learning rate"))
            continue
        adapter = Path(row["run_dir"]) / "adapter"
        dest.mkdir(parents=True, exist_ok=True)
        for name in _NATIVE + _PEFT:
            if (adapter / name).is_file():
                shutil.copy2(adapter / name, dest / name)
        peft = all((dest / name).is_file() for name in _PEFT)
        note = _merge(row, adapter, dest / "merged") if merge else None
        merged = merge and note is None
        _curve_png(s, dest / "curve.png")
        (dest / "README.md").write_text(_card(s, row, peft, merged))
        (dest / "selection.json").write_text(json.dumps({
            "sweep": s.sweep, "task": s.task, "model": s.model, "variant": s.variant,
            "variant_tag": s.variant_tag, "selected_lr": s.best_lr, "selection": s.selection,
            "seed": row["seed"], "test_score": s.peak, "test_std": s.test_std,
            "validation_score": s.validation_score, "seeds": s.seeds, "trial_run_dir":
            row["run_dir"]}, indent=2))
        done.append(Exported(s.task, s.variant_tag, dest, s.best_lr, row["seed"], peft, merged,
                             note))
    return done
