"""scripts/install.sh on a Python the OS manages (stock Debian/Ubuntu): one line, the two commands.

Run against the machine's own system Python where it is one (an ``EXTERNALLY-MANAGED`` file in
its standard library, which is what pip reads); pip itself is asked first, so the test knows the
interpreter is one that pip refuses. A virtual environment made from the same Python passes the
check (it then stops at pip, missing on purpose, instead of installing anything).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
_CANDIDATES = ("/usr/bin/python3", shutil.which("python3") or "", "/usr/local/bin/python3")
_MANAGED = ("import os, sys, sysconfig; sys.exit(0 if sys.prefix == sys.base_prefix and "
            "os.path.isfile(os.path.join(sysconfig.get_path('stdlib'), 'EXTERNALLY-MANAGED')) "
            "else 1)")


def _managed_python() -> str | None:
    for python in dict.fromkeys(p for p in _CANDIDATES if p and os.access(p, os.X_OK)):
        if subprocess.run([python, "-c", _MANAGED], capture_output=True).returncode == 0:
            return python
    return None


SYSTEM = _managed_python()
pytestmark = pytest.mark.skipif(SYSTEM is None, reason="no externally managed Python here")


def _install(python: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PIP_BREAK_SYSTEM_PACKAGES", "VIRTUAL_ENV", "PYTHONPATH")}
    return subprocess.run(["bash", str(REPO / "scripts" / "install.sh")], cwd=tmp_path,
                          env={**env, "PYTHON": python}, capture_output=True, text=True,
                          timeout=120, stdin=subprocess.DEVNULL)


def test_a_system_python_stops_with_one_line_giving_the_two_commands(tmp_path):
    pip = subprocess.run([SYSTEM, "-m", "pip", "install", "--dry-run", "--no-index", "x"],
                         capture_output=True, text=True)
    if "No module named pip" in pip.stderr:
        pytest.skip(f"{SYSTEM} has no pip to refuse")
    assert "externally-managed-environment" in pip.stderr  # what the script runs into otherwise

    proc = _install(SYSTEM, tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "python3 -m venv .venv && . .venv/bin/activate" in lines[0]
    assert "bash scripts/install.sh" in lines[0]
    assert "externally-managed-environment" not in proc.stderr  # not pip's text


def test_a_virtual_environment_of_the_same_python_passes_the_check(tmp_path):
    subprocess.run([SYSTEM, "-m", "venv", "--without-pip", str(tmp_path / "venv")], check=True,
                   capture_output=True)
    proc = _install(str(tmp_path / "venv" / "bin" / "python"), tmp_path)
    assert "the OS manages" not in proc.stderr, proc.stderr
    assert proc.returncode != 0 and "No module named pip" in proc.stderr  # went on to pip
