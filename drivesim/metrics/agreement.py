"""Benchmark validity: do two engines (the world-model or the kinematic engine against the kinematic or
the truth engine, `drivesim bench --compare`) rank planners alike?

Both engines score the same P planners on the same N scenarios, giving two (P, N) arrays of
per-scenario PDMS. The point estimates are Kendall's tau-b and Spearman's rho between the
per-planner mean PDMS under each engine; their uncertainty is a percentile bootstrap over
scenarios. Each resample draws one set of scenario indices and applies it to both engines and
every planner, so the interval reflects how the ranking would move with a different scenario
set, not independent noise per planner.

Plain numpy: these are a handful of planners and a few thousand scenarios, scored after the
(jitted) rollouts are done.
"""

from __future__ import annotations

import numpy as np

_CHUNK = 256  # resamples per block: bounds the (chunk, N) count matrix


def _tau_b(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Kendall's tau-b over the last axis.

    Args:
      x, y: (..., P) scores of P planners.

    Returns:
      (...,) tau-b: sum over pairs of sign(dx) * sign(dy), divided by the geometric mean of the
      number of pairs untied in x and untied in y. NaN where either side has no untied pair.
    """
    i, j = np.triu_indices(x.shape[-1], k=1)
    sx = np.sign(x[..., i] - x[..., j])
    sy = np.sign(y[..., i] - y[..., j])
    denom = np.sqrt(np.abs(sx).sum(-1) * np.abs(sy).sum(-1))
    num = (sx * sy).sum(-1)
    safe = denom > 0
    return np.where(safe, num / np.where(safe, denom, 1.0), np.nan)


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks over the last axis, ties given their average rank (as scipy.stats.rankdata does).

    Pairwise counting, O(P^2): P is a handful of planners, and it vectorises over resamples.
    """
    below = (x[..., None, :] < x[..., :, None]).sum(-1)
    equal = (x[..., None, :] == x[..., :, None]).sum(-1)  # includes itself
    return below + (equal + 1) / 2


def _rho(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman's rho over the last axis: Pearson correlation of average ranks. NaN if a side is constant."""
    rx = _average_ranks(x)
    ry = _average_ranks(y)
    rx = rx - rx.mean(-1, keepdims=True)
    ry = ry - ry.mean(-1, keepdims=True)
    denom = np.sqrt((rx * rx).sum(-1) * (ry * ry).sum(-1))
    safe = denom > 0
    return np.where(safe, (rx * ry).sum(-1) / np.where(safe, denom, 1.0), np.nan)


def _paired(a, b) -> tuple[np.ndarray, np.ndarray] | None:
    """1-D float copies of a and b, or None when a rank correlation is undefined (fewer than 2, non-finite)."""
    a = np.asarray(a, dtype=float).ravel()
    b = np.asarray(b, dtype=float).ravel()
    if a.shape != b.shape:
        raise ValueError(f"rank correlation needs one score per planner on each side; got {a.shape} and {b.shape}")
    if a.size < 2 or not (np.isfinite(a).all() and np.isfinite(b).all()):
        return None
    return a, b


def kendall_tau(a, b) -> float:
    """Kendall's tau-b between two per-planner score vectors (ties handled as tau-b).

    NaN for fewer than 2 planners, non-finite scores, or a constant side.
    """
    ab = _paired(a, b)
    return float("nan") if ab is None else float(_tau_b(*ab))


def spearman_rho(a, b) -> float:
    """Spearman's rho (ties given average ranks) between two per-planner score vectors.

    NaN for fewer than 2 planners, non-finite scores, or a constant side.
    """
    ab = _paired(a, b)
    return float("nan") if ab is None else float(_rho(*ab))


def _interval(samples: np.ndarray, level: float) -> list[float]:
    """Percentile interval over axis 0, skipping resamples where the statistic is undefined (NaN).

    A resample whose planner means tie completely has no ranking; it says nothing about how the
    two rankings agree, so it is dropped rather than counted as disagreement.
    """
    ok = samples[np.isfinite(samples)]
    if ok.size == 0:
        return [float("nan"), float("nan")]
    lo, hi = np.percentile(ok, [100 * (1 - level) / 2, 100 * (1 + level) / 2])
    return [float(lo), float(hi)]


def _bootstrap_means(scores: np.ndarray, resamples: int, seed: int):
    """Yield (P_total, chunk) means of `scores` (P_total, N) over blocks of bootstrap resamples.

    Every row shares the same resampled scenario indices; the indices are turned into per-scenario
    counts so each block is one matrix product instead of a (P, chunk, N) gather.
    """
    n = scores.shape[1]
    rng = np.random.default_rng(seed)
    for start in range(0, resamples, _CHUNK):
        c = min(_CHUNK, resamples - start)
        idx = rng.integers(0, n, size=(c, n))
        counts = np.bincount((idx + n * np.arange(c)[:, None]).ravel(), minlength=c * n).reshape(c, n)
        yield scores @ counts.T.astype(float) / n


def agreement(
    scores_wm: np.ndarray,
    scores_ref: np.ndarray,
    names: list[str],
    resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict:
    """Rank agreement between the world-model engine and the reference engine.

    Args:
      scores_wm: (P, N) per-scenario PDMS of P planners on N scenarios under the world-model engine.
      scores_ref: (P, N) the same planners and scenarios, in the same order, under the reference engine.
      names: the P planner names, in row order.
      resamples: bootstrap resamples of the scenarios.
      seed: seed of the bootstrap.
      level: confidence level of the percentile intervals.

    Returns:
      {"kendall_tau", "kendall_tau_ci": [lo, hi], "spearman_rho", "spearman_rho_ci": [lo, hi],
       "planners": {name: {"pdms", "pdms_reference", "pdms_gap", "pdms_gap_ci": [lo, hi]}},
       "max_abs_gap", "resamples", "scenarios"}. "pdms" is the mean under the world model and
      "pdms_gap" is world model minus reference. tau / rho are NaN (and their intervals too) when
      they are undefined: fewer than 2 planners or a constant side.
    """
    wm = np.asarray(scores_wm, dtype=float)
    ref = np.asarray(scores_ref, dtype=float)
    if wm.shape != ref.shape:
        raise ValueError(
            f"scores_wm has shape {wm.shape} but scores_ref has shape {ref.shape}; both must be "
            "(planners, scenarios) over the same planners and scenarios"
        )
    if wm.ndim != 2 or wm.shape[1] == 0:
        raise ValueError(f"scores must be (planners, scenarios) with at least one scenario; got shape {wm.shape}")
    names = list(names)
    if len(names) != wm.shape[0]:
        raise ValueError(f"got {len(names)} planner names for scores of shape {wm.shape} ({wm.shape[0]} planners)")
    if len(set(names)) != len(names):
        raise ValueError(f"planner names must be unique; got {names}")
    if not (np.isfinite(wm).all() and np.isfinite(ref).all()):
        raise ValueError("scores contain NaN or inf; score failed scenarios (e.g. 0, as the benchmark does) first")
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1; got {resamples}")
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1); got {level}")

    p, n = wm.shape
    mean_wm, mean_ref = wm.mean(1), ref.mean(1)
    taus, rhos, gaps = [], [], []
    for means in _bootstrap_means(np.concatenate([wm, ref]), resamples, seed):
        m_wm, m_ref = means[:p].T, means[p:].T  # (chunk, P)
        if p >= 2:
            taus.append(_tau_b(m_wm, m_ref))
            rhos.append(_rho(m_wm, m_ref))
        gaps.append(m_wm - m_ref)
    gaps = np.concatenate(gaps)  # (resamples, P)
    nan_ci = [float("nan"), float("nan")]
    gap = mean_wm - mean_ref
    return {
        "kendall_tau": kendall_tau(mean_wm, mean_ref),
        "kendall_tau_ci": _interval(np.concatenate(taus), level) if taus else nan_ci,
        "spearman_rho": spearman_rho(mean_wm, mean_ref),
        "spearman_rho_ci": _interval(np.concatenate(rhos), level) if rhos else nan_ci,
        "planners": {
            name: {
                "pdms": float(mean_wm[k]),
                "pdms_reference": float(mean_ref[k]),
                "pdms_gap": float(gap[k]),
                "pdms_gap_ci": _interval(gaps[:, k], level),
            }
            for k, name in enumerate(names)
        },
        "max_abs_gap": float(np.abs(gap).max()),
        "resamples": int(resamples),
        "scenarios": int(n),
    }
