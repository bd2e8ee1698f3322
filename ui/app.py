"""The shopper's page: query by photo (upload, webcam, clipboard; optional crop), browse by
clicking results ("more like this"), page further, filter by category and price.

Handlers are thin: they call :class:`ui.service.CatalogService` / ``Searcher`` and turn
``search.errors`` into ``gr.Error`` messages a shopper understands (:mod:`ui.messages`).
"""

# No `from __future__ import annotations`: Gradio reads gr.SelectData from real annotations.

import logging
from typing import Any

import gradio as gr
from PIL import Image

from search import Match, VSearchError

from .images import Thumbnails
from .messages import empty_message, friendly, guard_preprocess, status_markdown
from .service import CatalogService
from .state import ANY, QueryState, build_filters

log = logging.getLogger(__name__)

MISSING = Image.new("RGB", (96, 96), (225, 225, 225))
CSS = "#status {font-size: 0.9em; opacity: 0.85} #message {min-height: 1.5em}"


def _caption(m: Match) -> str:
    meta = m.metadata or {}
    parts = [str(meta.get("title") or m.id)]
    if meta.get("category"):
        parts.append(str(meta["category"]))
    price = meta.get("price")
    if isinstance(price, int | float) and not isinstance(price, bool):
        parts.append(f"{price:.2f}")
    parts.append(f"score {m.score:.3f}")
    return " · ".join(parts)


class ShopApp:
    """Builds the Blocks and owns the handlers (one instance per server)."""

    def __init__(self, service: CatalogService) -> None:
        self.service = service
        self.searcher = service.searcher
        self.thumbs = Thumbnails(service.options.thumb_px)
        self.price_range: tuple[float, float] | None = None  # refreshed on each page load

    # -- helpers ----------------------------------------------------------------------
    def _filters(
        self, category: str | None, lo: float | None, hi: float | None
    ) -> dict[str, Any] | None:
        """Filters from the controls; price bounds at the catalog's own range are no filter
        (so items without a price stay visible until the shopper narrows the range)."""
        rng = self.price_range
        if rng is not None:
            lo = None if lo is not None and lo <= rng[0] else lo
            hi = None if hi is not None and hi >= rng[1] else hi
        return build_filters(category, lo, hi, self.service.options.range_key)

    def _gallery(self, matches: list[Match]) -> list[tuple[Any, str]]:
        items = []
        for m in matches:
            img = self.thumbs.for_match(m)
            if img is None:  # keep the slot: gallery indices must match the results
                items.append((MISSING, _caption(m) + " · image unavailable"))
            else:
                items.append((img, _caption(m)))
        return items

    def _run(self, state: QueryState) -> list[Match]:
        kw = {
            "limit": state.limit,
            "offset": state.offset,
            "filters": state.filters,
            "min_score": self.service.min_score,
        }
        try:
            if state.kind == "image":
                return self.searcher.similar(state.value, **kw)
            if state.kind == "id":
                return self.searcher.similar_by_id(state.value, **kw)
            return self.searcher.similar_text(state.value, **kw)
        except VSearchError as exc:
            log.info("query failed: %s: %s", type(exc).__name__, exc)
            raise gr.Error(friendly(exc)) from None

    def _answer(self, state: QueryState, heading: str) -> tuple[Any, ...]:
        hits = self._run(state)
        state.matches = list(state.matches) + hits
        state.exhausted = len(hits) < state.limit
        if not state.matches:
            msg = empty_message(self.service, state)
        else:
            msg = f"{heading} · showing {len(state.matches)} result(s)"
        more = gr.update(visible=bool(state.matches) and not state.exhausted)
        return self._gallery(state.matches), msg, state, more

    # -- handlers ---------------------------------------------------------------------
    def search_image(
        self,
        photo: Image.Image | None,
        limit: float,
        category: str,
        lo: float | None,
        hi: float | None,
    ) -> tuple[Any, ...]:
        """Search by the uploaded photo (upload, webcam or clipboard)."""
        if photo is None:
            raise gr.Error("Upload, paste or take a photo first.")
        state = QueryState("image", photo, self._filters(category, lo, hi), int(limit))
        return self._answer(state, "Products similar to your photo")

    def on_photo(
        self,
        photo: Image.Image | None,
        limit: float,
        category: str,
        lo: float | None,
        hi: float | None,
    ) -> tuple[Any, ...]:
        """A new photo: search at once and offer it in the crop editor; clearing resets."""
        if photo is None:
            return [], "", None, gr.update(visible=False), None
        return (*self.search_image(photo, limit, category, lo, hi), photo)

    def search_crop(
        self, editor: dict | None, limit: float, category: str, lo: float | None, hi: float | None
    ) -> tuple[Any, ...]:
        """Search by the cropped region of the photo (the crop editor's composite)."""
        photo = _photo_of(editor)
        if photo is None:
            raise gr.Error("Upload a photo first, then crop it.")
        state = QueryState("image", photo, self._filters(category, lo, hi), int(limit))
        return self._answer(state, "Products similar to the cropped region")

    def search_text(
        self, text: str, limit: float, category: str, lo: float | None, hi: float | None
    ) -> tuple[Any, ...]:
        """Search by a text description (models with a text tower only)."""
        if not (text or "").strip():
            raise gr.Error("Type what you are looking for first.")
        state = QueryState("text", text.strip(), self._filters(category, lo, hi), int(limit))
        return self._answer(state, f"Products matching “{text.strip()[:80]}”")

    def more_like(
        self,
        state: QueryState,
        limit: float,
        category: str,
        lo: float | None,
        hi: float | None,
        evt: gr.SelectData,
    ) -> tuple[Any, ...]:
        """A click on a result: its neighbours, by id (no re-embedding)."""
        index = evt.index if isinstance(evt.index, int) else 0
        if state is None or not 0 <= index < len(state.matches):
            raise gr.Error("That result is no longer on the page; search again.")
        picked = state.matches[index]
        title = (picked.metadata or {}).get("title") or picked.id
        new = QueryState("id", picked.id, self._filters(category, lo, hi), int(limit))
        return self._answer(new, f"More like “{title}”")

    def more_results(self, state: QueryState | None) -> tuple[Any, ...]:
        """The next page of the current query (offset += limit), appended."""
        if state is None or not state.matches:
            raise gr.Error("Search first.")
        state = state.next_page()
        return self._answer(state, state.heading_for_more())

    def similar_by_id(self, item_id: str, limit: float = 10) -> list[dict[str, Any]]:
        """API-only: neighbours of a catalog item as JSON (for gradio_client)."""
        state = QueryState("id", str(item_id), None, int(limit))
        return [m.to_dict() for m in self._run(state)]

    def on_load(self) -> tuple[Any, ...]:
        """Fill the status line, filter choices and text-search visibility on page load."""
        st = self.service.status()
        facets = self.service.facets() if not st.error or st.physical else None
        cats = [ANY] + (facets.values.get("category", []) if facets else [])
        rng = facets.range if facets else None
        self.price_range = rng
        note = (
            ""
            if st.has_text
            else "*Text search is off: this catalog's model ("
            + (st.model or "unknown")
            + ") is image-only. Search with a photo instead.*"
        )
        return (
            status_markdown(st),
            gr.update(choices=cats, value=ANY),
            gr.update(value=rng[0] if rng else None),
            gr.update(value=rng[1] if rng else None),
            gr.update(visible=st.has_text),
            note,
        )

    # -- layout -----------------------------------------------------------------------
    def build(self) -> gr.Blocks:
        opts = self.service.options
        with gr.Blocks(title=opts.title, analytics_enabled=False) as demo:
            gr.Markdown(f"## {opts.title}")
            status = gr.Markdown("Loading catalog status…", elem_id="status")
            state = gr.State(None)
            with gr.Row():
                with gr.Column(scale=1, min_width=300):
                    query = gr.Image(
                        label="Your photo",
                        sources=["upload", "webcam", "clipboard"],
                        type="pil",
                        image_mode="RGB",
                        elem_id="query",
                        height=320,
                    )
                    guard_preprocess(query)
                    with gr.Accordion("Crop to the product (optional)", open=False):
                        cropper = gr.ImageEditor(
                            label="Drag the crop handles, then search the crop",
                            sources=["upload"],
                            type="pil",
                            image_mode="RGB",
                            transforms=("crop",),
                            brush=False,
                            eraser=False,
                            layers=False,
                            elem_id="crop",
                            height=320,
                        )
                        guard_preprocess(cropper)
                        crop_btn = gr.Button("Search the cropped region", elem_id="search-crop")
                    search_btn = gr.Button("Search by photo", variant="primary", elem_id="search")
                    with gr.Group(visible=False) as text_box:
                        text = gr.Textbox(label="Or describe it", elem_id="text-query")
                        text_btn = gr.Button("Search by text", elem_id="text-search")
                    text_note = gr.Markdown(elem_id="text-note")
                    with gr.Accordion("Filters", open=True):
                        category = gr.Dropdown(
                            [ANY], value=ANY, label="Category", elem_id="category"
                        )
                        with gr.Row():
                            lo = gr.Number(label="Min price", elem_id="price-min")
                            hi = gr.Number(label="Max price", elem_id="price-max")
                        top_k = gr.Slider(
                            1, opts.max_page_size, value=opts.page_size, step=1,
                            label="Results per page", elem_id="top-k",
                        )  # fmt: skip
                with gr.Column(scale=2):
                    message = gr.Markdown(elem_id="message")
                    gallery = gr.Gallery(
                        label="Similar products",
                        columns=4,
                        height="auto",
                        allow_preview=False,
                        object_fit="contain",
                        elem_id="results",
                    )
                    more_btn = gr.Button("More results", visible=False, elem_id="more")
            filters = [top_k, category, lo, hi]
            outputs = [gallery, message, state, more_btn]
            search_btn.click(self.search_image, [query, *filters], outputs, api_name="search_image")
            query.input(
                self.on_photo, [query, *filters], [*outputs, cropper], api_visibility="private"
            )
            crop_btn.click(self.search_crop, [cropper, *filters], outputs, api_visibility="private")
            text_btn.click(self.search_text, [text, *filters], outputs, api_name="search_text")
            text.submit(self.search_text, [text, *filters], outputs, api_visibility="private")
            gallery.select(self.more_like, [state, *filters], outputs, api_visibility="private")
            more_btn.click(self.more_results, [state], outputs, api_visibility="private")
            gr.api(self.similar_by_id, api_name="similar_by_id")
            demo.load(
                self.on_load,
                None,
                [status, category, lo, hi, text_box, text_note],
                api_visibility="private",
            )
        return demo


def _photo_of(editor: Any) -> Image.Image | None:
    """The composite (cropped) image of an ImageEditor value, else its background."""
    if editor is None:
        return None
    if isinstance(editor, Image.Image):
        return editor
    if isinstance(editor, dict):
        for key in ("composite", "background"):
            img = editor.get(key)
            if isinstance(img, Image.Image):
                return img
    return None


def build_blocks(service: CatalogService) -> gr.Blocks:
    return ShopApp(service).build()
