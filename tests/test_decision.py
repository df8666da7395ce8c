"""The decision's verdicts on hand-made draws, checked against brute-force computations written here."""

import numpy as np
import pandas as pd
import pytest

from pipeline.config import EvaluationConfig
from pipeline.decision import choose_metric, decide
from pipeline.pooling import pooled_draws, with_logging_draws

Z = 1.959964 + 0.841621  # 5% two-sided, 80% power


def draws_of(spec: dict, resamples=400, seed=0, shared=0.0):
    """(policies x resamples) draws: each policy normal around its value with its own spread, plus a shared
    component (the pairing that resampling the same contexts gives)."""
    rng = np.random.default_rng(seed)
    common = rng.standard_normal(resamples) * shared
    return pd.DataFrame({name: value + spread * rng.standard_normal(resamples) + common
                         for name, (value, spread) in spec.items()}).T


def values_of(spec: dict) -> pd.Series:
    return pd.Series({name: value for name, (value, _) in spec.items()})


def brute_better(draws: pd.DataFrame, a: str, b: str) -> bool:
    """``a`` significantly better than ``b``: the 2.5% point of their paired difference is above 0."""
    return np.percentile(draws.loc[a].to_numpy() - draws.loc[b].to_numpy(), 2.5) > 0


def test_ship_when_one_policy_beats_the_baseline_and_is_not_worse_than_any_other():
    spec = {"A": (0.10, 0.005), "B": (0.08, 0.005), "Logging": (0.05, 0.003)}
    draws = draws_of(spec)
    decision, table = decide(values_of(spec), draws, "DR@5", "off_policy", "why", "Logging", 2000)
    assert decision["verdict"] == "ship" and decision["policy"] == "A" and decision["headline"] == "ship A"
    assert brute_better(draws, "A", "Logging") and brute_better(draws, "B", "Logging") and brute_better(draws, "A", "B")
    table = table.set_index("policy")
    matrix = draws.to_numpy()
    for i, name in enumerate(draws.index):
        wins = np.mean([matrix[i, r] == matrix[:, r].max() for r in range(matrix.shape[1])])
        loss = np.mean([matrix[:, r].max() - matrix[i, r] for r in range(matrix.shape[1])])
        assert table.loc[name, "p_best"] == pytest.approx(wins)
        assert table.loc[name, "expected_loss"] == pytest.approx(loss)
        gap = matrix[i] - matrix[list(draws.index).index("Logging")]
        assert table.loc[name, "diff_to_baseline_low"] == pytest.approx(np.percentile(gap, 2.5))
    assert not table.loc["B", "not_worse_than_any"] and table.loc["A", "not_worse_than_any"]


def test_tie_when_two_policies_beat_the_baseline_and_cannot_be_told_apart():
    spec = {"A": (0.100, 0.004), "B": (0.099, 0.002), "C": (0.06, 0.002), "Logging": (0.05, 0.002)}
    draws = draws_of(spec, shared=0.003)
    decision, table = decide(values_of(spec), draws, "DR@5", "off_policy", "why", "Logging", 2000)
    assert decision["verdict"] == "tie" and decision["tied"] == ["A", "B"]
    assert decision["headline"].startswith("tie: A or B")
    assert not brute_better(draws, "A", "B") and not brute_better(draws, "B", "A")
    lower = {p: np.percentile(draws.loc[p], 2.5) for p in ("A", "B")}
    assert decision["policy"] == max(lower, key=lower.get)  # the safer of the two
    spread = (draws.loc["A"] - draws.loc["B"]).to_numpy().std()
    assert decision["events_to_separate_top_two"] == pytest.approx(2000 * (Z * spread / 0.001) ** 2, rel=1e-3)
    assert f"{decision['events_to_separate_top_two']:,} logged test events would separate A from B" in decision["reason"]


def test_keep_the_baseline_when_nothing_beats_it_with_the_events_a_minimum_lift_needs():
    spec = {"A": (0.052, 0.01), "B": (0.045, 0.01), "Logging": (0.050, 0.002)}
    draws = draws_of(spec, shared=0.002)
    decision, _ = decide(values_of(spec), draws, "DR@5", "off_policy", "why", "Logging", 2000, min_lift=0.1)
    assert decision["verdict"] == "keep_baseline" and decision["policy"] == "Logging"
    assert decision["headline"] == "keep the baseline Logging (nothing is shown to beat it)"
    assert not brute_better(draws, "A", "Logging")
    spread = (draws.loc["A"] - draws.loc["Logging"]).to_numpy().std()  # the closest challenger against it
    expected = 2000 * (Z * spread / (0.1 * 0.050)) ** 2
    assert decision["smallest_interesting_lift"] == pytest.approx(0.005)
    assert decision["events_to_detect_lift"] == pytest.approx(expected, rel=1e-3)
    assert "the closest, A" in decision["reason"]


def test_no_decision_when_the_only_winner_is_unreliable_and_the_leader_is_named():
    spec = {"A": (0.20, 0.01), "B": (0.05, 0.002), "Logging": (0.05, 0.002)}
    flags = {"A": "effective sample size 18.0 < 30"}
    decision, table = decide(values_of(spec), draws_of(spec), "IIPS@3", "off_policy", "why", "Logging", 2000,
                             flags=flags)
    assert decision["verdict"] == "no_decision" and decision["policy"] is None
    assert "effective sample size 18.0 < 30" in decision["reason"]
    assert not table.set_index("policy").loc["A", "reliable"]
    # A reliable winner is shipped, though it is significantly below the flagged leader (a flagged estimate rules
    # nothing out), and the unreliable leader is named as such.
    spec["B"] = (0.10, 0.002)
    draws = draws_of(spec)
    assert brute_better(draws, "A", "B")
    decision, _ = decide(values_of(spec), draws, "IIPS@3", "off_policy", "why", "Logging", 2000, flags=flags)
    assert decision["verdict"] == "ship" and decision["policy"] == "B"
    assert "The leader A's estimate is flagged unreliable (effective sample size 18.0 < 30)" in decision["reason"]


def test_no_decision_without_a_baseline_when_nothing_separates_and_the_sizes_it_would_take():
    spec = {"A": (0.052, 0.01), "B": (0.050, 0.01), "C": (0.049, 0.01)}
    draws = draws_of(spec, shared=0.005)
    decision, _ = decide(values_of(spec), draws, "true_ctr@5", "truth", "why", None, 2000)
    assert decision["verdict"] == "no_decision" and decision["policy"] is None
    gap_draws = draws.loc["A"].to_numpy() - draws.loc["B"].to_numpy()
    mde = Z * gap_draws.std()
    assert decision["minimum_detectable_difference"] == pytest.approx(mde, rel=1e-4)
    assert decision["events_to_separate_top_two"] == pytest.approx(2000 * (mde / 0.002) ** 2, rel=1e-3)
    # A/B users per arm for 0.052 vs 0.050 at 5% two-sided and 80% power, the textbook formula.
    ab = Z ** 2 * (0.052 * 0.948 + 0.05 * 0.95) / 0.002 ** 2
    assert decision["ab_users_per_arm_to_separate_top_two"] == pytest.approx(ab, rel=1e-3)


def test_no_decision_with_fewer_than_two_policies():
    decision, table = decide(pd.Series({"A": 0.1}), draws_of({"A": (0.1, 0.01)}), "DR@5", "off_policy", "why",
                             "Logging", 2000)
    assert decision["verdict"] == "no_decision" and "fewer than two" in decision["reason"] and table.empty


def test_oracle_is_never_a_candidate():
    spec = {"Oracle": (0.5, 0.001), "A": (0.10, 0.002), "B": (0.05, 0.002)}
    decision, table = decide(values_of(spec), draws_of(spec), "true_ctr@5", "truth", "why", "B", 2000)
    assert decision["verdict"] == "ship" and decision["policy"] == "A" and "Oracle" not in set(table["policy"])


def test_metric_choice_follows_the_stated_order():
    auto = EvaluationConfig()
    assert choose_metric(auto, True, True, False)[0] == "true_ctr@5"
    assert choose_metric(auto, False, True, True, estimator="DR")[:2] == ("DR@5", "off_policy")
    assert choose_metric(auto, False, False, False)[:2] == ("CTR@5", "replay")
    label, kind, why = choose_metric(auto, False, False, True)
    assert label is None and "biased" in why
    forced = EvaluationConfig(decision={"metric": "off_policy", "estimator": "SNIPS"})
    assert choose_metric(forced, True, True, False)[0] == "SNIPS@5"
    assert "no propensities" in choose_metric(forced, True, False, False)[2]


def test_pooled_draws_average_folds_resample_by_resample_and_logging_stands_in():
    rows = []
    for fold in (0, 1):
        for policy, base in (("A", 0.1), ("Logging", 0.05)):
            label = "DR@5" if policy == "A" else "observed@5"
            rows.append(pd.DataFrame({"seed": 1, "fold": fold, "policy": policy, "label": label, "resample": [0, 1],
                                      "value": [base + fold, base + 2 * fold]}))
    draws = pd.concat(rows)
    pooled = pooled_draws(with_logging_draws(draws, "DR@5"), "DR@5")
    assert pooled.loc["A"].tolist() == pytest.approx([0.1 + 0.5, 0.1 + 1.0])
    assert pooled.loc["Logging"].tolist() == pytest.approx([0.05 + 0.5, 0.05 + 1.0])
    partial = draws[~((draws["policy"] == "A") & (draws["fold"] == 1))]
    assert "A" not in pooled_draws(with_logging_draws(partial, "DR@5"), "DR@5").index  # missing a fold: left out


def test_intervals_stay_in_the_range_of_a_rate_and_contain_their_value():
    """Draws of a rare-click policy reaching below 0: the reported interval does not."""
    draws = draws_of({"A": (0.002, 0.2), "B": (0.003, 0.001)})
    decision, table = decide(pd.Series({"A": 0.002, "B": 0.003}), draws, "DR@3", "off_policy", "why", None, 2000)
    assert (table["low"] >= 0).all() and (table["high"] <= 1).all()
    assert ((table["low"] <= table["value"]) & (table["value"] <= table["high"])).all()
    assert (table["diff_to_leader_low"] >= -1).all() and (table["diff_to_leader_high"] <= 1).all()
    assert table.set_index("policy").loc["A", "low"] == 0.0
