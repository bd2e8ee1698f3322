"""`vsearch search` as a first-time user meets it: bad input fails at once, hits show images."""

from pathlib import Path

import pytest

from cli.main import EXIT_OK, EXIT_USAGE, main
from indexer.pipeline import run_index
from search.config import Settings
from search.searcher import Searcher
from search.store import MilvusStore
from tests.helpers import product_catalog


@pytest.fixture
def cli_env(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Point the in-process CLI at this test's Lite database and model cache."""
    for key, value in {
        "VSEARCH_URI": settings.store.uri,
        "VSEARCH_CACHE_DIR": settings.model.cache_dir,
        "VSEARCH_LOCK_DIR": settings.store.lock_dir,
        "VSEARCH_DEVICE": "cpu",
        "VSEARCH_WORKERS": "0",
    }.items():
        monkeypatch.setenv(key, value)
    return settings


def _nothing_heavy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if the command opens Milvus or queries (which loads the model)."""

    def boom(*args: object, **kwargs: object) -> None:
        raise AssertionError("opened the store or loaded the model before checking the input")

    monkeypatch.setattr(MilvusStore, "_connect", boom)
    monkeypatch.setattr(Searcher, "similar", boom)
    monkeypatch.setattr(Searcher, "embedder_for", boom)


def test_missing_or_broken_query_photo_fails_at_once_naming_the_file(
    tmp_path: Path, cli_env: Settings, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    _nothing_heavy(monkeypatch)
    missing = tmp_path / "missing.jpg"
    assert main(["search", str(missing)]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert (
        err
        == f"vsearch: error: query image {missing}: cannot read file: No such file or directory\n"
    )

    text = tmp_path / "notes.jpg"
    text.write_text("not a photo")
    assert main(["search", str(text)]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert err == f"vsearch: error: query image {text}: not an image (unrecognised format)\n"

    folder = tmp_path / "photos"
    folder.mkdir()
    assert main(["search", str(folder)]) == EXIT_USAGE
    assert f"query image {folder}: is a directory" in capsys.readouterr().err
    assert not Path(cli_env.store.uri).exists()  # the database was never opened


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--id", ""], "the query is empty"),
        (["--text", "  "], "the query is empty"),
        (["--id", "x", "--text", "cat"], "give exactly one query"),
        (["--id", "x", "-k", "0"], "--limit must be between 1 and 1000"),
        (["--id", "x", "--offset", "-1"], "--offset must be between 0 and 10000"),
    ],
)
def test_bad_query_arguments_fail_before_the_store_opens(
    argv: list[str], message: str, cli_env: Settings, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    _nothing_heavy(monkeypatch)
    assert main(["search", *argv]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_text_output_shows_each_match_image(
    tmp_path: Path, cli_env: Settings, embedder, capsys
) -> None:
    manifest = product_catalog(tmp_path / "cat", ["coffee", "rocket"], per_product=2)
    report = run_index(manifest, cli_env, embedder=embedder)
    assert report.count == 4
    capsys.readouterr()
    assert main(["search", "--id", "coffee-0", "-k", "2"]) == EXIT_OK
    lines = capsys.readouterr().out.splitlines()
    image = str((tmp_path / "cat" / "img" / "coffee-1.jpg").resolve())
    assert lines[0].split()[0::2][:2] == ["1.", "coffee-1"]
    assert lines[1].strip() == image
    assert len(lines) == 4 and lines[3].strip().endswith(".jpg")
