"""The decision rule on hand-made draws, checked against brute-force computations written here."""

import numpy as np
import pandas as pd
import pytest

from pipeline.config import EvaluationConfig
from pipeline.decision import choose_metric, decide, pooled_draws, with_logging_draws


def draws_of(spec: dict, resamples=400, seed=0, shared=0.0):
    """(policies x resamples) draws: each policy normal around its value with its own spread, plus a shared
    component (the pairing that resampling the same contexts gives)."""
    rng = np.random.default_rng(seed)
    common = rng.standard_normal(resamples) * shared
    return pd.DataFrame({name: value + spread * rng.standard_normal(resamples) + common
                         for name, (value, spread) in spec.items()}).T


def test_a_clear_winner_is_chosen_with_brute_force_p_best_and_expected_loss():
    draws = draws_of({"A": (0.10, 0.005), "B": (0.08, 0.005), "Logging": (0.05, 0.003)})
    values = pd.Series({"A": 0.10, "B": 0.08, "Logging": 0.05})
    decision, table = decide(values, draws, "DR@5", "off_policy", "why", "Logging", 2000)
    assert decision["policy"] == "A" and "highest 95% lower bound" in decision["reason"]
    assert "better than the baseline Logging" in decision["reason"]
    table = table.set_index("policy")
    matrix = draws.to_numpy()
    for i, name in enumerate(draws.index):
        wins = np.mean([matrix[i, r] == matrix[:, r].max() for r in range(matrix.shape[1])])
        loss = np.mean([matrix[:, r].max() - matrix[i, r] for r in range(matrix.shape[1])])
        assert table.loc[name, "p_best"] == pytest.approx(wins)
        assert table.loc[name, "expected_loss"] == pytest.approx(loss)
        gap = matrix[i] - matrix[list(draws.index).index("Logging")]
        assert table.loc[name, "diff_to_baseline_low"] == pytest.approx(np.percentile(gap, 2.5))
    assert not table.loc["B", "contender"] and table.loc["A", "contender"]


def test_nothing_separates_so_no_decision_and_the_sizes_it_would_take():
    draws = draws_of({"A": (0.052, 0.01), "B": (0.050, 0.01), "C": (0.049, 0.01)}, shared=0.005)
    values = pd.Series({"A": 0.052, "B": 0.050, "C": 0.049})
    decision, _ = decide(values, draws, "true_ctr@5", "truth", "why", None, 2000)
    assert decision["policy"] is None and decision["reason"].startswith("no decision")
    gap_draws = draws.loc["A"].to_numpy() - draws.loc["B"].to_numpy()
    mde = (1.959964 + 0.841621) * gap_draws.std()
    assert decision["minimum_detectable_difference"] == pytest.approx(mde, rel=1e-4)
    assert decision["events_to_separate_top_two"] == pytest.approx(2000 * (mde / 0.002) ** 2, rel=1e-3)
    # A/B users per arm for 0.052 vs 0.050 at 5% two-sided and 80% power, the textbook formula.
    ab = (1.959964 + 0.841621) ** 2 * (0.052 * 0.948 + 0.05 * 0.95) / 0.002 ** 2
    assert decision["ab_users_per_arm_to_separate_top_two"] == pytest.approx(ab, rel=1e-3)


def test_the_safest_of_the_not_worse_is_chosen():
    """A leads but is uncertain; B is close behind and tight, not significantly worse: B's lower bound is higher."""
    draws = draws_of({"A": (0.10, 0.03), "B": (0.095, 0.002), "C": (0.03, 0.002)})
    values = pd.Series({"A": 0.10, "B": 0.095, "C": 0.03})
    decision, table = decide(values, draws, "DR@5", "off_policy", "why", None, 2000)
    assert decision["policy"] == "B" and decision["leader"] == "A"
    assert set(table.loc[table["contender"], "policy"]) == {"A", "B"}


def test_oracle_is_never_chosen_and_unreliable_estimates_are_said():
    draws = draws_of({"Oracle": (0.5, 0.001), "A": (0.10, 0.002), "B": (0.05, 0.002)})
    values = pd.Series({"Oracle": 0.5, "A": 0.10, "B": 0.05})
    decision, _ = decide(values, draws, "DR@5", "off_policy", "why", None, 2000,
                         reliable=pd.Series({"A": False, "B": True}))
    assert decision["policy"] == "A" and "unreliable" in decision["reason"]


def test_metric_choice_follows_the_stated_order():
    auto = EvaluationConfig()
    assert choose_metric(auto, True, True, False)[0] == "true_ctr@5"
    assert choose_metric(auto, False, True, True)[:2] == ("DR@5", "off_policy")
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


def test_intervals_stay_in_the_range_of_a_rate():
    """Widened off-policy draws of a rare-click policy reach below 0: the reported interval does not."""
    draws = draws_of({"A": (0.002, 0.2), "B": (0.003, 0.001)})
    decision, table = decide(pd.Series({"A": 0.002, "B": 0.003}), draws, "DR@3", "off_policy", "why", None, 2000)
    assert (table["low"] >= 0).all() and (table["high"] <= 1).all()
    assert (table["diff_to_leader_low"] >= -1).all() and (table["diff_to_leader_high"] <= 1).all()
    assert table.set_index("policy").loc["A", "low"] == 0.0
