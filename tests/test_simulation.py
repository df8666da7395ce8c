"""Online simulation: learning beats random, regret grows sub-linearly, shocks are marked and measured."""

import numpy as np
import pandas as pd
import pytest

from pipeline.config import PipelineConfig
from pipeline.data import load_dataset
from pipeline.simulation import _rolling_mean, simulate

SMALL_SHOP = {"synthetic": {"n_users": 300, "n_items": 10, "n_events": 1000}}
TWO_POLICIES = {"Random": {"learning_policy": "Random"}, "LinUCB": {"learning_policy": "LinUCB"}}


@pytest.fixture(scope="module")
def stationary():
    config = PipelineConfig(data=SMALL_SHOP, policies=TWO_POLICIES,
                            simulation={"enabled": True, "steps": 6000, "batch_size": 100, "warmup": 200})
    return simulate(config, load_dataset(config), None, config.policy_specs(), seed=42)


def test_linucb_regret_is_clearly_below_random_and_sub_linear(stationary):
    curves, summary = stationary
    summary = summary.set_index("policy")
    assert summary.loc["LinUCB", "cum_regret"] < 0.6 * summary.loc["Random", "cum_regret"]
    regret = curves[curves["policy"] == "LinUCB"].set_index("step")["cum_regret"]
    first_quarter, last_quarter = regret.loc[1500], regret.loc[6000] - regret.loc[4500]
    assert last_quarter < 0.8 * first_quarter  # the regret per step shrinks as LinUCB learns
    assert summary.loc["LinUCB", "regret_growth_ratio"] < 0.9
    random_regret = curves[curves["policy"] == "Random"].set_index("step")["cum_regret"]
    assert 0.85 < (random_regret.loc[6000] - random_regret.loc[3000]) / random_regret.loc[3000] < 1.15  # linear


def test_curves_are_consistent(stationary):
    curves, _ = stationary
    assert set(curves["policy"]) == {"Random", "LinUCB", "Oracle"}
    for _, group in curves.groupby("policy"):
        assert list(group["step"]) == list(range(100, 6001, 100))
        assert group["cum_reward"].is_monotonic_increasing and group["cum_regret"].is_monotonic_increasing
    oracle = curves[curves["policy"] == "Oracle"]
    assert (oracle["cum_regret"] == 0).all()
    linucb = curves[curves["policy"] == "LinUCB"]
    assert (linucb["rolling_expected_ctr"].to_numpy() <= oracle["rolling_expected_ctr"].to_numpy() + 1e-12).all()
    assert curves["shock_step"].isna().all()


def test_market_shock_is_marked_and_recovery_measured():
    config = PipelineConfig(data=SMALL_SHOP, policies=TWO_POLICIES,
                            simulation={"enabled": True, "steps": 6000, "batch_size": 100, "warmup": 200,
                                        "scenario": "shock", "shock_step": 3000, "rolling_window": 500})
    curves, summary = simulate(config, load_dataset(config), None, config.policy_specs(), seed=42)
    assert (curves["shock_step"] == 3000).all() and (summary["shock_step"] == 3000).all()
    summary = summary.set_index("policy")
    assert summary.loc["Oracle", "recovery_steps"] == 100 and summary.loc["Oracle", "pre_shock_share"] == 1
    linucb = summary.loc["LinUCB"]
    # The shock hurts the learnt policy: right after it, its share of the Oracle's CTR drops.
    share = (curves[curves["policy"] == "LinUCB"].set_index("step")["rolling_expected_ctr"]
             / curves[curves["policy"] == "Oracle"].set_index("step")["rolling_expected_ctr"])
    assert share.loc[3100] < share.loc[3000]
    # Recovery as defined in the README, recomputed from the curves: the first step after the shock whose share
    # is back to 90% of the share just before it.
    assert linucb["pre_shock_share"] == pytest.approx(share.loc[3000])
    back = share[(share.index > 3000) & (share >= 0.9 * share.loc[3000])]
    assert linucb["recovered"] == ("yes" if len(back) else "not recovered")
    if len(back):
        assert linucb["recovery_steps"] == back.index[0] - 3000
    else:
        assert np.isnan(linucb["recovery_steps"])


def test_rolling_mean_never_reaches_across_the_shock():
    values = np.array([1.0, 1.0, 1.0, 0.0, 0.0, 0.0])
    np.testing.assert_allclose(_rolling_mean(values, 2, None), [1, 1, 1, 0.5, 0, 0])
    np.testing.assert_allclose(_rolling_mean(values, 2, 3), [1, 1, 1, 0, 0, 0])


@pytest.mark.parametrize("settings, message", [
    ({"data": {"source": "files", "files": {"interactions": "x.csv"}}, "simulation": {"enabled": True}},
     "simulation.enabled needs data.source: synthetic"),
    ({"simulation": {"scenario": "shock", "steps": 100, "shock_step": 100}}, "shock_step=100 must be below steps=100"),
    ({"simulation": {"policies": ["LinUSB"]}}, r"simulation.policies names \['LinUSB'\]"),
])
def test_invalid_simulation_settings(tmp_path, settings, message):
    import yaml

    from pipeline.config import load_config
    from pipeline.errors import ConfigError

    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(settings))
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_pipeline_writes_simulation_tables(write_config, tiny_settings):
    from pipeline.config import load_config
    from pipeline.runner import run_pipeline

    tiny_settings["policies"] = TWO_POLICIES
    tiny_settings["simulation"] = {"enabled": True, "steps": 600, "batch_size": 200, "warmup": 100,
                                   "scenario": "shock", "shock_step": 400}
    outcome = run_pipeline(load_config(write_config(tiny_settings)), progress=False)
    curves = pd.read_csv(outcome.path / "simulation.csv")
    assert list(curves.columns[:3]) == ["seed", "policy", "step"] and len(curves) == 3 * 3
    summary = pd.read_csv(outcome.path / "simulation_summary.csv")
    assert set(summary["policy"]) == {"Random", "LinUCB", "Oracle"} and (summary["shock_step"] == 400).all()
