"""Regressions for the red-team findings of issue 10 in the Python layer, one section per class:
escapes through the worker's own objects, search patterns that freeze the server, output caps
bypassed, and sessions wedged by code run out of turn. The hostile suite
(``test_sandbox_hostile.py``) holds the payload-per-line versions of the same classes.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from rlm_mcp.config import Settings
from rlm_mcp.errors import InvalidPattern
from rlm_mcp.session import RlmSession
from rlm_mcp.shaping import shape_exec_result
from sandbox import ExecResult, Limits, PendingQuery, SandboxError, SandboxSession, textops

LIMITS = Limits(exec_timeout=3.0, kill_grace=1.0, memory_margin_mb=512, request_timeout=15.0)
HELPERS = ("llm_query", "llm_query_batched", "rlm_query", "FINAL", "FINAL_VAR", "SHOW_VARS", "print")


@pytest.fixture
async def session() -> AsyncIterator[SandboxSession]:
    async with SandboxSession(LIMITS) as s:
        await s.load_context("context", "some text")
        yield s


# -- 1. escapes through the worker's objects -------------------------------------------------------


@pytest.mark.parametrize("helper", HELPERS)
async def test_copies_of_a_helper_are_the_helper_itself(session: SandboxSession, helper: str) -> None:
    """copy/deepcopy of a helper, bare, in a list, a dict or a partial, rebuild no worker: they
    hand back the very function (the escape deep-copied the Worker behind a bound method)."""
    code = f"""
import copy, functools
h = {helper}
checks = [
    copy.deepcopy(h) is h,
    copy.copy(h) is h,
    copy.deepcopy([h])[0] is h,
    copy.deepcopy({{'k': (h,)}})['k'][0] is h,
    copy.deepcopy(functools.partial(h)).func is h,
    copy.copy(functools.partial(h, 1)).func is h,
]
print(checks)
"""
    result = await session.execute(code)
    assert result.status == "ok", result.error
    assert result.stdout == "[True, True, True, True, True, True]\n"


async def test_deepcopy_memo_is_refused(session: SandboxSession) -> None:
    """copy.deepcopy(x, memo) is refused: the memo dict hands the code every object the copy rebuilt."""
    result = await session.execute("import copy\nmemo = {}\ncopy.deepcopy([llm_query, FINAL], memo)")
    assert result.status == "error"
    assert "copy.deepcopy(x, memo) is refused" in (result.error or "")


async def test_helpers_still_work_after_being_copied(session: SandboxSession) -> None:
    """A deep-copied FINAL is FINAL: it sets this execution's answer, nothing else."""
    result = await session.execute("import copy, functools\nf = copy.deepcopy(functools.partial(FINAL, 'done'))\nf()")
    assert result.status == "ok", result.error
    assert result.final == "done"


async def test_module_namespaces_copy_as_themselves(session: SandboxSession) -> None:
    """A module namespace is immutable: copy and deepcopy give it back instead of rebuilding it."""
    code = ("import copy, json, re, functools\n"
            "print([copy.copy(m) is m and copy.deepcopy(m) is m for m in (json, re, functools, copy)])")
    result = await session.execute(code)
    assert result.stdout == "[True, True, True, True]\n", result.error


@pytest.mark.parametrize("module", ["pickle", "copyreg", "marshal", "shelve", "gc", "inspect", "types"])
async def test_modules_that_rebuild_or_reach_objects_cannot_be_imported(session: SandboxSession, module: str) -> None:
    """Pickling, copyreg and object-graph modules are not importable."""
    result = await session.execute(f"import {module}")
    assert result.status == "error"
    assert "is not available in the sandbox" in (result.error or "")


async def test_no_attribute_path_from_sandbox_names_reaches_a_host_object(session: SandboxSession) -> None:
    """Breadth-first through every attribute the guards allow (three levels, from every name the
    code starts with and from an exception a helper raised), nothing is the worker, its channel,
    its globals or a module."""
    code = """
import copy, functools
try:
    FINAL_VAR('nothing_here')
except NameError as e:
    err = e
try:
    SHOW_VARS(1)
except TypeError as e:
    err2 = e
roots = [llm_query, llm_query_batched, rlm_query, FINAL, FINAL_VAR, SHOW_VARS, print, SubQueryError,
         contexts, context, err, err2, copy, functools, functools.partial(llm_query)]
seen = set()
frontier = list(roots)
bad = []
visited = 0
for depth in range(3):
    nxt = []
    for obj in frontier:
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        visited = visited + 1
        for name in ('execute', 'channel', 'globals', 'serve', 'contexts_lost', 'send', 'recv'):
            if hasattr(obj, name) and not isinstance(obj, dict):
                bad.append((repr(obj)[:80], name))
        for name in dir(obj):
            try:
                nxt.append(getattr(obj, name))
            except Exception:
                pass
    frontier = nxt
print(visited > 100, bad)
"""
    result = await session.execute(code)
    assert result.status == "ok", result.error
    assert result.stdout == "True []\n"


# -- 2. search patterns that freeze the server ---------------------------------------------------


@pytest.mark.parametrize(
    "pattern",
    ["(?:a{10000}){1500}", "a{100001}", "((a{400}){400})", "(?:(?:a{50}){50}){50}", "(?:x|y{60000}){2}", "a" * 10_001],
)
def test_oversized_patterns_are_refused_before_compiling(pattern: str) -> None:
    """Long patterns and counted repeats that multiply out past the bound are refused by a text scan."""
    with pytest.raises(textops.PatternTooLarge):
        textops.check_pattern_size(pattern)


@pytest.mark.parametrize("pattern", [r"\d{1,3}", r"(?:\w+\s){0,1000}", r"[a-z{}]{5}", r"\p{L}+", "x{", ".{0,500}",
                                     r"^\s*(\d+)\.\s+(.*)$", "(?:ab){300}"])
def test_ordinary_patterns_pass_the_size_check(pattern: str) -> None:
    """Patterns a model writes are well inside the bound."""
    textops.check_pattern_size(pattern)


def test_compiled_patterns_are_not_cached() -> None:
    """compile_pattern leaves nothing in the regex module's cache."""
    import sys

    import regex

    cache = sys.modules["regex._main"]._cache  # where regex keeps compiled patterns
    regex.purge()
    regex.compile("needle-[0-9]+-cached")  # the default would keep it
    textops.compile_pattern("needle-[0-9]+-not-cached", True, False)
    textops.compile_pattern("needle-literal-not-cached", False, True)
    assert any("-cached" in str(key) for key in cache)
    assert not any("not-cached" in str(key) for key in cache)


async def test_search_patterns_are_compiled_in_the_worker_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The server process compiles no search pattern: with compiling broken here, searches
    still work, and syntax errors still say where the pattern is wrong."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a search pattern was compiled in the server process")

    monkeypatch.setattr(textops, "compile_pattern", refuse)
    session = RlmSession(Settings(roots=(tmp_path,), exec_timeout=10))
    try:
        await session.load_context(text="one needle\ntwo needles\n")
        found = await session.search("needle[s]?", max_results=5, window=3)
        assert [m["start"] for m in found["matches"]] == [4, 15]
        with pytest.raises(InvalidPattern, match=r"missing \) at position 7"):
            await session.search("needle(")
    finally:
        await session.aclose()


async def test_a_huge_pattern_does_not_stall_another_session(tmp_path: Path) -> None:
    """While one session's searches are refused or compiled, another session's peeks answer
    promptly and the event loop never stalls."""
    one = RlmSession(Settings(roots=(tmp_path,), exec_timeout=10))
    two = RlmSession(Settings(roots=(tmp_path,), exec_timeout=10))
    gaps: list[float] = []
    peeks: list[float] = []
    try:
        await one.load_context(text="a" * 100_000)
        await two.load_context(text="hello\nworld\n")
        await one.sandbox()
        await two.sandbox()
        done = anyio.Event()

        async def ticker() -> None:
            last = anyio.current_time()
            while not done.is_set():
                await anyio.sleep(0.01)
                now = anyio.current_time()
                gaps.append(now - last)
                last = now

        async def other_session() -> None:
            while not done.is_set():
                started = anyio.current_time()
                out = await two.peek(start=0, end=5)
                assert out["text"] == "hello"
                peeks.append(anyio.current_time() - started)
                await anyio.sleep(0.02)

        async with anyio.create_task_group() as tg:
            tg.start_soon(ticker)
            tg.start_soon(other_session)
            with pytest.raises(InvalidPattern, match="multiply out"):
                await one.search("(?:a{10000}){1500}")
            # At the bound: compiled (in the worker), ~0.15 s of work that is not the server's.
            found = await one.search("(?:a{300}){300}", max_results=1, window=0)
            assert found["matches"][0]["start"] == 0
            await anyio.sleep(0.1)
            done.set()
    finally:
        await one.aclose()
        await two.aclose()
    assert peeks, "the other session never got an answer"
    assert max(gaps) < 0.25, max(gaps)
    assert max(peeks) < 0.5, max(peeks)


# -- 3. output caps ------------------------------------------------------------------------------


async def test_a_huge_type_name_is_capped_in_the_result(session: SandboxSession) -> None:
    """A 5 MB namedtuple name gave a 25 MB result; every field is now capped in the worker."""
    code = "import collections\nT = collections.namedtuple('A' * 5_000_000, 'x')\nt = T(1)\nSHOW_VARS()"
    result = await session.execute(code)
    assert result.status == "ok", result.error
    assert all(len(v) <= 400 for v in result.variables.values())
    assert len(result.stdout) <= LIMITS.max_output_chars + 200
    assert len(json.dumps(result.variables)) < 5_000


async def test_an_error_from_a_huge_class_name_is_capped(session: SandboxSession) -> None:
    """A type name in an error message is cut like the message itself."""
    code = "import collections\nT = collections.namedtuple('B' * 3_000_000, 'x')\nT(1, 2, 3)"
    result = await session.execute(code)
    assert result.status == "error"
    assert len(result.error or "") <= 21_000


async def test_thousands_of_variables_are_listed_up_to_a_cap(session: SandboxSession) -> None:
    """5,000 new variables: the result lists 100, says how many changed, and names stay capped."""
    code = "\n".join(f"v{i} = {i}" for i in range(5_000))
    result = await session.execute(code)
    assert result.status == "ok", result.error
    assert len(result.variables) == 100
    assert any("5,000 variables changed" in note for note in result.notes)
    assert len(session.variable_names) == 500
    again = await session.execute("print(v4999)")
    assert again.stdout == "4999\n"


async def test_a_huge_final_answer_is_cut_in_the_worker(session: SandboxSession) -> None:
    """FINAL of 20 M chars: the result carries the output cap's worth and the length; the rest
    is read in slices (the server decoded the whole answer before)."""
    result = await session.execute("FINAL('y' * 20_000_000)")
    assert result.status == "ok", result.error
    assert result.final is not None and len(result.final) == LIMITS.max_output_chars
    assert result.final_chars == 20_000_000
    tail = await session.get_variable("FINAL", 19_999_990, None)
    assert (tail.text, tail.total) == ("y" * 10, 20_000_000)
    shaped = shape_exec_result(result, 20_000)
    assert len(shaped["final"]) < 20_200 and shaped["final_chars"] == 20_000_000


def test_a_huge_pending_list_fits_the_output_cap() -> None:
    """100,000 pending sub-queries in host mode: the tool result lists what fits and says so."""
    pending = [PendingQuery(id=f"q1.{i}", prompt=f"prompt {i}") for i in range(100_000)]
    shaped = shape_exec_result(ExecResult(status="paused", pending=pending), 20_000)
    assert len(json.dumps(shaped)) < 30_000
    assert 1 <= len(shaped["pending"]) <= 100
    assert any("100,000 sub-queries are pending" in note for note in shaped["notes"])


# -- 4. sessions wedged by code run out of turn ----------------------------------------------------

_STR_CALLS_LLM = """
import collections
class U(collections.UserString):
    pass
def ask(self):
    return llm_query('from str()')
u = U('x')
U.data = property(ask)
"""

_STR_SPINS = """
import collections
class U(collections.UserString):
    pass
def spin(self):
    while True:
        pass
u = U('x')
U.data = property(spin)
"""

_CLOSE_CALLS_LLM = """
import io, collections
class S(io.StringIO):
    def close(self):
        llm_query('from a finalizer')
class U(collections.UserString):
    pass
def make(self):
    S()
    return 'shown'
u = U('x')
U.data = property(make)
"""


async def _still_fine(session: SandboxSession) -> None:
    after = await session.execute("print(len(context), keep)")
    assert after.status == "ok", after.error
    assert after.stdout == "9 41\n"


async def test_llm_query_from_str_for_get_variable_is_refused(session: SandboxSession) -> None:
    """str() of a value calling llm_query for get_variable fails that read, sends no frame, and
    the session goes on with its variables."""
    assert (await session.execute("keep = 41\n" + _STR_CALLS_LLM)).status == "ok"
    with pytest.raises(SandboxError, match="str\\(\\) of 'u' failed: SubQueryError"):
        await session.get_variable("u")
    await _still_fine(session)


async def test_a_finalizer_calling_llm_query_between_requests_is_refused(session: SandboxSession) -> None:
    """A finalizer (io close()) run during get_variable cannot send a sub-query frame."""
    assert (await session.execute("keep = 41\n" + _CLOSE_CALLS_LLM)).status == "ok"
    read = await session.get_variable("u")
    assert read.text == "shown"
    await _still_fine(session)


async def test_str_for_get_variable_runs_under_the_execution_timeout(session: SandboxSession) -> None:
    """A str() that spins is stopped at the execution timeout; the worker and variables stay."""
    made = await session.execute("keep = 41\n" + _STR_SPINS)
    assert made.status == "ok", made.error
    assert made.variables["u"].endswith("<repr stopped: it ran too long>")
    pid = session.pid
    started = anyio.current_time()
    with pytest.raises(SandboxError, match="ran past the 3 s limit"):
        await session.get_variable("u")
    assert anyio.current_time() - started < LIMITS.exec_timeout + 2
    assert session.pid == pid
    await _still_fine(session)


async def test_helpers_called_from_a_result_repr_are_refused(session: SandboxSession) -> None:
    """Reprs for the result run after the code: llm_query and FINAL there fail, no frame is sent."""
    code = _STR_CALLS_LLM.replace("llm_query('from str()')", "FINAL('late') or llm_query('x')") + "keep = 41"
    result = await session.execute(code)
    assert result.status == "ok", result.error
    assert result.final is None
    await _still_fine(session)


async def test_reset_recovers_a_stopped_worker(session: SandboxSession) -> None:
    """reset() starts a fresh worker whatever the old one's state (here: stopped), contexts kept."""
    assert (await session.execute("keep = 1")).status == "ok"
    old = session.pid
    assert old is not None
    os.kill(old, signal.SIGSTOP)
    with anyio.fail_after(10):
        await session.reset()
    assert session.pid != old
    assert (await session.execute("keep = 41")).status == "ok"
    await _still_fine(session)
