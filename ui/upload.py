"""Big photos are shrunk in the shopper's browser before they are uploaded, and the upload's
preview is not drawn while its search runs.

A 12 MP phone photo is 3-5 MB: sent as is, it costs the shopper's uplink seconds, the server
a multipart parse and a decode, and the page a download of the same bytes back for its
preview. The page's script (:func:`shrink_js`, run once on page load) catches the photo
input's ``change`` event before Gradio sees it, draws the photo at :data:`BROWSER_SIDE` px on
its longest side into a canvas (the browser applies the EXIF orientation), and hands Gradio
that JPEG in place of the original. The server then decodes about 1 MP.

What the server must judge is left to it, so the limits hold exactly as before: a file over
the upload size limit, a photo over the pixel limit (its size is read from the header, it is
never decoded in the page), a file the browser cannot read, or anything that is not a JPEG,
PNG or WebP photo goes up untouched and is refused (or searched) by the server as before. A
photo already small enough also goes up as it is. Webcam shots and pasted images are small
and go through Gradio unchanged; a photo dropped on the upload box is shrunk on the server.

Not on a page opened on the server's own machine (a loopback host name): there the upload
costs nothing (4.5 MB in ~50 ms) while the browser's shrink of a 12 MP JPEG cost 180-500 ms
here (a browser decodes the full photo; the server's JPEG draft decodes at 1/4 scale in
~40-60 ms), so the server's path is faster (docs/ui.md, page speed).
``window.vsearchShrinkAlways = true`` forces the shrink there (the browser test uses it).
"""

from __future__ import annotations

import json

from search.images.upload import QUERY_SIDE, SHRINK_ABOVE, UPLOAD_QUALITY

# the page shrinks as the Python client does (search/images/upload.py): longest side, JPEG
# quality, and only photos whose longest side passes BROWSER_SIDE by SHRINK_ABOVE
BROWSER_SIDE = QUERY_SIDE
BROWSER_QUALITY = UPLOAD_QUALITY / 100
BUSY_CLASS = "vsearch-busy"  # on the photo input while its search runs (preview_css)

_JS = """
() => {
  const cfg = __CONFIG__;
  const TYPES = ['image/jpeg', 'image/png', 'image/webp'];
  const LOOPBACK = ['127.0.0.1', 'localhost', '[::1]'];
  const BUSY = __BUSY__;
  const header = (file) => new Promise((resolve) => {
    // an <img> knows its size from the header; it is not decoded until it is drawn
    const url = URL.createObjectURL(file);
    const img = new Image();
    img.onload = () => { URL.revokeObjectURL(url); resolve([img.naturalWidth, img.naturalHeight]); };
    img.onerror = () => { URL.revokeObjectURL(url); resolve(null); };
    img.src = url;
  });
  const shrink = async (file) => {
    if (!TYPES.includes(file.type) || file.size > cfg.maxBytes) return null;
    const size = await header(file);
    if (!size) return null;
    const [w, h] = size;
    if (w * h > cfg.maxPixels || Math.max(w, h) <= cfg.side * cfg.above) return null;
    const k = cfg.side / Math.max(w, h);
    const tw = Math.max(1, Math.round(w * k)), th = Math.max(1, Math.round(h * k));
    const bmp = await createImageBitmap(file, {resizeWidth: tw, resizeHeight: th,
                                               resizeQuality: 'high'});
    const canvas = document.createElement('canvas');
    canvas.width = bmp.width; canvas.height = bmp.height;
    canvas.getContext('2d').drawImage(bmp, 0, 0);
    bmp.close();
    const blob = await new Promise((r) => canvas.toBlob(r, 'image/jpeg', cfg.quality));
    if (!blob) return null;
    const name = file.name.replace(/\\.[^.]*$/, '') + '.jpg';
    const out = new File([blob], name, {type: 'image/jpeg', lastModified: file.lastModified});
    return Object.assign(out, {width: canvas.width, height: canvas.height});
  };
  document.addEventListener('change', (ev) => {
    const input = ev.target;
    if (!(input instanceof HTMLInputElement) || input.type !== 'file') return;
    if (!input.closest(cfg.selector) || input.dataset.vsearchShrunk === '1') {
      delete input.dataset.vsearchShrunk;
      return;
    }
    const file = input.files && input.files[0];
    if (!file) return;
    input.closest(cfg.selector).classList.add(BUSY);  // preview hidden until the search ends
    if (LOOPBACK.includes(location.hostname) && !window.vsearchShrinkAlways) return;
    ev.stopImmediatePropagation();  // Gradio gets the event again, with the photo to send
    const t0 = performance.now();
    shrink(file).catch(() => null).then((small) => {
      if (small) {
        const dt = new DataTransfer();
        dt.items.add(small);
        input.files = dt.files;
        window.vsearchShrink = {from: file.size, to: small.size, width: small.width,
                                height: small.height, ms: performance.now() - t0};
      }
      input.dataset.vsearchShrunk = '1';
      input.dispatchEvent(new Event('change', {bubbles: true}));
    });
  }, true);
}
"""


def shrink_js(
    max_pixels: int,
    max_bytes: int,
    *,
    selector: str = "#query",
    side: int = BROWSER_SIDE,
    quality: float = BROWSER_QUALITY,
) -> str:
    """The page-load script that shrinks big photos chosen in ``selector``'s file input."""
    cfg = {
        "selector": selector,
        "side": side,
        "above": SHRINK_ABOVE,
        "quality": quality,
        "maxPixels": max_pixels,
        "maxBytes": max_bytes,
    }
    return _JS.replace("__CONFIG__", json.dumps(cfg)).replace("__BUSY__", json.dumps(BUSY_CLASS))


def preview_css(selector: str = "#query") -> str:
    """While a chosen photo is being searched, its upload preview is not drawn: the browser
    would decode every pixel of a 12 MP photo for a preview replaced a moment later (by the
    crop tool), on the cores the search needs when the page runs on the server's machine."""
    return f"{selector}.{BUSY_CLASS} .image-frame img {{ display: none !important; }}\n"


def search_done_js(selector: str = "#query") -> str:
    """Runs when the photo's search has ended, answered or refused: the preview is drawn
    again (a refused photo stays visible in the upload box beside its message)."""
    target, busy = json.dumps(selector), json.dumps(BUSY_CLASS)
    return f"() => {{ document.querySelector({target})?.classList.remove({busy}); }}"
