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
    if isinstance(exc, errors.ImageError) and "exceeds the limit" in str(exc):
        return (
            "That photo has too many pixels for us to search "
            f"({str(exc).split('refused: ', 1)[-1]}). Please upload a smaller photo."
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
    """The shopper's status line: no collection names, model names or dimensions."""
    if st.error and not st.physical:
        if "does not exist" in st.error:
            return "🛍️ This shop's catalog is not available yet. Please come back soon."
        return "⚠️ Search is unavailable right now. Please try again in a moment."
    if st.count == 0:
        return "🛍️ This shop's catalog is empty for now. Please come back soon."
    return f"Search {st.count:,} items by photo: upload, paste or take a picture."


def about_markdown(st: Status, floor: float, calibration: Any = None) -> str:
    """The "about" panel: the technical details the status line leaves out."""
    lines = [
        f"- Catalog collection: `{st.collection}`"
        + (f" (version `{st.physical}`)" if st.physical else ""),
        f"- Items: {st.count:,}",
    ]
    if st.model:
        lines.append(f"- Model: {st.model}")
    if st.error:
        lines.append(f"- Problem: {friendly_status(st.error)}")
    line = f"- Close-match floor: {floor:.3f}"
    if calibration is not None:
        line += (
            f" (calibrated on {calibration.samples} shopper-style photos of this catalog: "
            f"{calibration.true_positive_rate:.0%} of right products above it, "
            f"{calibration.false_positive_rate:.0%} of unrelated best matches)"
        )
    lines.append(line)
    return "\n".join(lines)


def friendly_status(error: str) -> str:
    if "does not exist" in error:
        return error + " (run `vsearch index` on your catalog)."
    return error


def empty_message(service: CatalogService, state: QueryState) -> str:
    """Why there is nothing to show: empty catalog, filters, or no more results."""
    st = service.status()
    if st.physical and st.count == 0:
        return "**The catalog is empty**: no products have been added yet."
    if state.offset:
        return "**No more results.**"
    if state.filters:
        return "**No product matches these filters.** Try widening them."
    return "**No product to show.**"


def no_close_match(heading: str, shown: int) -> str:
    """Nothing passes the close-match floor: say so, and offer the nearest few."""
    return f"{heading} · **No close match** in this catalog; here are the {shown} nearest."


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
