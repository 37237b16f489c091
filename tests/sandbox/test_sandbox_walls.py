"""The operating-system walls hold even against unrestricted Python (``sandbox/walls.py``).

These tests do not need an escape from the Python policy: they start a process behind exactly the
walls a worker gets (``walls.worker_argv`` and ``walls.apply_inner``, as ``host.py`` uses them) but
with a test-only entry point that runs *unrestricted* Python read from stdin. Production code has no
such entry point: the worker only ever runs code through the RestrictedPython policy. Each test
tries one forbidden thing and checks that it fails, and that the world outside is unchanged.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from sandbox import Isolation, Limits, SandboxSession, WorkerStartFailed
from sandbox import walls
from sandbox.host import SandboxSession as _Session
from support import bubblewrap_namespaces

BWRAP = walls.find_bwrap()

# Applies the inner walls exactly as the worker does, then runs the test's code unrestricted.
_PROBE_ENTRY = (
    "import json, sys; from sandbox import walls; "
    "report = walls.apply_inner(json.loads(sys.argv[1])); "
    "sys.stdout.write(json.dumps(report) + '\\n'); sys.stdout.flush(); "
    "exec(sys.stdin.read(), {'__name__': '__probe__'})"
)


NAMESPACES = bubblewrap_namespaces(BWRAP)
needs_namespaces = pytest.mark.skipif(not NAMESPACES, reason="this machine gives no user namespaces to bubblewrap")


def _config(tmp_path: Path) -> dict[str, object]:
    return {"isolation": "auto", "server_uid": os.getuid(), "max_fds": 32,
            "hidden_paths": ["/etc/passwd", str(tmp_path)], "initial_as": 2 * 1024**3, "initial_cpu": 60,
            "as_ceiling": None if walls.can_raise_hard_limits() else 4 * 1024**3,
            "cpu_ceiling": None if walls.can_raise_hard_limits() else 600}


def run_unrestricted(code: str, tmp_path: Path, *, outer: bool = True) -> tuple[dict[str, dict[str, object]], str]:
    """Run ``code`` as plain Python behind the walls; return the walls' report and what it printed."""
    argv = walls.worker_argv(sys.executable, _PROBE_ENTRY, _config(tmp_path), Isolation(),
                             BWRAP if outer else None)
    env = None if outer else {"PATH": os.defpath}
    done = subprocess.run(argv, input=textwrap.dedent(code), capture_output=True, text=True, timeout=60, env=env,
                          start_new_session=True)
    assert done.stdout, f"the probe printed nothing (exit {done.returncode}): {done.stderr[-2000:]}"
    first, _, rest = done.stdout.partition("\n")
    return json.loads(first), rest


def attempt(expr: str) -> str:
    """Code that prints ESCAPED if ``expr`` (a statement) runs, else the error it met."""
    return textwrap.dedent(f"""
        try:
            {expr}
        except BaseException as exc:
            print("BLOCKED", type(exc).__name__, getattr(exc, "errno", ""))
        else:
            print("ESCAPED")
    """)


# -- the report --------------------------------------------------------------------------------


@needs_namespaces
def test_every_wall_is_up_behind_bubblewrap(tmp_path: Path) -> None:
    """Behind bubblewrap a worker reports all seven walls up."""
    report, _ = run_unrestricted("", tmp_path)
    assert walls.missing(report) == [], report


def test_inner_walls_stand_without_namespaces(tmp_path: Path) -> None:
    """Without bubblewrap the rlimits, no_new_privs and seccomp still go up, and the outer walls
    are reported down rather than claimed."""
    report, _ = run_unrestricted("", tmp_path, outer=False)
    assert all(report[name]["up"] for name in walls.INNER_WALLS), report
    assert not report["pid_namespace"]["up"] and not report["filesystem"]["up"]


# -- the filesystem ------------------------------------------------------------------------------


@needs_namespaces
def test_reading_etc_passwd_fails(tmp_path: Path) -> None:
    """/etc/passwd is not in the worker's tree."""
    _, out = run_unrestricted(attempt("open('/etc/passwd').read()"), tmp_path)
    assert out.startswith("BLOCKED FileNotFoundError"), out


@needs_namespaces
def test_reading_the_servers_environment_fails(tmp_path: Path) -> None:
    """The server's /proc/<pid>/environ (where API keys live) cannot be read: its pid does not
    exist in the worker's namespace, and /proc there holds only the worker's own processes."""
    _, out = run_unrestricted(attempt(f"open('/proc/{os.getpid()}/environ', 'rb').read()"), tmp_path)
    assert out.startswith("BLOCKED"), out
    _, out = run_unrestricted("import os; print(sorted(p for p in os.listdir('/proc') if p.isdigit()))", tmp_path)
    assert out.strip() in ("['1', '2']", "['2', '1']"), out


@needs_namespaces
async def test_another_sessions_context_cannot_be_read(tmp_path: Path) -> None:
    """A context of another session lives in a 0700 folder under the temp dir, which the worker's
    tree does not hold."""
    async with _Session(Limits(exec_timeout=5.0)) as other:
        await other.load_context("secret", "the other session's text")
        (name, spilled), = other.store.items()
        assert spilled.path.exists()
        _, out = run_unrestricted(attempt(f"open({str(spilled.path)!r}).read()"), tmp_path)
    assert out.startswith("BLOCKED FileNotFoundError"), out


@pytest.mark.parametrize("outer", [True, False], ids=["bubblewrap", "inner-only"])
def test_writing_a_file_fails(tmp_path: Path, outer: bool) -> None:
    """No file can be created or written: seccomp refuses write opens, and the tree is read-only."""
    if outer and not NAMESPACES:
        pytest.skip("no user namespaces")
    target = tmp_path / "written.txt"
    _, out = run_unrestricted(attempt(f"open({str(target)!r}, 'w').write('x')"), tmp_path, outer=outer)
    assert out.startswith("BLOCKED"), out
    assert not target.exists()
    _, out = run_unrestricted(attempt("import os; os.mkdir('/dev/shm/x')"), tmp_path, outer=outer)
    assert out.startswith("BLOCKED"), out


# -- processes, signals, network ------------------------------------------------------------------


@pytest.mark.parametrize("outer", [True, False], ids=["bubblewrap", "inner-only"])
def test_fork_and_exec_fail(tmp_path: Path, outer: bool) -> None:
    """No new process and no new program: fork, execve and subprocess all fail."""
    if outer and not NAMESPACES:
        pytest.skip("no user namespaces")
    for statement in ("import os; os.fork()", "import os; os.execv('/bin/true', ['true'])",
                      "import subprocess; subprocess.run(['/bin/true'])", "import os; os.posix_spawn('/bin/true', ['true'], {})"):
        _, out = run_unrestricted(attempt(statement), tmp_path, outer=outer)
        assert out.startswith("BLOCKED"), (statement, out)
    # os.system reports the shell's status instead of raising: it must not have run the command.
    _, out = run_unrestricted("import os; print(os.system('true'))", tmp_path, outer=outer)
    assert out.strip() != "0", out


@pytest.mark.parametrize("outer", [True, False], ids=["bubblewrap", "inner-only"])
def test_killing_another_process_fails(tmp_path: Path, outer: bool) -> None:
    """The worker cannot signal any process but itself: not a process by pid, not the server,
    not every process at once."""
    if outer and not NAMESPACES:
        pytest.skip("no user namespaces")
    victim = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        code = "\n".join(attempt(f"import os, signal; os.kill({pid}, signal.SIGKILL)")
                         for pid in (victim.pid, os.getpid(), -1))
        _, out = run_unrestricted(code, tmp_path, outer=outer)
        assert out.count("BLOCKED") == 3, out
        assert victim.poll() is None  # alive
    finally:
        victim.kill()
        victim.wait()


@pytest.mark.parametrize("outer", [True, False], ids=["bubblewrap", "inner-only"])
def test_opening_a_socket_fails(tmp_path: Path, outer: bool) -> None:
    """No socket of any family can be made."""
    if outer and not NAMESPACES:
        pytest.skip("no user namespaces")
    code = "\n".join(attempt(f"import socket; socket.socket({family}, socket.SOCK_STREAM)")
                     for family in ("socket.AF_INET", "socket.AF_INET6", "socket.AF_UNIX"))
    _, out = run_unrestricted(code, tmp_path, outer=outer)
    assert out.count("BLOCKED PermissionError") == 3, out


@needs_namespaces
def test_the_network_namespace_has_no_way_out(tmp_path: Path) -> None:
    """Even before seccomp, the worker's network namespace holds a loopback and nothing else."""
    report, _ = run_unrestricted("", tmp_path)
    assert report["network_namespace"]["up"] and report["network_namespace"]["detail"] == "interfaces: lo"


@pytest.mark.parametrize("outer", [True, False], ids=["bubblewrap", "inner-only"])
def test_ptrace_mount_and_namespaces_fail(tmp_path: Path, outer: bool) -> None:
    """ptrace, unshare and mount return errors (called through libc with ctypes)."""
    if outer and not NAMESPACES:
        pytest.skip("no user namespaces")
    code = textwrap.dedent(f"""
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        print(libc.ptrace(16, {os.getpid()}, 0, 0), ctypes.get_errno())      # PTRACE_ATTACH to the server
        print(libc.unshare(0x10000000), ctypes.get_errno())                  # CLONE_NEWUSER
        print(libc.mount(b"none", b"/", b"tmpfs", 0, None), ctypes.get_errno())
    """)
    _, out = run_unrestricted(code, tmp_path, outer=outer)
    rows = [line.split() for line in out.strip().splitlines()]
    assert len(rows) == 3 and all(row[0] == "-1" and row[1] != "0" for row in rows), out


# -- limits ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("outer", [True, False], ids=["bubblewrap", "inner-only"])
def test_lifting_an_rlimit_fails(tmp_path: Path, outer: bool) -> None:
    """No rlimit can be raised (nor changed at all) from inside, soft or hard."""
    if outer and not NAMESPACES:
        pytest.skip("no user namespaces")
    code = "\n".join(
        attempt(f"import resource; s, h = resource.getrlimit({which}); resource.setrlimit({which}, (h, h))")
        for which in ("resource.RLIMIT_AS", "resource.RLIMIT_CPU", "resource.RLIMIT_NOFILE", "resource.RLIMIT_FSIZE")
    )
    code += "\n" + attempt("import resource; resource.prlimit(0, resource.RLIMIT_AS, (-1, -1))")
    _, out = run_unrestricted(code, tmp_path, outer=outer)
    assert out.count("BLOCKED") == 5, out


def test_file_size_and_descriptors_are_hard_limits(tmp_path: Path) -> None:
    """File size, core and open files have hard = soft."""
    code = ("import resource\nfor w in (resource.RLIMIT_FSIZE, resource.RLIMIT_CORE, resource.RLIMIT_NOFILE):\n"
            "    print(*resource.getrlimit(w))")
    _, out = run_unrestricted(code, tmp_path, outer=False)
    rows = [tuple(line.split()) for line in out.strip().splitlines()]
    assert rows == [("0", "0"), ("0", "0"), ("32", "32")], out


# -- the real worker ----------------------------------------------------------------------------------


@needs_namespaces
async def test_a_session_reports_its_walls() -> None:
    """SandboxSession exposes what its worker saw; the pid it gives is the worker's, outside the
    namespace, and the worker's limits are set from outside."""
    async with SandboxSession(Limits(exec_timeout=5.0, memory_mb=512)) as s:
        assert walls.missing(s.walls) == [], s.walls
        assert s.pid is not None and s.pid != 2
        limits = Path(f"/proc/{s.pid}/limits").read_text()
        row = next(line for line in limits.splitlines() if line.startswith("Max address space"))
        assert row.split()[3] == str(512 * 1024 * 1024)
        assert (await s.execute("print(1 + 1)")).stdout == "2\n"


async def test_strict_refuses_a_worker_without_every_wall() -> None:
    """isolation="strict" with no usable bubblewrap is a start failure naming what is missing."""
    s = SandboxSession(Limits(exec_timeout=5.0), isolation=Isolation("strict", bwrap="/nonexistent/bwrap"))
    with pytest.raises(WorkerStartFailed, match="bubblewrap"):
        await s.start()
    await s.aclose()


async def test_auto_falls_back_when_bubblewrap_cannot_start(tmp_path: Path) -> None:
    """A bubblewrap that fails (no user namespaces on this machine) leaves "auto" with the inner
    walls, the outer ones reported down with the reason; "strict" refuses."""
    fake = tmp_path / "bwrap"
    fake.write_text("#!/bin/sh\necho 'bwrap: No permissions to create new namespace' >&2\nexit 1\n")
    fake.chmod(0o755)
    async with SandboxSession(Limits(exec_timeout=5.0), isolation=Isolation("auto", bwrap=str(fake))) as s:
        assert (await s.execute("print('runs')")).stdout == "runs\n"
        assert all(s.walls[name]["up"] for name in walls.INNER_WALLS)
        assert walls.missing(s.walls) == list(walls.OUTER_WALLS)
    strict = SandboxSession(Limits(exec_timeout=5.0), isolation=Isolation("strict", bwrap=str(fake)))
    with pytest.raises(WorkerStartFailed):
        await strict.start()
    await strict.aclose()


@needs_namespaces
def test_cli_strict_starts_when_every_wall_is_up(tmp_path: Path) -> None:
    """`rlm-mcp --isolation strict` starts (and logs the walls) on a machine that has them all."""
    from rlm_mcp.cli import check_walls
    from rlm_mcp.config import settings_from_args
    import anyio

    report = anyio.run(check_walls, settings_from_args(["--isolation", "strict"], env={}))
    assert walls.missing(report) == []


def _soft_as(pid: int) -> int:
    return resource.prlimit(pid, resource.RLIMIT_AS)[0]


async def test_the_host_moves_the_memory_limit_as_contexts_load() -> None:
    """The worker cannot change its limits, so the host does, from outside: the address-space limit
    grows with a loaded context and shrinks when it is dropped."""
    async with SandboxSession(Limits(exec_timeout=5.0, memory_margin_mb=256)) as s:
        assert s.pid is not None
        before = _soft_as(s.pid)
        await s.load_context("big", "x" * (20 * 1024 * 1024))
        grown = _soft_as(s.pid)
        assert grown >= before + 20 * 1024 * 1024
        assert (await s.execute("print(len(contexts['big']))")).stdout == f"{20 * 1024 * 1024}\n"
        await s.drop_context("big")
        assert _soft_as(s.pid) < grown
        if walls.can_raise_hard_limits():
            soft, hard = resource.prlimit(s.pid, resource.RLIMIT_AS)
            assert soft == hard
