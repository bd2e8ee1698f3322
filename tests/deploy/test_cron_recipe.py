"""The cron wrapper: silent on success, one JSON summary per run, clear lines on trouble."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from indexer.lock import IndexLock
from search.config import Settings
from tests.helpers import write_folder

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "deploy" / "vsearch-index-cron.sh"
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        shutil.which("jq") is None,
        reason="the cron wrapper needs jq: run scripts/setup (or apt-get install jq)",
    ),
]


def run_cron(catalog: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(SCRIPT), str(catalog)], env=env, capture_output=True, text=True, timeout=300
    )


def test_cron_wrapper_summaries_exit_codes_and_alerts(tmp_path: Path, cache_dir: Path) -> None:
    catalog = tmp_path / "catalog"
    write_folder(catalog, ["chelsea", "coffee"], per_product=2)
    logs = tmp_path / "logs"
    settings = Settings.of(uri=str(tmp_path / "db" / "v.db"), lock_dir=str(tmp_path / "locks"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("VSEARCH_")}
    env.update(
        HF_HUB_OFFLINE="1",
        VSEARCH_BIN=str(Path(sys.executable).with_name("vsearch")),
        VSEARCH_LOG_DIR=str(logs),
        VSEARCH_URI=settings.store.uri,
        VSEARCH_LOCK_DIR=settings.store.lock_dir,
        VSEARCH_CACHE_DIR=str(cache_dir),
        VSEARCH_DEVICE="cpu",
        VSEARCH_WORKERS="0",
    )
    ok = run_cron(catalog, env)
    assert (ok.returncode, ok.stdout, ok.stderr) == (0, "", "")  # cron mails nothing
    (run1,) = [json.loads(line) for line in (logs / "index.jsonl").read_text().splitlines()]
    assert (run1["added"], run1["failed_count"], run1["exit_code"]) == (4, 0, 0)

    (catalog / "chelsea" / "broken.jpg").write_bytes(b"<html>not a photo</html>")
    partial = run_cron(catalog, env)
    assert partial.returncode == 1
    assert "1 item(s) failed" in partial.stderr and "index.jsonl" in partial.stderr
    run2 = json.loads((logs / "index.jsonl").read_text().splitlines()[-1])
    assert (run2["unchanged"], run2["failed_count"], run2["exit_code"]) == (4, 1, 1)
    assert run2["failed"][0]["id"] == "chelsea/broken.jpg"

    with IndexLock(settings):  # a previous run still going
        locked = run_cron(catalog, env)
    assert locked.returncode == 3 and "holds the lock" in locked.stderr
    assert len((logs / "index.jsonl").read_text().splitlines()) == 2  # no summary: no run
