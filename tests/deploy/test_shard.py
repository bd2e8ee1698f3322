"""Sharded indexing: disjoint shards fill one collection; a shard never deletes another's."""

from __future__ import annotations

from pathlib import Path

import pytest

from cli.main import main
from indexer.pipeline import IndexOptions, run_index
from indexer.shard import Shard, shard_of
from search.errors import ConfigError
from search.store import MilvusStore
from tests.helpers import write_folder


def test_shard_assignment_is_stable_and_partitions_ids() -> None:
    ids = [f"sku-{i}" for i in range(2000)]
    owners = [shard_of(i, 4) for i in ids]
    assert set(owners) == {1, 2, 3, 4}
    assert all(300 < owners.count(k) < 700 for k in range(1, 5))
    for i in ids[:50]:  # exactly one shard owns each id
        assert [k for k in range(1, 5) if Shard(k, 4).owns(i)] == [shard_of(i, 4)]
    # BLAKE2b, not Python's salted hash(): these values hold on every machine, every run
    assert [shard_of(f"sku-{i}", 4) for i in range(8)] == EXPECTED_SKU_SHARDS
    assert Shard.parse(" 2/4 ") == Shard(2, 4) and str(Shard(3, 8)) == "3/8"
    for bad in ("0/4", "5/4", "2", "a/b", ""):
        with pytest.raises(ConfigError):
            Shard.parse(bad)


EXPECTED_SKU_SHARDS = [2, 3, 4, 2, 4, 4, 4, 4]


def test_sharded_runs_fill_one_collection_and_delete_only_their_own(
    tmp_path: Path, settings, embedder
) -> None:
    root = tmp_path / "catalog"
    write_folder(root, ["chelsea", "coffee", "rocket", "astronaut"], per_product=2)
    ids = sorted(str(p.relative_to(root)) for p in root.rglob("*.jpg"))
    mine = {k: {i for i in ids if shard_of(i, 2) == k} for k in (1, 2)}
    assert mine[1] and mine[2]  # both shards own something in this catalog
    store = MilvusStore(settings)
    reports = {
        k: run_index(
            root, settings, IndexOptions(shard=Shard(k, 2)), embedder=embedder, store=store
        )
        for k in (1, 2)
    }
    assert reports[1].added == len(mine[1]) and reports[2].added == len(mine[2])
    assert reports[1].collection == reports[2].collection and reports[2].count == 8
    physical = reports[1].collection

    # shard 1's machine loses one of its own files and sees a catalog without shard 2's
    victim = sorted(mine[1])[0]
    (root / victim).unlink()
    for other in mine[2]:
        (root / other).unlink()
    again = run_index(
        root, settings, IndexOptions(shard=Shard(1, 2)), embedder=embedder, store=store
    )
    assert (again.deleted, again.seen, again.embedded) == (1, len(mine[1]) - 1, 0)
    assert set(store.fingerprints(physical)) == (mine[1] - {victim}) | mine[2]


def test_cli_refuses_a_bad_shard(tmp_path: Path, settings, capsys) -> None:
    args = ["--quiet", "index", str(tmp_path), "--uri", settings.store.uri, "--shard", "3/2"]
    assert main(args) == 2
    assert "shard 3/2: K must be between 1 and N" in capsys.readouterr().err
