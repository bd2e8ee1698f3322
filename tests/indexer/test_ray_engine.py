"""``--engine ray`` on a local Ray: the same collection as the local engine, incrementally,
and after a killed run; the flags and the refusals."""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from indexer.options import IndexOptions
from indexer.pipeline import run_index
from search.errors import ConfigError
from search.store import MilvusStore
from tests.helpers import lite_settings, photo, product_catalog, variant

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def shared_ray():  # noqa: ANN201
    """One local Ray for this module's runs, started as a run starts its own (``connect``);
    a run that finds Ray running joins it and leaves it running, so the runs here do not each
    pay a cluster start and stop (about 4 s each). The killed-driver test's subprocess joins
    it by address, as a driver joins a cluster (``--ray-address``)."""
    ray = pytest.importorskip("ray", reason='Ray is not installed (pip install "vsearch[ray]")')
    from indexer.engines.ray_engine import connect, stop_local

    try:
        _, started = connect(None)
    except Exception:  # noqa: BLE001 - Ray raises a bare Exception when its node is late
        # "The current node timed out during startup" (the raylet did not register within
        # Ray's 30 s) on a loaded 2-core machine: start it once more
        ray.shutdown()
        _, started = connect(None)
    yield ray
    if started:
        stop_local(ray)


def _rows(store: MilvusStore, collection: str) -> dict[str, dict]:
    ids = sorted(store.fingerprints(collection))
    return {r["id"]: r for r in store.get(collection, ids, vectors=True)}


def _assert_same_collection(a: dict[str, dict], b: dict[str, dict]) -> None:
    assert sorted(a) == sorted(b)
    for key, row in a.items():
        other = b[key]
        for field in ("image", "content_hash", "meta_hash", "source_sig", "metadata"):
            assert row[field] == other[field], (key, field)
        va, vb = np.asarray(row["vector"]), np.asarray(other["vector"])
        cos = float(va @ vb / np.linalg.norm(va) / np.linalg.norm(vb))
        assert cos >= 0.9999, (key, cos)


def _edit_manifest(manifest: Path) -> None:
    """One image changed, one item added, one removed, one re-titled."""
    rows = list(csv.DictReader(manifest.open()))
    root = manifest.parent
    variant(photo("rocket"), 2).save(root / "img" / "rocket-0.jpg", "JPEG", quality=90)
    rows = [r for r in rows if r["id"] != "astronaut-1"]
    rows[0]["title"] = "a new title"
    variant(photo("brick"), 1).save(root / "img" / "brick-0.jpg", "JPEG", quality=90)
    rows.append({**rows[1], "id": "brick-0", "image": "img/brick-0.jpg", "title": "brick"})
    with manifest.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def test_engine_and_write_are_index_flags() -> None:
    from cli.flags import add_flags, build

    parser = argparse.ArgumentParser()
    add_flags(parser, IndexOptions)
    args = parser.parse_args(
        ["--engine", "ray", "--ray-address", "auto", "--write", "bulk", "--bulk-dir", "/x"]
    )
    opts = build(IndexOptions, args)
    assert (opts.engine, opts.ray_address, opts.write, opts.bulk_dir) == (
        "ray",
        "auto",
        "bulk",
        "/x",
    )
    defaults = build(IndexOptions, parser.parse_args([]))
    assert (defaults.engine, defaults.write, defaults.ray_address) == ("local", "upsert", None)
    with pytest.raises(SystemExit):
        parser.parse_args(["--engine", "spark"])


def test_missing_ray_is_one_clear_line(monkeypatch: pytest.MonkeyPatch) -> None:
    from indexer.engines.ray_engine import require_ray

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(ConfigError, match=r'pip install "vsearch\[ray\]"'):
        require_ray()


def test_bulk_write_is_refused_on_milvus_lite(tmp_path: Path, settings, embedder) -> None:
    manifest = product_catalog(tmp_path / "cat", per_product=1)
    store = MilvusStore(settings)
    with pytest.raises(ConfigError, match="Milvus Lite has no bulk import"):
        run_index(manifest, settings, IndexOptions(write="bulk"), embedder=embedder, store=store)
    assert store.collections() == []  # refused before a collection was created


@pytest.fixture(scope="module")
def runtime_embedder(cache_dir: Path, embedder):  # noqa: ANN201
    """The default path of a CPU user (backend auto picks an exported runtime): OpenVINO.
    Its Ray stages run without torch (the torch-free transform). The PyTorch path (a GPU
    cluster's) is covered by the same-collection test's second Ray run."""
    from search.embedder import Embedder

    return Embedder(
        "builtin:efficientnet-lite0", device="cpu", cache_dir=cache_dir, backend="openvino"
    )


@pytest.mark.slow
def test_ray_builds_the_same_collection_as_local_then_only_changes(
    tmp_path: Path, cache_dir: Path, embedder, runtime_embedder, shared_ray
) -> None:
    """Local and Ray on OpenVINO, then Ray's incremental run on PyTorch (its fused decode and
    transform, as on a GPU cluster) next to local on OpenVINO: the same collection each time,
    the same failure for the broken file."""
    manifest = product_catalog(tmp_path / "cat", per_product=2)
    (tmp_path / "cat" / "img" / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    with manifest.open("a") as fh:
        fh.write("broken,img/broken.jpg,broken,animals,Acme,1.00,broken\n")
    stores = {e: MilvusStore(lite_settings(tmp_path / e, cache_dir)) for e in ("local", "ray")}

    def index(engine: str, emb=runtime_embedder):  # noqa: ANN001, ANN202
        store = stores[engine]
        return run_index(
            manifest, store.settings, IndexOptions(engine=engine), embedder=emb, store=store
        )

    first = {e: index(e) for e in stores}
    for report in first.values():
        assert (report.seen, report.added, report.embedded, report.count) == (9, 8, 8, 8)
        assert [f.id for f in report.failed] == ["broken"]
    assert first["ray"].failed[0].reason == first["local"].failed[0].reason
    _assert_same_collection(*(_rows(stores[e], first[e].collection) for e in stores))

    _edit_manifest(manifest)
    second = {"local": index("local"), "ray": index("ray", embedder)}  # Ray on PyTorch
    assert embedder.backend == "torch"
    for report in second.values():
        # rocket-0 changed and brick-0 is new: embedded; the re-title is a re-tag
        assert (report.embedded, report.added, report.deleted, report.count) == (2, 1, 1, 8)
        assert report.updated == 2
        assert [f.id for f in report.failed] == ["broken"]  # tried again, failed again
    assert second["ray"].failed[0].reason == second["local"].failed[0].reason
    rows = {e: _rows(stores[e], second[e].collection) for e in stores}
    _assert_same_collection(rows["local"], rows["ray"])
    assert "astronaut-1" not in rows["ray"] and "brick-0" in rows["ray"]
    third = index("ray")
    assert (third.embedded, third.unchanged, third.count) == (0, 8, 8)


DRIVER = """
import json, os, sys
from indexer.options import IndexOptions
from indexer.pipeline import run_index
from search.config import Settings
settings = Settings.of(**json.loads(sys.argv[1]))
def progress(done, total):
    print(f"progress {done} {total}", flush=True)
options = IndexOptions(engine="ray", ray_address=sys.argv[3])
report = run_index(sys.argv[2], settings, options, progress=progress)
print("finished", report.embedded, flush=True)
"""


def _big_catalog(root: Path, n: int) -> Path:
    (root / "img").mkdir(parents=True)
    base = [photo(name, 256) for name in ("chelsea", "coffee", "rocket", "astronaut")]
    rows = []
    for k in range(n):
        img = variant(base[k % 4], k // 4).rotate(k * 7, expand=False)
        img.save(root / "img" / f"p{k}.jpg", "JPEG", quality=85)
        rows.append({"id": f"p{k}", "image": f"img/p{k}.jpg", "title": f"item {k}"})
    with (root / "catalog.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["id", "image", "title"])
        writer.writeheader()
        writer.writerows(rows)
    return root / "catalog.csv"


@pytest.mark.slow
def test_a_killed_ray_run_resumes_without_duplicates(
    tmp_path: Path, cache_dir: Path, runtime_embedder, shared_ray
) -> None:
    embedder = runtime_embedder
    n = 48
    manifest = _big_catalog(tmp_path / "cat", n)
    settings = lite_settings(tmp_path / "store", cache_dir).replace(batch_size=4)
    fields = ("uri", "cache_dir", "device", "lock_dir", "retries", "workers", "threads")
    fields += ("batch_size", "model", "backend")
    config = {f: v for f, v in settings.flat().items() if f in fields}
    config["backend"] = embedder.backend
    # The driver joins this module's Ray (a cluster outlives a driver killed mid-run, and
    # the test pays no second cluster start). A driver that dies before any progress is
    # started once more, and its stderr is in the message if it fails again.
    address = shared_ray.get_runtime_context().gcs_address
    for _attempt in range(2):
        killed_at, stderr = _kill_driver_mid_run(config, manifest, address, tmp_path / "driver.err")
        if killed_at is not None:
            break
    assert killed_at is not None and killed_at < n, (
        f"the run finished or died before it was killed; driver stderr: {stderr[-3000:]}"
    )

    store = MilvusStore(settings)
    resumed = run_index(
        manifest, settings, IndexOptions(engine="ray"), embedder=embedder, store=store
    )
    assert resumed.count == n and not resumed.failed
    assert resumed.embedded + resumed.unchanged == n
    stored = store.fingerprints(resumed.collection)
    assert sorted(stored) == sorted(f"p{k}" for k in range(n))
    total = store.client.query(resumed.collection, filter="", output_fields=["count(*)"])
    assert total[0]["count(*)"] == n  # 0 duplicates
    again = run_index(
        manifest, settings, IndexOptions(engine="ray"), embedder=embedder, store=store
    )
    assert (again.embedded, again.unchanged) == (0, n)


def _kill_driver_mid_run(
    config: dict, manifest: Path, address: str, err_path: Path
) -> tuple[int | None, str]:
    """Run DRIVER on the Ray at ``address``; SIGKILL it once 12 images are done.
    (images done at the kill, its stderr)"""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    killed_at = None
    with err_path.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-c", DRIVER, json.dumps(config), str(manifest), address],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            start_new_session=True,  # its own group, stopped whole below
        )
        try:
            deadline = time.monotonic() + 300
            for line in proc.stdout:  # type: ignore[union-attr]
                if line.startswith("progress"):
                    done = int(line.split()[1])
                    if done >= 12:
                        killed_at = done
                        os.kill(proc.pid, signal.SIGKILL)  # the driver, by PID, mid-run
                        break
                assert time.monotonic() < deadline, "the Ray driver made no progress"
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
            # anything the driver started itself (the Ray workers are the cluster's children)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
    return killed_at, err_path.read_text(errors="replace")


@pytest.mark.slow  # starts a local Ray
def test_ray_data_keeps_its_console_quiet(shared_ray) -> None:
    """The run reports its own progress: Ray Data's per-dataset INFO lines go to its log file
    only, and its 'progress bars disabled' warning (they are off on purpose) is not shown."""
    import logging

    from indexer.engines.ray_engine import RayEngine, connect

    connect(None)  # joins the module's Ray, applying the same console settings
    consoles = [
        h for h in logging.getLogger("ray.data").handlers if isinstance(h, logging.StreamHandler)
    ]
    assert consoles and all(h.level >= logging.WARNING for h in consoles)
    from ray.util.debug import log_once

    assert not log_once("ray_data_progress_manager_disabled")  # already marked as shown
    assert str(RayEngine(None, None, None)) == "Ray (local)"  # type: ignore[arg-type]
    assert str(RayEngine(None, None, None, address="auto")) == "Ray at auto"  # type: ignore[arg-type]


@pytest.mark.slow  # starts a local Ray
def test_stop_local_kills_the_monitor_first_then_shuts_ray_down(shared_ray) -> None:
    """ray.shutdown waits up to a second for each process; the monitor always took it.
    stop_local SIGKILLs the monitor by its PID first, then calls ray.shutdown."""
    from types import SimpleNamespace

    from indexer.engines.ray_engine import stop_local

    # the layout stop_local reads, on the real local Ray this module started
    node = shared_ray._private.worker._global_node
    monitor = [info.process for info in node.all_processes["monitor"]]
    assert monitor and all(p.poll() is None for p in monitor), "revisit stop_local"

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    seen: list[int | None] = []
    fake = SimpleNamespace(
        _private=SimpleNamespace(
            worker=SimpleNamespace(
                _global_node=SimpleNamespace(
                    all_processes={"monitor": [SimpleNamespace(process=child)]}
                )
            )
        ),
        shutdown=lambda: seen.append(child.poll()),
    )
    try:
        stop_local(fake)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert seen == [-signal.SIGKILL]  # dead (SIGKILL) when ray.shutdown ran
    stop_local(SimpleNamespace(shutdown=lambda: seen.append(0)))  # another layout: shutdown
    assert seen[-1] == 0
