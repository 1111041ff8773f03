"""Run untrusted, model-generated Python programs; decide pass/fail where they cannot reach.

**The verdict.** :func:`run_tests` runs the program and its tests in two processes. The program
(the *sample*) runs in the sandbox below and serves calls of its top-level functions; the tests
run in a *judge* process of their own, as the launcher's user, from a file in a private
directory the sample cannot read. In the tests, ``sample(NAME)`` is a proxy: a call sends its
arguments to the sample over a pipe and gets the result back as plain data (JSON plus tags for
tuples, sets, dicts, bytes, big ints, non-finite floats), decoded into builtin values only. So
no code of the sample ever runs in the judge's interpreter: it cannot call the judge's
functions, walk its frames, read its token, skip its asserts or return an object "equal to
everything"; ``sys.exit(0)``, ``os._exit(0)``, printing "passed", sleeping, or answering early
are all failures. The judge writes ``token verdict`` (the token comes on its stdin) to a private
file, and only a ``passed`` line with the token makes a pass. :func:`run_python` (no tests)
passes a program that runs to its end without an exception, which the program itself reports:
use it for plain runs, never for a score.

What the sample gets (the layers, from strongest to weakest):

1. **Its own process** (``python -I -B``: isolated mode, no user site, no ``PYTHON*`` variables),
   in a fresh temporary directory as cwd, with an environment stripped to ``PATH``, ``HOME`` and
   ``TMPDIR`` (both the temporary directory) and ``LANG``. A crash, hang or allocation storm
   harms that process only.
2. **A wall-clock timeout** enforced from outside: both processes lead their own sessions
   (``start_new_session``) and both process groups are SIGKILLed on timeout, and after every
   run in any case, so nothing outlives a run. Should the launcher itself die, the sample gets
   SIGKILL too (``PR_SET_PDEATHSIG``), and an inner ``alarm`` ends it a little after the timeout.
3. **A private mount namespace** (``unshare -m``): every mount is remounted read-only in it,
   except the sample's own directory, so it can neither write nor delete anything else, even in
   world-writable directories (``/tmp``, ``/dev/shm``); nothing propagates back.
4. **Resource limits** (hard = soft, so the sample cannot raise them, except CPU's hard limit
   one second above, so SIGXCPU comes first): CPU time, address space, file size (stderr too;
   stdout is discarded), open files, no core dumps, and no new processes or threads
   (``RLIMIT_NPROC = 0``, enforced only for non-root users).
5. **An unprivileged user**: when we run as root, the sample drops to ``nobody`` (groups
   cleared), so file permissions protect what it must not read and ``RLIMIT_NPROC`` binds. The
   interpreter must be usable by ``nobody``; if ``sys.executable`` is not (a pyenv under
   ``/root``), the system ``python3`` is used (the sample then sees the standard library only).
   Which layers work is found once per process by running a probe with each combination,
   strongest first (:func:`isolation`).
6. **No network**: where ``unshare -n`` works (root, or ``unshare -r`` via a user namespace)
   the sample runs in an empty network namespace (not even a loopback that is up).
7. **A prelude** that disables ``os.fork`` and friends, ``subprocess``, ``multiprocessing``,
   ``ctypes``, ``os.kill``, socket creation, and makes ``open`` / ``os.remove`` / ... refuse paths
   outside the temporary directory. Python code can undo it (``_io``, ``posix``): it turns the
   common accidents of generated code into a clean failure, the layers above hold the line.

What it does not protect against: it is not a container. The sample can read what ``nobody``
(when not root: the current user) may read, including world-readable files and other
processes' command lines; without root the sample and the judge run as the same user, so where
``ptrace`` is allowed between processes of one user, the sample could reach the judge. Where
``unshare`` is missing the network and the file system are guarded by the prelude only.
CPU and memory are limited per process, not per machine; a launcher killed by SIGKILL leaves
the temporary directories behind; kernel exploits are out of scope. For
adversarial code use a real boundary (a VM, gVisor, nsjail).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ._sandbox_runners import CODEC, JUDGE, SAMPLE

__all__ = ["SandboxLimits", "SandboxResult", "isolation", "run_many", "run_python", "run_tests"]

_log = logging.getLogger(__name__)
_SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"


@dataclasses.dataclass(frozen=True)
class SandboxLimits:
    timeout: float = 5.0  # wall-clock seconds
    cpu_seconds: int | None = None  # CPU time; default: the timeout rounded up, plus one
    memory_bytes: int = 1 << 30  # address space
    file_bytes: int = 16 << 20  # largest file it may write (stdout/stderr included)
    open_files: int = 64

    def cpu(self) -> int:
        return self.cpu_seconds or math.ceil(self.timeout) + 1


@dataclasses.dataclass(frozen=True)
class SandboxResult:
    passed: bool
    reason: str  # "passed" | "failed" (an assertion) | "timeout" | "error: ..."
    duration: float  # seconds, wall clock


@dataclasses.dataclass(frozen=True)
class _Setup:
    interpreter: str
    wrapper: tuple[str, ...]  # e.g. ("unshare", "-n", "-m", "--")
    drop: tuple[int, int] | None  # (uid, gid) to become, when running as root

    @property
    def mounts(self) -> bool:
        return "-m" in self.wrapper


def _nobody() -> tuple[int, int] | None:
    import pwd

    try:
        entry = pwd.getpwnam("nobody")
    except KeyError:
        return None
    return entry.pw_uid, entry.pw_gid


def _candidates() -> list[str]:
    found = [sys.executable, getattr(sys, "_base_executable", ""), "/usr/bin/python3",
             shutil.which("python3", path=_SYSTEM_PATH) or ""]
    return list(dict.fromkeys(p for p in found if p and os.path.isfile(p)))


def _wrappers() -> list[tuple[str, ...]]:
    unshare = shutil.which("unshare", path=_SYSTEM_PATH)
    if unshare is None:
        return [()]
    user = () if os.geteuid() == 0 else ("-r",)
    return [(unshare, *user, "-n", "-m", "--"), (unshare, *user, "-n", "--"), ()]


# Modules the runner has not loaded itself: importing them proves the (unprivileged) program can
# read the interpreter's standard library.
_PROBE = "import bisect, difflib, fractions, hashlib, heapq, statistics, string, textwrap\n"


@functools.lru_cache(maxsize=1)
def _setup() -> _Setup:
    """The strongest isolation that works here, found once per process by running a probe."""
    drops = [_nobody(), None] if os.geteuid() == 0 else [None]
    for drop in drops:
        for wrapper in _wrappers():
            for interpreter in _candidates():
                setup = _Setup(interpreter, wrapper, drop)
                if _run(setup, _PROBE, SandboxLimits(timeout=20)).passed:
                    if drop is None and os.geteuid() == 0:
                        _log.warning("sandbox: cannot run programs as 'nobody' here; they run as "
                                     "root with the prelude's guards only")
                    if "-m" not in wrapper:
                        _log.warning("sandbox: no private mount namespace (unshare -m) here; "
                                     "programs can write wherever their user may")
                    if not wrapper:
                        _log.info("sandbox: no network namespace (unshare -n) here; the network "
                                  "is blocked by the prelude only")
                    return setup
    raise RuntimeError("sandbox: no Python interpreter runs a trivial program here "
                       f"(tried {', '.join(_candidates())})")


def isolation() -> dict[str, Any]:
    """The layers in effect on this machine (for logs, reports and tests)."""
    setup = _setup()
    return {
        "interpreter": setup.interpreter,
        "user": "nobody" if setup.drop else ("root" if os.geteuid() == 0 else "current user"),
        "network_namespace": bool(setup.wrapper),
        "private_mounts": setup.mounts,
    }


def _temp_base(drop: tuple[int, int] | None) -> str | None:
    """The system temp dir, unless the unprivileged user could not reach it (then /tmp)."""
    base = tempfile.gettempdir()
    if drop and any(not os.stat(p).st_mode & 0o001 for p in [base, *map(str, Path(base).parents)]):
        return "/tmp"
    return None


def _remove(path: str) -> None:
    def retry(func, target, _exc):  # a program may have left a directory without permissions
        try:
            os.chmod(os.path.dirname(target), 0o700)
            func(target)
        except OSError:
            pass

    shutil.rmtree(path, onexc=retry) if sys.version_info >= (3, 12) else shutil.rmtree(
        path, onerror=retry)


def _tail(handle) -> str:
    handle.seek(0, os.SEEK_END)
    handle.seek(max(0, handle.tell() - 4096))
    return handle.read().decode("utf-8", "replace")


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _signal_reason(returncode: int) -> str:
    if returncode in (-signal.SIGXCPU, -signal.SIGALRM):  # CPU time, inner wall clock
        return "timeout"
    try:
        return f"error: killed by {signal.Signals(-returncode).name}"
    except ValueError:
        return f"error: killed by signal {-returncode}"


def _run(setup: _Setup, code: str, limits: SandboxLimits, tests: str = "") -> SandboxResult:
    start = time.monotonic()
    workdir = tempfile.mkdtemp(prefix="lorasweep-sandbox-", dir=_temp_base(setup.drop))
    judge_dir = tempfile.mkdtemp(prefix="lorasweep-judge-")  # mode 0700: the sample cannot read
    procs: list[subprocess.Popen] = []
    try:
        Path(workdir, "main.py").write_text(code, encoding="utf-8")
        if setup.drop:
            os.chown(workdir, *setup.drop)
        Path(judge_dir, "tests.py").write_text(tests, encoding="utf-8")
        token = secrets.token_hex(16)
        rlimits = {"RLIMIT_CPU": limits.cpu(), "RLIMIT_AS": limits.memory_bytes,
                   "RLIMIT_FSIZE": limits.file_bytes, "RLIMIT_NOFILE": limits.open_files,
                   "RLIMIT_CORE": 0, "RLIMIT_NPROC": 0}
        env = {"PATH": _SYSTEM_PATH, "HOME": workdir, "TMPDIR": workdir, "LANG": "C.UTF-8"}
        calls_r, calls_w = os.pipe()
        answers_r, answers_w = os.pipe()
        with tempfile.TemporaryFile() as verdict, tempfile.TemporaryFile() as err:
            sample_cfg = {"dir": workdir, "drop": setup.drop, "limits": rlimits,
                          "calls": calls_r, "answers": answers_w, "parent": os.getpid(),
                          "alarm": math.ceil(limits.timeout) + 2, "mounts": setup.mounts,
                          "codec": CODEC}
            judge_cfg = {"verdict": verdict.fileno(), "calls": calls_w, "answers": answers_r,
                         "tests": str(Path(judge_dir, "tests.py")), "codec": CODEC}
            try:
                procs.append(subprocess.Popen(
                    [*setup.wrapper, setup.interpreter, "-I", "-B", "-c", SAMPLE,
                     json.dumps(sample_cfg)], cwd=workdir, env=env, stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL, stderr=err, pass_fds=(calls_r, answers_w),
                    start_new_session=True))
                procs.append(subprocess.Popen(
                    [sys.executable, "-I", "-B", "-c", JUDGE, json.dumps(judge_cfg)],
                    cwd=judge_dir, env={"PATH": _SYSTEM_PATH, "LANG": "C.UTF-8"},
                    stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                    pass_fds=(verdict.fileno(), calls_w, answers_r), start_new_session=True))
            except OSError as exc:
                return SandboxResult(False, f"error: cannot start the sandbox: {exc}",
                                     time.monotonic() - start)
            finally:
                for fd in (calls_r, calls_w, answers_r, answers_w):
                    os.close(fd)
            sample, judge = procs
            try:
                try:
                    judge.stdin.write((token + "\n").encode())
                    judge.stdin.close()
                except OSError:
                    pass
                judge.wait(timeout=limits.timeout)
            except subprocess.TimeoutExpired:
                return SandboxResult(False, "timeout", time.monotonic() - start)
            duration = time.monotonic() - start
            reason = next((line[len(token) + 1:] for line in reversed(_tail(verdict).splitlines())
                           if line.startswith(token + " ")), None)
            if reason == "passed":
                return SandboxResult(True, reason, duration)
            try:
                status = sample.wait(timeout=0.5)  # did the sample die on its own, and how?
            except subprocess.TimeoutExpired:
                status = None
            if status is not None and status < 0:
                return SandboxResult(False, _signal_reason(status), duration)
            if reason is None:
                last = _tail(err).strip().splitlines()
                reason = f"error: the judge ended without a verdict (exit status {judge.returncode})"
                if status:
                    reason = f"error: exit status {status}" + (f" ({last[-1][:200]})" if last else "")
            return SandboxResult(False, reason, duration)
    finally:
        for proc in procs:  # nothing outlives a run: both process groups, killed and reaped
            _kill_group(proc.pid)
            proc.wait()
        _remove(workdir)
        _remove(judge_dir)


def run_python(code: str, limits: SandboxLimits | None = None) -> SandboxResult:
    """Run ``code`` (a whole program) in the sandbox; it passes if it ends without an exception.

    The program reports that itself, so this verdict can be forged by the program: checks whose
    outcome matters use :func:`run_tests`.
    """
    return _run(_setup(), code, limits or SandboxLimits())


def run_tests(code: str, tests: str, limits: SandboxLimits | None = None) -> SandboxResult:
    """Run ``code`` in the sandbox and ``tests`` (trusted) in a judge process of their own.

    In ``tests``, ``sample(NAME)`` is a proxy of the program's top-level function ``NAME``: a
    call sends its arguments to the program and returns its result, as plain data (JSON with
    tuples, sets, dicts, bytes, big ints, non-finite floats). The check passes when the tests run
    to their end in the judge. Nothing of the program runs in the judge's interpreter, so the
    program can only pass by answering the calls correctly.
    """
    return _run(_setup(), code, limits or SandboxLimits(), tests)


_POOL_LOCK = threading.Lock()


def run_many(programs: list[str | tuple[str, str]], limits: SandboxLimits | None = None,
             workers: int = 4) -> list[SandboxResult]:
    """:func:`run_python` (a program) or :func:`run_tests` (a ``(program, tests)`` pair) over
    ``programs``, at most ``workers`` at a time, results in order."""
    if not programs:
        return []
    with _POOL_LOCK:  # the isolation probe runs once, before the threads start
        _setup()

    def one(item: str | tuple[str, str]) -> SandboxResult:
        return run_python(item, limits) if isinstance(item, str) else run_tests(*item, limits)

    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(programs)))) as pool:
        return list(pool.map(one, programs))
