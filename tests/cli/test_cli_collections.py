"""`vsearch collections`: every collection an alias points to is marked live, with its aliases."""

import pytest

from cli.main import EXIT_OK, main
from search.config import Settings
from search.embedder import ModelInfo
from search.store import MilvusStore


@pytest.fixture
def cli_env(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Point the in-process CLI at this test's Lite database."""
    monkeypatch.setenv("VSEARCH_URI", settings.store.uri)
    monkeypatch.setenv("VSEARCH_LOCK_DIR", settings.store.lock_dir)
    return settings


def _row(item_id: str) -> dict:
    return {
        "id": item_id,
        "vector": [1.0] + [0.0] * 7,
        "image": f"/photos/{item_id}.jpg",
        "content_hash": "c",
        "meta_hash": "m",
        "source_sig": "s",
        "metadata": {},
    }


def test_every_aliased_collection_is_live_and_names_its_aliases(cli_env: Settings, capsys) -> None:
    model = ModelInfo("test-net", "", "0123abcd", 8, False, 224)
    store = MilvusStore(cli_env)
    for name in ("catalog__a", "shop__b", "catalog__old"):
        store.create(name, model)
    store.upsert("catalog__a", [_row("x1"), _row("x2")])
    store.flush("catalog__a")
    store.set_alias("catalog", "catalog__a")
    store.set_alias("shop", "shop__b")
    store.set_alias("shop-eu", "shop__b")

    assert main(["collections"]) == EXIT_OK
    rows = {}
    for line in capsys.readouterr().out.splitlines():
        live = line.startswith("LIVE")
        name, count = line.split()[live : live + 2]
        aliases = line.split("<- ")[1].split(", ") if "<- " in line else []
        rows[name] = (live, int(count), sorted(aliases))
    assert rows == {
        "catalog__a": (True, 2, ["catalog"]),
        "catalog__old": (False, 0, []),
        "shop__b": (True, 0, ["shop", "shop-eu"]),
    }
