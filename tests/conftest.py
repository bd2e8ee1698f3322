"""Shared fixtures: offline environment, one model per session, a fresh Lite store per test."""

from __future__ import annotations

import fcntl
import os
from collections import Counter

# Never phone home from tests: a missing weight must fail fast, not hang on a download.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# The suite runs several workers and their subprocesses (servers, CLI runs, browsers) on a few
# cores: OpenMP threads (torch's) that spin while waiting only take CPU from the others.
# Set before anything imports torch; subprocesses inherit it. Measured on the 2-core CI
# machine: full suite 338 s (user 391 s) against 348-352 s (user 415-429 s) spinning.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# gRPC's C core logs to stderr (keepalive GOAWAY "too_many_pings" from a Milvus server), which
# pytest cannot capture: quiet, as the CLI keeps it (cli.main); tests of the CLI's own output
# run it without this variable.
os.environ.setdefault("GRPC_VERBOSITY", "NONE")
# A local Ray starts its workers at niceness 15, below everything else here: next to the
# other xdist workers, the Ray tests' embedding actor and decode tasks got so little CPU that
# a test taking 9 s alone took 50 s in the full run. At 0 they share the cores like any test.
os.environ.setdefault("RAY_worker_niceness", "0")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from search.config import Settings  # noqa: E402
from tests.helpers import lite_settings  # noqa: E402

pytest_plugins = ["tests.server_backend"]
MAX_WORKERS = 4  # each worker starts its own model, Milvus server and browser when it needs them


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """``-n auto``: one worker per core, plus one when slow tests run; at most MAX_WORKERS.

    A good part of the slow tests waits (for a Milvus server, a subprocess, a browser), so
    the full run keeps one worker more than the cores busy; the quick loop (``-m "not
    slow"``) is in-process work, where a third worker only adds its start-up. Measured on
    the 2-core CI machine with OpenMP waits passive (above): full run 304-307 s with 3
    workers, 338 s with 2; quick loop 56 s with 2, 59 s with 3.
    """
    cores = os.cpu_count() or 1
    quick = "not slow" in (config.getoption("markexpr", "") or "")
    return max(1, min(cores if quick else cores + 1, MAX_WORKERS))


# Files with few tests that take long (seconds of one full run, 3 workers on the 2-core
# machine, 2026-11-30), handed to the xdist workers first. xdist's own order hands out the
# files with the most tests first, so these came last: in the last ~50 s of a 273 s run one
# worker was still in them (bulk import 42 s, the cron tests 24 s) while the cores idled
# (vmstat: 33-76 % idle). Every other file keeps xdist's order (most tests first; pyproject
# sets --no-loadscope-reorder so that this order is the one used). The UI files keep their
# place: with the UI tests moved too, the in-process API tests failed in 3 of 8 runs. So does
# tests/indexer/test_ray_engine.py (~45 s): started in the first seconds of a fresh clone's
# run, next to every worker's start-up, its local Ray did not come up within Ray's 30 s.
HEAVY_FIRST = (
    "tests/benchmarks/test_benchmarks.py",  # 5 tests, 78 s
    "tests/deploy/test_bulk_import.py",  # 1 test, 42 s
    "tests/training/test_promote.py",  # 4 tests, 24 s
    "tests/deploy/test_server_restart.py",  # 1 test, 22 s
    "tests/deploy/test_live_cron.py",  # 1 test, 17-22 s
    "tests/reliability/test_orphan_workers.py",  # 1 test, 7-11 s
    "tests/deploy/test_cron_recipe.py",  # 1 test, 7 s
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """HEAVY_FIRST, then the other files by their number of tests (most first) as xdist
    orders them. The sort is stable: files with the same key, and each file's tests, keep
    their collection order."""

    def path(item: pytest.Item) -> str:
        return item.nodeid.split("::", 1)[0]

    counts = Counter(map(path, items))
    rank = {p: k for k, p in enumerate(HEAVY_FIRST)}
    items.sort(key=lambda item: (rank.get(path(item), len(rank)), -counts[path(item)]))


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One model cache for the whole run, shared by its xdist workers.

    What the cache holds is built once per run instead of once per worker: the offline model
    folder (~5 s), the ONNX and OpenVINO exports and the backend calibration that the first
    ``vsearch serve`` with ``backend=auto`` makes (~14 CPU-s). Every cache write is atomic
    (a temporary file or folder, then ``os.replace``), so workers may share it; the
    ``embedder`` fixture lets one worker build the model folder while the others wait.
    """
    shared = os.environ.get("VSEARCH_TEST_CACHE")
    if shared:
        Path(shared).mkdir(parents=True, exist_ok=True)
        return Path(shared)
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the run's temporary root; each worker's basetemp is below it
    path = root / "vsearch-cache"
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture(scope="session")
def embedder(cache_dir: Path):
    """The real offline default model (ImageNet EfficientNet-Lite0), CPU."""
    from search.embedder import Embedder

    with (cache_dir / ".build.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one worker builds the model folder, the rest load it
        return Embedder("builtin:efficientnet-lite0", device="cpu", cache_dir=cache_dir)


@pytest.fixture
def settings(tmp_path: Path, cache_dir: Path) -> Settings:
    """Settings for a fresh Milvus Lite database of this test (no retries: fail fast)."""
    return lite_settings(tmp_path, cache_dir)
