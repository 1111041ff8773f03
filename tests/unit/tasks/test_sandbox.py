"""The sandbox for generated code: each hazard fails its own sample and harms nothing else.

Every program runs under small limits (1-2 s, 256 MiB address space, 1 MiB files), so a test that
fails cannot hurt the machine: allocations stop at the limit, forks are refused.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lorasweep.tasks import sandbox
from lorasweep.tasks.sandbox import SandboxLimits, isolation, run_many, run_python

LIMITS = SandboxLimits(timeout=2.0, memory_bytes=256 << 20, file_bytes=1 << 20)
PROJECT_FILE = Path(__file__).resolve().parents[3] / "pyproject.toml"


def run(code: str, **limits) -> sandbox.SandboxResult:
    return run_python(code, SandboxLimits(**{**LIMITS.__dict__, **limits}))


def test_a_correct_solution_passes_and_a_wrong_one_fails():
    solution = "def add(a, b):\n    return a + b\n"
    good = run(solution + "assert add(2, 3) == 5\n")
    bad = run(solution.replace("+", "-") + "assert add(2, 3) == 5\n")
    assert (good.passed, good.reason) == (True, "passed") and 0 < good.duration < 2
    assert (bad.passed, bad.reason) == (False, "failed")


def test_errors_and_early_exits_are_not_passes():
    assert run("raise ValueError('no')").reason == "error: ValueError: no"
    assert run("def f(:\n").reason.startswith("error: SyntaxError")
    assert not run("import sys\nsys.exit(0)").passed  # the tests never ran
    assert not run("import os\nos._exit(0)").passed


def test_the_standard_library_works_inside():
    code = ("import collections, hashlib, heapq, itertools, math, re\nfrom typing import List\n"
            "assert hashlib.md5(b'a').hexdigest().startswith('0cc1')\n"
            "open('scratch.txt', 'w').write('x')\nassert open('scratch.txt').read() == 'x'\n")
    assert run(code).passed


def test_an_infinite_loop_times_out_and_its_process_group_is_gone(monkeypatch):
    started: list[subprocess.Popen] = []

    class Recording(subprocess.Popen):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            started.append(self)

    sandbox._setup()  # the (cached) probe runs outside the recording
    monkeypatch.setattr(sandbox.subprocess, "Popen", Recording)
    result = run("while True:\n    pass\n", timeout=1.0)
    assert (result.passed, result.reason) == (False, "timeout")
    assert 1.0 <= result.duration < 5
    assert len(started) == 2  # the program and its judge
    for proc in started:
        assert proc.returncode is not None  # reaped
        with pytest.raises(ProcessLookupError):
            os.killpg(proc.pid, 0)  # nothing is left in its process group


@pytest.mark.parametrize("code", [
    "import os\nwhile True:\n    os.fork()\n",
    "import os\nos.forkpty()\n",
    "import subprocess\nsubprocess.Popen(['true'])\n",
    "import subprocess\nsubprocess.run('echo hi', shell=True)\n",
    "import os\nos.system('true')\n",
    "import multiprocessing\n",
])
def test_new_processes_fail_that_sample_only(code):
    result = run(code)
    assert not result.passed and result.reason.startswith("error:")
    assert run("assert True").passed  # the next sample is unaffected


def test_fork_fails_even_when_the_prelude_is_undone():
    if isolation()["user"] != "nobody":
        pytest.skip("only an unprivileged user makes RLIMIT_NPROC bind")
    undo = ("import sys\ndel sys.modules['posix']\nimport posix\n"  # a fresh, unpatched posix
            "pid = posix.fork()\nif pid == 0:\n    posix._exit(0)\n")
    result = run(undo)
    assert not result.passed and "Resource temporarily unavailable" in result.reason


@pytest.mark.parametrize("code", [
    "x = bytearray(10 ** 10)\n",
    "chunks = []\nwhile True:\n    chunks.append(' ' * 10 ** 6)\n",
])
def test_unbounded_allocation_fails_the_sample(code):
    result = run(code)
    assert not result.passed and ("MemoryError" in result.reason or "killed" in result.reason)


def test_deleting_a_file_outside_the_sandbox_fails_and_it_survives(tmp_path):
    sentinel = tmp_path / "sentinel.txt"
    sentinel.write_text("keep me")
    for code in (f"import os\nos.remove({str(sentinel)!r})\n",
                 f"import pathlib\npathlib.Path({str(sentinel)!r}).unlink()\n",
                 f"import shutil\nshutil.rmtree({str(tmp_path)!r})\n",
                 f"open({str(sentinel)!r}, 'w').write('gone')\n"):
        assert not run(code).passed
    assert sentinel.read_text() == "keep me"


def test_reading_a_project_file_fails():
    assert PROJECT_FILE.is_file()
    result = run(f"print(open({str(PROJECT_FILE)!r}).read())\n")
    assert not result.passed and "outside the sandbox" in result.reason


@pytest.fixture
def listener():
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    server.settimeout(0.2)
    try:
        yield server
    finally:
        server.close()


def _received_nothing(server: socket.socket) -> bool:
    try:
        connection, _ = server.accept()
    except TimeoutError:
        return True
    connection.close()
    return False


def test_network_access_fails_and_the_listener_receives_nothing(listener):
    port = listener.getsockname()[1]
    for code in (f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1)\n",
                 f"import socket\ns = socket.socket()\ns.connect(('127.0.0.1', {port}))\n",
                 f"import urllib.request\nurllib.request.urlopen('http://127.0.0.1:{port}/')\n"):
        assert not run(code).passed
    assert _received_nothing(listener)


def test_the_network_namespace_holds_when_the_prelude_is_undone(listener):
    if not isolation()["network_namespace"]:
        pytest.skip("unshare -n does not work here: the prelude is the only network block")
    port = listener.getsockname()[1]
    undo = ("import sys\nfor m in ('socket', '_socket'):\n    del sys.modules[m]\n"
            f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1)\n")
    assert not run(undo).passed
    assert _received_nothing(listener)


def test_writing_a_huge_file_fails():
    result = run("with open('big.bin', 'wb') as f:\n    f.write(b'x' * (64 << 20))\n")
    assert not result.passed and "File too large" in result.reason


def test_runs_in_a_fresh_private_directory_with_a_minimal_environment():
    code = ("import os, sys\ncwd = os.getcwd()\nassert os.listdir('.') == ['main.py'], os.listdir()\n"
            "assert os.environ['HOME'] == cwd and os.environ['TMPDIR'] == cwd\n"
            "assert set(os.environ) <= {'PATH', 'HOME', 'TMPDIR', 'LANG', 'LC_CTYPE'}, os.environ\n"
            "assert sys.flags.isolated\n")
    if isolation()["user"] == "nobody":
        code += "assert os.getuid() != 0 and os.getgid() != 0 and not os.getgroups()\n"
    assert run(code).reason == "passed"


def test_run_many_keeps_order_with_a_bounded_pool():
    programs = ["assert True", "assert False", "raise KeyError('k')", "assert 1"]
    results = run_many(programs, LIMITS, workers=2)
    assert [r.reason for r in results] == ["passed", "failed", "error: KeyError: 'k'", "passed"]
    assert run_many([], LIMITS) == []


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return found


def test_a_program_dies_with_its_launcher():
    if not Path("/proc/self/task").is_dir():
        pytest.skip("needs /proc")
    launcher = subprocess.Popen([
        sys.executable, "-c",
        "from lorasweep.tasks import sandbox\n"
        "sandbox.isolation()\n"  # the probe runs first: the next child is the program
        "print('ready', flush=True)\n"
        "sandbox.run_python('import time\\ntime.sleep(60)', sandbox.SandboxLimits(timeout=30))\n",
    ], cwd=PROJECT_FILE.parent, stdout=subprocess.PIPE, text=True)
    folders: list[str] = []
    try:
        assert launcher.stdout.readline().strip() == "ready"
        deadline = time.monotonic() + 30
        while len(children := _children(launcher.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(children) == 2, "the launcher never started its program and judge"
        time.sleep(0.5)  # let the runner set its parent-death signal
        folders = [os.readlink(f"/proc/{child}/cwd") for child in children]
    finally:
        launcher.kill()  # a killed launcher cannot remove the run's directories: we do
        launcher.wait()
        launcher.stdout.close()
    for child in children:  # the program dies with it, then the judge (its pipe closed)
        path = Path(f"/proc/{child}/status")
        deadline = time.monotonic() + 5
        while path.exists() and time.monotonic() < deadline:
            if "\nState:\tZ" in path.read_text():  # dead, awaiting its new parent's reaping
                break
            time.sleep(0.05)
        assert not path.exists() or "\nState:\tZ" in path.read_text()
    for folder in folders:
        if Path(folder).name.startswith(("lorasweep-sandbox-", "lorasweep-judge-")):
            shutil.rmtree(folder, ignore_errors=True)
