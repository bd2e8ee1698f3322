"""Settings: one frozen dataclass with real defaults.

Library code receives a :class:`Settings`; only entry points (CLI, server) read the
environment, through :meth:`Settings.from_env` (variables with the ``VSEARCH_`` prefix).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ConfigError

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

    uri: str = "./data/vsearch.db"
    token: str = ""
    collection: str = "catalog"
    model: str = DEFAULT_MODEL
    pretrained: str = ""
    device: str = "auto"
    precision: str = "auto"
    cache_dir: str = field(default_factory=_default_cache_dir)
    batch_size: int = 0  # 0: chosen per device (see indexer.tuning)
    workers: int = -1  # -1: chosen per device
    threads: int = 0  # torch intra-op threads; 0: chosen per device
    upsert_bytes: int = 8 * 1024 * 1024  # well under Milvus's 64 MB request limit
    max_image_pixels: int = 64_000_000
    max_delete_fraction: float = 0.5
    numeric_columns: tuple[str, ...] = ("price",)
    index_type: str = "HNSW"
    metric: str = "COSINE"
    hnsw_m: int = 16
    hnsw_ef_construction: int = 200
    search_ef: int = 256  # recall@10 0.97 at 100k items (docs/benchmarks.md); 128 gave 0.87
    lock_dir: str = ""
    allowed_roots: tuple[str, ...] = ()
    min_score: float = 0.0
    alias_ttl: float = 2.0  # seconds a searcher trusts its alias resolution
    # Strong: a search sees every row written before it (a query right after `vsearch index`
    # finds the new items). Bounded: up to the server's grace time (5 s) stale, and on a
    # Milvus server ~400 ms faster per query (docs/benchmarks.md). Lite ignores it.
    search_consistency: str = "Strong"
    retries: int = 3
    retry_backoff: float = 0.5
    # photo queries: "nine" searches the whole photo and nine crops, "five" five crops, and
    # each item keeps its best score (search.query_crops: +0.21 / +0.15 recall@1 on
    # phone-style photos); "none" searches the whole photo only
    query_crops: str = "nine"

    def __post_init__(self) -> None:
        if self.query_crops not in QUERY_CROPS:
            raise ConfigError(
                f"query_crops must be one of {', '.join(QUERY_CROPS)}, not {self.query_crops!r}"
            )
        if self.search_consistency not in CONSISTENCY_LEVELS:
            raise ConfigError(
                f"search_consistency must be one of {', '.join(CONSISTENCY_LEVELS)}, "
                f"not {self.search_consistency!r}"
            )

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
        values: dict[str, object] = {}
        for f in dataclasses.fields(cls):
            raw = env.get(ENV_PREFIX + f.name.upper())
            if raw is not None and raw != "":
                values[f.name] = _coerce(f.name, raw, cls.__dataclass_fields__[f.name].type)
        values.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls(**values)  # type: ignore[arg-type]
        except TypeError as exc:
            raise ConfigError(str(exc)) from exc


def _coerce(name: str, raw: str, type_name: object) -> object:
    type_str = str(type_name)
    try:
        if type_str == "int":
            return int(raw)
        if type_str == "float":
            return float(raw)
        if type_str.startswith("tuple"):
            return tuple(part.strip() for part in raw.split(",") if part.strip())
    except ValueError as exc:
        raise ConfigError(f"{ENV_PREFIX}{name.upper()}={raw!r} is not a valid {type_str}") from exc
    return raw
