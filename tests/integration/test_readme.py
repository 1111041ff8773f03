"""Every shell example of the README runs as written, in order, after the quick start.

The commands run in one empty folder (``recipes/`` copied beside it, as at the repository root),
through the real CLI, with ``LORASWEEP_SMOKE_TEST=1`` (each trial a token budget): what is checked
is that a new user following the README hits no error, not the scores. A block preceded by
``<!-- readme-test: skip REASON -->`` is reported as skipped with its reason; any other command
that is not ``lorasweep ...`` fails the test, so that new examples are never skipped silently.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lorasweep.train.trial import SMOKE_TEST_ENV

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
_SKIP = re.compile(r"<!--\s*readme-test:\s*skip\s*(.*?)\s*-->")
_SHELL_FENCES = ("sh", "bash", "shell", "console")
#: Setup commands that the test environment has already done, and why they are not rerun.
_DONE_ALREADY = {
    ("bash", "scripts/install.sh"): "the tests run in the installed package",
    ("bash", "scripts/test.sh"): "this is the test suite",
}
_COMMANDS = {"lorasweep", "bash", "sh", "python", "python3", "pip", "uv", "conda", "docker",
             "git", "cd", "export", "sudo", "apt-get", "curl", "sbatch", "srun", "salloc"}


@dataclasses.dataclass
class Block:
    line: int  # 1-based line of the block's first command in README.md
    commands: list[list[str]]  # each a command's words, comments dropped, ``&&`` chains split
    skip: str | None  # the reason of a readme-test skip mark before the block


def _commands(text: str) -> list[list[str]]:
    out: list[list[str]] = []
    for line in text.replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        while words:
            cut = words.index("&&") if "&&" in words else len(words)
            out.append(words[:cut])
            words = words[cut + 1 :]
    return [c for c in out if c]


def readme_blocks(text: str) -> list[Block]:
    """Shell blocks: fenced sh/bash/shell/console, or indented blocks whose lines are commands."""
    lines = text.splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        before = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        mark = _SKIP.search(before)
        if line.startswith("```"):
            end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
            if line[3:].strip() in _SHELL_FENCES:
                blocks.append(Block(i + 2, _commands("\n".join(lines[i + 1 : end])),
                                    mark.group(1) if mark else None))
            i = end + 1
            continue
        if line.startswith("    ") and not before.lstrip().startswith(("*", "-")) and (
                i == 0 or not lines[i - 1].strip()):
            end = i
            while end < len(lines) and (lines[end].startswith("    ") or not lines[end].strip()):
                end += 1
            body = "\n".join(x[4:] for x in lines[i:end])
            first = body.split()[0] if body.split() else ""
            if first in _COMMANDS:  # a layout tree or a diagram is not an example
                blocks.append(Block(i + 1, _commands(body), mark.group(1) if mark else None))
            i = end
            continue
        i += 1
    return blocks


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "CLICOLOR_FORCE")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env[SMOKE_TEST_ENV] = "1"
    env["OMP_NUM_THREADS"] = "1"  # tiny trials: one thread each is fastest, also on a busy machine
    return env


BLOCKS = readme_blocks(README.read_text())


def test_the_parser_finds_the_quick_start_and_the_examples():
    runnable = [c for b in BLOCKS if b.skip is None for c in b.commands]
    assert runnable[:3] == [["bash", "scripts/install.sh"], ["lorasweep", "run"],
                            ["lorasweep", "report"]]
    assert sum(c[0] == "lorasweep" for c in runnable) >= 8
    text = "x\n\n    lorasweep/cli.py   thin commands\n\n<!-- readme-test: skip needs SLURM -->\n\n" \
           "    lorasweep run --launcher slurm \\\n      --workers 4   # a comment\n"
    (block,) = readme_blocks(text)
    assert block.skip == "needs SLURM"
    assert block.commands == [["lorasweep", "run", "--launcher", "slurm", "--workers", "4"]]


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.skip is not None],
                         ids=lambda b: f"README.md:{b.line}")
def test_marked_examples_are_skipped_with_their_reason(block):
    pytest.skip(f"README.md:{block.line} {shlex.join(block.commands[0])}: {block.skip}")


@pytest.mark.slow
def test_readme_examples_run_in_order(tmp_path):
    shutil.copytree(REPO / "recipes", tmp_path / "recipes")
    ran = []
    for block in BLOCKS:
        if block.skip is not None:
            continue
        for words in block.commands:
            where = f"README.md:{block.line} `{shlex.join(words)}`"
            if tuple(words[:2]) in _DONE_ALREADY:
                continue
            assert words[0] == "lorasweep", (
                f"{where} is not a lorasweep command: make it one, or mark its block with "
                "<!-- readme-test: skip REASON --> on the line before it")
            proc = subprocess.run([sys.executable, "-m", "lorasweep", *words[1:]], cwd=tmp_path,
                                  env=_env(), capture_output=True, text=True, timeout=600,
                                  stdin=subprocess.DEVNULL)
            detail = f"{where} exited {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
            assert proc.returncode == 0, detail
            assert "Traceback" not in proc.stderr, detail
            ran.append(words)
    assert ran[:2] == [["lorasweep", "run"], ["lorasweep", "report"]]
