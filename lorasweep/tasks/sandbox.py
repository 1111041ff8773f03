"""Run untrusted, model-generated Python programs: one short-lived process per program.

What each run gets (the layers, from strongest to weakest):

1. **Its own process** (``python -I -B``: isolated mode, no user site, no ``PYTHON*`` variables),
   in a fresh temporary directory as cwd, with an environment stripped to ``PATH``, ``HOME`` and
   ``TMPDIR`` (both the temporary directory) and ``LANG``. A crash, hang or allocation storm
   harms that process only.
2. **A wall-clock timeout** enforced from outside: the process leads its own session
   (``start_new_session``) and the whole process group is SIGKILLed on timeout, and after every
   run in any case, so nothing outlives a run. Should the launcher itself die, the program gets
   SIGKILL too (``PR_SET_PDEATHSIG``), and an inner ``alarm`` ends it a little after the timeout.
3. **Resource limits** (set by the program's prelude before the program runs; hard = soft, so the
   program cannot raise them, except CPU's hard limit one second above, so SIGXCPU comes first):
   CPU time (``RLIMIT_CPU``), address space (``RLIMIT_AS``), file size (``RLIMIT_FSIZE``; stderr
   too; stdout is discarded), open files, no core dumps, and no new processes or threads
   (``RLIMIT_NPROC = 0``, enforced only for non-root users).
4. **An unprivileged user**: when we run as root, the prelude drops to ``nobody`` (groups cleared)
   before the program runs, so file permissions protect everything it cannot write and
   ``RLIMIT_NPROC`` is really enforced. The interpreter must be usable by ``nobody``; if
   ``sys.executable`` is not (a pyenv under ``/root``), the system ``python3`` is used (the
   program then sees the standard library only). Which layers work is found once per process
   by running a probe program with each combination, strongest first (:func:`isolation`).
5. **No network**: where ``unshare -n`` works (root, or ``unshare -rn`` via a user namespace)
   the process runs in an empty network namespace (not even a loopback that is up).
6. **A prelude** (Python code run before the program) that disables ``os.fork`` and friends,
   ``subprocess``, ``multiprocessing``, ``ctypes``, ``os.kill``, socket creation, and makes
   ``open`` / ``os.remove`` / ``shutil.rmtree`` / ... refuse paths outside the temporary directory.
   This is defence in depth, **not a security boundary**: Python code can undo it (re-importing a
   builtin module, ``_io.FileIO``, the guards' closures). It turns the common accidents of
   generated code into a clean failure of that one sample.

What it does not guarantee: it is not a container. Files readable by ``nobody`` (or, when not
root, by the current user) can be read by a program that bypasses the prelude; without
``unshare`` the network is only blocked by the prelude; CPU and memory are limited per process,
not per machine; a launcher killed by SIGKILL leaves the program's temporary directory behind.
For adversarial code use a real boundary (a VM, gVisor, nsjail).

A program passes when it runs to its end without an exception: the runner then writes a random
token (unknown to the program, read from stdin) to a private file; ``sys.exit(0)`` or
``os._exit(0)`` in the program is therefore not a pass. (A program that inspects the runner's
frames could find the token: this guards the metric against accidents, not against intent.)
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

__all__ = ["SandboxLimits", "SandboxResult", "isolation", "run_many", "run_python"]

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


# The runner: trusted code that the sandboxed interpreter runs first (``python -I -B -c``).
# argv[1] is its JSON configuration; the pass token arrives on stdin, so it is in no argv or
# environment the program could read.
_RUNNER = r'''
import builtins, io, json, os, resource, shutil, signal, sys
cfg = json.loads(sys.argv[1])
token = sys.stdin.readline().strip()
null = os.open(os.devnull, os.O_RDONLY); os.dup2(null, 0); os.close(null)
status_fd = cfg["status_fd"]

def report(status):
    try:
        os.write(status_fd, (token + " " + status.replace("\n", " ")[:300] + "\n").encode())
    finally:
        os._exit(0)

if cfg["drop"]:
    uid, gid = cfg["drop"]
    os.setgroups([]); os.setgid(gid); os.setuid(uid)
try:
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS: no setuid binary, should an exec slip by
    libc.prctl(1, 9, 0, 0, 0)  # PR_SET_PDEATHSIG = SIGKILL: die with the launching thread
except Exception:
    pass
if os.getppid() != cfg["parent"]:  # the launcher died before the line above
    os._exit(1)
signal.alarm(cfg["alarm"])  # a second wall clock, from inside: a sleeper cannot outlive it
for name, value in cfg["limits"].items():  # hard = soft: no way back up
    resource.setrlimit(getattr(resource, name), (value, value + (name == "RLIMIT_CPU")))
os.chdir(cfg["dir"])
with open("main.py", encoding="utf-8") as handle:
    source = handle.read()

ROOT = os.path.realpath(cfg["dir"])

def blocked(name):
    def refuse(*args, **kwargs):
        raise PermissionError("sandbox: " + name + " is disabled")
    return refuse

def inside(path):
    if isinstance(path, int):
        return True
    real = os.path.realpath(os.fsdecode(os.fspath(path)))
    return real == ROOT or real.startswith(ROOT + os.sep)

def fd_inside(fd):
    try:
        return fd is None or inside(os.readlink("/proc/self/fd/%d" % fd))
    except (OSError, TypeError):
        return False

def confined(func, name, npaths):
    def guarded(*args, **kwargs):
        paths = list(args[:npaths]) + [v for k, v in kwargs.items()
                                       if k in ("file", "path", "src", "dst", "target")]
        if not all(fd_inside(kwargs.get(k)) for k in ("dir_fd", "src_dir_fd", "dst_dir_fd")) \
                or not all(inside(p) for p in paths):
            raise PermissionError("sandbox: " + name + " outside the sandbox directory")
        return func(*args, **kwargs)
    return guarded

import posix, socket, _socket, subprocess, _posixsubprocess
for mod in (os, posix):
    for name in ("fork", "forkpty", "vfork", "system", "popen", "kill", "killpg", "setsid",
                 "posix_spawn", "posix_spawnp", "execv", "execve", "execl", "execle", "execlp",
                 "execlpe", "execvp", "execvpe", "spawnl", "spawnle", "spawnlp", "spawnlpe",
                 "spawnv", "spawnve", "spawnvp", "spawnvpe"):
        if hasattr(mod, name):
            setattr(mod, name, blocked("os." + name))
_posixsubprocess.fork_exec = blocked("fork_exec")
for name in ("Popen", "run", "call", "check_call", "check_output", "getoutput",
             "getstatusoutput"):
    setattr(subprocess, name, blocked("subprocess." + name))
for mod in (socket, _socket):
    for name in ("socket", "socketpair", "fromfd", "create_connection", "create_server"):
        if hasattr(mod, name):
            setattr(mod, name, blocked("socket." + name))
for name in ("ctypes", "_ctypes", "multiprocessing", "_multiprocessing", "_posixsubprocess",
             "concurrent.futures.process", "pty"):
    sys.modules[name] = None
builtins.open = io.open = confined(builtins.open, "open", 1)
for name, npaths in (("open", 1), ("remove", 1), ("unlink", 1), ("rmdir", 1), ("removedirs", 1),
                     ("rename", 2), ("renames", 2), ("replace", 2), ("truncate", 1), ("chmod", 1),
                     ("chown", 1), ("lchown", 1), ("link", 2), ("symlink", 2), ("mkdir", 1),
                     ("makedirs", 1), ("utime", 1), ("listdir", 1), ("scandir", 1), ("chdir", 1),
                     ("mkfifo", 1), ("mknod", 1)):
    setattr(os, name, confined(getattr(os, name), "os." + name, npaths))
for name, npaths in (("rmtree", 1), ("move", 2), ("copy", 2), ("copy2", 2), ("copyfile", 2),
                     ("copytree", 2)):
    setattr(shutil, name, confined(getattr(shutil, name), "shutil." + name, npaths))

try:
    exec(compile(source, "main.py", "exec"), {"__name__": "__main__"})
except AssertionError:
    report("failed")
except BaseException as err:
    report("error: " + type(err).__name__ + (": " + str(err) if str(err) else ""))
report("passed")
'''


@dataclasses.dataclass(frozen=True)
class _Setup:
    interpreter: str
    wrapper: tuple[str, ...]  # e.g. ("unshare", "-n", "--")
    drop: tuple[int, int] | None  # (uid, gid) to become, when running as root


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
    flags = ("-n",) if os.geteuid() == 0 else ("-r", "-n")
    return [(unshare, *flags, "--"), ()]


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


def _run(setup: _Setup, code: str, limits: SandboxLimits) -> SandboxResult:
    start = time.monotonic()
    workdir = tempfile.mkdtemp(prefix="lorasweep-sandbox-", dir=_temp_base(setup.drop))
    try:
        Path(workdir, "main.py").write_text(code, encoding="utf-8")
        if setup.drop:
            os.chown(workdir, *setup.drop)
        token = secrets.token_hex(16)
        rlimits = {"RLIMIT_CPU": limits.cpu(), "RLIMIT_AS": limits.memory_bytes,
                   "RLIMIT_FSIZE": limits.file_bytes, "RLIMIT_NOFILE": limits.open_files,
                   "RLIMIT_CORE": 0, "RLIMIT_NPROC": 0}
        env = {"PATH": _SYSTEM_PATH, "HOME": workdir, "TMPDIR": workdir, "LANG": "C.UTF-8"}
        with tempfile.TemporaryFile() as status, tempfile.TemporaryFile() as err:
            cfg = {"dir": workdir, "drop": setup.drop, "limits": rlimits,
                   "status_fd": status.fileno(), "parent": os.getpid(),
                   "alarm": math.ceil(limits.timeout) + 2}
            cmd = [*setup.wrapper, setup.interpreter, "-I", "-B", "-c", _RUNNER, json.dumps(cfg)]
            try:
                proc = subprocess.Popen(cmd, cwd=workdir, env=env, stdin=subprocess.PIPE,
                                        stdout=subprocess.DEVNULL, stderr=err,
                                        pass_fds=(status.fileno(),), start_new_session=True)
            except OSError as exc:
                return SandboxResult(False, f"error: cannot start the sandbox: {exc}",
                                     time.monotonic() - start)
            try:
                try:
                    proc.stdin.write((token + "\n").encode())
                    proc.stdin.close()
                except OSError:  # it died before reading: its exit status says why
                    pass
                proc.wait(timeout=limits.timeout)
            except subprocess.TimeoutExpired:
                _kill_group(proc.pid)
                proc.wait()
                return SandboxResult(False, "timeout", time.monotonic() - start)
            finally:
                _kill_group(proc.pid)  # anything it left behind in its group
            duration = time.monotonic() - start
            for line in reversed(_tail(status).splitlines()):
                if line.startswith(token + " "):
                    reason = line[len(token) + 1:]
                    return SandboxResult(reason == "passed", reason, duration)
            returncode = proc.returncode
            if returncode in (-signal.SIGXCPU, -signal.SIGALRM):  # CPU time, inner wall clock
                return SandboxResult(False, "timeout", duration)
            if returncode < 0:
                try:
                    why = f"killed by {signal.Signals(-returncode).name}"
                except ValueError:
                    why = f"killed by signal {-returncode}"
            else:
                last = _tail(err).strip().splitlines()
                why = f"exit status {returncode}" + (f" ({last[-1][:200]})" if last else "")
            return SandboxResult(False, f"error: {why}", duration)
    finally:
        _remove(workdir)


def run_python(code: str, limits: SandboxLimits | None = None) -> SandboxResult:
    """Run ``code`` (a whole program) in the sandbox; it passes if it ends without an exception."""
    return _run(_setup(), code, limits or SandboxLimits())


_POOL_LOCK = threading.Lock()


def run_many(programs: list[str], limits: SandboxLimits | None = None,
             workers: int = 4) -> list[SandboxResult]:
    """:func:`run_python` over ``programs``, at most ``workers`` processes at a time, in order."""
    if not programs:
        return []
    with _POOL_LOCK:  # the isolation probe runs once, before the threads start
        _setup()
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(programs)))) as pool:
        return list(pool.map(lambda p: run_python(p, limits), programs))
