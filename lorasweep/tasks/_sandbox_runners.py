"""The two programs a sandboxed check runs (``python -I -B -c``), kept apart from the launcher.

``SAMPLE`` runs the untrusted program: it isolates itself (private mounts, unprivileged user,
parent-death signal, rlimits, prelude), runs the program, tells the judge whether it loaded,
then serves calls of its top-level functions. ``JUDGE`` runs the trusted tests in another
process; a sample function is a proxy that sends the call's arguments and receives its result as
plain data (:data:`CODEC`), so nothing the sample defines ever runs in the judge's interpreter.
"""

from __future__ import annotations

__all__ = ["CODEC", "JUDGE", "SAMPLE"]

# Plain data both ways: JSON, with tagged objects for what JSON lacks. Decoding builds builtin
# values only (no classes, no pickles), so a sample can return wrong data but never behaviour.
CODEC = r'''
import json, math

def encode(x):
    t = type(x)
    if x is None or t is bool or t is str:
        return x
    if t is int:
        return x if abs(x) < 2 ** 53 else {"int": str(x)}
    if t is float:
        return x if math.isfinite(x) else {"float": repr(x)}
    if t is list:
        return [encode(v) for v in x]
    if t in (tuple, set, frozenset):
        return {t.__name__: [encode(v) for v in x]}
    if t is dict:
        return {"dict": [[encode(k), encode(v)] for k, v in x.items()]}
    if t is bytes:
        return {"bytes": x.hex()}
    if t is complex:
        return {"complex": [x.real, x.imag]}
    raise TypeError("a sample function returned a " + t.__name__ + ", not plain data")

_TAGS = {"tuple": tuple, "set": set, "frozenset": frozenset}

def decode(x):
    if isinstance(x, list):
        return [decode(v) for v in x]
    if not isinstance(x, dict):
        return x
    (tag, value), = x.items()
    if tag in _TAGS:
        return _TAGS[tag](decode(v) for v in value)
    if tag == "dict":
        return {decode(k): decode(v) for k, v in value}
    if tag == "int":
        return int(value)
    if tag == "float":
        return float(value)
    if tag == "bytes":
        return bytes.fromhex(value)
    if tag == "complex":
        return complex(*value)
    raise ValueError("unknown tag " + repr(tag))
'''

SAMPLE = r'''
import builtins, io, json, os, re, resource, shutil, signal, sys
cfg = json.loads(sys.argv[1])
calls = os.fdopen(cfg["calls"], "r", encoding="utf-8")
answers = os.fdopen(cfg["answers"], "w", encoding="utf-8")
null = os.open(os.devnull, os.O_RDONLY); os.dup2(null, 0); os.close(null)
exec(cfg["codec"])

def send(message):
    answers.write(json.dumps(message) + "\n"); answers.flush()

import ctypes
libc = ctypes.CDLL(None, use_errno=True)
if cfg["mounts"]:  # a private mount namespace: everything read-only but the sample's directory
    libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                           ctypes.c_void_p]
    def mount(target, flags, source=None):
        if libc.mount(source, target.encode(), None, flags, None) != 0:
            raise OSError(ctypes.get_errno(), "sandbox: cannot mount " + target)
    mount("/", 1 << 14 | 1 << 18)  # MS_REC | MS_PRIVATE: nothing propagates out
    mount(cfg["dir"], 4096, cfg["dir"].encode())  # MS_BIND: its own mount, stays writable
    with open("/proc/self/mountinfo") as handle:
        points = [re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), line.split()[4])
                  for line in handle]
    for point in points:
        if point == cfg["dir"] or point.startswith(("/proc/", "/sys/")) or not os.path.isdir(point):
            continue
        flags = os.statvfs(point).f_flag  # keep nosuid, nodev, noexec, noatime, relatime
        kept = flags & (2 | 4 | 8 | 1024 | 2048) | (1 << 21 if flags & 4096 else 0)
        mount(point, 32 | 4096 | 1 | kept)  # MS_REMOUNT | MS_BIND | MS_RDONLY
if cfg["drop"]:
    uid, gid = cfg["drop"]
    os.setgroups([]); os.setgid(gid); os.setuid(uid)
libc.prctl(38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS: no setuid binary, should an exec slip by
libc.prctl(1, 9, 0, 0, 0)  # PR_SET_PDEATHSIG = SIGKILL: die with the launching thread
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
del ctypes, libc
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

def failure(err):
    if isinstance(err, AssertionError):
        return "failed"
    return "error: " + type(err).__name__ + (": " + str(err)[:300] if str(err) else "")

namespace = {"__name__": "__main__"}
try:
    exec(compile(source, "main.py", "exec"), namespace)
except BaseException as err:
    send({"loaded": failure(err)}); os._exit(1)
send({"loaded": "ok"})
for line in calls:
    try:
        request = json.loads(line)
        result = {"ok": encode(namespace[request["name"]](*decode(request["args"])))}
    except BaseException as err:
        result = {"error": failure(err)}
    send(result)
os._exit(0)
'''

JUDGE = r'''
import json, os, sys
cfg = json.loads(sys.argv[1])
token = sys.stdin.readline().strip()
null = os.open(os.devnull, os.O_RDONLY); os.dup2(null, 0); os.close(null)
verdicts = os.fdopen(cfg["verdict"], "w")
calls = os.fdopen(cfg["calls"], "w", encoding="utf-8")
answers = os.fdopen(cfg["answers"], "r", encoding="utf-8")
exec(cfg["codec"])

def verdict(text):
    verdicts.write(token + " " + text.replace("\n", " ")[:300] + "\n"); verdicts.flush()
    os._exit(0)

class SampleError(Exception):
    """The sample's function raised, returned something that is not plain data, or died."""

def receive():
    line = answers.readline(1 << 24)
    if not line.endswith("\n"):
        raise SampleError("the sample stopped answering")
    return json.loads(line)

class SampleFunction:
    def __init__(self, name):
        self.name = name
    def __call__(self, *args):
        calls.write(json.dumps({"name": self.name, "args": encode(list(args))}) + "\n")
        calls.flush()
        answer = receive()
        if set(answer) == {"ok"}:
            return decode(answer["ok"])
        raise SampleError(str(answer.get("error"))[:300])

try:
    loaded = receive().get("loaded")
except Exception as err:
    verdict("error: " + str(err))
if loaded != "ok":
    verdict(str(loaded) if str(loaded).startswith(("failed", "error")) else "error: bad sample")
with open(cfg["tests"], encoding="utf-8") as handle:
    tests = handle.read()
try:
    exec(compile(tests, "tests.py", "exec"), {"__name__": "__main__", "sample": SampleFunction})
except AssertionError:
    verdict("failed")
except BaseException as err:
    verdict("error: " + type(err).__name__ + (": " + str(err) if str(err) else ""))
verdict("passed")
'''
