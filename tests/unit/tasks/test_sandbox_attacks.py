"""Samples that try to forge their verdict or harm the machine, each scored through HumanEval's
own pass@1 path next to a correct sample: every attack must end as a failed sample (pass@1 of
the pair is exactly 1/2), harm nothing, and leave the next sample passing."""

from __future__ import annotations

import os
import secrets
import shutil
import stat
import tempfile
from pathlib import Path

import pytest

from lorasweep.tasks import get_task
from lorasweep.tasks.sandbox import isolation

PROBLEM = {
    "task_id": "Attack/0",
    "prompt": 'def add(a: int, b: int) -> int:\n    """Return the sum of a and b."""\n',
    "canonical_solution": "    return a + b\n",
    "test": "def check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(-1, 1) == 0\n",
    "entry_point": "add",
}
GOLD = PROBLEM["prompt"] + PROBLEM["canonical_solution"]
WRONG = "    return a - b\n"


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _needs(layer: str) -> None:
    if not isolation()[layer]:
        if _in_ci():
            pytest.fail(f"the sandbox lacks its {layer} layer in CI", pytrace=False)
        pytest.skip(f"the sandbox lacks its {layer} layer here")


def score(attack: str) -> float:
    """pass@1 of [attack, gold] through the task: 0.5 when the attack fails and gold passes."""
    task = get_task("humaneval", timeout=2.0, workers=2)
    completion = PROBLEM["prompt"] + attack + WRONG
    return task.score([PROBLEM], [[completion, GOLD]])


def indent(code: str) -> str:
    """Attack code that runs when the module loads (before the function is ever called)."""
    return "    pass\n" + "".join(f"{line}\n" for line in code.strip().splitlines()) + \
        "def add(a, b):\n"


@pytest.fixture
def world_writable():
    """A world-writable directory (no sticky bit) reachable by the sandbox's user, with a file
    anyone may delete: only the private mount namespace protects it."""
    folder = Path(tempfile.mkdtemp(prefix="lorasweep-ww-", dir="/tmp"))
    folder.chmod(0o777)
    victim = folder / "victim.txt"
    victim.write_text("keep me")
    victim.chmod(0o666)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


ATTACKS = {
    "main-report": """
import __main__
for name in ("report", "send", "verdict"):
    function = getattr(__main__, name, None)
    if function is not None:
        for message in ("passed", {"loaded": "ok"}, {"ok": 5}):
            try:
                function(message)
            except Exception:
                pass
""",
    "frame-walk": """
import sys, os
frame = sys._getframe()
while frame is not None:
    g = frame.f_globals
    for name in ("report", "send", "verdict"):
        if callable(g.get(name)):
            try:
                g[name]({"loaded": "ok"})
                g[name]("passed")
            except Exception:
                pass
    for fd in range(3, 32):
        try:
            os.write(fd, (str(g.get("token", "")) + ' {"loaded": "ok"}\\n{"ok": 5}\\n passed\\n').encode())
        except Exception:
            pass
    frame = frame.f_back
""",
    "print-pass-marker": """
import os
print("passed")
for fd in (1, 2):
    os.write(fd, b"passed\\n")
""",
    "sys-exit": "import sys\nsys.exit(0)",
    "os-exit": "import os\nos._exit(0)",
    "sleep": "import time\ntime.sleep(60)",
    "thread": """
import threading, os, time
def later():
    time.sleep(0.3)
    os._exit(0)
threading.Thread(target=later).start()
""",
    "always-equal": """
class AlwaysEqual(int):
    def __eq__(self, other):
        return True
    __hash__ = int.__hash__
""",
}


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_a_forged_verdict_is_a_failed_sample(name):
    attack = indent(ATTACKS[name])
    if name == "always-equal":  # the classic: an answer equal to everything
        attack = "    pass\n" + ATTACKS[name] + "def add(a, b):\n    return AlwaysEqual(0)\n"
    assert score(attack) == 0.5


def test_the_parents_command_line_and_environment_give_nothing_away(tmp_path):
    leak = tmp_path / "leak.txt"  # where a sample would exfiltrate to, if it could write there
    attack = indent(f"""
import os
found = []
for name in ("cmdline", "environ"):
    try:
        found.append(open("/proc/%d/%s" % (os.getppid(), name), "rb").read())
    except OSError:
        pass
try:
    open({str(leak)!r}, "wb").write(b"".join(found))
except OSError:
    pass
""")
    assert score(attack) == 0.5
    assert not leak.exists()


def test_reads_and_writes_outside_the_sandbox_fail_and_harm_nothing(tmp_path, world_writable):
    _needs("private_mounts")
    secret = tmp_path / "secret.txt"
    secret.write_text(secrets.token_hex(8))
    secret.chmod(0o600)
    victim = world_writable / "victim.txt"
    created = [world_writable / "new-io.txt", world_writable / "new-posix.txt",
               Path("/tmp") / f"lorasweep-attack-{secrets.token_hex(4)}"]
    attack = indent(f"""
import _io, posix
for path in ({str(secret)!r}, {str(victim)!r}):
    try:
        _io.open(path).read()
        posix.open(path, posix.O_RDONLY)
    except OSError:
        pass
for path in {[str(p) for p in created]!r} + [{str(victim)!r}]:
    try:
        _io.open(path, "w").write("written")
    except OSError:
        pass
    try:
        fd = posix.open(path, posix.O_WRONLY | posix.O_CREAT | posix.O_TRUNC, 0o666)
        posix.write(fd, b"written")
    except OSError:
        pass
""")
    assert score(attack) == 0.5
    assert victim.read_text() == "keep me"
    assert not any(p.exists() for p in created)


def test_unlink_in_a_world_writable_directory_fails(world_writable):
    _needs("private_mounts")
    victim = world_writable / "victim.txt"
    attack = indent(f"""
import posix
try:
    posix.unlink({str(victim)!r})
except OSError:
    pass
""")
    assert score(attack) == 0.5
    assert victim.read_text() == "keep me"
    assert stat.S_IMODE(world_writable.stat().st_mode) == 0o777


def test_a_symlink_to_a_file_outside_reads_nothing(tmp_path):
    secret = tmp_path / "secret.txt"
    token = secrets.token_hex(8)
    secret.write_text(token)
    secret.chmod(0o600)
    attack = indent(f"""
import posix, _io
posix.symlink({str(secret)!r}, "link")
text = _io.open("link").read()
raise ValueError(text)
""")
    assert score(attack) == 0.5
    from lorasweep.tasks.sandbox import SandboxLimits, run_tests

    if isolation()["user"] == "nobody":  # the file is root's: its content never leaves
        result = run_tests(PROBLEM["prompt"] + attack + WRONG, "pass", SandboxLimits(timeout=2))
        assert not result.passed and token not in result.reason
