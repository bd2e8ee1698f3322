"""Peak memory while indexing a small and a 10x larger catalog: it must not grow with size.

Each run indexes a fresh store in a child process, with a ``milvus-lite server`` in its own
process, so the indexer's memory (main process + decode workers) is measured apart from the
store's (which holds the vectors and grows with the catalog by design). The child samples
its resident memory (VmRSS, main + workers) twice a second and reports the peak and the
samples at 25/50/75/100 % of the run. Small images (the model input is 224 px whatever the
photo size) keep the large run within minutes.

    python -m benchmarks.bench_memory                    # 2k vs 20k images
    python -m benchmarks.bench_memory --sizes 40 400     # a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from . import common, workload


def rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def hwm_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            text = Path(f"/proc/{pid}/task/{tid}/children").read_text().split()
            out += [int(c) for c in text]
    except OSError:
        pass
    return out


def child_main(manifest: Path, uri: str, out: Path, cache_dir: str | None) -> None:
    """Index ``manifest`` into ``uri``; sample RSS; write the figures to ``out``."""
    common.offline()
    common.setup_logging()
    from indexer.pipeline import run_index
    from search.config import Settings

    settings = Settings.of(uri=uri, lock_dir=str(out.parent / "locks"), device="cpu")
    if cache_dir:
        settings = settings.replace(cache_dir=cache_dir)
    samples: list[tuple[float, int, int]] = []  # (progress, main kB, main + workers kB)
    progress = [0.0]
    stop = threading.Event()

    def sample() -> None:
        me = os.getpid()
        while not stop.wait(0.5):
            main = rss_kb(me)
            samples.append((progress[0], main, main + sum(rss_kb(c) for c in children(me))))

    def on_progress(done: int, total: int) -> None:
        progress[0] = done / max(1, total)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    t0 = time.perf_counter()
    report = run_index(manifest, settings, progress=on_progress)
    seconds = time.perf_counter() - t0
    stop.set()
    thread.join()

    def at(frac: float) -> int:
        after = [s[2] for s in samples if s[0] >= frac]
        return after[0] if after else (samples[-1][2] if samples else 0)

    result = {
        "images": report.embedded,
        "failed": len(report.failed),
        "seconds": round(seconds, 1),
        "peak_main_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_worker_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
        "peak_total_sampled_mb": max((s[2] for s in samples), default=0) / 1024,
        **{f"rss_at_{int(f * 100)}pct_mb": at(f) / 1024 for f in (0.25, 0.5, 0.75, 1.0)},
    }
    out.write_text(json.dumps(result))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def measure(manifest: Path, tmp: Path, tag: str, cache_dir: str | None) -> dict[str, Any]:
    port = free_port()
    exe = Path(sys.executable).with_name("milvus-lite")
    server = subprocess.Popen(
        [
            str(exe),
            "server",
            "--data-dir",
            str(tmp / f"{tag}.db"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.3)
        out = tmp / f"{tag}.json"
        cmd = [
            sys.executable,
            "-m",
            "benchmarks.bench_memory",
            "--child",
            str(manifest),
            f"http://127.0.0.1:{port}",
            str(out),
        ]
        if cache_dir:
            cmd += ["--cache-dir", cache_dir]
        subprocess.run(cmd, check=True)
        result = json.loads(out.read_text())
        result["store_server_peak_mb"] = hwm_kb(server.pid) / 1024
        return result
    finally:
        os.kill(server.pid, signal.SIGKILL)  # by PID: the server we started
        server.wait()


def main(argv: list[str] | None = None) -> dict[str, Any]:
    common.offline()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[2000, 20000])
    p.add_argument("--min-side", type=int, default=96)
    p.add_argument("--max-side", type=int, default=160)
    p.add_argument("--results", type=Path, default=common.RESULTS)
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--cache-dir", default=None, help="model cache (default: the usual one)")
    p.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child_main(Path(args.child[0]), args.child[1], Path(args.child[2]), args.cache_dir)
        return {}
    biggest = max(args.sizes)
    spec = workload.Spec(biggest, args.min_side, args.max_side, seed=2)
    manifest = workload.build(args.results / f"workload-{biggest}-{args.min_side}", spec)
    result: dict[str, Any] = {
        "machine": common.machine("cpu"),
        "workload": workload.describe(manifest.parent),
    }
    runs = []
    with tempfile.TemporaryDirectory(
        prefix="vsearch-bench-mem-", ignore_cleanup_errors=True
    ) as tmpdir:
        for n in sorted(args.sizes):
            source = manifest if n == biggest else workload.prefix(manifest, n)
            row = {"catalog": n, **measure(source, Path(tmpdir), f"m{n}", args.cache_dir)}
            runs.append(row)
            print(json.dumps(row), flush=True)
    result["runs"] = runs
    out = args.json or args.results / "memory-cpu.json"
    common.write_json(out, result)
    cols = ["catalog", "images", "seconds", "peak_main_mb", "peak_worker_mb", "peak_total_sampled_mb",
            "rss_at_25pct_mb", "rss_at_50pct_mb", "rss_at_75pct_mb", "rss_at_100pct_mb", "store_server_peak_mb"]  # fmt: skip
    m = result["machine"]
    print(
        f"machine: {m['cores']} cores, {m['cpu']}, load {m['loadavg_start']} -> {m.get('loadavg_end')}"
    )
    print(common.table("Peak memory while indexing (MB)", runs, cols))
    print(f"\nwrote {out}")
    return result


if __name__ == "__main__":
    main()
