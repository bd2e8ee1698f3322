"""Per-device tuning defaults and the pipeline stages they switch (same vectors every way)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from indexer.pipeline import IndexOptions, run_index
from indexer.tuning import Tuning, choose, device_defaults
from search.config import Settings
from search.images.batch import BatchPreprocess
from search.store import MilvusStore
from tests.helpers import photo, product_catalog


def test_cpu_defaults_follow_the_measured_sweep() -> None:
    two = device_defaults("cpu", cores=2)
    assert (two.batch_size, two.workers, two.threads) == (8, 1, 2)
    assert device_defaults("cpu", cores=1).threads == 1
    big = device_defaults("cpu", cores=16)
    assert big.workers == 4 and big.threads == 12
    assert big.draft and big.batched_preprocess and big.async_writes and not big.device_decode


def test_cuda_defaults_use_big_batches_and_many_workers() -> None:
    t = device_defaults("cuda", cores=16)
    assert t.batch_size == 128 and t.workers == 8 and t.threads == 1 and t.pin_memory


def test_settings_override_the_device_defaults() -> None:
    t = choose(Settings.of(batch_size=3, workers=0, threads=5), "cpu")
    assert (t.batch_size, t.workers, t.threads) == (3, 0, 5)
    auto = choose(Settings(), "cpu")
    assert auto == dataclasses.replace(device_defaults("cpu"))


def test_batched_preprocessing_matches_the_model_transform_exactly() -> None:
    import open_clip

    transform = open_clip.image_transform(224, is_train=False, mean=(0.5,) * 3, std=(0.5,) * 3)
    prep = BatchPreprocess(transform)
    assert prep.batched and prep.size == 224
    images = [photo("chelsea", 400), photo("coffee", 300).convert("L")]
    crops = torch.stack([prep.per_image(im) for im in images])
    assert crops.dtype == torch.uint8 and crops.shape == (2, 3, 224, 224)
    batched = prep.finish(crops, "cpu")
    whole = torch.stack([transform(im) for im in images])
    assert torch.equal(batched, whole)


def test_fast_resize_is_within_two_grey_levels_of_the_model_transform() -> None:
    import open_clip
    from torchvision.transforms.functional import pil_to_tensor

    transform = open_clip.image_transform(224, is_train=False, mean=(0.5,) * 3, std=(0.5,) * 3)
    fast = BatchPreprocess(transform, fast_resize=True)
    exact = BatchPreprocess(transform)
    assert fast.torch_resize == (224, 224) and exact.torch_resize is None
    for img in (photo("chelsea", 451), photo("coffee", 300).convert("L").convert("RGB")):
        a, b = fast.per_image(img), exact.per_image(img)
        assert a.dtype == torch.uint8 and a.shape == b.shape == (3, 224, 224)
        diff = (a.int() - b.int()).abs()
        assert int(diff.max()) <= 2 and float(diff.float().mean()) < 0.05
    assert torch.equal(exact.per_image(photo("rocket")), pil_to_tensor(transform.transforms[1](
        transform.transforms[0](photo("rocket")))))  # fmt: skip
    # a transform the torch path cannot reproduce keeps PIL
    from torchvision import transforms as T

    other = T.Compose([T.Resize((224, 200)), T.CenterCrop(200), T.ToTensor(), T.Normalize([0.5] * 3, [0.5] * 3)])  # fmt: skip
    assert BatchPreprocess(other, fast_resize=True).torch_resize is None


def test_an_unknown_transform_runs_whole_per_image() -> None:
    def transform(img):  # not a torchvision Compose
        return torch.full((3, 4, 4), 0.25)

    prep = BatchPreprocess(transform)
    assert not prep.batched
    out = prep.finish(torch.stack([prep.per_image(photo("rocket"))]), "cpu")
    assert out.dtype == torch.float32 and float(out.mean()) == 0.25


def _vectors(settings: Settings, source: Path, embedder, tuning: Tuning, tag: str):
    s = settings.replace(uri=str(Path(settings.store.uri).with_name(f"{tag}.db")), collection=tag)
    report = run_index(source, s, IndexOptions(tuning=tuning), embedder=embedder)
    store = MilvusStore(s)
    rows = store.get(store.require(tag), sorted(r for r in _ids(source)), vectors=True)
    store.close()
    return report, np.array([r["vector"] for r in rows], np.float32)


def _ids(source: Path) -> list[str]:
    return [line.split(",")[0] for line in source.read_text().splitlines()[1:]]


@pytest.mark.slow
def test_every_pipeline_variant_stores_the_same_vectors(tmp_path: Path, settings, embedder) -> None:
    source = product_catalog(tmp_path / "cat", per_product=2)
    (tmp_path / "cat" / "img" / "broken.jpg").write_bytes(
        (tmp_path / "cat" / "img" / "chelsea-0.jpg").read_bytes()[:3000]
    )
    with source.open("a") as fh:
        fh.write("broken,img/broken.jpg,broken,animals,Acme,1.00,x\n")
    base = Tuning(batch_size=3, workers=0, threads=1, fast_resize=False)  # bit-exact PIL
    ref_report, ref = _vectors(settings, source, embedder, base, "ref")
    assert ref_report.embedded == 8 and [f.id for f in ref_report.failed] == ["broken"]
    for name, tuning in {
        "perimage": dataclasses.replace(base, batched_preprocess=False, draft=True),
        "sync": dataclasses.replace(base, async_writes=False, workers=1),
    }.items():
        report, vecs = _vectors(settings, source, embedder, tuning, name)
        assert report.embedded == 8 and len(report.failed) == 1
        np.testing.assert_allclose(vecs, ref, atol=1e-5)
    # the default torch resize: within 2 grey levels of PIL, so all but identical vectors
    report, vecs = _vectors(
        settings, source, embedder, dataclasses.replace(base, fast_resize=True), "fast"
    )
    assert report.embedded == 8 and len(report.failed) == 1
    assert float(np.min(np.sum(vecs * ref, axis=1))) > 0.9999
    # JPEGs decoded by torchvision on the model's device (the CPU here): resized by torch,
    # not PIL, so close but not bit-identical; the truncated file is still reported.
    report, vecs = _vectors(
        settings, source, embedder, dataclasses.replace(base, device_decode=True), "devdec"
    )
    assert report.embedded == 8 and [f.id for f in report.failed] == ["broken"]
    assert "truncated" in report.failed[0].reason
    assert float(np.min(np.sum(vecs * ref, axis=1))) > 0.95


@pytest.mark.gpu
def test_batches_pin_their_pixels_for_the_gpu_copy() -> None:
    from search.images.loader import Batch

    if not torch.cuda.is_available():
        pytest.skip("pinning needs a CUDA runtime")
    batch = Batch([0], torch.zeros(1, 3, 4, 4, dtype=torch.uint8), ["h"], [])
    assert batch.pin_memory().pixels.is_pinned()


class _SlowStore:
    """Records upsert requests; the first one waits until the test releases it."""

    def __init__(self) -> None:
        import threading

        self.calls: list[list[str]] = []
        self.entered = threading.Event()  # the writer is inside its first upsert
        self.release = threading.Event()

    def upsert(self, collection: str, rows: list[dict]) -> None:
        if not self.entered.is_set():
            self.entered.set()
            self.release.wait(10)
        self.calls.append([r["id"] for r in rows])


def test_the_writer_sends_batches_that_queued_up_in_one_request() -> None:
    from indexer.pipeline import _Writer

    store = _SlowStore()
    writer = _Writer(store, "c")  # type: ignore[arg-type]
    writer.min_rows = 1  # what a batch brings: the first upsert starts with batch 0 alone
    batches = [[{"id": f"{b}-{i}"} for i in range(4)] for b in range(4)]
    writer.put(batches[0])
    assert store.entered.wait(10)  # the writer took batch 0 and waits inside upsert
    for batch in batches[1:]:
        writer.put(batch)
    store.release.set()
    writer.close()
    assert store.calls[0] == [r["id"] for r in batches[0]]
    assert store.calls[1:] == [[r["id"] for b in batches[1:] for r in b]]


class _RecordingStore:
    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def upsert(self, collection: str, rows: list[dict]) -> None:
        self.calls.append([r["id"] for r in rows])


@pytest.mark.parametrize("batch", [1, 3, 8, 64])
def test_the_writer_sends_at_least_min_rows_per_request_and_every_row_once(batch: int) -> None:
    from indexer.pipeline import _Writer

    store = _RecordingStore()
    writer = _Writer(store, "c")  # type: ignore[arg-type]
    ids = [f"r{i}" for i in range(203)]
    for start in range(0, len(ids), batch):
        writer.put([{"id": i} for i in ids[start : start + batch]])
    writer.close()
    assert [i for call in store.calls for i in call] == ids  # in order, none lost or repeated
    assert all(len(call) >= _Writer.min_rows for call in store.calls[:-1])
    assert all(len(call) <= _Writer.coalesce_rows + batch for call in store.calls)
    assert len(store.calls) <= -(-len(ids) // _Writer.min_rows)
