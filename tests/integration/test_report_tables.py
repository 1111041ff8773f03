"""The terminal and Markdown tables of an adaptive search show the whole curve: every learning
rate probed (a rung's score marked with its fraction of the schedule), short variant names with
the shared configuration in a caption, the band as one short word, at 80 columns.

The sweep is the embedded default's shape (LoRA, LoRA+, AdaLoRA; seven learning rates, adaptive
search) on the synthetic curve: the real store, worker loop and report collection."""

from __future__ import annotations

import io
import re

import pytest
from helpers import DEFAULT_LRS as LRS
from helpers import adaptive_default_sweep
from rich.console import Console

from lorasweep.report import collect_rows, render_terminal, summarise
from lorasweep.report.markdown import markdown

HEADER = ["1e-4", "3e-4", "1e-3", "3e-3", "1e-2", "3e-2", "1e-1"]


@pytest.fixture(scope="module")
def adaptive(tmp_path_factory):
    rows = collect_rows(adaptive_default_sweep(tmp_path_factory.mktemp("tables")), "default")
    return summarise(rows), rows


def test_the_terminal_tables_show_every_probed_lr_at_80_columns(adaptive):
    summaries, rows = adaptive
    console = Console(width=80, file=io.StringIO(), record=True, color_system=None)
    render_terminal(summaries, console, rows)
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= 80, text
    assert "…" not in text, text  # nothing cut
    head = next(line for line in text.splitlines() if "1e-4" in line)
    assert head.split()[1:] == HEADER, head  # every probed learning rate is a column
    for name in ("lora", "loraplus", "adalora"):
        (row,) = [line for line in text.splitlines() if line.split()[:1] == [name]
                  and len(line.split()) == 1 + len(LRS)]
        cells = row.split()[1:]
        assert "-" not in cells, row  # the first rung probed every learning rate
        assert sum(bool(re.fullmatch(r"0\.\d\d@\d+%", c)) for c in cells) >= 5, row
        assert [line for line in text.splitlines() if line.split()[:1] == [name]
                and "unmeasured" in line.split()]  # the band: one short word, one line
    assert "lora-r8-a16" not in text and "each variant: r8-a16" in text
    assert "score@F%: the validation score of a learning rate the adaptive search stopped at F% " \
        "of the schedule" in " ".join(text.split())  # the marker is explained


def test_the_markdown_tables_show_every_probed_lr(adaptive):
    summaries, rows = adaptive
    md = markdown(summaries, rows, 0.01)
    tables = [line for line in md.splitlines() if line.startswith("| variant | 1e-4")]
    assert len(tables) == 2 and all(t.split(" | ")[1:] == [*HEADER[:-1], HEADER[-1] + " |"]
                                    for t in tables)
    rung_rows = [line for line in md.splitlines() if re.match(r"\| (lora|loraplus|adalora) \| ", line)
                 and "@" in line]
    assert len(rung_rows) == 6  # three variants, in the test and the validation table
    assert "| loraplus | " in md and "lora-r8-a16" not in md.split("## Trials")[0]
    assert "Each variant: r8-a16." in md and "| unmeasured |" in md
    summary_lines = [line for line in md.splitlines() if line.startswith("| ") and "unmeasured" in line]
    assert len(summary_lines) == 3 and max(map(len, summary_lines)) <= 80
