"""The sandbox worker: one child process per session, running restricted code.

Started by ``host.py`` as ``python -I`` with a minimal environment, in its own
process group. It talks to the host only through frames on the pipes it was
given as fd 0/1 (see ``protocol.py``); right after start it moves those to
private descriptors and points fd 0/1 and ``sys.stdout`` at /dev/null, so
nothing the code does can write into the frame stream. It then imports every
allowlisted module, tightens its rlimits and says READY.

Variables persist between executions in one globals dict. ``llm_query`` sends
one request frame and blocks until the host replies, serving read-only requests
(variable slices, context loads) while it waits: that is what lets a host pause
an execution for as long as a human-speed root model needs.
"""

from __future__ import annotations

import ctypes
import json
import os
import reprlib
import signal
import sys
from typing import Any

from . import protocol, walls
from .modules import build_namespaces, make_import
from .policy import (
    RESERVED_NAMES,
    ModuleNamespace,
    compile_code,
    hint_for,
    make_builtins,
    make_guards,
)

_MIB = 1024 * 1024
_SIZED = (str, list, dict, set, tuple, bytes, bytearray, frozenset)
# Result caps besides the output cap: variables listed per result, variable names reported
# (for the host's "variables lost" lists and rlm_status) and chars of one variable's description.
_MAX_LISTED = 100
_MAX_NAMES = 500
_MAX_DESCRIBED = 300


class _ExecTimeout(BaseException):
    """Raised into sandboxed code by SIGALRM when its wall-clock limit is reached."""


class SubQueryError(Exception):
    """Raised by llm_query when the sub-LLM call failed; sandboxed code may catch it."""


class _Output:
    """The print collector: one per execution, shared by every scope, capped."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.parts: list[str] = []
        self.size = 0
        self.dropped = 0

    def write(self, text: str) -> None:
        room = self.cap - self.size
        if len(text) > room:
            self.dropped += len(text) - max(room, 0)
            text = text[: max(room, 0)]
        if text:
            self.parts.append(text)
            self.size += len(text)

    def value(self) -> str:
        text = "".join(self.parts)
        if self.dropped:
            text += f"\n[output truncated: {self.dropped:,} more characters were printed; print less, or slice]"
        return text


class Worker:
    def __init__(self, channel: protocol.BlockingChannel, config: dict[str, Any]) -> None:
        self.channel = channel
        self.exec_timeout = float(config.get("exec_timeout", 60.0))
        self.memory_mb = config.get("memory_mb")
        self.memory_margin_mb = int(config.get("memory_margin_mb", 1024))
        self.max_output = int(config.get("max_output_chars", 100_000))
        self.max_code = int(config.get("max_code_chars", 1_000_000))
        self.max_fds = int(config.get("max_fds", 32))
        self.contexts: dict[str, str] = {}
        self.context_bytes = 0
        self.ascii_ok = True  # the text being read into a str made by _blank_ascii is ASCII so far
        self.output = _Output(self.max_output)
        self.final: str | None = None
        self.cell = 0
        self.sources: dict[str, str] = {}
        self.request_id = 0
        self.max_field = int(config.get("max_field_chars", 20_000))
        self.in_user_code = False
        # True only while an execution runs the code's own statements: str() of a value for
        # get_variable, reprs for the result and finalizers run between requests must not send
        # frames the host is not waiting for.
        self.in_turn = False
        self.describe_expired = False
        self.var_cache: tuple[str, int, str] | None = None
        self.api = _sandbox_api(self)
        self.api_reserved = {name: fn for name, fn in self.api.items() if name in RESERVED_NAMES}
        self.namespaces = build_namespaces(self.api["print"])
        self.builtins = make_builtins(self.api["print"], make_import(self.namespaces))
        self.repr = reprlib.Repr()
        self.repr.maxstring = self.repr.maxother = 100
        self.repr.maxlist = self.repr.maxtuple = self.repr.maxset = self.repr.maxdict = 5
        self.repr.maxlevel = 2
        self.globals: dict[str, Any] = {}
        self._reset_globals()
        self.base_vm = _vm_size()

    # -- limits -------------------------------------------------------------------------

    def apply_limits(self) -> None:
        """The signal side of the limits. The rlimits themselves are walls (``walls.apply_inner``):
        set hard before READY, then moved only by the host, from outside, with prlimit(2)."""
        # A write past RLIMIT_FSIZE must fail with an error, not kill the worker.
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        signal.signal(signal.SIGALRM, self._on_alarm)

    def initial_limits(self) -> dict[str, int]:
        """The address-space and CPU limits to start with, before the host takes over."""
        memory = int(self.memory_mb) * _MIB if self.memory_mb is not None else self.base_vm + self.memory_margin_mb * _MIB
        return {"initial_as": memory, "initial_cpu": int(2 * self.exec_timeout + 10)}

    def _on_alarm(self, signum: int, frame: Any) -> None:
        if self.in_user_code:
            raise _ExecTimeout

    # -- namespace ------------------------------------------------------------------------

    def _reset_globals(self) -> None:
        self.globals = {"__builtins__": self.builtins, **make_guards()}
        self._restore_reserved()

    def _default_context(self) -> str:
        if "context" in self.contexts:
            return self.contexts["context"]
        return next(reversed(self.contexts.values()))

    def _reserved_values(self) -> dict[str, Any]:
        # No ``context`` before a load: code that reads it gets a NameError whose hint says to
        # call load_context, rather than an empty string that looks like data.
        loaded = {"context": self._default_context()} if self.contexts else {}
        return {
            **loaded,
            "contexts": dict(self.contexts),
            **self.api_reserved,
            "SubQueryError": SubQueryError,
        }

    def _restore_reserved(self) -> list[str]:
        """Put the reserved names back; return those the code had rebound."""
        rebound = []
        if not self.contexts:
            self.globals.pop("context", None)
        for name, value in self._reserved_values().items():
            current = self.globals.get(name, value)
            if name == "contexts":
                if current is not self.globals.get("contexts") or not _same(current, self.contexts):
                    rebound.append(name)
            elif name == "context":
                if current is not value:
                    rebound.append(name)
            elif not _same(current, value):
                rebound.append(name)
            self.globals[name] = value
        return rebound

    def user_vars(self) -> dict[str, Any]:
        return {
            name: value
            for name, value in self.globals.items()
            if not name.startswith("_") and name not in RESERVED_NAMES and type(value) is not ModuleNamespace
        }

    # -- what the names given to sandboxed code do ----------------------------------------------
    # The code never holds these bound methods: it gets the plain functions of ``_sandbox_api``,
    # whose closures no attribute path reaches (``__closure__`` is refused), and which ``copy``
    # and ``deepcopy`` hand back as they are instead of rebuilding the worker behind them.

    def _print(self, *objects: Any, sep: str | None = " ", end: str | None = "\n", file: Any = None,
               flush: bool = False) -> None:
        if file is not None:
            raise TypeError("print(file=...) is not available in the sandbox; output goes to stdout")
        sep = " " if sep is None else sep
        end = "\n" if end is None else end
        if type(sep) is not str or type(end) is not str:
            raise TypeError("sep and end must be strings")
        if not self.in_turn:
            return  # str() for get_variable, or a finalizer between requests: nobody reads this output
        # Piece by piece: joining first would copy a huge string twice before the cap cuts it.
        for index, obj in enumerate(objects):
            if index:
                self.output.write(sep)
            self.output.write(obj if type(obj) is str else str(obj))
        self.output.write(end)

    def _check_turn(self, what: str) -> None:
        if not self.in_turn:
            raise RuntimeError(
                f"{what} can only be called while exec_python runs your code, not from str()/repr() of a "
                "value or from cleanup code running between requests"
            )

    def final_answer(self, answer: Any) -> None:
        self._check_turn("FINAL")
        self.final = answer if type(answer) is str else str(answer)

    def final_var(self, name: Any) -> None:
        self._check_turn("FINAL_VAR")
        if type(name) is str:
            if name not in self.globals or name.startswith("_"):
                raise NameError(
                    _clip(f"FINAL_VAR: no variable named {name!r}; your variables: "
                          f"{', '.join(sorted(self.user_vars())) or '(none)'}", self.max_field)
                )
            value = self.globals[name]
        else:
            value = name
        self.final = value if type(value) is str else str(value)

    def show_vars(self) -> None:
        if not self.in_turn:
            return
        lines = [f"{_clip(name, 200)}: {self._describe(value)}" for name, value in sorted(self.user_vars().items())]
        names = ", ".join(f"{_clip(k, 200)} ({len(v):,} chars)" for k, v in self.contexts.items())
        lines.append(f"contexts: {names or '(none)'}")
        self._print("\n".join(lines))

    def llm_query(self, prompt: Any, model: Any = None) -> str:
        (result,) = self._sub_request("llm", [_as_text(prompt)], batched=False)
        if "error" in result:
            raise SubQueryError(result["error"])
        return result["ok"]

    def llm_query_batched(self, prompts: Any, model: Any = None) -> list[str]:
        if isinstance(prompts, (str, bytes)) or not hasattr(prompts, "__iter__"):
            raise TypeError("llm_query_batched takes a list of prompt strings")
        self._check_turn("llm_query_batched")
        texts = [_as_text(p) for p in prompts]
        if not texts:
            return []
        results = self._sub_request("llm", texts, batched=True)
        return [r["ok"] if "ok" in r else f"Error: {r['error']}" for r in results]

    def rlm_query(self, prompt: Any, context: Any = None) -> str:
        ctx = None if context is None else _as_text(context)
        (result,) = self._sub_request("rlm", [_as_text(prompt)], batched=False, contexts=[ctx])
        if "error" in result:
            raise SubQueryError(result["error"])
        return result["ok"]

    def _sub_request(self, kind: str, prompts: list[str], batched: bool,
                     contexts: list[str | None] | None = None) -> list[dict[str, str]]:
        if not self.in_turn:
            # Out of turn the host is waiting for another reply (or for nothing): a request
            # frame now would desynchronise the channel for good.
            raise SubQueryError(
                "llm_query, llm_query_batched and rlm_query can only be called while exec_python runs your "
                "code, not from str()/repr() of a value or from cleanup code running between requests"
            )
        self.in_user_code = False
        self.in_turn = False
        remaining, _ = signal.setitimer(signal.ITIMER_REAL, 0)
        try:
            self.request_id += 1
            rid = self.request_id
            message: dict[str, Any] = {"op": "llm", "id": rid, "kind": kind, "prompts": prompts, "batched": batched}
            if contexts is not None:
                message["contexts"] = contexts
            self.channel.send(message)
            while True:
                reply, payload = self.channel.recv()
                if reply["op"] == "llm_reply" and reply.get("id") == rid:
                    break
                self._dispatch(reply, payload, inline=True)
                payload = None
            results = reply.get("results")
            if not isinstance(results, list) or len(results) != len(prompts):
                return [{"error": "the host sent a malformed reply"} for _ in prompts]
            return results
        finally:
            if remaining > 0:
                signal.setitimer(signal.ITIMER_REAL, remaining)
            self.in_turn = True
            self.in_user_code = True

    # -- requests ----------------------------------------------------------------------------

    def serve(self) -> None:
        while True:
            try:
                message, payload = self.channel.recv()
            except EOFError:
                return
            if message["op"] == "shutdown":
                return
            self._dispatch(message, payload, inline=False)
            # A context's bytes must not stay alive until the next request arrives.
            message = payload = None  # type: ignore[assignment]

    def _dispatch(self, message: dict[str, Any], payload: bytearray | None, inline: bool) -> None:
        op = message["op"]
        try:
            if op == "exec" and not inline:
                self.channel.send(self.execute(message["code"]))
            elif op == "load":
                self._load(message, payload)
            elif op == "drop":
                self.contexts.pop(message["name"], None)
                self._account_contexts()
                self._restore_reserved()
                self.channel.send({"op": "ok"})
            elif op == "get_var":
                self._get_var(message)
            elif op == "find":
                self._find(message)
            elif op == "reset" and not inline:
                self._reset_globals()
                self.final = None
                self.var_cache = None
                self.channel.send({"op": "ok"})
            elif op == "ping":
                self.channel.send({"op": "ok", "pid": os.getpid()})
            else:
                self.channel.send({"op": "error", "message": f"request {op!r} is not possible now"})
        except MemoryError:
            self.channel.send({"op": "error", "message": "the worker ran out of memory serving this request"})

    def _load(self, message: dict[str, Any], payload: bytearray | str | None) -> None:
        name = message["name"]
        if isinstance(payload, str):  # an ASCII text read straight into its str (before_payload)
            text = payload
            if not self.ascii_ok:
                del text, payload
                self.channel.send({"op": "error", "message": "the context said it was ASCII but is not"})
                return
        else:
            data = payload if payload is not None else bytearray()
            text = data.decode("utf-8", "surrogatepass")
            del data
        del payload
        if message.get("append") and name in self.contexts:
            text = self.contexts[name] + text
        self.contexts[name] = text
        del text
        self._account_contexts()
        self._restore_reserved()
        self.channel.send({"op": "ok"})

    def _account_contexts(self) -> None:
        self.context_bytes = sum(sys.getsizeof(t) for t in self.contexts.values())

    def before_payload(self, message: dict[str, Any]) -> tuple[str, memoryview] | None:
        """Free a replaced context before the new one's bytes arrive (the host has already raised
        the memory limit for them). An ASCII text is read straight into a new str: its bytes are
        its chars, so it needs no bytes buffer and no decoding, half the memory of the load."""
        if message.get("op") == "load":
            if not message.get("append") and message.get("name") in self.contexts:
                # Replacing: free the old text before the new one arrives (the host keeps a
                # copy to reload from if this load fails), unless code still holds it.
                del self.contexts[message["name"]]
                self._restore_reserved()
                self._account_contexts()
            size = message.get("payload")
            if message.get("ascii") is True and type(size) is int and size > 0:
                try:
                    self.ascii_ok = True  # until check_ascii sees a block that is not
                    return _blank_ascii(size)
                except (MemoryError, OSError, AttributeError, ValueError):
                    return None  # the bytes then arrive as usual and are decoded
        return None

    def check_ascii(self, block: memoryview) -> None:
        """A block of a text read into a str made by ``_blank_ascii``: it must be ASCII (an ASCII
        str holding other bytes would break the interpreter's assumptions)."""
        if self.ascii_ok and not block.tobytes().isascii():
            self.ascii_ok = False

    def _loaded(self, name: Any) -> str | None:
        text = self.contexts.get(name) if isinstance(name, str) else None
        if text is None:
            self.channel.send({"op": "error", "kind": "missing", "message": f"no context named {name!r} is loaded"})
        return text

    def _find(self, message: dict[str, Any]) -> None:
        """Matches in a loaded context (the host's search): spans in the header, texts as payload."""
        text = self._loaded(message.get("name"))
        if text is None:
            return
        # Imported on the first search only: the regex engine costs every worker ~2 MB.
        from . import textops

        try:
            compiled = textops.compile_pattern(str(message["pattern"]), bool(message.get("regex", True)),
                                               bool(message.get("ignore_case", False)))
            found = textops.find_matches(text, compiled, int(message["max_results"]), int(message["window"]),
                                         int(message["max_chars"]), float(message["timeout"]),
                                         int(message.get("start", 0)))
        except textops.PatternTimeout as exc:
            self.channel.send({"op": "error", "kind": "timeout", "message": str(exc)})
            return
        except (*textops.PATTERN_ERRORS, ValueError, TypeError, OverflowError, RecursionError, MemoryError) as exc:
            pos = getattr(exc, "pos", None)
            msg = _clip(str(getattr(exc, "msg", None) or exc), 2000)
            self.channel.send({"op": "error", "kind": "pattern", "message": f"invalid pattern: {msg}",
                               "msg": msg, "pos": pos if type(pos) is int else None})
            return
        hits = [[h.start, h.end, h.lo, len(h.text), h.text_truncated] for h in found.hits]
        payload = "".join(h.text for h in found.hits).encode("utf-8", "surrogatepass")
        self.channel.send({"op": "found", "hits": hits, "truncated": found.truncated,
                           "next_start": found.next_start, "scanned": found.scanned}, payload)

    def _get_var(self, message: dict[str, Any]) -> None:
        name = message["name"]
        if name == "FINAL":
            if self.final is None:
                self.channel.send({"op": "error", "message": "no final answer has been set yet"})
                return
            text = self.final
        else:
            variables = self.user_vars()
            if name not in variables:
                listing = ", ".join(sorted(variables)) or "(none)"
                self.channel.send({"op": "error", "message": _clip(
                    f"no variable named {_clip(name, 200)!r}; variables: {listing}", self.max_field)})
                return
            value = variables[name]
            if type(value) is str:
                text = value
            elif self.var_cache and self.var_cache[0] == name and self.var_cache[1] == id(value):
                text = self.var_cache[2]
            else:
                text = self._str_of_variable(name, value)
                if text is None:
                    return
                self.var_cache = (name, id(value), text)
        total = len(text)
        start = max(0, min(int(message.get("start", 0)), total))
        end = message.get("end")
        end = total if end is None else max(start, min(int(end), total))
        piece = text[start:end].encode("utf-8", "surrogatepass")
        self.channel.send({"op": "var", "name": name, "start": start, "end": end, "total": total}, piece)

    def _str_of_variable(self, name: str, value: Any) -> str | None:
        """``str(value)`` under the execution timeout: a value's own code (a property of a
        library subclass) runs here, and must neither hang the worker nor send frames."""
        shown = _clip(name, 200)
        # Inside a paused execution the outer timer is stopped; its rest is restored after.
        self.in_user_code = True
        signal.setitimer(signal.ITIMER_REAL, self.exec_timeout)
        try:
            return str(value)
        except _ExecTimeout:
            error = f"str() of {shown!r} ran past the {self.exec_timeout:g} s limit and was stopped"
        except BaseException as exc:  # noqa: BLE001 - code-defined str() must not end the worker
            error = f"str() of {shown!r} failed: {_clip(type(exc).__name__, 200)}"
        finally:
            self.in_user_code = False
            signal.setitimer(signal.ITIMER_REAL, 0)
        self.channel.send({"op": "error", "message": error})
        return None

    def execute(self, source: str) -> dict[str, Any]:
        self.final = None
        self.cell += 1
        filename = f"<cell {self.cell}>"
        outcome = compile_code(source, filename, self.max_code)
        if outcome.code is None or outcome.errors:
            error = "\n".join(outcome.errors) or "the code could not be compiled"
            return self._result("error", "", self._with_hint(error), {}, [])
        self.sources[filename] = source
        if len(self.sources) > 64:
            self.sources.pop(next(iter(self.sources)))
        self._restore_reserved()
        before = {name: _fingerprint(v) for name, v in self.user_vars().items()}
        self.output = _Output(self.max_output)
        self.var_cache = None
        error = None
        signal.setitimer(signal.ITIMER_REAL, self.exec_timeout)
        self.in_user_code = True
        self.in_turn = True
        try:
            exec(outcome.code, self.globals)
        except _ExecTimeout:
            error = (f"TimeoutError: the code ran past the {self.exec_timeout:g} s limit and was stopped "
                     "(variables are kept). Work on smaller pieces, or raise --exec-timeout.")
        except BaseException as exc:  # noqa: BLE001 - everything the code raises is data
            error = self._with_hint(self._describe_exception(exc))
        finally:
            self.in_turn = False
            self.in_user_code = False
            signal.setitimer(signal.ITIMER_REAL, 0)
        # Describing the variables runs reprs (possibly the code's own): a short timer of its own.
        self.describe_expired = False
        signal.setitimer(signal.ITIMER_REAL, min(1.0, self.exec_timeout / 2))
        try:
            return self._finish_execution(before, error)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)

    def _finish_execution(self, before: dict[str, tuple[int, int | None]], error: str | None) -> dict[str, Any]:
        rebound = self._restore_reserved()
        after = self.user_vars()
        changed_names = [name for name, value in after.items() if before.get(name) != _fingerprint(value)]
        if len(changed_names) > _MAX_LISTED:
            notes_total = len(changed_names)
        else:
            notes_total = 0
        # Described only as many as are listed: each description runs repr().
        changed = {name: self._describe(after[name]) for name in changed_names[:_MAX_LISTED]}
        removed = [name for name in before if name not in after]
        notes = []
        if notes_total:
            notes.append(f"{notes_total:,} variables changed; {_MAX_LISTED} are listed (SHOW_VARS() lists all)")
        if rebound:
            notes.append(f"reserved names restored after the code rebound them: {', '.join(sorted(rebound))}")
        return self._result("error" if error else "ok", self.output.value(), error, changed, removed, notes)

    def _result(self, status: str, stdout: str, error: str | None, changed: dict[str, str],
                removed: list[str], notes: list[str] | None = None) -> dict[str, Any]:
        """The result frame, every field capped here: the host must not have to decode (and a
        model must not have to read) a 5 MB type name, 100,000 variable names or a 200 MB answer."""
        cap = self.max_field
        notes = [_clip(note, cap) for note in (notes or [])[:_MAX_LISTED]]
        variables = {_clip(name, 200): _clip(text, _MAX_DESCRIBED)
                     for name, text in list(changed.items())[:_MAX_LISTED]}
        names = sorted(self.user_vars())
        final = self.final
        result = {
            "op": "result",
            "status": status,
            "stdout": _clip(stdout, self.max_output + 200),
            "error": None if error is None else _clip(error, cap),
            "final": None if final is None else final[: self.max_output],
            "variables": variables,
            "removed": [_clip(name, 200) for name in removed[:_MAX_LISTED]],
            "names": [_clip(name, 200) for name in names[:_MAX_NAMES]],
            "names_total": len(names),
            "notes": notes,
        }
        if final is not None:
            result["final_chars"] = len(final)
        return result

    def _describe(self, value: Any) -> str:
        kind = _clip(type(value).__name__, 100)
        if self.describe_expired and not self.in_turn:
            shown = "<not shown: an earlier repr ran too long>"
        else:
            # A repr can run the code's own code (a property of a library subclass): after the
            # execution it runs under the short timer ``execute`` arms, not unbounded.
            was_in_user_code, self.in_user_code = self.in_user_code, True
            try:
                shown = self.repr.repr(value)
            except _ExecTimeout:
                if self.in_turn:
                    raise  # SHOW_VARS() inside the execution: the execution's own timeout
                self.describe_expired = True
                shown = "<repr stopped: it ran too long>"
            except BaseException as exc:  # noqa: BLE001 - a broken repr must not break the result
                shown = f"<repr failed: {_clip(type(exc).__name__, 100)}>"
            finally:
                self.in_user_code = was_in_user_code
        if isinstance(value, _SIZED):
            return f"{kind}[{len(value):,}] {shown}"
        return f"{kind} {shown}"

    def _describe_exception(self, exc: BaseException) -> str:
        lineno = None
        filename = None
        tb = exc.__traceback__
        while tb is not None:
            code_file = tb.tb_frame.f_code.co_filename
            if code_file.startswith("<cell "):
                lineno, filename = tb.tb_lineno, code_file
            tb = tb.tb_next
        if isinstance(exc, SyntaxError) and exc.lineno and not lineno:
            lineno, filename = exc.lineno, exc.filename
        try:
            text = str(exc)
        except BaseException as inner:  # noqa: BLE001 - code can make str(exc) raise; report, not crash
            text = f"<the message could not be shown: str() raised {type(inner).__name__}>"
        if len(text) > 2000:
            text = text[:2000] + "..."
        kind = _clip(type(exc).__name__, 200)
        message = f"{kind}: {text}" if text else kind
        if lineno is None:
            return message
        where = f"Line {lineno}"
        if filename != f"<cell {self.cell}>":
            where += f" (in code from an earlier execution, {filename[1:-1]})"
        source = self.sources.get(filename or "", "")
        lines = source.splitlines()
        if 0 < lineno <= len(lines):
            return f"{where}: {message}\n    {lines[lineno - 1].strip()[:200]}"
        return f"{where}: {message}"

    @staticmethod
    def _with_hint(error: str) -> str:
        hint = hint_for(error)
        return f"{error}\nHint: {hint}" if hint else error


def _sandbox_api(worker: Worker) -> dict[str, Any]:
    """The functions sandboxed code gets as ``print``, ``llm_query``, ``FINAL``...

    Plain functions, not bound methods: ``copy.deepcopy`` of a bound method (or of a list or
    ``functools.partial`` holding one) deep-copies the object it is bound to, and a blank
    worker left in the caller's memo dict ran code with the real builtins. A function is
    copied as itself, and the worker sits in its closure, which no attribute path reaches.
    """

    def print(*objects: Any, sep: str | None = " ", end: str | None = "\n", file: Any = None,
              flush: bool = False) -> None:
        worker._print(*objects, sep=sep, end=end, file=file, flush=flush)

    def llm_query(prompt: Any, model: Any = None) -> str:
        """llm_query(prompt) -> str: one sub-LLM call. Raises SubQueryError if it failed."""
        return worker.llm_query(prompt, model)

    def llm_query_batched(prompts: Any, model: Any = None) -> list[str]:
        """llm_query_batched(prompts) -> list[str]: concurrent sub-LLM calls, answers in order.
        A failed item comes back as a string starting with 'Error: '; the others are kept."""
        return worker.llm_query_batched(prompts, model)

    def rlm_query(prompt: Any, context: Any = None) -> str:
        """rlm_query(prompt, context) -> str: a recursive RLM call over ``context``."""
        return worker.rlm_query(prompt, context)

    def FINAL(answer: Any) -> None:  # noqa: N802 - the name the model knows
        """FINAL(answer): record the final answer (execution goes on to the end of the code)."""
        worker.final_answer(answer)

    def FINAL_VAR(name: Any) -> None:  # noqa: N802
        """FINAL_VAR(name): the final answer is the value of the variable called ``name``."""
        worker.final_var(name)

    def SHOW_VARS() -> None:  # noqa: N802
        """SHOW_VARS(): print your variables with their types and sizes."""
        worker.show_vars()

    return {"print": print, "llm_query": llm_query, "llm_query_batched": llm_query_batched,
            "rlm_query": rlm_query, "FINAL": FINAL, "FINAL_VAR": FINAL_VAR, "SHOW_VARS": SHOW_VARS}


def _clip(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, saying how many were left out."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... [{len(text) - limit:,} more characters]"


def _as_text(value: Any) -> str:
    return value if type(value) is str else str(value)


def _same(current: Any, value: Any) -> bool:
    """``current == value`` for the reserved-name check. Code can hand in objects whose
    ``==`` runs its own code (library subclasses with overridden properties); that code
    runs outside the timer, so a raise counts as "rebound" instead of ending the worker."""
    if current is value:
        return True
    try:
        return type(current) is type(value) and bool(current == value)
    except BaseException:  # noqa: BLE001
        return False


def _fingerprint(value: Any) -> tuple[int, int | None]:
    return (id(value), len(value) if isinstance(value, _SIZED) else None)


_ASCII_HEADER = sys.getsizeof("") - 1  # a compact ASCII str's struct; its chars follow it


def _blank_ascii(size: int) -> tuple[str, memoryview]:
    """A new str of ``size`` ASCII chars, not yet filled, and a writable view of its chars.

    CPython's ``PyUnicode_New`` makes a compact ASCII str whose chars lie right after its header;
    until they are written nothing has seen it (not hashed, not interned, one reference), which
    is when the C API itself fills new strings. The caller must fill every char with ASCII
    bytes (``Worker.check_ascii`` checks) before the str is used."""
    new = ctypes.pythonapi.PyUnicode_New
    new.restype = ctypes.py_object
    new.argtypes = (ctypes.c_ssize_t, ctypes.c_uint32)
    text = new(size, 127)
    chars = (ctypes.c_char * size).from_address(id(text) + _ASCII_HEADER)
    return text, memoryview(chars).cast("B")


def _vm_size() -> int:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 256 * _MIB


def main() -> None:
    config = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
    rfd, wfd = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    os.close(devnull)
    sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the process
    bulk = config.get("bulk_fd")
    channel = protocol.BlockingChannel(rfd, wfd, bulk if type(bulk) is int else None)
    worker = Worker(channel, config)
    worker.apply_limits()
    # Every import is done: the walls go up now, before any request (and so any code) is read.
    report = walls.apply_inner({**config, **worker.initial_limits()})
    channel.on_header = worker.before_payload
    channel.check_target = worker.check_ascii
    channel.send({"op": "ready", "pid": os.getpid(), "base_vm": worker.base_vm, "walls": report})
    worker.serve()


if __name__ == "__main__":
    main()
