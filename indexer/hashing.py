"""Fingerprints that let a re-run touch only what changed."""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any


def content_hash(data: bytes) -> str:
    """Hash of an image's bytes (what decides whether it must be embedded again)."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def meta_hash(image: str, metadata: dict[str, Any]) -> str:
    """Hash of what is stored beside the vector (image reference and metadata)."""
    payload = json.dumps([image, metadata], sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.blake2b(payload.encode(), digest_size=16).hexdigest()


def file_signature(path: str) -> str:
    """Cheap change detector for local files: size and modification time ('' if missing)."""
    try:
        st = os.stat(path)
    except OSError:
        return ""
    return f"{st.st_size}:{st.st_mtime_ns}"
