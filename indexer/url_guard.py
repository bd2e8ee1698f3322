"""Where catalog downloads may go (SSRF guard) and how long they may take (deadlines).

A catalog is data from outside: its URLs must not make the indexer fetch from the machine
itself or its private network (cloud metadata at 169.254.169.254, an admin port on
127.0.0.1, a database on 10.x). Every URL, and every redirect hop, is checked:
- the scheme is http or https;
- the host is resolved and EVERY address must be public: loopback, private, link-local,
  multicast, unspecified, reserved and shared (CGNAT) ranges are refused, IPv4-mapped IPv6
  included, unless the user allows private addresses (``--allow-private-urls``).

:class:`GuardedBackend` applies the same check when httpx opens a TCP connection and connects
to the address it vetted, so a DNS answer that changes between the check and the connect
(DNS rebinding) cannot slip through. It also clamps every socket operation to the deadline
of the current download attempt (:func:`deadline`): a server that sends its headers or its
body one byte at a time cannot hold a download past that deadline, whatever the per-read
timeout. (httpx offers no public hook for the network backend; see :func:`guarded_transport`.)
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any
from urllib.parse import urlsplit

import httpcore
import httpx

from search.errors import ImageError

ALLOWED_SCHEMES = ("http", "https")
_state = threading.local()


class RefusedURL(ImageError):
    """A URL the guard does not fetch (scheme, or an address that is not public)."""


class ResolveError(ConnectionError):
    """The host name did not resolve (worth another attempt: DNS hiccups)."""


def check_scheme(url: str) -> None:
    scheme = urlsplit(url).scheme.lower()
    if scheme not in ALLOWED_SCHEMES:
        raise RefusedURL(f"refused URL: scheme {scheme or '(none)'!r} (only http and https)")


def is_public(address: str) -> bool:
    """True for a globally routable unicast address."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def vetted_addresses(host: str, port: int, allow_private: bool) -> list[str]:
    """Resolve ``host``; all its addresses, or RefusedURL when one of them is not public."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise ResolveError(f"cannot resolve host {host!r}") from exc
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not allow_private:
        blocked = [a for a in addresses if not is_public(a)]
        if blocked:
            raise RefusedURL(
                f"refused URL: {host} resolves to a private, loopback or link-local address "
                f"({blocked[0]}); allow it with --allow-private-urls"
            )
    return addresses


def check_url(url: str, allow_private: bool) -> None:
    """Refuse ``url`` early, with a clear reason (the connection is checked again)."""
    check_scheme(url)
    parts = urlsplit(url)
    if not parts.hostname:
        raise RefusedURL("refused URL: no host")
    port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
    vetted_addresses(parts.hostname, port, allow_private)


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Every socket operation of this thread inside the block ends by ``seconds`` from now
    (or by the enclosing block's deadline, when that comes first)."""
    previous = getattr(_state, "deadline", None)
    at = time.monotonic() + seconds
    _state.deadline = at if previous is None else min(at, previous)
    try:
        yield
    finally:
        _state.deadline = previous


def _clamp(timeout: float | None, error: type[Exception]) -> float | None:
    at = getattr(_state, "deadline", None)
    if at is None:
        return timeout
    left = at - time.monotonic()
    if left <= 0:
        raise error("deadline of the download passed")
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    """A connection whose reads and writes end by the current attempt's deadline."""

    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _clamp(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, _clamp(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        tls = self._inner.start_tls(
            ssl_context, server_hostname, _clamp(timeout, httpcore.ConnectTimeout)
        )
        return _DeadlineStream(tls)

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class GuardedBackend(httpcore.SyncBackend):
    """Connects only to vetted addresses, with deadline-clamped sockets."""

    def __init__(self, allow_private: bool) -> None:
        self.allow_private = allow_private

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        last: Exception | None = None
        for address in vetted_addresses(host, port, self.allow_private):
            try:
                stream = super().connect_tcp(
                    address,
                    port,
                    _clamp(timeout, httpcore.ConnectTimeout),
                    local_address,
                    socket_options,
                )
            except httpcore.ConnectError as exc:
                last = exc
                continue
            return _DeadlineStream(stream)
        raise last or httpcore.ConnectError(f"cannot connect to {host}")


def guarded_transport(allow_private: bool, limits: httpx.Limits) -> httpx.HTTPTransport:
    """httpx's own transport, its connection pool rebuilt on :class:`GuardedBackend`.

    httpx creates its httpcore pool inside ``HTTPTransport`` without a network-backend
    parameter; the pool itself takes one. tests/reliability/test_hostile_urls.py fails if
    this ever stops applying (the drip and rebinding tests).
    """
    transport = httpx.HTTPTransport(limits=limits)
    transport._pool = httpcore.ConnectionPool(  # noqa: SLF001
        ssl_context=httpx.create_ssl_context(),
        max_connections=limits.max_connections,
        max_keepalive_connections=limits.max_keepalive_connections,
        keepalive_expiry=limits.keepalive_expiry,
        network_backend=GuardedBackend(allow_private),
    )
    return transport
