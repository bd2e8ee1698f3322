"""Decode workers without torch: the indexer's loader when an exported runtime runs the model.

With ONNX Runtime or OpenVINO, the one thing in an indexing run that needed PyTorch was its
DataLoader, and importing torch costs ~1.8 s and ~600 MB of memory on a CPU machine (the
CUDA build; measured in docs/benchmarks.md). :class:`PixelBatches` does the DataLoader's job
for this one case with the standard library: forked worker processes read, hash, decode,
resize and crop a batch each (:class:`.decoder.Decoder` and :class:`.preprocess.Preprocess`,
exactly as the query path does), a bounded number of batches ahead, in order; the uint8
pictures come back in one array and the caller normalises them (:meth:`Preprocess.normalise`).

Workers die with the process that forked them (``PR_SET_PDEATHSIG``, as the DataLoader's do:
after a ``kill -9`` of the indexer no worker may keep the database or the index lock open)
and are named ``vsearch_decode`` (what ``ps`` and /proc/PID/comm show).
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection

import numpy as np

from .decoder import Decoder, failure_reason
from .preprocess import Preprocess

WORKER_NAME = b"vsearch_decode"
_PR_SET_NAME = 15  # <sys/prctl.h>
_PR_SET_PDEATHSIG = 1


@dataclass
class PixelBatch:
    """Decoded pictures of one batch: positions into the job list, uint8 (N, H, W, 3)."""

    index: list[int]
    hashes: list[str]
    pixels: np.ndarray | None  # None when every image of the batch failed
    failed: list[tuple[int, str]]


class PixelBatches:
    """Batches of ``refs`` decoded by ``workers`` processes (0, or a system without fork:
    in this process), in order.

    Each worker holds at most ``ahead`` decoded batches ready, so memory stays bounded
    whatever the catalog's size.
    """

    def __init__(
        self,
        refs: Sequence[str],
        pre: Preprocess,
        decoder: Decoder,
        *,
        batch_size: int,
        workers: int,
        ahead: int = 2,
    ) -> None:
        pairs = list(enumerate(refs))
        step = max(1, batch_size)
        self.jobs = [pairs[start : start + step] for start in range(0, len(pairs), step)]
        self.pre, self.decoder = pre, decoder
        self.workers, self.ahead = workers, ahead

    def __iter__(self) -> Iterator[PixelBatch]:
        forks = "fork" in multiprocessing.get_all_start_methods()  # not on Windows
        if self.workers <= 0 or len(self.jobs) <= 1 or not forks:
            for job in self.jobs:
                yield decode_batch(self.pre, self.decoder, job)
            return
        workers = min(self.workers, len(self.jobs))
        # One pipe per worker and batch k to worker k % workers, so the batches come back in
        # order with nothing shared between the workers (a first version on
        # multiprocessing.Pool, whose workers share one task queue, hung once in the test that
        # abandons an iteration). Only the batch's number goes down a pipe (the workers have
        # the jobs from the fork), so a send never waits on a worker that is itself waiting to
        # send its batch back. Plain fork, as the DataLoader: forkserver/spawn would re-import
        # __main__, which breaks callers running from a notebook or stdin. Workers never
        # touch gRPC.
        context = multiprocessing.get_context("fork")
        parent = os.getpid()
        procs, pipes = [], []
        try:
            for _ in range(workers):
                ours, theirs = context.Pipe()
                proc = context.Process(
                    target=_work,
                    args=(parent, self.jobs, self.pre, self.decoder, theirs),
                    daemon=True,
                )
                proc.start()
                theirs.close()
                procs.append(proc)
                pipes.append(ours)
            sent = 0
            for k in range(len(self.jobs)):
                while sent < len(self.jobs) and sent < k + workers * self.ahead:
                    pipes[sent % workers].send(sent)
                    sent += 1
                try:
                    batch = pipes[k % workers].recv()
                except EOFError:
                    procs[k % workers].join(1)
                    code = procs[k % workers].exitcode
                    raise RuntimeError(f"a decode worker died (exit code {code})") from None
                yield batch
            for pipe in pipes:
                pipe.send(None)  # done: the workers exit
            for proc in procs:
                proc.join(5)
        finally:
            for proc in procs:  # abandoned (an error, Ctrl-C) or stuck: no worker outlives us
                if proc.is_alive():
                    proc.kill()
                proc.join()
            for pipe in pipes:
                pipe.close()


def decode_batch(pre: Preprocess, decoder: Decoder, job: list[tuple[int, str]]) -> PixelBatch:
    """Read, hash, decode, resize and crop each image of ``job``; a bad one is a reason."""
    index, hashes, pictures, failed = [], [], [], []
    for position, ref in job:
        picture, chash, error = read_picture(ref, pre, decoder)
        if picture is None:
            failed.append((position, error))
            continue
        index.append(position)
        hashes.append(chash)
        pictures.append(picture)
    return PixelBatch(index, hashes, np.stack(pictures) if pictures else None, failed)


def read_picture(ref: str, pre: Preprocess, decoder: Decoder) -> tuple[np.ndarray | None, str, str]:
    """(uint8 picture (H, W, 3), content hash, "") or (None, "", why it failed): one image
    read, hashed, decoded, resized and cropped, for these workers and Ray's decode tasks."""
    try:
        data, content_hash = decoder.load(ref)
        return pre.pixels(decoder.decode(data)), content_hash, ""
    except Exception as exc:  # never let one file stop the job or kill a worker
        return None, "", failure_reason(exc)


def _work(
    parent: int,
    jobs: list[list[tuple[int, str]]],
    pre: Preprocess,
    decoder: Decoder,
    pipe: Connection,
) -> None:
    """A worker: decode each batch whose number comes down ``pipe`` and send it back, until
    None."""
    die_with_parent(parent, WORKER_NAME)  # first: nothing below may keep an orphan alive
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    try:
        while (k := pipe.recv()) is not None:
            pipe.send(decode_batch(pre, decoder, jobs[k]))
    except (EOFError, BrokenPipeError):  # the parent is gone or closed its end
        pass


def die_with_parent(parent: int, name: bytes | None = None) -> bool:
    """Linux: this process gets SIGKILL the moment ``parent`` (the one that forked it) dies,
    and is called ``name`` when one is given (``ps``, /proc/PID/comm); elsewhere this does
    nothing.

    A decode worker inherits the parent's open files, the index lock and Milvus Lite's
    database among them; after a ``kill -9`` of the indexer it used to hold them until
    PyTorch's watchdog noticed (seconds), so an immediate re-run was refused
    (tests/reliability/test_orphan_workers.py). The batches are iterated by the thread that
    made the workers, so the signal (sent when that thread exits) never comes early.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if name is not None:
            libc.prctl(_PR_SET_NAME, ctypes.c_char_p(name), 0, 0, 0)
        armed = libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False
    if armed and os.getppid() != parent:  # it died before the signal was armed
        os._exit(1)
    return armed
