"""The modules sandboxed code may import, each exposed as a ``ModuleNamespace``.

A namespace holds a module's public functions, classes and constants, minus the
members listed in ``_DENIED`` and minus anything that is itself a module (``copy.deepcopy``
is replaced by a version without ``memo``). Each
denied member has its reason: it reaches attributes without the getattr guard,
reads or writes outside the worker, or blocks the process.
"""

from __future__ import annotations

import importlib
import types
from collections.abc import Callable
from typing import Any

from .policy import ModuleNamespace

__all__ = ["ALLOWED_MODULES", "build_namespaces", "make_import"]

ALLOWED_MODULES = (
    "re",
    "json",
    "math",
    "statistics",
    "collections",
    "itertools",
    "functools",
    "operator",
    "heapq",
    "bisect",
    "string",
    "textwrap",
    "difflib",
    "datetime",
    "time",
    "random",
    "hashlib",
    "base64",
    "unicodedata",
    "fractions",
    "decimal",
    "copy",
    "csv",
    "io",
    "pprint",
)

_DENIED: dict[str, frozenset[str]] = {
    # attrgetter/methodcaller look attributes up in C, past the getattr guard.
    "operator": frozenset({"attrgetter", "methodcaller"}),
    # Formatter.get_field walks "0.__class__"-style fields without the guard.
    "string": frozenset({"Formatter"}),
    # Only clocks and time formatting; no process-wide timezone changes, and no
    # setting the system clock (clock_settime works for a worker run as root).
    "time": frozenset({"tzset", "clock_settime", "clock_settime_ns"}),
    # update_wrapper/wraps get and set attributes named by the caller with the
    # real getattr/setattr (frames, dunders, a library class's __module__);
    # singledispatch's register() evaluates string annotations with eval().
    "functools": frozenset({"update_wrapper", "wraps", "singledispatch", "singledispatchmethod"}),
    # pprint writes to sys.stdout, which the worker points at /dev/null; the
    # sandbox gets pformat plus a pprint that goes through print.
    "pprint": frozenset({"pprint", "pp", "PrettyPrinter"}),
    # io: only in-memory buffers, no file objects.
    "io": frozenset(
        {"open", "open_code", "FileIO", "BufferedReader", "BufferedWriter", "BufferedRandom",
         "BufferedRWPair", "TextIOWrapper", "IncrementalNewlineDecoder", "text_encoding"}
    ),
    # hashlib.file_digest reads from file objects.
    "hashlib": frozenset({"file_digest"}),
}

# Members of ``io`` that are kept; everything else there touches files.
_IO_KEEP = frozenset({"StringIO", "BytesIO", "SEEK_SET", "SEEK_CUR", "SEEK_END", "UnsupportedOperation"})


def _public_members(module: types.ModuleType) -> dict[str, Any]:
    denied = _DENIED.get(module.__name__, frozenset())
    names = getattr(module, "__all__", None) or [n for n in vars(module) if not n.startswith("_")]
    members: dict[str, Any] = {}
    for name in names:
        if name.startswith("_") or name in denied:
            continue
        if module.__name__ == "io" and name not in _IO_KEEP:
            continue
        value = getattr(module, name, None)
        if value is None or isinstance(value, types.ModuleType):
            continue
        members[name] = value
    return members


def build_namespaces(print_fn: Callable[..., None]) -> dict[str, ModuleNamespace]:
    """Import every allowed module once (before rlimits tighten) and wrap it."""
    namespaces: dict[str, ModuleNamespace] = {}
    for name in ALLOWED_MODULES:
        module = importlib.import_module(name)
        members = _public_members(module)
        if name == "pprint":
            pformat = module.pformat

            def pprint(obj: Any, *args: Any, **kwargs: Any) -> None:
                print_fn(pformat(obj, *args, **kwargs))

            members["pprint"] = pprint
            members["pp"] = pprint
        if name == "copy":
            members["deepcopy"] = _deepcopy_without_memo(module.deepcopy)
        namespaces[name] = ModuleNamespace(name, members)
    return namespaces


def _deepcopy_without_memo(deepcopy: Callable[..., Any]) -> Callable[..., Any]:
    """``copy.deepcopy(x)`` without the ``memo`` argument: the memo dict receives every object
    the copy rebuilt, so it would hand the code copies of whatever its values lead to."""

    def sandbox_deepcopy(x: Any, memo: Any = None) -> Any:
        if memo is not None:
            raise TypeError("copy.deepcopy(x, memo) is refused: the memo dict would hand out every object "
                            "the copy rebuilt; call copy.deepcopy(x)")
        return deepcopy(x)

    sandbox_deepcopy.__name__ = sandbox_deepcopy.__qualname__ = "deepcopy"
    return sandbox_deepcopy


def make_import(namespaces: dict[str, ModuleNamespace]) -> Callable[..., Any]:
    """The sandbox's ``__import__``: allowlisted namespaces only, no submodules."""
    available = ", ".join(sorted(namespaces))

    def sandbox_import(
        name: str, globals: Any = None, locals: Any = None, fromlist: Any = (), level: int = 0
    ) -> ModuleNamespace:
        if level != 0:
            raise ImportError("relative imports are not available in the sandbox")
        namespace = namespaces.get(name)
        if namespace is None:
            raise ImportError(f"module {name!r} is not available in the sandbox; available: {available}")
        return namespace

    return sandbox_import
