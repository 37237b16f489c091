"""The sandbox policy without a worker: compile refusals, hints, guards, imports, namespaces."""

from __future__ import annotations

import builtins
import collections
import dis
import json
import os
import types
from pathlib import Path
from typing import Any

import pytest

from sandbox.modules import ALLOWED_MODULES, build_namespaces, make_import
from sandbox.policy import (
    FAST_ATTRIBUTES,
    SANDBOX_MODULE_NAME,
    ModuleNamespace,
    compile_code,
    guarded_getattr,
    guarded_getitem,
    guarded_hasattr,
    guarded_setattr,
    guarded_write,
    hint_for,
    make_builtins,
    make_guards,
)

_BLOCKED_TYPES = (types.ModuleType, types.FrameType, types.CodeType, types.TracebackType)


def _errors(source: str, max_chars: int = 1_000_000) -> list[str]:
    outcome = compile_code(source, "<cell 1>", max_chars)
    assert outcome.code is None or outcome.errors, f"expected a refusal for {source!r}"
    return outcome.errors


def _compiles(source: str) -> types.CodeType:
    outcome = compile_code(source, "<cell 1>", 1_000_000)
    assert outcome.errors == [], outcome.errors
    assert outcome.code is not None
    return outcome.code


@pytest.fixture(scope="module")
def namespaces() -> dict[str, ModuleNamespace]:
    return build_namespaces(print)


def _sandbox_globals(namespaces: dict[str, ModuleNamespace]) -> dict[str, Any]:
    return {"__builtins__": make_builtins(print, make_import(namespaces)), **make_guards()}


def _run(source: str, namespaces: dict[str, ModuleNamespace]) -> dict[str, Any]:
    """Execute policy-compiled code in-process (only for code that is itself harmless)."""
    scope = _sandbox_globals(namespaces)
    exec(_compiles(source), scope)
    return scope


# -- compile-time refusals --------------------------------------------------------------------

REFUSALS = [
    ("_x = 1", 'Line 1: "_x" is an invalid variable name because it starts with "_"'),
    ("a = 1\ny = ().__class__", 'Line 2: "__class__" is an invalid attribute name because it starts with "_".'),
    ("y = x._secret", 'Line 1: "_secret" is an invalid attribute name because it starts with "_".'),
    ("y = '{0}'.format(1)", "Line 1: attribute 'format' is refused: format strings can reach object internals"),
    ("y = '{a}'.format_map({})", "Line 1: attribute 'format_map' is refused: format strings can reach object internals"),
    ("y = g.gi_frame", "Line 1: attribute 'gi_frame' is refused: it leads to interpreter frames or code objects"),
    ("y = f.f_globals", "Line 1: attribute 'f_globals' is refused: it leads to interpreter frames or code objects"),
    ("y = t.tb_frame", "Line 1: attribute 'tb_frame' is refused: it leads to interpreter frames or code objects"),
    ("y = c.co_code", "Line 1: attribute 'co_code' is refused: it leads to interpreter frames or code objects"),
    ("y = int.mro", "Line 1: attribute 'mro' is refused in the sandbox"),
    ("d = {}\n\nd['k'] += 1", "Line 3: Augmented assignment of object items and slices is not allowed."),
    ("o.a += 1", "Line 1: Augmented assignment of attributes is not allowed."),
    ("async def f():\n    pass", "Line 1: AsyncFunctionDef statements are not allowed."),
    ("match x:\n    case 1:\n        pass", "Line 1: Match statements are not allowed."),
    ("try:\n    pass\nexcept* ValueError:\n    pass", "Line 1: TryStar statements are not allowed."),
    ("class A(metaclass=M):\n    pass", 'Line 1: The keyword argument "metaclass" is not allowed.'),
    ("class A:\n    def __init_subclass__(cls):\n        pass",
     'Line 2: "__init_subclass__" is an invalid variable name because it starts with "_"'),
    ("class A:\n    def __getattr__(self, name):\n        return 1",
     'Line 2: "__getattr__" is an invalid variable name because it starts with "_"'),
    ("def f(_getattr_, /):\n    return _getattr_", 'Line 1: "_getattr_" is an invalid variable name'),
    ("f = lambda _x: _x", 'Line 1: "_x" is an invalid variable name'),
    ("(_y := 1)", 'Line 1: "_y" is an invalid variable name'),
    ("from re import *", 'Line 1: "*" imports are not allowed.'),
    ("from json import _default_encoder", 'Line 1: "_default_encoder" is an invalid variable name'),
    ("x = __builtins__", 'Line 1: "__builtins__" is an invalid variable name'),
    ("x = __import__('os')", 'Line 1: "__import__" is an invalid variable name'),
    ("x = f'{().__class__}'", 'Line 1: "__class__" is an invalid attribute name'),
    ("eval('1')", "Line 1: Eval calls are not allowed."),
    ("exec('1')", "Line 1: Exec calls are not allowed."),
    ("x = (", "Line 1: SyntaxError: '(' was never closed"),
    ("a = 1\nb = (1,\nc = 2 2", "SyntaxError"),
]


@pytest.mark.parametrize(("source", "expected"), REFUSALS, ids=[s for s, _ in REFUSALS])
def test_compile_refusal_keeps_line_number_and_text(source: str, expected: str) -> None:
    """A refused construct comes back as data naming its line and the reason."""
    errors = _errors(source)
    assert any(error.startswith(expected) or expected in error for error in errors), errors
    assert all(error.startswith("Line ") for error in errors), errors


def test_code_over_the_size_limit_is_refused_before_parsing() -> None:
    """Source longer than max_chars is refused with both sizes in the message."""
    (error,) = _errors("x = 1\n" * 100, max_chars=100)
    assert error.startswith("Line 1: the code is 600 characters; the limit is 100.")


def test_nul_character_is_refused() -> None:
    """A NUL byte in the source is refused instead of crashing the compiler."""
    assert _errors("x = 1\x00") == ["Line 1: the code contains a NUL character"]


def test_deeply_nested_source_is_refused_with_a_short_message() -> None:
    """100,000 open parentheses fail to compile with an error of bounded length."""
    errors = _errors("x = " + "(" * 100_000)
    assert errors[0].startswith("Line 1: ")
    assert sum(len(e) for e in errors) < 5_000


def test_many_refusals_are_summarised() -> None:
    """Thousands of refused names give a bounded list ending with a count of the rest."""
    errors = _errors("_a = 1\n" * 5000)
    assert len(errors) <= 21
    assert errors[-1] == "... and 4,980 more refusals"


def test_single_underscore_loop_variable_compiles() -> None:
    """`for _ in ...` is ordinary code and compiles."""
    _compiles("for _ in range(3):\n    pass")


# -- hints -------------------------------------------------------------------------------------

HINTS = [
    ('"_x" is an invalid variable name because it starts with "_"', "starting with '_'"),
    ("Augmented assignment of object items and slices is not allowed.", "d[k] = d[k] + 1"),
    ("Augmented assignment of attributes is not allowed.", "obj.a = obj.a + 1"),
    ("AsyncFunctionDef statements are not allowed.", "llm_query_batched"),
    ("Match statements are not allowed.", "if/elif"),
    ("TryStar statements are not allowed.", "plain `except`"),
    ('The keyword argument "metaclass" is not allowed.', "Metaclasses"),
    ("attribute 'format' is refused: format strings can reach object internals", "f-strings"),
    ("module 'os' is not available in the sandbox; available: json", "allowlisted"),
    ("NameError: name 'open' is not defined", "no file access"),
    ("NameError: name 'eval' is not defined", "eval/exec/compile"),
    ("NameError: name 'type' is not defined", "isinstance"),
    ("NameError: name 'globals' is not defined", "SHOW_VARS()"),
    ("NameError: name 'vars' is not defined", "SHOW_VARS()"),
    ("Line 1: MemoryError", "memory limit"),
    ("Line 4: RecursionError: maximum recursion depth exceeded", "explicit stack"),
]


@pytest.mark.parametrize(("message", "fragment"), HINTS, ids=[f for _, f in HINTS])
def test_hint_for_names_the_fix(message: str, fragment: str) -> None:
    """Each family of refusal or common error gets a one-line fix that mentions the way out."""
    hint = hint_for(message)
    assert hint is not None and fragment in hint


def test_hint_for_unrelated_error_is_none() -> None:
    """An ordinary error such as ZeroDivisionError gets no hint."""
    assert hint_for("Line 1: ZeroDivisionError: division by zero") is None


# -- guarded getattr -----------------------------------------------------------------------------


def _gen() -> Any:
    yield 1


def _traceback() -> types.TracebackType:
    try:
        raise ValueError("x")
    except ValueError as exc:
        assert exc.__traceback__ is not None
        return exc.__traceback__


REFUSED_ATTRIBUTES = [
    (object(), "_x"),
    (object(), "__class__"),
    ("", "format"),
    ("", "format_map"),
    (str, "format"),
    (collections.UserString("x"), "format"),
    (_gen(), "gi_frame"),
    (_gen(), "gi_code"),
    (types.SimpleNamespace(f_globals=1), "f_globals"),
    (_traceback(), "tb_frame"),
    (_traceback, "co_code"),
    (int, "mro"),
    (ValueError(), "__traceback__"),
]


@pytest.mark.parametrize(("obj", "name"), REFUSED_ATTRIBUTES, ids=[n for _, n in REFUSED_ATTRIBUTES])
def test_guarded_getattr_raises_for_refused_names(obj: Any, name: str) -> None:
    """A refused attribute name raises AttributeError instead of returning anything."""
    with pytest.raises(AttributeError, match="is refused"):
        guarded_getattr(obj, name)


@pytest.mark.parametrize(("obj", "name"), REFUSED_ATTRIBUTES, ids=[n for _, n in REFUSED_ATTRIBUTES])
def test_guarded_getattr_raises_for_refused_names_even_with_a_default(obj: Any, name: str) -> None:
    """getattr(x, refused, default) raises: the default is never a silent None-like answer."""
    with pytest.raises(AttributeError, match="is refused"):
        guarded_getattr(obj, name, None)


@pytest.mark.parametrize(
    "value",
    [os, types.ModuleType("fake"), _traceback().tb_frame, _traceback.__code__, _traceback()],
    ids=["module", "new-module", "frame", "code", "traceback"],
)
def test_guarded_getattr_refuses_module_frame_code_and_traceback_values(value: Any) -> None:
    """An innocent name whose value is a module, frame, code object or traceback is refused."""
    holder = types.SimpleNamespace(innocent=value)
    with pytest.raises(AttributeError, match="is refused: it holds a"):
        guarded_getattr(holder, "innocent")
    with pytest.raises(AttributeError, match="is refused: it holds a"):
        guarded_getattr(holder, "innocent", None)


def test_guarded_getattr_refuses_non_string_names() -> None:
    """An attribute name that is not exactly a str (a str subclass included) is a TypeError."""

    class Sneaky(str):
        pass

    with pytest.raises(TypeError):
        guarded_getattr(object(), Sneaky("__class__"))


def test_guarded_getattr_returns_ordinary_attributes_and_defaults() -> None:
    """Plain attributes and missing-with-default behave like getattr."""
    assert guarded_getattr("a,b", "split")(",") == ["a", "b"]
    assert guarded_getattr(object(), "missing", 7) == 7


def test_guarded_hasattr_is_false_for_refused_names() -> None:
    """hasattr on a refused name answers False rather than revealing it."""
    assert guarded_hasattr(object(), "__class__") is False
    assert guarded_hasattr(types.SimpleNamespace(m=os), "m") is False
    assert guarded_hasattr("", "upper") is True


def test_guarded_getitem_refuses_module_values() -> None:
    """Indexing a container that holds a module refuses the item."""
    with pytest.raises(TypeError, match="item refused"):
        guarded_getitem({"os": os}, "os")
    assert guarded_getitem([1, 2], 1) == 2


# -- guarded write ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "target",
    [
        pytest.param(lambda ns: ns["json"], id="module-namespace"),
        pytest.param(lambda ns: json.JSONEncoder, id="library-class"),
        pytest.param(lambda ns: collections.Counter, id="library-class-python"),
        pytest.param(lambda ns: json.dumps, id="library-function"),
        pytest.param(lambda ns: len, id="builtin-function"),
        pytest.param(lambda ns: "".join, id="builtin-method"),
        pytest.param(lambda ns: json.JSONEncoder().encode, id="bound-method"),
        pytest.param(lambda ns: os, id="module"),
    ],
)
def test_guarded_write_refuses_objects_the_code_did_not_make(target: Any, namespaces: Any) -> None:
    """Writes to namespaces, library classes and library functions raise TypeError."""
    with pytest.raises(TypeError, match="read-only"):
        guarded_write(target(namespaces))


def test_guarded_setattr_refuses_library_class() -> None:
    """setattr(json.JSONEncoder, 'default', f) is refused and leaves the class unchanged."""
    before = json.JSONEncoder.default
    with pytest.raises(TypeError, match="read-only"):
        guarded_setattr(json.JSONEncoder, "default", lambda self, o: "pwned")
    assert json.JSONEncoder.default is before


def test_guarded_write_allows_containers_and_the_codes_own_objects(namespaces: Any) -> None:
    """Lists, dicts, sets, bytearrays, sandbox classes, their instances and functions are writable."""
    scope = _run("class Mine:\n    pass\ndef fn():\n    return 1\n", namespaces)
    mine, fn = scope["Mine"], scope["fn"]
    assert mine.__module__ == SANDBOX_MODULE_NAME
    for obj in ([], {}, set(), bytearray(), mine, mine(), fn):
        assert guarded_write(obj) is obj


def test_sandbox_code_can_set_attributes_on_its_own_objects(namespaces: Any) -> None:
    """`obj.a = 1` on an instance of a sandbox class works through _write_."""
    scope = _run("class Mine:\n    pass\nm = Mine()\nm.a = 1\nMine.b = 2\n", namespaces)
    assert scope["m"].a == 1 and scope["Mine"].b == 2


# -- imports -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["os", "sys", "subprocess", "builtins", "importlib", "os.path", "json.decoder", "re._parser",
     "collections.abc", "ctypes", "socket", "pathlib", "signal", "resource", "sandbox", "sandbox.worker"],
)
def test_import_refuses_modules_outside_the_allowlist(name: str, namespaces: Any) -> None:
    """Importing anything not on the allowlist, submodules included, raises ImportError."""
    sandbox_import = make_import(namespaces)
    with pytest.raises(ImportError, match="is not available in the sandbox"):
        sandbox_import(name)


def test_import_refuses_relative_imports(namespaces: Any) -> None:
    """`from . import x` (level 1) raises ImportError."""
    with pytest.raises(ImportError, match="relative imports"):
        make_import(namespaces)("json", None, None, ("x",), 1)


def test_import_returns_the_namespace_never_the_module(namespaces: Any) -> None:
    """An allowed import yields the ModuleNamespace, not the real module."""
    result = make_import(namespaces)("json")
    assert type(result) is ModuleNamespace and result is namespaces["json"]


@pytest.mark.parametrize("name", ALLOWED_MODULES)
def test_namespace_has_no_module_valued_members(name: str, namespaces: Any) -> None:
    """No allowed module exposes a member that is a module (so `re.enum.sys` cannot exist)."""
    members = object.__getattribute__(namespaces[name], "_members")
    assert members, f"{name} exposes nothing"
    for member, value in members.items():
        assert not isinstance(value, types.ModuleType), f"{name}.{member} is a module"
        assert not member.startswith("_"), f"{name}.{member} is private"


@pytest.mark.parametrize(
    ("module", "member"),
    [
        ("operator", "attrgetter"),
        ("operator", "methodcaller"),
        ("string", "Formatter"),
        ("io", "open"),
        ("io", "FileIO"),
        ("io", "TextIOWrapper"),
        ("hashlib", "file_digest"),
        ("time", "tzset"),
        ("pprint", "PrettyPrinter"),
        ("re", "enum"),
        ("re", "sys"),
        ("json", "codecs"),
        ("json", "decoder"),
        ("collections", "abc"),
        ("random", "os"),
        ("base64", "binascii"),
        ("statistics", "sys"),
    ],
)
def test_namespace_lacks_denied_and_module_members(module: str, member: str, namespaces: Any) -> None:
    """Members listed as dangerous, and submodules, are absent from the namespace."""
    with pytest.raises(AttributeError, match="in the sandbox has no attribute"):
        getattr(namespaces[module], member)


# Regression: update_wrapper(holder, gen, assigned=('gi_frame',)) called the real getattr
# and setattr with a caller-chosen name, so a property setter on the holder received a
# frame; f_back/f_globals the same way led to the worker module's os. wraps() is
# update_wrapper in a partial, and can also retarget a library class's __module__.
@pytest.mark.parametrize("member", ["update_wrapper", "wraps"])
def test_update_wrapper_frame_escape_is_closed(member: str, namespaces: Any) -> None:
    """functools.update_wrapper and functools.wraps are not in the sandbox."""
    with pytest.raises(AttributeError):
        getattr(namespaces["functools"], member)


# Regression: singledispatch(f).register(g) resolves g's string annotations with
# typing.get_type_hints, i.e. eval() of unrestricted source.
@pytest.mark.parametrize("member", ["singledispatch", "singledispatchmethod"])
def test_singledispatch_annotation_eval_escape_is_closed(member: str, namespaces: Any) -> None:
    """functools.singledispatch and singledispatchmethod are not in the sandbox."""
    with pytest.raises(AttributeError):
        getattr(namespaces["functools"], member)


def test_sandbox_package_does_not_import_mcp() -> None:
    """Importing the sandbox package (host, worker, policy) pulls in no mcp module."""
    import subprocess
    import sys

    code = "import sys, sandbox, sandbox.worker; print(any(m == 'mcp' or m.startswith('mcp.') for m in sys.modules))"
    root = str(Path(__file__).resolve().parents[2])
    out = subprocess.run([sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {root!r}); {code}"],
                         capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("member", ["clock_settime", "clock_settime_ns"])
def test_time_cannot_set_the_system_clock(member: str, namespaces: Any) -> None:
    """time.clock_settime is absent: a worker running as root could change the host's clock."""
    with pytest.raises(AttributeError):
        getattr(namespaces["time"], member)


def test_namespace_is_read_only_and_not_iterable(namespaces: Any) -> None:
    """Namespaces refuse setattr/delattr and give no item iteration."""
    ns = namespaces["json"]
    with pytest.raises(TypeError):
        ns.loads = None
    with pytest.raises(TypeError):
        del ns.loads
    with pytest.raises(TypeError):
        make_guards()["_getiter_"](ns)


def _reachable(roots: dict[str, Any], depth: int) -> list[tuple[str, str]]:
    """Objects reachable by allowed attribute names and container items; the blocked ones."""
    from sandbox.policy import _attr_refused

    seen: set[int] = set()
    found: list[tuple[str, str]] = []
    frontier = list(roots.items())
    for _level in range(depth + 1):
        following: list[tuple[str, Any]] = []
        for path, obj in frontier:
            if id(obj) in seen:
                continue
            seen.add(id(obj))
            if isinstance(obj, _BLOCKED_TYPES):
                found.append((path, type(obj).__name__))
                continue
            if isinstance(obj, (str, bytes, int, float, complex, bool)):
                continue
            if isinstance(obj, dict):
                following.extend((f"{path}[{k!r}]", v) for k, v in list(obj.items())[:100])
            elif isinstance(obj, (list, tuple, set, frozenset)):
                following.extend((f"{path}[{i}]", v) for i, v in enumerate(list(obj)[:100]))
            try:
                names = dir(obj)
            except Exception:  # noqa: BLE001
                continue
            for name in names:
                if _attr_refused(name) is not None:
                    continue
                try:
                    following.append((f"{path}.{name}", getattr(obj, name)))
                except Exception:  # noqa: BLE001
                    continue
        frontier = following
    return found


def test_no_module_or_frame_is_reachable_through_allowed_names(namespaces: Any) -> None:
    """Walking namespaces and builtins by allowed attribute names and items never meets a module."""
    roots: dict[str, Any] = dict(namespaces)
    roots.update(
        (f"builtins.{k}", v) for k, v in make_builtins(print, make_import(namespaces)).items() if not k.startswith("_")
    )
    assert _reachable(roots, depth=3) == []


# -- builtins --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["open", "input", "exec", "eval", "compile", "breakpoint", "globals", "locals", "vars", "type",
     "memoryview", "help", "exit", "quit"],
)
def test_builtins_leave_out_io_code_and_namespace_access(name: str, namespaces: Any) -> None:
    """Builtins that do I/O, make code or expose namespaces are absent."""
    assert name not in make_builtins(print, make_import(namespaces))


def test_builtins_getattr_family_is_guarded(namespaces: Any) -> None:
    """getattr/hasattr/setattr in the sandbox are the guarded versions, not the real ones."""
    table = make_builtins(print, make_import(namespaces))
    assert table["getattr"] is guarded_getattr
    assert table["getattr"] is not builtins.getattr
    assert table["setattr"] is not builtins.setattr
    with pytest.raises(TypeError):
        table["dir"]()


# -- fast attributes ---------------------------------------------------------------------------


def _names(code: types.CodeType) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _names(const)
    return names


@pytest.mark.parametrize("attr", sorted(FAST_ATTRIBUTES))
def test_fast_attribute_compiles_to_native_access(attr: str) -> None:
    """A literal `x.<fast name>` load becomes a native attribute lookup, no _getattr_ call."""
    code = _compiles(f"y = x.{attr}")
    assert "_getattr_" not in _names(code)
    ops = {(i.opname, i.argval) for i in dis.get_instructions(code)}
    assert ("LOAD_ATTR", attr) in ops or ("LOAD_METHOD", attr) in ops


@pytest.mark.parametrize("attr", ["loads", "real", "obj", "args", "fget", "send"])
def test_other_attribute_names_go_through_getattr(attr: str) -> None:
    """Any attribute outside FAST_ATTRIBUTES is compiled to a _getattr_ call."""
    code = _compiles(f"y = x.{attr}")
    assert "_getattr_" in _names(code)
    assert attr not in code.co_names


def test_fast_attribute_store_still_goes_through_write() -> None:
    """Assigning to a fast-listed name (`x.append = f`) still calls _write_."""
    assert "_write_" in _names(_compiles("x.append = 1"))


@pytest.mark.parametrize("attr", sorted(FAST_ATTRIBUTES))
def test_fast_attributes_never_reach_blocked_values_on_namespaces(attr: str, namespaces: Any) -> None:
    """On every namespace member (and the namespace itself) a fast name never yields a module or frame."""
    for ns in namespaces.values():
        candidates = [ns, *object.__getattribute__(ns, "_members").values()]
        for obj in candidates:
            try:
                value = getattr(obj, attr)
            except Exception:  # noqa: BLE001
                continue
            assert not isinstance(value, _BLOCKED_TYPES), (obj, attr)
