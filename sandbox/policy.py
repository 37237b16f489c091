"""What sandboxed code may do: the compile policy, the runtime guards and the builtins.

RestrictedPython is a compiler filter, not a sandbox: it rewrites ``a.b`` into
``_getattr_(a, "b")``, ``a[b]`` into ``_getitem_(a, b)`` and so on, and refuses
some syntax. Safety comes from what those guards do and from what the namespace
holds. The rules here, deny by default:

- no name or attribute starting with ``_`` (compile time) and no frame, code,
  traceback or generator internals (compile time and again at run time);
- no ``format``/``format_map`` lookups: format strings walk attributes unguarded;
- no real module object ever reaches the code: allowlisted modules are exposed as
  ``ModuleNamespace`` objects holding their public functions and classes
  (see ``sandbox.modules``), so chains like ``re.enum.sys`` do not exist;
- any attribute or item whose value is a module, frame, code object or
  traceback is refused, whatever its name;
- writes only to objects the code could have made itself (not to namespaces,
  library classes or library functions).

Process isolation, rlimits and the wall-clock kill live in ``worker.py`` and
``host.py``; this module knows nothing of processes.
"""

from __future__ import annotations

import ast
import builtins
import types
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NamedTuple

from RestrictedPython import RestrictingNodeTransformer, compile_restricted_exec
from RestrictedPython.transformer import INSPECT_ATTRIBUTES

__all__ = [
    "RESERVED_NAMES",
    "SANDBOX_MODULE_NAME",
    "CompileOutcome",
    "ModuleNamespace",
    "SandboxTransformer",
    "compile_code",
    "guarded_getattr",
    "guarded_write",
    "make_builtins",
    "make_guards",
    "hint_for",
]

# Names the worker injects into every execution; restored if code rebinds them.
RESERVED_NAMES = frozenset(
    {
        "context",
        "contexts",
        "llm_query",
        "llm_query_batched",
        "rlm_query",
        "FINAL",
        "FINAL_VAR",
        "SHOW_VARS",
        "SubQueryError",
    }
)

# ``__name__`` of the sandbox globals: classes defined by sandboxed code carry it
# as ``__module__``, which is how the write guard tells them from library classes.
SANDBOX_MODULE_NAME = "__sandbox__"

# Attribute names refused at run time (getattr(x, name), hasattr, setattr...).
# The compiler already refuses literal ``x.__class__`` and INSPECT_ATTRIBUTES.
_BLOCKED_ATTRS = frozenset(INSPECT_ATTRIBUTES | {"format", "format_map", "mro"})
# Frames, tracebacks, generators, coroutines and code objects: every attribute with
# these prefixes leads towards a frame, so the whole family is refused.
_BLOCKED_PREFIXES = ("_", "f_", "tb_", "gi_", "cr_", "ag_", "co_")
# Values that must never be handed to sandboxed code, whatever the attribute name.
_BLOCKED_TYPES = frozenset(
    {
        types.ModuleType,
        types.FrameType,
        types.CodeType,
        types.TracebackType,
    }
)


class ModuleNamespace:
    """An allowlisted module as sandboxed code sees it: its public members, nothing more.

    It is not a module and holds no reference to one, so module-to-module chains
    (``re.enum.sys``, ``json.codecs.builtins``) simply do not exist.
    """

    __slots__ = ("_name", "_members")

    def __init__(self, name: str, members: dict[str, Any]) -> None:
        object.__setattr__(self, "_name", name)
        object.__setattr__(self, "_members", dict(members))

    def __getattr__(self, attr: str) -> Any:
        members = object.__getattribute__(self, "_members")
        try:
            return members[attr]
        except KeyError:
            name = object.__getattribute__(self, "_name")
            raise AttributeError(
                f"module {name!r} in the sandbox has no attribute {attr!r}; "
                f"available: {', '.join(sorted(members)) or '(none)'}"
            ) from None

    def __setattr__(self, attr: str, value: Any) -> None:
        raise TypeError("sandbox modules are read-only")

    def __delattr__(self, attr: str) -> None:
        raise TypeError("sandbox modules are read-only")

    def __dir__(self) -> Iterable[str]:
        return sorted(object.__getattribute__(self, "_members"))

    def __repr__(self) -> str:
        return f"<sandbox module {object.__getattribute__(self, '_name')!r}>"

    # Rebuilding a namespace (copy, deepcopy, pickling) would walk and copy its members
    # outside the guards; a namespace is immutable, so a copy is the namespace itself.
    def __copy__(self) -> ModuleNamespace:
        return self

    def __deepcopy__(self, memo: Any) -> ModuleNamespace:
        return self

    def __reduce_ex__(self, protocol: Any) -> Any:
        raise TypeError("sandbox modules cannot be pickled or rebuilt")

    def __reduce__(self) -> Any:
        raise TypeError("sandbox modules cannot be pickled or rebuilt")


def _attr_refused(name: str) -> str | None:
    """Why ``name`` may not be read or written, or None if it may."""
    if name.startswith(_BLOCKED_PREFIXES):
        if name.startswith("_"):
            return f"attribute {name!r} is refused: names starting with '_' are private to the sandbox"
        return f"attribute {name!r} is refused: it leads to interpreter frames or code objects"
    if name in _BLOCKED_ATTRS:
        if name in ("format", "format_map"):
            return (
                f"attribute {name!r} is refused: format strings can reach object internals; "
                "use an f-string or the % operator instead"
            )
        return f"attribute {name!r} is refused in the sandbox"
    return None


def guarded_getattr(ob: Any, name: str, *default: Any) -> Any:
    """``_getattr_`` and the ``getattr`` builtin: refuses by raising, never returns None."""
    if type(name) is not str:
        raise TypeError("attribute name must be a string")
    reason = _attr_refused(name)
    if reason is not None:
        raise AttributeError(reason)
    value = getattr(ob, name, *default)
    if type(value) in _BLOCKED_TYPES:
        raise AttributeError(f"attribute {name!r} is refused: it holds a {type(value).__name__} object")
    return value


def guarded_hasattr(ob: Any, name: str) -> bool:
    try:
        guarded_getattr(ob, name)
    except AttributeError:
        return False
    return True


def guarded_getitem(ob: Any, index: Any) -> Any:
    """``_getitem_``: plain indexing, but never hands out a module, frame or traceback."""
    value = ob[index]
    if type(value) in _BLOCKED_TYPES:
        raise TypeError(f"item refused: it holds a {type(value).__name__} object")
    return value


# Objects sandboxed code can have made itself and may freely mutate.
_PLAIN_WRITABLE = frozenset({list, dict, set, bytearray})


def guarded_write(ob: Any) -> Any:
    """``_write_``: the target of ``ob[k] = v``, ``ob.a = v`` and their ``del`` forms.

    Mutating library classes, library functions or module namespaces could change
    how trusted code behaves inside the worker, so only the code's own objects
    are writable.
    """
    kind = type(ob)
    if kind in _PLAIN_WRITABLE:
        return ob
    if kind is ModuleNamespace or kind in _BLOCKED_TYPES:
        raise TypeError("sandbox modules are read-only")
    if isinstance(ob, type):
        if ob.__module__ != SANDBOX_MODULE_NAME:
            raise TypeError(f"class {ob.__name__!r} is not defined by sandboxed code and is read-only")
        return ob
    if isinstance(ob, (types.BuiltinFunctionType, types.BuiltinMethodType, types.MethodType)):
        raise TypeError("functions are read-only in the sandbox")
    if isinstance(ob, types.FunctionType) and ob.__module__ != SANDBOX_MODULE_NAME:
        raise TypeError(f"function {ob.__name__!r} is not defined by sandboxed code and is read-only")
    return ob


def guarded_setattr(ob: Any, name: str, value: Any) -> None:
    if type(name) is not str:
        raise TypeError("attribute name must be a string")
    reason = _attr_refused(name)
    if reason is not None:
        raise AttributeError(reason)
    setattr(guarded_write(ob), name, value)


def guarded_delattr(ob: Any, name: str) -> None:
    if type(name) is not str:
        raise TypeError("attribute name must be a string")
    reason = _attr_refused(name)
    if reason is not None:
        raise AttributeError(reason)
    delattr(guarded_write(ob), name)


def guarded_iter(ob: Any) -> Iterator[Any]:
    """``_getiter_``. Items need no per-item check: the guards sit on attributes and
    on what namespaces hold, so plain ``iter`` keeps loops at native speed."""
    if type(ob) is ModuleNamespace:
        raise TypeError("sandbox modules are not iterable")
    return iter(ob)


def iter_unpack_sequence(it: Any, spec: Any, _getiter_: Callable[[Any], Any]) -> Iterator[Any]:
    """``_iter_unpack_sequence_`` (``for a, b in pairs``): one guarded iter per loop,
    then native unpacking; RestrictedPython's per-item rewrap only matters when
    ``_getiter_`` checks items, which ours does not."""
    return _getiter_(it)


def unpack_sequence(it: Any, spec: Any, _getiter_: Callable[[Any], Any]) -> Any:
    """``_unpack_sequence_`` (``a, b = pair``): see ``iter_unpack_sequence``."""
    return it


def apply(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``_apply_``: calls with ``*args``/``**kwargs``."""
    return func(*args, **kwargs)


def _filtered_dir(*args: Any) -> list[str]:
    if not args:
        raise TypeError("dir() needs an object in the sandbox; use SHOW_VARS() to list variables")
    return [name for name in dir(args[0]) if _attr_refused(name) is None]


# Builtins handed to sandboxed code. Left out on purpose:
#   open, input, exec, eval, compile, breakpoint  - I/O and new code
#   globals, locals, vars                          - raw namespace access
#   type                                           - type(name, bases, dict) builds classes with dunders
#   memoryview, help, exit, quit                   - no use here, or interactive
# Unlike RestrictedPython's safe_builtins, sorted/tuple/zip/reversed/list/... are in:
# they only bypass _getiter_, and ours checks nothing per item.
_PLAIN_BUILTINS = (
    "None False True Ellipsis NotImplemented abs all any ascii bin bool bytearray bytes callable "
    "chr classmethod complex dict divmod enumerate filter float frozenset hash hex id int "
    "isinstance issubclass iter len list map max min next object oct ord pow property range "
    "repr reversed round set slice sorted staticmethod str sum super tuple zip format"
).split()

_EXCEPTIONS = [
    name
    for name, value in vars(builtins).items()
    if isinstance(value, type) and issubclass(value, BaseException) and not name.startswith("_")
]


def make_builtins(print_fn: Callable[..., None], import_fn: Callable[..., Any]) -> dict[str, Any]:
    """The ``__builtins__`` of sandboxed code."""
    table: dict[str, Any] = {name: getattr(builtins, name) for name in _PLAIN_BUILTINS}
    table.update({name: getattr(builtins, name) for name in _EXCEPTIONS})
    table.update(
        {
            "__build_class__": builtins.__build_class__,
            "__import__": import_fn,
            "print": print_fn,
            "getattr": guarded_getattr,
            "hasattr": guarded_hasattr,
            "setattr": guarded_setattr,
            "delattr": guarded_delattr,
            "dir": _filtered_dir,
        }
    )
    return table


def make_guards() -> dict[str, Any]:
    """The ``_x_`` helpers RestrictedPython's rewritten code calls; unreachable by name
    from sandboxed code because names starting with ``_`` do not compile."""
    return {
        "__metaclass__": type,
        "__name__": SANDBOX_MODULE_NAME,
        "_getattr_": guarded_getattr,
        "_getitem_": guarded_getitem,
        "_getiter_": guarded_iter,
        "_iter_unpack_sequence_": iter_unpack_sequence,
        "_unpack_sequence_": unpack_sequence,
        "_write_": guarded_write,
        "_apply_": apply,
    }


# Method names of the builtin containers, strings and regex objects that hot loops
# use. On every object the sandbox can reach these are plain methods, never a
# module, frame or code object, so a literal ``x.split`` may skip the run-time
# ``_getattr_`` call; any other name, and every dynamic getattr, still goes through it.
FAST_ATTRIBUTES = frozenset(
    """
    append extend insert pop remove clear copy count index sort reverse
    get items keys values setdefault update popitem
    add discard union intersection difference issubset issuperset
    split rsplit splitlines strip lstrip rstrip lower upper casefold title capitalize
    startswith endswith find rfind rindex replace join partition rpartition
    isdigit isalpha isalnum isspace isupper islower isnumeric isdecimal isascii
    zfill center ljust rjust expandtabs encode decode translate removeprefix removesuffix
    group groups groupdict start end span
    search match fullmatch finditer findall sub subn
    most_common elements appendleft popleft extendleft
    """.split()
)


class SandboxTransformer(RestrictingNodeTransformer):
    """RestrictedPython's policy with changes, each for speed or usability:

    - ``print`` is an ordinary builtin (a capped collector shared by all scopes),
      not RestrictedPython's per-function ``_print`` which loses output printed
      inside functions;
    - ``n += x`` on a plain name stays a native augmented assignment: it is
      exactly ``n = n + x``, which is allowed unguarded, and the
      ``_inplacevar_`` call it replaces costs a Python call per loop iteration
      (so no ``_inplacevar_`` guard exists: nothing is left for it to guard);
    - ``obj.name`` for a literal name in ``FAST_ATTRIBUTES`` is a native lookup;
    - ``x[k] = v`` and ``del x[k]`` are native: item assignment cannot rebind a
      module's or class's attributes, and the objects that support it are
      containers, which only affect the sandboxed code itself. ``_write_`` still
      guards attribute assignment (``obj.a = v``), which can.
    """

    def visit_Attribute(self, node: ast.Attribute) -> Any:
        attr = node.attr
        if isinstance(node.ctx, ast.Load) and attr in FAST_ATTRIBUTES:
            node.value = self.visit(node.value)
            return node
        reason = _attr_refused(attr)
        if reason is not None and not attr.startswith("_"):
            self.error(node, reason)
        return super().visit_Attribute(node)

    def visit_Subscript(self, node: ast.Subscript) -> Any:
        if isinstance(node.ctx, (ast.Store, ast.Del)):
            node.value = self.visit(node.value)
            node.slice = self.visit(node.slice)
            return node
        return super().visit_Subscript(node)

    def visit_Name(self, node: ast.Name) -> Any:
        if isinstance(node.ctx, ast.Load) and node.id in ("print", "printed"):
            self.used_names[node.id] = True
            return node
        return super().visit_Name(node)

    def visit_AugAssign(self, node: ast.AugAssign) -> Any:
        if isinstance(node.target, ast.Name):
            self.check_name(node, node.target.id)
            node.value = self.visit(node.value)
            return node
        return super().visit_AugAssign(node)


class CompileOutcome(NamedTuple):
    code: types.CodeType | None
    errors: list[str]


def compile_code(source: str, filename: str, max_chars: int) -> CompileOutcome:
    """Compile under the sandbox policy; refusals come back as ``Line N: ...`` data."""
    if len(source) > max_chars:
        return CompileOutcome(
            None,
            [f"Line 1: the code is {len(source):,} characters; the limit is {max_chars:,}. "
             "Send smaller pieces of code (data belongs in contexts, not in code)."],
        )
    if "\x00" in source:
        return CompileOutcome(None, ["Line 1: the code contains a NUL character"])
    try:
        result = compile_restricted_exec(source, filename=filename, policy=SandboxTransformer)
    except (MemoryError, RecursionError) as exc:
        return CompileOutcome(None, [f"Line 1: the code is too deeply nested to compile ({type(exc).__name__})"])
    except (ValueError, TypeError, SyntaxError) as exc:
        return CompileOutcome(None, [_clip(f"Line 1: {type(exc).__name__}: {exc}")])
    errors = [_clip(error) for error in result.errors[:_MAX_ERRORS]]
    if len(result.errors) > _MAX_ERRORS:
        errors.append(f"... and {len(result.errors) - _MAX_ERRORS:,} more refusals")
    return CompileOutcome(result.code, errors)


# RestrictedPython quotes the whole offending statement in a SyntaxError and
# reports every refused name: a large source must not flood the model's context.
_MAX_ERROR_CHARS = 2000
_MAX_ERRORS = 20


def _clip(error: str) -> str:
    return error if len(error) <= _MAX_ERROR_CHARS else error[:_MAX_ERROR_CHARS] + "..."


# (substring of an error message, hint for the model). First match wins.
_HINTS: tuple[tuple[str, str], ...] = (
    ('starts with "_"', "The sandbox refuses every name and attribute starting with '_' "
     "(RestrictedPython): rename it, e.g. `_x` -> `x_`, and do not reach for dunders."),
    ("Augmented assignment of object items", "`d[k] += 1` is refused on items and attributes: "
     "write `d[k] = d[k] + 1`, or use collections.Counter / defaultdict."),
    ("Augmented assignment of attributes", "`obj.a += 1` is refused: write `obj.a = obj.a + 1`."),
    ("AsyncFunctionDef", "async/await is not available: use llm_query_batched(prompts) to run "
     "sub-queries concurrently."),
    ("Await statements", "async/await is not available: use llm_query_batched(prompts)."),
    ("Match statements", "`match` statements are refused by the sandbox: use if/elif."),
    ("TryStar", "`except*` is refused by the sandbox: use a plain `except`."),
    ("is a reserved name", "That name is reserved by the sandbox; choose another one."),
    ("metaclass", "Metaclasses are refused in the sandbox."),
    ("format strings can reach", "Use f-strings (f'{x:>10}') or '%s' % x instead of str.format."),
    ("is not available in the sandbox", "Only allowlisted pure modules can be imported; the list is "
     "in the error. Contexts are already loaded as variables: `context` and `contexts[name]`."),
    ("name 'context' is not defined", "No context is loaded yet: call the load_context tool first "
     "(text=, path=, url= or glob=); then `context` holds the text and `contexts[name]` each one."),
    ("name 'open' is not defined", "There is no file access in the sandbox; loaded data is in "
     "`context` / `contexts[name]`."),
    ("name 'eval' is not defined", "eval/exec/compile are not available in the sandbox."),
    ("name 'exec' is not defined", "eval/exec/compile are not available in the sandbox."),
    ("name 'type' is not defined", "type() is not available; use isinstance(x, str) and friends."),
    ("name 'globals' is not defined", "Use SHOW_VARS() to list your variables."),
    ("name 'vars' is not defined", "Use SHOW_VARS() to list your variables."),
    ("MemoryError", "The worker's memory limit was hit: process the data in chunks, keep fewer "
     "copies of large strings, or raise the limit with --memory-mb."),
    ("RecursionError", "Recursion too deep: use a loop or an explicit stack."),
)


def hint_for(message: str) -> str | None:
    """A one-line fix for a refusal or common sandbox error, for the model."""
    for needle, hint in _HINTS:
        if needle in message:
            return hint
    return None
