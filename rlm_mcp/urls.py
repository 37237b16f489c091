"""URL sources for ``load_context``: off unless allowed, public addresses only by default.

Addresses are checked for every redirect hop and again at connect time, so a host name cannot be
re-pointed at a private address between the check and the connection. Bodies stream with the
size cap; proxies from the environment are ignored (they would bypass the checks).
"""

from __future__ import annotations

import codecs
import ipaddress
import socket

import anyio
import httpcore
import httpx

from rlm_mcp.errors import InvalidInput, SourceError, TooLarge, UrlNotAllowed

from . import converters
from .loaders import (
    _SNIFF,
    ALLOW_PRIVATE_FLAG,
    ALLOW_URL_FLAG,
    MAX_BYTES_FLAG,
    LoadedSource,
    LoadLimits,
    Progress,
    _converted_file,
    _mib,
    _too_big,
)

__all__ = ["load_url"]

_BINARY_TYPES = ("image/", "audio/", "video/", "font/", "application/octet-stream",
                 "application/pdf", "application/zip", "application/gzip", "application/x-")  # fmt: skip
_TEXTLIKE_APP = ("application/x-yaml", "application/x-sh", "application/x-javascript",
                 "application/x-www-form-urlencoded", "application/x-ndjson")  # fmt: skip

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


# Documents a server names by their media type; read by the converters files on disk use.
_DOCUMENT_TYPES = {
    "text/html": "html",
    "application/xhtml+xml": "html",
    "application/pdf": "pdf",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "docx",
    "application/x-ipynb+json": "notebook",
    "application/gzip": "gzip",
    "application/x-gzip": "gzip",
    "application/x-bzip2": "bzip2",
    "application/x-xz": "xz",
    "application/zip": "zip",
    "application/x-tar": "tar",
}


def _document_format(ctype: str, url: httpx.URL):  # noqa: ANN202 - a converters format, or None
    """The converter for a response: by its media type, else by the name its URL path ends in
    (a PDF or a notebook is often served as application/octet-stream or text/plain)."""
    name = _DOCUMENT_TYPES.get(ctype)
    if name is not None:
        return next(f for f in converters.FORMATS if f.name == name)
    return converters.find(url.path.rsplit("/", 1)[-1]) if url.path else None


async def _read_body(
    response: httpx.Response, url: str, limits: LoadLimits, progress: Progress | None
) -> LoadedSource:
    ctype = response.headers.get("content-type", "").split(";")[0].strip().lower()
    fmt = _document_format(ctype, response.url)
    if fmt is None and ctype.startswith(_BINARY_TYPES) and not ctype.startswith(_TEXTLIKE_APP):
        raise SourceError(f"{url} is {ctype}, not text or a document format load_context reads "
                          "(PDF, Word, HTML, notebooks, compressed files, archives).")
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
    if fmt is not None:
        budget = converters.Budget(limits.max_bytes, limits.max_files)
        conv = await anyio.to_thread.run_sync(converters.convert_file, fmt, data, url, budget)
        return _converted_file(url, url, conv)
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
