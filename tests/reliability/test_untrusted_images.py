"""Untrusted images (issue 17, items 1 and 5): only raster decoders, limits on every path.

- A PostScript file named ``x.jpg`` never reaches Ghostscript: a fake ``gs`` first on PATH
  records every call; Pillow on its own does call it (the control), our decoder never does,
  whether the file arrives by indexing, by the library's search or by the HTTP API.
- A 249 KB PNG of 7999x7999 RGBA zeros is refused from its header by the per-image memory
  budget: peak memory of a search process barely moves (measured in a subprocess).
- Error messages carry no paths, command lines or decoder internals.
"""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import pytest
from PIL import EpsImagePlugin, Image

from search.config import Settings
from search.errors import ImageError
from search.images import ALLOWED_FORMATS, open_image, sniff_format
from tests.helpers import photo

from . import hostile

EPS = textwrap.dedent(
    """\
    %!PS-Adobe-3.0 EPSF-3.0
    %%BoundingBox: 0 0 16 16
    %%EndComments
    newpath 0 0 moveto 16 0 lineto 16 16 lineto closepath fill
    showpage
    %%EOF
    """
).encode()


@pytest.fixture
def fake_gs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A ``gs`` first on PATH that appends its arguments to a record file; returns it."""
    bin_dir, record = tmp_path / "fake-bin", tmp_path / "gs-calls.txt"
    bin_dir.mkdir()
    gs = bin_dir / "gs"
    gs.write_text(f'#!/bin/sh\necho "gs $*" >> {record}\nexit 1\n')
    gs.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setattr(EpsImagePlugin, "gs_binary", None)  # Pillow caches its gs lookup
    return record


def test_control_pillow_alone_runs_the_fake_gs(fake_gs: Path) -> None:
    """Without our guard the EPS does reach Ghostscript: the recording works."""
    with pytest.raises(Exception):  # noqa: B017 - the fake gs renders nothing
        Image.open(io.BytesIO(EPS)).load()
    assert fake_gs.exists() and "gs" in fake_gs.read_text()


def test_eps_named_jpg_never_reaches_gs(fake_gs: Path, tmp_path: Path) -> None:
    path = tmp_path / "x.jpg"
    path.write_bytes(EPS)
    for source in (EPS, path, b"\xc5\xd0\xd3\xc6" + bytes(60)):  # text and binary EPS
        with pytest.raises(ImageError) as info:
            open_image(source)
        assert "PostScript/EPS" in str(info.value)
        assert str(tmp_path) not in str(info.value) and "gs " not in str(info.value)
    assert not fake_gs.exists()


@pytest.mark.slow
def test_eps_through_indexing_search_and_api_never_reaches_gs(
    fake_gs: Path, tmp_path: Path, settings: Settings, embedder
) -> None:
    from fastapi.testclient import TestClient

    from indexer.pipeline import run_index
    from search.searcher import Searcher
    from ui.server import build_app
    from ui.service import UiOptions

    root = tmp_path / "catalog"
    root.mkdir()
    (root / "good.jpg").write_bytes(hostile.good_jpeg())
    (root / "x.jpg").write_bytes(EPS)
    report = run_index(root, settings, embedder=embedder)
    assert report.count == 1
    assert {f.id: f.reason for f in report.failed}["x.jpg"].startswith("unsupported image format")
    searcher = Searcher(settings, embedder=embedder)
    with pytest.raises(ImageError, match="PostScript/EPS"):
        searcher.similar(EPS, limit=1)
    client = TestClient(build_app(settings, UiOptions(), searcher=searcher))
    resp = client.post("/api/search/image", files={"image": ("x.jpg", EPS)})
    assert resp.status_code == 422 and "PostScript/EPS" in resp.text
    assert str(tmp_path) not in resp.text and "gs " not in resp.text
    assert searcher.similar(hostile.good_jpeg(), limit=1)[0].id == "good.jpg"
    assert not fake_gs.exists()
    # the settings' pixel limit holds on the search path whatever the crop scheme
    for crops in ("none", "nine"):
        strict = settings.replace(max_image_pixels=10_000, query_crops=crops)
        with pytest.raises(ImageError, match="exceeds the limit of 10,000 pixels"):
            Searcher(strict, embedder=embedder).similar(hostile.good_jpeg(), limit=1)


def _encode(fmt: str, mode: str = "RGB", **kw: object) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, (16, 16), (200, 30, 30) if mode == "RGB" else 128).save(buf, fmt, **kw)
    return buf.getvalue()


@pytest.mark.parametrize("fmt", ["PPM", "PCX", "TGA", "ICO", "SGI", "IM", "EPS", "DDS"])
def test_formats_outside_the_allowlist_are_refused_before_decoding(fmt: str) -> None:
    data = _encode(fmt, "RGBA" if fmt == "DDS" else "RGB")
    assert Image.open(io.BytesIO(data)).format in (fmt, "PPM")  # Pillow would open it
    with pytest.raises(ImageError, match="unsupported image format|not an image"):
        open_image(data)


@pytest.mark.parametrize("fmt", ALLOWED_FORMATS)
def test_allowed_formats_decode(fmt: str) -> None:
    data = hostile.encode(photo("coffee", 48), fmt)
    assert sniff_format(data[:16]) == fmt
    assert open_image(data).size == photo("coffee", 48).size


def test_a_jpeg_body_behind_another_magic_is_not_tried_as_jpeg() -> None:
    """The format comes from the bytes; Pillow is told to try that one format only."""
    data = b"BM" + hostile.good_jpeg()[2:]  # says BMP, is not a valid BMP
    with pytest.raises(ImageError, match="BMP"):
        open_image(data)


def test_error_messages_name_no_path_and_no_decoder_internals(tmp_path: Path) -> None:
    for name, (data, ok) in hostile.catalog_files().items():
        if ok:
            continue
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(ImageError) as info:
            open_image(path)
        text = str(info.value)
        assert str(tmp_path) not in text and "PIL" not in text and "Errno" not in text, text
        assert "cannot identify" not in text and "broken data stream" not in text, text


# -- item 5: a small file, a huge decode ----------------------------------------------------
def _zeros_png(path: Path, side: int = 7999) -> None:
    """An RGBA PNG of zeros written row by row (never a side x side image in memory)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    z = zlib.compressobj(9)
    row = bytes(1 + side * 4)  # filter byte 0 + RGBA zeros
    idat = b"".join(z.compress(row) for _ in range(side)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 6, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )


@pytest.fixture(scope="module")
def big_png(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("big") / "zeros.png"
    _zeros_png(path)
    return path


def test_big_rgba_png_is_refused_from_its_header(big_png: Path) -> None:
    assert big_png.stat().st_size < 300_000  # ~249 KB on disk, 7999 x 7999 x 4 decoded
    with pytest.raises(ImageError, match="too large to decode: 7999x7999 px"):
        open_image(big_png.read_bytes())
    img = Image.new("RGBA", (7999, 7999))  # already decoded by a caller: same budget
    with pytest.raises(ImageError, match="too large to decode"):
        open_image(img)


def test_jpeg_over_the_budget_decodes_at_reduced_scale() -> None:
    data = hostile.encode(photo("astronaut", 512).resize((1600, 1600)), "JPEG")
    img = open_image(data, max_bytes=1600 * 1600)  # a quarter of the full decode
    assert img.size == (800, 800)
    with pytest.raises(ImageError, match="too large to decode"):
        open_image(hostile.encode(photo("coffee", 160), "PNG"), max_bytes=10_000)


PROBE = """
import json, resource, sys
from pathlib import Path
from search.config import Settings
from search.embedder import Embedder
from search.errors import ImageError
from search.searcher import Searcher
from indexer.pipeline import run_index

root, cache, big = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]).read_bytes()
settings = Settings.of(uri=str(root / "m.db"), cache_dir=cache, device="cpu",
                       lock_dir=str(root / "locks"), retries=0, workers=0, threads=2)
embedder = Embedder("builtin:efficientnet-lite0", device="cpu", cache_dir=cache)
run_index(root / "catalog", settings, embedder=embedder)
searcher = Searcher(settings, embedder=embedder)
small = (root / "catalog" / "a.jpg").read_bytes()
for _ in range(3):
    searcher.similar(small, limit=1)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
errors = []
for _ in range(4):
    try:
        searcher.similar(big, limit=1)
    except ImageError as exc:
        errors.append(str(exc))
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"before_kb": before, "after_kb": after, "errors": errors}))
"""


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_big_png_search_keeps_peak_memory_flat(
    big_png: Path, tmp_path: Path, cache_dir: Path, embedder
) -> None:
    """Four searches by the 7999x7999 PNG through the library: refused, peak RSS flat.

    Before the budget each one decoded 244 MiB of RGBA and converted it (peak growth over
    1 GB). ru_maxrss is the process's high-water mark, so growth after a warm-up search
    is what the big photo cost at its worst moment.
    """
    (tmp_path / "catalog").mkdir()
    (tmp_path / "catalog" / "a.jpg").write_bytes(hostile.good_jpeg())
    (tmp_path / "catalog" / "b.jpg").write_bytes(hostile.good_jpeg("coffee"))
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(tmp_path), str(cache_dir), str(big_png)],
        capture_output=True,
        text=True,
        timeout=280,
        env=env,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert len(got["errors"]) == 4 and all("too large to decode" in e for e in got["errors"])
    growth_mb = (got["after_kb"] - got["before_kb"]) / 1024
    assert growth_mb < 64, f"peak RSS grew by {growth_mb:.0f} MB"
