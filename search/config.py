"""Settings: one typed configuration in sections, frozen, with real defaults.

:class:`Settings` holds four sections, each a frozen dataclass whose fields are
``option(...)`` declarations (default, type, choices, help; see :mod:`search.options`):

- ``store``    :class:`StoreSettings`: where the vectors live and how Milvus is called;
- ``model``    :class:`ModelSettings`: which model embeds the images and on what runtime;
- ``indexing`` :class:`IndexingSettings`: reading catalogs and running the pipeline;
- ``search``   :class:`SearchSettings`: how queries are answered.

A field's section is decided by what reads it: ``settings.store.uri``,
``settings.model.cache_dir``, ``settings.search.query_crops``. Variables stay flat and
unique across sections (``VSEARCH_URI``, ``VSEARCH_QUERY_CROPS``), and so do the names
:meth:`Settings.of` and :meth:`Settings.replace` take, which route each name to its section:

    settings = Settings.of(uri="./data/shop.db", device="cpu")
    settings.replace(collection="shoes").store.collection  # "shoes"

Library code receives a :class:`Settings`; only entry points (CLI, server) read the
environment, through :meth:`Settings.from_env`. The CLI offers a section's fields as flags
(``cli.main.add_settings_args``, one argument group per section) unless a field says
``flag=False``. Serving (``ui.service.UiOptions``) and training
(``training.finetune.options.FinetuneOptions``, ``training.evaluation.options.EvalOptions``)
are sections of the same kind that live with the code that reads them: frozen dataclasses of
``option(...)`` fields, read from ``VSEARCH_*`` variables and/or flags by their commands
(``vsearch serve``, ``vsearch finetune``, ``vsearch evaluate``), not fields of ``Settings``.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .backends import BACKENDS, PRECISIONS
from .errors import ConfigError
from .options import check_choices, from_env, option, public_name

DEFAULT_MODEL = "builtin:efficientnet-lite0"
ENV_PREFIX = "VSEARCH_"
CONSISTENCY_LEVELS = ("Strong", "Bounded", "Session", "Eventually")
QUERY_CROPS = ("nine", "five", "none")


def _default_cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return str(Path(base) / "vsearch")


@dataclass(frozen=True)
class StoreSettings:
    """The Milvus store: ``uri`` is a Milvus Lite path (a directory ending in ``.db``) or a
    server URI (``http://host:19530``); ``token`` authenticates against a server;
    ``collection`` is the public (alias) name of the catalog collection."""

    uri: str = option(
        "./data/vsearch.db", "Milvus Lite path or server URI (default ./data/vsearch.db)"
    )
    token: str = option("", "Milvus token, user:password")
    collection: str = option("catalog", "collection alias (default catalog)")
    lock_dir: str = option("", "where index locks live (default next to the store)", flag=False)
    index_type: str = option("HNSW", "Milvus index type", flag=False)
    metric: str = option("COSINE", "Milvus metric", flag=False)
    hnsw_m: int = option(16, "HNSW M", flag=False)
    hnsw_ef_construction: int = option(200, "HNSW efConstruction", flag=False)
    # recall@10 0.97 at 100k items (docs/benchmarks.md); 128 gave 0.87
    search_ef: int = option(256, "HNSW ef at search time", flag=False)
    # Strong: a search sees every row written before it (a query right after `vsearch index`
    # finds the new items). Bounded: up to the server's grace time (5 s) stale, and on a
    # Milvus server ~400 ms faster per query (docs/benchmarks.md). Lite ignores it.
    search_consistency: str = option(
        "Strong", "Milvus consistency level of searches", choices=CONSISTENCY_LEVELS, flag=False
    )
    retries: int = option(3, "attempts of a failed store call", flag=False)
    retry_backoff: float = option(0.5, "seconds before the first retry", flag=False)
    upsert_bytes: int = option(
        8 * 1024 * 1024, "bytes per upsert request", flag=False
    )  # well under Milvus's 64 MB request limit

    def __post_init__(self) -> None:
        check_choices(self)

    @property
    def is_lite(self) -> bool:
        """True when ``uri`` names a local Milvus Lite database rather than a server."""
        return not self.uri.startswith(("http://", "https://", "tcp://", "grpc://", "unix:"))


@dataclass(frozen=True)
class ModelSettings:
    """The model: ``model`` / ``pretrained`` are an open_clip model name and pretrained tag,
    a ``local-dir:PATH`` model folder, or the built-in offline default
    ``builtin:efficientnet-lite0``; the rest is its runtime and its cache."""

    model: str = option(
        DEFAULT_MODEL, "open_clip name, local-dir:PATH or builtin:efficientnet-lite0"
    )
    pretrained: str = option("", "open_clip pretrained tag, e.g. laion2b_s34b_b79k")
    device: str = option("auto", "auto, cpu, cuda, cuda:1")
    # the image tower's runtime (search/backends): auto = torch + autocast on CUDA, else the
    # fastest backend measured on this machine (a short calibration, cached per machine)
    backend: str = option(
        "auto",
        "inference backend: auto (fastest measured here), torch, onnxruntime, openvino",
        choices=BACKENDS,
    )
    precision: str = option(
        "auto",
        "auto, fp32, fp16, bf16: CUDA autocast (auto: bf16/fp16); on a CPU fp32 unless "
        "set (bf16/fp16: OpenVINO's, once `vsearch check-precision` passed on the catalog)",
        choices=PRECISIONS,
    )
    cache_dir: str = option(
        help="model and download cache (default $XDG_CACHE_HOME/vsearch)",
        factory=_default_cache_dir,
        flag=False,
    )
    malloc_tuning: bool = option(
        True, "on the CPU, keep glibc's freed memory for the next batch", flag=False
    )

    def __post_init__(self) -> None:
        check_choices(self)


@dataclass(frozen=True)
class IndexingSettings:
    """Reading catalogs (manifests, URLs, images) and running the indexing pipeline."""

    # 0 / -1: chosen per device (see indexer.tuning)
    batch_size: int = option(0, "images per model batch (default: per device)")
    workers: int = option(-1, "decode worker processes (default: per device)")
    threads: int = option(0, "inference threads (default: per device)")
    allow_private_urls: bool = option(
        False,
        "download catalog URLs from loopback, private and link-local hosts too "
        "(refused by default: SSRF guard)",
    )
    # also the limit on query photos (the searcher, the page, the API): one decoding policy
    max_image_pixels: int = option(64_000_000, "largest image accepted, in pixels", flag=False)
    numeric_columns: tuple[str, ...] = option(
        ("price",), "manifest columns stored as numbers", flag=False
    )
    allowed_roots: tuple[str, ...] = option(
        (), "folders besides the manifest's own that its image paths may point into", flag=False
    )
    max_delete_fraction: float = option(
        0.5, "refuse a sync that would delete more than this share", flag=False
    )


@dataclass(frozen=True)
class SearchSettings:
    """Answering queries (the searcher, the page and the API)."""

    # photo queries: "nine" searches the whole photo and nine crops, "five" five crops, and
    # each item keeps its best score (search.query_crops: +0.21 / +0.15 recall@1 on
    # phone-style photos); "none" searches the whole photo only
    query_crops: str = option(
        "nine", "crops searched per photo query", choices=QUERY_CROPS, flag=False
    )
    min_score: float = option(0.0, "default similarity floor", flag=False)
    alias_ttl: float = option(2.0, "seconds a searcher trusts its alias resolution", flag=False)

    def __post_init__(self) -> None:
        check_choices(self)


@dataclass(frozen=True)
class Settings:
    """Everything configurable, in sections, with defaults that work offline on a laptop.

    Build it with :meth:`of` (flat names: ``Settings.of(uri=..., cache_dir=...)``), from the
    environment with :meth:`from_env`, or section by section
    (``Settings(store=StoreSettings(uri=...))``); copy it with :meth:`replace`.
    """

    store: StoreSettings = field(default_factory=StoreSettings)
    model: ModelSettings = field(default_factory=ModelSettings)
    indexing: IndexingSettings = field(default_factory=IndexingSettings)
    search: SearchSettings = field(default_factory=SearchSettings)

    @classmethod
    def of(cls, **flat: object) -> Settings:
        """Settings from flat names (``uri=``, ``cache_dir=``, ...); the rest default.

        Unknown names raise ConfigError naming them.
        """
        routed = _route(flat)
        return cls(**{name: section(**routed.get(name, {})) for name, section in SECTIONS.items()})

    def replace(self, **flat: object) -> Settings:
        """A copy with ``flat`` changes routed to their sections (unknown names: ConfigError)."""
        routed = _route(flat)
        changed = {
            name: dataclasses.replace(getattr(self, name), **values)
            for name, values in routed.items()
        }
        return dataclasses.replace(self, **changed)  # type: ignore[arg-type]

    def flat(self) -> dict[str, object]:
        """Every setting by its flat name (the inverse of :meth:`of`)."""
        return {f.name: getattr(getattr(self, s), f.name) for s, f in setting_fields()}

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        """Build settings from ``VSEARCH_*`` variables, then explicit ``overrides``.

        Overrides are flat names; those whose value is ``None`` are ignored, so CLI flags can
        be passed as-is.
        """
        env = os.environ if env is None else env
        values: dict[str, object] = {}
        for section in SECTIONS.values():
            values.update(from_env(section, env, ENV_PREFIX))
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls.of(**values)


# name -> section class, in declaration order (read from Settings, declared once there)
SECTIONS: dict[str, type] = {
    f.name: typing.get_type_hints(Settings)[f.name] for f in dataclasses.fields(Settings)
}


def setting_fields(
    sections: Mapping[str, type] | None = None,
) -> list[tuple[str, dataclasses.Field]]:
    """``(section name, field)`` for every setting, section by section."""
    sections = SECTIONS if sections is None else sections
    return [(s, f) for s, cls in sections.items() for f in dataclasses.fields(cls)]


def flat_index(sections: Mapping[str, type]) -> dict[str, str]:
    """Field name -> section name. A name declared in two sections (as a field or as a
    variable) raises ConfigError, so ``VSEARCH_X`` and ``Settings.of(x=...)`` always mean
    one setting."""
    where: dict[str, str] = {}
    spelled: dict[str, str] = {}
    for section, f in setting_fields(sections):
        for seen, name in ((where, f.name), (spelled, public_name(f))):
            if name in seen:
                raise ConfigError(f"setting {name!r} declared in both {seen[name]} and {section}")
            seen[name] = section
    return where


SECTION_OF = flat_index(SECTIONS)


def _route(flat: Mapping[str, object]) -> dict[str, dict[str, object]]:
    """``{section: {field: value}}`` from flat names, or ConfigError naming unknown ones."""
    unknown = sorted(set(flat) - set(SECTION_OF))
    if unknown:
        raise ConfigError(f"unknown setting(s): {', '.join(unknown)}")
    routed: dict[str, dict[str, object]] = {}
    for name, value in flat.items():
        routed.setdefault(SECTION_OF[name], {})[name] = value
    return routed
