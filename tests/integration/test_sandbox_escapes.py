"""Ways out of the sandbox's *limits*, against real bubblewrap: each hostile probe in its own sandboxed run.

The three escapes measured in issue 16, each contained now:
    1. PTRACE_ATTACH to the sandbox's pid 1, which ran without rlimits, and an execve injected there;
    2. memfd pages, which RLIMIT_AS does not count (12 x 16 MiB written under memory_mb=128);
    3. a nested user namespace (``unshare -rm``) mounting a tmpfs of the host's size.
Then the seccomp filter itself (every denied syscall, the foreign-ABI kill, the syscall numbers against the
kernel headers) and ordinary programs that must still work under it.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import struct
import subprocess
import uuid
from pathlib import Path

import pytest
from test_sandbox import marker, processes_with, with_marker  # noqa: F401 (marker is a fixture)

from wmtp.eval import seccomp
from wmtp.eval.bwrap_argv import bwrap_argv, drop_root
from wmtp.eval.sandbox import SandboxUnavailable, run_python

SYSCALL = (
    "import ctypes, errno\n"
    "libc = ctypes.CDLL(None, use_errno=True)\n"
    "def syscall(nr, *args):\n"
    "    ctypes.set_errno(0)\n"
    "    r = libc.syscall(nr, *[ctypes.c_long(a) for a in args])\n"
    "    return 'ok' if r >= 0 else errno.errorcode[ctypes.get_errno()]\n"
)
"""Prelude defining ``syscall(nr, *args)``: 'ok' or the errno's name (the sandbox's python has no os.unshare)."""


def nr(name: str) -> int:
    return seccomp.syscall_number(name)


# --- 1. pid 1 is no way out of the rlimits -----------------------------------------------------------------


def test_pid_1_runs_under_the_programs_rlimits() -> None:
    result = run_python("print(open('/proc/1/limits').read())", memory_mb=128)
    limits = {m.group(1).strip(): m.group(2) for m in re.finditer(r"^(Max [a-z ]+?)\s{2,}(\S+)", result.stdout,
                                                                 re.MULTILINE)}
    assert result.ok, result.stderr
    assert limits["Max address space"] == str(128 << 20)
    assert limits["Max open files"] == "256"
    assert limits["Max processes"] == "32"
    assert limits["Max file size"] == str(16 << 20)
    assert limits["Max cpu time"] != "unlimited"


def test_ptrace_of_pid_1_is_denied(marker: str) -> None:
    # Before: PTRACE_ATTACH to pid 1 returned 0, then an injected execve allocated 300 MiB under 128 MiB.
    program = with_marker(
        SYSCALL
        + "buf = ctypes.create_string_buffer(8)\n"
        "local = (ctypes.c_void_p * 2)(ctypes.addressof(buf), 8)\n"
        "remote = (ctypes.c_void_p * 2)(0x400000, 8)\n"
        f"print('attach', syscall({nr('ptrace')}, 16, 1, 0, 0))\n"  # PTRACE_ATTACH
        f"print('seize', syscall({nr('ptrace')}, 0x4206, 1, 0, 0))\n"  # PTRACE_SEIZE
        f"print('vm_readv', syscall({nr('process_vm_readv')}, 1, ctypes.addressof(local), 1,"
        " ctypes.addressof(remote), 1, 0))\n"
        # ptrace's access check without the syscall: pid 1 (same uid) is non-dumpable, so these are closed
        "for path, mode in [('/proc/1/mem', 'r+b'), ('/proc/1/maps', 'rb'), ('/proc/1/fd/0', 'rb')]:\n"
        "    try:\n"
        "        open(path, mode, buffering=0)\n"
        "        print(path, 'ok')\n"
        "    except OSError as e:\n"
        "        print(path, errno.errorcode[e.errno])\n",
        marker,
    )
    result = run_python(program, memory_mb=128)
    assert result.ok, result.stderr
    assert result.stdout.splitlines() == [
        "attach EPERM", "seize EPERM", "vm_readv EPERM",
        "/proc/1/mem EACCES", "/proc/1/maps EACCES", "/proc/1/fd/0 EACCES",
    ]
    assert processes_with(marker) == []


def test_memory_cannot_be_allocated_past_memory_mb_by_a_child_either() -> None:
    # What the injected execve did: a fresh process allocating 300 MiB. Every process is limited now.
    program = (
        "import subprocess, sys\n"
        "r = subprocess.run([sys.executable, '-c', 'b = bytearray(300 << 20); print(len(b))'],"
        " capture_output=True, text=True)\n"
        "print(r.returncode, 'MemoryError' in r.stderr, r.stdout.strip())\n"
    )
    result = run_python(program, memory_mb=128)
    assert result.ok, result.stderr
    assert result.stdout == "1 True \n"


# --- 2. memfd and other memory that RLIMIT_AS does not count -----------------------------------------------


def test_memfd_and_sysv_shm_are_denied() -> None:
    # Before: 12 memfds of 16 MiB each (192 MiB) were written under memory_mb=128.
    program = (
        SYSCALL
        + "import os\n"
        "try:\n"
        "    fds = []\n"
        "    for i in range(12):\n"
        "        fds.append(os.memfd_create(f'm{i}'))\n"
        "        os.write(fds[-1], bytes(16 << 20))\n"
        "    print('memfd wrote', 16 * len(fds), 'MiB')\n"
        "except OSError as e:\n"
        "    print('memfd', errno.errorcode[e.errno])\n"
        f"print('shmget', syscall({nr('shmget')}, 0, 64 << 20, 0o1600))\n"  # IPC_PRIVATE, IPC_CREAT | 0600
        f"print('msgget', syscall({nr('msgget')}, 0, 0o1600))\n"
        f"print('semget', syscall({nr('semget')}, 0, 1000, 0o1600))\n"
    )
    result = run_python(program, memory_mb=128)
    assert result.ok, result.stderr
    assert result.stdout.splitlines() == ["memfd EPERM", "shmget EPERM", "msgget EPERM", "semget EPERM"]


def test_file_backed_memory_is_bounded_by_the_tmpfs_caps() -> None:
    # What remains of memory outside RLIMIT_AS: files on the two writable tmpfs, unlinked or not, and
    # O_TMPFILE ones. Their sum is bounded by the caps (64 MiB /tmp + 16 MiB /dev/shm), whatever fds hold.
    program = (
        "import errno, os\n"
        "written = 0\n"
        "fds = []\n"
        "for directory in ['/tmp', '/dev/shm']:\n"
        "    for i in range(12):\n"
        "        try:\n"
        "            if i % 2:\n"
        "                fd = os.open(directory, os.O_TMPFILE | os.O_RDWR)\n"
        "            else:\n"
        "                fd = os.open(f'{directory}/f{i}', os.O_CREAT | os.O_RDWR)\n"
        "                os.unlink(f'{directory}/f{i}')\n"
        "            fds.append(fd)\n"
        "            os.write(fd, bytes(16 << 20))\n"
        "            written += 16 << 20\n"
        "        except OSError as e:\n"
        "            assert e.errno in (errno.ENOSPC, errno.EFBIG), e\n"
        "            break\n"
        "    try:\n"
        "        os.ftruncate(fds[-1], 1 << 30)\n"  # sparse is not allocated, but also over RLIMIT_FSIZE
        "        print('ftruncate ok')\n"
        "    except OSError as e:\n"
        "        print('ftruncate', errno.errorcode[e.errno])\n"
        "print(written >> 20)\n"
    )
    result = run_python(program, memory_mb=128)
    assert result.ok, result.stderr
    *truncates, written_mib = result.stdout.splitlines()
    assert truncates == ["ftruncate EFBIG", "ftruncate EFBIG"]
    assert int(written_mib) <= 64 + 16


def test_open_files_are_limited() -> None:
    result = run_python(
        "import os\nfds = []\ntry:\n    while True:\n        fds.append(os.open('/dev/null', os.O_RDONLY))\n"
        "except OSError as e:\n    print(len(fds), e.strerror)\n"
    )
    assert result.ok, result.stderr
    count, message = result.stdout.split(" ", 1)
    assert 200 < int(count) < 256 and message == "Too many open files\n"


# --- 3. no nested namespaces, no mounts --------------------------------------------------------------------


def test_unshare_and_mount_fail(marker: str) -> None:
    # Before: `unshare -rm` gave a nested user namespace that mounted a tmpfs of the host's size.
    program = with_marker(
        SYSCALL
        + "import subprocess\n"
        "r = subprocess.run(['unshare', '-rm', 'sh', '-c', 'mkdir -p /tmp/m && mount -t tmpfs none /tmp/m"
        " && head -c 100000000 /dev/zero > /tmp/m/big && echo escaped'], capture_output=True, text=True)\n"
        "print(f'unshare -rm {r.returncode}{r.stdout.strip()}')\n"
        f"print('unshare', syscall({nr('unshare')}, 0x10000000 | 0x20000))\n"  # CLONE_NEWUSER | CLONE_NEWNS
        f"print('unshare ns', syscall({nr('unshare')}, 0x20000))\n"
        f"print('clone', syscall({nr('clone')}, 0x10000000 | 17, 0, 0, 0, 0))\n"  # CLONE_NEWUSER | SIGCHLD
        f"print('clone3', syscall({nr('clone3')}, 0, 0))\n"
        f"print('setns', syscall({nr('setns')}, 0, 0))\n"
        f"print('mount', syscall({nr('mount')}, 0, 0, 0, 0, 0))\n"
        f"print('fsopen', syscall({nr('fsopen')}, 0, 0))\n",
        marker,
    )
    result = run_python(program)
    assert result.ok, result.stderr
    assert result.stdout.splitlines() == [
        "unshare -rm 1", "unshare EPERM", "unshare ns EPERM", "clone EPERM", "clone3 ENOSYS", "setns EPERM",
        "mount EPERM", "fsopen EPERM",
    ]
    assert processes_with(marker) == []


def test_user_namespaces_are_disabled_below_the_filter_too() -> None:
    # bwrap --disable-userns: the sandbox's user namespace may have no children, whatever the filter allows.
    # So run the sandbox's own bwrap options without the filter, and try to make a user namespace inside.
    code_fd, launcher_fd = os.memfd_create("main.py"), os.memfd_create("sh")
    os.write(launcher_fd, Path("/usr/bin/sh").read_bytes())
    os.lseek(launcher_fd, 0, os.SEEK_SET)
    info_r, info_w = os.pipe()
    try:
        argv = bwrap_argv(shutil.which("bwrap"), code_fd=code_fd, info_fd=info_w, seccomp_fd=-1,
                          launcher_fd=launcher_fd)
        at = argv.index("--seccomp")
        unfiltered = argv[:at] + argv[at + 2:]
        results = [
            subprocess.run([*options, "/usr/bin/unshare", "-U", "true"], pass_fds=(code_fd, launcher_fd, info_w),
                           capture_output=True, text=True, timeout=30, **drop_root())
            for options in (unfiltered, [o for o in unfiltered if o != "--disable-userns"])
        ]
    finally:
        for fd in (code_fd, launcher_fd, info_r, info_w):
            os.close(fd)
    disabled, enabled = results
    assert enabled.returncode == 0, enabled.stderr  # the probe can tell: without the option it succeeds
    assert disabled.returncode != 0 and "No space left on device" in disabled.stderr, disabled.stderr


def test_old_bwrap_without_disable_userns_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    directory = Path("/tmp") / f"wmtp-fake-bwrap-{uuid.uuid4().hex}"  # executable by nobody, unlike tmp_path
    directory.mkdir(mode=0o755)
    try:
        fake = directory / "bwrap"
        fake.write_text('#!/bin/sh\necho "bwrap: Unknown option --disable-userns" >&2\nexit 1\n')
        fake.chmod(0o755)
        monkeypatch.setenv("PATH", f"{directory}:{os.environ['PATH']}")
        with pytest.raises(SandboxUnavailable, match=r"bubblewrap >= 0\.8\.0"):
            run_python("print('hi')")
    finally:
        for child in directory.iterdir():
            child.unlink()
        directory.rmdir()


# --- the filter --------------------------------------------------------------------------------------------


def test_every_denied_syscall_fails_with_eperm() -> None:
    # Harmless arguments (zeros): only the filter's verdict is looked at, and each runs in its own child.
    names = [*seccomp.DENIED, *(["iopl", "ioperm"] if os.uname().machine == "x86_64" else [])]
    program = (
        SYSCALL
        + "import os\n"
        f"for name, number in {[(n, nr(n)) for n in names]!r}:\n"
        "    pid = os.fork()\n"
        "    if pid == 0:\n"
        "        print(name, syscall(number, 0, 0, 0, 0, 0, 0), flush=True)\n"
        "        os._exit(0)\n"
        "    os.waitpid(pid, 0)\n"
    )
    result = run_python(program)
    assert result.ok, result.stderr
    assert result.stdout.splitlines() == [f"{name} EPERM" for name in names]


def test_plain_fork_threads_and_clone_are_allowed() -> None:
    program = (
        "import os, threading\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    os._exit(7)\n"
        "print('fork', os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))\n"
        "t = threading.Thread(target=print, args=('thread',))\n"
        "t.start(); t.join()\n"
    )
    result = run_python(program)
    assert result.ok, result.stderr
    assert result.stdout.splitlines() == ["fork 7", "thread"]


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="the x32 ABI exists on x86_64 only")
def test_x32_syscalls_kill_the_process() -> None:
    # x32 numbers (bit 30 set) would otherwise name the same syscalls past every check.
    result = run_python(SYSCALL + "print('x32 getpid', syscall(0x40000000 | 39))\n")
    assert result.returncode == 128 + 31 and "x32" not in result.stdout  # SIGSYS


def test_ordinary_programs_still_work() -> None:
    program = (
        "import ctypes, multiprocessing, subprocess, sys, tempfile\n"
        "callback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int)(lambda x: 2 * x)\n"  # libffi closures
        "print('ctypes', callback(21))\n"
        "with multiprocessing.Pool(4) as pool:\n"
        "    print('pool', sum(pool.map(abs, range(-10, 10))))\n"
        "lock = multiprocessing.Lock()\n"  # a POSIX semaphore in /dev/shm
        "with lock:\n"
        "    print('lock')\n"
        "value = multiprocessing.Value('i', 5)\n"  # multiprocessing's heap (a file in /dev/shm or /tmp)
        "print('value', value.value)\n"
        "print(subprocess.run(['sh', '-c', 'echo sub'], capture_output=True, text=True).stdout.strip())\n"
        "with tempfile.TemporaryFile() as f:\n"
        "    f.write(b'abc'); f.seek(0); print('tmp', f.read().decode())\n"
        "print('stdin', sys.stdin.read().strip())\n"
    )
    result = run_python(program, stdin="hello\n", memory_mb=512)
    assert result.ok, result.stderr
    assert result.stdout.splitlines() == [
        "ctypes 42", "pool 100", "lock", "value 5", "sub", "tmp abc", "stdin hello",
    ]


# --- the filter's construction -----------------------------------------------------------------------------


@pytest.mark.parametrize(("machine", "header", "pattern"), [
    ("x86_64", "/usr/include/x86_64-linux-gnu/asm/unistd_64.h", r"#define __NR_{}\s+(\d+)"),
    ("aarch64", "/usr/include/asm-generic/unistd.h", r"#define __NR(?:3264)?_{}\s+(\d+)"),
])
def test_syscall_numbers_match_the_kernel_headers(machine: str, header: str, pattern: str) -> None:
    if not Path(header).exists():
        pytest.skip(f"{header} not installed (linux-libc-dev)")
    text = Path(header).read_text()
    names = [*seccomp.DENIED, "clone", "clone3", *(["iopl", "ioperm"] if machine == "x86_64" else [])]
    wrong = {}
    for name in names:
        match = re.search(pattern.format(name), text)
        if match is None or int(match.group(1)) != seccomp.syscall_number(name, machine):
            wrong[name] = (match and int(match.group(1)), seccomp.syscall_number(name, machine))
    assert not wrong, wrong


@pytest.mark.parametrize("machine", ["x86_64", "aarch64"])
def test_filter_program_is_well_formed(machine: str) -> None:
    program = seccomp.filter_program(machine)
    insns = list(struct.iter_unpack("=HBBI", program))
    assert len(program) % 8 == 0 and 0 < len(insns) <= 4096  # BPF_MAXINSNS
    assert insns[-1] == (0x06, 0, 0, 0x7FFF0000)  # ends by allowing
    for index, (code, jt, jf, _) in enumerate(insns):  # every jump lands inside the program
        if code & 0x07 == 0x05:
            assert index + 1 + max(jt, jf) < len(insns)
    assert errno.EPERM in {k & 0xFFFF for code, _, _, k in insns if code == 0x06 and k >> 16 == 0x0005}


def test_unknown_architecture_is_refused() -> None:
    with pytest.raises(ValueError, match="no seccomp filter"):
        seccomp.filter_program("riscv64")
