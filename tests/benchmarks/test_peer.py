"""The peer comparison (benchmarks/bench_peer.py): its arithmetic always, the real run with
clip-retrieval only where its interpreter is configured. No timing is asserted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmarks.bench_peer import (
    ENV_PYTHON,
    cosine_agreement,
    summarise,
    their_vectors,
    warmup_seconds,
)

ROOT = Path(__file__).resolve().parents[2]


def test_summary_gives_medians_and_speedups_over_each_peer() -> None:
    runs = {"ours": [10.0, 14.0, 12.0], "peer": [60.0, 40.0], "slow peer": [120.0]}
    rows = {r["variant"]: r for r in summarise(runs, {"x1": "peer", "x2": "slow peer"})}
    assert rows["ours"]["median_s"] == 12.0
    assert rows["ours"]["runs_s"] == "10.0 / 14.0 / 12.0"
    assert rows["ours"]["x1"] == round(50.0 / 12.0, 2)  # the peer's median is 50 s
    assert rows["ours"]["x2"] == 10.0
    assert rows["peer"]["x1"] == 1.0 and rows["slow peer"]["x1"] == round(50 / 120, 2)


def test_summary_without_a_peer_has_no_ratio_and_skips_empty_variants() -> None:
    rows = summarise({"ours": [3.0], "missing": []}, {"x1": "peer"})
    assert rows == [{"variant": "ours", "median_s": 3.0, "runs_s": "3.0"}]


def test_cosine_agreement_on_the_shared_keys() -> None:
    rng = np.random.default_rng(0)
    base = {f"k{i}": rng.normal(size=16) for i in range(5)}
    ours = {k: list(v) for k, v in base.items()}
    theirs = {k: list(3.0 * v) for k, v in base.items()}  # scale does not matter
    theirs["k4"] = list(-base["k4"])  # one opposite vector
    theirs["extra"] = [1.0] * 16
    ours["only-here"] = [1.0] * 16
    agree = cosine_agreement(ours, theirs)
    assert agree["compared"] == 5 and agree["only_ours"] == 1 and agree["only_theirs"] == 1
    assert agree["cos_min"] == pytest.approx(-1.0, abs=1e-6) and agree["worst"] == "k4"
    assert agree["cos_mean"] == pytest.approx(0.6, abs=1e-5)  # (4 * 1 - 1) / 5
    assert -1.0 <= agree["cos_other_image_mean"] < 0.9


def test_cosine_agreement_with_nothing_in_common() -> None:
    assert cosine_agreement({"a": [1.0]}, {"b": [1.0]}) == {
        "compared": 0,
        "only_ours": 1,
        "only_theirs": 1,
    }


def test_clip_retrievals_warmup_line_is_read() -> None:
    out = "warming up with batch size 256 on cpu\ndone warming up in 115.51419377326965s\n"
    assert warmup_seconds(out) == 115.51
    assert warmup_seconds("no such line") is None


def test_their_vectors_are_keyed_by_path_relative_to_the_folder(tmp_path: Path) -> None:
    import pandas as pd

    folder = tmp_path / "img"
    (tmp_path / "out" / "img_emb").mkdir(parents=True)
    (tmp_path / "out" / "metadata").mkdir()
    emb = np.array([[1, 0], [0, 1]], dtype=np.float16)
    np.save(tmp_path / "out" / "img_emb" / "img_emb_0.npy", emb)
    paths = [str(folder / "000" / "a.jpg"), str(folder / "000" / "b.jpg")]
    pd.DataFrame({"image_path": paths}).to_parquet(
        tmp_path / "out" / "metadata" / "metadata_0.parquet"
    )
    assert their_vectors(tmp_path / "out", folder) == {
        "000/a.jpg": [1.0, 0.0],
        "000/b.jpg": [0.0, 1.0],
    }


@pytest.mark.slow  # three whole processes, clip-retrieval's among them
def test_quick_run_against_clip_retrieval(tmp_path: Path, cache_dir: Path) -> None:
    python = os.environ.get(ENV_PYTHON, "")
    if not python or not Path(python).is_file():
        pytest.skip(f"set {ENV_PYTHON} to a python with clip-retrieval installed")
    out = tmp_path / "peer.json"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_peer", "--quick", "--json", str(out),
         "--clip-retrieval-python", python, "--cache-dir", str(cache_dir),
         "--work-dir", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(out.read_text())
    names = [r["variant"] for r in data["summary"]]
    assert names[:2] == ["vsearch index (auto)", "vsearch index --backend torch"]
    assert names[2].startswith("clip-retrieval (batch ")
    peer = data["summary"][2]
    assert peer["x_vs_peer1"] == 1.0 and peer["median_s"] > 0
    for row in data["agreement"]:  # the same model through both programs
        assert row["compared"] == 6 and row["only_ours"] == row["only_theirs"] == 0
        assert row["cos_min"] > 0.99 > row["cos_other_image_mean"]
    exact = data["agreement"][-1]
    assert exact["variant"].startswith("open_clip's exact preprocessing")
    assert exact["cos_min"] >= 0.999  # same model, same pixels: only float16 storage differs
    assert "Same model?" in proc.stdout
