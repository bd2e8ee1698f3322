"""The shopper's page: search by photo (upload, webcam, clipboard), crop to one product,
browse by clicking results ("more like this"), page further, filter by category and price.

Handlers are thin: they call :class:`ui.service.CatalogService` / ``Searcher`` and turn
``search.errors`` into ``gr.Error`` messages a shopper understands (:mod:`ui.messages`).

Big photos never hold the page up: the upload is read as a file path (Gradio does not
decode it), decoded at reduced size (JPEG draft) under the same pixel limit as the API, and
deleted from Gradio's upload folder shortly after it was read. Searches run concurrently, up to
``UiOptions.concurrency`` at once, in one shared queue.
"""

# No `from __future__ import annotations`: Gradio reads gr.SelectData from real annotations.

import dataclasses
import logging
from pathlib import Path
from typing import Any

import gradio as gr
from gradio.utils import get_upload_folder
from PIL import Image

from search import Match, VSearchError
from search.images.upload import query_photo

from . import crop as crop_tool
from . import tiles
from .images import Thumbnails, UploadJanitor
from .messages import (
    about_markdown,
    empty_message,
    friendly,
    guard_preprocess,
    no_close_match,
    status_markdown,
)
from .service import CatalogService
from .state import ANY, FilterError, QueryState, build_filters, parse_box
from .upload import preview_css, search_done_js

log = logging.getLogger(__name__)

MISSING = Image.new("RGB", (96, 96), (225, 225, 225))
NEAREST = 4  # tiles shown under "no close match"
CACHE_SWEEP_S = 600  # Gradio deletes its temporary files older than this, this often

# Desktop: photo and filters on the left, results on the right. Phone: photo, results,
# then filters (a grid re-ordered by width). The page scrolls; nothing inside it does.
CSS = """
#status {font-size: 0.95em; opacity: 0.9} #message {min-height: 1.5em}
#layout { display: grid !important; grid-template-columns: minmax(280px, 1fr) 2fr;
  grid-template-areas: "photo main" "filters main"; align-items: start; gap: 16px; }
#photo-col { grid-area: photo; } #main { grid-area: main; } #filters { grid-area: filters; }
#layout > * { min-width: 0 !important; width: auto !important; }
#results, #results > div { overflow: visible !important; max-height: none !important; }
@media (max-width: 760px) {
  #layout { grid-template-columns: 1fr; grid-template-areas: "photo" "main" "filters"; }
  #crop .crop-stage img { max-height: 220px; }
}
""" + preview_css("#query")
SCROLL_TO_RESULTS_JS = "() => { document.querySelector('#main')?.scrollIntoView(); }"


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
        self.uploads = UploadJanitor(get_upload_folder(), service.options.upload_grace_s)

    # -- helpers ----------------------------------------------------------------------
    def _filters(
        self, category: str | None, lo: float | None, hi: float | None
    ) -> dict[str, Any] | None:
        """Filters from the controls; price bounds at the catalog's own range are no filter
        (so items without a price stay visible until the shopper narrows the range)."""
        try:
            build_filters(None, lo, hi)  # min above max: refused whatever the range
        except FilterError as exc:
            raise gr.Error(str(exc)) from None
        rng = self.price_range
        if rng is not None:
            lo = None if lo is not None and lo <= rng[0] else lo
            hi = None if hi is not None and hi >= rng[1] else hi
        return build_filters(category, lo, hi, self.service.options.range_key)

    def _gallery(self, matches: list[Match]) -> list[tuple[Any, str]]:
        """(image, caption) pairs: the named ``search_image`` endpoint's gallery."""
        items = []
        folder = Path(self.uploads.root) / "vsearch-thumbs"
        for m in matches:
            img = self.thumbs.file(m, folder)
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
            "min_score": 0.0,  # the page splits close matches from the nearest itself
            "group_by": self.service.options.group_by or None,
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

    def _answer(self, state: QueryState) -> tuple[Any, ...]:
        """Run ``state`` and render its page: close matches only, or the nearest few under
        "no close match"; never padded with unrelated items."""
        hits = self._run(state)
        floor = self.service.page_floor
        close = [h for h in hits if h.score >= floor]
        heading = state.heading()
        if close:
            state.matches = close
            state.exhausted = len(close) < len(hits) or len(hits) < state.limit
            first = state.offset + 1
            msg = f"{heading} · {len(close)} product(s)"
            if state.offset:
                msg += f" · results {first}–{state.offset + len(close)}"
        elif hits and not state.offset:
            state.matches = hits[:NEAREST]
            state.exhausted = True
            msg = no_close_match(heading, len(state.matches))
        else:
            state.matches = []
            state.exhausted = True
            msg = (
                "**No more close matches.**" if state.offset else empty_message(self.service, state)
            )
        more = gr.update(visible=bool(state.matches) and not state.exhausted)
        back = gr.update(visible=state.kind == "id" and state.photo is not None)
        html = tiles.grid(state.matches, self.thumbs, floor)
        return html, msg, state, more, back

    def _photo_state(
        self, photo: Image.Image, limit: float, category: str, lo: Any, hi: Any, region: str = ""
    ) -> QueryState:
        filters = self._filters(category, lo, hi)
        return QueryState("image", photo, filters, int(limit), photo=photo, region=region)

    # -- handlers ---------------------------------------------------------------------
    def on_photo(
        self, path: str | None, limit: float, category: str, lo: float | None, hi: float | None
    ) -> tuple[Any, ...]:
        """A new photo (upload, webcam, paste): read it small, delete the upload, search at
        once and show it in the crop tool; clearing resets the page."""
        if path is None:
            hidden = gr.update(visible=False)
            return "", "", None, hidden, hidden, "", gr.skip()
        try:
            photo = query_photo(path, self.searcher.settings.indexing.max_image_pixels)
        except VSearchError as exc:
            raise gr.Error(friendly(exc)) from None
        finally:
            self.uploads.discard(path)
        state = self._photo_state(photo, limit, category, lo, hi)
        # the photo moves to the crop tool; the upload box is free for the next photo
        return (*self._answer(state), crop_tool.stage_html(photo), None)

    def search_photo(
        self, state: QueryState | None, limit: float, category: str, lo: Any, hi: Any
    ) -> tuple[Any, ...]:
        """Search the whole photo again (after a crop, a click or new filters)."""
        photo = state.photo if state is not None else None
        if photo is None:
            raise gr.Error("Upload, paste or take a photo first.")
        return self._answer(self._photo_state(photo, limit, category, lo, hi))

    def search_crop(
        self,
        state: QueryState | None,
        limit: float,
        category: str,
        lo: float | None,
        hi: float | None,
        box: str | None,
    ) -> tuple[Any, ...]:
        """Search only the region the shopper drew on the photo ("x0,y0,x1,y1" fractions)."""
        photo = state.photo if state is not None else None
        if photo is None:
            raise gr.Error("Upload a photo first, then drag over the product you want.")
        region = parse_box(box)
        if region is None:
            raise gr.Error("Drag over the product in your photo first, then search the crop.")
        cropped = crop_tool.crop_fraction(photo, region)
        new = self._photo_state(cropped, limit, category, lo, hi, region=box or "")
        new.photo = photo
        return self._answer(new)

    def search_text(
        self, text: str, limit: float, category: str, lo: float | None, hi: float | None
    ) -> tuple[Any, ...]:
        """Search by a text description (models with a text tower only)."""
        if not (text or "").strip():
            raise gr.Error("Type what you are looking for first.")
        state = QueryState("text", text.strip(), self._filters(category, lo, hi), int(limit))
        return self._answer(state)

    def refilter(
        self, state: QueryState | None, limit: float, category: str, lo: Any, hi: Any
    ) -> tuple[Any, ...]:
        """Filters changed: run the current query again from its first page."""
        filters = self._filters(category, lo, hi)
        if state is None:
            return gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip()
        again = dataclasses.replace(state, filters=filters, limit=int(limit), offset=0, matches=[])
        return self._answer(again)

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
        index = evt.index if isinstance(evt.index, int) else -1
        if state is None or not 0 <= index < len(state.matches):
            raise gr.Error("That result is no longer on the page; search again.")
        picked = state.matches[index]
        new = QueryState(
            "id", picked.id, self._filters(category, lo, hi), int(limit),
            photo=state.photo, title=tiles.title_of(picked),
        )  # fmt: skip
        return self._answer(new)

    def more_results(self, state: QueryState | None) -> tuple[Any, ...]:
        """The next page of the current query, in place of this one."""
        if state is None or not state.matches:
            raise gr.Error("Search first.")
        return self._answer(state.next_page())

    def search_image(
        self, photo: str | None, limit: float, category: str, lo: Any, hi: Any
    ) -> tuple[Any, ...]:
        """API (gradio_client ``/search_image``): a photo's results as a gallery."""
        if photo is None:
            raise gr.Error("Upload, paste or take a photo first.")
        try:
            img = query_photo(photo, self.searcher.settings.indexing.max_image_pixels)
        except VSearchError as exc:
            raise gr.Error(friendly(exc)) from None
        finally:
            self.uploads.discard(photo)
        try:
            hits = self.searcher.similar(
                img, limit=int(limit), filters=self._filters(category, lo, hi),
                min_score=self.service.min_score,
            )  # fmt: skip
        except VSearchError as exc:
            raise gr.Error(friendly(exc)) from None
        return self._gallery(hits), f"Products similar to your photo · {len(hits)} result(s)"

    def similar_by_id(self, item_id: str, limit: float = 10) -> list[dict[str, Any]]:
        """API-only: neighbours of a catalog item as JSON (for gradio_client)."""
        try:
            hits = self.searcher.similar_by_id(
                str(item_id), limit=int(limit), min_score=self.service.min_score
            )
        except VSearchError as exc:
            raise gr.Error(friendly(exc)) from None
        return [m.to_dict() for m in hits]

    def on_load(self) -> tuple[Any, ...]:
        """Fill the status line, filter choices, text-search visibility and the about panel."""
        st = self.service.status()
        facets = self.service.facets() if not st.error or st.physical else None
        cats = [ANY] + (facets.values.get("category", []) if facets else [])
        rng = facets.range if facets else None
        self.price_range = rng
        cal = self.service.calibration() if st.physical else None
        return (
            status_markdown(st),
            gr.update(choices=cats, value=ANY),
            gr.update(value=rng[0] if rng else None),
            gr.update(value=rng[1] if rng else None),
            gr.update(visible=st.has_text),
            about_markdown(st, self.service.page_floor if st.physical else 0.0, cal),
        )

    # -- layout -----------------------------------------------------------------------
    def build(self) -> gr.Blocks:
        opts = self.service.options
        sweep = (CACHE_SWEEP_S, CACHE_SWEEP_S)
        with gr.Blocks(title=opts.title, analytics_enabled=False, delete_cache=sweep) as demo:
            gr.Markdown(f"## {opts.title}")
            status = gr.Markdown("Loading the catalog…", elem_id="status")
            state = gr.State(None)
            box = gr.Textbox(visible=False, elem_id="crop-box-value")
            with gr.Row(elem_id="layout"):
                with gr.Column(elem_id="photo-col"):
                    query = gr.Image(
                        label="Upload, paste or take a photo",
                        sources=["upload", "webcam", "clipboard"],
                        type="filepath",
                        # any mode goes through as the uploaded file: with "RGB" Gradio
                        # decoded, converted and re-saved every RGBA/grey/CMYK upload as a
                        # PNG first (5.6 s for a 12 MP RGBA screenshot); we decode it small
                        image_mode=None,
                        elem_id="query",
                        height=220,
                    )
                    guard_preprocess(query)
                    stage = gr.HTML(
                        "",
                        elem_id="crop",
                        css_template=crop_tool.CSS,
                        js_on_load=crop_tool.JS_ON_LOAD,
                    )
                    with gr.Row():
                        crop_btn = gr.Button("Search the cropped region", elem_id="search-crop")
                        search_btn = gr.Button(
                            "Search the whole photo", variant="primary", elem_id="search"
                        )
                    with gr.Group(visible=False) as text_box:
                        text = gr.Textbox(label="Or describe it", elem_id="text-query")
                        text_btn = gr.Button("Search by text", elem_id="text-search")
                with gr.Column(elem_id="main"):
                    message = gr.Markdown(elem_id="message")
                    results = gr.HTML(
                        "", elem_id="results", css_template=tiles.CSS, js_on_load=tiles.JS_ON_LOAD
                    )
                    with gr.Row():
                        back_btn = gr.Button(
                            "← Back to your photo's results", visible=False, elem_id="back"
                        )
                        more_btn = gr.Button("More results", visible=False, elem_id="more")
                with gr.Accordion("Filters", open=True, elem_id="filters"):
                    category = gr.Dropdown([ANY], value=ANY, label="Category", elem_id="category")
                    with gr.Row():
                        lo = gr.Number(label="Min price", elem_id="price-min")
                        hi = gr.Number(label="Max price", elem_id="price-max")
                    top_k = gr.Slider(
                        1, opts.max_page_size, value=opts.page_size, step=1,
                        label="Results per page", elem_id="top-k",
                    )  # fmt: skip
            with gr.Accordion("About this search", open=False, elem_id="about"):
                about = gr.Markdown(elem_id="about-text")
            api_gallery = gr.Gallery(visible=False)
            api_message = gr.Markdown(visible=False)
            api_btn = gr.Button(visible=False)

            filters = [top_k, category, lo, hi]
            outputs = [results, message, state, more_btn, back_btn]
            queued = {"concurrency_limit": opts.concurrency, "concurrency_id": "search"}
            private = {"api_visibility": "private", **queued}
            photo = query.input(
                self.on_photo, [query, *filters], [*outputs, stage, query], **private
            )
            photo.success(None, js=search_done_js("#query"))  # answered or refused:
            photo.failure(None, js=search_done_js("#query"))  # the preview is drawn again
            search_btn.click(self.search_photo, [state, *filters], outputs, **private)
            crop_btn.click(
                self.search_crop, [state, *filters, box], outputs, js=crop_tool.READ_BOX_JS,
                **private,
            )  # fmt: skip
            text_btn.click(self.search_text, [text, *filters], outputs, api_name="search_text")
            text.submit(self.search_text, [text, *filters], outputs, **private)
            results.select(self.more_like, [state, *filters], outputs, **private)
            more_btn.click(self.more_results, [state], outputs, **private).then(
                None, js=SCROLL_TO_RESULTS_JS
            )
            back_btn.click(self.search_photo, [state, *filters], outputs, **private)
            category.input(self.refilter, [state, *filters], outputs, **private)
            for bound in (lo, hi):
                bound.submit(self.refilter, [state, *filters], outputs, **private)
            api_btn.click(
                self.search_image, [query, *filters], [api_gallery, api_message],
                api_name="search_image", **queued,
            )  # fmt: skip
            gr.api(self.similar_by_id, api_name="similar_by_id")
            demo.load(
                self.on_load,
                None,
                [status, category, lo, hi, text_box, about],
                api_visibility="private",
            )
        demo.queue(default_concurrency_limit=opts.concurrency)
        return demo


def build_blocks(service: CatalogService) -> gr.Blocks:
    return ShopApp(service).build()
