"""The imaging module's shared parts: the job Decoder, the loader factory, the precision policy."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from search.errors import ModelError
from search.images import Decoder, autocast_dtype, precision_name, scales_gradients
from search.images.batch import BatchPreprocess
from search.images.loader import ImageDataset, make_loader, model_input
from tests.helpers import photo


def _transform(size: int = 32):
    from open_clip.transform import image_transform

    return image_transform(size, is_train=False, mean=(0.5,) * 3, std=(0.5,) * 3)


def _jpeg(tmp_path: Path, name: str, size: int = 120) -> str:
    path = tmp_path / f"{name}.jpg"
    photo(name, size).save(path, "JPEG", quality=90)
    return str(path)


def test_the_precision_policy_is_one_rule() -> None:
    assert autocast_dtype("auto", "cpu") is None  # the CPU runs fp32 whatever is asked
    assert autocast_dtype("fp16", "cpu") is None
    assert autocast_dtype("fp32", "cuda") is None
    assert autocast_dtype("fp16", "cuda:0") is torch.float16
    assert precision_name(None) == "fp32"
    assert precision_name(torch.bfloat16) == "bf16" and precision_name(torch.float16) == "fp16"
    assert scales_gradients("cuda", "fp16") and not scales_gradients("cuda", "fp32")
    assert not scales_gradients("cpu", "fp16")
    with pytest.raises(ModelError, match="unknown precision"):
        autocast_dtype("int4", "cpu")


def test_the_decoder_reads_once_hashes_the_same_bytes_and_decodes_reduced(tmp_path) -> None:
    ref = _jpeg(tmp_path, "chelsea", 400)
    reads: list[str] = []

    def read(r: str) -> bytes:
        reads.append(r)
        return Path(r).read_bytes()

    decoder = Decoder(read, draft_size=64, digest=lambda b: str(len(b)))
    data, digest = decoder.load(ref)
    assert reads == [ref] and digest == str(Path(ref).stat().st_size)
    img = decoder.decode(data)
    assert img.mode == "RGB" and 64 <= min(img.size) < 200  # JPEG draft, short side 400
    assert Decoder().decode(data).size == (400, 266)  # no draft: full size


def test_the_loader_keeps_order_reports_failures_and_matches_the_transform(tmp_path) -> None:
    refs = [_jpeg(tmp_path, n) for n in ("chelsea", "coffee", "rocket")]
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    refs.insert(1, str(broken))
    transform = _transform()
    prep = BatchPreprocess(transform)
    decoder = Decoder()
    loader = make_loader(ImageDataset(refs, prep, decoder), 3, workers=0, pin_memory=False)
    index, failed, rows = [], [], []
    for batch in loader:
        pos, _, pixels = model_input(batch, prep, "cpu", decoder)
        index += pos
        failed += batch.failed
        rows += list(pixels) if pixels is not None else []
    assert index == [0, 2, 3] and [p for p, _ in failed] == [1]
    assert "unrecognised format" in failed[0][1]
    for pos, row in zip(index, rows, strict=True):  # uint8 crops finished on the device: exact
        assert torch.equal(row, transform(Image.open(refs[pos]).convert("RGB")))


def test_explicit_batches_and_augmentation_on_the_decoded_photo(tmp_path) -> None:
    refs = [_jpeg(tmp_path, n) for n in ("chelsea", "coffee", "rocket", "astronaut")]
    transform = _transform()
    prep = BatchPreprocess(transform)
    dataset = ImageDataset(refs, prep, Decoder(), augment=ImageOps.mirror, raw_jpeg=True)
    assert not dataset.raw_jpeg  # augmented photos are decoded here, never on the device
    loader = make_loader(dataset, [[3, 1], [0]], workers=0, pin_memory=False)
    batches = [model_input(b, prep, "cpu", Decoder()) for b in loader]
    assert [b[0] for b in batches] == [[3, 1], [0]]
    mirrored = transform(ImageOps.mirror(Image.open(refs[3]).convert("RGB")))
    assert torch.equal(batches[0][2][0], mirrored)
    assert not torch.equal(mirrored, transform(Image.open(refs[3]).convert("RGB")))


def test_the_package_itself_imports_no_torch() -> None:
    import subprocess

    code = "import sys, search.images; print('torch' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "False"


def test_a_plain_transform_runs_whole_per_image(tmp_path) -> None:
    ref = _jpeg(tmp_path, "coffee")
    transform = _transform()
    dataset = ImageDataset([ref], transform, Decoder())
    sample = dataset[0]
    assert sample.pixels is not None and sample.pixels.dtype == torch.float32
    expected = transform(Image.open(io.BytesIO(Path(ref).read_bytes())).convert("RGB"))
    assert np.array_equal(sample.pixels.numpy(), expected.numpy())
