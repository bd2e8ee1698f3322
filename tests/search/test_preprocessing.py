"""search.images.preprocess (PIL + numpy) against open_clip's own transform (torchvision)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from search.images.preprocess import Preprocess
from tests.helpers import photo

RECORD = {
    "size": [224, 224],
    "mode": "RGB",
    "mean": [0.5, 0.5, 0.5],
    "std": [0.5, 0.5, 0.5],
    "interpolation": "bicubic",
    "resize_mode": "shortest",
    "fill_color": 0,
}
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


def _open_clip(record: dict, size: int):
    from open_clip.transform import image_transform

    return image_transform(
        size,
        is_train=False,
        mean=tuple(record["mean"]),
        std=tuple(record["std"]),
        resize_mode=record["resize_mode"],
        interpolation=record["interpolation"],
    )


def _grey_levels(ours: np.ndarray, theirs: np.ndarray, std: list[float]) -> np.ndarray:
    """Per-pixel difference in 0..255 grey levels (undoing the normalisation)."""
    scale = np.asarray(std, np.float32)[:, None, None] * 255
    return np.abs(ours - theirs) * scale


def _pictures() -> list[Image.Image]:
    out = [photo("chelsea", 451), photo("rocket", 333), photo("astronaut", 512), photo("coffee")]
    out.append(photo("chelsea", 451).transpose(Image.Transpose.ROTATE_90))  # portrait
    out.append(photo("coffee", 150))  # smaller than the model input: upscaled
    out.append(photo("astronaut").convert("L"))  # grey: converted to RGB
    out.append(photo("rocket", 600).crop((0, 0, 600, 224)))  # short side already 224
    return out


@pytest.mark.parametrize(
    "record",
    [
        RECORD,
        {**RECORD, "mean": CLIP_MEAN, "std": CLIP_STD},
        {**RECORD, "interpolation": "bilinear"},
        {**RECORD, "resize_mode": "squash"},
    ],
    ids=["builtin", "clip-mean-std", "bilinear", "squash"],
)
def test_equal_to_open_clip_within_one_grey_level(record: dict) -> None:
    ours = Preprocess.of(record, 224)
    assert ours is not None
    theirs = _open_clip(record, 224)
    for img in _pictures():
        expected = theirs(img).numpy()
        got = ours(img)
        assert got.shape == expected.shape == (3, 224, 224) and got.dtype == np.float32
        diff = _grey_levels(got, expected, record["std"])
        # one grey level, plus float32 rounding of the normalised values (~1e-5 level)
        assert diff.max() <= 1.0 + 1e-3, (img.size, img.mode, float(diff.max()))
        assert float((diff > 0.01).mean()) < 0.001  # nearly every pixel identical


def test_batch_is_the_stack_of_single_images() -> None:
    pre = Preprocess.of(RECORD, 224)
    assert pre is not None
    pics = _pictures()[:3]
    batch = pre.batch(pics)
    assert batch.shape == (3, 3, 224, 224) and batch.flags["C_CONTIGUOUS"]
    for row, img in zip(batch, pics, strict=True):
        np.testing.assert_array_equal(row, pre(img))
    assert pre.batch([]).shape == (0, 3, 224, 224)


class _Recording(ThreadPoolExecutor):
    """A helper thread that counts the resizes handed to it."""

    def __init__(self) -> None:
        super().__init__(1)
        self.calls = 0

    def submit(self, fn, /, *args, **kwargs):  # type: ignore[no-untyped-def]
        self.calls += 1
        return super().submit(fn, *args, **kwargs)


@pytest.mark.parametrize("interpolation", ["bicubic", "bilinear"])
def test_a_lone_picture_resized_in_two_halves_is_the_same_picture(interpolation: str) -> None:
    """A query's picture is resized in two bands of rows, the lower on a helper thread: the
    rows of the whole resize within one grey level, and open_clip's likewise."""
    record = {**RECORD, "interpolation": interpolation}
    pre = Preprocess.of(record, 224)
    assert pre is not None
    theirs = _open_clip(record, 224)
    reductions = [photo("chelsea", 451), photo("chelsea", 451).transpose(Image.Transpose.ROTATE_90)]
    reductions += [photo("chelsea", 1008).resize((1008, 756)), photo("rocket", 631)]
    reductions += [photo("astronaut", 512)]  # square: resized straight to 224 x 224, no crop
    reductions += [photo("coffee", 640).resize((640, 480)).convert("L")]  # grey
    with _Recording() as helper:
        for img in reductions:
            whole, halves = pre.pixels(img), pre.pixels(img, helper=helper)
            assert halves.shape == whole.shape == (224, 224, 3) and halves.dtype == np.uint8
            diff = np.abs(halves.astype(int) - whole)
            assert diff.max() <= 1 and (diff > 0).mean() < 0.001, img.size
            expected = theirs(img).numpy()
            got = pre.batch([img], helper=helper)[0]
            assert _grey_levels(got, expected, record["std"]).max() <= 1.0 + 1e-3
        assert helper.calls == 2 * len(reductions)  # every one of them shared its resize
        # nothing to share: an enlargement, a picture already at the size
        small, square = photo("rocket", 333), photo("rocket", 600).resize((224, 224))
        for img in (small, square):
            np.testing.assert_array_equal(pre.pixels(img, helper=helper), pre.pixels(img))
        assert helper.calls == 2 * len(reductions)
        # several pictures (a query's views): every other one whole on the helper, the same
        # pixels in the same order
        views = [*reductions, small, square]
        np.testing.assert_array_equal(pre.batch(views, helper=helper), pre.batch(views))
        assert helper.calls == 2 * len(reductions) + len(views) // 2


def test_normalisation_uses_the_records_mean_and_std() -> None:
    white = Image.new("RGB", (300, 240), (255, 255, 255))
    a = Preprocess.of(RECORD, 224)
    b = Preprocess.of({**RECORD, "mean": CLIP_MEAN, "std": CLIP_STD}, 224)
    assert a is not None and b is not None
    np.testing.assert_allclose(a(white)[:, 0, 0], [1.0, 1.0, 1.0], rtol=1e-6)
    expected = (1 - np.asarray(CLIP_MEAN)) / np.asarray(CLIP_STD)
    np.testing.assert_allclose(b(white)[:, 0, 0], expected, rtol=1e-5)


def test_modes_it_cannot_reproduce_are_declined() -> None:
    assert Preprocess.of({**RECORD, "resize_mode": "longest"}, 224) is None
    assert Preprocess.of({**RECORD, "size": [224, 256]}, 224) is None
    assert Preprocess.of({**RECORD, "interpolation": "lanczos"}, 224) is None
    assert Preprocess.of({k: v for k, v in RECORD.items() if k != "mean"}, 224) is None
    single = Preprocess.of({**RECORD, "size": 256, "mean": [0.5], "std": [0.25]}, 224)
    assert single is not None and single.size == 256 and single.mean == (0.5, 0.5, 0.5)
