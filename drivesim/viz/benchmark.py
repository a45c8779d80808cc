"""Benchmark outputs: the leaderboard table, results.json / results.csv, and the plots."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from drivesim.atomic import write_json  # noqa: E402
from drivesim.data.classes import OCC_COLORS  # noqa: E402
from drivesim.provenance import provenance  # noqa: E402

METRICS = ("nc", "dac", "ttc", "ep", "c", "pdms")
EPDMS_METRICS = ("ddc", "tlc", "lk", "hc", "ec", "epdms")


def leaderboard(results: dict):
    """A rich Table of the planners, best first by the headline score (PDMS or EPDMS), with both
    scores and every term of each (CLS is in results.json and the CSV)."""
    from rich import box
    from rich.table import Table

    head = results.get("score", "pdms")  # results written before --score: PDMS
    other_score = "epdms" if head == "pdms" else "pdms"
    t = Table(
        title=f"closed-loop benchmark ({results['engine']} engine, {results['agents']} agents, "
        f"{results['config']['scenarios']} scenarios)",
        box=box.SIMPLE_HEAD, padding=(0, 0), pad_edge=False,
    )  # fmt: skip
    t.add_column("#", justify="right")
    t.add_column("planner", no_wrap=True)
    t.add_column(head.upper(), justify="right", min_width=5)
    t.add_column("95% CI", justify="right", no_wrap=True, min_width=11)
    has_other = all(other_score in p for p in results["planners"].values())
    if has_other:
        t.add_column(other_score.upper(), justify="right", min_width=5)
    terms = ["nc", "dac", "ttc", "ep", "c"]
    if all("epdms" in p for p in results["planners"].values()):
        terms += ["ddc", "tlc", "lk", "hc", "ec"]
    for k in terms:
        t.add_column(k.upper(), justify="right", min_width=4)
    t.add_column("fail", justify="right")
    wm = results["engine"] == "world-model"
    ref = "agreement" in results
    if wm:
        t.add_column("worst", justify="right", min_width=5)
    other = results.get("compare", "kinematic")  # results written before --compare: the kinematic engine
    if ref:
        t.add_column(f"{other}", justify="right", min_width=5)
        t.add_column("gap", justify="right", min_width=6)

    def num(v, digits=3):
        return "n/a" if v is None else f"{v:.{digits}f}"

    for i, name in enumerate(results["ranking"]):
        p = results["planners"][name]
        lo, hi = p[f"{head}_ci"]
        extra = [num(p.get(f"{head}_worst"))] if wm else []
        if ref:
            extra += [num(p[f"{head}_reference"]), f"{p[f'{head}_gap']:+.3f}"]
        t.add_row(
            str(i + 1), name, num(p[head]), f"{lo:.3f}-{hi:.3f}", *([num(p[other_score])] if has_other else []),
            *(num(p[k], 2) for k in terms), str(p["failures"]), *extra,
        )  # fmt: skip
    notes = []
    if ref:
        a = results["agreement"]
        notes.append(
            f"rank agreement ({head.upper()}) with the {other} engine: Kendall tau {a['kendall_tau']:.3f} "
            f"[{a['kendall_tau_ci'][0]:.3f}, {a['kendall_tau_ci'][1]:.3f}], Spearman rho {a['spearman_rho']:.3f} "
            f"[{a['spearman_rho_ci'][0]:.3f}, {a['spearman_rho_ci'][1]:.3f}]; largest |gap| {a['max_abs_gap']:.3f}"
        )
    if any(p.get("tlc", 0) is None for p in results["planners"].values()):
        notes.append("TLC n/a: the data has no traffic-light states (real nuScenes); EPDMS counts TLC as 1")
    if notes:
        t.caption = "\n".join(notes)
    return t


def write_results(results: dict, out: Path) -> list[Path]:
    """results.json and results.csv (per-scenario rows, then one aggregate row per planner).

    results.json carries the provenance block (of this run unless `results` brings its own).
    """
    out.mkdir(parents=True, exist_ok=True)
    public = {k: v for k, v in results.items() if not k.startswith("_")}
    config = results.get("config", {})
    if "provenance" not in public:
        public["provenance"] = provenance(
            checkpoint=config.get("checkpoint"), dataroot=config.get("dataroot"), version=config.get("version")
        )
    write_json(out / "results.json", public)
    cols = ["planner", "scene", "t0", "tags", "status", "reason", "pdms", "nc", "dac", "ttc", "ep", "c", "cls",
            "epdms", "ddc", "tlc", "lk", "hc", "ec", "ego_progress", "expert_progress"]  # fmt: skip
    tmp = out / ".results.csv.tmp"
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        for row in results["scenarios"]:
            w.writerow({**row, "tags": "|".join(row["tags"])})
        for name, p in results["planners"].items():
            w.writerow({"planner": name, "scene": "ALL", "t0": "", "tags": "", "status": f"n={p['n']}",
                        "reason": f"pdms_ci={p['pdms_ci'][0]:.4f}..{p['pdms_ci'][1]:.4f}",
                        **{k: p[k] for k in ("pdms", "nc", "dac", "ttc", "ep", "c", "cls", "epdms", "ddc", "tlc",
                                             "lk", "hc", "ec") if k in p}})  # fmt: skip
    tmp.replace(out / "results.csv")
    return [out / "results.json", out / "results.csv"]


def _save(fig, path: Path) -> Path:
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(fig)
    tmp.replace(path)
    return path


def plot_metrics(results: dict, out: Path) -> Path:
    """Grouped bars: each sub-score and PDMS per planner (PDMS with its bootstrap interval)."""
    names = results["ranking"]
    metrics = METRICS
    if all("epdms" in results["planners"][n] for n in names):
        metrics = METRICS + EPDMS_METRICS
    fig, ax = plt.subplots(figsize=(max(7, 0.25 * len(metrics) * len(names) + 3), 4.2))
    width = 0.8 / len(metrics)
    x = np.arange(len(names))
    for j, m in enumerate(metrics):
        vals = [results["planners"][n][m] for n in names]
        vals = [np.nan if v is None else v for v in vals]  # TLC unknown
        err = None
        if m in ("pdms", "epdms"):
            ci = np.array([results["planners"][n][f"{m}_ci"] for n in names])
            err = np.abs(ci.T - np.array(vals))
        colour = plt.get_cmap("tab20")(j % 20)
        ax.bar(
            x + (j - len(metrics) / 2 + 0.5) * width, vals, width, yerr=err, capsize=2, label=m.upper(), color=colour
        )
    ax.set_xticks(x, names, rotation=20)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("score (mean over scenarios)")
    ax.legend(ncol=6, fontsize=8, loc="lower left")
    ax.set_title("sub-scores per planner (PDMS and EPDMS with 95% bootstrap intervals)")
    return _save(fig, out / "metrics.png")


def plot_distribution(results: dict, out: Path) -> Path:
    """PDMS over scenarios per planner."""
    names = results["ranking"]
    data = [[r["pdms"] for r in results["scenarios"] if r["planner"] == n] for n in names]
    fig, ax = plt.subplots(figsize=(max(7, 1.2 * len(names) + 2), 4))
    ax.boxplot(data, showmeans=True)
    for i, d in enumerate(data):
        ax.scatter(np.full(len(d), i + 1) + np.random.default_rng(i).uniform(-0.15, 0.15, len(d)), d, s=6, alpha=0.4)
    ax.set_xticks(np.arange(1, len(names) + 1), names, rotation=20)
    ax.set_ylabel("PDMS per scenario")
    ax.set_ylim(-0.05, 1.05)
    ax.set_title("PDMS distribution")
    return _save(fig, out / "pdms_distribution.png")


def plot_worst(results: dict, logs, scenarios, out: Path, per_planner: int = 2) -> Path:
    """BEV overlays of each planner's worst scenarios: map, route, expert and planner paths."""
    names = results["ranking"]
    kept = {(s.scene, s.t0): i for i, s in enumerate(scenarios)}
    panels = []
    for n in names:
        rows = [(r["pdms"], r["scene"], r["t0"]) for r in results["scenarios"] if r["planner"] == n]
        rows.sort()
        for pd, scene, t0 in rows[:per_planner]:
            panels.append((n, pd, kept[(scene, t0)], scene, t0))
    cols = min(4, len(panels))
    nrows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4 * cols, 4 * nrows), squeeze=False)
    palette = np.array(OCC_COLORS, np.uint8)
    order = {(s.scene, s.t0): j for j, s in enumerate(scenarios)}
    for ax, (name, pd, i, scene, t0) in zip(axes.ravel(), panels, strict=False):
        sc = scenarios[i]
        traces = results["_traces"][name]
        path = traces[order[(scene, t0)]]
        li = sc.log_index
        raster = np.asarray(logs.map.raster[li])
        origin = np.asarray(logs.map.raster_origin[li])
        res = float(np.asarray(logs.map.raster_resolution[li]))
        center = path[0]
        half = 45.0
        c0 = np.clip(((center - half - origin) / res).astype(int), 0, raster.shape[0] - 1)
        c1 = np.clip(((center + half - origin) / res).astype(int), 0, raster.shape[0] - 1)
        crop = raster[c0[1] : c1[1], c0[0] : c1[0]]
        extent = (origin[0] + c0[0] * res, origin[0] + c1[0] * res, origin[1] + c0[1] * res, origin[1] + c1[1] * res)
        ax.imshow(palette[crop], origin="lower", extent=extent)
        ego = np.asarray(logs.ego.xy[li])
        T = sc.horizon
        ax.plot(ego[sc.t0 : sc.t0 + T + 1, 0], ego[sc.t0 : sc.t0 + T + 1, 1], "g-", lw=2, label="expert (log)")
        ax.plot(path[:, 0], path[:, 1], "r-", lw=2, label=name)
        ag = np.asarray(logs.agents.xy[li])[:, sc.t0]
        ok = np.asarray(logs.agents.valid[li])[:, sc.t0]
        ax.scatter(ag[ok, 0], ag[ok, 1], s=12, c="b", label="agents at start")
        ax.set_xlim(center[0] - half, center[0] + half)
        ax.set_ylim(center[1] - half, center[1] + half)
        ax.set_title(f"{name}: {scene} t0={t0 / 10:.0f}s PDMS {pd:.2f}", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in axes.ravel()[len(panels) :]:
        ax.axis("off")
    axes.ravel()[0].legend(fontsize=7, loc="upper left")
    fig.suptitle("worst scenarios per planner (red: planner, green: expert)")
    return _save(fig, out / "worst_scenarios.png")
