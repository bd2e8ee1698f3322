"""Every way to name a model is told apart in one place (search.model_folder)."""

from __future__ import annotations

from pathlib import Path

import pytest

from search.errors import ModelError
from search.model_folder import locate, split_model_spec


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("builtin:efficientnet-lite0", ("builtin:efficientnet-lite0", "")),
        ("local-dir:/models/a:b", ("local-dir:/models/a:b", "")),
        ("hf-hub:org/repo", ("hf-hub:org/repo", "")),
        ("ViT-B-32:laion2b_s34b_b79k", ("ViT-B-32", "laion2b_s34b_b79k")),
        ("ViT-B-32", ("ViT-B-32", "openai")),
    ],
)
def test_model_specs(spec: str, expected: tuple[str, str]):
    assert split_model_spec(spec, "openai") == expected


def test_sources_resolve_without_loading(tmp_path: Path):
    hub = locate("hf-hub:org/repo", "", tmp_path)
    assert (hub.open_clip_name, hub.folder, hub.pretrained) == ("hf-hub:org/repo", None, "")
    named = locate("ViT-B-32", "laion2b_s34b_b79k", tmp_path)
    assert (named.name, named.pretrained, named.folder) == ("ViT-B-32", "laion2b_s34b_b79k", None)
    with pytest.raises(ModelError, match="needs a pretrained tag"):
        locate("ViT-B-32", "", tmp_path)
    with pytest.raises(ModelError, match="has no open_clip_config.json"):
        locate(f"local-dir:{tmp_path}", "", tmp_path)
