"""The benchmark scripts run end to end in their tiny ``--quick`` modes and write valid JSON.

No timing is asserted (speed targets live in the scripts' output, see docs/benchmarks.md):
these tests check that each script runs, measures what it says and reports consistent
numbers.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.workload import FASHION_DIR

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [
    pytest.mark.skipif(
        not (FASHION_DIR / "t10k-images-idx3-ubyte.gz").is_file(),
        reason=f"the benchmark workload needs Fashion-MNIST in {FASHION_DIR}: run scripts/setup "
        "(or apt-get install dataset-fashion-mnist)",
    ),
]


def run_script(module: str, *args: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_workload_is_deterministic_real_photo_like_jpegs(tmp_path: Path) -> None:
    from benchmarks import workload

    spec = workload.Spec(6, 300, 400, seed=3)
    manifest = workload.build(tmp_path / "a", spec)
    workload.build(tmp_path / "b", spec)
    rows = manifest.read_text().splitlines()
    assert rows[0].startswith("id,image,title,category")
    assert len(rows) == 7
    files_a = sorted((tmp_path / "a" / "img").rglob("*.jpg"))
    files_b = sorted((tmp_path / "b" / "img").rglob("*.jpg"))
    assert [f.read_bytes() for f in files_a] == [f.read_bytes() for f in files_b]
    info = workload.describe(tmp_path / "a")
    assert info["images"] == 6
    assert 300 <= max(info["mean_width"], info["mean_height"]) <= 400
    assert len({f.read_bytes()[:4096] for f in files_a}) == 6  # all different pictures


@pytest.mark.slow  # a benchmark script in a subprocess
def test_bench_indexing_quick_with_backends(tmp_path: Path, cache_dir: Path) -> None:
    """One run covers the a/b/c summary, the ablation and the backend comparison (two
    backends), as a user runs ``bench_indexing --backends torch openvino``."""
    out = tmp_path / "indexing.json"
    text = run_script(
        "benchmarks.bench_indexing", "--quick", "--device", "cpu", "--results", str(tmp_path),
        "--cache-dir", str(cache_dir), "--json", str(out), "--backends", "torch", "openvino",
    )  # fmt: skip
    data = json.loads(out.read_text())
    s = data["summary"]
    assert s["compute_img_s"] > 0 and s["indexer_img_s"] > 0 and s["naive_img_s"] > 0
    assert math.isclose(s["b_over_a"], s["indexer_img_s"] / s["compute_img_s"], rel_tol=1e-9)
    assert math.isclose(s["b_over_c"], s["indexer_img_s"] / s["naive_img_s"], rel_tol=1e-9)
    assert data["workload"]["images"] == 16
    assert all(r["embedded"] == 16 for r in data["ablation"])  # every variant indexed all
    names = [r["variant"] for r in data["ablation"]]
    assert names[0] == "all on (chosen)" and "no JPEG draft decode" in names
    assert {(r["memory_format"], r["grad_mode"]) for r in data["model_variants"]} >= {
        ("contiguous", "inference_mode"),
        ("channels_last", "autograd"),
    }
    assert data["machine"]["cores"] >= 1 and data["machine"]["loadavg_end"]
    assert "b/a=" in text and "Ablation" in text

    backends = data["backends"]
    rows = {r["backend"]: r for r in backends["rows"]}
    assert set(rows) == {"torch", "openvino"}
    assert rows["torch"]["indexer_vs_first"] == 1.0
    for r in rows.values():
        assert r["forward_img_s"] > 0 and r["indexer_img_s"] > 0
        assert math.isclose(r["of_cpu_ceiling"], r["indexer_img_s"] / r["cpu_ceiling_img_s"])
    ov = rows["openvino"]
    assert math.isclose(
        ov["indexer_vs_first"], ov["indexer_img_s"] / rows["torch"]["indexer_img_s"]
    )
    assert {w["workers"] for w in backends["workers"]} >= {0, 1, 2}
    compute = backends["compute"]  # the built-in EfficientNet-Lite0: ~0.39 GMAC per picture
    assert 0.35 < compute["gmac_per_image"] < 0.42 and compute["gemm_gflops_per_core"] > 0
    for r in rows.values():
        flops = 2e9 * compute["gmac_per_image"] / (r["forward_cpu_ms"] / 1000)
        assert math.isclose(r["forward_gflops"] * 1e9, flops, rel_tol=1e-9)
    bound = compute["bound"]
    assert (bound["backend"], bound["vs"]) == ("openvino", "torch")
    assert math.isclose(
        bound["ratio_measured"], ov["indexer_img_s"] / rows["torch"]["indexer_img_s"]
    )
    assert bound["ratio_at_run_share"] <= bound["ratio_at_full_share"]
    assert "Indexer ratio reachable with the forward at the GEMM rate" in text
    assert "Backends, same images, same run" in text
    # --backends-only writes the same comparison without the summary: its report renders
    from benchmarks.bench_indexing import report

    only = {k: data[k] for k in ("machine", "workload", "backends")}
    assert "Backends, same images, same run" in report(only)


@pytest.mark.slow  # a benchmark script in a subprocess
def test_bench_search_quick(tmp_path: Path, cache_dir: Path) -> None:
    out = tmp_path / "search.json"
    text = run_script(
        "benchmarks.bench_search", "--quick", "--device", "cpu", "--results", str(tmp_path),
        "--cache-dir", str(cache_dir), "--json", str(out),
    )  # fmt: skip
    data = json.loads(out.read_text())
    rows = {(r["backend"], r["index"]): r for r in data["search"]}
    assert rows[("numpy exact", "brute force")]["recall@10"] == 1.0
    assert rows[("milvus-lite", "FLAT")]["recall@10"] == 1.0  # FLAT is exact too
    assert 0.5 <= rows[("milvus-lite", "HNSW-M16-efc200")]["recall@10"] <= 1.0
    for row in data["search"]:
        assert 0 < row["single_p50_ms"] <= row["single_p95_ms"]
    assert {r["what"] for r in data["embedding"]} == {"embed 1 query image", "embed 8 query images"}
    assert list((tmp_path).glob("real-embeddings-48-*.npy"))  # cached for the next run
    assert "recall@10" in text


@pytest.mark.slow  # a benchmark script in a subprocess
def test_bench_memory_smoke(tmp_path: Path, cache_dir: Path) -> None:
    out = tmp_path / "memory.json"
    run_script(
        "benchmarks.bench_memory", "--sizes", "6", "12", "--results", str(tmp_path),
        "--cache-dir", str(cache_dir), "--json", str(out),
    )  # fmt: skip
    data = json.loads(out.read_text())
    assert [r["catalog"] for r in data["runs"]] == [6, 12]
    for run in data["runs"]:
        assert run["images"] == run["catalog"] and run["failed"] == 0
        assert run["peak_main_mb"] > 50 and run["store_server_peak_mb"] > 0


@pytest.mark.slow  # a benchmark script in a subprocess
def test_bench_backends_quick(tmp_path: Path, cache_dir: Path) -> None:
    out = tmp_path / "backends.json"
    text = run_script(
        "benchmarks.bench_backends", "--quick", "--results", str(tmp_path),
        "--cache-dir", str(cache_dir), "--json", str(out),
    )  # fmt: skip
    data = json.loads(out.read_text())
    rows = {r["backend"]: r for r in data["backends"]}
    assert {"torch/fp32", "onnxruntime/fp32", "openvino/fp32"} <= set(rows)
    assert rows["torch/fp32"]["vs_torch"] == 1.0 and rows["torch/fp32"]["cos_min"] > 0.9999
    for name, r in rows.items():
        assert r["cos_min"] >= 0.999, name  # the same vectors as PyTorch
        assert 0 < r["query_p50_ms"] <= r["query_p90_ms"] and r["nine_p50_ms"] > 0
        assert 0 < r["sent_p50_ms"] <= r["sent_p90_ms"] and r["sent_cos"] >= 0.99, name
        assert 0 < r["sent_nine_p50_ms"] <= r["sent_nine_p90_ms"], name
    assert data["chosen_by_auto"] in {"torch", "onnxruntime", "openvino"}
    decoders = {r["decoder"] for r in data["decode"]}
    assert {"PIL full decode", "PIL draft (default)"} <= decoders
    assert "Backends (forward img/s" in text and data["client_shrink_ms"] > 0
