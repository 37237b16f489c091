"""Hostile code against a real worker: every payload must fail (or find nothing) within its
bound, write no file, read no secret, and leave the same session usable.

Each payload runs in a fresh session that already has a context loaded and a variable
(``keep``) set. Placeholders in the code: ``@SECRET_FILE@`` (a file whose content must
never come back) and ``@CANARY@`` (a folder that must stay empty).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import NamedTuple

import pytest

from sandbox import ExecResult, Limits, SandboxSession

EXEC_TIMEOUT = 2.0
KILL_GRACE = 1.0
# Wall-clock bound for any payload: the host's kill plus restart and scheduling slack.
BOUND = EXEC_TIMEOUT + KILL_GRACE + 3.0
MAX_OUTPUT = 10_000
MAX_CODE = 200_000
LIMITS = Limits(
    exec_timeout=EXEC_TIMEOUT,
    kill_grace=KILL_GRACE,
    memory_mb=None,
    memory_margin_mb=256,
    max_output_chars=MAX_OUTPUT,
    max_code_chars=MAX_CODE,
    request_timeout=10.0,
)
CONTEXT = "0123456789" * 100 + "tail"
ENV_SECRET_NAME = "RLM_TEST_SECRET"
ENV_SECRET = "s3cr3t"


class Payload(NamedTuple):
    code: str
    status: str = "error"
    """Expected status: "error", or "ok" for payloads that only look and must find nothing."""
    expect: tuple[str, ...] = ()
    """At least one of these appears in the error (status error) or stdout (status ok)."""
    killed: bool | None = False
    """True: must end through the host's kill (restarted, `keep` reported lost); None: either way."""
    absent: tuple[str, ...] = ()
    """Strings that must not appear anywhere in the result."""


REFUSED_NAME = ("is an invalid variable name because it starts with",)
REFUSED_ATTR = ("is an invalid attribute name because it starts with", "is refused")
NOT_AVAILABLE = ("is not available in the sandbox",)
NO_MEMBER = ("in the sandbox has no attribute",)
NOT_DEFINED = ("is not defined",)
READ_ONLY = ("read-only",)
MEMORY = ("MemoryError",)
TIMEOUT = ("TimeoutError",)

# Recreates the escape found while writing this suite: a property setter named like a
# frame attribute receives whatever functools.update_wrapper copies into it, and a
# running generator's frame leads to the worker module's globals (os, sys, ...).
_UPDATE_WRAPPER_ESCAPE = """
import functools
box = []
def put(self, v):
    box.append(v)
class H:
    gi_frame = property(None, put)
    f_back = property(None, put)
    f_globals = property(None, put)
def grab(obj, name):
    box.clear()
    functools.update_wrapper(H(), obj, assigned=(name,), updated=())
    for v in box:
        return v
def gen():
    fr = grab(g, 'gi_frame')
    yield grab(grab(grab(fr, 'f_back'), 'f_back'), 'f_globals')
g = gen()
for glb in g:
    break
for k, v in glb.items():
    if k == 'os':
        v.mkdir('@CANARY@/pwned')
        fd = v.open('@SECRET_FILE@', v.O_RDONLY)
        print(v.read(fd, 200), v.environ)
"""

# The second escape: singledispatch's register() resolves string annotations with
# typing.get_type_hints, i.e. eval() of unrestricted code.
_SINGLEDISPATCH_ESCAPE = """
import functools
def base(x):
    return 0
sd = functools.singledispatch(base)
def f(x: "[c for c in ().__class__.__base__.__subclasses__() if c.__name__ == '_wrap_close'][0].__init__.__globals__['mkdir']('@CANARY@/pwned')"):
    return 1
sd.register(f)
"""

_REPR_SPINS_AFTER_EXECUTION = """
import collections
def spin(self):
    while True:
        pass
class U(collections.UserString):
    data = property(spin, lambda self, v: None)
u = U('x')
"""

PAYLOADS: dict[str, Payload] = {
    # -- escapes through modules ------------------------------------------------------------
    "re_enum_sys": Payload("import re\nx = re.enum.sys", expect=NO_MEMBER),
    "re_private_compiler": Payload("import re\nx = re._compiler", expect=REFUSED_ATTR),
    "json_codecs_builtins_open": Payload("import json\nf = json.codecs.builtins.open", expect=NO_MEMBER),
    "json_decoder_submodule": Payload("import json\nx = json.decoder.scanstring", expect=NO_MEMBER),
    "import_json_decoder": Payload("import json.decoder", expect=NOT_AVAILABLE),
    "from_json_import_decoder": Payload("from json import decoder", expect=("cannot import name",)),
    "collections_abc": Payload("import collections\nx = collections.abc.Mapping", expect=NO_MEMBER),
    "string_formatter_get_field": Payload(
        "import string\nprint(string.Formatter().get_field('0.__class__', [1], {}))", expect=NO_MEMBER),
    "operator_attrgetter": Payload("import operator\ng = operator.attrgetter('__class__')", expect=NO_MEMBER),
    "operator_methodcaller": Payload("import operator\nm = operator.methodcaller('format')", expect=NO_MEMBER),
    "random_private_os": Payload("import random\nx = random._os", expect=REFUSED_ATTR),
    "getattr_random_os": Payload("import random\nx = getattr(random, '_os')", expect=REFUSED_ATTR),
    "getattr_random_os_concatenated": Payload("import random\nx = getattr(random, '_' + 'os', None)",
                                              expect=REFUSED_ATTR),
    "getattr_module_dict": Payload("import json\nx = getattr(json, '__dict__')", expect=REFUSED_ATTR),
    "from_re_import_sys": Payload("from re import sys", expect=("cannot import name",)),
    "io_open_write": Payload("import io\nio.open('@CANARY@/x', 'w').write('x')", expect=NO_MEMBER),
    "io_fileio_read": Payload("import io\nprint(io.FileIO('@SECRET_FILE@').read())", expect=NO_MEMBER),
    "hashlib_file_digest": Payload("import hashlib\nhashlib.file_digest(None, 'sha256')", expect=NO_MEMBER),
    "pprint_to_stream": Payload("import pprint, io\npprint.pprint({'a': 1}, stream=io.StringIO())",
                                expect=("stream",)),
    "csv_writer_to_file": Payload("import csv\nw = csv.writer(open('@CANARY@/x.csv', 'w'))", expect=NOT_DEFINED),
    # CLOCK_MONOTONIC cannot be set (EINVAL), so even a regression changes no clock.
    "time_set_system_clock": Payload("import time\ntime.clock_settime(time.CLOCK_MONOTONIC, 0)", expect=NO_MEMBER),
    "functools_update_wrapper_frame_escape": Payload(_UPDATE_WRAPPER_ESCAPE, expect=NO_MEMBER),
    "functools_singledispatch_annotation_eval": Payload(_SINGLEDISPATCH_ESCAPE, expect=NO_MEMBER),
    "functools_wraps_retargets_library_class": Payload(
        "import functools, json\ndef f():\n    pass\nfunctools.wraps(f)(json.JSONEncoder)\n"
        "json.JSONEncoder.default = f", expect=NO_MEMBER),
    "from_functools_import_update_wrapper": Payload("from functools import update_wrapper",
                                                    expect=("cannot import name",)),
    # -- dunders and introspection -------------------------------------------------------------
    "subclasses_walk": Payload("x = ().__class__.__bases__[0].__subclasses__()", expect=REFUSED_ATTR),
    "getattr_class": Payload("c = getattr((), '__class__')", expect=REFUSED_ATTR),
    "getattr_class_with_default": Payload("c = getattr((), '__class__', None)\nprint(c)", expect=REFUSED_ATTR),
    "getattr_subclasses_concatenated": Payload("s = getattr(object, '__subcl' + 'asses__')()", expect=REFUSED_ATTR),
    "getattr_mro": Payload("m = getattr(int, 'mro')()", expect=REFUSED_ATTR),
    "vars_builtin": Payload("print(vars())", expect=NOT_DEFINED),
    "globals_builtin": Payload("print(globals())", expect=NOT_DEFINED),
    "locals_builtin": Payload("print(locals())", expect=NOT_DEFINED),
    "type_builds_class_with_dunders": Payload("T = type('T', (), {'__getattr__': lambda s, n: 1})",
                                              expect=NOT_DEFINED),
    "dir_without_argument": Payload("print(dir())", expect=("SHOW_VARS",)),
    "name_dunder": Payload("print(__name__)", expect=REFUSED_NAME),
    "guard_helper_by_name": Payload("g = _getattr_", expect=REFUSED_NAME),
    "hasattr_probes_find_nothing": Payload(
        "import json\nprint(hasattr((), '__class__'), hasattr(json, 'codecs'), hasattr(print, '__self__'))",
        status="ok", expect=("False False False",)),
    "dir_of_namespace_lists_only_members": Payload(
        "import json\nprint(repr(json), dir(json))", status="ok", expect=("<sandbox module 'json'>",),
        absent=("codecs", "decoder", "scanner", ".py")),
    "dir_of_llm_query_hides_internals": Payload(
        "print(dir(llm_query), dir(SubQueryError))", status="ok", absent=("__self__", "__func__", "__globals__")),
    # -- frames -------------------------------------------------------------------------------
    "cve_2023_37271_generator_frames": Payload(
        "def g():\n    yield 1\ngen = g()\nfr = gen.gi_frame.f_back.f_back.f_globals", expect=REFUSED_ATTR),
    "getattr_gi_frame": Payload("def g():\n    yield 1\nfr = getattr(g(), 'gi_frame')", expect=REFUSED_ATTR),
    "gi_frame_of_running_generator": Payload(
        "def g():\n    yield getattr(gen, 'gi' + '_frame')\ngen = g()\nprint(next(gen))", expect=REFUSED_ATTR),
    # The outermost iterable of an async generator expression is checked eagerly (no
    # __aiter__ exists in the sandbox), so only the frame lookup is left to refuse.
    "async_generator_frame": Payload("ag = (i async for i in [])\nfr = getattr(ag, 'ag_frame')",
                                     expect=REFUSED_ATTR + ("__aiter__",)),
    "async_generator_frame_by_name": Payload("ag = (i async for i in [])\nfr = ag.ag_frame", expect=REFUSED_ATTR),
    "traceback_attribute": Payload("try:\n    1 / 0\nexcept Exception as e:\n    tb = e.__traceback__",
                                   expect=REFUSED_ATTR),
    "getattr_traceback": Payload(
        "try:\n    1 / 0\nexcept Exception as e:\n    tb = getattr(e, '__traceback__')", expect=REFUSED_ATTR),
    "getattr_tb_frame": Payload(
        "try:\n    1 / 0\nexcept Exception as e:\n    fr = getattr(e.with_traceback(None), 'tb_frame', None)",
        expect=REFUSED_ATTR),
    "exception_context_chain": Payload(
        "try:\n    1 / 0\nexcept Exception as e:\n    c = e.__context__", expect=REFUSED_ATTR),
    "code_object_of_function": Payload("def f():\n    pass\nc = getattr(f, 'co_code', None) or f.__code__",
                                       expect=REFUSED_ATTR),
    # -- format strings -----------------------------------------------------------------------
    "str_format_class": Payload("print('{0.__class__}'.format(1))", expect=("is refused",)),
    "getattr_str_format": Payload("f = getattr('', 'format')\nprint(f('{0.__class__}', 1))", expect=REFUSED_ATTR),
    "getattr_str_format_map": Payload("f = getattr(str, 'format_map')", expect=REFUSED_ATTR),
    "format_map_globals": Payload("def f():\n    pass\nprint('{a.__globals__}'.format_map({'a': f}))",
                                  expect=("is refused",)),
    "format_builtin_with_field": Payload("print(format(1, '{0.__class__}'))", expect=("ValueError",),
                                         absent=("<class",)),
    "fstring_nested_format_spec": Payload("print(f\"{1:{'{0.__class__}'}}\")", expect=("ValueError",),
                                          absent=("<class",)),
    "fstring_dunder": Payload("print(f'{().__class__}')", expect=REFUSED_ATTR),
    "userstring_format": Payload("import collections\ncollections.UserString('{0.__class__}').format(1)",
                                 expect=("is refused",)),
    "cve_2023_41039_string_module_format": Payload(
        "import string\nprint(string.Formatter().vformat('{0.__globals__}', [string.capwords], {}))",
        expect=NO_MEMBER),
    # -- builtins -----------------------------------------------------------------------------
    "open_secret_file": Payload("print(open('@SECRET_FILE@').read())", expect=NOT_DEFINED),
    "open_write_canary": Payload("open('@CANARY@/pwned', 'w').write('x')", expect=NOT_DEFINED),
    "dunder_import_os": Payload("os = __import__('os')", expect=REFUSED_NAME),
    "eval_call": Payload("eval(\"__import__('os')\")", expect=("Eval calls are not allowed",)),
    "exec_call": Payload("exec('import os')", expect=("Exec calls are not allowed",)),
    "compile_builtin": Payload("c = compile('1', 'x', 'eval')", expect=NOT_DEFINED),
    "breakpoint_builtin": Payload("breakpoint()", expect=NOT_DEFINED + ("is a reserved name",)),
    "input_builtin": Payload("input()", expect=NOT_DEFINED),
    "exit_builtin": Payload("exit()", expect=NOT_DEFINED),
    "builtins_by_name": Payload("b = __builtins__", expect=REFUSED_NAME),
    "getattr_print_self": Payload("w = getattr(print, '__self__')", expect=REFUSED_ATTR),
    "getattr_llm_query_worker": Payload("w = getattr(llm_query, '__self__')", expect=REFUSED_ATTR),
    "raise_system_exit": Payload("raise SystemExit(0)", expect=("SystemExit",)),
    "raise_keyboard_interrupt": Payload("raise KeyboardInterrupt", expect=("KeyboardInterrupt",)),
    # -- import tricks ------------------------------------------------------------------------
    "import_os": Payload("import os", expect=NOT_AVAILABLE),
    "from_os_import_system": Payload("from os import system", expect=NOT_AVAILABLE),
    "import_os_path": Payload("import os.path", expect=NOT_AVAILABLE),
    "import_sys": Payload("import sys", expect=NOT_AVAILABLE),
    "import_subprocess": Payload("import subprocess", expect=NOT_AVAILABLE),
    "import_builtins": Payload("import builtins", expect=NOT_AVAILABLE + ("is a reserved name",)),
    "import_importlib": Payload("import importlib", expect=NOT_AVAILABLE),
    "import_sandbox_worker": Payload("import sandbox.worker", expect=NOT_AVAILABLE),
    "relative_import": Payload("from . import x", expect=("relative imports",)),
    "star_import": Payload("from json import *", expect=('"*" imports are not allowed',)),
    # -- AttributeError.obj ---------------------------------------------------------------------
    "attribute_error_obj_namespace": Payload(
        "import json\ntry:\n    json.nope\nexcept AttributeError as e:\n    m = e.obj\nprint(m.codecs)",
        expect=NO_MEMBER),
    "cve_2024_47532_string_obj": Payload(
        "import string\ntry:\n    string.nope\nexcept AttributeError as e:\n    f = e.obj.Formatter",
        expect=NO_MEMBER),
    "attribute_error_obj_is_only_what_code_had": Payload(
        "try:\n    (1).nope\nexcept AttributeError as e:\n    print(e.name, e.obj)", status="ok", expect=("nope 1",)),
    # -- syntax the policy refuses ------------------------------------------------------------
    "cve_2025_22153_try_star": Payload(
        "try:\n    raise ExceptionGroup('g', [ValueError()])\nexcept* ValueError as eg:\n    pass",
        expect=("TryStar statements are not allowed",)),
    "positional_only_guard_shadowing": Payload(
        "def f(_getattr_, /):\n    return ().__class__\nf(getattr)", expect=REFUSED_NAME),
    "match_statement": Payload("match 1:\n    case int():\n        pass", expect=("Match statements are not allowed",)),
    "async_def": Payload("async def f():\n    return 1", expect=("AsyncFunctionDef",)),
    "underscore_name": Payload("_secret = 1", expect=REFUSED_NAME),
    "metaclass_keyword": Payload("class A(metaclass=print):\n    pass", expect=('"metaclass" is not allowed',)),
    "init_subclass_def": Payload("class A:\n    def __init_subclass__(cls):\n        pass", expect=REFUSED_NAME),
    "getattr_hook_def": Payload("class A:\n    def __getattr__(self, n):\n        return 1", expect=REFUSED_NAME),
    "metaclass_from_instance_base": Payload("import json\nclass A(json.JSONEncoder()):\n    pass",
                                            expect=("TypeError",)),
    "augmented_item_assignment": Payload("d = {'k': 1}\nd['k'] += 1", expect=("Augmented assignment",)),
    "augmented_attribute_assignment": Payload("class A:\n    n = 1\nA.n += 1", expect=("Augmented assignment",)),
    # -- writes to library objects ------------------------------------------------------------
    "write_library_class_attribute": Payload("import json\njson.JSONEncoder.default = lambda s, o: 'x'",
                                             expect=READ_ONLY),
    "setattr_library_class": Payload("import json\nsetattr(json.JSONDecoder, 'decode', print)", expect=READ_ONLY),
    "write_library_function_attribute": Payload("import json\njson.dumps.flag = 1", expect=READ_ONLY),
    "delete_library_function_attribute": Payload("import json\ndel json.dumps.flag", expect=READ_ONLY),
    "write_namespace_member": Payload("import json\njson.loads = print", expect=READ_ONLY),
    "write_subclass_then_parent": Payload(
        "import json\nclass E(json.JSONEncoder):\n    pass\nE.default = lambda s, o: 'x'\n"
        "json.JSONEncoder.default = E.default", expect=READ_ONLY),
    "total_ordering_on_library_class": Payload("import functools, json\nfunctools.total_ordering(json.JSONEncoder)",
                                               expect=("ValueError",)),
    "setattr_underscore_on_own_object": Payload("class A:\n    pass\nsetattr(A(), '_hidden', 1)",
                                                expect=REFUSED_ATTR),
    "namedtuple_with_library_module_is_read_only": Payload(
        "import collections\nT = collections.namedtuple('T', 'a', module='json')\nT.extra = 1", expect=READ_ONLY),
    "namespace_as_base_class": Payload("import json\nclass X(json):\n    pass", expect=("TypeError",)),
    "super_class_attribute": Payload("class A:\n    pass\nc = getattr(super(A, A()), '__class__')",
                                     expect=REFUSED_ATTR),
    "cached_property_dunder_attrname_is_inert": Payload(
        "import functools\nclass A:\n    p = functools.cached_property(lambda self: 1)\n"
        "A.p.attrname = '__class__'\na = A()\nprint(a.p, isinstance(a, A))", status="ok", expect=("1 True",)),
    # deepcopy's memo holds the real __dict__ of every copied instance (a vars() in
    # disguise); for the library objects code can make, that is plain data.
    "deepcopy_memo_shows_no_internals": Payload(
        "import copy, json, io, string, difflib, textwrap\nmemo = {}\n"
        "copy.deepcopy([json.JSONEncoder(), io.StringIO('x'), string.Template('a'),\n"
        "               difflib.SequenceMatcher(None, 'ab', 'bc'), textwrap.TextWrapper()], memo)\n"
        "for v in memo.values():\n    print(repr(v)[:200])", expect=("memo) is refused",),
        absent=("<module", "<frame", "<code", "<built-in function open")),
    "strftime_format_spec_is_literal": Payload(
        "import datetime\nprint(format(datetime.date(2020, 1, 2), '%Y {0.__class__}'))", status="ok",
        expect=("2020 {0.__class__}",), absent=("<class",)),
    # -- reserved names -----------------------------------------------------------------------
    "rebind_llm_query_and_final_then_call": Payload(
        "llm_query = lambda p: 'fake'\nprint(llm_query('x'))\nFINAL = print\nFINAL('y')",
        status="ok", expect=("fake\ny",)),
    "rebind_and_delete_contexts": Payload("context = ''\ncontexts = {}\ndel llm_query", status="ok"),
    "show_vars_reveals_nothing": Payload("SHOW_VARS()", status="ok", expect=("keep: int 41",)),
    "environment_probes_find_nothing": Payload(
        "import time, json\nprint(time.tzname, getattr(json, 'environ', 'none'), contexts.keys())",
        status="ok", expect=("none",)),
    # -- denial of service --------------------------------------------------------------------
    "infinite_loop": Payload("while True:\n    pass", expect=TIMEOUT),
    "sleep_forever": Payload("import time\ntime.sleep(10**6)", expect=TIMEOUT),
    "timeout_caught_forever": Payload(
        "n = 0\nwhile True:\n    try:\n        while True:\n            n = n + 1\n"
        "    except BaseException:\n        pass", expect=("ExecTimeout",), killed=True),
    "finalizer_spins": Payload(
        "import io\nclass S(io.StringIO):\n    def close(self):\n        while True:\n            pass\n"
        "s = S()\ns = None\nprint('after')", status="ok", expect=("after",)),
    # The result's reprs run under a short timer of their own: stopped, not killed.
    "repr_spins_after_execution": Payload(_REPR_SPINS_AFTER_EXECUTION, status="ok"),
    # Code runs inside the worker's own bookkeeping through library subclasses whose
    # dunders call overridable properties; a raise there must not end the worker.
    "exception_whose_str_raises": Payload(
        "import collections\nclass U(collections.UserString):\n    pass\nu = U('x')\n"
        "U.data = property(lambda self: 1 / 0)\nraise ValueError(u)", expect=("could not be shown",)),
    "variable_whose_repr_raises_system_exit": Payload(
        "import collections\nclass U(collections.UserString):\n    pass\nu = U('x')\n"
        "def boom(self):\n    raise SystemExit(3)\nU.data = property(boom)", status="ok"),
    "reserved_names_rebound_to_raising_objects": Payload(
        "import collections\nclass U(collections.UserString):\n    pass\n"
        "def boom(self):\n    raise KeyboardInterrupt\nllm_query = U('x')\ncontexts = {'context': U('y')}\n"
        "U.data = property(boom)", status="ok"),
    "string_bomb": Payload("x = 'a' * 10**11", expect=MEMORY),
    "list_bomb": Payload("x = [0] * 10**10", expect=MEMORY),
    "tuple_bomb": Payload("x = (1,) * 10**10", expect=MEMORY),
    "bytearray_bomb": Payload("x = bytearray(10**11)", expect=MEMORY),
    "growing_list": Payload("x = []\nwhile True:\n    x.append('a' * 1000)", expect=MEMORY + TIMEOUT),
    "dict_comprehension_bomb": Payload("d = {i: i for i in range(10**9)}", expect=MEMORY + TIMEOUT),
    "range_into_list": Payload("x = list(range(10**18))", expect=MEMORY + ("OverflowError",)),
    "count_into_list": Payload("import itertools\nx = list(itertools.count())", expect=MEMORY),
    "sort_gigantic_list": Payload("x = sorted(range(10**9, 0, -1))", expect=MEMORY),
    "huge_output_in_chunks": Payload("for i in range(10_000):\n    print('a' * 10_000)", status="ok",
                                     expect=("[output truncated: ",)),
    "huge_single_print": Payload("print('a' * 10**7)", status="ok", expect=("[output truncated: ",)),
    "huge_exception_message": Payload("raise ValueError('x' * 10**7)", expect=("ValueError: xxx",)),
    "huge_variable_repr": Payload("big = list(range(10**6))\ns = 'y' * 10**7", status="ok"),
    "deep_recursion": Payload("def f(n):\n    return f(n + 1)\nf(0)", expect=("RecursionError",)),
    # _sre and long pow check for signals, so the alarm usually stops these; either the
    # alarm or the host's kill must end them within the bound.
    "catastrophic_regex": Payload("import re\nre.match('(a+)+$', 'a' * 40 + 'b')",
                                  expect=TIMEOUT + ("ExecTimeout",), killed=None),
    "huge_int_power": Payload("x = 10**10**8", expect=TIMEOUT + ("ExecTimeout",), killed=None),
    # A C loop that never checks for signals: only the host's kill of the process group ends it.
    "uninterruptible_c_loop": Payload("import hashlib\nhashlib.pbkdf2_hmac('sha256', b'p', b's', 2**31 - 1)",
                                      expect=("ExecTimeout",), killed=True),
    "huge_int_to_str": Payload("s = str(10**5000)", expect=("Exceeds the limit",)),
    "huge_str_to_int": Payload("n = int('1' * 100_000)", expect=("Exceeds the limit",)),
    "json_deeply_nested": Payload("import json\njson.loads('[' * 100_000 + ']' * 100_000)", expect=("RecursionError",)),
    "source_over_size_limit": Payload("x = 1\n" * 40_000, expect=("the limit is 200,000",)),
    "deeply_nested_parentheses": Payload("x = " + "(" * 100_000, expect=("SyntaxError",)),
    "deeply_nested_brackets": Payload("x = " + "[" * 50_000 + "]" * 50_000, expect=("SyntaxError",)),
    "deeply_nested_unary": Payload("x = " + "-" * 5_000 + "1", expect=("too deeply nested", "RecursionError")),
    "thousands_of_refusals": Payload("_a = 1\n" * 20_000, expect=("more refusals",)),
}


@pytest.fixture
def secret_file(tmp_path: Path) -> tuple[Path, str]:
    token = f"FILE-SECRET-{uuid.uuid4().hex}"
    path = tmp_path / "secret.txt"
    path.write_text(token)
    return path, token


@pytest.fixture
def canary(tmp_path: Path) -> Path:
    path = tmp_path / "canary"
    path.mkdir()
    return path


# -- issue 10: objects that lead back to the worker ---------------------------------------------------
# The helpers were bound methods of the worker: copy.deepcopy of one (bare, in a container, in a
# partial) rebuilt the worker and left it in the memo dict, where its execute() ran code with the
# real builtins. Every helper, every way of copying it, and every attribute that leads behind it.
_HELPERS = ("llm_query", "llm_query_batched", "rlm_query", "FINAL", "FINAL_VAR", "SHOW_VARS", "print")
IS_ITSELF = ("True",)
MEMO_REFUSED = ("memo) is refused",)

for _h in _HELPERS:
    PAYLOADS[f"{_h}_deepcopy_with_memo"] = Payload(
        f"import copy\nmemo = {{}}\ncopy.deepcopy([{_h}], memo)\nprint(list(memo.values()))", expect=MEMO_REFUSED)
    PAYLOADS[f"{_h}_deepcopy_in_partial_is_itself"] = Payload(
        f"import copy, functools\nprint(copy.deepcopy(functools.partial({_h}, 1)).func is {_h})",
        status="ok", expect=IS_ITSELF)
    PAYLOADS[f"{_h}_copies_in_containers_are_itself"] = Payload(
        f"import copy\nh = {_h}\nprint(copy.deepcopy({{'a': [h]}})['a'][0] is h and copy.copy([h])[0] is h "
        f"and copy.deepcopy((h, h))[1] is h)", status="ok", expect=IS_ITSELF)
    PAYLOADS[f"{_h}_reduce_ex"] = Payload(f"r = {_h}.__reduce_ex__(4)", expect=REFUSED_ATTR)
    PAYLOADS[f"{_h}_closure_by_getattr"] = Payload(f"c = getattr({_h}, '__clo' + 'sure__')", expect=REFUSED_ATTR)
    PAYLOADS[f"{_h}_globals_by_getattr"] = Payload(f"g = getattr({_h}, '__glo' + 'bals__')", expect=REFUSED_ATTR)

_FINALIZER_CLASS = """
import io
class S(io.StringIO):
    def close(self):
        @CALL@
"""

PAYLOADS.update({
    "module_namespaces_copy_as_themselves": Payload(
        "import copy, json, re\nprint(copy.copy(json) is json and copy.deepcopy([re])[0] is re)",
        status="ok", expect=IS_ITSELF),
    "subquery_error_copy_is_the_class": Payload(
        "import copy\nprint(copy.deepcopy(SubQueryError) is SubQueryError)", status="ok", expect=IS_ITSELF),
    "copied_exception_from_a_helper_has_no_internals": Payload(
        "import copy\ntry:\n    FINAL_VAR('nope')\nexcept NameError as e:\n    c = copy.deepcopy(e)\n"
        "print(c.args[0][:30], getattr(c, 'with_traceback'))", status="ok", expect=("FINAL_VAR: no variable",)),
    "exception_traceback_of_a_helper_error": Payload(
        "try:\n    FINAL_VAR('nope')\nexcept NameError as e:\n    tb = e.__traceback__", expect=REFUSED_ATTR),
    "exception_context_by_getattr": Payload(
        "try:\n    FINAL_VAR(1 / 0)\nexcept ZeroDivisionError as e:\n    c = getattr(e, '__con' + 'text__')",
        expect=REFUSED_ATTR),
    "subquery_error_subclasses": Payload("x = SubQueryError.__subclasses__()", expect=REFUSED_ATTR),
    "partial_of_helper_func_args": Payload(
        "import functools\np = functools.partial(llm_query, 'x')\nprint(p.func is llm_query, p.args)",
        status="ok", expect=("True ('x',)",)),
    "import_pickle": Payload("import pickle", expect=NOT_AVAILABLE),
    "import_copyreg": Payload("import copyreg", expect=NOT_AVAILABLE),
    "import_marshal": Payload("import marshal", expect=NOT_AVAILABLE),
    "import_gc": Payload("import gc", expect=NOT_AVAILABLE),
    "import_inspect": Payload("import inspect", expect=NOT_AVAILABLE),
    "import_weakref": Payload("import weakref", expect=NOT_AVAILABLE),
    "import_ctypes": Payload("import ctypes", expect=NOT_AVAILABLE),
    "import_types": Payload("import types", expect=NOT_AVAILABLE),
    # -- issue 10: code run out of turn (reprs for the result, finalizers between requests) --------------
    "llm_query_from_a_result_repr": Payload(
        "import collections\nclass U(collections.UserString):\n    pass\n"
        "def ask(self):\n    return llm_query('x')\nu = U('x')\nU.data = property(ask)", status="ok"),
    "final_from_a_result_repr": Payload(
        "import collections\nclass U(collections.UserString):\n    pass\n"
        "def fin(self):\n    FINAL('late')\n    return 'x'\nu = U('x')\nU.data = property(fin)", status="ok",
        absent=("late",)),
    "finalizer_calls_llm_query_in_turn": Payload(
        _FINALIZER_CLASS.replace("@CALL@", "llm_query('x')") + "s = S()\ns = None\nprint('after')",
        status="ok", expect=("after",)),
    "finalizer_calls_llm_query_after_the_execution": Payload(
        _FINALIZER_CLASS.replace("@CALL@", "llm_query('x')") + "FINAL = S()\nSHOW_VARS = S()", status="ok"),
    "finalizer_calls_final_after_the_execution": Payload(
        _FINALIZER_CLASS.replace("@CALL@", "FINAL('late')") + "llm_query = S()", status="ok", absent=("late",)),
    "finalizer_in_rebound_contexts": Payload(
        _FINALIZER_CLASS.replace("@CALL@", "llm_query_batched(['a', 'b'])") + "contexts = {'x': S()}",
        status="ok"),
    "finalizer_prints_after_the_execution": Payload(
        _FINALIZER_CLASS.replace("@CALL@", "print('ghost ' * 1000)") + "rlm_query = S()", status="ok",
        absent=("ghost",)),
    # -- issue 10: output caps ---------------------------------------------------------------------------
    "namedtuple_huge_type_name": Payload(
        "import collections\nT = collections.namedtuple('A' * 5_000_000, 'x')\nt = T(1)", status="ok"),
    "namedtuple_huge_type_name_in_show_vars": Payload(
        "import collections\nT = collections.namedtuple('A' * 5_000_000, 'x')\nt = T(1)\nSHOW_VARS()",
        status="ok"),
    "namedtuple_huge_name_in_an_error": Payload(
        "import collections\nT = collections.namedtuple('B' * 3_000_000, 'x')\nT(1, 2, 3)", expect=("TypeError",)),
    "namedtuple_huge_field_name": Payload(
        "import collections\nT = collections.namedtuple('T', ['f' + 'x' * 2_000_000])\nt = T(1)", status="ok"),
    "thousands_of_variables": Payload("\n".join(f"v{i} = {i}" for i in range(2_000)), status="ok"),
    "huge_variable_name": Payload("v" + "a" * 150_000 + " = 1", status="ok"),
    "huge_final": Payload("FINAL('y' * 10_000_000)", status="ok"),
    "huge_final_var": Payload("big = 'z' * 10_000_000\nFINAL_VAR('big')", status="ok"),
    "final_var_of_a_huge_unknown_name": Payload("FINAL_VAR('q' * 10_000_000)", expect=("NameError",)),
    "exception_with_a_million_args": Payload("raise ValueError(*range(10**6))", expect=("ValueError",)),
    "print_with_a_huge_separator": Payload("print(1, 2, 3, sep='x' * 10**7)", status="ok",
                                           expect=("[output truncated: ",)),
    "huge_exception_from_a_library": Payload("import json\njson.loads('[' + '1,' * 10**6)", expect=("JSONDecodeError",)),
    # The pattern that took the server 4 GB with the regex package: re keeps counted repeats as
    # opcodes, so in the sandbox it compiles small (and the worker's rlimits bound it anyway).
    "regex_compile_bomb_in_code": Payload("import re\nr = re.compile('(?:a{10000}){1500}')\nprint('small')",
                                          status="ok", expect=("small",)),
})

@pytest.fixture
async def session(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[SandboxSession]:
    monkeypatch.setenv(ENV_SECRET_NAME, ENV_SECRET)
    async with SandboxSession(LIMITS) as s:
        await s.load_context("context", CONTEXT)
        assert (await s.execute("keep = 41")).status == "ok"
        yield s


def _everything(result: ExecResult) -> str:
    return "\n".join(
        [result.stdout, result.error or "", result.final or "", *result.variables.values(), *result.notes]
    )


async def _assert_session_usable(session: SandboxSession, result: ExecResult) -> None:
    after = await session.execute("n = len(context)\nprint(n, len(contexts['context']))")
    assert after.status == "ok", after.error
    assert after.stdout == f"{len(CONTEXT)} {len(CONTEXT)}\n"
    if result.restarted:
        assert "keep" in result.variables_lost
    else:
        kept = await session.execute("print(keep)\nprint(llm_query is not None, FINAL is not None)")
        assert kept.stdout == "41\nTrue True\n", kept.error


@pytest.mark.parametrize("name", list(PAYLOADS))
async def test_hostile_payload_is_contained(
    name: str, session: SandboxSession, secret_file: tuple[Path, str], canary: Path, tmp_path: Path
) -> None:
    """The payload fails or finds nothing within its bound, writes and leaks nothing, and the session goes on."""
    payload = PAYLOADS[name]
    secret_path, secret_token = secret_file
    code = payload.code.replace("@SECRET_FILE@", str(secret_path)).replace("@CANARY@", str(canary))

    result = await session.execute(code)

    assert result.status == payload.status, (result.status, result.error, result.stdout[:500])
    assert result.duration < BOUND, result.duration
    text = _everything(result)
    if payload.expect:
        where = result.error if payload.status == "error" else result.stdout
        assert any(e in (where or "") for e in payload.expect), (payload.expect, where and where[:1000])
    for forbidden in (secret_token, ENV_SECRET, ENV_SECRET_NAME, *payload.absent):
        assert forbidden not in text, forbidden
    if payload.killed is not None:
        assert result.restarted is payload.killed, (result.restarted, result.error)
    if payload.killed:
        assert result.variables_lost == ["keep"] or "keep" in result.variables_lost
    # Bounded output whatever the payload printed or raised.
    assert len(result.stdout) <= MAX_OUTPUT + 200
    assert len(result.error or "") <= 5_000
    assert all(len(v) <= 1_000 for v in result.variables.values())
    assert all(len(k) <= 300 for k in result.variables) and len(result.variables) <= 100
    assert len(result.final or "") <= MAX_OUTPUT
    assert sum(map(len, result.notes)) <= 25_000 and len(session.variable_names) <= 500

    assert list(canary.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["canary", "secret.txt"]
    await _assert_session_usable(session, result)


def test_suite_has_enough_payloads() -> None:
    """The hostile suite keeps at least 200 payloads, the known RestrictedPython CVEs among them."""
    assert len(PAYLOADS) >= 200
    for cve in ("2023_37271", "2023_41039", "2024_47532", "2025_22153"):
        assert any(cve in name for name in PAYLOADS), cve
