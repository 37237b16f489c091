"""libseccomp through ctypes: just the calls the worker's filter needs.

libseccomp (the library container runtimes use) compiles the rules into BPF, checks the
architecture and x32 syscall numbers, and loads the filter; this module only names its C API.
It loads ``libseccomp.so.2`` by its soname: ``ctypes.util.find_library`` would run ``ldconfig`` in a
subprocess at every worker start (measured: ~100 ms of a ~150 ms start).
"""

from __future__ import annotations

import ctypes
import os

__all__ = ["ALLOW", "EQ", "MASKED_EQ", "NE", "Filter", "SeccompUnavailable", "errno_action"]

ALLOW = 0x7FFF0000
NE, EQ, MASKED_EQ = 1, 4, 7
_ATTR_CTL_NNP = 3  # SCMP_FLTATR_CTL_NNP: set no_new_privs when loading


class SeccompUnavailable(OSError):
    """libseccomp could not be loaded or refused a call."""


class _ArgCmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("datum_a", ctypes.c_uint64),
                ("datum_b", ctypes.c_uint64)]


def errno_action(code: int) -> int:
    """SCMP_ACT_ERRNO(code): the syscall fails with ``code`` instead of running."""
    return 0x00050000 | (code & 0xFFFF)


def _library() -> ctypes.CDLL:
    try:
        lib = ctypes.CDLL("libseccomp.so.2", use_errno=True)
    except OSError as exc:
        raise SeccompUnavailable(f"libseccomp.so.2 could not be loaded ({exc})") from exc
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
    lib.seccomp_release.restype = None
    lib.seccomp_attr_set.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32]
    lib.seccomp_attr_set.restype = ctypes.c_int
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_syscall_resolve_name.restype = ctypes.c_int
    lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint,
                                           ctypes.POINTER(_ArgCmp)]
    lib.seccomp_rule_add_array.restype = ctypes.c_int
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    lib.seccomp_load.restype = ctypes.c_int
    return lib


class Filter:
    """One filter, built rule by rule, then loaded into this process (irrevocably)."""

    def __init__(self, default: int = ALLOW) -> None:
        self._lib = _library()
        self._ctx = self._lib.seccomp_init(default)
        if not self._ctx:
            raise SeccompUnavailable("seccomp_init failed")
        self._check(self._lib.seccomp_attr_set(self._ctx, _ATTR_CTL_NNP, 1), "seccomp_attr_set")
        self.rules = 0

    def _check(self, status: int, call: str) -> None:
        if status < 0:
            raise SeccompUnavailable(-status, f"{call}: {os.strerror(-status)}")

    def add(self, action: int, syscall: str, *args: tuple[int, int, int, int]) -> bool:
        """Add a rule; each arg is ``(index, op, datum_a, datum_b)`` and all must hold. Returns
        False for a syscall this architecture does not have."""
        number = self._lib.seccomp_syscall_resolve_name(syscall.encode())
        if number == -1:  # __NR_SCMP_ERROR; other negatives are libseccomp's pseudo-syscalls
            return False
        array = (_ArgCmp * len(args))(*(_ArgCmp(*a) for a in args))
        self._check(self._lib.seccomp_rule_add_array(self._ctx, action, number, len(args), array),
                    f"rule for {syscall}")
        self.rules += 1
        return True

    def load(self) -> None:
        try:
            self._check(self._lib.seccomp_load(self._ctx), "seccomp_load")
        finally:
            self._lib.seccomp_release(self._ctx)
            self._ctx = None
