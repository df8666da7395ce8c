"""The A/B-test simulation's statistics: the mSPRT against its definition, its validity under daily looks,
the fixed-horizon sizing, and one small simulated test on the session shop."""

import numpy as np
import pandas as pd
import pytest
from scipy import integrate, stats

from pipeline.config import SessionConfig, SyntheticConfig
from pipeline.data.synthetic import generate
from pipeline.sessions.ab_test import (ABSettings, analyse, confidence_sequence, msprt_statistic,
                                       planned_users_per_arm, simulate)
from pipeline.sessions.agents import OracleAgent


def test_msprt_statistic_is_the_mixture_likelihood_ratio():
    """Lambda = integral of N(D; theta, V) N(theta; 0, tau^2) d theta / N(D; 0, V), integrated numerically."""
    for lift, variance, tau in ((0.1, 0.01, 0.2), (-0.3, 0.02, 0.1), (0.0, 0.5, 1.0), (0.05, 1e-3, 0.05)):
        mixture, _ = integrate.quad(lambda theta: stats.norm.pdf(lift, theta, np.sqrt(variance))
                                    * stats.norm.pdf(theta, 0, tau), -10, 10, points=[0, lift], limit=200)
        expected = mixture / stats.norm.pdf(lift, 0, np.sqrt(variance))
        assert msprt_statistic(lift, variance, tau) == pytest.approx(expected, rel=1e-6)


def test_daily_looks_keep_the_sequential_false_positive_rate_but_not_the_naive_one():
    """500 A/A streams of 20 daily looks: the mSPRT rejects in at most alpha (+ Monte Carlo error) of them; a
    z-test checked every day rejects far more often (why the sequential test exists)."""
    rng = np.random.default_rng(0)
    settings = ABSettings(enrollment_days=14, window_days=6, effect=0.5)
    sequential = naive = 0
    for _ in range(500):
        arms = []
        for _ in range(2):
            n = 400
            arms.append(pd.DataFrame({"outcome": rng.exponential(1.0, n), "known_on": rng.integers(1, 21, n)}))
        result = analyse(*arms, settings, planned=10 ** 9)
        sequential += result["sequential_significant"]
        naive += result["naive_daily_significant"]
    error = 3 * np.sqrt(0.05 * 0.95 / 500)
    assert sequential / 500 <= 0.05 + error
    assert naive / 500 > 0.12


def test_confidence_sequence_contains_the_lift_exactly_where_the_p_value_is_above_alpha():
    for lift, variance in ((0.2, 0.01), (0.05, 0.01), (-0.4, 0.03)):
        low, high = confidence_sequence(lift, variance, tau=0.3, alpha=0.05)
        assert (low <= 0 <= high) == (1 / msprt_statistic(lift, variance, 0.3) > 0.05)


def test_fixed_horizon_size_gives_the_planned_power():
    """Simulated: Welch z-tests at the planned size detect the effect in about `power` of the trials."""
    sigma, effect = 2.0, 0.5
    n = planned_users_per_arm(sigma, effect, 0.05, 0.8)
    assert n == int(np.ceil(2 * ((1.959964 + 0.841621) * sigma / effect) ** 2))
    rng = np.random.default_rng(1)
    a, b = rng.normal(0, sigma, (2000, n)), rng.normal(effect, sigma, (2000, n))
    z = (b.mean(1) - a.mean(1)) / np.sqrt(a.var(1, ddof=1) / n + b.var(1, ddof=1) / n)
    assert abs((np.abs(z) > 1.959964).mean() - 0.8) < 0.03


def test_a_simulated_test_on_the_shop_finds_the_oracle_better_than_a_random_policy():
    shop = generate(SyntheticConfig(n_users=300, n_items=30, n_events=300), 2)

    class RandomAgent:
        name = "Random"

        def act(self, observation, env):
            return int(env.np_random.integers(env.action_space.n))

    settings = ABSettings(users=300, enrollment_days=5, window_days=3, effect=0.5)
    result = simulate(shop, SessionConfig(), RandomAgent(), OracleAgent(), settings, planned=50, seed=0)
    daily = result["daily"]
    assert daily["n_control"].iloc[-1] + daily["n_treatment"].iloc[-1] == 300  # every user enrolled and followed
    assert daily["p_always_valid"].is_monotonic_decreasing
    assert result["treatment_mean"] > result["control_mean"] and result["lift_low"] > 0
    assert result["sequential_significant"] and result["decision_day"] <= daily["day"].iloc[-1]


def test_offline_prediction_of_the_lift_is_paired_and_knows_when_policies_are_equal():
    from pipeline.sessions.ab_test import offline_lift

    shop = generate(SyntheticConfig(n_users=200, n_items=30, n_events=300), 4)

    class RandomAgent:
        def act(self, observation, env):
            return int(env.np_random.integers(env.action_space.n))

    oracle = OracleAgent()
    same = offline_lift(shop, SessionConfig(), oracle, oracle, steps=2_000, steps_per_user=4.0, seed=0)
    assert same["predicted_lift"] == 0 and same["predicted_low"] == same["predicted_high"] == 0
    better = offline_lift(shop, SessionConfig(dynamics=False), RandomAgent(), oracle, steps=4_000,
                          steps_per_user=4.0, seed=0)
    assert better["predicted_low"] > 0  # the Oracle's clicks per step are far above a random item's


def test_summary_counts_each_rule_and_covers_the_right_lift():
    from pipeline.sessions.ab_test import summarise

    tests = pd.DataFrame({"kind": ["aa"] * 4 + ["ab"] * 2, "lift": [0.1, -0.2, 0.3, 0.0, 1.0, 2.0],
                          "lift_low": [-0.1, -0.5, 0.05, -0.2, 0.2, 1.6], "lift_high": [0.3, 0.1, 0.6, 0.2, 1.8, 2.4],
                          "decision_day": [np.nan, np.nan, 5.0, np.nan, 3.0, 7.0], "fixed_day": [9.0] * 6,
                          "sequential_significant": [False, False, True, False, True, True],
                          "fixed_significant": [False] * 4 + [True, False],
                          "naive_daily_significant": [True, False, True, False, True, True]})
    table = summarise(tests).set_index("kind")
    assert table.loc["aa", "mean_lift"] == 0 and table.loc["aa", "interval_covers"] == 0.75  # 0.05..0.6 misses 0
    assert table.loc["aa", "sequential_significant"] == 0.25
    assert table.loc["aa", "sequential_significant_se"] == pytest.approx(np.sqrt(0.25 * 0.75 / 4))
    assert table.loc["ab", "mean_lift"] == 1.5 and table.loc["ab", "interval_covers"] == 0.5  # 1.6..2.4 misses
    assert table.loc["ab", "median_decision_day"] == 5.0 and table.loc["aa", "median_decision_day"] == 5.0
