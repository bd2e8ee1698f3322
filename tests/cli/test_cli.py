"""The `vsearch` program as cron and shell users see it: output, JSON, exit codes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cli.main import EXIT_LOCKED, EXIT_OK, EXIT_PARTIAL, EXIT_REFUSED, EXIT_USAGE, main
from indexer.lock import IndexLock
from search.config import Settings
from search.embedder import Embedder
from search.searcher import Searcher
from tests.helpers import write_folder


def _env(settings: Settings, **extra: str) -> dict[str, str]:
    # the user's shell, less any gRPC setting (the program's own default is under test)
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRPC_")}
    env.update(
        VSEARCH_URI=settings.store.uri,
        VSEARCH_CACHE_DIR=settings.model.cache_dir,
        VSEARCH_LOCK_DIR=settings.store.lock_dir,
        VSEARCH_WORKERS="0",
        HF_HUB_OFFLINE="1",
    )
    env.update(extra)
    return env


def _vsearch(args: list[str], settings: Settings, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        env=_env(settings, **env),
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_help_is_instant_and_loads_no_model() -> None:
    code = (
        "import sys\n"
        "from cli.main import build_parser\n"
        "build_parser().format_help()\n"
        "assert 'torch' not in sys.modules and 'open_clip' not in sys.modules, 'heavy import'\n"
        "assert 'pymilvus' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    out = subprocess.run(
        [sys.executable, "-m", "cli.main", "--help"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0
    for command in ("index", "search", "demo", "collections", "promote"):
        assert command in out.stdout


@pytest.fixture
def cli_env(settings: Settings, embedder, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The in-process CLI on this test's database, with the session's loaded model."""
    for key, value in _env(settings).items():
        if key.startswith("VSEARCH_"):
            monkeypatch.setenv(key, value)
    monkeypatch.setattr(Embedder, "from_settings", classmethod(lambda cls, s: embedder))
    monkeypatch.setattr(Searcher, "embedder_for", lambda self, model: embedder)
    return settings


@pytest.mark.slow  # the program in its own process
def test_index_json_summary_and_exit_codes(tmp_path: Path, cli_env: Settings, capsys) -> None:
    root = tmp_path / "cat"
    write_folder(root, ["coffee", "rocket"], per_product=2)
    # The program itself, in its own process: a decode worker forks while Lite's in-process
    # gRPC server runs, and gRPC's C core used to print a fork_posix.cc note even with -q.
    first = _vsearch(["-q", "index", str(root), "--json"], cli_env, VSEARCH_WORKERS="1")
    assert first.returncode == EXIT_OK and first.stderr == ""
    summary = json.loads(first.stdout)
    assert (summary["seen"], summary["added"], summary["count"], summary["failed_count"]) == (
        4,
        4,
        4,
        0,
    )
    assert summary["images_per_second"] > 0

    # the rest in process (the session's model; the subprocess above released the database)
    (root / "broken.jpg").write_text("nope")
    assert main(["-q", "index", str(root), "--json"]) == EXIT_PARTIAL
    summary = json.loads(capsys.readouterr().out)
    assert summary["embedded"] == 0 and summary["unchanged"] == 4
    assert summary["failed"] == [
        {"id": "broken.jpg", "reason": "not an image (unrecognised format)"}
    ]

    query = str(root / "rocket" / "rocket-1.jpg")
    assert main(["search", query, "--json", "-k", "2"]) == EXIT_OK
    hits = json.loads(capsys.readouterr().out)
    assert [h["id"] for h in hits] == ["rocket/rocket-1.jpg", "rocket/rocket-0.jpg"]
    assert hits[0]["score"] == pytest.approx(1.0, abs=1e-3)

    assert main(["search", "--text", "a rocket"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "image-only" in err and err.count("\n") == 1  # one clear line, no traceback


def test_usage_lock_and_refusal_exit_codes(tmp_path: Path, cli_env: Settings, capsys) -> None:
    assert main(["-q", "index", str(tmp_path / "missing")]) == EXIT_USAGE
    root = tmp_path / "cat"
    write_folder(root, ["coffee"], per_product=1)
    with IndexLock(cli_env):  # flock: a second open file conflicts even in this process
        assert main(["-q", "index", str(root)]) == EXIT_LOCKED
    assert "holds the lock" in capsys.readouterr().err
    assert main(["-q", "index", str(root)]) == EXIT_OK
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["-q", "index", str(empty)]) == EXIT_REFUSED
    assert "--force-delete" in capsys.readouterr().err
    capsys.readouterr()
    assert main(["collections", "--json"]) == EXIT_OK
    infos = json.loads(capsys.readouterr().out)
    assert len(infos) == 1 and infos[0]["count"] == 1 and infos[0]["aliases"] == ["catalog"]
