"""Sources for ``load_context``: text, a file, a folder, a glob, a URL.

Each loader returns a ``LoadedSource``. Paths must resolve (symlinks followed, ``..`` collapsed)
inside one of the allowed roots; URLs are off unless allowed, and by default may only reach public
addresses, checked for every redirect hop and again at connect time (so a host name cannot be
re-pointed at a private address between the check and the connection). Reading never blocks the
event loop: files are read and decoded on worker threads, in batches.
"""

from __future__ import annotations

import codecs
import glob as _glob
import ipaddress
import os
import socket
import stat
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import anyio.to_thread
import httpcore
import httpx

from rlm_mcp.errors import (
    InvalidInput,
    PathNotAllowed,
    SourceError,
    TooLarge,
    UrlNotAllowed,
)

__all__ = [
    "LoadedSource",
    "LoadLimits",
    "Progress",
    "resolve_path",
    "load_text",
    "load_path",
    "load_glob",
    "load_url",
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
_BINARY_TYPES = ("image/", "audio/", "video/", "font/", "application/octet-stream",
                 "application/pdf", "application/zip", "application/gzip", "application/x-")  # fmt: skip
_TEXTLIKE_APP = ("application/x-yaml", "application/x-sh", "application/x-javascript",
                 "application/x-www-form-urlencoded", "application/x-ndjson")  # fmt: skip


@dataclass
class LoadedSource:
    text: str
    files: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


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


def _resolved_roots(roots) -> list[Path]:
    resolved = [Path(r).expanduser().resolve() for r in roots]
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
    candidate = Path(path).expanduser()
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


def _read_batch(batch: list[tuple[str, Path, int]]) -> list[tuple[str, str | None, bool, int]]:
    """Read and decode files on a worker thread: (shown, text, replaced, bytes read). ``text`` is
    None for a binary file, and ``bytes read`` is -1 for a file that could not be read."""
    out = []
    for shown, path, _size in batch:
        try:
            data = path.read_bytes()
        except OSError:
            out.append((shown, None, False, -1))
            continue
        text, replaced = _decode(data)
        out.append((shown, text, replaced, len(data)))
    return out


async def _read_plan(
    plan: _Plan, what: str, limits: LoadLimits, progress: Progress | None
) -> LoadedSource:
    total = sum(size for _, _, size in plan.entries)
    if total > limits.max_bytes:
        raise _too_big(what, total, limits)
    step = max(_BATCH_BYTES // 8, total // 50)  # ~2% of the bytes per progress report
    parts: list[str] = []
    files: list[str] = []
    binary: list[str] = []
    unreadable: list[str] = []
    replaced: list[str] = []
    done = 0
    i = 0
    while i < len(plan.entries):
        batch, size = [], 0
        while i < len(plan.entries) and len(batch) < _BATCH_FILES and (not batch or size < step):
            batch.append(plan.entries[i])
            size += plan.entries[i][2]
            i += 1
        for shown, text, bad, nbytes in await anyio.to_thread.run_sync(_read_batch, batch):
            if nbytes < 0:
                unreadable.append(shown)
                continue
            done += nbytes
            if done > limits.max_bytes:  # files grew since they were listed
                raise _too_big(what, done, limits)
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

    skipped = plan.skipped + unreadable + binary + plan.outside
    warnings = list(plan.warnings)
    for label, names in (
        ("binary files", binary),
        ("unreadable files", plan.skipped + unreadable),
        (f"files leading outside the allowed folders (allow more with {ROOT_FLAG})", plan.outside),
    ):
        if names:
            warnings.append(f"Skipped {len(names)} {label}: {_some(names)}.")
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
    return LoadedSource("".join(parts), files, skipped, warnings)


def _some(names: list[str], limit: int = 10) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


async def load_path(path: str, limits: LoadLimits, progress: Progress | None = None) -> LoadedSource:
    """A file's text, or every text file under a folder, each after a ``==> path <==`` line."""
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
    ((shown, text, replaced, nbytes),) = await anyio.to_thread.run_sync(
        _read_batch, [(_display(target, roots), target, st.st_size)]
    )
    if nbytes < 0:
        raise SourceError(f"Could not read {path!r} (permission denied or removed); check the file.")
    if nbytes > limits.max_bytes:
        raise _too_big(f"The file {path!r}", nbytes, limits)
    if text is None:
        raise SourceError(
            f"{path!r} looks binary (NUL bytes or mostly undecodable); only text files can be loaded."
        )
    warnings = [f"{shown} is not valid UTF-8; undecodable bytes became U+FFFD."] if replaced else []
    return LoadedSource(text, [shown], [], warnings)


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


# ---------------------------------------------------------------- URLs


def _refused_kind(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Why ``ip`` may not be fetched (e.g. "loopback"), or None for a public address."""
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = [ip.ipv4_mapped, ip.sixtofour, ip.teredo[1] if ip.teredo else None]
        if ip in _NAT64:
            embedded.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
        for inner in embedded:
            if inner is not None and (kind := _refused_kind(inner)):
                return kind
    for attr, kind in (
        ("is_unspecified", "unspecified"),
        ("is_loopback", "loopback"),
        ("is_link_local", "link-local"),
        ("is_multicast", "multicast"),
        ("is_private", "private"),
        ("is_reserved", "reserved"),
        ("is_site_local", "site-local"),
    ):
        if getattr(ip, attr, False):
            return kind
    return None if ip.is_global else "non-public"


_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


async def _checked_addresses(host: str, port: int, timeout: float) -> list[str]:
    """Resolve ``host`` and return its addresses, refusing the lot if any is not public."""
    try:
        with anyio.fail_after(timeout):
            infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except TimeoutError as exc:
        raise SourceError(f"Looking up the host {host!r} timed out after {timeout:g} s.") from exc
    except OSError as exc:
        raise SourceError(f"Could not resolve the host {host!r}: {exc}. Check the URL.") from exc
    addresses = []
    for *_, sockaddr in infos:
        address = str(sockaddr[0]).split("%", 1)[0]  # drop an IPv6 scope id
        kind = _refused_kind(ipaddress.ip_address(address))
        if kind:
            raise UrlNotAllowed(
                f"{host!r} resolves to {address}, {'an' if kind[0] in 'aeiou' else 'a'} {kind} address. "
                "Only public addresses can be "
                f"loaded, to protect the local network; start the server with {ALLOW_PRIVATE_FLAG} "
                "to allow local and private ones."
            )
        addresses.append(address)
    if not addresses:
        raise SourceError(f"The host {host!r} has no address. Check the URL.")
    return addresses


class _PinnedBackend:
    """An httpcore network backend that checks the address at connect time and connects to the
    checked IP, so DNS cannot change between our check and the connection (TLS still uses the
    host name, which httpcore passes to start_tls separately)."""

    def __init__(self, inner, timeout: float) -> None:
        self._inner, self._timeout = inner, timeout

    async def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        addresses = await _checked_addresses(host, port, self._timeout)
        for address in addresses[:-1]:
            try:
                return await self._inner.connect_tcp(address, port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout, OSError):
                continue  # try the next address; the last one's error is the one reported
        return await self._inner.connect_tcp(addresses[-1], port, timeout, local_address, socket_options)

    def __getattr__(self, name):  # sleep, connect_unix_socket: unchanged
        return getattr(self._inner, name)


def _default_transport(limits: LoadLimits) -> httpx.AsyncBaseTransport:
    transport = httpx.AsyncHTTPTransport(retries=0)
    pool = getattr(transport, "_pool", None)
    if not limits.allow_private_urls and hasattr(pool, "_network_backend"):
        pool._network_backend = _PinnedBackend(pool._network_backend, limits.url_timeout)
    return transport


async def _check_url(url: httpx.URL, limits: LoadLimits) -> None:
    if url.scheme not in ("http", "https"):
        raise UrlNotAllowed(
            f"Only http and https URLs can be loaded, not {url.scheme or 'no scheme'!r} in {str(url)!r}."
        )
    if not url.host:
        raise InvalidInput(
            f"The URL {str(url)!r} has no host; pass a full URL like https://example.com/file.txt."
        )
    if not limits.allow_private_urls:
        port = url.port or (443 if url.scheme == "https" else 80)
        await _checked_addresses(url.host, port, limits.url_timeout)


async def load_url(
    url: str,
    limits: LoadLimits,
    progress: Progress | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> LoadedSource:
    """The text at an http(s) URL, following up to ``max_redirects`` redirects, each re-checked."""
    if not limits.allow_url:
        raise UrlNotAllowed(f"URL loading is off; start the server with {ALLOW_URL_FLAG} to load URLs.")
    try:
        current = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise InvalidInput(f"Invalid URL {url!r}: {exc}. Pass a full http(s) URL.") from exc
    timeout = limits.url_timeout
    client = httpx.AsyncClient(
        transport=transport or _default_transport(limits),
        follow_redirects=False,
        timeout=timeout,
        trust_env=False,  # an environment proxy would bypass the address checks
        headers={"User-Agent": "rlm-mcp", "Accept": "text/*, application/json, */*;q=0.5"},
    )
    async with client:
        for _hop in range(limits.max_redirects + 1):
            await _check_url(current, limits)
            try:
                response = await client.send(client.build_request("GET", current), stream=True)
                try:
                    if response.has_redirect_location:
                        try:
                            current = current.join(response.headers["location"])
                        except httpx.InvalidURL as exc:
                            raise SourceError(f"{current} redirected to an invalid URL: {exc}.") from exc
                        continue
                    if not response.is_success:
                        raise SourceError(
                            f"{current} answered HTTP {response.status_code} {response.reason_phrase}; "
                            "check the URL."
                        )
                    return await _read_body(response, str(current), limits, progress)
                finally:
                    await response.aclose()
            except httpx.TimeoutException as exc:
                raise SourceError(
                    f"Loading {current} timed out (no progress for {timeout:g} s); the server is slow or "
                    "unreachable. Try again later or load a smaller resource."
                ) from exc
            except httpx.RequestError as exc:
                raise SourceError(f"Loading {current} failed: {type(exc).__name__}: {exc}.") from exc
    raise SourceError(
        f"{url} redirected more than {limits.max_redirects} times (last to {current}); "
        "pass the final URL directly."
    )


async def _read_body(
    response: httpx.Response, url: str, limits: LoadLimits, progress: Progress | None
) -> LoadedSource:
    ctype = response.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype.startswith(_BINARY_TYPES) and not ctype.startswith(_TEXTLIKE_APP):
        raise SourceError(f"{url} is {ctype}, not text; only text can be loaded.")
    declared = response.headers.get("content-length", "")
    total = int(declared) if declared.isdigit() else None
    if total is not None and total > limits.max_bytes:
        raise _too_big(url, total, limits)
    chunks: list[bytes] = []
    size, reported = 0, 0
    step = max(1 << 20, (total or 0) // 50)
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > limits.max_bytes:
            raise TooLarge(
                f"{url} sent more than the {_mib(limits.max_bytes)} load cap; start the server "
                f"with {MAX_BYTES_FLAG} set higher, or load a smaller resource."
            )
        chunks.append(chunk)
        if progress is not None and size - reported >= step:
            reported = size
            await progress(size, total, f"downloaded {_mib(size)}")
    data = b"".join(chunks)
    del chunks
    charset = response.charset_encoding or "utf-8"
    warnings = []
    try:
        codecs.lookup(charset)
    except LookupError:
        warnings.append(f"Unknown charset {charset!r}; decoded as UTF-8.")
        charset = "utf-8"
    wide = codecs.lookup(charset).name.startswith(("utf-16", "utf-32"))
    if not wide and b"\0" in data[:_SNIFF]:
        raise SourceError(f"{url} looks binary (NUL bytes); only text can be loaded.")
    text = await anyio.to_thread.run_sync(_decode_charset, data, charset)
    if text.count("\ufffd") > data.count(b"\xef\xbf\xbd"):
        warnings.append(f"{url} had bytes that are not valid {charset}; they became U+FFFD.")
    return LoadedSource(text, [str(response.url)], [], warnings)


def _decode_charset(data: bytes, charset: str) -> str:
    return data.decode(charset, errors="replace")
