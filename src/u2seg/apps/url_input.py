"""Fetching an image by URL for the service, behind an address guard.

A server that fetches URLs for its clients can be made to reach what only it can reach: its own
loopback services, the private network, a cloud's metadata endpoint (169.254.169.254). So:

* http and https only, no user name or password in the URL, no headers of the client's request
  forwarded (no cookies, no keys);
* the host name is resolved here, every address it resolves to is checked, and the connection
  goes to the checked address (TLS still verifies the name): a second DNS answer cannot swap in
  another address between the check and the connection;
* refused: loopback, private, shared (100.64/10), link-local, multicast, reserved and unspecified
  addresses, in IPv4 and IPv6, including IPv4 inside IPv6 (mapped ``::ffff:a.b.c.d``, 6to4,
  Teredo, NAT64 ``64:ff9b::/96``), unless allowed (``allow``: networks, or all private ones);
* redirects are followed (at most ``max_redirects``), each one checked like the first URL;
* the body is read in chunks within ``max_bytes`` and the whole fetch within ``timeout`` seconds,
  however slowly the other side sends.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
import time
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass, field

from .http_errors import ApiError, human_bytes, one_line

__all__ = ["UrlGuard", "fetch_url", "DEFAULT_URL_TIMEOUT", "MAX_REDIRECTS", "MAX_URL_LENGTH"]

DEFAULT_URL_TIMEOUT = 15.0
MAX_REDIRECTS = 5
MAX_URL_LENGTH = 2048
CHUNK = 64 * 1024
USER_AGENT = "u2seg-url-fetch"

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def _embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address carried inside an IPv6 one (mapped, 6to4, Teredo client, NAT64), if any."""
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def _is_public(address: IPAddress) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and (address.ipv4_mapped is not None or address in _NAT64):
        return _is_public(_embedded_ipv4(address))  # type: ignore[arg-type]  # only the IPv4 inside counts
    embedded = _embedded_ipv4(address)
    if embedded is not None and not _is_public(embedded):
        return False
    return (address.is_global and not address.is_multicast and not address.is_reserved
            and not address.is_unspecified and not address.is_loopback and not address.is_link_local)


@dataclass(frozen=True)
class UrlGuard:
    """Which addresses the service may fetch from: public ones, plus ``allow`` (networks), or
    everything with ``allow_all_private``."""

    allow: Sequence[IPNetwork] = field(default_factory=tuple)
    allow_all_private: bool = False

    @classmethod
    def from_option(cls, values: Sequence[str] | None) -> UrlGuard:
        """``--allow-private-urls`` as given: ``None`` (not given) → public only; ``[]`` (given with
        no value) → every address; networks such as ``10.1.0.0/16`` → those too."""
        if values is None:
            return cls()
        if not values:
            return cls(allow_all_private=True)
        try:
            return cls(allow=tuple(ipaddress.ip_network(v, strict=False) for v in values))
        except ValueError as exc:
            raise ValueError(f"--allow-private-urls: {exc}") from None

    def permits(self, address: IPAddress) -> bool:
        if self.allow_all_private or _is_public(address):
            return True
        candidates = [address]
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            candidates.append(embedded)
        return any(a in net for a in candidates for net in self.allow if a.version == net.version)


@dataclass
class _Target:
    scheme: str
    host: str
    port: int
    path: str


def _parse(url: str) -> _Target:
    if len(url) > MAX_URL_LENGTH:
        raise ApiError(422, f"url is longer than {MAX_URL_LENGTH} characters")
    if any(ord(c) < 33 or ord(c) == 127 for c in url):
        raise ApiError(422, "url contains spaces or control characters")
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ApiError(422, f"invalid url ({one_line(str(exc))})") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise ApiError(422, f"url must be http:// or https://, not {scheme + ':' if scheme else 'a relative one'}")
    if parts.username is not None or parts.password is not None:
        raise ApiError(422, "url must not carry a user name or password")
    host = parts.hostname
    if not host:
        raise ApiError(422, "url has no host")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return _Target(scheme, host, port or (443 if scheme == "https" else 80), path)


def _resolve(target: _Target, guard: UrlGuard) -> IPAddress:
    """The checked address to connect to: every address the name resolves to must be permitted
    (a name that resolves to a public and a private address is refused)."""
    try:
        literal = ipaddress.ip_address(target.host)
        addresses: list[IPAddress] = [literal]
    except ValueError:
        try:
            infos = socket.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as exc:
            raise ApiError(502, f"cannot resolve host {target.host!r} ({one_line(str(exc))})") from None
        addresses = []
        for info in infos:
            text = str(info[4][0]).split("%", 1)[0]  # drop an IPv6 zone
            address = ipaddress.ip_address(text)
            if address not in addresses:
                addresses.append(address)
        if not addresses:
            raise ApiError(502, f"host {target.host!r} has no address") from None
    refused = [a for a in addresses if not guard.permits(a)]
    if refused:
        raise ApiError(403, f"url host {target.host!r} is at a non-public address ({refused[0]}); "
                            f"the server does not fetch from it")
    return addresses[0]


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to a checked address, with the certificate verified for the URL's host name."""

    def __init__(self, host: str, port: int, address: str, timeout: float, context: ssl.SSLContext) -> None:
        super().__init__(host, port, timeout=timeout, context=context)
        self._address = address

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)  # type: ignore[attr-defined]


class _PinnedHTTPConnection(http.client.HTTPConnection):
    def __init__(self, host: str, port: int, address: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


def fetch_url(url: str, *, guard: UrlGuard, max_bytes: int, timeout: float = DEFAULT_URL_TIMEOUT,
              max_redirects: int = MAX_REDIRECTS, context: ssl.SSLContext | None = None) -> tuple[bytes, str]:
    """The body and content type at ``url``, fetched behind ``guard`` (blocking: call it from a
    worker thread).

    Errors are :class:`ApiError`: 422 bad URL, 403 refused address, 413 body over ``max_bytes``,
    502 unreachable host or an error status, 504 past ``timeout``.
    """
    deadline = time.monotonic() + timeout
    context = context or ssl.create_default_context()
    current = url
    for _ in range(max_redirects + 1):
        target = _parse(current)
        address = _resolve(target, guard)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _timed_out(timeout)
        connection: http.client.HTTPConnection
        if target.scheme == "https":
            connection = _PinnedHTTPSConnection(target.host, target.port, str(address), remaining, context)
        else:
            connection = _PinnedHTTPConnection(target.host, target.port, str(address), remaining)
        try:
            try:
                connection.request("GET", target.path, headers={"User-Agent": USER_AGENT, "Accept": "image/*",
                                                                "Accept-Encoding": "identity"})
                response = connection.getresponse()
            except TimeoutError:
                raise _timed_out(timeout) from None
            except (OSError, http.client.HTTPException) as exc:
                raise ApiError(502, f"cannot fetch url from {target.host!r} ({one_line(str(exc)) or type(exc).__name__})") \
                    from None
            if response.status in (301, 302, 303, 307, 308):
                location = response.getheader("Location")
                if not location:
                    raise ApiError(502, f"url answered {response.status} without a Location")
                current = urllib.parse.urljoin(current, location)
                continue
            if response.status != 200:
                raise ApiError(502, f"url answered {response.status} {one_line(response.reason or '')}".rstrip())
            length = response.getheader("Content-Length")
            if length is not None and length.isdigit() and int(length) > max_bytes:
                raise ApiError(413, f"image at url is {human_bytes(int(length))}, over the limit of "
                                    f"{human_bytes(max_bytes)}")
            body = _read_body(connection, response, max_bytes, deadline, timeout)
            return body, (response.getheader("Content-Type") or "").split(";", 1)[0].strip().lower()
        finally:
            connection.close()
    raise ApiError(502, f"url redirects more than {max_redirects} times")


def _read_body(connection: http.client.HTTPConnection, response: http.client.HTTPResponse, max_bytes: int,
               deadline: float, timeout: float) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _timed_out(timeout)
        if connection.sock is not None:
            connection.sock.settimeout(remaining)
        try:
            chunk = response.read1(CHUNK)
        except TimeoutError:
            raise _timed_out(timeout) from None
        except (OSError, http.client.HTTPException) as exc:
            raise ApiError(502, f"the download broke off ({one_line(str(exc)) or type(exc).__name__})") from None
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > max_bytes:
            raise ApiError(413, f"image at url is over the limit of {human_bytes(max_bytes)}")
        chunks.append(chunk)


def _timed_out(timeout: float) -> ApiError:
    return ApiError(504, f"fetching the url took longer than {timeout:g} s")
