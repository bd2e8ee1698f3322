"""Words a shopper reads: status line, empty results, and errors turned into messages."""

from __future__ import annotations

import logging
from typing import Any

import gradio as gr

from search import errors

from .service import CatalogService, Status
from .state import QueryState

log = logging.getLogger(__name__)


def friendly(exc: errors.VSearchError) -> str:
    """One clear sentence per error family (never a stack trace)."""
    if isinstance(exc, errors.CollectionNotFound):
        return "The product catalog is not indexed yet, so there is nothing to search."
    if isinstance(exc, errors.ProvenanceMismatch):
        return f"The catalog index does not match the search model: {exc}"
    if isinstance(exc, errors.StoreError):
        return (
            "The product index is unavailable right now (Milvus did not answer). "
            "Please try again in a moment."
        )
    if isinstance(exc, errors.ImageError):
        return f"We could not read that photo ({exc}). Please upload a JPEG, PNG or WebP image."
    if isinstance(exc, errors.ItemNotFound):
        return "That product is no longer in the catalog."
    if isinstance(exc, errors.TextSearchUnsupported):
        return "Text search is not available for this catalog's model: search with a photo."
    if isinstance(exc, errors.ModelError):
        return f"The search model could not be loaded: {exc}"
    return str(exc)


def status_markdown(st: Status) -> str:
    if st.error and not st.physical:
        return f"⚠️ Collection **{st.collection}**: {friendly_status(st.error)}"
    line = f"Collection **{st.collection}** ({st.physical}) · model {st.model} · {st.count:,} items"
    return line + (f" · ⚠️ {st.error}" if st.error else "")


def friendly_status(error: str) -> str:
    if "does not exist" in error:
        return "not indexed yet (run `vsearch index` on your catalog)."
    return error


def empty_message(service: CatalogService, state: QueryState) -> str:
    """Why there is nothing to show: empty catalog, filters, or the similarity floor."""
    st = service.status()
    if st.physical and st.count == 0:
        return "**The catalog is empty**: no products have been indexed yet."
    if state.offset:
        return "**No more results.**"
    floor = service.min_score
    parts = ["**No product is similar enough to show**"]
    if state.filters:
        parts.append("with these filters (try widening them)")
    if floor:
        parts.append(f"(similarity floor {floor:.2f})")
    return " ".join(parts) + "."


def guard_preprocess(component: Any) -> None:
    """Make a component's preprocess turn decoding failures into a readable gr.Error.

    ``gr.Image``/``gr.ImageEditor`` open the upload with PIL before any handler runs; a
    corrupt or non-image file would otherwise surface as a generic error.
    """
    original = component.preprocess

    def preprocess(payload: Any) -> Any:
        try:
            return original(payload)
        except gr.Error:
            raise
        except Exception as exc:
            log.info("upload rejected: %s: %s", type(exc).__name__, exc)
            raise gr.Error(
                "That file is not an image we can read. Please upload a JPEG, PNG or WebP photo."
            ) from None

    component.preprocess = preprocess
