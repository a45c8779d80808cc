"""Figures of generated futures: context, generation and truth, per camera view and BEV.

`forecast_figure` is the still `drivesim eval-wm` saves (keyframes left to right; for each view
and the BEV a row of truth and a row of generation); `prediction_frames` are the animation frames
`drivesim predict` writes (one frame per keyframe; a row per sample and one for the truth).
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from drivesim.data.classes import OCC_COLORS, OCC_DRIVABLE, OCC_VEHICLE
from drivesim.data.types import CAMERA_CHANNELS
from drivesim.viz.replay import LAYOUT

_PALETTE = np.array(OCC_COLORS, np.uint8)
_BG = (20, 20, 24)
_TEXT = (230, 230, 230)


def bev_image(grid: np.ndarray, size: int) -> Image.Image:
    """(G, G) occupancy classes -> an RGB image `size` px square (forward up, ego at the centre)."""
    img = Image.fromarray(_PALETTE[np.asarray(grid)]).resize((size, size), Image.NEAREST)
    draw = ImageDraw.Draw(img)
    c = size / 2
    s = size / 80 * 2.4
    draw.rectangle([c - s / 2.2, c - s, c + s / 2.2, c + s], outline=(0, 0, 0), fill=(30, 200, 30))
    return img


def forecast_figure(example: dict, scale: int = 2, title: str = "") -> Image.Image:
    """Context keyframes, then the generated future beside the truth, per view and BEV.

    example: context_images (H, 6, h, w, 3), context_bev (H, G, G), images / truth_images
    (F, 6, h, w, 3), bev / truth_bev (F, G, G) (what `evaluate_forecasts` returns).
    """
    ctx_i, ctx_b = np.asarray(example["context_images"]), np.asarray(example["context_bev"])
    gen_i, gen_b = np.asarray(example["images"]), np.asarray(example["bev"])
    tru_i, tru_b = np.asarray(example["truth_images"]), np.asarray(example["truth_bev"])
    H, F = len(ctx_i), len(gen_i)
    h, w = ctx_i.shape[2:4]
    cw, ch = w * scale, h * scale
    bev = cw
    label_w, head = 150, 40
    rows = []  # (label, images per column)
    for v, name in enumerate(CAMERA_CHANNELS):
        short = name.replace("CAM_", "").lower()
        rows.append((f"{short} truth", [ctx_i[k, v] for k in range(H)] + [tru_i[k, v] for k in range(F)], ch))
        rows.append((f"{short} generated", [None] * H + [gen_i[k, v] for k in range(F)], ch))
    rows.append(("BEV truth", [ctx_b[k] for k in range(H)] + [tru_b[k] for k in range(F)], bev))
    rows.append(("BEV generated", [None] * H + [gen_b[k] for k in range(F)], bev))
    height = head + sum(r[2] + 2 for r in rows)
    canvas = Image.new("RGB", (label_w + (H + F) * (cw + 2), height), _BG)
    draw = ImageDraw.Draw(canvas)
    draw.text((6, 4), title, fill=_TEXT)
    for k in range(H + F):
        t = (k - H + 1) * 0.5
        label = f"t0{t:+.1f}s" if k else f"t0{t:+.1f}s (context)"
        draw.text((label_w + k * (cw + 2) + 4, 22), label if k < H else f"t0+{t:.1f}s", fill=_TEXT)
    y = head
    for label, cells, size in rows:
        draw.text((6, y + size // 2 - 6), label, fill=_TEXT)
        for k, cell in enumerate(cells):
            if cell is None:
                continue
            x = label_w + k * (cw + 2)
            if cell.ndim == 3:
                canvas.paste(Image.fromarray(cell).resize((cw, ch), Image.BILINEAR), (x, y))
            else:
                canvas.paste(bev_image(cell, size), (x, y))
        y += size + 2
    return canvas


def probe_classes(logits) -> np.ndarray:
    """The perception probe's read (G, G, 2) logits (agent, drivable) as occupancy classes to draw
    with `bev_image`: agents as vehicles, drivable area as road, the rest free."""
    lg = np.asarray(logits)
    out = np.where(lg[..., 1] > 0, OCC_DRIVABLE, 0)
    return np.where(lg[..., 0] > 0, OCC_VEHICLE, out).astype(np.int32)


def _panel(images: np.ndarray, grid: np.ndarray, label: str, cam_w: int, read=None) -> Image.Image:
    """Six views (6, h, w, 3) in the nuScenes layout beside the BEV grid, with a label; with `read`
    ((G, G, 2) perception-probe logits of these views), the probe's BEV read beside it."""
    h, w = images.shape[1:3]
    cam_h = int(round(cam_w * h / w))
    order = {c: i for i, c in enumerate(CAMERA_CHANNELS)}
    size = 2 * cam_h
    extra = 0 if read is None else size + 4
    out = Image.new("RGB", (3 * cam_w + size + 4 + extra, size + 18), _BG)
    draw = ImageDraw.Draw(out)
    draw.text((4, 2), label, fill=_TEXT)
    for r, row in enumerate(LAYOUT):
        for c, ch in enumerate(row):
            out.paste(
                Image.fromarray(images[order[ch]]).resize((cam_w, cam_h), Image.BILINEAR), (c * cam_w, 18 + r * cam_h)
            )
    out.paste(bev_image(grid, size), (3 * cam_w + 4, 18))
    if read is not None:
        x = 3 * cam_w + size + 8
        out.paste(bev_image(probe_classes(read), size), (x, 18))
        draw.text((x + 2, 2), "probe's read of the views", fill=_TEXT)
    return out


def prediction_frames(
    context_images, context_bev, sample_images, sample_bev, truth_images=None, truth_bev=None, title="", cam_w=192,
    reads=None,
) -> list[Image.Image]:  # fmt: skip
    """Animation frames: the context keyframes, then each future keyframe with one row per
    sample (and a row of truth when given).

    context_images (H, 6, h, w, 3), context_bev (H, G, G); sample_images (K, F, 6, h, w, 3),
    sample_bev (K, F, G, G); truth_* (F, ...) or None. reads: the perception probe's logits of
    each panel's views, {"context": (H, G, G, 2), "samples": (K, F, ...), "truth": (F, ...) or
    None}, drawn beside each panel; None: no probe.
    """
    rd = reads or {}
    at = lambda key, *ix: None if rd.get(key) is None else rd[key][ix]  # noqa: E731
    H = len(context_images)
    K, F = np.asarray(sample_bev).shape[:2]
    frames = []
    for k in range(H + F):
        t = (k - H + 1) * 0.5
        if k < H:
            panels = [_panel(context_images[k], context_bev[k], f"context  t0{t:+.1f} s", cam_w, at("context", k))] * (
                K + (truth_bev is not None)
            )
        else:
            j = k - H
            panels = [
                _panel(
                    sample_images[i][j], sample_bev[i][j], f"sample {i + 1}  t0+{t:.1f} s", cam_w, at("samples", i, j)
                )
                for i in range(K)
            ]
            if truth_bev is not None:
                panels.append(_panel(truth_images[j], truth_bev[j], f"truth  t0+{t:.1f} s", cam_w, at("truth", j)))
        pw, ph = panels[0].size
        cols = 2 if len(panels) > 2 else len(panels)
        nrows = -(-len(panels) // cols)
        canvas = Image.new("RGB", (cols * (pw + 4), 24 + nrows * (ph + 4)), _BG)
        ImageDraw.Draw(canvas).text((6, 5), title, fill=_TEXT)
        for i, p in enumerate(panels):
            canvas.paste(p, ((i % cols) * (pw + 4), 24 + (i // cols) * (ph + 4)))
        frames.append(canvas)
    return frames
