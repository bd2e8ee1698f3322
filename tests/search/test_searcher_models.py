"""A long-running searcher keeps only the live model's embedder (promotions release the old)."""

from __future__ import annotations

import gc
import weakref

import pytest

import search.searcher as searcher_module
from search.config import Settings
from search.embedder import ModelInfo
from search.searcher import Searcher


def _model(name: str) -> ModelInfo:
    return ModelInfo(name, "", "checkpoint", 4, False, 224)


class _FakeEmbedder:
    def __init__(self, name: str, pretrained: str) -> None:
        self.info = _model(name)

    @classmethod
    def from_settings(cls, settings: Settings, model: str, pretrained: str) -> _FakeEmbedder:
        return cls(model, pretrained)


class _Store:
    def __init__(self) -> None:
        self.live = "v1"

    def require(self, alias: str) -> str:
        return self.live

    def provenance(self, physical: str) -> ModelInfo:
        return _model(physical)


def test_promotion_releases_the_old_models_embedder(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(searcher_module, "Embedder", _FakeEmbedder)
    store = _Store()
    searcher = Searcher(Settings.of(alias_ttl=0), store=store)  # type: ignore[arg-type]

    first = searcher.embedder_for(searcher._live()[1])
    assert searcher.embedder_for(_model("v1")) is first  # loaded once while live
    old = weakref.ref(first)
    del first

    store.live = "v2"  # a promotion
    second = searcher.embedder_for(searcher._live()[1])
    assert second.info.name == "v2"
    gc.collect()
    assert old() is None, "the old model's embedder is still held"
    assert list(searcher._embedders) == [second.info.key]
