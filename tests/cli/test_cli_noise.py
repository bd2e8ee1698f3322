"""What a user reads when another process (e.g. `vsearch serve`) holds the Lite database."""

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from cli.main import EXIT_STORE
from search.config import Settings

HOLDER = """
import sys, time
from pymilvus import MilvusClient
client = MilvusClient(sys.argv[1])
client.list_collections()
print("held", flush=True)
time.sleep(120)
"""


@pytest.fixture
def held_database(settings: Settings) -> Iterator[Settings]:
    """A second process that opened this test's Lite database and keeps it."""
    Path(settings.store.uri).parent.mkdir(parents=True, exist_ok=True)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, settings.store.uri],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        yield settings
    finally:
        holder.kill()
        holder.wait(timeout=30)


def _vsearch(args: list[str], settings: Settings) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRPC_")}
    env.update(
        VSEARCH_URI=settings.store.uri, VSEARCH_LOCK_DIR=settings.store.lock_dir, HF_HUB_OFFLINE="1"
    )
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_held_lite_database_prints_one_line_and_the_traceback_only_with_v(
    held_database: Settings,
) -> None:
    message = (
        f"vsearch: error: the Milvus Lite database {held_database.store.uri} is held by another "
        "process (Lite allows one process per database). To share it, run `vsearch "
        f"milvus-server --data-dir {held_database.store.uri}` as its only opener and set "
        "VSEARCH_URI=http://127.0.0.1:19541 in every other process (indexer, UI); if that "
        "server already runs, just set VSEARCH_URI. Or use Milvus standalone "
        "(docs/deployment.md)."
    )
    for command in (["collections"], ["search", "--id", "SKU-1"]):
        out = _vsearch(command, held_database)
        assert out.returncode == EXIT_STORE
        assert out.stderr.splitlines() == [message]

    verbose = _vsearch(["-v", "search", "--id", "SKU-1"], held_database)
    assert verbose.returncode == EXIT_STORE
    assert verbose.stderr.count("DataDirLockedError") >= 1 and "Traceback" in verbose.stderr
    assert verbose.stderr.count("Failed to start MilvusLite server") == 1  # tried once, not twice
    assert verbose.stderr.rstrip().splitlines()[-1].startswith("vsearch: error: the Milvus Lite")


def test_a_reader_that_leaves_early_is_no_traceback() -> None:
    """`vsearch settings --json | head -c 1`: the pipe closes before vsearch writes."""
    from cli.main import EXIT_BROKEN_PIPE

    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader has gone: every write gets EPIPE
    try:
        out = subprocess.run(
            [str(Path(sys.executable).with_name("vsearch")), "settings", "--json"],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )
    finally:
        os.close(write_end)
    assert out.returncode == EXIT_BROKEN_PIPE, out.stderr
    assert "Traceback" not in out.stderr and "BrokenPipeError" not in out.stderr
