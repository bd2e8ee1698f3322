"""Downloading catalog images given by http(s) URL: concurrent, bounded, cached.

Every URL goes through :class:`Downloader`: a thread pool runs the downloads; each one has
a socket timeout and an overall deadline, retries connection errors, timeouts, 429 and 5xx
with exponential backoff (4xx other than 429 fail at once), refuses bodies over
``max_bytes`` (by Content-Length and while streaming), and accepts only images: the
Content-Type must be ``image/*`` (or a generic binary type) AND the first bytes must be
those of an image format, so an HTML error page served as ``image/jpeg`` is refused.
Bodies land in a :class:`~indexer.url_cache.UrlCache`; the next run sends the stored
ETag / Last-Modified, and a ``304`` reuses the cached body: nothing is downloaded, and
the unchanged content hash means nothing is embedded again.
"""

from __future__ import annotations

import http.client
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from email.message import Message
from pathlib import Path

from search.errors import ImageError

from .hashing import content_hash
from .url_cache import CacheEntry, UrlCache

log = logging.getLogger(__name__)
MAX_DOWNLOAD_BYTES = 50 * 1024 * 1024
USER_AGENT = "vsearch-indexer/0.1"
CHUNK = 64 * 1024
GENERIC_TYPES = ("", "application/octet-stream", "binary/octet-stream")
MAGIC: tuple[tuple[bytes, int, str], ...] = (
    (b"\xff\xd8\xff", 0, "jpeg"),
    (b"\x89PNG\r\n\x1a\n", 0, "png"),
    (b"GIF87a", 0, "gif"),
    (b"GIF89a", 0, "gif"),
    (b"WEBP", 8, "webp"),
    (b"BM", 0, "bmp"),
    (b"II*\x00", 0, "tiff"),
    (b"MM\x00*", 0, "tiff"),
    (b"ftypavif", 4, "avif"),
    (b"ftypheic", 4, "heic"),
    (b"ftypmif1", 4, "heif"),
)


@dataclass(frozen=True)
class DownloadPolicy:
    """Limits of one download (the CLI's defaults suit a nightly catalog run)."""

    timeout: float = 20.0  # per socket operation, and the overall deadline of one attempt
    retries: int = 3
    backoff: float = 0.5  # seconds, doubled after each failed attempt
    max_bytes: int = MAX_DOWNLOAD_BYTES
    workers: int = 8
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
class _Response:
    status: int
    data: bytes = b""
    headers: Message = field(default_factory=Message)


class _Retryable(Exception):
    """A failure worth another attempt (connection, timeout, 429, 5xx)."""


def sniff_image(data: bytes) -> str | None:
    """The image format the first bytes announce, or None (e.g. HTML, JSON, text)."""
    for magic, offset, name in MAGIC:
        if data[offset : offset + len(magic)] == magic:
            return name
    return None


class Downloader:
    """Fetch URLs concurrently into a :class:`UrlCache` with conditional GETs."""

    def __init__(self, cache: UrlCache, policy: DownloadPolicy | None = None) -> None:
        self.cache = cache
        self.policy = policy or DownloadPolicy()

    def fetch_all(self, urls: Iterable[str]) -> dict[str, Fetched]:
        """Fetch every distinct URL (thread pool); never raises for one bad URL."""
        unique = list(dict.fromkeys(urls))
        if not unique:
            return {}
        workers = max(1, min(self.policy.workers, len(unique)))
        with ThreadPoolExecutor(workers, thread_name_prefix="vsearch-download") as pool:
            results = dict(zip(unique, pool.map(self.fetch, unique), strict=True))
        counts: dict[str, int] = {}
        for r in results.values():
            counts[r.status] = counts.get(r.status, 0) + 1
        log.info(
            "URLs: %d downloaded, %d not modified, %d failed",
            counts.get("downloaded", 0),
            counts.get("not-modified", 0),
            counts.get("failed", 0),
        )
        return results

    def fetch(self, url: str) -> Fetched:
        """Fetch one URL through the cache; failures are returned, not raised."""
        cached = self.cache.get(url)
        try:
            resp = get_with_retries(url, self.policy, cached.validators() if cached else {})
        except ImageError as exc:
            return Fetched(url, error=str(exc))
        if resp.status == 304:
            if cached is None:
                return Fetched(url, error="download failed: 304 Not Modified without a request")
            self.cache.touch(cached)
            return Fetched(url, cached.path, cached.content_hash, "not-modified")
        try:
            entry = self._store(url, resp)
        except OSError as exc:
            return Fetched(url, error=f"cannot write the URL cache: {exc}")
        return Fetched(url, entry.path, entry.content_hash, "downloaded")

    def _store(self, url: str, resp: _Response) -> CacheEntry:
        chash = content_hash(resp.data)
        return self.cache.put(
            url,
            resp.data,
            content_hash=chash,
            content_type=resp.headers.get_content_type() if resp.headers else "",
            etag=resp.headers.get("ETag", "") or "",
            last_modified=resp.headers.get("Last-Modified", "") or "",
        )


def get_with_retries(
    url: str, policy: DownloadPolicy, headers: dict[str, str] | None = None
) -> _Response:
    """GET ``url`` with the policy's retries and backoff; ImageError when it gives up."""
    for attempt in range(policy.retries + 1):
        try:
            return download_once(url, policy, headers)
        except _Retryable as exc:
            if attempt == policy.retries:
                raise ImageError(f"download failed after {attempt + 1} attempt(s): {exc}") from None
            delay = policy.backoff * 2**attempt
            log.debug("download %s failed (%s); retry in %.1fs", url, exc, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")


def download_bytes(url: str, policy: DownloadPolicy | None = None) -> bytes:
    """The body of an image URL (no cache), with the policy's checks and retries."""
    return get_with_retries(url, policy or DownloadPolicy()).data


def download_once(
    url: str, policy: DownloadPolicy, headers: dict[str, str] | None = None
) -> _Response:
    """One GET with the policy's limits; ImageError for final failures, _Retryable else."""
    req = urllib.request.Request(url, headers={"User-Agent": policy.user_agent, **(headers or {})})
    deadline = time.monotonic() + policy.timeout
    try:
        with urllib.request.urlopen(req, timeout=policy.timeout) as resp:  # noqa: S310
            _check_headers(resp.headers, policy.max_bytes)
            data = _read_bounded(resp, policy.max_bytes, deadline)
            status = resp.status
            resp_headers = resp.headers
    except urllib.error.HTTPError as exc:
        if exc.code == 304:
            return _Response(304, b"", exc.headers)
        if exc.code == 429 or exc.code >= 500:
            raise _Retryable(f"HTTP {exc.code}") from None
        raise ImageError(f"download failed: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
        reason = getattr(exc, "reason", exc)
        raise _Retryable(f"{reason}") from None
    except ValueError as exc:  # a malformed URL
        raise ImageError(f"download failed: {exc}") from None
    except (OSError, http.client.HTTPException) as exc:  # IncompleteRead, reset...
        raise _Retryable(f"{exc.__class__.__name__}: {exc}") from None
    kind = sniff_image(data)
    if kind is None:
        raise ImageError(
            f"not an image: served as {resp_headers.get_content_type()!r} but the body is not "
            "an image format (an HTML error page?)"
        )
    return _Response(status, data, resp_headers)


def _check_headers(headers: Message, max_bytes: int) -> None:
    ctype = headers.get_content_type() if headers.get("Content-Type") else ""
    if not ctype.startswith("image/") and ctype not in GENERIC_TYPES:
        raise ImageError(f"not an image: Content-Type {ctype!r}")
    length = headers.get("Content-Length")
    if length and length.isdigit() and int(length) > max_bytes:
        raise ImageError(f"download larger than {max_bytes:,} bytes ({int(length):,})")


def _read_bounded(resp, max_bytes: int, deadline: float) -> bytes:  # noqa: ANN001
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = resp.read(CHUNK)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > max_bytes:
            raise ImageError(f"download larger than {max_bytes:,} bytes")
        if time.monotonic() > deadline:
            raise _Retryable("timed out while reading the body")
        chunks.append(chunk)


def fetch_catalog_urls(
    urls: Iterable[str], cache_dir: str, *, retries: int = 3, backoff: float = 0.5
) -> dict[str, Fetched]:
    """Download (or revalidate) the URLs of a catalog into ``<cache_dir>/urls``."""
    urls = list(urls)
    if not urls:
        return {}
    cache = UrlCache(Path(cache_dir) / "urls")
    cache.prune()
    policy = DownloadPolicy(retries=retries, backoff=backoff)
    return Downloader(cache, policy).fetch_all(urls)
