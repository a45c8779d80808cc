"""Rank agreement between two engines: hand-computed values, scipy as an independent check, bootstrap habits."""

import math

import numpy as np
import pytest
from scipy import stats

from drivesim.metrics.agreement import agreement, kendall_tau, spearman_rho

NAMES4 = ["a", "b", "c", "d"]


def _scores(means, n, noise, seed):
    """(P, n) per-scenario scores whose rows have exactly the given means."""
    rng = np.random.default_rng(seed)
    e = rng.standard_normal((len(means), n)) * noise
    return np.asarray(means, float)[:, None] + e - e.mean(1, keepdims=True)


def test_hand_computed_example():
    # Planners b and c swap places; the other five pairs agree: C = 5, D = 1 -> tau = (5 - 1) / 6.
    # Ranks differ by d = (0, 1, -1, 0): rho = 1 - 6 * sum(d^2) / (n (n^2 - 1)) = 1 - 12 / 60.
    wm, ref = [0.1, 0.2, 0.3, 0.4], [0.1, 0.3, 0.2, 0.4]
    assert kendall_tau(wm, ref) == pytest.approx(2 / 3)
    assert spearman_rho(wm, ref) == pytest.approx(0.8)
    # tau-b with a tie on one side: 5 concordant pairs, 5 untied pairs in wm, 6 in ref -> 5 / sqrt(30)
    assert kendall_tau([1, 1, 2, 3], [1, 2, 3, 4]) == pytest.approx(5 / math.sqrt(30))
    # ranks (1.5, 1.5, 3, 4) against (1, 2, 3, 4): Pearson of the ranks
    r = np.array([1.5, 1.5, 3, 4]) - 2.5
    s = np.array([1, 2, 3, 4]) - 2.5
    assert spearman_rho([1, 1, 2, 3], [1, 2, 3, 4]) == pytest.approx(r @ s / math.sqrt((r @ r) * (s @ s)))

    res = agreement(_scores(wm, 30, 0.05, 0), _scores(ref, 30, 0.05, 1), NAMES4, resamples=200)
    assert res["kendall_tau"] == pytest.approx(2 / 3)
    assert res["spearman_rho"] == pytest.approx(0.8)
    assert res["planners"]["b"]["pdms"] == pytest.approx(0.2)
    assert res["planners"]["b"]["pdms_reference"] == pytest.approx(0.3)
    assert res["planners"]["b"]["pdms_gap"] == pytest.approx(-0.1)
    assert res["planners"]["c"]["pdms_gap"] == pytest.approx(0.1)
    assert res["max_abs_gap"] == pytest.approx(0.1)
    assert res["resamples"] == 200 and res["scenarios"] == 30


def test_matches_scipy_with_ties():
    rng = np.random.default_rng(7)
    for _ in range(100):
        p = int(rng.integers(2, 9))
        a, b = rng.integers(0, 4, p).astype(float), rng.integers(0, 4, p).astype(float)
        if np.ptp(a) == 0 or np.ptp(b) == 0:
            continue
        assert kendall_tau(a, b) == pytest.approx(stats.kendalltau(a, b).statistic)
        assert spearman_rho(a, b) == pytest.approx(stats.spearmanr(a, b).statistic)


def test_undefined_is_nan():
    for f in (kendall_tau, spearman_rho):
        assert math.isnan(f([0.5], [0.7]))
        assert math.isnan(f([], []))
        assert math.isnan(f([0.5, 0.5, 0.5], [0.1, 0.2, 0.3]))
        assert math.isnan(f([0.1, 0.2, 0.3], [0.4, 0.4, 0.4]))
        assert math.isnan(f([0.1, np.nan, 0.3], [0.1, 0.2, 0.3]))
    one = agreement(np.full((1, 5), 0.8), np.full((1, 5), 0.6), ["only"], resamples=50)
    assert math.isnan(one["kendall_tau"]) and all(math.isnan(x) for x in one["kendall_tau_ci"])
    assert one["planners"]["only"]["pdms_gap"] == pytest.approx(0.2)


def test_identical_ranking_is_one():
    wm = _scores([0.2, 0.4, 0.6, 0.8], 50, 0.02, 3)
    res = agreement(wm, wm - 0.1, NAMES4, resamples=300)  # every planner 0.1 worse under the reference
    assert res["kendall_tau"] == 1.0 and res["spearman_rho"] == 1.0
    assert res["kendall_tau_ci"] == [1.0, 1.0] and res["spearman_rho_ci"] == [1.0, 1.0]
    for p in res["planners"].values():
        assert p["pdms_gap"] == pytest.approx(0.1)
        # the same scenarios are drawn for both engines, so a constant offset has a zero-width interval
        assert p["pdms_gap_ci"] == pytest.approx([0.1, 0.1])


def test_reversed_ranking_is_minus_one():
    wm = _scores([0.2, 0.4, 0.6, 0.8], 50, 0.02, 4)
    res = agreement(wm, 1.0 - wm, NAMES4, resamples=300)
    assert res["kendall_tau"] == -1.0 and res["spearman_rho"] == -1.0
    assert res["kendall_tau_ci"] == [-1.0, -1.0] and res["spearman_rho_ci"] == [-1.0, -1.0]


def test_resamples_share_scenarios_across_planners():
    # Scenario difficulty swamps the planner difference, but b beats a by 0.1 on every scenario. With the
    # same resampled scenarios for all planners, b stays ahead in every resample under both engines.
    x = np.random.default_rng(5).standard_normal(40)
    wm = np.stack([x, x + 0.1])
    res = agreement(wm, wm + 0.2, ["a", "b"], resamples=500)
    assert res["kendall_tau_ci"] == [1.0, 1.0]
    assert res["planners"]["a"]["pdms_gap_ci"] == pytest.approx([-0.2, -0.2])


def test_ci_contains_estimate_and_narrows_with_more_scenarios():
    means_wm = [0.50, 0.55, 0.60, 0.65, 0.70]
    means_ref = [0.52, 0.54, 0.63, 0.66, 0.69]
    names = list("abcde")
    widths = {}
    for n in (40, 640):
        res = agreement(_scores(means_wm, n, 0.3, n), _scores(means_ref, n, 0.3, n + 1), names, resamples=400, seed=1)
        for key in ("kendall_tau", "spearman_rho"):
            lo, hi = res[f"{key}_ci"]
            assert lo <= res[key] <= hi, (n, key, res[key], lo, hi)
        for p in res["planners"].values():
            lo, hi = p["pdms_gap_ci"]
            assert lo < p["pdms_gap"] < hi
        widths[n] = {
            "tau": np.diff(res["kendall_tau_ci"])[0],
            "rho": np.diff(res["spearman_rho_ci"])[0],
            "gap": np.mean([np.diff(p["pdms_gap_ci"])[0] for p in res["planners"].values()]),
        }
    assert widths[640]["tau"] < widths[40]["tau"]
    assert widths[640]["rho"] < widths[40]["rho"]
    assert widths[640]["gap"] < 0.4 * widths[40]["gap"]  # 1 / sqrt(16) = 0.25 in theory


def test_seeded_and_reproducible():
    wm, ref = _scores([0.3, 0.5, 0.7], 30, 0.3, 8), _scores([0.4, 0.45, 0.6], 30, 0.3, 9)
    a = agreement(wm, ref, ["x", "y", "z"], resamples=200, seed=2)
    assert a == agreement(wm, ref, ["x", "y", "z"], resamples=200, seed=2)
    assert a != agreement(wm, ref, ["x", "y", "z"], resamples=200, seed=3)


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match=r"\(3, 10\).*\(3, 11\)"):
        agreement(np.zeros((3, 10)), np.zeros((3, 11)), ["a", "b", "c"])
    with pytest.raises(ValueError, match=r"2 planner names.*\(3, 10\)"):
        agreement(np.zeros((3, 10)), np.zeros((3, 10)), ["a", "b"])
    with pytest.raises(ValueError, match="shape"):
        agreement(np.zeros(10), np.zeros(10), ["a"])
    with pytest.raises(ValueError, match="NaN"):
        agreement(np.full((2, 3), np.nan), np.zeros((2, 3)), ["a", "b"])
    with pytest.raises(ValueError, match="one score per planner"):
        kendall_tau([1, 2, 3], [1, 2])
