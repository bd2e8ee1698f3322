"""``vsearch check-precision``: measure bf16 / fp16 against fp32 on a sample of a catalog."""

from __future__ import annotations

import argparse
import logging
import random
from dataclasses import asdict

from ..main import EXIT_OK, EXIT_PARTIAL, add_model_args, add_settings_args, settings_from
from .output import print_json

log = logging.getLogger("vsearch")


def register(sub: argparse._SubParsersAction) -> None:
    from search.backends.precision_check import DEFAULT_IMAGES, DEFAULT_K, DEFAULT_MIN_RECALL

    p = sub.add_parser(
        "check-precision",
        help="measure a lossy precision (bf16, fp16) against fp32 on your catalog; it runs "
        "only after this passed",
        description="Embeds a seeded sample of the catalog in fp32 and in --precision with the "
        "same runtime, and compares each sampled image's k nearest other images (neighbour "
        "recall@k) and the vectors' cosines. The result is kept with the model's export: "
        "the indexer, the server and `vsearch search` load the lossy precision only when the "
        "last check on this machine passed. Exit 0: passed; 1: below --min-recall.",
    )
    p.add_argument("source", help="catalog: a folder of images, or a .csv / .jsonl manifest")
    p.add_argument(
        "--images",
        type=int,
        default=DEFAULT_IMAGES,
        help=f"images sampled (default {DEFAULT_IMAGES})",
    )
    p.add_argument(
        "-k", type=int, default=DEFAULT_K, help=f"neighbours compared (default {DEFAULT_K})"
    )
    p.add_argument(
        "--min-recall",
        type=float,
        default=DEFAULT_MIN_RECALL,
        help=f"neighbour recall@k needed to pass (default {DEFAULT_MIN_RECALL})",
    )
    p.add_argument("--seed", type=int, default=0, help="sample seed (default 0)")
    p.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    add_model_args(p)
    add_settings_args(p, "indexing")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from indexer.catalog import load_catalog
    from indexer.decoding import catalog_decoder
    from search import Embedder
    from search.backends.precision_check import LOSSY
    from search.errors import ConfigError
    from search.images.workers import read_picture

    settings = settings_from(args)
    precision = settings.model.precision
    if precision not in LOSSY:
        raise ConfigError(f"give --precision {' or '.join(LOSSY)}: the precision to check")
    backend = "openvino" if settings.model.backend == "auto" else settings.model.backend
    if backend != "openvino":
        raise ConfigError(f"precision {precision} is offered with --backend openvino only")
    if args.images < 2 or args.k < 1 or not 0 <= args.min_recall <= 1:
        raise ConfigError("--images needs at least 2, -k at least 1, --min-recall 0..1")
    items = load_catalog(args.source, allowed_roots=settings.indexing.allowed_roots).items
    refs = sorted({item.image for item in items})
    refs = random.Random(args.seed).sample(refs, min(args.images, len(refs)))
    reference = Embedder(
        settings.model.model,
        settings.model.pretrained,
        device="cpu",
        precision="fp32",
        cache_dir=settings.model.cache_dir,
        backend=backend,
        threads=settings.indexing.threads,
    )
    pre = reference.runtime_preprocess
    if pre is None or reference.backend != backend:
        raise ConfigError(f"this model cannot run on {backend} here (see the log above)")
    decoder = catalog_decoder(
        settings.indexing.max_image_pixels,
        reference.info.image_size,
        allow_private=settings.indexing.allow_private_urls,
    )
    pictures = [read_picture(ref, pre, decoder)[0] for ref in refs]
    usable = [p for p in pictures if p is not None]
    if len(usable) < len(pictures):
        log.warning(
            "%d of %d sampled images could not be read", len(pictures) - len(usable), len(pictures)
        )
    pixels = np.stack(usable) if usable else np.zeros((0, 1, 1, 3), np.uint8)
    check = reference.check_precision(
        pixels, precision, catalog=str(args.source), k=args.k, min_recall=args.min_recall
    )
    if args.json:
        print_json({**asdict(check), "passed": check.passed})
    else:
        print(check.describe())
        if not check.passed:
            print(f"{precision} stays off; fp32 is used (lower --min-recall to accept it)")
    return EXIT_OK if check.passed else EXIT_PARTIAL
