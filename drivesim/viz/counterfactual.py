"""Figures of a counterfactual: the unedited and the edited generation beside the true
re-simulation, keyframe by keyframe (an animation) and as one still (BEV strips)."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from drivesim.viz.prediction import _BG, _TEXT, _panel, bev_image


def counterfactual_frames(cf, sample: int = 0, cam_w: int = 160) -> list[Image.Image]:
    """One frame per keyframe: unedited | edited | truth (when known) panels of six views + BEV
    (+ the perception probe's read of the views, where `cf.reads` has it)."""
    title = f"{cf.scene}  t0 = {cf.t0:g} s  edits: {' '.join(cf.edits) or 'none'}  ego: {cf.ego}"
    frames = []
    F = cf.edited_bev.shape[1]
    rd = getattr(cf, "reads", None) or {}
    at = lambda key, *ix: None if rd.get(key) is None else rd[key][ix]  # noqa: E731
    ctx = _panel(cf.context_images, cf.context_bev, "context  t0", cam_w, at("context"))
    n = 3 if cf.truth_bev is not None else 2
    for k in range(-1, F):
        if k < 0:
            panels = [ctx] * n
        else:
            t = (k + 1) / 2
            panels = [
                _panel(
                    cf.original_images[sample, k],
                    cf.original_bev[sample, k],
                    f"unedited (generated)  t0+{t:.1f} s",
                    cam_w,
                    at("original", sample, k),
                ),
                _panel(
                    cf.edited_images[sample, k],
                    cf.edited_bev[sample, k],
                    f"edited (generated)  t0+{t:.1f} s",
                    cam_w,
                    at("edited", sample, k),
                ),  # fmt: skip
            ]
            if cf.truth_bev is not None:
                panels.append(
                    _panel(
                        cf.truth_images[k],
                        cf.truth_bev[k],
                        f"edited (true re-simulation)  t0+{t:.1f} s",
                        cam_w,
                        at("truth", k),
                    )  # fmt: skip
                )
        pw, ph = panels[0].size
        canvas = Image.new("RGB", (len(panels) * (pw + 4), ph + 28), _BG)
        ImageDraw.Draw(canvas).text((6, 6), title, fill=_TEXT)
        for i, p in enumerate(panels):
            canvas.paste(p, (i * (pw + 4), 28))
        frames.append(canvas)
    return frames


def counterfactual_strip(cf, sample: int = 0, cell: int = 120) -> Image.Image:
    """BEV keyframes left to right; rows: unedited, edited, truth."""
    F = cf.edited_bev.shape[1]
    rows = [("unedited", cf.original_bev[sample]), ("edited", cf.edited_bev[sample])]
    if cf.truth_bev is not None:
        rows.append(("truth", cf.truth_bev))
    label_w, head = 80, 36
    canvas = Image.new("RGB", (label_w + (F + 1) * (cell + 2), head + len(rows) * (cell + 2)), _BG)
    draw = ImageDraw.Draw(canvas)
    draw.text((6, 4), f"{cf.scene}  t0 = {cf.t0:g} s  {' '.join(cf.edits) or 'no edits'}", fill=_TEXT)
    for k in range(F + 1):
        draw.text((label_w + k * (cell + 2) + 4, 20), "t0" if k == 0 else f"+{k / 2:.1f} s", fill=_TEXT)
    for r, (label, grids) in enumerate(rows):
        y = head + r * (cell + 2)
        draw.text((6, y + cell // 2 - 6), label, fill=_TEXT)
        canvas.paste(bev_image(np.asarray(cf.context_bev), cell), (label_w, y))
        for k in range(F):
            canvas.paste(bev_image(np.asarray(grids[k]), cell), (label_w + (k + 1) * (cell + 2), y))
    return canvas


def agents_table(rows: list[dict], scene: str, t0: float):
    """A rich table of `drivesim.sim.edits.list_agents` rows (what `--list-agents` prints)."""
    from rich.table import Table

    t = Table(title=f"agents of {scene} at t0 = {t0:g} s (ego frame: x forward, y left)")
    for c in ("slot", "token", "category", "x", "y", "yaw", "speed", "present"):
        t.add_column(c, justify="right" if c in ("slot", "x", "y", "yaw", "speed") else "left")
    for r in rows:
        t.add_row(*(f"{r[k]:.1f}" if isinstance(r[k], float) else str(r[k]) for k in r))
    return t


def counterfactual_table(summary: dict):
    """Scores of the ego unedited / edited (world model, mean and worst over futures; reference
    engine) and the fidelity of the edited generation against the truth."""
    from rich.table import Table

    keys = ("pdms", "nc", "dac", "ttc", "ep", "c")
    t = Table(title=f"{summary['scene']} t0 = {summary['t0']:g} s, edits: {' '.join(summary['edits']) or 'none'}, "
              f"ego: {summary['ego']} ({summary['samples']} futures)")  # fmt: skip
    t.add_column("ego scores")
    for k in keys:
        t.add_column(k.upper(), justify="right")
    sc = summary["scores"]
    for name, label in (("original", "unedited, world model"), ("edited", "edited, world model")):
        t.add_row(f"{label} (mean)", *(f"{sc[name][k]['mean']:.3f}" for k in keys))
        t.add_row(f"{label} (worst)", *(f"{sc[name][k]['worst']:.3f}" for k in keys))
    t.add_row("edited, reference engine", *(f"{sc['edited_reference'][k]:.3f}" for k in keys))
    fid = summary.get("fidelity")
    if fid:
        t.caption = "fidelity vs the true re-simulation: " + ", ".join(
            f"{k}: IoU {v['occ_iou']:.3f} / agents {v['agent_iou']:.3f} / PSNR {v['psnr']:.1f} dB"
            for k, v in fid.items()
        )
    return t
