"""The command lines of one sandbox (wmtp.eval.sandbox): bwrap's options, the prlimit prefix, the user it starts as
and the environment the program sees. Limits and paths are constants here, in one place.
"""

from __future__ import annotations

import functools
import math
import os
from typing import Any

from wmtp.eval.seccomp import filter_program

PRLIMIT = "/usr/bin/prlimit"  # util-linux, Essential on Debian; a fixed path so PATH games cannot swap it
SH = "/usr/bin/sh"
LAUNCHER = "/dev/.launcher"  # an execute-only copy of SH (on bwrap's /dev tmpfs, read-only once set up)
WORKDIR = "/tmp"  # the sandbox's private tmpfs, also its cwd and HOME
SCRIPT = "main.py"
NOBODY = 65534
MAX_PROCS = 32  # RLIMIT_NPROC: counted per (user namespace, uid), so per sandbox (see drop_root)
MAX_FILE_BYTES = 16 << 20  # RLIMIT_FSIZE
MAX_OPEN_FILES = 256  # RLIMIT_NOFILE (the host's may be 20000 or more)
# tmpfs lives in host RAM outside RLIMIT_AS, so every writable one is size-capped and the rest is read-only.
TMP_BYTES = 64 << 20
SHM_BYTES = 16 << 20  # /dev/shm, for multiprocessing's semaphores


@functools.cache
def seccomp_program() -> bytes:
    """The compiled seccomp filter (wmtp.eval.seccomp) of this machine's architecture; ValueError without one."""
    return filter_program()


@functools.cache
def launcher_binary() -> bytes:
    """The bytes of sh, installed execute-only as the sandbox's launcher (pid 1)."""
    with open(SH, "rb") as f:
        return f.read()


def bwrap_argv(bwrap: str, *, code_fd: int, info_fd: int, seccomp_fd: int, launcher_fd: int) -> list[str]:
    """The bwrap options: fresh namespaces, read-only /usr, /, /dev; capped tmpfs /tmp holding the script;
    no further user namespaces; the seccomp filter read from ``seccomp_fd``; the launcher, execute-only."""
    return [
        bwrap,
        "--unshare-all", "--unshare-user", "--disable-userns", "--seccomp", str(seccomp_fd),
        "--die-with-parent", "--new-session", "--cap-drop", "ALL", "--as-pid-1",
        "--uid", str(NOBODY), "--gid", str(NOBODY), "--hostname", "sandbox",
        "--ro-bind", "/usr", "/usr",
        "--symlink", "usr/bin", "/bin", "--symlink", "usr/sbin", "/sbin",
        "--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64",
        "--proc", "/proc", "--dev", "/dev", "--perms", "0111", "--file", str(launcher_fd), LAUNCHER,
        "--size", str(SHM_BYTES), "--tmpfs", "/dev/shm",
        "--size", str(TMP_BYTES), "--tmpfs", WORKDIR, "--chdir", WORKDIR,
        "--file", str(code_fd), f"{WORKDIR}/{SCRIPT}",
        "--remount-ro", "/dev", "--remount-ro", "/",  # bwrap's own tmpfs, which have no size cap
        "--info-fd", str(info_fd),
        "--",
    ]


def prlimit_argv(*, timeout_s: float, memory_mb: int) -> list[str]:
    """prlimit prefix applying the rlimits to the program (and, inherited, to all it spawns)."""
    cpu_s = math.ceil(timeout_s) + 1  # a backstop for the wall timeout, which should normally fire first
    return [
        PRLIMIT,
        f"--cpu={cpu_s}:{cpu_s + 1}",
        f"--as={memory_mb << 20}",
        f"--nproc={MAX_PROCS}",
        f"--fsize={MAX_FILE_BYTES}",
        f"--nofile={MAX_OPEN_FILES}",
        "--core=0",
        "--",
    ]


def drop_root() -> dict[str, Any]:
    """Popen arguments that start bwrap as nobody when we are root.

    bwrap maps the sandbox uid to the uid that started it. Started by root, sandboxed processes are host
    root, for which the kernel skips RLIMIT_NPROC (a fork bomb is not contained). Started by nobody they are
    host nobody, and the limit counts the processes of each sandbox's own user namespace.
    """
    if os.geteuid() != 0:
        return {}
    return {"user": NOBODY, "group": NOBODY, "extra_groups": []}


def environment(home: str) -> dict[str, str]:
    """The only variables the program sees: nothing of the host's environment leaks in."""
    return {"PATH": "/usr/bin:/bin", "HOME": home, "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1"}
