"""The sandbox's seccomp filter: a classic-BPF program built here, loaded by bwrap (``--seccomp FD``).

bwrap installs it (with ``PR_SET_NO_NEW_PRIVS``) on the sandbox's pid 1 just before exec, after its own
setup, so it binds the launcher, the program and everything they spawn, and cannot be removed. No library
is needed on either side: the program is a few dozen ``struct sock_filter`` instructions packed with
:mod:`struct`.

What it does, in order:
    1. a syscall of another ABI than the native one (i386 or x32 on x86_64, AArch32 on aarch64) kills the
       process: their numbers differ, so they would otherwise slip past the checks below;
    2. every syscall of :data:`DENIED` fails with EPERM (the way out of the rlimits and namespaces: ptrace and
       its relatives, new namespaces, mounts, kernel keyrings, BPF, perf, io_uring, modules; plus
       ``memfd_create`` and SysV ``shmget``/``msgget``/``semget``, whose memory no rlimit counts);
    3. ``clone`` with any ``CLONE_NEW*`` flag fails with EPERM (plain fork and threads are allowed);
    4. ``clone3``, whose flags live in memory a filter cannot read, fails with ENOSYS, so glibc falls back
       to ``clone`` (as under Docker's default profile);
    5. everything else is allowed.

Public: :data:`DENIED`, :data:`CLONE_NAMESPACE_FLAGS`, :func:`filter_program`, :func:`syscall_number`.
"""

from __future__ import annotations

import errno
import os
import struct

# Syscalls denied with EPERM, by name. Numbers per architecture below (from the kernel's uapi headers:
# asm/unistd_64.h for x86_64, asm-generic/unistd.h for aarch64); tests check them against the headers.
DENIED: tuple[str, ...] = (
    # another process's memory, registers or fds (ptrace of pid 1 was a way out of the rlimits)
    "ptrace", "process_vm_readv", "process_vm_writev", "process_madvise", "pidfd_getfd", "kcmp",
    # namespaces and mounts (a nested user namespace could mount an uncapped tmpfs)
    "unshare", "setns", "mount", "umount2", "pivot_root", "chroot",
    "fsopen", "fsconfig", "fsmount", "fspick", "move_mount", "open_tree", "mount_setattr",
    "open_by_handle_at", "name_to_handle_at",
    # kernel attack surface no test program needs
    "keyctl", "add_key", "request_key", "bpf", "perf_event_open", "userfaultfd",
    "io_uring_setup", "io_uring_enter", "io_uring_register",
    "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module",
    "swapon", "swapoff", "reboot", "quotactl",
    # memory outside RLIMIT_AS and the tmpfs caps: memfd pages and SysV IPC objects (whose ipc-namespace
    # defaults allow GiBs); multiprocessing needs none of them (POSIX semaphores and shm live in /dev/shm)
    "memfd_create", "memfd_secret", "shmget", "msgget", "semget",
)

# (x86_64, aarch64) number of every syscall the filter names; None: no such syscall on that architecture.
_SYSCALLS: dict[str, tuple[int | None, int | None]] = {
    "ptrace": (101, 117), "process_vm_readv": (310, 270), "process_vm_writev": (311, 271),
    "process_madvise": (440, 440), "pidfd_getfd": (438, 438), "kcmp": (312, 272),
    "unshare": (272, 97), "setns": (308, 268), "mount": (165, 40), "umount2": (166, 39), "pivot_root": (155, 41),
    "chroot": (161, 51), "fsopen": (430, 430), "fsconfig": (431, 431), "fsmount": (432, 432),
    "fspick": (433, 433), "move_mount": (429, 429), "open_tree": (428, 428), "mount_setattr": (442, 442),
    "open_by_handle_at": (304, 265), "name_to_handle_at": (303, 264),
    "keyctl": (250, 219), "add_key": (248, 217), "request_key": (249, 218), "bpf": (321, 280),
    "perf_event_open": (298, 241), "userfaultfd": (323, 282),
    "io_uring_setup": (425, 425), "io_uring_enter": (426, 426), "io_uring_register": (427, 427),
    "kexec_load": (246, 104), "kexec_file_load": (320, 294), "init_module": (175, 105),
    "finit_module": (313, 273), "delete_module": (176, 106),
    "swapon": (167, 224), "swapoff": (168, 225), "reboot": (169, 142), "quotactl": (179, 60),
    "memfd_create": (319, 279), "memfd_secret": (447, 447), "shmget": (29, 194), "msgget": (68, 186),
    "semget": (64, 190),
    "clone": (56, 220), "clone3": (435, 435),
    "iopl": (172, None), "ioperm": (173, None),  # x86 only: port I/O
}
_NUMBERS: dict[str, dict[str, int]] = {
    machine: {name: numbers[i] for name, numbers in _SYSCALLS.items() if numbers[i] is not None}
    for i, machine in enumerate(("x86_64", "aarch64"))
}
_EXTRA_DENIED = {"x86_64": ("iopl", "ioperm"), "aarch64": ()}

_AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}  # AUDIT_ARCH_X86_64, AUDIT_ARCH_AARCH64
_X32_SYSCALL_BIT = 0x40000000

# CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET
# (CLONE_NEWTIME, 0x80, is only accepted by clone3 and unshare, both denied.)
CLONE_NAMESPACE_FLAGS = 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000 | 0x40000000

# classic BPF opcodes (linux/filter.h) and seccomp return values (linux/seccomp.h)
_LD_W_ABS = 0x00 | 0x00 | 0x20  # BPF_LD | BPF_W | BPF_ABS
_JEQ_K = 0x05 | 0x10 | 0x00  # BPF_JMP | BPF_JEQ | BPF_K
_JGE_K = 0x05 | 0x30 | 0x00  # BPF_JMP | BPF_JGE | BPF_K
_JSET_K = 0x05 | 0x40 | 0x00  # BPF_JMP | BPF_JSET | BPF_K
_RET_K = 0x06 | 0x00  # BPF_RET | BPF_K
_RET_KILL_PROCESS = 0x80000000
_RET_ERRNO = 0x00050000
_RET_ALLOW = 0x7FFF0000

# offsets in struct seccomp_data {int nr; __u32 arch; __u64 instruction_pointer; __u64 args[6];}; the low
# 32 bits of args[0] (both supported architectures are little-endian), which hold every CLONE_NEW* flag
_NR, _ARCH, _ARG0_LOW = 0, 4, 16


def syscall_number(name: str, machine: str | None = None) -> int:
    """The number of syscall ``name`` on ``machine`` (default: this one, as ``uname -m`` prints it)."""
    return _NUMBERS[_machine(machine)][name]


def filter_program(machine: str | None = None) -> bytes:
    """The filter as bwrap's ``--seccomp`` reads it: an array of ``struct sock_filter`` in native order.

    Raises:
        ValueError: no filter is defined for this architecture (the sandbox refuses to run without one).
    """
    machine = _machine(machine)
    numbers = _NUMBERS[machine]
    deny_eperm = _RET_ERRNO | errno.EPERM
    insns: list[tuple[int, int, int, int]] = [
        (_LD_W_ABS, 0, 0, _ARCH),
        (_JEQ_K, 1, 0, _AUDIT_ARCH[machine]),
        (_RET_K, 0, 0, _RET_KILL_PROCESS),
        (_LD_W_ABS, 0, 0, _NR),
    ]
    if machine == "x86_64":  # x32 syscalls: the same names under numbers with this bit set
        insns += [(_JGE_K, 0, 1, _X32_SYSCALL_BIT), (_RET_K, 0, 0, _RET_KILL_PROCESS)]
    for name in (*DENIED, *_EXTRA_DENIED[machine]):
        insns += [(_JEQ_K, 0, 1, numbers[name]), (_RET_K, 0, 0, deny_eperm)]
    insns += [
        (_JEQ_K, 0, 1, numbers["clone3"]),
        (_RET_K, 0, 0, _RET_ERRNO | errno.ENOSYS),
        (_JEQ_K, 0, 3, numbers["clone"]),
        (_LD_W_ABS, 0, 0, _ARG0_LOW),
        (_JSET_K, 0, 1, CLONE_NAMESPACE_FLAGS),
        (_RET_K, 0, 0, deny_eperm),
        (_RET_K, 0, 0, _RET_ALLOW),
    ]
    return b"".join(struct.pack("=HBBI", *insn) for insn in insns)


def _machine(machine: str | None) -> str:
    machine = machine or os.uname().machine
    if machine not in _NUMBERS:
        raise ValueError(f"no seccomp filter for architecture {machine!r} (supported: {', '.join(_NUMBERS)})")
    return machine
