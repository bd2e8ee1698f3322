"""Crash safety: ``kill -9`` the indexer at many points, re-run, and the collection is exact.

Each crash runs a real ``vsearch index`` subprocess that owns the Milvus Lite database (the
storage engine dies with it, mid-write where the point says so). The SIGKILL comes from
``crash_entry`` (a wrapper entry point that patches one store method) or from this test
watching the subprocess's log from outside. The re-run and the checks then query Milvus.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from indexer.pipeline import run_index
from search.config import Settings
from tests.helpers import PHOTOS, photo, product_catalog, variant, write_manifest

from .checks import (
    assert_collection_equals_catalog,
    kill_index_when,
    run_vsearch,
)

pytestmark = pytest.mark.slow
NAMES = PHOTOS[:4]  # 4 products x 3 views = 12 items; batch size 2 -> 6 upserts


@pytest.fixture(scope="module")
def catalogs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """v1: 12 items. v2 (same root): 4 removed, 2 new, 2 images replaced, 2 re-tagged."""
    root = tmp_path_factory.mktemp("crash-catalog")
    v1 = product_catalog(root, NAMES, per_product=3)
    v1_rows = [dict(r) for r in _csv_rows(v1)]
    rows = [r for r in v1_rows if not r["id"].startswith(NAMES[0])]  # 3 removed
    rows = [r for r in rows if r["id"] != f"{NAMES[1]}-2"]  # 4 removed
    (root / "img2").mkdir()
    for k, name in enumerate(PHOTOS[4:6]):  # 2 new items
        photo(name).save(root / "img2" / f"{name}.jpg", "JPEG", quality=90)
        rows.append({**rows[0], "id": f"new-{k}", "image": f"img2/{name}.jpg", "title": name})
    for r in rows:
        if r["id"] in (f"{NAMES[2]}-0", f"{NAMES[3]}-1"):  # image replaced (another file)
            variant(photo(PHOTOS[6]), int(r["id"][-1])).save(root / "img2" / f"{r['id']}.jpg")
            r["image"] = f"img2/{r['id']}.jpg"
        if r["id"] in (f"{NAMES[2]}-1", f"{NAMES[3]}-2"):  # metadata changed only
            r["price"], r["title"] = "99.50", r["title"] + " (sale)"
    v2 = write_manifest(root / "v2", rows).rename(root / "catalog-v2.csv")  # same root as v1
    return v1, v2


def _csv_rows(path: Path) -> list[dict[str, str]]:
    import csv

    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def _settings(base: Settings, tmp: Path) -> Settings:
    return base.replace(uri=str(tmp / "milvus" / "crash.db"), batch_size=2, workers=0)


@pytest.fixture(scope="module")
def built_v1(
    catalogs: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory, cache_dir, embedder
):
    """A Lite database holding v1, built once in this process (each test copies it: a copy
    carries no lock, so the crashing subprocess can own it)."""
    tmp = tmp_path_factory.mktemp("crash-template")
    s = Settings.of(uri=str(tmp / "v1.db"), cache_dir=str(cache_dir), lock_dir=str(tmp / "locks"))
    s = s.replace(batch_size=2, workers=0, threads=2, retries=0)
    report = run_index(catalogs[0], s, embedder=embedder)
    assert report.ok and report.count == 12
    return Path(s.store.uri)


def _crash_then_recover(
    s: Settings, manifest: Path, point: str, nth: int, embedder
) -> subprocess.CompletedProcess[str]:
    crashed = run_vsearch(s, "index", str(manifest), crash=(point, nth))
    assert crashed.returncode == -signal.SIGKILL, (crashed.returncode, crashed.stderr[-3000:])
    assert "crash_entry: SIGKILL now" in crashed.stderr
    # The re-run: takes the indexer lock the dead process held and repairs the collection.
    report = run_index(manifest, s, embedder=embedder)
    assert report.ok, report.failed + report.row_errors
    assert report.live
    assert_collection_equals_catalog(s, manifest, embedder)
    return crashed


@pytest.mark.parametrize(
    ("point", "nth"),
    [("create", 1), ("upsert", 3), ("flush", 1), ("alias", 1)],
)
def test_first_build_killed_then_rerun_is_exact(
    point: str, nth: int, catalogs, settings: Settings, tmp_path: Path, embedder
) -> None:
    s = _settings(settings, tmp_path)
    _crash_then_recover(s, catalogs[0], point, nth, embedder)


@pytest.mark.parametrize(("point", "nth"), [("retag", 1), ("delete", 1)])
def test_incremental_run_killed_then_rerun_is_exact(
    point: str, nth: int, catalogs, built_v1: Path, settings: Settings, tmp_path: Path, embedder
) -> None:
    s = _settings(settings, tmp_path)
    shutil.copytree(built_v1, s.store.uri)
    _crash_then_recover(s, catalogs[1], point, nth, embedder)


def test_killed_from_outside_while_embedding(catalogs, settings: Settings, tmp_path, embedder):
    """SIGKILL sent by this test the moment the subprocess logs that embedding started."""
    s = _settings(settings, tmp_path)
    code, _ = kill_index_when(s, catalogs[0], "embedding 12 images")
    assert code == -signal.SIGKILL
    report = run_index(catalogs[0], s, embedder=embedder)
    assert report.ok and report.count == 12
    assert_collection_equals_catalog(s, catalogs[0], embedder)
