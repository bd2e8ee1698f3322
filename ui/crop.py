"""The crop tool: the shopper's photo with a box drawn by dragging (mouse, pen or finger).

The photo is shown reduced (an inlined JPEG, no file on the server); the box is kept in
0..1 fractions of the photo, so the server crops its own copy of the photo at any size.
The "Search the cropped region" button reads the box from the page (:data:`READ_BOX_JS`).
"""

from __future__ import annotations

from PIL import Image

from .images import data_uri

STAGE_PX = 640  # the photo shown in the crop tool (longest side)

CSS = """
.crop-stage { position: relative; display: inline-block; max-width: 100%; overflow: hidden;
  touch-action: none; user-select: none; -webkit-user-select: none; }
.crop-stage img { display: block; max-width: 100%; max-height: 360px; cursor: crosshair; }
.crop-box { position: absolute; border: 2px solid #2563eb; background: rgba(37,99,235,0.15);
  box-shadow: 0 0 0 9999px rgba(0,0,0,0.35); pointer-events: none; }
.crop-hint { font-size: 0.9rem; color: #555; margin: 4px 0; }
"""

# Drag on the photo to draw the box; the box is kept on the stage (data-box) as
# "x0,y0,x1,y1" fractions. Pointer events cover mouse, pen and touch.
JS_ON_LOAD = """
let start = null;
const stage = () => element.querySelector('.crop-stage');
const frac = (ev, img) => {
  const r = img.getBoundingClientRect();
  return [Math.min(1, Math.max(0, (ev.clientX - r.left) / r.width)),
          Math.min(1, Math.max(0, (ev.clientY - r.top) / r.height))];
};
const draw = (a, b) => {
  const s = stage(); if (!s) return;
  const box = s.querySelector('.crop-box');
  const x0 = Math.min(a[0], b[0]), y0 = Math.min(a[1], b[1]);
  const x1 = Math.max(a[0], b[0]), y1 = Math.max(a[1], b[1]);
  box.style.left = (x0 * 100) + '%'; box.style.top = (y0 * 100) + '%';
  box.style.width = ((x1 - x0) * 100) + '%'; box.style.height = ((y1 - y0) * 100) + '%';
  box.hidden = false;
  s.dataset.box = [x0, y0, x1, y1].map(v => v.toFixed(4)).join(',');
};
element.addEventListener('pointerdown', (ev) => {
  const img = ev.target.closest('.crop-stage img'); if (!img) return;
  ev.preventDefault();
  start = frac(ev, img);
  img.setPointerCapture && img.setPointerCapture(ev.pointerId);
});
element.addEventListener('pointermove', (ev) => {
  if (!start) return;
  const img = element.querySelector('.crop-stage img'); if (!img) return;
  draw(start, frac(ev, img));
});
element.addEventListener('pointerup', (ev) => {
  if (!start) return;
  const img = element.querySelector('.crop-stage img');
  if (img) draw(start, frac(ev, img));
  start = null;
});
"""

# Runs in the browser before the crop search: the last input (a hidden textbox) gets the box.
READ_BOX_JS = """
(...args) => {
  const s = document.querySelector('#crop .crop-stage');
  args[args.length - 1] = (s && s.dataset.box) || '';
  return args;
}
"""


def stage_html(photo: Image.Image | None) -> str:
    """The crop tool's HTML for ``photo`` (empty when there is no photo)."""
    if photo is None:
        return ""
    shown = photo.copy()
    shown.thumbnail((STAGE_PX, STAGE_PX))
    return (
        '<p class="crop-hint">Drag over the product you want, then '
        "<b>Search the cropped region</b>.</p>"
        f'<div class="crop-stage"><img src="{data_uri(shown, 85)}" alt="your photo" '
        'draggable="false"><div class="crop-box" hidden></div></div>'
    )


def crop_fraction(photo: Image.Image, box: tuple[float, float, float, float]) -> Image.Image:
    """The region of ``photo`` inside ``box`` (fractions of its width and height)."""
    w, h = photo.size
    x0, y0, x1, y1 = box
    left, top = round(x0 * w), round(y0 * h)
    right, bottom = max(left + 1, round(x1 * w)), max(top + 1, round(y1 * h))
    return photo.crop((left, top, right, bottom))
