"""Real-valued rewards end to end: a log of rewards 50 x click is evaluated as the click log, on a scale 50 times
larger (replay CTR, IPS and SNIPS are equivariant under that scaling), and no interval leaves [0, 50]."""

import json

import numpy as np
import pandas as pd

from helpers import run_cli

SCALE = 50.0


def _run(byo_config, sample_files, capsys, tmp_path, name, scale, **changes):
    path = sample_files / "interactions.csv"
    log = pd.read_csv(sample_files / "clicks.csv")
    log["clicked"] = log["clicked"] * scale
    log.to_csv(path, index=False)
    config = byo_config(**{"run__name": name, "run__output_dir": str(tmp_path / "runs"),
                           "policies": {"Random": {"learning_policy": "Random"},
                                        "LinUCB": {"learning_policy": "LinUCB"}},
                           "evaluation__bootstrap_resamples": 40, "evaluation__k_list": [1, 5], **changes})
    code, message = run_cli(config, capsys)
    assert code == 0, message
    return next((tmp_path / "runs").glob(f"*{name}*"))


def test_a_log_of_rewards_is_the_click_log_on_its_scale(byo_config, sample_files, capsys, tmp_path):
    clicks = pd.read_csv(sample_files / "interactions.csv")
    clicks["propensity"] = 1 / 40  # logged uniformly over the 40 items, so off-policy estimates run
    clicks.to_csv(sample_files / "clicks.csv", index=False)
    binary_dir = _run(byo_config, sample_files, capsys, tmp_path, "clicks", 1.0)
    real_dir = _run(byo_config, sample_files, capsys, tmp_path, "rewards", SCALE,
                             data__files__reward_range=[0, SCALE])

    info = json.loads((real_dir / "run.json").read_text())
    assert info["data"]["reward"] == {"low": 0.0, "high": SCALE, "binary": False, "declared": True}
    note, = [note for note in info["notes"] if "real-valued rewards in [0, 50], declared" in note]
    assert "AUC, Precision, Recall, NDCG, MAP need 0/1 responses" in note

    binary, real = (pd.read_csv(d / "metrics.csv") for d in (binary_dir, real_dir))
    needs_clicks = {"AUC", "Precision", "Recall", "NDCG", "MAP"}
    assert "CTR" in set(real["metric"]) and not needs_clicks & set(real["metric"])
    assert needs_clicks <= set(binary["metric"])
    # Random's lists do not depend on the rewards: its CTR (mean reward of matched events) is 50 x its click rate
    key = ["policy", "metric", "k", "seed", "fold"]
    ctr = binary[(binary["metric"] == "CTR") & (binary["policy"] == "Random")].merge(
        real[real["policy"] == "Random"], on=key, suffixes=("_clicks", "_rewards"))
    assert len(ctr) == 2
    for column in ("value", "low", "high"):
        np.testing.assert_allclose(ctr[f"{column}_rewards"], SCALE * ctr[f"{column}_clicks"], rtol=1e-9)

    binary_ope, real_ope = (pd.read_csv(d / "off_policy.csv") for d in (binary_dir, real_dir))
    ope = binary_ope[binary_ope["estimator"].isin(["IPS", "SNIPS"]) & (binary_ope["policy"] == "Random")].merge(
        real_ope, on=["policy", "estimator", "k", "seed", "fold"], suffixes=("_clicks", "_rewards"))
    assert len(ope) == 4
    for column in ("value", "low", "high", "se"):
        np.testing.assert_allclose(ope[f"{column}_rewards"], SCALE * ope[f"{column}_clicks"], rtol=1e-6)

    for table in (real[real["metric"] == "CTR"], real_ope, pd.read_csv(real_dir / "decision.csv")):
        assert table["low"].between(0, SCALE).all() and table["high"].between(0, SCALE).all()
        assert (table["low"] <= table["value"] + 1e-9).all() and (table["value"] <= table["high"] + 1e-9).all()
    dr = real_ope[real_ope["estimator"] == "DR"]
    assert (dr["reward_model"].str.startswith("item_mean")).all()  # the logistic model needs 0/1 responses


def test_a_mean_reward_without_any_matched_event_is_unknown_over_the_whole_range():
    from pipeline.rewards import RewardScale
    from pipeline.uncertainty import Bootstrap, replay_details

    actual = pd.DataFrame({"context_id": [1, 2], "item_id": [10, 20], "score": [3.0, 4.0]})  # logged rewards
    listed = pd.DataFrame({"context_id": [1, 2], "item_id": [20, 10], "score": [0.9, 0.8]})  # never the logged item
    details = replay_details(actual, listed, [("CTR", 1)], Bootstrap(np.array([1, 2]), 20, seed=0),
                             reward=RewardScale(1.0, 5.0, binary=False))
    row = details.iloc[0]
    assert np.isnan(row["value"]) and (row["low"], row["high"], row["support"]) == (1.0, 5.0, 0)
