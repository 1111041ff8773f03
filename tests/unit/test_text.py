"""One way to write learning rates and counts, and rich never eating text as markup."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from lorasweep.text import did_you_mean, format_lr, format_lrs, plain, plural


@pytest.mark.parametrize(("lr", "text"), [
    (1e-4, "1e-4"), (0.0001, "1e-4"), (3e-3, "3e-3"), (2.5e-4, "2.5e-4"), (1e-2, "1e-2"),
    (0.5, "5e-1"), (1.0, "1"), (2.0, "2"), (12.0, "1.2e1"), (1 / 3 * 1e-3, "3.33333e-4"),
    (1.23456789e-5, "1.23457e-5"),
])
def test_learning_rates_have_one_short_form(lr, text):
    assert format_lr(lr) == text


def test_the_form_reads_back_as_the_same_grid():
    grid = [1e-5, 3e-5, 1e-4, 2.5e-4, 1e-3, 3e-3, 5e-3, 1e-2]
    assert format_lrs(grid) == "1e-5,3e-5,1e-4,2.5e-4,1e-3,3e-3,5e-3,1e-2"
    assert [float(x) for x in format_lrs(grid).split(",")] == grid


def test_counts_are_singular_only_for_one():
    assert plural(1, "learning rate") == "1 learning rate"
    assert plural(0, "learning rate") == "0 learning rates"
    assert plural(6, "learning rate") == "6 learning rates"
    assert plural(2, "study", "studies") == "2 studies"
    assert plural(1, "study", "studies") == "1 study"


@pytest.mark.parametrize("text", [
    "s·B·[tanh(tanh(Ax) Mᵀ) + spline(Ax)]", "[bold]not bold[/bold]", "lr=[1e-4]", "a\\[b]",
])
def test_plain_text_prints_as_written(text):
    out = io.StringIO()
    Console(file=out, width=200, color_system=None).print(plain(text), highlight=False)
    assert out.getvalue().rstrip("\n") == text


def test_a_near_miss_key_gets_its_did_you_mean_and_a_far_one_nothing():
    from lorasweep.tasks import task_registry
    from lorasweep.variants import registry

    assert did_you_mean("lora_ga", registry()) == " (did you mean 'lora-ga'?)"
    assert did_you_mean("LoRA-GA", registry()) == " (did you mean 'lora-ga'?)"
    assert did_you_mean("dorra", registry()) == " (did you mean 'dora'?)"
    assert did_you_mean("gsm8", task_registry()) == " (did you mean 'gsm8k'?)"
    assert did_you_mean("glue-ss2", task_registry()) == " (did you mean 'glue-sst2'?)"
    assert did_you_mean("nope", registry()) == ""
    assert did_you_mean(3, registry()) == ""
