"""Catalog images served by catalog id, never by path.

A request names an item id; the id is looked up in Milvus (as a quoted literal) and only the
image path *stored on that row* is read. A crafted id (``../../etc/passwd``, an absolute
path, an encoded variant) is just an id that does not exist, so nothing outside the
collection's own rows can be read. URL images are handed back as the URL.
"""

from __future__ import annotations

import base64
import hashlib
import io
import logging
import os
import tempfile
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from threading import Lock

from PIL import Image

from search import ImageError, ItemNotFound, Match, Searcher, open_image

log = logging.getLogger(__name__)

IMAGE_TYPES = {
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".png": "image/png",
    ".webp": "image/webp",
    ".gif": "image/gif",
    ".bmp": "image/bmp",
    ".tif": "image/tiff",
    ".tiff": "image/tiff",
}


@dataclass(frozen=True)
class ImageRef:
    """Where an item's image is: a local file (with its media type) or a URL."""

    item_id: str
    path: Path | None = None
    url: str | None = None
    media_type: str = ""


def is_url(ref: str) -> bool:
    return ref.startswith(("http://", "https://"))


def ref_of(match: Match) -> ImageRef:
    """The servable image of a catalog row; ItemNotFound when it has none on disk."""
    ref = match.image or ""
    if is_url(ref):
        return ImageRef(match.id, url=ref)
    path = Path(ref)
    media_type = IMAGE_TYPES.get(path.suffix.lower(), "")
    if not ref or not path.is_absolute() or not media_type or not path.is_file():
        raise ItemNotFound(f"the image of item {match.id!r} is not available")
    return ImageRef(match.id, path=path, media_type=media_type)


def image_ref(searcher: Searcher, item_id: str) -> ImageRef:
    """Look ``item_id`` up in the collection and return its stored image."""
    return ref_of(searcher.get(item_id))


class Thumbnails:
    """Small in-memory LRU of gallery thumbnails of local catalog images."""

    def __init__(self, px: int = 384, capacity: int = 512) -> None:
        self.px = px
        self.capacity = capacity
        self._cache: OrderedDict[tuple[str, float], Image.Image] = OrderedDict()
        self._uris: dict[int, tuple[Image.Image, str]] = {}
        self._lock = Lock()

    def for_match(self, match: Match) -> Image.Image | str | None:
        """A URL (left to the browser), a thumbnail, or None when the image is gone."""
        try:
            ref = ref_of(match)
        except ItemNotFound:
            log.warning("image of %r is missing", match.id)
            return None
        if ref.url:
            return ref.url
        assert ref.path is not None
        key = (str(ref.path), ref.path.stat().st_mtime)
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                return hit
        try:
            img = open_image(ref.path, draft_size=self.px)
        except ImageError as exc:
            log.warning("cannot read image of %r: %s", match.id, exc)
            return None
        img.thumbnail((self.px, self.px))
        with self._lock:
            self._cache[key] = img
            while len(self._cache) > self.capacity:
                self._cache.popitem(last=False)
        return img

    def src(self, match: Match) -> str | None:
        """What an ``<img src>`` of the tile shows: the URL, or the thumbnail inlined as a
        ``data:`` JPEG (no file is written, no server path is exposed)."""
        img = self.for_match(match)
        if img is None or isinstance(img, str):
            return img
        key = id(img)  # the cached thumbnail object: its data URI is made once
        with self._lock:
            hit = self._uris.get(key)
            if hit is not None and hit[0] is img:
                return hit[1]
        uri = data_uri(img)
        with self._lock:
            self._uris[key] = (img, uri)
            while len(self._uris) > self.capacity:
                self._uris.pop(next(iter(self._uris)))
        return uri

    def file(self, match: Match, folder: str | Path) -> str | None:
        """The thumbnail as a JPEG file under ``folder`` (a URL stays a URL), written once and
        atomically: Gradio re-writes a returned PIL image in place on every request, and a
        concurrent download of the same image could read it half written."""
        img = self.for_match(match)
        if img is None or isinstance(img, str):
            return img
        data = base64.b64decode(data_uri(img).split(",", 1)[1])
        target = Path(folder) / f"{hashlib.sha256(data).hexdigest()[:32]}.jpg"
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".thumb-")
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, target)
        return str(target)


def data_uri(img: Image.Image, quality: int = 82) -> str:
    buf = io.BytesIO()
    img.convert("RGB").save(buf, "JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def discard_upload(path: str | Path | None, upload_root: str | Path) -> bool:
    """Delete a shopper's uploaded file (and its folder when empty) now; only files inside
    Gradio's upload folder are touched. True when something was deleted."""
    if not path:
        return False
    try:
        file = Path(path).resolve()
        root = Path(upload_root).resolve()
        if root not in file.parents or not file.is_file():
            return False
        file.unlink()
        parent = file.parent
        if parent != root and not any(parent.iterdir()):
            os.rmdir(parent)
        return True
    except OSError as exc:
        log.info("could not delete upload %s: %s", path, exc)
        return False


class UploadJanitor:
    """Deletes shoppers' uploads ``grace_s`` seconds after they were read.

    Not at once: Gradio stores uploads by content hash, so two shoppers sending the same
    photo share one file, and the second handler may still be queued when the first is done.
    A file written again after it was scheduled (a newer upload of the same photo) is left
    for that upload's own handler to schedule. Gradio's ``delete_cache`` sweep is the backstop.
    """

    def __init__(self, upload_root: str | Path, grace_s: float = 30.0) -> None:
        self.root = str(upload_root)
        self.grace_s = grace_s
        self._due: dict[str, float] = {}
        self._lock = Lock()

    def discard(self, path: str | Path | None, now: float | None = None) -> None:
        """Schedule ``path`` for deletion and delete whatever is due."""
        now = time.time() if now is None else now
        if path:
            with self._lock:
                self._due[str(path)] = now
        self.sweep(now)

    def sweep(self, now: float | None = None) -> list[str]:
        """Delete the scheduled uploads whose grace time has passed; returns their paths."""
        now = time.time() if now is None else now
        with self._lock:
            due = [(p, t) for p, t in self._due.items() if now - t >= self.grace_s]
            for p, _ in due:
                del self._due[p]
        deleted = []
        for p, scheduled in due:
            try:
                st = os.stat(p)
            except OSError:
                continue
            if max(st.st_mtime, st.st_ctime) > scheduled:  # written again since: not ours
                continue
            if discard_upload(p, self.root):
                deleted.append(p)
        return deleted
