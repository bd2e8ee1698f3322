"""Settings: one frozen dataclass with real defaults.

Library code receives a :class:`Settings`; only entry points (CLI, server) read the
environment, through :meth:`Settings.from_env` (variables with the ``VSEARCH_`` prefix).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .backends import BACKENDS, PRECISIONS
from .errors import ConfigError
from .options import check_choices, from_env, option

DEFAULT_MODEL = "builtin:efficientnet-lite0"
ENV_PREFIX = "VSEARCH_"
CONSISTENCY_LEVELS = ("Strong", "Bounded", "Session", "Eventually")
QUERY_CROPS = ("nine", "five", "none")


def _default_cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return str(Path(base) / "vsearch")


@dataclass(frozen=True)
class Settings:
    """Everything configurable, with defaults that work offline on a laptop.

    uri: a Milvus Lite path (a directory ending in ``.db``) or a server URI
        (``http://host:19530``); ``token`` authenticates against a server.
    collection: the public (alias) name of the catalog collection.
    model / pretrained: an open_clip model name and pretrained tag, a ``local-dir:PATH``
        model folder, or the built-in offline default ``builtin:efficientnet-lite0``.
    """

    # store
    uri: str = option(
        "./data/vsearch.db",
        "Milvus Lite path or server URI (default ./data/vsearch.db)",
        section="store",
    )
    token: str = option("", "Milvus token, user:password", section="store")
    collection: str = option("catalog", "collection alias (default catalog)", section="store")
    # model
    model: str = option(
        DEFAULT_MODEL,
        "open_clip name, local-dir:PATH or builtin:efficientnet-lite0",
        section="model",
    )
    pretrained: str = option(
        "", "open_clip pretrained tag, e.g. laion2b_s34b_b79k", section="model"
    )
    device: str = option("auto", "auto, cpu, cuda, cuda:1", section="model")
    # the image tower's runtime (search/backends): auto = torch + autocast on CUDA, else the
    # fastest backend measured on this machine (a short calibration, cached per machine)
    backend: str = option(
        "auto",
        "inference backend: auto (fastest measured here), torch, onnxruntime, openvino",
        choices=BACKENDS,
        section="model",
    )
    precision: str = option(
        "auto",
        "auto, fp32, fp16, bf16: CUDA autocast (auto: bf16/fp16); on a CPU fp32 unless "
        "set (bf16/fp16 with openvino)",
        choices=PRECISIONS,
        section="model",
    )
    cache_dir: str = option(
        help="model and download cache (default $XDG_CACHE_HOME/vsearch)",
        factory=_default_cache_dir,
        flag=False,
    )
    # indexing
    batch_size: int = option(
        0, "images per model batch (default: per device)", section="indexing"
    )  # 0: chosen per device (see indexer.tuning)
    workers: int = option(-1, "decode worker processes (default: per device)", section="indexing")
    threads: int = option(0, "inference threads (default: per device)", section="indexing")
    malloc_tuning: bool = option(
        True, "on the CPU, keep glibc's freed memory for the next batch", flag=False
    )
    upsert_bytes: int = option(
        8 * 1024 * 1024, "bytes per upsert request", flag=False
    )  # well under Milvus's 64 MB request limit
    max_image_pixels: int = option(64_000_000, "largest image accepted, in pixels", flag=False)
    allow_private_urls: bool = option(
        False,
        "download catalog URLs from loopback, private and link-local hosts too "
        "(refused by default: SSRF guard)",
        section="indexing",
    )
    max_delete_fraction: float = option(
        0.5, "refuse a sync that would delete more than this share", flag=False
    )
    numeric_columns: tuple[str, ...] = option(
        ("price",), "manifest columns stored as numbers", flag=False
    )
    index_type: str = option("HNSW", "Milvus index type", flag=False)
    metric: str = option("COSINE", "Milvus metric", flag=False)
    hnsw_m: int = option(16, "HNSW M", flag=False)
    hnsw_ef_construction: int = option(200, "HNSW efConstruction", flag=False)
    # recall@10 0.97 at 100k items (docs/benchmarks.md); 128 gave 0.87
    search_ef: int = option(256, "HNSW ef at search time", flag=False)
    lock_dir: str = option("", "where index locks live (default next to the store)", flag=False)
    allowed_roots: tuple[str, ...] = option(
        (), "folders an API query may read images from", flag=False
    )
    min_score: float = option(0.0, "default similarity floor", flag=False)
    alias_ttl: float = option(2.0, "seconds a searcher trusts its alias resolution", flag=False)
    # Strong: a search sees every row written before it (a query right after `vsearch index`
    # finds the new items). Bounded: up to the server's grace time (5 s) stale, and on a
    # Milvus server ~400 ms faster per query (docs/benchmarks.md). Lite ignores it.
    search_consistency: str = option(
        "Strong", "Milvus consistency level of searches", choices=CONSISTENCY_LEVELS, flag=False
    )
    retries: int = option(3, "attempts of a failed store call", flag=False)
    retry_backoff: float = option(0.5, "seconds before the first retry", flag=False)
    # photo queries: "nine" searches the whole photo and nine crops, "five" five crops, and
    # each item keeps its best score (search.query_crops: +0.21 / +0.15 recall@1 on
    # phone-style photos); "none" searches the whole photo only
    query_crops: str = option(
        "nine", "crops searched per photo query", choices=QUERY_CROPS, flag=False
    )

    def __post_init__(self) -> None:
        check_choices(self)

    def replace(self, **changes: object) -> Settings:
        """Return a copy with ``changes`` applied (unknown names raise ConfigError)."""
        known = {f.name for f in dataclasses.fields(self)}
        unknown = set(changes) - known
        if unknown:
            raise ConfigError(f"unknown setting(s): {', '.join(sorted(unknown))}")
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    @property
    def is_lite(self) -> bool:
        """True when ``uri`` names a local Milvus Lite database rather than a server."""
        return not self.uri.startswith(("http://", "https://", "tcp://", "grpc://", "unix:"))

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        """Build settings from ``VSEARCH_*`` variables, then explicit ``overrides``.

        Overrides whose value is ``None`` are ignored, so CLI flags can be passed as-is.
        """
        env = os.environ if env is None else env
        values: dict[str, object] = from_env(cls, env, ENV_PREFIX)
        values.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls(**values)  # type: ignore[arg-type]
        except TypeError as exc:
            raise ConfigError(str(exc)) from exc
