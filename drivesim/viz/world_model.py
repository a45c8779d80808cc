"""Terminal tables of a world-model evaluation (the report `drivesim eval-wm` writes)."""

from __future__ import annotations

from rich.table import Table

METHODS = {
    "model": "model (free-running)",
    "model_layout": "model (layout-guided)",
    "copy_last": "copy-last",
    "const_velocity": "constant velocity",
    "ego_warp": "ego warp (reprojection, no learning)",
    "camera_refiner": "camera refiner (constant-velocity boxes)",
    "camera_refiner_guided": "camera refiner (true boxes, guided)",
    "reconstruction": "tokenizer reconstruction (ceiling)",
}
HORIZONS = ("1s", "2s", "3s")


def _fmt(v, digits: int = 3) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def forecast_table(report: dict) -> Table:
    """One row per method: occupancy IoU, mIoU, agent IoU, PSNR, SSIM at 1, 2 and 3 s."""
    t = Table(title=f"forecasts on {report['clips']} clips of {report['scenes']} scenes (at 1 / 2 / 3 s)")
    t.add_column("method")
    for name in ("occ IoU", "occ mIoU", "agent IoU", "PSNR dB", "SSIM"):
        t.add_column(name, justify="right")
    for key, label in METHODS.items():
        if key not in report:
            continue
        r = report[key]
        cells = []
        for metric, digits in (("occ_iou", 3), ("occ_miou", 3), ("agent_iou", 3), ("psnr", 2), ("ssim", 3)):
            cells.append(" / ".join(_fmt(r[metric][h], digits) for h in HORIZONS) if metric in r else "-")
        t.add_row(label, *cells)
    return t


def probe_table(report: dict) -> Table | None:
    """The perception probe's reads of each method's frames, scored against the true BEV."""
    rows = [
        (k, v) for k, v in {**METHODS, "true_frames": "true frames"}.items() if "probe_agent_iou" in report.get(k, {})
    ]
    if not rows:
        return None
    t = Table(title="perception probe on the frames (agent / drivable IoU against the true BEV, at 1 / 2 / 3 s)")
    t.add_column("frames")
    t.add_column("probe agent IoU", justify="right")
    t.add_column("probe drivable IoU", justify="right")
    for key, label in rows:
        r = report[key]
        t.add_row(
            label, *(" / ".join(_fmt(r[m][h]) for h in HORIZONS) for m in ("probe_agent_iou", "probe_drivable_iou"))
        )
    return t


def targets_table(report: dict) -> Table:
    """The acceptance targets of the free-running model with the measured values."""
    t = Table(title="targets (free-running model, held-out scenes)")
    t.add_column("target")
    t.add_column("measured", justify="right")
    t.add_column("met", justify="center")
    values, met = report["targets"]["values"], report["targets"]["met"]
    for name, value in values.items():
        if isinstance(value, dict):
            text = "  ".join(f"{h}: {_fmt(a, 2)} vs {_fmt(b, 2)}" for h, (a, b) in value.items())
        elif isinstance(value, list):
            text = f"{_fmt(value[0])} vs {_fmt(value[1])}"
        else:
            text = _fmt(value)
        t.add_row(name, text, "[green]yes[/green]" if met[name] else "[red]no[/red]")
    return t


def controllability_table(report: dict) -> Table | None:
    c = report.get("controllability", {})
    if "per_edit" not in c:
        return None
    t = Table(title="controllability: generation under ego edits vs the world's re-simulation (3 s)")
    t.add_column("ego actions")
    for name in (
        "cases",
        "effective",
        "occ IoU",
        "IoU layout",
        "IoU if action ignored",
        "PSNR dB",
        "displ. err m",
        "well-posed",
    ):
        t.add_column(name, justify="right")
    for case, r in c["per_edit"].items():
        t.add_row(
            case, str(r["cases"]), str(r["effective_cases"]) if case != "logged" else "-", _fmt(r["occ_iou"]), _fmt(r["occ_iou_layout"]),
            _fmt(r["occ_iou_if_action_ignored"]), _fmt(r["psnr"], 2),
            f"{_fmt(r['displacement_error_3s_m'], 2)} ({_fmt(r['displacement_error_3s_m_well_posed'], 2)})",
            str(r["well_posed_cases"]),
        )  # fmt: skip
    return t


def eval_tables(report: dict) -> list[Table]:
    tables = [forecast_table(report)]
    if probe_table(report) is not None:
        tables.append(probe_table(report))
    tables.append(targets_table(report))
    ctrl = controllability_table(report)
    if ctrl is not None:
        tables.append(ctrl)
    return tables
