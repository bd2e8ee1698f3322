"""Inference backends: same vectors as PyTorch, export cache, auto calibration, fallbacks.

The image tower is exported once per test session (the session cache); every backend's
vectors are checked against PyTorch's on real photos (cosine >= 0.999).
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from search.backends import calibrate as calibration
from search.embedder import Embedder
from search.errors import ConfigError, TextSearchUnsupported
from tests.helpers import PHOTOS, photo, variant

pytestmark = pytest.mark.slow
RUNTIMES = ("onnxruntime", "openvino")
MODEL = "builtin:efficientnet-lite0"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def runtime_embedders(cache_dir: Path, embedder: Embedder) -> dict[str, Embedder]:
    """Both runtimes on the session's model; the first one exports (once per session)."""
    return {
        name: Embedder(MODEL, device="cpu", cache_dir=cache_dir, backend=name) for name in RUNTIMES
    }


def _photos() -> list:
    pics = [photo(name, 400) for name in PHOTOS]
    return pics + [variant(p, 1) for p in pics[:3]]


@pytest.mark.parametrize("backend", RUNTIMES)
def test_vectors_match_pytorch_on_real_photos(
    backend: str, runtime_embedders: dict[str, Embedder], embedder: Embedder
) -> None:
    emb = runtime_embedders[backend]
    assert emb.backend == backend and emb.device == "cpu"
    pics = _photos()
    ours, ref = emb.embed_images(pics), embedder.embed_images(pics)
    assert ours.shape == ref.shape == (len(pics), 1280) and ours.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    cosines = (ours * ref).sum(axis=1)
    assert cosines.min() >= 0.999, cosines
    # the same preprocessed batch through both: the graph itself agrees to float rounding
    batch = np.stack([np.asarray(embedder.preprocess(p)) for p in pics[:4]])
    same = (emb.embed_tensors(batch) * embedder.embed_tensors(batch)).sum(axis=1)
    assert same.min() >= 0.99999, same
    # and neighbours keep their order: a product's other shot is its nearest photo
    sims = ours[len(PHOTOS) :] @ ours[: len(PHOTOS)].T
    assert list(sims.argmax(axis=1)) == [0, 1, 2]


@pytest.mark.parametrize("backend", RUNTIMES)
def test_one_picture_and_batches_give_each_picture_its_own_vector(
    runtime_embedders: dict[str, Embedder], embedder: Embedder, backend: str, monkeypatch
) -> None:
    """A runtime runs one picture and a batch on different compiled forms (OpenVINO: a
    batch-1 model, and padded chunks on its streams; ONNX Runtime: a session whose threads
    spin, and one whose threads sleep): whatever the batch's size and whoever else calls, a
    picture gets its vector."""
    from concurrent.futures import ThreadPoolExecutor

    from search.backends.runtimes import CHUNK

    emb = runtime_embedders[backend]
    if backend == "onnxruntime":
        spins = [
            session.get_session_options().get_session_config_entry(
                "session.intra_op.allow_spinning"
            )
            for session in (emb._runner.session, emb._runner._batch_session)
        ]
        assert spins == ["1", "0"]
        # a query's photos (its crops: a batch) go to the spinning session, the indexer's not
        calls: list[str] = []
        for name in ("session", "_batch_session"):
            monkeypatch.setattr(
                emb._runner, name, _SessionSpy(getattr(emb._runner, name), name, calls)
            )
        emb.embed_images([photo(n, 300) for n in PHOTOS[:3]])
        emb.embed_tensors(np.zeros((3, 3, 224, 224), np.float32))
        monkeypatch.undo()
        assert calls == ["session", "_batch_session"]
    pics = [photo(name, 300) for name in PHOTOS] + [variant(photo(PHOTOS[0], 300), 2)] * 4
    pixels = np.stack([np.asarray(embedder.preprocess(p)) for p in pics])  # 7: odd, padded
    alone = np.concatenate([emb.embed_tensors(pixels[i : i + 1]) for i in range(len(pixels))])
    for n in (len(pixels), CHUNK + 1, CHUNK, 2 * CHUNK, 2 * CHUNK + 1):
        np.testing.assert_allclose(emb.embed_tensors(pixels[:n]), alone[:n], atol=2e-5)
    ref = embedder.embed_tensors(pixels)
    assert (alone * ref).sum(axis=1).min() >= 0.99999
    assert emb.embed_tensors(pixels[:0]).shape == (0, 1280)
    # server threads: single pictures and batches at once, each gets its own rows back
    spans = [(i % len(pixels), 1 + i % 3) for i in range(24)]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda s: emb.embed_tensors(pixels[s[0] : s[0] + s[1]]), spans))
    for (start, n), got in zip(spans, results, strict=True):
        np.testing.assert_allclose(got, alone[start : start + n], atol=2e-5)


def test_openvino_runs_a_last_round_too_small_for_its_streams_a_picture_at_a_time(
    runtime_embedders: dict[str, Embedder], monkeypatch
) -> None:
    """Chunks go to the streams in rounds of one per stream; the pictures of a last round
    that would leave a stream idle run one at a time on every thread instead."""
    from search.backends.runtimes import CHUNK, OpenVinoRunner

    # two streams, chunks of 2: 3 and 7 pictures all on the streams (one chunk padded); 5, 6,
    # 9 and 10 a full round there and the last 1 or 2 alone; 1 and 2 alone
    assert [OpenVinoRunner._on_streams(n, 2) for n in range(1, 11)] == [
        0, 0, 3, 4, 4, 4, 7, 8, 8, 8,
    ]  # fmt: skip
    assert [OpenVinoRunner._on_streams(n, 3) for n in (5, 6, 7, 12, 13)] == [5, 6, 6, 12, 12]
    runner = runtime_embedders["openvino"]._runner
    streams = len(runner._queue[0])
    singles: list[int] = []
    real_one = runner._one
    monkeypatch.setattr(runner, "_one", lambda p: singles.append(len(p)) or real_one(p))
    pixels = np.random.default_rng(0).random((streams * CHUNK + 1, 3, 224, 224), np.float32)
    one_round = runner.run(pixels)  # a full round on the streams, then one picture alone
    assert one_round.shape == (len(pixels), 1280) and singles == [1]
    alone = np.concatenate([real_one(pixels[i : i + 1]) for i in range(len(pixels))])
    np.testing.assert_allclose(one_round, alone, atol=2e-5)


class _SessionSpy:
    """Records which of ONNX Runtime's two sessions ran, and runs it."""

    def __init__(self, real: object, name: str, calls: list[str]) -> None:
        self.real, self.name, self.calls = real, name, calls

    def run(self, *args: object) -> object:
        self.calls.append(self.name)
        return self.real.run(*args)  # type: ignore[attr-defined]


def test_provenance_records_backend_and_precision_but_keys_match(
    runtime_embedders: dict[str, Embedder], embedder: Embedder
) -> None:
    assert (embedder.info.backend, embedder.info.precision) == ("torch", "fp32")
    for name, emb in runtime_embedders.items():
        assert (emb.info.backend, emb.info.precision) == (name, "fp32")
        assert emb.info.key == embedder.info.key  # the same embedding space
        assert emb.info.to_dict()["backend"] == name
        assert emb.info.preprocess == embedder.info.preprocess


def test_export_is_cached_by_checkpoint_and_reused(
    runtime_embedders: dict[str, Embedder], cache_dir: Path
) -> None:
    exports = runtime_embedders["openvino"]._exports
    assert exports.onnx.is_file() and exports.openvino_xml.is_file()
    manifest = json.loads((exports.root / "manifest.json").read_text())
    assert manifest["info"]["checkpoint"] == runtime_embedders["openvino"].info.checkpoint
    assert len(list((cache_dir / "exports").iterdir())) >= 1
    stamp = exports.onnx.stat().st_mtime_ns
    again = Embedder(MODEL, device="cpu", cache_dir=cache_dir, backend="onnxruntime")
    assert exports.onnx.stat().st_mtime_ns == stamp  # not exported again
    assert again._torch is None  # loaded from the manifest, PyTorch untouched


def test_query_path_without_torch(runtime_embedders: dict[str, Embedder], cache_dir: Path) -> None:
    """A fresh process with the export cached embeds a photo without importing torch."""
    code = (
        "import sys\n"
        "from PIL import Image\n"
        "from search.embedder import Embedder\n"
        f"e = Embedder({MODEL!r}, cache_dir={str(cache_dir)!r}, backend='openvino')\n"
        "v = e.embed_images([Image.new('RGB', (640, 480), (200, 30, 30))])\n"
        "print(e.backend, v.shape[1], 'torch' in sys.modules, 'open_clip' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["openvino", "1280", "False", "False"]


def test_auto_calibrates_once_per_machine_and_reuses_the_choice(
    runtime_embedders: dict[str, Embedder], cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(calibration, "SECONDS", 0.05)
    exports = runtime_embedders["openvino"]._exports
    (exports.root / calibration.CALIBRATION_NAME).unlink(missing_ok=True)
    auto = Embedder(MODEL, device="cpu", cache_dir=cache_dir, backend="auto", threads=2)
    data = json.loads((exports.root / calibration.CALIBRATION_NAME).read_text())
    (key, entry), *rest = data.items()
    assert not rest and "threads=2" in key
    assert set(entry["images_per_s"]) == {"torch", *RUNTIMES}
    assert entry["winner"] == max(entry["images_per_s"], key=entry["images_per_s"].get)
    assert auto.backend == entry["winner"]

    def boom(*args: object, **kw: object) -> str:
        raise AssertionError("calibrated again")

    monkeypatch.setattr("search.embedder.calibrate", boom)
    again = Embedder(MODEL, device="cpu", cache_dir=cache_dir, backend="auto", threads=2)
    assert again.backend == entry["winner"]
    data[key]["winner"] = "onnxruntime"  # the stored choice is what decides
    (exports.root / calibration.CALIBRATION_NAME).write_text(json.dumps(data))
    forced = Embedder(MODEL, device="cpu", cache_dir=cache_dir, backend="auto", threads=2)
    assert forced.backend == "onnxruntime" and forced._torch is None


def test_export_failure_falls_back_to_torch_with_one_line(
    embedder: Embedder,
    cache_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    folder = tmp_path / "model"  # a model of its own: nothing exported for it yet
    shutil.copytree(cache_dir / "models" / "efficientnet-lite0-v1", folder)

    def broken(*args: object, **kw: object) -> None:
        raise RuntimeError("unsupported operator Foo\nlong traceback text")

    monkeypatch.setattr("search.embedder.export_onnx", broken)
    with caplog.at_level(logging.WARNING, logger="search.embedder"):
        emb = Embedder(f"local-dir:{folder}", device="cpu", cache_dir=cache_dir, backend="openvino")
    assert emb.backend == "torch" and emb.info.backend == "torch"
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(lines) == 1 and "using torch" in lines[0] and "unsupported operator Foo" in lines[0]
    assert "\n" not in lines[0]
    img = photo("coffee")
    assert float(emb.embed_images([img])[0] @ embedder.embed_images([img])[0]) > 0.9999


def test_settings_errors_are_clear(cache_dir: Path) -> None:
    with pytest.raises(ConfigError, match="unknown backend"):
        Embedder(MODEL, device="cpu", cache_dir=cache_dir, backend="tensorrt")
    with pytest.raises(ConfigError, match="fp32 only"):
        Embedder(MODEL, device="cpu", cache_dir=cache_dir, backend="onnxruntime", precision="bf16")


def test_text_stays_refused_for_an_image_only_model(
    runtime_embedders: dict[str, Embedder],
) -> None:
    emb = runtime_embedders["openvino"]
    with pytest.raises(TextSearchUnsupported, match="image-only"):
        emb.embed_texts(["red shoes"])
    assert emb._torch is None  # refused before loading PyTorch


def test_bf16_runs_only_after_its_recall_check_on_the_catalog_passed(
    runtime_embedders: dict[str, Embedder],
    embedder: Embedder,
    cache_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The one test that writes precision checks into the shared cache (no other races it)."""
    from cli.main import main
    from search.backends import precision_check
    from search.backends.runtimes import openvino_core
    from tests.helpers import write_folder

    if "BF16" not in openvino_core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        pytest.skip("this CPU has no bf16")
    exports = runtime_embedders["openvino"]._exports
    (exports.root / precision_check.CHECKS_NAME).unlink(missing_ok=True)

    def bf16() -> Embedder:
        return Embedder(
            MODEL, device="cpu", cache_dir=cache_dir, backend="openvino", precision="bf16"
        )

    with pytest.raises(ConfigError, match="has not been checked.*vsearch check-precision"):
        bf16()
    with pytest.raises(ConfigError, match="has not been checked"):  # auto: OpenVINO's bf16
        Embedder(MODEL, device="cpu", cache_dir=cache_dir, backend="auto", precision="bf16")
    # a check that fails keeps it off, and says how it did
    pics = _photos()
    pre = runtime_embedders["openvino"].runtime_preprocess
    pixels = np.stack([pre.pixels(p.convert("RGB")) for p in pics])
    failed = runtime_embedders["openvino"].check_precision(
        pixels, "bf16", catalog="photos", k=3, min_recall=1.01
    )
    assert not failed.passed and failed.images == len(pics) and failed.k == 3
    assert 0.9 < failed.cos_mean <= 1 and failed.fp32_core_ms > 0
    with pytest.raises(ConfigError, match="below the required 1.010"):
        bf16()
    # the command on a catalog folder: the seeded sample, the verdict, the record
    write_folder(tmp_path / "cat", per_product=2)
    monkeypatch.setenv("VSEARCH_CACHE_DIR", str(cache_dir))
    assert main(["check-precision", str(tmp_path / "cat"), "--precision", "fp32"]) == 2
    assert "--precision bf16 or fp16" in capsys.readouterr().err
    args = ["check-precision", str(tmp_path / "cat"), "--precision", "bf16", "--json", "-k", "3"]
    assert main([*args, "--min-recall", "0.5"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["passed"] and record["images"] == 8 and record["backend"] == "openvino"
    emb = bf16()
    assert emb.info.precision == "bf16"
    cosines = (emb.embed_images(pics) * embedder.embed_images(pics)).sum(axis=1)
    assert cosines.min() >= 0.98, cosines  # ~0.99: not the f32 guarantee
    # the record is this CPU's and this runtime version's: elsewhere it must be measured again
    monkeypatch.setattr(precision_check, "cpu_model", lambda: "another CPU")
    with pytest.raises(ConfigError, match="has not been checked"):
        bf16()


def test_indexer_and_searcher_share_the_backend_setting(
    runtime_embedders: dict[str, Embedder], embedder: Embedder, settings, tmp_path: Path
) -> None:
    """A collection built by PyTorch is searched with OpenVINO (same model): allowed."""
    from indexer.pipeline import run_index
    from search.searcher import Searcher
    from tests.helpers import write_folder

    write_folder(tmp_path / "catalog", PHOTOS[:3], per_product=1)
    report = run_index(tmp_path / "catalog", settings, embedder=embedder)
    assert report.embedded == 3
    searcher = Searcher(settings.replace(backend="openvino", query_crops="none"))
    physical, recorded = searcher._live()
    assert recorded.backend == "torch" and recorded.precision == "fp32"
    hits = searcher.similar(photo(PHOTOS[1]), limit=3)
    assert hits[0].id.startswith(PHOTOS[1]) and hits[0].score > 0.95
    assert searcher.embedder_for(recorded).backend == "openvino"
    searcher.store.close()


@pytest.mark.parametrize("backend", RUNTIMES)
def test_an_index_on_a_runtime_sees_the_pixels_its_queries_see(
    runtime_embedders: dict[str, Embedder], settings, tmp_path: Path, backend: str
) -> None:
    """Indexing with an exported runtime preprocesses photos as its queries do (the torch-free
    transform, search/images/preprocess.py), in the decode worker: a stored vector is what a
    query by the same file embeds."""
    from indexer.pipeline import run_index
    from search.store import MilvusStore
    from tests.helpers import write_folder

    emb = runtime_embedders[backend]
    assert emb.runtime_preprocess is not None
    files = write_folder(tmp_path / "catalog", PHOTOS[:4], per_product=1)
    # two batches of two: decoded by two forked workers (search/images/workers.py)
    s = settings.replace(workers=2, batch_size=2)
    report = run_index(tmp_path / "catalog", s, embedder=emb)
    assert report.embedded == len(files)
    store = MilvusStore(settings)
    rows = store.get(report.collection, sorted(store.fingerprints(report.collection)), vectors=True)
    stored = {Path(r["image"]).name: np.asarray(r["vector"], np.float32) for r in rows}
    queried = emb.embed_images(files)
    for path, query in zip(files, queried, strict=True):
        assert float(stored[path.name] @ query) > 0.99999, path.name
    store.close()


def test_an_index_on_a_runtime_imports_neither_open_clip_nor_torch(
    runtime_embedders: dict[str, Embedder], cache_dir: Path, tmp_path: Path
) -> None:
    """A fresh indexing process on a cached export never imports torch (its decode workers
    are search/images/workers.py's, not a DataLoader's: ~1.8 s and ~600 MB less), let alone
    open_clip (which imports torchvision and torch._dynamo)."""
    from tests.helpers import write_folder

    write_folder(tmp_path / "catalog", PHOTOS[:2], per_product=1)
    code = (
        "import sys\n"
        "from indexer.pipeline import run_index\n"
        "from search.config import Settings\n"
        f"s = Settings.of(uri={str(tmp_path / 'm.db')!r}, cache_dir={str(cache_dir)!r},\n"
        f"    lock_dir={str(tmp_path / 'locks')!r}, backend='openvino', device='cpu', workers=1,\n"
        "    batch_size=1)\n"
        f"r = run_index({str(tmp_path / 'catalog')!r}, s)\n"
        "print(r.embedded, *(m in sys.modules for m in ('open_clip', 'torchvision', 'torch')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[-4:] == ["2", "False", "False", "False"]
