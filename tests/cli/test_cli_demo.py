"""`vsearch demo` run twice, as a curious first-time user does: the second run touches nothing."""

from pathlib import Path

import pytest

import cli.sample
from cli.main import EXIT_OK, main
from search.config import Settings
from search.embedder import Embedder
from search.searcher import Searcher
from search.store import MilvusStore


@pytest.fixture
def demo_env(settings: Settings, embedder, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The in-process CLI on this test's Lite database, the session's model, 3 products."""
    monkeypatch.setenv("VSEARCH_URI", settings.store.uri)
    monkeypatch.setenv("VSEARCH_CACHE_DIR", settings.model.cache_dir)
    monkeypatch.setenv("VSEARCH_LOCK_DIR", settings.store.lock_dir)
    monkeypatch.setenv("VSEARCH_DEVICE", "cpu")
    monkeypatch.setenv("VSEARCH_WORKERS", "0")
    monkeypatch.setattr(Embedder, "from_settings", classmethod(lambda cls, s: embedder))
    monkeypatch.setattr(Searcher, "embedder_for", lambda self, model: embedder)
    # the demo's queries use products 1 (chelsea) and 3 (coffee): keep 3 of 18 (9 photos)
    monkeypatch.setattr(cli.sample, "PRODUCTS", cli.sample.PRODUCTS[:3])
    return settings


def test_second_demo_run_upserts_nothing_and_says_so(
    tmp_path: Path, demo_env: Settings, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    catalog = tmp_path / "sample"
    assert main(["-q", "demo", "--catalog", str(catalog)]) == EXIT_OK
    first = capsys.readouterr().out
    assert ": seen 9, added 9, updated 0, unchanged 0, deleted 0, failed 0; 9 items" in first
    assert " images/s (9 embedded in " in first
    times = {p.name: p.stat().st_mtime_ns for p in catalog.rglob("*") if p.is_file()}
    assert len(times) == 10  # 9 photos and catalog.csv

    upserted: list[int] = []
    real_upsert = MilvusStore.upsert

    def counting_upsert(self: MilvusStore, name: str, rows: list) -> int:
        upserted.append(len(rows))
        return real_upsert(self, name, rows)

    monkeypatch.setattr(MilvusStore, "upsert", counting_upsert)
    assert main(["-q", "demo", "--catalog", str(catalog)]) == EXIT_OK
    second = capsys.readouterr().out
    assert upserted == []  # nothing rewritten, not even to record new file times
    assert (
        ": seen 9, added 0, updated 0, unchanged 9, deleted 0, failed 0; 9 items; nothing to embed (run "
        in second
    )
    assert {p.name: p.stat().st_mtime_ns for p in catalog.rglob("*") if p.is_file()} == times
    assert "SKU-001-3  Chelsea the tabby cat print (view 3)" in second  # the demo still searches
