"""The metadata block (``"vsearch"``) of an open_clip model folder, read in one place.

A ``local-dir:`` model folder holds ``open_clip_config.json``; vsearch adds a ``vsearch``
block to it: ``has_text`` (false for image-only models), and for models made by
``vsearch finetune`` the base model, the objective and strategy, the options and the
verdict (``improved``) that ``vsearch promote`` checks.

:func:`locate` resolves a model setting to its :class:`ModelSource` (folder, provenance
fields, checkpoint digest) without importing torch or loading the model.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ModelError

log = logging.getLogger(__name__)

LOCAL_DIR_PREFIX = "local-dir:"
HF_HUB_PREFIX = "hf-hub:"  # open_clip's own: the hub repository holds config and weights
CONFIG_NAME = "open_clip_config.json"


def split_model_spec(spec: str, default_pretrained: str = "") -> tuple[str, str]:
    """One model written as text -> ``(model, pretrained)``.

    ``builtin:NAME``, ``local-dir:PATH`` and ``hf-hub:ORG/REPO`` carry no tag; ``NAME:TAG``
    is an open_clip name and its pretrained tag; a bare ``NAME`` takes ``default_pretrained``.
    """
    from .builtin_model import BUILTIN_PREFIX

    if spec.startswith((BUILTIN_PREFIX, LOCAL_DIR_PREFIX, HF_HUB_PREFIX)):
        return spec, ""
    if ":" not in spec:
        return spec, default_pretrained
    name, tag = spec.split(":", 1)
    return name, tag


def folder_of(model_name: str) -> Path | None:
    """The folder of a ``local-dir:`` model name (None for other models)."""
    if not model_name.startswith(LOCAL_DIR_PREFIX):
        return None
    return Path(model_name[len(LOCAL_DIR_PREFIX) :]).expanduser()


def read_vsearch_block(model: str | Path) -> dict[str, Any] | None:
    """The ``vsearch`` block of a model folder (a folder path or a ``local-dir:`` name).

    None when the model is not a folder, or its config cannot be read.
    """
    folder = folder_of(model) if isinstance(model, str) else Path(model)
    if folder is None:
        return None
    try:
        config = json.loads((folder / CONFIG_NAME).read_text())
    except (OSError, ValueError):
        return None
    block = config.get("vsearch")
    return block if isinstance(block, dict) else None


def finetune_block(model: str | Path) -> dict[str, Any] | None:
    """The block of a model written by ``vsearch finetune`` (None for any other model)."""
    block = read_vsearch_block(model)
    return block if block is not None and "strategy" in block else None


@dataclass(frozen=True)
class ModelSource:
    """Where a model comes from, as the embedder records it (read without loading it).

    open_clip_name: what open_clip is asked for; folder: the local folder (built-in and
    ``local-dir:`` models), None for a hub name; name / pretrained / checkpoint: the
    provenance fields; config_text: the folder's config (part of the export cache key).
    """

    open_clip_name: str
    folder: Path | None
    has_text: bool
    name: str
    pretrained: str
    checkpoint: str
    config_text: str = ""


def locate(model: str, pretrained: str, cache: Path) -> ModelSource:
    """Resolve a model setting without loading it: every model source is told apart here
    (``builtin:``, ``local-dir:``, ``hf-hub:``, an open_clip name with a pretrained tag)."""
    from .builtin_model import BUILTIN_PREFIX, builtin_model_dir

    if model.startswith(BUILTIN_PREFIX):
        folder = builtin_model_dir(cache, model[len(BUILTIN_PREFIX) :])
        return _folder_source(folder, model, has_text=False)
    if model.startswith(LOCAL_DIR_PREFIX):
        folder = Path(model[len(LOCAL_DIR_PREFIX) :]).expanduser().resolve()
        config = folder / CONFIG_NAME
        if not config.is_file():
            raise ModelError(f"model folder {folder} has no {CONFIG_NAME}")
        try:
            meta = json.loads(config.read_text()).get("vsearch", {})
        except json.JSONDecodeError as exc:
            raise ModelError(f"{config} is not valid JSON: {exc}") from exc
        # recorded by its absolute path: a searcher started from another working directory
        # must load the same model from the provenance
        name = f"{LOCAL_DIR_PREFIX}{folder}"
        return _folder_source(folder, name, has_text=bool(meta.get("has_text", True)))
    if model.startswith(HF_HUB_PREFIX):
        return ModelSource(model, None, True, model, "", "")
    if not pretrained:
        raise ModelError(
            f"model {model!r} needs a pretrained tag (e.g. --pretrained laion2b_s34b_b79k); "
            "random weights make meaningless embeddings"
        )
    return ModelSource(model, None, True, model, pretrained, "")


def _folder_source(folder: Path, name: str, *, has_text: bool) -> ModelSource:
    weights = sorted(folder.glob("open_clip_model.safetensors")) or sorted(
        folder.glob("*.safetensors")
    ) + sorted(folder.glob("*.bin")) + sorted(folder.glob("*.pt"))
    checkpoint = file_digest(weights[0]) if weights else ""
    try:
        config_text = (folder / CONFIG_NAME).read_text()
    except OSError:
        config_text = ""
    return ModelSource(
        f"{LOCAL_DIR_PREFIX}{folder}", folder, has_text, name, "", checkpoint, config_text
    )


def file_digest(path: Path) -> str:
    """sha256 of a weights file (first 16 hex digits), cached beside it by size and mtime."""
    stat = path.stat()
    sidecar = path.with_name(path.name + ".sha256")
    stamp = f"{stat.st_size}:{stat.st_mtime_ns}"
    try:
        cached_stamp, digest = sidecar.read_text().split()
        if cached_stamp == stamp:
            return digest
    except (OSError, ValueError):
        pass
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    digest = h.hexdigest()[:16]
    try:
        sidecar.write_text(f"{stamp} {digest}\n")
    except OSError:
        log.debug("cannot cache the digest of %s", path)
    return digest
