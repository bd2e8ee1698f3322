"""``--engine ray``: the run's images as a Ray Dataset, decoded by CPU tasks, embedded by an
actor pool (one actor per GPU, or CPU actors), streamed back to the driver in batches.

Stages (Ray Data's streaming executor bounds what is in flight between them, so memory
stays flat and a slow stage backs the others up):

1. ``from_items`` over the distinct image sources of the plan (paths; URLs were downloaded
   into the cache by the driver, as in the local engine).
2. ``map_batches(decode_batch)``: CPU tasks read, hash and safely decode each image with the
   local engine's own stage (:class:`search.images.loader.ImageDataset` with the catalog's
   :class:`search.images.Decoder`: limits, JPEG draft) and run the per-image part of the
   model's transform (:class:`search.images.batch.BatchPreprocess`, uint8 crops). A bad
   image becomes a reason, never an exception.
3. ``map_batches(EmbedActor)``: each actor loads the model once (the driver's model, checked
   by its provenance key), finishes preprocessing on its device and embeds.
4. The driver iterates the results; the pipeline upserts them (its writer thread) or writes
   them to Parquet (``--write bulk``), and reports progress.

On an exported runtime (OpenVINO, ONNX Runtime) both stages use the torch-free transform of
the runtime's queries (:class:`search.images.preprocess.Preprocess`: uint8 crops per image,
the normalisation per batch in numpy), so neither the driver nor a worker imports torch
(~1.4 s of each process's start here).

Ray is optional (``pip install "vsearch[ray]"``); it is imported only when this engine runs.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from search.config import Settings
from search.embedder import Embedder
from search.errors import ConfigError, ProvenanceMismatch
from search.images import Decoder
from search.images.preprocess import Preprocess
from search.images.workers import read_picture

from ..decoding import catalog_decoder
from ..tuning import Tuning
from . import Embedded

if TYPE_CHECKING:
    from search.images.batch import BatchPreprocess

log = logging.getLogger(__name__)

LOCAL_OBJECT_STORE = 512 * 2**20  # a local Ray's shared memory: ~2,000 crops of 224 px in flight


def require_ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise ConfigError(
            '--engine ray needs Ray: pip install "vsearch[ray]" (or pip install "ray[data]")'
        ) from exc
    return ray


def connect(address: str | None, cores: int | None = None) -> tuple[Any, bool]:
    """Join ``address`` or start a local Ray in this process; ``(ray, started_here)``.

    A Ray this call started is the caller's to stop when its run ends (:func:`stop_local`):
    left running, its threads and child processes stay in the indexer's process, which a
    later fork (the local engine's decode workers) must not inherit.
    """
    ray = require_ray()
    started = False
    if not ray.is_initialized():
        if address:
            ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
        else:
            ray.init(
                num_cpus=cores,
                include_dashboard=False,
                object_store_memory=LOCAL_OBJECT_STORE,
                logging_level=logging.WARNING,
                log_to_driver=False,
            )
        started = True
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # the CLI owns progress (the pipeline's callback)
    ctx.execution_options.preserve_order = False
    _quiet_ray_data(ray)
    return ray, started


def stop_local(ray: Any) -> None:
    """``ray.shutdown()`` of a Ray this process started, less a second of waiting.

    The shutdown stops the local Ray's processes one after the other, each with SIGTERM and
    up to a second's wait before SIGKILL. The autoscaler's monitor takes the whole second
    (1.0 of 1.2-1.4 s measured here); it has nothing to do on a local one-node Ray and
    holds no state, so it is stopped first, by its PID, with SIGKILL. If a later Ray
    keeps its processes elsewhere, this is a plain ``ray.shutdown()``.
    """
    node = getattr(getattr(ray, "_private", None), "worker", None)
    processes = getattr(getattr(node, "_global_node", None), "all_processes", None) or {}
    for info in processes.get("monitor", []):
        process = getattr(info, "process", None)
        if process is not None and process.poll() is None:
            process.kill()
            with contextlib.suppress(Exception):
                process.wait(timeout=1)
    ray.shutdown()


def _quiet_ray_data(ray: Any) -> None:
    """Ray Data's console says nothing the run does not already say: its per-dataset INFO
    lines (execution plan, start, finish) stay in its log file in the Ray session folder,
    and the warning that progress bars are off, which they are on purpose, is not shown."""
    from ray.util.debug import log_once

    log_once("ray_data_progress_manager_disabled")  # marks that warning as already shown
    for handler in logging.getLogger("ray.data").handlers:
        if isinstance(handler, logging.StreamHandler):  # the console one, not its log file
            handler.setLevel(max(handler.level, logging.WARNING))


def decode_batch(
    batch: dict[str, np.ndarray], prep: BatchPreprocess | Preprocess, decoder: Decoder, size: int
) -> dict[str, Any]:
    """Read, hash, decode and crop each source (a Ray task; the local engine's own stage)."""
    refs = [str(r) for r in batch["ref"]]
    # one shape for every block (a failed image is zeros): ragged blocks would turn into
    # object arrays when Ray re-batches them
    if isinstance(prep, Preprocess):
        samples = [read_picture(ref, prep, decoder) for ref in refs]
        pixels = np.zeros((len(refs), size, size, 3), np.uint8)
    else:
        from search.images.loader import ImageDataset

        dataset = ImageDataset(refs, prep, decoder)
        samples = [
            (s.pixels, s.content_hash, s.error) for s in map(dataset.__getitem__, range(len(refs)))
        ]
        pixels = np.zeros((len(refs), 3, size, size), np.uint8 if prep.batched else np.float32)
    for k, (crop, _, _) in enumerate(samples):
        if crop is not None:
            pixels[k] = np.asarray(crop)
    return {
        "src": np.asarray(batch["src"], np.int64),
        "pixels": pixels,
        "hash": np.asarray([h for _, h, _ in samples], object),
        "error": np.asarray([e for _, _, e in samples], object),
    }


class EmbedActor:
    """One model per actor (loaded once), embedding decoded batches on its device."""

    def __init__(
        self, spec: dict[str, Any], key: str, prep: BatchPreprocess | Preprocess, threads: int
    ) -> None:
        if threads and spec["backend"] == "torch":
            import torch

            torch.set_num_threads(threads)
        self.embedder = Embedder(**spec)
        if self.embedder.info.key != key:
            raise ProvenanceMismatch(
                f"a Ray worker loaded {self.embedder.info.describe()}, not the driver's model: "
                "install the same model (and vsearch) on every node"
            )
        self.prep = prep

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        ok = np.asarray([not e for e in batch["error"]], bool)
        vectors = np.zeros((len(ok), self.embedder.dim), np.float32)
        if ok.any():
            chosen = np.stack(list(batch["pixels"][ok]))  # stays a plain array if it is one
            if isinstance(self.prep, Preprocess):
                pixels = self.prep.normalise(chosen)
            else:
                import torch

                pixels = self.prep.finish(torch.from_numpy(chosen), self.embedder.device)
            vectors[ok] = np.asarray(self.embedder.embed_tensors(pixels), np.float32)
        return {
            "src": batch["src"],
            "hash": batch["hash"],
            "error": batch["error"],
            "vector": vectors,
        }


def _decode_cpus(prep: BatchPreprocess | Preprocess, plan: dict[str, Any]) -> float:
    """CPUs a decode task reserves. When it equals a CPU actor's reservation, Ray Data fuses
    the decode into the embedding actor, which then decodes and embeds one after the other.
    Torch-free decode tasks start in workers Ray already runs (no torch to import), so they
    reserve less and run beside the actor, overlapping decode and forward (2,000 images
    here: 30.3-31.4 s against 30.9-32.6 s fused); a PyTorch decode task would import torch
    in each new worker, which costs more than the overlap saves (+47.6 % against +37.7 %
    measured), so that path stays fused."""
    if isinstance(prep, Preprocess) and plan["num_cpus"] == 1 and not plan["num_gpus"]:
        return 0.5  # not the actor's 1 CPU: kept apart from it
    return 1


def _torch_preprocess(emb: Embedder, tuning: Tuning) -> BatchPreprocess:
    """open_clip's transform, split (the PyTorch backend, or a transform that the torch-free
    one does not reproduce)."""
    from search.images.batch import for_embedder

    return for_embedder(emb, batched=tuning.batched_preprocess, fast_resize=tuning.fast_resize)


class RayEngine:
    """``engine(refs)`` -> embedded batches, computed on a Ray cluster."""

    def __init__(
        self,
        settings: Settings,
        embedder: Embedder,
        tuning: Tuning,
        *,
        address: str | None = None,
    ) -> None:
        self.settings, self.embedder, self.tuning, self.address = (
            settings,
            embedder,
            tuning,
            address,
        )

    def __str__(self) -> str:  # the run's log line says where it embeds
        return f"Ray at {self.address}" if self.address else "Ray (local)"

    def plan_resources(self, ray: Any) -> dict[str, Any]:
        """Actors and their resources from what the cluster offers.

        One actor per GPU (num_gpus=1, device cuda). Without GPUs: CPU actors holding
        about half the cluster's cores (the other half decodes); on a 2-4 core machine one
        actor reserving one core and running the run's torch threads (measured here).
        """
        res = ray.cluster_resources()
        gpus, cpus = int(res.get("GPU", 0)), int(res.get("CPU", 1))
        if gpus:
            return {"actors": gpus, "num_gpus": 1, "num_cpus": 1, "device": "cuda", "threads": 1}
        if cpus <= 4:
            return {"actors": 1, "num_gpus": 0, "num_cpus": 1, "device": "cpu", "threads": 0}
        per = 4
        return {
            "actors": max(1, cpus // (2 * per)),
            "num_gpus": 0,
            "num_cpus": per,
            "device": "cpu",
            "threads": per,
        }

    def __call__(self, refs: Sequence[str]) -> Iterator[Embedded]:
        ray, started = connect(self.address)
        try:
            yield from self._run(ray, refs)
        finally:
            if started:
                stop_local(ray)  # the run's own Ray: nothing of it outlives the run

    def _run(self, ray: Any, refs: Sequence[str]) -> Iterator[Embedded]:
        plan = self.plan_resources(ray)
        tuning, emb = self.tuning, self.embedder
        prep = emb.runtime_preprocess or _torch_preprocess(emb, tuning)
        draft = emb.info.image_size if tuning.draft else None
        spec = {
            "model": self.settings.model.model,
            "pretrained": self.settings.model.pretrained,
            "device": plan["device"],
            "precision": self.settings.model.precision,
            "cache_dir": self.settings.model.cache_dir,
            "backend": emb.backend,
            "threads": plan["threads"] or tuning.threads,
        }
        batch = tuning.batch_size if plan["device"] == "cpu" else max(tuning.batch_size, 64)
        blocks = max(1, math.ceil(len(refs) / (batch * 4)))
        log.info("ray: %d images, %d blocks, %s", len(refs), blocks, plan)
        ds = ray.data.from_items(
            [{"src": i, "ref": r} for i, r in enumerate(refs)], override_num_blocks=blocks
        )
        ds = ds.map_batches(
            decode_batch,
            batch_size=batch,
            batch_format="numpy",
            fn_kwargs={
                "prep": prep,
                "decoder": catalog_decoder(
                    self.settings.indexing.max_image_pixels,
                    draft,
                    allow_private=self.settings.indexing.allow_private_urls,
                ),
                "size": prep.size or emb.info.image_size,
            },
            num_cpus=_decode_cpus(prep, plan),
        )
        ds = ds.map_batches(
            EmbedActor,
            batch_size=batch,
            batch_format="numpy",
            fn_constructor_kwargs={
                "spec": spec,
                "key": emb.info.key,
                "prep": prep,
                "threads": spec["threads"],
            },
            compute=ray.data.ActorPoolStrategy(size=plan["actors"]),
            num_cpus=plan["num_cpus"],
            num_gpus=plan["num_gpus"],
        )
        for out in ds.iter_batches(batch_size=batch, batch_format="numpy", prefetch_batches=2):
            ok = [k for k, e in enumerate(out["error"]) if not e]
            failed = [(int(out["src"][k]), str(out["error"][k])) for k in range(len(out["src"]))]
            failed = [f for f in failed if f[1]]
            yield (
                [int(out["src"][k]) for k in ok],
                [str(out["hash"][k]) for k in ok],
                out["vector"][ok],
                failed,
            )
