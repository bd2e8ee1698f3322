"""Test data made on the spot: real photos (scikit-image) and catalogs built from them."""

from __future__ import annotations

import csv
import json
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

from search.config import Settings

PHOTOS = (
    "chelsea",
    "coffee",
    "rocket",
    "astronaut",
    "stereo_motorcycle",
    "hubble_deep_field",
    "colorwheel",
    "brick",
)


def photo(name: str, size: int = 320) -> Image.Image:
    """A real RGB photo from scikit-image, thumbnailed to ``size``."""
    import skimage.data

    arr = getattr(skimage.data, name)()
    if isinstance(arr, tuple):
        arr = arr[0]
    if arr.dtype != np.uint8:
        arr = (255 * (arr.astype(np.float32) - arr.min()) / max(1e-9, float(np.ptp(arr)))).astype(
            np.uint8
        )
    img = Image.fromarray(arr).convert("RGB")
    img.thumbnail((size, size))
    return img


def variant(img: Image.Image, k: int) -> Image.Image:
    """Another shot of the same product: crop, mirror or re-lit (k = 0, 1, 2...)."""
    w, h = img.size
    if k % 3 == 0:
        return img.copy()
    if k % 3 == 1:
        return img.crop((w // 10, h // 10, w - w // 10, h - h // 10)).resize((w, h))
    return ImageEnhance.Brightness(ImageOps.mirror(img)).enhance(1.1)


def write_folder(root: Path, names: Sequence[str] = PHOTOS[:4], per_product: int = 2) -> list[Path]:
    """A folder catalog: ``root/<name>/<name>-<k>.jpg``; returns the files written."""
    files = []
    for name in names:
        base = photo(name)
        (root / name).mkdir(parents=True, exist_ok=True)
        for k in range(per_product):
            path = root / name / f"{name}-{k}.jpg"
            variant(base, k).save(path, "JPEG", quality=90)
            files.append(path)
    return files


def write_manifest(root: Path, rows: Sequence[dict[str, Any]], kind: str = "csv") -> Path:
    """Write rows as ``catalog.csv`` or ``catalog.jsonl`` under root."""
    root.mkdir(parents=True, exist_ok=True)
    if kind == "jsonl":
        path = root / "catalog.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        return path
    path = root / "catalog.csv"
    fields = list(dict.fromkeys(k for r in rows for k in r))
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    return path


def product_catalog(root: Path, names: Sequence[str] = PHOTOS[:4], per_product: int = 2) -> Path:
    """A CSV manifest catalog with title, category, brand, price and product columns."""
    categories = [
        "animals",
        "kitchen",
        "vehicles",
        "people",
        "vehicles",
        "space",
        "design",
        "textures",
    ]
    rows = []
    for p, name in enumerate(names):
        base = photo(name)
        (root / "img").mkdir(parents=True, exist_ok=True)
        for k in range(per_product):
            rel = f"img/{name}-{k}.jpg"
            variant(base, k).save(root / rel, "JPEG", quality=90)
            rows.append(
                {
                    "id": f"{name}-{k}",
                    "image": rel,
                    "title": f"{name} view {k}",
                    "category": categories[p % len(categories)],
                    "brand": "Acme" if p % 2 else "Globex",
                    "price": f"{10 + 10 * p + k:.2f}",
                    "product": name,
                }
            )
    return write_manifest(root, rows)


def lite_settings(root: Path, cache_dir: Path) -> Settings:
    """Settings for a fresh Milvus Lite database under ``root`` (no retries: fail fast)."""
    return Settings.of(
        uri=str(root / "milvus" / "test.db"),
        cache_dir=str(cache_dir),
        device="cpu",
        lock_dir=str(root / "locks"),
        retries=0,
        workers=0,
        threads=2,
    )


def free_port() -> int:
    """A port on 127.0.0.1 that was free a moment ago (the socket is closed before returning,
    so another process can take it before a server binds it: see :func:`port_taken`)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_taken(server_log: str) -> bool:
    """Whether a server's log says its port was taken before it could bind it (uvicorn:
    "address already in use"; vsearch milvus-server: "(port in use?)"): start it again on
    another :func:`free_port`."""
    said = server_log.lower()
    return "address already in use" in said or "port in use" in said
