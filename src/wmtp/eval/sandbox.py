"""Run untrusted Python programs in a bubblewrap sandbox.

Each call gets a fresh sandbox: new user, pid, network, ipc, uts and mount namespaces; read-only /usr (and
the /bin, /lib... symlinks into it); a private 64 MiB tmpfs /tmp as working directory, the only writable
place with /dev/shm; no /etc, /home, /root or /work; no capabilities; uid 65534 inside, and an
unprivileged uid on the host too (nobody if we are root, else our own); a cleared environment.
rlimits (CPU, address space, processes, file size, 256 open files, no core) are applied by ``prlimit``
as pid 1 of the sandbox, so the launcher it execs is under them too and nothing inside runs without them.
No nested user namespaces (``--disable-userns``: bubblewrap >= 0.8.0, else SandboxUnavailable) and a
seccomp filter (:mod:`wmtp.eval.seccomp`: no ptrace, new namespaces, mounts, memfd, SysV IPC, bpf, perf,
keyrings...). A wall-clock timeout kills the whole sandbox and output is capped.

Memory: RLIMIT_AS bounds each process's mappings (so 32 processes x ``memory_mb`` in all). What it does not
count, file pages in RAM, is bounded by the size caps of the only writable places (64 MiB /tmp, 16 MiB
/dev/shm, unlinked and O_TMPFILE files included): memfd_create and SysV shm/msg/sem are denied, because
their only bound would be RLIMIT_FSIZE per memfd x RLIMIT_NOFILE x RLIMIT_NPROC (128 GiB). No cgroup memory
limit: the host this was built on delegates no cgroup v2 memory controller. Kernel buffers are bounded only
per fd by the kernel's defaults, times the fd and process limits: measured, 28 MiB queued in the 126 unix
socketpairs one process can open, so about 0.9 GiB for 32 processes (pipes: the per-user soft limit).

Process tree of one call (host view)::

    bwrap (monitor: our child, session leader)
      └─ prlimit → exec sh launcher: pid 1 of the sandbox's pid namespace (``--as-pid-1``)
           └─ python main.py → whatever the program spawns

The launcher is an execute-only copy of sh, which makes pid 1 non-dumpable: the program (same uid, no
capabilities) cannot reach its memory or fds through /proc/1/, and ptrace is denied by the filter.

When the launcher exits (after the program) or is killed (at the timeout), the kernel kills every other
process of the namespace before the launcher can be reaped, and the monitor exits only after reaping it.
So once the monitor has exited nothing the call started is left, not even a zombie for the host's pid 1:
bwrap's own init would tell the monitor that the program exited and let it quit first, orphaning itself.
The launcher, not the program, is pid 1, so the program keeps ordinary signal semantics (a pid 1 ignores
signals it sends itself) and cannot kill its parent from inside.

Public: :func:`run_python`, :func:`run_many`, :func:`check_program`, :class:`ExecResult`,
:class:`SandboxUnavailable`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import selectors
import shutil
import signal
import subprocess
import tempfile
import time
import warnings
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import wmtp.eval.bwrap_argv as bwrap_argv

PYTHON = "/usr/bin/python3"
"""Default interpreter; it must live under /usr, the only host directory the sandbox sees."""

MAX_OUTPUT_BYTES = 1 << 20
"""Bytes kept of each of stdout and stderr; the rest is read and dropped so the program never blocks."""

_READ_CHUNK = 1 << 16
_GRACE_S = 10.0  # bounds steps that take milliseconds (bwrap's setup, dying processes) on a wedged system
# Written by the trusted launcher before it starts the program: a sandbox that exits without writing it
# failed during bwrap's setup, which is an environment problem, not a failing program.
_STARTED = b"\x00"

_INSTALL_HINT = (
    "bubblewrap (bwrap) is not on PATH, so untrusted code cannot be isolated. "
    "Install it with `apt-get install bubblewrap`, or pass unsafe=True to run without isolation."
)
_VERSION_HINT = (
    "The sandbox needs bubblewrap >= 0.8.0 (for --disable-userns, which keeps the program from creating "
    "user namespaces of its own); upgrade bubblewrap, or pass unsafe=True to run without isolation."
)
_USERNS_HINT = (
    "The sandbox needs unprivileged user namespaces (sysctl user.max_user_namespaces > 0; on Ubuntu >= 23.10 "
    "also kernel.apparmor_restrict_unprivileged_userns=0; containers must allow unshare/clone of namespaces)."
)


class SandboxUnavailable(RuntimeError):
    """The sandbox cannot run here: bwrap is missing or failed to set up the namespaces."""


@dataclass(frozen=True)
class ExecResult:
    """Outcome of one program run.

    Attributes:
        returncode: exit status; a program killed by signal N reports 128 + N (as a shell would), so a
            timeout reports 137.
        stdout: captured standard output (at most ``max_output_bytes``), decoded as UTF-8 with replacement.
        stderr: captured standard error, same cap and decoding.
        timed_out: the program was still running when the wall-clock timeout expired and was killed.
        duration_s: wall-clock seconds from launch to the moment nothing of the run remains.
        truncated: stdout or stderr exceeded the cap and was cut.
    """

    returncode: int
    stdout: str
    stderr: str
    timed_out: bool
    duration_s: float
    truncated: bool

    @property
    def ok(self) -> bool:
        """The program exited with status 0 within the timeout."""
        return self.returncode == 0 and not self.timed_out


def run_python(
    code: str,
    *,
    stdin: str = "",
    timeout_s: float = 10.0,
    memory_mb: int = 1024,
    python: str = PYTHON,
    unsafe: bool = False,
    max_output_bytes: int = MAX_OUTPUT_BYTES,
) -> ExecResult:
    """Run ``code`` as the main script of a fresh sandboxed Python process.

    Args:
        code: program source, written to ``/tmp/main.py`` inside the sandbox and run with cwd ``/tmp``.
        stdin: text fed to the program's standard input (then EOF).
        timeout_s: wall-clock limit; RLIMIT_CPU is set just above it as a backstop.
        memory_mb: RLIMIT_AS of every process in the sandbox.
        python: interpreter path; in the sandbox it must resolve to a file under /usr.
        unsafe: run WITHOUT the sandbox (rlimits, timeout, process-group kill and output cap only); the
            only way to run where bwrap is missing. Warns.
        max_output_bytes: bytes kept of each of stdout and stderr.

    Raises:
        SandboxUnavailable: bwrap is not installed (and ``unsafe`` is False) or cannot create the sandbox.
        ValueError: a limit is not positive, or ``python`` would not be visible inside the sandbox.
    """
    if timeout_s <= 0 or memory_mb <= 0 or max_output_bytes < 0:
        raise ValueError(
            f"timeout_s={timeout_s!r} and memory_mb={memory_mb!r} must be > 0, "
            f"max_output_bytes={max_output_bytes!r} must be >= 0"
        )
    bwrap = None if unsafe else _find_bwrap(python)
    limits = bwrap_argv.prlimit_argv(timeout_s=timeout_s, memory_mb=memory_mb)

    started = time.monotonic()
    deadline = started + timeout_s
    with contextlib.ExitStack() as stack:
        stdin_fd = stack.enter_context(_sealed_memfd("stdin", stdin.encode()))
        if bwrap is None:  # unsafe=True
            warnings.warn(
                "unsafe=True: running untrusted code WITHOUT a sandbox; it can read and write your files and "
                "reach the network, and as root RLIMIT_NPROC does not apply",
                RuntimeWarning,
                stacklevel=2,
            )
            tree = _start_unsafe(stack, code=code, command=[*limits, python], stdin_fd=stdin_fd)
        else:
            tree = _start_sandboxed(stack, bwrap, code=code, limits=limits, python=python, stdin_fd=stdin_fd)
        stdout, stderr, timed_out = _collect(tree, deadline=deadline, max_output_bytes=max_output_bytes,
                                             marker=b"" if bwrap is None else _STARTED)
    returncode = tree.proc.returncode
    return ExecResult(
        returncode=128 - returncode if returncode < 0 else returncode,
        stdout=stdout.text(),
        stderr=stderr.text(),
        timed_out=timed_out,
        duration_s=time.monotonic() - started,
        truncated=stdout.truncated or stderr.truncated,
    )


def run_many(
    jobs: Iterable[str | tuple[str, str] | Mapping[str, Any]], *, workers: int | None = None, **kwargs: Any
) -> list[ExecResult]:
    """Run many programs on a bounded thread pool; results come back in the order of ``jobs``.

    A job is the code, a ``(code, stdin)`` pair, or a mapping of :func:`run_python` keyword arguments
    (e.g. ``{"code": src, "stdin": "3 4\\n", "timeout_s": 2}``); its arguments override the shared ``kwargs``.
    Threads suffice: each run spends its time waiting on its own processes. ``workers`` defaults to
    ``os.cpu_count()``.
    """
    calls = [{**kwargs, **_job_arguments(job)} for job in jobs]
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        return list(pool.map(lambda call: run_python(**call), calls))


def _job_arguments(job: str | tuple[str, str] | Mapping[str, Any]) -> dict[str, Any]:
    """The :func:`run_python` keyword arguments one job of :func:`run_many` stands for."""
    if isinstance(job, str):
        return {"code": job}
    if isinstance(job, tuple):
        code, stdin = job
        return {"code": code, "stdin": stdin}
    return dict(job)


def check_program(program: str, *, timeout_s: float = 10.0, **kwargs: Any) -> bool:
    """Whether ``program`` (e.g. prompt + completion + tests + ``check(entry_point)``) exits 0 in time."""
    return run_python(program, timeout_s=timeout_s, **kwargs).ok


# --- launching ---------------------------------------------------------------------------------------------


@dataclass
class _Tree:
    """The processes of one run: ``proc`` (our child) and, when sandboxed, the sandbox's pid 1 ``init``."""

    proc: subprocess.Popen[bytes]
    proc_pidfd: int
    init_pidfd: int | None = None
    reaped: bool = False

    def kill(self) -> None:
        """SIGKILL everything of the run that may still exist; never reaps, so it may be repeated."""
        if self.init_pidfd is not None:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(self.init_pidfd, signal.SIGKILL)
        # proc is unreaped until reap(), so its pid and process group id cannot have been recycled yet.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)

    def reap(self) -> None:
        """Kill what remains, reap our child and close the pidfds; runs once, later calls do nothing."""
        if self.reaped:
            return
        self.reaped = True
        if self.init_pidfd is not None:
            with contextlib.suppress(ProcessLookupError):  # already exited and reaped
                signal.pidfd_send_signal(self.init_pidfd, signal.SIGKILL)
            # The monitor reaps init, after the kernel has emptied the namespace, then exits by itself;
            # killing it first would orphan init to the host's pid 1.
            _wait_readable(self.proc_pidfd, _GRACE_S)
        self.kill()
        self.proc.wait(_GRACE_S)
        for pidfd in (self.proc_pidfd, self.init_pidfd):
            if pidfd is not None:
                os.close(pidfd)


def _spawn(stack: contextlib.ExitStack, argv: list[str], **kwargs: Any) -> _Tree:
    """Start ``argv`` as a session leader (so its process group can be killed), output on pipes.

    ``stack`` reaps the tree on exit, whatever happens in between.
    """
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                            **kwargs)
    stack.enter_context(proc)  # closes the pipes, after the reap registered below
    tree = _Tree(proc, os.pidfd_open(proc.pid))
    stack.callback(tree.reap)
    return tree


def _start_sandboxed(
    stack: contextlib.ExitStack, bwrap: str, *, code: str, limits: list[str], python: str, stdin_fd: int
) -> _Tree:
    """Launch ``limits sh python main.py`` in bwrap and return once the sandbox's init is known."""
    code_fd = stack.enter_context(_sealed_memfd(bwrap_argv.SCRIPT, code.encode()))
    seccomp_fd = stack.enter_context(_sealed_memfd("seccomp", bwrap_argv.seccomp_program()))
    launcher_fd = stack.enter_context(_sealed_memfd("sh", bwrap_argv.launcher_binary()))
    info_r, info_w = os.pipe()
    stack.callback(os.close, info_r)
    argv = [
        *bwrap_argv.bwrap_argv(bwrap, code_fd=code_fd, info_fd=info_w, seccomp_fd=seccomp_fd,
                               launcher_fd=launcher_fd),
        # Trusted launcher: proves that setup succeeded (see _STARTED), runs the program as its child and
        # exits with its status (128 + N if killed by signal N; sh then notes e.g. "Segmentation fault" on
        # stderr, as a terminal would). The trailing `exit` stops any sh from exec-ing the program in its
        # place: the program must not become pid 1 (see the module docstring). prlimit execs the launcher,
        # so pid 1 itself is under the program's rlimits: nothing in the sandbox runs without them. The
        # launcher is an execute-only copy of sh, which makes pid 1 non-dumpable: the program, same uid but
        # no capabilities, cannot open /proc/1/mem (ptrace itself is denied by the seccomp filter).
        *limits, bwrap_argv.LAUNCHER, "-c", 'printf "\\000" && "$@"; exit $?', "sh", python,
        f"{bwrap_argv.WORKDIR}/{bwrap_argv.SCRIPT}",
    ]
    try:
        tree = _spawn(stack, argv, stdin=stdin_fd, pass_fds=(code_fd, seccomp_fd, launcher_fd, info_w),
                      env=bwrap_argv.environment(bwrap_argv.WORKDIR),
                      cwd="/", **bwrap_argv.drop_root())
    finally:
        os.close(info_w)
    # Its own bound, not the program's deadline: init must be known to kill the sandbox cleanly.
    info = _read_all(info_r, time.monotonic() + _GRACE_S)
    if not info:  # bwrap died (or hung) before creating the namespaces
        tree.reap()
        said = _stderr_of(tree.proc)
        hint = _VERSION_HINT if "Unknown option" in said else _USERNS_HINT
        message = f"bwrap failed to create the sandbox: {said}. {hint}"
        raise SandboxUnavailable(message)
    tree.init_pidfd = _pin_child(json.loads(info)["child-pid"], parent=tree.proc.pid)
    return tree


def _start_unsafe(stack: contextlib.ExitStack, *, code: str, command: list[str], stdin_fd: int) -> _Tree:
    """Launch ``command main.py`` directly in a host temporary directory: limits but no isolation."""
    workdir = stack.enter_context(tempfile.TemporaryDirectory(prefix="wmtp-", ignore_cleanup_errors=True))
    script = os.path.join(workdir, bwrap_argv.SCRIPT)
    with open(script, "w", encoding="utf-8") as f:
        f.write(code)
    return _spawn(stack, [*command, script], stdin=stdin_fd, env=bwrap_argv.environment(workdir), cwd=workdir)


def _find_bwrap(python: str) -> str:
    """bwrap's path, after checking that the sandbox can run at all and will see ``python``."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        raise SandboxUnavailable(_INSTALL_HINT)
    if not os.path.realpath(python).startswith("/usr/"):
        raise ValueError(f"python={python!r} is not under /usr, the only host directory the sandbox sees")
    try:
        bwrap_argv.seccomp_program()
    except ValueError as e:  # an architecture without a filter: refuse rather than run unfiltered
        raise SandboxUnavailable(str(e)) from None
    return bwrap


def _pin_child(pid: int, *, parent: int) -> int | None:
    """A pidfd for ``pid`` if it is still ``parent``'s child, else None (it has exited already).

    The check runs after pidfd_open, so the pidfd cannot name a stranger that recycled the pid: only
    ``parent``, which forks nothing else, can have a child with that pid.
    """
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return None
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            ppid = int(f.read().rsplit(")", 1)[1].split()[1])  # the field after "(comm) state"
    except (FileNotFoundError, ProcessLookupError):  # exited (and reaped) between pidfd_open and the read
        ppid = None
    if ppid != parent:
        os.close(pidfd)
        return None
    return pidfd


# --- supervising -------------------------------------------------------------------------------------------


class _Capture:
    """Bytes of one output stream: the first ``limit`` are kept, the rest dropped (and flagged)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.data = bytearray()
        self.truncated = False

    def add(self, chunk: bytes) -> None:
        room = self.limit - len(self.data)
        self.data += chunk[:room]
        self.truncated |= len(chunk) > room

    def text(self) -> str:
        return self.data.decode("utf-8", errors="replace")


def _collect(
    tree: _Tree, *, deadline: float, max_output_bytes: int, marker: bytes
) -> tuple[_Capture, _Capture, bool]:
    """Read stdout and stderr until both close and the main process has exited, or until the deadline.

    Returns (stdout, stderr, timed_out) with ``marker`` (the launcher's start byte) stripped from stdout.
    Raises SandboxUnavailable if stdout closed without the marker: the program never started.
    """
    proc = tree.proc
    assert proc.stdout is not None and proc.stderr is not None
    out, err = _Capture(max_output_bytes + len(marker)), _Capture(max_output_bytes)
    streams = {proc.stdout.fileno(): out, proc.stderr.fileno(): err}
    exited = False
    with selectors.DefaultSelector() as sel:
        for fd in streams:
            sel.register(fd, selectors.EVENT_READ)
        sel.register(tree.proc_pidfd, selectors.EVENT_READ)
        while sel.get_map() and (remaining := deadline - time.monotonic()) > 0:
            for key, _ in sel.select(remaining):
                if key.fd == tree.proc_pidfd:
                    # The program is done. Sandboxed, the kernel has already killed what it left running;
                    # unsafe, its process group goes now, so it neither outlives the call nor holds the pipes.
                    exited = True
                    tree.kill()
                    sel.unregister(key.fd)
                elif chunk := os.read(key.fd, _READ_CHUNK):
                    streams[key.fd].add(chunk)
                else:
                    sel.unregister(key.fd)
        stdout_closed = proc.stdout.fileno() not in sel.get_map()
    if out.data.startswith(marker):
        del out.data[: len(marker)]
    elif stdout_closed:
        raise SandboxUnavailable(f"bwrap failed to set up the sandbox: {err.text().strip()}")
    return out, err, not exited


# --- small helpers -----------------------------------------------------------------------------------------


@contextlib.contextmanager
def _sealed_memfd(name: str, data: bytes) -> Iterator[int]:
    """An anonymous read-only file holding ``data``, positioned at its start; never touches the host disk."""
    fd = os.memfd_create(name, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        with open(fd, "wb", closefd=False) as f:
            f.write(data)
        os.lseek(fd, 0, os.SEEK_SET)
        # Sealed: the program reading its stdin cannot write through it and grow host memory.
        seals = fcntl.F_SEAL_WRITE | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_SEAL
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, seals)
        yield fd
    finally:
        os.close(fd)


def _read_all(fd: int, deadline: float) -> bytes:
    """Read ``fd`` to EOF, giving up (with what was read) at the deadline."""
    data = bytearray()
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while (remaining := deadline - time.monotonic()) > 0 and sel.select(remaining):
            if not (chunk := os.read(fd, _READ_CHUNK)):
                break
            data += chunk
    return bytes(data)


def _wait_readable(fd: int, timeout_s: float) -> None:
    """Block until ``fd`` is readable (for a pidfd: the process has exited) or ``timeout_s`` passes."""
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        sel.select(timeout_s)


def _stderr_of(proc: subprocess.Popen[bytes]) -> str:
    """What an exited bwrap said on stderr (its setup errors are short)."""
    assert proc.stderr is not None
    return proc.stderr.read(MAX_OUTPUT_BYTES).decode("utf-8", errors="replace").strip()
