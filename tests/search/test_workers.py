"""Decode workers without torch (search/images/workers.py): the same batches in the same order
as decoding in process, failures as reasons, named workers that never outlive the batches."""

from __future__ import annotations

import hashlib
import multiprocessing
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from search.images import Decoder, Preprocess, open_image
from search.images.workers import WORKER_NAME, PixelBatches
from tests.helpers import PHOTOS, write_folder

PRE = Preprocess(224, (0.48, 0.46, 0.41), (0.27, 0.26, 0.28))
DECODER = Decoder(draft_size=224, digest=lambda data: hashlib.sha256(data).hexdigest())


@pytest.fixture
def refs(tmp_path: Path) -> list[str]:
    files = write_folder(tmp_path / "catalog", PHOTOS[:4], per_product=2)  # 8 photos
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(files[0].read_bytes()[:300])  # a truncated JPEG
    out = [str(f) for f in files]
    return [*out[:3], str(broken), *out[3:6], str(tmp_path / "missing.jpg"), *out[6:]]


def _flat(batches: PixelBatches) -> tuple[list[int], list[str], list[np.ndarray], list]:
    index, hashes, pictures, failed = [], [], [], []
    for batch in batches:
        index += batch.index
        hashes += batch.hashes
        failed += batch.failed
        if batch.pixels is not None:
            assert batch.pixels.dtype == np.uint8 and batch.pixels.shape[1:] == (224, 224, 3)
            pictures.extend(batch.pixels)
    return index, hashes, pictures, failed


@pytest.mark.parametrize("workers", [1, 2])
def test_workers_give_the_in_process_batches_in_order(refs: list[str], workers: int) -> None:
    here = _flat(PixelBatches(refs, PRE, DECODER, batch_size=3, workers=0))
    there = _flat(PixelBatches(refs, PRE, DECODER, batch_size=3, workers=workers, ahead=1))
    index, hashes, pictures, failed = there
    assert index == here[0] == [0, 1, 2, 4, 5, 6, 8, 9]
    assert hashes == here[1]
    assert all(np.array_equal(a, b) for a, b in zip(pictures, here[2], strict=True))
    assert [p for p, _ in failed] == [3, 7] and all(reason for _, reason in failed)
    assert failed == here[3]
    # the pixels are the query path's: the same decode and the same transform
    for position, picture in zip(index, pictures, strict=True):
        img = open_image(Path(refs[position]).read_bytes(), draft_size=224)
        assert np.array_equal(picture, PRE.pixels(img))
    assert hashes[0] == hashlib.sha256(Path(refs[0]).read_bytes()).hexdigest()
    assert multiprocessing.active_children() == []  # the pool is gone with the batches


def test_a_batch_of_failures_and_an_abandoned_iteration(refs: list[str], tmp_path: Path) -> None:
    gone = [str(tmp_path / f"gone{k}.jpg") for k in range(2)]
    batches = list(PixelBatches(gone + refs, PRE, DECODER, batch_size=2, workers=2))
    assert batches[0].pixels is None and [p for p, _ in batches[0].failed] == [0, 1]
    # a caller that stops early (an error in the writer, Ctrl-C) leaves no worker behind
    running = iter(PixelBatches(refs, PRE, DECODER, batch_size=1, workers=2))
    assert next(running).index == [0]
    assert len(multiprocessing.active_children()) == 2
    running.close()
    assert multiprocessing.active_children() == []


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl is Linux")
def test_a_worker_is_named_and_dies_with_its_parent() -> None:
    """The parent is a separate process that forks one worker and then gets SIGKILL."""
    code = (
        "import os, time\n"
        "from search.images.workers import WORKER_NAME, die_with_parent\n"
        "parent = os.getpid()\n"
        "if os.fork() == 0:\n"
        "    die_with_parent(parent, WORKER_NAME)\n"
        "    time.sleep(60)\n"
        "    os._exit(0)\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", code], cwd=Path(__file__).parents[2])
    try:
        child, deadline = 0, time.monotonic() + 30
        while not child and time.monotonic() < deadline:
            kids = Path(f"/proc/{parent.pid}/task/{parent.pid}/children").read_text().split()
            if kids and _comm(int(kids[0])) == WORKER_NAME.decode():
                child = int(kids[0])
            time.sleep(0.02)
        assert child, "the worker never took its name"
        parent.kill()
        parent.wait()
        deadline = time.monotonic() + 5
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not _alive(child), "the worker outlived its parent"
    finally:
        parent.kill()
        parent.wait()


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except (OSError, IndexError):
        return False
