"""`vsearch index` when a user points it at a second catalog: advice, and a dry run's plan."""

from pathlib import Path

import pytest

from cli.main import EXIT_OK, EXIT_REFUSED, main
from indexer.pipeline import run_index
from search.config import Settings
from search.embedder import Embedder
from search.store import MilvusStore
from tests.helpers import write_folder


@pytest.fixture
def cli_env(settings: Settings, embedder, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The in-process CLI on this test's Lite database, with the session's loaded model."""
    for key, value in {
        "VSEARCH_URI": settings.store.uri,
        "VSEARCH_CACHE_DIR": settings.model.cache_dir,
        "VSEARCH_LOCK_DIR": settings.store.lock_dir,
        "VSEARCH_DEVICE": "cpu",
        "VSEARCH_WORKERS": "0",
    }.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(Embedder, "from_settings", classmethod(lambda cls, s: embedder))
    return settings


def test_another_catalog_is_refused_with_advice_and_dry_run_prints_the_plan(
    tmp_path: Path, cli_env: Settings, embedder, capsys
) -> None:
    first = tmp_path / "demo"
    write_folder(first, ["chelsea", "coffee"], per_product=2)
    assert run_index(first, cli_env, embedder=embedder).count == 4
    mine = tmp_path / "my-photos"
    write_folder(mine, ["rocket"], per_product=2)
    capsys.readouterr()

    assert main(["-q", "index", str(mine)]) == EXIT_REFUSED
    err = capsys.readouterr().err
    assert err.startswith(
        "vsearch: error: this run would delete 4 of 4 items of collection 'catalog'"
    )
    assert "--collection NAME" in err and "--force-delete" in err and err.count("\n") == 1

    assert main(["-q", "index", str(mine), "--dry-run"]) == EXIT_OK
    out = capsys.readouterr().out.splitlines()
    assert "seen 2, would add 2, update 0, delete 4; unchanged 0, failed 0" in out[0]
    assert out[0].startswith("dry run, nothing written: catalog__")
    assert out[1].startswith("  the deletion guard would refuse this run: this run would delete 4")

    assert main(["-q", "index", str(mine), "--collection", "mine", "--dry-run"]) == EXIT_OK
    assert "would add 2, update 0, delete 0" in capsys.readouterr().out
    assert [c.name for c in MilvusStore(cli_env).collections()] == [
        f"catalog__{embedder.info.slug}"
    ]  # the dry runs wrote nothing

    assert main(["-q", "index", str(mine), "--collection", "mine"]) == EXIT_OK
    store = MilvusStore(cli_env)
    assert store.count(store.require("mine")) == 2 and store.count(store.require("catalog")) == 4
