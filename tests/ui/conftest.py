"""Fixtures of the UI tests: a small indexed catalog, an in-process app, a live server.

The catalog is indexed once per session, in this process (``ui_settings``), and shared
read-only by every in-process test. Milvus Lite allows one process per database, so a
``vsearch serve`` subprocess gets a copy of an indexed database directory
(:func:`indexed_copy`: indexed here, flushed, copied; a copy carries no lock) instead of a
``vsearch index`` subprocess of its own (which would import torch and load the model again).
"""

from __future__ import annotations

import csv
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from search import Searcher, Settings
from tests.helpers import PHOTOS, free_port, port_taken, product_catalog

VSEARCH = str(Path(sys.executable).with_name("vsearch"))
NAMES = PHOTOS[:5]  # chelsea, coffee, rocket, astronaut, stereo_motorcycle: 10 items
SHOP_URL = "https://shop.example/p"


def child_env(cache_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VSEARCH_")}
    env.update(
        HF_HUB_OFFLINE="1",
        HF_HUB_DISABLE_TELEMETRY="1",
        GRADIO_ANALYTICS_ENABLED="False",
        VSEARCH_CACHE_DIR=str(cache_dir),
        VSEARCH_DEVICE="cpu",
        VSEARCH_WORKERS="0",
        VSEARCH_THREADS="2",
        VSEARCH_RETRIES="0",
        NO_PROXY="127.0.0.1,localhost",
    )
    env.update(extra)
    return env


@pytest.fixture(scope="session")
def ui_catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CSV catalog of 5 products x 2 views with title, category, brand, price and product;
    the coffee product also has a product page link (``url``)."""
    manifest = product_catalog(tmp_path_factory.mktemp("ui-catalog"), NAMES, per_product=2)
    with manifest.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    for row in rows:
        row["url"] = f"{SHOP_URL}/{row['product']}" if row["product"] == "coffee" else ""
    with manifest.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return manifest


def index_here(catalog: Path, root: Path, cache_dir: Path, embedder) -> Settings:
    """Index ``catalog`` in this process into a Lite database under ``root``."""
    from indexer.pipeline import IndexOptions, run_index

    settings = Settings.of(
        uri=str(root / "milvus" / "ui.db"),
        cache_dir=str(cache_dir),
        device="cpu",
        lock_dir=str(root / "locks"),
        retries=0,
        workers=0,
        threads=2,
    )
    report = run_index(str(catalog), settings, IndexOptions(), embedder=embedder)
    assert report.ok and report.live and report.count == report.seen, report
    return settings


def indexed_copy(source: Settings, uri: str) -> str:
    """Copy the (flushed) Lite database of ``source`` to ``uri`` for another process."""
    shutil.copytree(source.store.uri, uri)
    return uri


@pytest.fixture(scope="session")
def ui_settings(
    tmp_path_factory: pytest.TempPathFactory, ui_catalog: Path, cache_dir: Path, embedder
) -> Settings:
    """The UI catalog indexed once per session in this process; tests only read it."""
    return index_here(ui_catalog, tmp_path_factory.mktemp("ui-inproc"), cache_dir, embedder)


@pytest.fixture(scope="session")
def ui_searcher(ui_settings: Settings, embedder) -> Searcher:
    return Searcher(ui_settings, embedder=embedder)


class LiveServer:
    def __init__(self, url: str, proc: subprocess.Popen, log: Path, uploads: Path | None = None):
        self.url, self.proc, self.log, self.uploads = url, proc, log, uploads


def start_server(
    uri: str, cache_dir: Path, log: Path, *extra: str, timeout: float = 240, **env: str
) -> LiveServer:
    """`vsearch serve` on a free 127.0.0.1 port, once it answers /health.

    free_port() closes its socket before the server binds, and in the seconds the server takes
    to start another process can take that port (seen once in a fresh clone's full run:
    "[Errno 98] ... address already in use"): then the server is started again on a new port.
    """
    for attempt in range(3):
        port = free_port()
        with log.open("w") as out:  # the server writes to its own copy of the descriptor
            proc = subprocess.Popen(
                [VSEARCH, "serve", "--uri", uri, "--port", str(port), *extra],
                env=child_env(cache_dir, **env),
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                text = log.read_text()
                if port_taken(text) and attempt < 2:
                    break  # the port was taken before the server bound it: another one
                raise RuntimeError(f"vsearch serve exited {proc.returncode}: {text[-3000:]}")
            try:
                if httpx.get(url + "/health", timeout=2).status_code in (200, 503):
                    uploads = env.get("GRADIO_TEMP_DIR")
                    return LiveServer(url, proc, log, Path(uploads) if uploads else None)
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        else:
            stop_server(proc)
            raise RuntimeError(
                f"vsearch serve did not start in {timeout}s: {log.read_text()[-3000:]}"
            )
    raise AssertionError("unreachable: the last attempt returns or raises")


def stop_server(proc: subprocess.Popen, grace: float = 3) -> None:
    """Stop the server we started, by its PID: SIGTERM, then SIGKILL after ``grace`` s.

    (uvicorn's graceful shutdown waits for open streams: after a gradio_client session it
    took ~13 s, until Gradio's heartbeat noticed the client had gone.)
    """
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


@pytest.fixture(scope="module")
def live_server(
    tmp_path_factory: pytest.TempPathFactory, ui_settings: Settings, cache_dir: Path
) -> Iterator[LiveServer]:
    """`vsearch serve` on a free 127.0.0.1 port, on a copy of the indexed UI catalog.

    One per module, stopped when the module is done: an idle Gradio server is not idle (its
    queue polls every millisecond, ~5 % of a core), and the two modules that use it usually
    run in different xdist workers, each of which kept its server to the end of the run."""
    root = tmp_path_factory.mktemp("ui-live")
    uri = indexed_copy(ui_settings, str(root / "milvus" / "live.db"))
    uploads = root / "gradio-uploads"
    server = start_server(
        uri, cache_dir, root / "serve.log", "--max-upload-mb", "1", GRADIO_TEMP_DIR=str(uploads)
    )
    try:
        yield server
    finally:
        stop_server(server.proc)


# -- browser (Playwright driving the system Chromium) --------------------------------------
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(
    os.environ.get("VSEARCH_TEST_ARTIFACTS", Path(__file__).parents[2] / "test-artifacts")
)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):  # noqa: ANN201
    outcome = yield
    report = outcome.get_result()
    setattr(item, "rep_" + report.when, report)


@pytest.fixture(scope="session")
def chromium():
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing: run scripts/setup (or apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def shop_page(chromium, live_server, request: pytest.FixtureRequest):
    """A fresh page on the live shop, loaded; a full-page screenshot is kept on failure."""
    page = chromium.new_page(viewport={"width": 1300, "height": 1000})
    page.set_default_timeout(60_000)
    local = (live_server.url, "data:", "blob:")
    page.outside_requests = []  # type: ignore[attr-defined]
    page.on(
        "request",
        lambda r: None if r.url.startswith(local) else page.outside_requests.append(r.url),  # type: ignore[attr-defined]
    )
    page.goto(live_server.url + "/", wait_until="load")
    page.wait_for_function(
        "document.querySelector('#status') && document.querySelector('#status').innerText.includes('items')"
    )
    try:
        yield page
    finally:
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / f"{request.node.name}.png"), full_page=True)
        page.close()
