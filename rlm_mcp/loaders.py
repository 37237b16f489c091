"""Sources for ``load_context``: text, a file, a folder, a glob (URLs are in ``urls.py``).

Each loader returns a ``LoadedSource``. Paths must resolve (symlinks followed, ``..`` collapsed)
inside one of the allowed roots. Reading never blocks the event loop: files are read and decoded
on worker threads, in batches.
"""

from __future__ import annotations

import codecs
import glob as _glob
import os
import stat
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import anyio.from_thread
import anyio.to_thread

from rlm_mcp import converters
from rlm_mcp.errors import (
    InvalidInput,
    PathNotAllowed,
    SourceError,
    TooLarge,
)

__all__ = [
    "LoadedSource",
    "LoadLimits",
    "Progress",
    "resolve_path",
    "load_text",
    "load_path",
    "load_glob",
]

Progress = Callable[[float, "float | None", str], Awaitable[None]]
"""``async progress(done, total, message)``; ``total`` is None when unknown."""

# Flag names quoted in error messages, so the model can tell the user what to change.
ROOT_FLAG = "--root"
ALLOW_URL_FLAG = "--allow-url"
ALLOW_PRIVATE_FLAG = "--allow-private-urls"
MAX_BYTES_FLAG = "--max-load-mb"
MAX_FILES_FLAG = "--max-files"

# Folders never worth loading; any name starting with "." (.git, .venv, .cache) is skipped too.
SKIP_DIRS = frozenset({"__pycache__", "node_modules", "venv", "site-packages"})
_SNIFF = 8192  # bytes examined to decide that a file is binary
_BINARY_REPLACED = 0.3  # share of undecodable chars in the sniffed part that means "binary"
_BATCH_FILES = 64
_BATCH_BYTES = 8 << 20


@dataclass
class LoadedSource:
    text: str
    files: list[str] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)  # {path, reason}
    warnings: list[str] = field(default_factory=list)
    converters: dict[str, str] = field(default_factory=dict)  # path -> converter, for non-plain files
    # A plain-text file (by name and first bytes) that the session may copy as it is, checking it
    # as UTF-8 on the way, instead of reading it here; ``text`` is empty then (see ``load_path``).
    file: Path | None = None


@dataclass
class LoadLimits:
    max_bytes: int = 512 << 20
    max_files: int = 20_000
    roots: list[Path] = field(default_factory=lambda: [Path.cwd()])
    allow_url: bool = False
    allow_private_urls: bool = False
    url_timeout: float = 30
    max_redirects: int = 5

    def __post_init__(self) -> None:
        self.roots = [Path(r) for r in self.roots]


def _mib(n: int) -> str:
    return f"{n / (1 << 20):,.1f} MiB"


def _too_big(what: str, size: int, limits: LoadLimits) -> TooLarge:
    return TooLarge(
        f"{what} is {_mib(size)} ({size:,} bytes), over the {_mib(limits.max_bytes)} load cap. "
        f"Load a smaller part (a sub-folder or a narrower glob), or start the server with "
        f"{MAX_BYTES_FLAG} set higher."
    )


# ---------------------------------------------------------------- paths


def _expand_user(path: str | Path) -> Path:
    """``~`` and ``~user`` expanded; an unknown user (or no home at all) is the caller's mistake."""
    try:
        return Path(path).expanduser()
    except RuntimeError as exc:  # "Could not determine home directory."
        raise InvalidInput(
            f"{str(path)!r} starts with '~' but that home folder is unknown ({exc}); "
            f"pass a path relative to the first root, or an absolute one."
        ) from exc


def _resolved_roots(roots) -> list[Path]:
    resolved = [_expand_user(r).resolve() for r in roots]
    if not resolved:
        raise PathNotAllowed(f"No folders are allowed for loading; start the server with {ROOT_FLAG} DIR.")
    return resolved


def _inside(path: Path, roots: list[Path]) -> Path | None:
    """The root that holds ``path`` (already resolved), or None."""
    return next((r for r in roots if path == r or path.is_relative_to(r)), None)


def _not_allowed(shown: str, resolved: Path, roots: list[Path]) -> PathNotAllowed:
    allowed = ", ".join(str(r) for r in roots)
    return PathNotAllowed(
        f"{shown!r} resolves to {resolved}, which is outside the allowed folders ({allowed}). "
        f"Pass a path inside one of them (relative paths start at {roots[0]}), or start the server "
        f"with {ROOT_FLAG} DIR to allow another folder."
    )


def resolve_path(path: str, roots) -> Path:
    """``path`` resolved (relative to the first root) and checked to lie inside a root."""
    if not isinstance(path, str) or not path.strip():
        raise InvalidInput("path must be a non-empty string: a file or folder inside the allowed roots.")
    resolved_roots = _resolved_roots(roots)
    try:
        candidate = _expand_user(path)
    except ValueError as exc:  # a NUL byte in a '~user' name
        raise InvalidInput(f"{path!r} is not a usable path ({exc}); pass a plain file or folder name.") from exc
    if not candidate.is_absolute():
        candidate = resolved_roots[0] / candidate
    try:
        resolved = candidate.resolve()
    except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop (Python < 3.13)
        raise SourceError(f"Cannot resolve {path!r}: {exc}.") from exc
    except ValueError as exc:  # a NUL byte, or a lone surrogate the file system cannot encode
        raise InvalidInput(f"{path!r} is not a usable path ({exc}); pass a plain file or folder name.") from exc
    if _inside(resolved, resolved_roots) is None:
        raise _not_allowed(path, resolved, resolved_roots)
    try:
        exists = resolved.exists()
    except OSError as exc:  # e.g. a name too long for the file system
        raise SourceError(f"Cannot look at {path!r}: {exc.strerror or exc}.") from exc
    if not exists:
        raise SourceError(
            f"No such file or folder: {path!r} (looked at {resolved}). Relative paths start at "
            f"{resolved_roots[0]}; check the name, or use glob to find files."
        )
    return resolved


def _display(path: Path, roots: list[Path]) -> str:
    root = _inside(path, roots)
    return path.relative_to(root).as_posix() if root is not None and path != root else str(path)


# ---------------------------------------------------------------- decoding


def _decode(data: bytes) -> tuple[str | None, bool]:
    """(text, had_replacements); text is None when the bytes look binary."""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            return data.decode("utf-16"), False
        except UnicodeDecodeError:
            pass
    if b"\0" in data[:_SNIFF]:
        return None, False
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8) :]
    try:
        return data.decode("utf-8"), False
    except UnicodeDecodeError:
        pass
    text = data.decode("utf-8", errors="replace")
    sample = text[:_SNIFF]
    if sample and sample.count("\ufffd") > _BINARY_REPLACED * len(sample):
        return None, False
    return text, True


# ---------------------------------------------------------------- files and folders


@dataclass
class _Plan:
    """Files to read, in order, with what was left out while listing them."""

    entries: list[tuple[str, Path, int]] = field(default_factory=list)  # (shown, path, size)
    skipped: list[str] = field(default_factory=list)
    outside: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    hidden: int = 0


def _skip_dir(name: str) -> bool:
    return name.startswith(".") or name in SKIP_DIRS


def _add_file(
    plan: _Plan, shown: str, path: Path, roots: list[Path], limits: LoadLimits, check: bool = False
) -> None:
    """Add one listed file to the plan, enforcing the caps. Symlinks (and every glob match, which a
    '..' or a symlinked folder may lead out) are resolved and must stay inside a root."""
    if check or path.is_symlink():
        try:
            target = path.resolve()
        except (OSError, RuntimeError):
            plan.skipped.append(shown)
            return
        if _inside(target, roots) is None:
            plan.outside.append(shown)
            return
    try:
        st = path.stat()
    except OSError:
        plan.skipped.append(shown)
        return
    if not stat.S_ISREG(st.st_mode):
        return  # sockets, fifos, devices: never read (a fifo would block forever)
    plan.entries.append((shown, path, st.st_size))
    if len(plan.entries) > limits.max_files:
        raise TooLarge(
            f"More than {limits.max_files:,} files match; load a sub-folder or a narrower glob, "
            f"or start the server with {MAX_FILES_FLAG} set higher."
        )


def _plan_folder(folder: Path, roots: list[Path], limits: LoadLimits) -> _Plan:
    plan = _Plan()
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        base = Path(dirpath)
        kept = []
        for d in sorted(dirnames):
            if _skip_dir(d):
                plan.hidden += 1
            elif (base / d).is_symlink():
                shown = (base / d).relative_to(folder).as_posix()
                plan.warnings.append(f"Did not follow the folder symlink {shown}; load its target directly.")
            else:
                kept.append(d)
        dirnames[:] = kept
        for name in filenames:
            if name.startswith("."):
                plan.hidden += 1
                continue
            path = base / name
            _add_file(plan, path.relative_to(folder).as_posix(), path, roots, limits)
    plan.entries.sort(key=lambda e: e[0])
    return plan


_Read = tuple[str, "str | None", bool, int, "converters.Converted | None"]


def _read_batch(batch: list[tuple[str, Path, int]], budget: converters.Budget) -> list[_Read]:
    """Read and decode files on a worker thread: (shown, text, replaced, bytes read, converted).
    ``text`` is None for a binary file or a document (then ``converted`` has its text or why it
    was skipped), and ``bytes read`` is -1 for a file that could not be read."""
    out: list[_Read] = []
    for shown, path, _size in batch:
        anyio.from_thread.check_cancelled()  # a cancelled load stops after this file, not the batch
        try:
            data = path.read_bytes()
        except OSError:
            out.append((shown, None, False, -1, None))
            continue
        fmt = converters.find(shown, data[:16])
        if fmt is not None:
            out.append((shown, None, False, len(data), converters.convert_file(fmt, data, shown, budget)))
            continue
        text, replaced = _decode(data)
        if text is not None:
            budget.spend(len(text), shown)
        out.append((shown, text, replaced, len(data), None))
    return out


def _converted_parts(shown: str, conv: converters.Converted, source: LoadedSource, parts: list[str]) -> None:
    """A document's text under its header (an archive's members under theirs), and what it skipped."""
    for member, why in conv.skipped:
        source.skipped.append({"path": f"{shown}/{member}" if member else shown, "reason": why})
    if conv.parts:
        source.converters[shown] = conv.converter
    source.converters.update({f"{shown}/{m}": c for m, c in conv.converters.items()})
    for member, text in conv.parts:
        path = f"{shown}/{member}" if member else shown
        source.files.append(path)
        parts.append(f"==> {path} <==\n")
        if text:
            parts.append(text if text.endswith("\n") else text + "\n")


async def _read_plan(
    plan: _Plan, what: str, limits: LoadLimits, progress: Progress | None
) -> LoadedSource:
    total = sum(size for _, _, size in plan.entries)
    if total > limits.max_bytes:
        raise _too_big(what, total, limits)
    step = max(_BATCH_BYTES // 8, total // 50)  # ~2% of the bytes per progress report
    parts: list[str] = []
    source = LoadedSource("")
    files = source.files
    binary: list[str] = []
    unreadable: list[str] = []
    replaced: list[str] = []
    budget = converters.Budget(limits.max_bytes, limits.max_files)
    done = 0
    i = 0
    while i < len(plan.entries):
        batch, size = [], 0
        while i < len(plan.entries) and len(batch) < _BATCH_FILES and (not batch or size < step):
            batch.append(plan.entries[i])
            size += plan.entries[i][2]
            i += 1
        for shown, text, bad, nbytes, conv in await anyio.to_thread.run_sync(_read_batch, batch, budget):
            if nbytes < 0:
                unreadable.append(shown)
                continue
            done += nbytes
            if done > limits.max_bytes:  # files grew since they were listed
                raise _too_big(what, done, limits)
            if conv is not None:
                _converted_parts(shown, conv, source, parts)
                if conv.replaced:
                    replaced.append(shown)
                continue
            if text is None:
                binary.append(shown)
                continue
            files.append(shown)
            parts.append(f"==> {shown} <==\n")
            if text:
                parts.append(text if text.endswith("\n") else text + "\n")
            if bad:
                replaced.append(shown)
        if progress is not None:
            await progress(done, total, f"read {i:,} of {len(plan.entries):,} files")

    reasons = ((plan.skipped + unreadable, "unreadable"), (binary, "binary"),
               (plan.outside, "leads outside the allowed folders"))
    skipped = [{"path": p, "reason": why} for names, why in reasons for p in names] + source.skipped
    warnings = list(plan.warnings)
    for label, names in (
        ("binary files", binary),
        ("unreadable files", plan.skipped + unreadable),
        (f"files leading outside the allowed folders (allow more with {ROOT_FLAG})", plan.outside),
    ):
        if names:
            warnings.append(f"Skipped {len(names)} {label}: {_some(names)}.")
    if source.skipped:
        warnings.append(
            f"Skipped {len(source.skipped)} documents or archive members: "
            f"{_some([s['path'] + ' (' + s['reason'] + ')' for s in source.skipped], 5)}."
        )
    if replaced:
        warnings.append(
            f"{len(replaced)} files are not valid UTF-8; undecodable bytes became U+FFFD: {_some(replaced)}."
        )
    if plan.hidden:
        warnings.append(
            f"Skipped {plan.hidden} hidden or tool folders/files (names starting with '.', "
            f"{', '.join(sorted(SKIP_DIRS))}); pass such a path directly to load it."
        )
    if not files:
        raise SourceError(f"{what} has no readable text files. {' '.join(warnings)}".strip())
    return LoadedSource("".join(parts), files, skipped, warnings, source.converters)


def _some(names: list[str], limit: int = 10) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


async def load_path(path: str, limits: LoadLimits, progress: Progress | None = None,
                    copy_ok: bool = False) -> LoadedSource:
    """A file's text, or every text file under a folder, each after a ``==> path <==`` line.
    With ``copy_ok``, a single file that looks like plain text comes back unread (``file`` set),
    for the caller to copy and check (``SpillStore.copy_file``); if it is not strict UTF-8 after
    all, the caller asks again without ``copy_ok``."""
    target = await anyio.to_thread.run_sync(resolve_path, path, limits.roots)
    roots = await anyio.to_thread.run_sync(_resolved_roots, limits.roots)
    st = await anyio.to_thread.run_sync(target.stat)
    if stat.S_ISDIR(st.st_mode):
        plan = await anyio.to_thread.run_sync(_plan_folder, target, roots, limits)
        return await _read_plan(plan, f"The folder {path!r}", limits, progress)
    if not stat.S_ISREG(st.st_mode):
        raise SourceError(f"{path!r} is not a regular file or folder; pass a text file or a folder.")
    if st.st_size > limits.max_bytes:
        raise _too_big(f"The file {path!r}", st.st_size, limits)
    if copy_ok and await anyio.to_thread.run_sync(_plain_text, _display(target, roots), target):
        return LoadedSource("", [_display(target, roots)], file=target)
    ((shown, text, replaced, nbytes, conv),) = await anyio.to_thread.run_sync(
        _read_batch, [(_display(target, roots), target, st.st_size)], converters.Budget(limits.max_bytes, limits.max_files)
    )
    if nbytes < 0:
        raise SourceError(f"Could not read {path!r} (permission denied or removed); check the file.")
    if nbytes > limits.max_bytes:
        raise _too_big(f"The file {path!r}", nbytes, limits)
    if conv is not None:
        return _converted_file(path, shown, conv)
    if text is None:
        raise SourceError(
            f"{path!r} looks binary (NUL bytes or mostly undecodable); only text files can be loaded."
        )
    warnings = [f"{shown} is not valid UTF-8; undecodable bytes became U+FFFD."] if replaced else []
    return LoadedSource(text, [shown], [], warnings)


def _plain_text(shown: str, path: Path) -> bool:
    """Whether a file may be plain UTF-8 text (no converter for it, no NUL and no byte order mark
    in its first bytes), judged without reading the rest."""
    try:
        with open(path, "rb") as f:
            head = f.read(_SNIFF)
    except OSError:
        return False  # the usual read reports it
    return (converters.find(shown, head[:16]) is None and b"\0" not in head
            and not head.startswith((codecs.BOM_UTF8, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)))


def _converted_file(path: str, shown: str, conv: converters.Converted) -> LoadedSource:
    """One document loaded by itself: its text with no header (an archive's members with theirs)."""
    if not conv.parts:
        why = "; ".join(f"{m}: {r}" if m else r for m, r in conv.skipped[:5])
        raise SourceError(f"Could not read {path!r} as {conv.converter}: {why}.")
    source = LoadedSource("")
    parts: list[str] = []
    _converted_parts(shown, conv, source, parts)
    if conv.parts == [("", conv.parts[0][1])]:
        parts = [conv.parts[0][1]]  # a single document reads as a single text file does: no header
    warnings = [f"{shown} is not valid UTF-8; undecodable bytes became U+FFFD."] if conv.replaced else []
    if source.skipped:
        warnings.append(f"Skipped {len(source.skipped)} members (see skipped for why).")
    return LoadedSource("".join(parts), source.files, source.skipped, warnings, source.converters)


def _literal_prefix(pattern: str) -> str:
    parts = []
    for part in Path(pattern).parts:
        if _glob.has_magic(part):
            break
        parts.append(part)
    return os.path.join(*parts) if parts else ""


def _plan_glob(pattern: str, roots: list[Path], limits: LoadLimits) -> tuple[_Plan, Path]:
    base = roots[0]
    absolute = os.path.isabs(pattern)
    literal = _literal_prefix(pattern)
    prefix = (Path(literal or os.sep) if absolute else base / literal).resolve()
    if _inside(prefix, roots) is None:
        raise _not_allowed(pattern, prefix, roots)
    if absolute:
        base = _inside(prefix, roots)  # type: ignore[assignment]
        matches = _glob.iglob(pattern, recursive=True)
    else:
        matches = (os.path.join(base, m) for m in _glob.iglob(pattern, root_dir=base, recursive=True))
    named = set(Path(pattern).parts)  # folders the pattern names on purpose are not skipped
    plan = _Plan()
    for match in matches:
        path = Path(match)
        if path.is_dir():
            continue
        try:
            rel = path.relative_to(base)
        except ValueError:  # a '..' in the pattern
            rel = Path(os.path.relpath(path, base))
        if any(p in SKIP_DIRS and p not in named for p in rel.parts[:-1]):
            plan.hidden += 1
            continue
        shown = _display(path.resolve(), roots) if ".." in rel.parts else rel.as_posix()
        _add_file(plan, shown, path, roots, limits, check=True)
    plan.entries.sort(key=lambda e: e[0])
    return plan, base


async def load_glob(pattern: str, limits: LoadLimits, progress: Progress | None = None) -> LoadedSource:
    """Every text file matching ``pattern`` (relative to the first root, ``**`` for subfolders)."""
    if not isinstance(pattern, str) or not pattern.strip():
        raise InvalidInput("glob must be a non-empty pattern such as '**/*.md' (relative to the first root).")
    roots = await anyio.to_thread.run_sync(_resolved_roots, limits.roots)
    try:
        plan, base = await anyio.to_thread.run_sync(_plan_glob, pattern, roots, limits)
    except ValueError as exc:  # a NUL byte, or a lone surrogate the file system cannot encode
        raise InvalidInput(f"The glob {pattern!r} is not a usable pattern ({exc}); use plain names, '*' and '**'.") from exc
    if not plan.entries and plan.outside:
        raise PathNotAllowed(
            f"Every file the glob {pattern!r} matched lies outside the allowed folders "
            f"({', '.join(map(str, roots))}), e.g. {plan.outside[0]}; start the server with "
            f"{ROOT_FLAG} DIR to allow another folder."
        )
    if not plan.entries and not plan.skipped and plan.hidden:
        raise SourceError(
            f"The glob {pattern!r} matched only files inside skipped folders "
            f"({', '.join(sorted(SKIP_DIRS))}); name the folder in the pattern to include it, "
            "e.g. 'node_modules/**/*.js'."
        )
    if not plan.entries and not plan.skipped:
        raise SourceError(
            f"The glob {pattern!r} matched no files under {base}. Patterns are relative to {base}; "
            "use '**/' to match in subfolders (e.g. '**/*.md'); hidden files need an explicit '.'."
        )
    return await _read_plan(plan, f"The glob {pattern!r}", limits, progress)


def load_text(text: str) -> LoadedSource:
    if not isinstance(text, str):
        raise InvalidInput(f"text must be a string, not {type(text).__name__}.")
    return LoadedSource(text)
