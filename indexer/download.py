"""Downloading catalog images given by http(s) URL: bounded, verified, cached.

One httpx client per run (pooled keep-alive connections) serves a small thread pool. Each
download attempt has a connect timeout, a read timeout (silence between two reads), a
deadline for the headers and a total one for redirects, headers and body together (both
enforced on every socket operation, see :mod:`indexer.url_guard`), and a minimum average
rate once the body has had a few seconds: a server that drips bytes fails the attempt, it
cannot hold a cron run. Attempts are retried
(tenacity, exponential backoff) after connection errors, timeouts, bodies cut short, 429
and 5xx; other 4xx fail at once.

Redirects are followed here, at most ``max_redirects``, and every hop goes through the SSRF
guard (http/https only, public addresses only unless allowed). A body is accepted only when
its Content-Type is ``image/*`` (or a generic binary type), it is no larger than
``max_bytes``, it is as long as its Content-Length, and it decodes as an allowed raster
image (:func:`search.images.check_image`). Only then is it written to the
:class:`~indexer.url_cache.UrlCache` (atomically); the next run sends its ETag /
Last-Modified and a ``304`` reuses it: nothing is downloaded or embedded again.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from search.errors import ImageError
from search.images import DEFAULT_MAX_PIXELS, check_image, sniff_format

from .hashing import content_hash
from .url_cache import CacheEntry, UrlCache
from .url_guard import check_url, deadline, guarded_transport

log = logging.getLogger(__name__)
MAX_DOWNLOAD_BYTES = 50 * 1024 * 1024
USER_AGENT = "vsearch-indexer/0.1"
GENERIC_TYPES = ("", "application/octet-stream", "binary/octet-stream")


@dataclass(frozen=True)
class DownloadPolicy:
    """Limits of one download (the defaults suit a nightly catalog run)."""

    connect_timeout: float = 10.0
    read_timeout: float = 20.0  # longest silence between two reads
    header_timeout: float = 20.0  # from sending the request to the end of the headers
    total_timeout: float = 60.0  # one attempt: redirects, headers and body
    min_rate: float = 2048.0  # bytes/s over the body, checked once min_rate_after has passed
    min_rate_after: float = 5.0
    retries: int = 3
    backoff: float = 0.5  # seconds, doubled after each failed attempt
    max_bytes: int = MAX_DOWNLOAD_BYTES
    max_redirects: int = 5
    max_pixels: int = DEFAULT_MAX_PIXELS
    workers: int = 8
    allow_private: bool = False  # loopback / private / link-local hosts (a local mirror)
    user_agent: str = USER_AGENT


@dataclass(frozen=True)
class Fetched:
    """The outcome for one URL: where its bytes are, their hash, or why it failed."""

    url: str
    path: str = ""
    content_hash: str = ""
    status: str = "failed"  # downloaded | not-modified | failed
    error: str = ""

    @property
    def signature(self) -> str:
        """The item's change detector: the same bytes give the same signature."""
        return f"url:{self.content_hash}" if self.content_hash else ""


@dataclass
class Response:
    status: int
    data: bytes = b""
    headers: httpx.Headers = field(default_factory=httpx.Headers)


class _Retryable(Exception):
    """A failure worth another attempt (connection, timeout, short body, 429, 5xx)."""


def sniff_image(data: bytes) -> str | None:
    """The allowed image format the first bytes announce (lower case), or None."""
    fmt = sniff_format(data[:16])
    return fmt.lower() if fmt else None


@contextlib.contextmanager
def open_client(policy: DownloadPolicy) -> Iterator[httpx.Client]:
    """An httpx client for ``policy``: guarded connections, no automatic redirects."""
    limits = httpx.Limits(max_connections=max(4, 2 * policy.workers))
    timeout = httpx.Timeout(
        connect=policy.connect_timeout,
        read=policy.read_timeout,
        write=policy.read_timeout,
        pool=policy.total_timeout,
    )
    headers = {"User-Agent": policy.user_agent, "Accept-Encoding": "identity"}
    transport = guarded_transport(policy.allow_private, limits)
    with httpx.Client(
        transport=transport, timeout=timeout, headers=headers, follow_redirects=False
    ) as client:
        yield client


def get(
    client: httpx.Client, url: str, policy: DownloadPolicy, headers: dict[str, str] | None = None
) -> Response:
    """GET ``url`` with the policy's retries; ImageError when it gives up."""
    retrying = Retrying(
        stop=stop_after_attempt(policy.retries + 1),
        wait=wait_exponential(multiplier=policy.backoff, max=30),
        retry=retry_if_exception_type(_Retryable),
        reraise=True,
    )
    try:
        return retrying(_attempt, client, url, policy, headers or {})
    except _Retryable as exc:
        attempts = retrying.statistics.get("attempt_number", policy.retries + 1)
        raise ImageError(f"download failed after {attempts} attempt(s): {exc}") from None


def download_bytes(url: str, policy: DownloadPolicy | None = None) -> bytes:
    """The body of an image URL (no cache), with the policy's checks and retries."""
    policy = policy or DownloadPolicy()
    with open_client(policy) as client:
        return get(client, url, policy).data


def _attempt(
    client: httpx.Client, url: str, policy: DownloadPolicy, headers: dict[str, str]
) -> Response:
    """One attempt: follow redirects (each hop checked) within one total deadline."""
    with deadline(policy.total_timeout):
        for _ in range(policy.max_redirects + 1):
            try:
                check_url(url, policy.allow_private)
                with contextlib.ExitStack() as stack:
                    with deadline(policy.header_timeout):
                        resp = stack.enter_context(client.stream("GET", url, headers=headers))
                    if resp.is_redirect and "location" in resp.headers:
                        url = str(resp.url.join(resp.headers["location"]))
                        continue
                    return _finish(resp, policy)
            except httpx.TimeoutException:
                raise _Retryable("timed out") from None
            except httpx.RemoteProtocolError as exc:
                raise _Retryable(f"the server broke the response off ({exc})") from None
            except (httpx.TransportError, ConnectionError) as exc:
                raise _Retryable(f"{exc.__class__.__name__}: {exc}") from None
            except httpx.InvalidURL as exc:
                raise ImageError(f"download failed: invalid URL ({exc})") from None
    raise ImageError(f"download failed: more than {policy.max_redirects} redirects")


def _finish(resp: httpx.Response, policy: DownloadPolicy) -> Response:
    """Status, headers and the bounded body of a final (non-redirect) response."""
    if resp.status_code == 304:
        return Response(304, b"", resp.headers)
    if resp.status_code == 429 or resp.status_code >= 500:
        raise _Retryable(f"HTTP {resp.status_code}")
    if not 200 <= resp.status_code < 300:
        raise ImageError(f"download failed: HTTP {resp.status_code} {resp.reason_phrase}")
    _check_headers(resp.headers, policy.max_bytes)
    data = _read_body(resp, policy)
    length = resp.headers.get("content-length", "")
    if length.isdigit() and resp.num_bytes_downloaded != int(length):
        raise _Retryable(f"body cut short: {resp.num_bytes_downloaded:,} of {int(length):,} bytes")
    if sniff_image(data) is None:
        ctype = resp.headers.get("content-type", "")
        raise ImageError(
            f"not an image: served as {ctype!r} but the body is not an image format "
            "(an HTML error page?)"
        )
    check_image(data, max_pixels=policy.max_pixels)  # a broken body is never cached
    return Response(resp.status_code, data, resp.headers)


def _read_body(resp: httpx.Response, policy: DownloadPolicy) -> bytes:
    chunks: list[bytes] = []
    size = 0
    started = time.monotonic()
    for chunk in resp.iter_bytes():
        size += len(chunk)
        if size > policy.max_bytes:
            raise ImageError(f"download larger than {policy.max_bytes:,} bytes")
        chunks.append(chunk)
        elapsed = time.monotonic() - started
        if elapsed > policy.min_rate_after and size < policy.min_rate * elapsed:
            raise _Retryable(
                f"too slow: {size:,} bytes in {elapsed:.0f} s (minimum {policy.min_rate:,.0f} B/s)"
            )
    return b"".join(chunks)


def _check_headers(headers: httpx.Headers, max_bytes: int) -> None:
    ctype = headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if not ctype.startswith("image/") and ctype not in GENERIC_TYPES:
        raise ImageError(f"not an image: Content-Type {ctype!r}")
    length = headers.get("content-length", "")
    if length.isdigit() and int(length) > max_bytes:
        raise ImageError(f"download larger than {max_bytes:,} bytes ({int(length):,})")


class Downloader:
    """Fetch URLs concurrently into a :class:`UrlCache` with conditional GETs."""

    def __init__(self, cache: UrlCache, policy: DownloadPolicy | None = None) -> None:
        self.cache = cache
        self.policy = policy or DownloadPolicy()

    def fetch_all(self, urls: Iterable[str]) -> dict[str, Fetched]:
        """Fetch every distinct URL (a few threads, one client); never raises for one URL."""
        unique = list(dict.fromkeys(urls))
        if not unique:
            return {}
        workers = max(1, min(self.policy.workers, len(unique)))
        with (
            open_client(self.policy) as client,
            ThreadPoolExecutor(workers, thread_name_prefix="vsearch-download") as pool,
        ):
            got = pool.map(lambda url: self._fetch(client, url), unique)
            results = dict(zip(unique, got, strict=True))
        statuses = [r.status for r in results.values()]
        counts = {s: statuses.count(s) for s in ("downloaded", "not-modified", "failed")}
        log.info(
            "URLs: %d downloaded, %d not modified, %d failed",
            counts["downloaded"],
            counts["not-modified"],
            counts["failed"],
        )
        return results

    def fetch(self, url: str) -> Fetched:
        """Fetch one URL through the cache; failures are returned, not raised."""
        with open_client(self.policy) as client:
            return self._fetch(client, url)

    def _fetch(self, client: httpx.Client, url: str) -> Fetched:
        cached = self._usable(url)
        try:
            resp = get(client, url, self.policy, cached.validators() if cached else {})
        except ImageError as exc:
            return Fetched(url, error=str(exc))
        if resp.status == 304:
            if cached is None:
                return Fetched(url, error="download failed: 304 Not Modified without a request")
            self.cache.touch(cached)
            return Fetched(url, cached.path, cached.content_hash, "not-modified")
        try:
            entry = self.cache.put(
                url,
                resp.data,
                content_hash=content_hash(resp.data),
                content_type=resp.headers.get("content-type", "").split(";")[0].strip(),
                etag=resp.headers.get("etag", ""),
                last_modified=resp.headers.get("last-modified", ""),
            )
        except OSError as exc:
            return Fetched(url, error=f"cannot write the URL cache: {exc.strerror or exc}")
        return Fetched(url, entry.path, entry.content_hash, "downloaded")

    def _usable(self, url: str) -> CacheEntry | None:
        """The cached entry, if its body is whole; a broken one is dropped (full GET)."""
        cached = self.cache.get(url)
        if cached is None or cached.verified:
            return cached
        try:  # written before bodies were verified: check it once
            data = Path(cached.path).read_bytes()
            if content_hash(data) != cached.content_hash:
                raise ImageError("cached body does not match its hash")
            check_image(data, max_pixels=self.policy.max_pixels)
        except (OSError, ImageError) as exc:
            log.info("URL cache: dropping a broken entry for %s (%s)", url, exc)
            self.cache.drop(url)
            return None
        return self.cache.mark_verified(cached)


def fetch_catalog_urls(
    urls: Iterable[str],
    cache_dir: str,
    *,
    retries: int = 3,
    backoff: float = 0.5,
    allow_private: bool = False,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> dict[str, Fetched]:
    """Download (or revalidate) the URLs of a catalog into ``<cache_dir>/urls``."""
    urls = list(urls)
    if not urls:
        return {}
    cache = UrlCache(Path(cache_dir) / "urls")
    cache.prune()
    policy = DownloadPolicy(
        retries=retries, backoff=backoff, allow_private=allow_private, max_pixels=max_pixels
    )
    return Downloader(cache, policy).fetch_all(urls)
