"""A real-photo "shop catalog" with one photo per product, and phone-style shopper queries.

Sources (everything installs offline from Debian packages; the script says which to install):

* Products: the photographic stamps of Tux Paint (``tuxpaint-stamps-default``): real photos
  of objects, food, animals, plants, tools, vehicles ... cut out on a transparent
  background. Drawings among the stamps (road signs, flags, dreidels, drawn clothes,
  cartoons, symbols) are dropped by folder and by a colour-count test (:func:`is_photo`). Each cut-out is placed on
  a plain, slightly tinted studio-style background with a soft shadow: that background is
  SYNTHETIC (a flat colour with a gentle gradient); the product pixels are real photos.
* Shopper backgrounds: real photographs from desktop-wallpaper packages
  (``mate-backgrounds``: its nature photos; ``plasma-workspace-wallpapers``: its photo
  wallpapers). They are disjoint from the catalog's sources; abstract wallpapers are left
  out by an explicit list.

Writes ``DIR/catalog.csv`` (id, image, category, title; images relative to the CSV, ~600 px
JPEG), ``DIR/queries.csv`` (query_image, id, category): ONE shopper photo per product, never
to be indexed, and ``DIR/sources.json`` (provenance, counts, distortion settings). The
shopper distortion is written here, on purpose independent of any training augmentation:
random crop/zoom of the product, rotation, perspective, random scale and position on a
background photo, white balance / colour / brightness / contrast shift, blur, sensor noise,
JPEG recompression. Seeded and deterministic (same seed and sources -> same bytes).

    python -m benchmarks.shopper_catalog --out /work/shopper --items 240 --seed 0
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter

log = logging.getLogger("shopper_catalog")

STAMPS = Path("/usr/share/tuxpaint/stamps")
STAMPS_PACKAGE = "tuxpaint-stamps-default"
# category -> stamp folders (a file belongs to the longest matching folder)
CATEGORIES: dict[str, tuple[str, ...]] = {
    "fruit & nuts": ("food/fruit", "food/nuts", "food"),
    "vegetables": ("food/vegetables", "food/spices", "plants/mushrooms"),
    "birds": ("animals/birds",),
    "mammals": ("animals/mammals", "animals/marsupials"),
    "sea life": ("animals/fish", "animals/shellfish", "animals/mammals/aquatic"),
    "insects & reptiles": ("animals/insects", "animals/amphibians", "animals/lizards"),
    "flowers & plants": ("plants",),
    "household & tools": ("household", "medical"),
    "seasonal decor": ("seasonal",),
    "sports & music": ("sports", "hobbies"),
    "vehicles": ("vehicles", "military/vehicles"),
}
SKIP_PARTS = ("cartoon", "_mirror", "symbols/")
# (package, file glob under /usr/share): real photographs only (abstract art left out)
BACKGROUNDS: tuple[tuple[str, str], ...] = (
    ("mate-backgrounds", "backgrounds/mate/nature/*.jpg"),
    *(
        ("plasma-workspace-wallpapers", f"wallpapers/{name}/contents/images/1920x1080.jpg")
        for name in (
            "BytheWater",
            "ColdRipple",
            "DarkestHour",
            "EveningGlow",
            "FallenLeaf",
            "Grey",
            "Kite",
            "OneStandsOut",
            "Path",
            "summer_1am",
        )
    ),  # fmt: skip
    ("plasma-workspace-wallpapers", "wallpapers/ColorfulCups/contents/images/2560x1600.jpg"),
    ("plasma-workspace-wallpapers", "wallpapers/Volna/contents/images/5120x2880.jpg"),
)
SHARE = Path("/usr/share")
BACKGROUND_MAX_SIDE = 1280
# many fruit and vegetable photos are small (~50 px): kept, and upscaled in the catalog
MIN_SIDE = 45


class MissingSource(RuntimeError):
    """A Debian package the catalog needs is not installed (the message says which)."""


@dataclass(frozen=True)
class Product:
    id: str
    category: str
    title: str
    source: str  # where the photo came from (a path, or "synthetic" in tests)


def is_photo(rgba: Image.Image, min_colours: int = 200, max_top8: float = 0.5) -> bool:
    """True for a photographic cut-out, False for flat-colour drawings.

    Counts distinct colours (quantised to 6 bits per channel) over the opaque pixels and the
    share of the 8 most frequent ones: drawings have few colours in large flat areas. (Some
    photos are stored with a 256-colour palette, hence the low colour floor.)
    """
    a = np.asarray(rgba.convert("RGBA"))
    opaque = a[..., 3] > 200
    if opaque.sum() < 400:
        return False
    px = (a[..., :3][opaque] // 4).astype(np.int32)
    _, counts = np.unique(px[:, 0] * 4096 + px[:, 1] * 64 + px[:, 2], return_counts=True)
    top8 = np.sort(counts)[::-1][:8].sum() / counts.sum()
    return len(counts) >= min_colours and top8 < max_top8


def category_of(rel: str) -> str | None:
    """The catalog category of a stamp path relative to the stamps folder, or None."""
    best: tuple[int, str] | None = None
    for category, folders in CATEGORIES.items():
        for folder in folders:
            if rel.startswith(folder + "/") and (best is None or len(folder) > best[0]):
                best = (len(folder), category)
    return best[1] if best else None


def _title(path: Path) -> str:
    words = re.sub(r"[_\-]+", " ", path.stem).strip()
    words = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", words)
    return words[:1].upper() + words[1:]


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def discover_stamps(root: Path = STAMPS) -> list[tuple[Product, Path]]:
    """Every photographic stamp with its category, in a stable (sorted) order."""
    if not root.is_dir():
        raise MissingSource(
            f"{root} not found: install the product photos with "
            f"`apt-get install -y {STAMPS_PACKAGE}`"
        )
    found: list[tuple[Product, Path]] = []
    seen: set[str] = set()
    for path in sorted(root.rglob("*.png")):
        rel = path.relative_to(root).as_posix()
        category = category_of(rel)
        if category is None or any(part in rel for part in SKIP_PARTS):
            continue
        with Image.open(path) as img:
            if max(img.size) < MIN_SIDE or not is_photo(img):
                continue
        pid = _slug(f"{category.split()[0]}-{path.stem}")
        while pid in seen:
            pid += "-b"
        seen.add(pid)
        found.append((Product(pid, category, _title(path), f"{STAMPS_PACKAGE}:{rel}"), path))
    return found


def pick_balanced(items: Sequence[tuple[Product, Path]], count: int, seed: int) -> list[int]:
    """Indices of ``count`` items, round-robin over categories in a seeded order."""
    rng = np.random.default_rng(seed)
    by_cat: dict[str, list[int]] = {}
    for i, (product, _) in enumerate(items):
        by_cat.setdefault(product.category, []).append(i)
    queues = {c: list(rng.permutation(ix)) for c, ix in sorted(by_cat.items())}
    picked: list[int] = []
    while len(picked) < min(count, len(items)):
        for c in sorted(queues):
            if queues[c] and len(picked) < count:
                picked.append(int(queues[c].pop(0)))
    return sorted(picked)


def background_paths() -> tuple[list[Path], list[str]]:
    """The real background photos installed here and the packages still missing."""
    paths: list[Path] = []
    missing: list[str] = []
    for package, pattern in BACKGROUNDS:
        hits = sorted(SHARE.glob(pattern))
        if not hits and package not in missing:
            missing.append(package)
        paths += hits
    return paths, missing


def load_background(path: Path) -> Image.Image:
    img = Image.open(path)
    img.draft("RGB", (BACKGROUND_MAX_SIDE, BACKGROUND_MAX_SIDE))
    img = img.convert("RGB")
    img.thumbnail((BACKGROUND_MAX_SIDE, BACKGROUND_MAX_SIDE), Image.Resampling.LANCZOS)
    return img


def catalog_photo(cutout: Image.Image, rng: np.random.Generator, size: int) -> Image.Image:
    """The shop's product shot: the cut-out centred on a plain light background, soft shadow."""
    cutout = cutout.convert("RGBA")
    box = cutout.getbbox() or (0, 0, *cutout.size)
    cutout = cutout.crop(box)
    scale = 0.8 * size / max(cutout.size)
    w, h = max(1, round(cutout.width * scale)), max(1, round(cutout.height * scale))
    cutout = cutout.resize((w, h), Image.Resampling.LANCZOS)
    tint = 255 - rng.integers(0, 22, size=3) * np.array([1, 1, 1])
    top, bottom = tint, np.clip(tint - rng.integers(6, 20), 0, 255)
    ramp = np.linspace(0, 1, size)[:, None, None]
    grad = (top[None, None, :] * (1 - ramp) + bottom[None, None, :] * ramp).astype(np.uint8)
    canvas = Image.fromarray(np.broadcast_to(grad, (size, size, 3)).copy()).convert("RGBA")
    x, y = (size - w) // 2, (size - h) // 2
    shadow = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    ImageDraw.Draw(shadow).ellipse(
        (x + w * 0.1, y + h * 0.92, x + w * 0.9, y + h * 1.02), fill=(0, 0, 0, 60)
    )
    canvas = Image.alpha_composite(canvas, shadow.filter(ImageFilter.GaussianBlur(size / 60)))
    canvas.alpha_composite(cutout, (x, y))
    return canvas.convert("RGB")


@dataclass(frozen=True)
class Strength:
    """Ranges of the shopper distortion (each drawn uniformly; ``scaled`` widens or narrows)."""

    crop: float = 0.25  # up to this fraction of each side of the product cut away
    rotate: float = 25.0  # degrees, either way
    perspective: float = 0.12  # corner shift, fraction of the side
    min_scale: float = 0.35  # product's longest side / photo's shorter side: min .. 0.9
    colour: float = 0.15  # per-channel white-balance gain, 1 +- this
    brightness: float = 0.3  # 1 +- this
    saturation: float = 0.3  # 1 +- this
    blur: float = 1.5  # Gaussian radius up to this (pixels, at 640 px)
    noise: float = 8.0  # Gaussian sensor noise sigma up to this (grey levels)
    min_quality: int = 40  # JPEG quality min .. 85

    def scaled(self, factor: float) -> Strength:
        """Every range times ``factor`` (scale floor and JPEG quality move towards easier)."""
        values = {f.name: getattr(self, f.name) * factor for f in fields(self)}
        values["min_scale"] = min(0.9, 0.9 - (0.9 - self.min_scale) * factor)
        values["min_quality"] = int(min(85, 85 - (85 - self.min_quality) * factor))
        return Strength(**values)


def _perspective_coeffs(src: np.ndarray, dst: np.ndarray) -> tuple[float, ...]:
    """PIL PERSPECTIVE coefficients mapping output corners ``dst`` to input corners ``src``."""
    rows = []
    for (x, y), (u, v) in zip(dst, src, strict=True):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y])
    solved = np.linalg.solve(np.asarray(rows, float), src.reshape(-1).astype(float))
    return tuple(float(c) for c in solved)


def _geometry(cutout: Image.Image, rng: np.random.Generator, s: Strength) -> Image.Image:
    """Crop/zoom into the product, rotate it, tilt it (perspective); alpha follows."""
    box = cutout.getbbox() or (0, 0, *cutout.size)
    obj = cutout.crop(box)
    w, h = obj.size
    cut = rng.uniform(0, s.crop, size=2)  # fraction removed per axis, split at random
    left, top = rng.uniform(0, 1) * cut[0] * w, rng.uniform(0, 1) * cut[1] * h
    obj = obj.crop((round(left), round(top), round(left + (1 - cut[0]) * w),
                    round(top + (1 - cut[1]) * h)))  # fmt: skip
    if max(obj.size) < 256:  # work at a useful resolution
        f = 256 / max(obj.size)
        obj = obj.resize((round(obj.width * f), round(obj.height * f)), Image.Resampling.BICUBIC)
    obj = obj.rotate(rng.uniform(-s.rotate, s.rotate), Image.Resampling.BICUBIC, expand=True)
    w, h = obj.size
    pad = round(s.perspective * max(w, h))
    canvas = Image.new("RGBA", (w + 2 * pad, h + 2 * pad), (0, 0, 0, 0))
    canvas.paste(obj, (pad, pad))
    W, H = canvas.size
    src = np.array([[pad, pad], [pad + w, pad], [pad + w, pad + h], [pad, pad + h]], float)
    dst = src + rng.uniform(-1, 1, size=(4, 2)) * s.perspective * np.array([w, h])
    dst = np.clip(dst, 0, [W, H])
    coeffs = _perspective_coeffs(src, dst)
    warped = canvas.transform((W, H), Image.Transform.PERSPECTIVE, coeffs,
                              Image.Resampling.BICUBIC)  # fmt: skip
    return warped.crop(warped.getbbox() or (0, 0, W, H))


def _background(
    backgrounds: Sequence[Image.Image], rng: np.random.Generator, size: tuple[int, int]
) -> Image.Image:
    """A random crop (random zoom and place) of one background photo, at ``size``."""
    bg = backgrounds[int(rng.integers(len(backgrounds)))]
    aspect = size[0] / size[1]
    max_w = min(bg.width, bg.height * aspect)
    cw = rng.uniform(0.35, 1.0) * max_w
    ch = cw / aspect
    x, y = rng.uniform(0, bg.width - cw), rng.uniform(0, bg.height - ch)
    crop = bg.crop((round(x), round(y), round(x + cw), round(y + ch)))
    if rng.uniform() < 0.5:
        crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return crop.resize(size, Image.Resampling.BILINEAR)


def _photometric(img: Image.Image, rng: np.random.Generator, s: Strength) -> Image.Image:
    """White balance, brightness, contrast, saturation, blur, sensor noise."""
    img = ImageEnhance.Brightness(img).enhance(1 + rng.uniform(-s.brightness, s.brightness))
    img = ImageEnhance.Contrast(img).enhance(1 + rng.uniform(-s.brightness, s.brightness) * 0.7)
    img = ImageEnhance.Color(img).enhance(1 + rng.uniform(-s.saturation, s.saturation))
    a = np.asarray(img, np.float32) * (1 + rng.uniform(-s.colour, s.colour, size=3))
    img = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))
    radius = rng.uniform(0, s.blur)
    if radius > 0.2:
        img = img.filter(ImageFilter.GaussianBlur(radius))
    sigma = rng.uniform(0, s.noise)
    a = np.asarray(img, np.float32) + rng.normal(0, sigma, size=(img.height, img.width, 1))
    a = a + rng.normal(0, sigma * 0.5, size=a.shape)  # luminance + some chroma noise
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))


def _jpeg_cycle(img: Image.Image, quality: int) -> Image.Image:
    """Compress and decode once (the phone's JPEG; the file written later is another)."""
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    buf.seek(0)
    return Image.open(buf).convert("RGB")


def shopper_photo(
    cutout: Image.Image,
    backgrounds: Sequence[Image.Image],
    rng: np.random.Generator,
    strength: Strength | None = None,
) -> Image.Image:
    """A phone-style photo of the product in ``cutout`` (RGBA, alpha = product).

    Portrait or landscape 640x480; the product (cropped, rotated, tilted) is pasted at a
    random scale and position on a random crop of a background photo; then colour shifts,
    blur, noise and one JPEG compression at a random quality.
    """
    s = strength or Strength()
    size = (480, 640) if rng.uniform() < 0.5 else (640, 480)
    obj = _geometry(cutout.convert("RGBA"), rng, s)
    photo = _background(backgrounds, rng, size)
    side = rng.uniform(s.min_scale, 0.9) * min(size)
    f = side / max(obj.size)
    obj = obj.resize((max(1, round(obj.width * f)), max(1, round(obj.height * f))),
                     Image.Resampling.LANCZOS)  # fmt: skip
    x = rng.uniform(-0.1 * obj.width, size[0] - 0.9 * obj.width)
    y = rng.uniform(-0.1 * obj.height, size[1] - 0.9 * obj.height)
    photo.paste(obj, (round(x), round(y)), obj)
    photo = _photometric(photo, rng, s)
    return _jpeg_cycle(photo, int(rng.integers(s.min_quality, 86)))


def write_catalog(
    out: Path,
    products: Sequence[Product],
    load_cutout: Callable[[int], Image.Image],
    backgrounds: Sequence[Image.Image],
    *,
    seed: int = 0,
    size: int = 600,
    strength: Strength | None = None,
) -> dict[str, object]:
    """Write the catalog, the shopper queries and their CSVs under ``out``; return a summary.

    ``load_cutout(i)`` gives product ``i``'s RGBA cut-out (alpha = the product).
    """
    strength = strength or Strength()
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "queries").mkdir(parents=True, exist_ok=True)
    catalog_rows, query_rows = [], []
    for i, product in enumerate(products):
        cutout = load_cutout(i).convert("RGBA")
        rng = np.random.default_rng([seed, i, 1])
        image = f"images/{product.id}.jpg"
        catalog_photo(cutout, rng, size).save(out / image, "JPEG", quality=92)
        catalog_rows.append(
            {"id": product.id, "image": image, "category": product.category,
             "title": product.title}
        )  # fmt: skip
        qrng = np.random.default_rng([seed, i, 2])
        query = f"queries/{product.id}.jpg"
        shopper_photo(cutout, backgrounds, qrng, strength).save(out / query, "JPEG", quality=90)
        query_rows.append({"query_image": query, "id": product.id, "category": product.category})
    _write_csv(out / "catalog.csv", ["id", "image", "category", "title"], catalog_rows)
    _write_csv(out / "queries.csv", ["query_image", "id", "category"], query_rows)
    counts: dict[str, int] = {}
    for p in products:
        counts[p.category] = counts.get(p.category, 0) + 1
    return {
        "items": len(products),
        "categories": dict(sorted(counts.items())),
        "seed": seed,
        "size": size,
        "strength": asdict(strength),
        "backgrounds": len(backgrounds),
    }


def _write_csv(path: Path, fields: list[str], rows: list[dict[str, str]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def build(out: Path, items: int, seed: int, strength: Strength) -> dict[str, object]:
    """Discover the installed sources and write the catalog (raises MissingSource)."""
    stamps = discover_stamps()
    bg_paths, missing = background_paths()
    if missing:
        raise MissingSource(
            "shopper background photos missing: install them with "
            f"`apt-get install -y {' '.join(missing)}`"
        )
    if len(stamps) < items:
        log.warning("only %d photographic stamps found; writing %d items", len(stamps), len(stamps))
    picked = [stamps[i] for i in pick_balanced(stamps, items, seed)]
    backgrounds = [load_background(p) for p in bg_paths]
    summary = write_catalog(
        out, [p for p, _ in picked], lambda i: Image.open(picked[i][1]), backgrounds,
        seed=seed, strength=strength,
    )  # fmt: skip
    summary["sources"] = {
        "products": f"Debian {STAMPS_PACKAGE} (photographic stamps only; real photos cut out, "
        "placed on a synthetic plain background)",
        "backgrounds": sorted({pkg for pkg, _ in BACKGROUNDS}),
        "background_photos": [str(p) for p in bg_paths],
        "photographic_stamps_available": len(stamps),
        "non_photo_content": "catalog backgrounds are synthetic flat colours; product and "
        "shopper-background pixels are real photographs",
    }
    summary["products"] = [asdict(p) for p, _ in picked]
    (out / "sources.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help="folder to write")
    p.add_argument("--items", type=int, default=240, help="products (default 240)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--strength", type=float, default=1.0, help="scales every distortion range (default 1)"
    )
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        summary = build(args.out, args.items, args.seed, Strength().scaled(args.strength))
    except MissingSource as exc:
        print(f"shopper_catalog: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {summary['items']} products and queries to {args.out}")
    for category, n in summary["categories"].items():  # type: ignore[union-attr]
        print(f"  {category:20s} {n}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
