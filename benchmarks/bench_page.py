"""Shop page under load: a 12 MP phone photo from upload to visible results, and 8 shoppers.

What it does (offline, on the `vsearch demo` sample catalog unless --manifest is given):

1. indexes the catalog with ``vsearch index`` into a fresh Milvus Lite database;
2. starts ``vsearch serve`` on a free 127.0.0.1 port (it loads the model and calibrates the
   close-match floor before listening);
3. **upload to results**: in headless Chromium, ``--uploads`` times: a fresh page, a 12 MP
   (4000 x 3000) phone-style JPEG set on the photo input, timed until the first result tile's
   image is visible;
4. **shoppers**: ``--shoppers`` threads for ``--seconds``, each calling the page's named
   ``/search_image`` endpoint (same decoding path and same search queue as the page's upload
   handler) with plain HTTP requests and fetching every result tile's picture
   (``--client http``, the default: about 0.02 CPU-s per search on this machine, which the
   server needs) or through ``gradio_client`` sessions (``--client gradio_client``: about
   0.43 CPU-s per search, more than the server's own); half of them upload the 12 MP photo, half a
   1200 x 900 one. The 12 MP photo is sent as the page sends it from a shopper's own device
   (shrunk in the browser to 1024 px, ``--shopper-uploads page``, the default) or as the
   raw file (``--shopper-uploads raw``, what an API client sends). Errors and latency
   percentiles per photo size;
5. per phase, where the time went on the server (Gradio's own per-event traces,
   ``GRADIO_PROFILING=1``: queue wait, preprocess, our handler, postprocess; p50/p95 per
   endpoint) and the CPU seconds per search of the server process and of this script's
   clients, which share the machine's cores with it;
6. prints the tables and writes ``docs/bench/page.json`` (``--out``).

Figures depend on the machine and its load (both recorded); no test asserts on them.

    python -m benchmarks.bench_page                       # about 3.5 minutes on 2 cores
    python -m benchmarks.bench_page --seconds 60 --uploads 20
    python -m benchmarks.bench_page --backend openvino --out docs/bench/page-openvino.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from PIL import Image, ImageFilter

from benchmarks.common import loadavg, machine, offline, percentile, table, write_json

VSEARCH = str(Path(sys.executable).with_name("vsearch"))
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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def phone_photo(source: Path, size: tuple[int, int], target: Path) -> Path:
    """A phone-sized JPEG of a catalog photo: upscaled, sensor-like noise, quality 90."""
    img = Image.open(source).convert("RGB").resize(size, Image.Resampling.BICUBIC)
    noise = Image.effect_noise(size, 40).convert("RGB")
    img = Image.blend(img, noise, 0.12).filter(ImageFilter.UnsharpMask(2, 80, 1))
    img.save(target, "JPEG", quality=92)  # sensor noise: ~3-5 MB at 12 MP, like a phone
    return target


def start_server(uri: str, workdir: Path, env: dict[str, str]) -> tuple[subprocess.Popen, str]:
    port = free_port()
    log = (workdir / "serve.log").open("w")
    proc = subprocess.Popen(
        [VSEARCH, "serve", "--uri", uri, "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"vsearch serve exited: {(workdir / 'serve.log').read_text()}")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError("vsearch serve did not start")


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=3)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def as_the_page_uploads(photo: Path, workdir: Path) -> Path:
    """``photo`` as the shop page's browser script uploads it from a shopper's device
    (ui/upload.py: longest side BROWSER_SIDE, JPEG at BROWSER_QUALITY). The page skips this on
    a loopback host, so the Chromium uploads above send the full file; the simulated
    shoppers stand for remote shoppers, whose own devices do the shrinking."""
    from ui.upload import BROWSER_QUALITY, BROWSER_SIDE

    img = Image.open(photo).convert("RGB")
    img.thumbnail((BROWSER_SIDE, BROWSER_SIDE), Image.Resampling.BILINEAR)
    target = workdir / f"{photo.stem}-as-uploaded.jpg"
    img.save(target, "JPEG", quality=round(BROWSER_QUALITY * 100))
    return target


def upload_to_results(url: str, photo: Path, runs: int) -> list[float]:
    """Seconds from setting the photo on the page's input to the first tile image shown."""
    from playwright.sync_api import sync_playwright

    times = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            for _ in range(runs + 1):  # the first run warms the browser's caches; not counted
                page = browser.new_page(viewport={"width": 1300, "height": 1000})
                page.set_default_timeout(120_000)
                page.goto(url + "/", wait_until="load")
                page.wait_for_function(
                    "(document.querySelector('#status')?.innerText || '').includes('items')"
                )
                t0 = time.perf_counter()
                page.locator("#query input[type=file]").set_input_files(str(photo))
                page.locator("#results .tile img").first.wait_for(state="visible")
                page.wait_for_function(
                    "() => { const i = document.querySelector('#results .tile img');"
                    " return i && i.complete && i.naturalWidth > 0; }"
                )
                times.append(time.perf_counter() - t0)
                page.close()
        finally:
            browser.close()
    return times[1:]


def http_search(http: httpx.Client, url: str, photo: Path, limit: int = 12) -> int:
    """One ``/search_image`` call over Gradio's HTTP API, as few client cycles as it takes:
    upload the photo, queue the call, read its result from the event stream, then fetch
    every tile's picture (the server's work for a page showing the results). The number of
    tiles."""
    with photo.open("rb") as fh:
        r = http.post(f"{url}/gradio_api/upload", files={"files": (photo.name, fh, "image/jpeg")})
    r.raise_for_status()
    sent = {"path": r.json()[0], "orig_name": photo.name, "meta": {"_type": "gradio.FileData"}}
    r = http.post(
        f"{url}/gradio_api/call/search_image", json={"data": [sent, limit, "Any", None, None]}
    )
    r.raise_for_status()
    event, kind, payload = r.json()["event_id"], "", None
    with http.stream("GET", f"{url}/gradio_api/call/search_image/{event}") as stream:
        for line in stream.iter_lines():
            if line.startswith("event:"):
                kind = line[6:].strip()
            elif line.startswith("data:") and kind in ("complete", "error"):
                payload = json.loads(line[5:])
                break
    if kind != "complete" or not payload:
        raise RuntimeError(f"search {kind or 'ended'}: {payload}")
    tiles = payload[0] or []
    for tile in tiles:
        link = tile["image"]["url"]
        http.get(link if link.startswith("http") else url + link).raise_for_status()
    return len(tiles)


def shoppers(
    url: str, photos: list[Path], n: int, seconds: float, client: str = "http"
) -> list[dict[str, Any]]:
    """``n`` concurrent shopper sessions searching until ``seconds`` have passed: plain HTTP
    (:func:`http_search`, default) or ``gradio_client`` sessions."""
    from gradio_client import Client, handle_file

    records: list[dict[str, Any]] = []
    lock = threading.Lock()
    start = threading.Barrier(n)
    deadline = [0.0]

    def shopper(k: int) -> None:
        photo = photos[k % len(photos)]
        session = Client(url + "/", verbose=False) if client == "gradio_client" else None
        http = httpx.Client(timeout=120, trust_env=False)
        try:
            start.wait()
            if k == 0:
                deadline[0] = time.monotonic() + seconds
            while not deadline[0]:
                time.sleep(0.01)
            while time.monotonic() < deadline[0]:
                t0 = time.perf_counter()
                error = ""
                try:
                    if session is not None:
                        gallery, _ = session.predict(
                            handle_file(str(photo)), 12, "Any", None, None, api_name="/search_image"
                        )
                        tiles = len(gallery)
                    else:
                        tiles = http_search(http, url, photo)
                    if not tiles:
                        error = "no results"
                except Exception as exc:  # a failed request is a figure, not a crash
                    error = f"{type(exc).__name__}: {exc}"[:200]
                with lock:
                    records.append(
                        {"photo": photo.name, "seconds": time.perf_counter() - t0, "error": error}
                    )
        finally:
            http.close()
            if session is not None:
                session.close()

    threads = [threading.Thread(target=shopper, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return records


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    import resource

    use = resource.getrusage(resource.RUSAGE_SELF)
    return use.ru_utime + use.ru_stime


def server_phases(url: str) -> dict[str, dict[str, Any]]:
    """Gradio's per-event traces since the last call (then cleared): per endpoint, p50/p95 ms
    of queue wait, preprocess, the handler (fn_call) and postprocess."""
    traces = httpx.get(url + "/gradio_api/profiling/traces", timeout=30).json()
    httpx.post(url + "/gradio_api/profiling/clear", timeout=30)
    traces = traces if isinstance(traces, list) else traces.get("traces", [])
    out: dict[str, dict[str, Any]] = {}
    for name in sorted({t.get("fn_name") or "?" for t in traces}):
        mine = [t for t in traces if (t.get("fn_name") or "?") == name]
        row: dict[str, Any] = {"n": len(mine)}
        for key in ("queue_wait_ms", "preprocess_ms", "fn_call_ms", "postprocess_ms", "total_ms"):
            values = [float(t.get(key) or 0.0) for t in mine]
            if any(values):
                row[key] = [round(percentile(values, 50), 1), round(percentile(values, 95), 1)]
        out[name] = row
    return out


def decode_times(photo: Path, runs: int = 5) -> dict[str, float]:
    """Median seconds to get a 12 MP upload ready for search: the page's reduced decode
    (JPEG draft + thumbnail) versus a full decode (what gr.Image(type="pil") did)."""
    from search.images.upload import query_photo

    def timed(fn) -> float:  # noqa: ANN001
        values = []
        for _ in range(runs):
            t0 = time.perf_counter()
            fn()
            values.append(time.perf_counter() - t0)
        return round(sorted(values)[len(values) // 2], 4)

    return {
        "draft_decode_s": timed(lambda: query_photo(photo, 64_000_000)),
        "full_decode_s": timed(lambda: Image.open(photo).convert("RGB")),
    }


def summarise(name: str, values: list[float], errors: int = 0) -> dict[str, Any]:
    return {
        "what": name,
        "n": len(values),
        "errors": errors,
        "p50_s": round(percentile(values, 50), 3),
        "p95_s": round(percentile(values, 95), 3),
        "max_s": round(max(values), 3) if values else float("nan"),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--manifest", help="catalog manifest (default: the vsearch demo catalog)")
    ap.add_argument("--uploads", type=int, default=10, help="timed uploads in Chromium")
    ap.add_argument("--shoppers", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=60.0, help="length of the shoppers run")
    ap.add_argument(
        "--backend",
        help="inference backend of the server (VSEARCH_BACKEND: torch, onnxruntime, openvino, "
        "auto; default: the server's own default)",
    )
    ap.add_argument(
        "--shopper-uploads",
        choices=("page", "raw"),
        default="page",
        help="page: the shoppers send the 12 MP photo as the shop page's browser script sends "
        "it from a shopper's own device (shrunk to ui.upload.BROWSER_SIDE, JPEG); raw: the "
        "12 MP file itself, as an API client would",
    )
    ap.add_argument(
        "--client",
        choices=("http", "gradio_client"),
        default="http",
        help="how the simulated shoppers call the page: plain HTTP requests (light on this "
        "machine's cores, which the server needs) or gradio_client sessions",
    )
    ap.add_argument("--out", default="docs/bench/page.json")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    args = ap.parse_args(argv)
    offline()
    workdir = Path(tempfile.mkdtemp(prefix="bench-page-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("VSEARCH_")}
    env.update(
        GRADIO_ANALYTICS_ENABLED="False",
        GRADIO_TEMP_DIR=str(workdir / "gradio"),
        HF_HUB_OFFLINE="1",
        VSEARCH_DEVICE="cpu",
        NO_PROXY="127.0.0.1,localhost",
        GRADIO_PROFILING="1",  # Gradio's per-event traces (server_phases)
    )
    if args.backend:
        env["VSEARCH_BACKEND"] = args.backend
    if os.environ.get("VSEARCH_CACHE_DIR"):
        env["VSEARCH_CACHE_DIR"] = os.environ["VSEARCH_CACHE_DIR"]
    try:
        if args.manifest:
            manifest = Path(args.manifest)
        else:
            from cli.sample import make_sample_catalog

            manifest = make_sample_catalog(workdir / "catalog")
        uri = str(workdir / "milvus" / "page.db")
        t0 = time.perf_counter()
        subprocess.run([VSEARCH, "-q", "index", str(manifest), "--uri", uri], env=env, check=True)
        index_s = time.perf_counter() - t0
        first = sorted((manifest.parent).rglob("*.jpg"))[0]
        big = phone_photo(first, (4000, 3000), workdir / "phone-12mp.jpg")
        small = phone_photo(first, (1200, 900), workdir / "phone-1mp.jpg")
        decode = decode_times(big)
        t0 = time.perf_counter()
        proc, url = start_server(uri, workdir, env)
        start_s = time.perf_counter() - t0
        try:
            server_phases(url)  # start-up and warm-up events are not counted
            load_uploads = loadavg()
            uploads = upload_to_results(url, big, args.uploads)
            phases = {"uploads": server_phases(url)}
            load_start = loadavg()
            cpu0 = (cpu_seconds(proc.pid), own_cpu_seconds())
            sent = big if args.shopper_uploads == "raw" else as_the_page_uploads(big, workdir)
            records = shoppers(url, [sent, small], args.shoppers, args.seconds, args.client)
            cpu1 = (cpu_seconds(proc.pid), own_cpu_seconds())
            load_end = loadavg()
            phases["shoppers"] = server_phases(url)
        finally:
            stop_server(proc)
        searches = max(1, len(records))
        cpu = {
            "server_s_per_search": round((cpu1[0] - cpu0[0]) / searches, 3),
            "clients_s_per_search": round((cpu1[1] - cpu0[1]) / searches, 3),
        }
        rows = [summarise("upload 12 MP photo -> results visible (Chromium)", uploads)]
        for photo in (sent, small):
            mine = [r for r in records if r["photo"] == photo.name]
            ok = [r["seconds"] for r in mine if not r["error"]]
            errors = len(mine) - len(ok)
            label = f"{args.shoppers} shoppers, {photo.name} search ({args.client})"
            rows.append(summarise(label, ok, errors))
        every = [r["seconds"] for r in records if not r["error"]]
        rows.append(summarise(f"{args.shoppers} shoppers, all", every, len(records) - len(every)))
        print(table("Shop page", rows, ["what", "n", "errors", "p50_s", "p95_s", "max_s"]))
        print(
            f"\n12 MP decode before search (median): reduced {decode['draft_decode_s']:.3f} s, "
            f"full {decode['full_decode_s']:.3f} s"
        )
        for phase, endpoints in phases.items():
            for name, row in endpoints.items():
                print(f"server, {phase}, {name}: {row}")
        print(
            f"CPU per search in the shoppers run: server {cpu['server_s_per_search']:.3f} s, "
            f"clients {cpu['clients_s_per_search']:.3f} s (both on this machine's cores); "
            f"load average {load_start} at its start, {load_end} at its end"
        )
        errors = sorted({r["error"] for r in records if r["error"]})
        if errors:
            print("errors:", *errors[:5], sep="\n  ")
        out = write_json(
            Path(args.out),
            {
                "benchmark": "bench_page",
                "catalog": "vsearch demo sample" if not args.manifest else str(manifest),
                "photo_12mp": {"size": [4000, 3000], "bytes": big.stat().st_size},
                "photo_small": {"size": [1200, 900], "bytes": small.stat().st_size},
                "shopper_uploads": args.shopper_uploads,
                "shopper_client": args.client,
                "photo_12mp_as_sent_by_shoppers": {
                    "size": list(Image.open(sent).size),
                    "bytes": sent.stat().st_size,
                },
                "backend": args.backend or "default",
                "shoppers": args.shoppers,
                "seconds": args.seconds,
                "decode_12mp": decode,
                "index_s": round(index_s, 1),
                "server_start_s": round(start_s, 1),
                "loadavg_uploads_start": load_uploads,
                "loadavg_shoppers_start": load_start,
                "loadavg_shoppers_end": load_end,
                "server_phases_ms_p50_p95": phases,
                "cpu_per_search": cpu,
                "rows": rows,
                "errors": errors[:20],
                "machine": machine("cpu"),
            },
        )
        print(f"\nwritten: {out}")
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
