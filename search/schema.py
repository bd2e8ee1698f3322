"""The vsearch collection schema and its provenance record.

Every physical collection has the same fields (id, vector, image, content_hash, meta_hash,
source_sig, metadata) and records the model that filled it. Milvus 2.3 servers drop
collection properties on restart while the schema description persists there; Milvus Lite
keeps properties but not the description: the record is written to both and read from
whichever holds it.
"""

from __future__ import annotations

import json
from typing import Any

from .config import Settings
from .embedder import ModelInfo
from .errors import ProvenanceMismatch

PROVENANCE_KEY = "vsearch.provenance"
DESCRIPTION_PREFIX = PROVENANCE_KEY + "="
SCHEMA_VERSION = 1
ID_MAX = 1024
IMAGE_MAX = 4096
OUTPUT_FIELDS = ["id", "image", "metadata"]
FINGERPRINT_FIELDS = ["id", "content_hash", "meta_hash", "source_sig"]


def provenance_record(model: ModelInfo, metric: str) -> str:
    """The JSON text stored on a collection: schema version, metric and model."""
    return json.dumps(
        {"schema": SCHEMA_VERSION, "metric": metric, "model": model.to_dict()}, sort_keys=True
    )


def build_schema(model: ModelInfo, record: str) -> Any:
    """The pymilvus schema of a vsearch collection for ``model``'s dimension."""
    from pymilvus import DataType, MilvusClient

    schema = MilvusClient.create_schema(
        auto_id=False, enable_dynamic_field=False, description=DESCRIPTION_PREFIX + record
    )
    schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=ID_MAX)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=model.dim)
    schema.add_field("image", DataType.VARCHAR, max_length=IMAGE_MAX)
    schema.add_field("content_hash", DataType.VARCHAR, max_length=64)
    schema.add_field("meta_hash", DataType.VARCHAR, max_length=64)
    schema.add_field("source_sig", DataType.VARCHAR, max_length=128)
    schema.add_field("metadata", DataType.JSON)
    return schema


def vector_index(client: Any, settings: Settings) -> Any:
    """Index parameters for the vector field, from settings (HNSW by default)."""
    s = settings.store
    params: dict[str, Any] = {}
    if s.index_type.startswith("HNSW"):
        params = {"M": s.hnsw_m, "efConstruction": s.hnsw_ef_construction}
    elif s.index_type.startswith("IVF"):
        params = {"nlist": 1024}
    index = client.prepare_index_params()
    index.add_index(
        field_name="vector", index_type=s.index_type, metric_type=s.metric, params=params
    )
    return index


def read_provenance(name: str, desc: dict[str, Any]) -> ModelInfo | None:
    """The model recorded in ``describe_collection`` output (None: not a vsearch collection)."""
    raw = (desc.get("properties") or {}).get(PROVENANCE_KEY)
    description = str(desc.get("description") or "")
    if not raw and description.startswith(DESCRIPTION_PREFIX):
        raw = description[len(DESCRIPTION_PREFIX) :]
    if not raw:
        return None
    try:
        data = json.loads(raw)
        schema = data.get("schema")
        model = ModelInfo.from_dict(data["model"]) if schema == SCHEMA_VERSION else None
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise ProvenanceMismatch(
            f"collection {name!r} has an unreadable vsearch provenance record ({exc!r})"
        ) from exc
    if model is None:
        raise ProvenanceMismatch(
            f"collection {name!r} has schema {schema}, expected {SCHEMA_VERSION}"
        )
    check_fields(name, desc, model.dim)
    return model


def check_fields(name: str, desc: dict[str, Any], dim: int) -> None:
    """Refuse a collection whose fields are not vsearch's, whatever its provenance says."""
    fields = {f.get("name"): f for f in desc.get("fields") or [] if isinstance(f, dict)}
    missing = [f for f in ["vector", *FINGERPRINT_FIELDS, *OUTPUT_FIELDS] if f not in fields]
    if missing:
        raise ProvenanceMismatch(
            f"collection {name!r} does not have the vsearch schema (missing field(s) "
            f"{', '.join(sorted(set(missing)))}); refusing to use it"
        )
    got = (fields["vector"].get("params") or {}).get("dim")
    if got is not None and int(got) != dim:
        raise ProvenanceMismatch(
            f"collection {name!r} stores {got}-d vectors but its model record says {dim}-d; "
            "refusing to use it"
        )
