"""The report's cost table names each variant's frozen base (its storage, bits per parameter,
bytes), as its trials recorded it: a QLoRA sweep says nf4 beside a bf16 one."""

from __future__ import annotations

from types import SimpleNamespace

from lorasweep.report.html import _cost


def _row(tag, base):
    return {"variant_tag": tag, "state": "complete", "steps": 10, "train_time_s": 5.0,
            "peak_memory_mb": 100.0, "trainable_params": 1000, "base": base}


def test_the_cost_table_has_the_frozen_base_column():
    group = [SimpleNamespace(variant="lora", variant_tag="lora-r8"),
             SimpleNamespace(variant="dora", variant_tag="dora-r8")]
    rows = [_row("lora-r8", {"quantize": "nf4", "bits_per_param": 4.127, "base_bytes": 5.7e9}),
            _row("dora-r8", {"quantize": "none", "bits_per_param": 16.0, "base_bytes": 16.06e9})]
    html = _cost(group, rows)
    assert "<th>frozen base</th>" in html
    assert "<td>nf4, 4.127 bits/param, 5.7 GB</td>" in html
    assert "<td>none, 16 bits/param, 16.1 GB</td>" in html
    assert _cost(group, [_row("lora-r8", None)]).count("<td>-</td>") >= 2  # older trials
