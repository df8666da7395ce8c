"""Slate logs end to end: the synthetic shop's slates against its truth, a user's slate files, the Open Bandit
Dataset layout through its converter, and every slate-log mistake named."""

import json

import numpy as np
import pandas as pd
import pytest

from helpers import assert_clean_failure, fake_obp_archive, run_cli
from pipeline.cli import main
from pipeline.config import SyntheticConfig
from pipeline.data.synthetic import ClickModel, generate
from scripts.open_bandit_dataset import main as convert_obd

SLATE_COLUMNS = ["user_id", "item_id", "response", "propensity", "timestamp", "position", "slate_id",
                 "slate_propensity", "cascade_propensity", "device", "daypart", "is_weekend"]


def run_dir(root):
    (path,) = [p for p in (root / "runs").iterdir() if p.name != ".cache"]
    return path


def test_synthetic_slates_are_decided_on_their_true_value(write_config, tiny_settings, tmp_path, capsys):
    tiny_settings["data"]["synthetic"].update(slate_size=3, logging="softmax")
    assert main(["run", str(write_config(tiny_settings)), "--quiet"]) == 0
    folder = run_dir(tmp_path)
    decision = json.loads((folder / "decision.json").read_text())
    assert decision["metric"] == "true_slate_ctr@3"
    estimates = pd.read_csv(folder / "off_policy.csv")
    slate = estimates[estimates["k"] == 3]
    assert {"IIPS", "SN-IIPS", "SIPS", "SN-SIPS", "RIPS", "SN-RIPS"} <= set(slate["estimator"])
    assert "PI" not in set(estimates["estimator"])  # softmax logging: PI's closed form does not hold
    assert (estimates.loc[estimates["policy"] == "Logging", "estimator"] != "observed_slate").sum() == 1  # slot 1
    assert ((estimates["low"] >= 0) & (estimates["high"] <= 1)).all()

    # LinUCB's true_slate_ctr@3 recomputed from the saved click model's full probability grid
    model = ClickModel.load(folder / "artifacts" / "seed_3" / "click_model.npz")
    interactions = pd.read_parquet(folder / "data" / "seed_3" / "interactions.parquet")
    lists = pd.read_parquet(folder / "recommendations.parquet") if (folder / "recommendations.parquet").exists() \
        else pd.read_csv(folder / "recommendations.csv")
    lists = lists[(lists["policy"] == "LinUCB") & (lists["rank"] < 3)].sort_values(["context_id", "rank"])
    first_rows = interactions.drop_duplicates("slate_id").set_index("slate_id").loc[lists["context_id"].unique()]
    grid = model.probabilities(first_rows.reset_index())
    columns = np.searchsorted(model.item_ids, lists["item_id"].to_numpy()).reshape(-1, 3)
    clicks = grid[np.arange(len(grid))[:, None], columns] * np.array([1, 1 / 2, 1 / 3])
    metrics = pd.read_csv(folder / "metrics.csv")
    value = metrics.query("policy == 'LinUCB' and metric == 'true_slate_ctr' and k == 3")["value"].item()
    assert value == pytest.approx(clicks.mean(axis=1).mean(), rel=1e-9)


@pytest.fixture
def slate_files(tmp_path):
    """A user's slate log: the tiny softmax-logged slate shop written as files (no truth)."""
    shop = generate(SyntheticConfig(n_users=150, n_items=20, n_events=700, n_days=7, slate_size=3,
                                    logging="softmax"), seed=5)
    folder = tmp_path / "slates"
    folder.mkdir()
    shop.interactions[SLATE_COLUMNS].to_csv(folder / "interactions.csv", index=False)
    shop.users.to_csv(folder / "users.csv", index=False)
    shop.items[["item_id", "category", "price"]].to_csv(folder / "items.csv", index=False)
    return folder


def slate_config(write_config, folder, **evaluation):
    return write_config({
        "seed": 1,
        "data": {"source": "files", "files": {
            "interactions": str(folder / "interactions.csv"), "user_features": str(folder / "users.csv"),
            "item_features": str(folder / "items.csv"), "event_context": ["device", "daypart", "is_weekend"]}},
        "features": {"item_text": {"columns": []}},
        "policies": {"Random": {"learning_policy": "Random"}, "LinUCB": {"learning_policy": "LinUCB"},
                     "TS": {"learning_policy": "ThompsonSampling"}},
        "evaluation": {"top_k": 3, "k_list": [1, 3], "leaderboard_k": 3, "bootstrap_resamples": 50, **evaluation}})


def test_own_slate_files_group_impressions_and_decide_on_iips(write_config, slate_files, tmp_path):
    assert main(["run", str(slate_config(write_config, slate_files)), "--quiet"]) == 0
    folder = run_dir(tmp_path)
    decision = json.loads((folder / "decision.json").read_text())
    chosen = decision["estimator_choice"]["estimator"]  # the automatic choice among what the log supports
    assert decision["metric"] == f"{chosen}@3" and decision["metric_kind"] == "off_policy"
    assert set(decision["estimator_choice"]["estimated_rmse"]) <= {"IIPS", "SN-IIPS", "SIPS", "SN-SIPS", "RIPS",
                                                                    "SN-RIPS"}
    estimates = pd.read_csv(folder / "off_policy.csv")
    assert {"SIPS", "RIPS", "IIPS"} <= set(estimates["estimator"]) and "observed_slate" in set(estimates["estimator"])
    # one context per impression: the test contexts are the test impressions, whole (the split keeps them)
    log = pd.read_csv(slate_files / "interactions.csv")
    contexts = pd.read_parquet(folder / "test_contexts.parquet")
    latest = log.sort_values("timestamp", kind="stable").iloc[len(log) - round(0.2 * len(log)):]
    assert len(contexts) == latest["slate_id"].nunique()  # every impression with a row among the latest 20%
    random = estimates.query("policy == 'Random' and estimator == 'IIPS'")
    logging = estimates.query("policy == 'Logging' and estimator == 'observed_slate'")
    assert 0 <= random["value"].item() <= 1 and 0 <= logging["value"].item() <= 1


def test_open_bandit_layout_runs_with_per_slot_estimates_only(write_config, tmp_path, capsys):
    fake_obp_archive(tmp_path / "obp.tar.gz")
    convert_obd([str(tmp_path / "obp.tar.gz"), "--out", str(tmp_path / "obd")])
    converted = pd.read_csv(tmp_path / "obd" / "random_all" / "interactions.csv")
    assert list(converted.columns[:6]) == ["user_id", "item_id", "click", "propensity", "timestamp", "position"]
    config = write_config({
        "data": {"source": "files", "files": {
            "interactions": str(tmp_path / "obd" / "random_all" / "interactions.csv"),
            "item_features": str(tmp_path / "obd" / "random_all" / "items.csv"), "columns": {"response": "click"},
            "event_context": [f"user_feature_{i}" for i in range(4)]}},
        "features": {"item_text": {"columns": []}},
        "policies": {"Random": {"learning_policy": "Random"}, "LinUCB": {"learning_policy": "LinUCB"}},
        "evaluation": {"top_k": 3, "k_list": [1, 3], "leaderboard_k": 3, "bootstrap_resamples": 50}})
    assert main(["run", str(config)]) == 0
    out = capsys.readouterr().out
    assert "SIPS, SN-SIPS, RIPS, SN-RIPS, PI skipped" in out and "slate_id" in out
    folder = run_dir(tmp_path)
    assert json.loads((folder / "decision.json").read_text())["metric"] in ("IIPS@3", "SN-IIPS@3")
    estimates = pd.read_csv(folder / "off_policy.csv")
    # a uniform log evaluated for the uniform policy: every weight is 1, IIPS is the observed per-slot rate
    assert estimates.query("policy == 'Random' and estimator == 'IIPS'")["value"].item() == pytest.approx(
        estimates.query("policy == 'Logging' and estimator == 'observed_slate'")["value"].item(), rel=1e-9)


@pytest.mark.parametrize("change, fragments", [
    (lambda log: log.drop(columns="position"), ["'slate_id'", "need a position column"]),
    (lambda log: log.assign(position=log["position"] - 1), ["'position'", "whole number, 1 = top", "0"]),
    (lambda log: log.assign(position=log["position"] * 1.5), ["'position'", "1.5"]),
    (lambda log: log.drop(index=4), ["one row for each position 1..3", "slate_id 1", "impression(s)"]),
    (lambda log: log.assign(item_id=np.where(log.index == 4, log["item_id"].shift(1), log["item_id"])
                            .astype(int)), ["each item once", "'item_id'"]),
    (lambda log: log.assign(slate_propensity=log["slate_propensity"] * np.where(log.index == 0, 2, 1)),
     ["one value per impression", "'slate_propensity'"]),
    (lambda log: log.assign(cascade_propensity=(log["cascade_propensity"] * np.where(log["position"] == 3, 9e5, 1))
                            .clip(upper=1)), ["'cascade_propensity'", "cannot grow"]),
    (lambda log: log.assign(cascade_propensity=np.where(log["position"] == 1, (log["propensity"] * 1.5).clip(upper=1),
                                                        log["cascade_propensity"])), ["at position 1", "'propensity'"]),
])
def test_slate_log_mistakes_are_named(write_config, slate_files, capsys, tmp_path, change, fragments):
    path = slate_files / "interactions.csv"
    change(pd.read_csv(path)).to_csv(path, index=False)
    code, message = run_cli(slate_config(write_config, slate_files), capsys)
    assert_clean_failure(code, message, tmp_path / "runs", str(path), *fragments)


@pytest.mark.parametrize("settings, fragments", [
    ({"top_k": 2, "k_list": [1, 2], "leaderboard_k": 2}, ["evaluation.top_k is 2", "3 slots", "at least 3"]),
])
def test_slate_config_mistakes_are_named(write_config, slate_files, capsys, tmp_path, settings, fragments):
    code, message = run_cli(slate_config(write_config, slate_files, **settings), capsys)
    assert_clean_failure(code, message, tmp_path / "runs", *fragments)


def test_position_is_not_a_context_feature(write_config, slate_files, capsys, tmp_path):
    config = slate_config(write_config, slate_files)
    code, message = run_cli(config, capsys, "--set", "data.files.event_context=[device, position]")
    assert_clean_failure(code, message, tmp_path / "runs", "'position'", "event_context", "not part")


def test_a_slate_estimator_the_log_cannot_support_is_refused(write_config, slate_files, capsys, tmp_path):
    path = slate_files / "interactions.csv"
    pd.read_csv(path).drop(columns=["slate_propensity"]).to_csv(path, index=False)
    code, message = run_cli(slate_config(write_config, slate_files, decision={"slate_estimator": "SIPS"}), capsys)
    assert_clean_failure(code, message, tmp_path / "runs", "evaluation.decision.slate_estimator is SIPS",
                         "slate_propensity", "IIPS")


def test_an_impression_split_across_train_and_test_files_is_refused(write_config, slate_files, capsys, tmp_path):
    log = pd.read_csv(slate_files / "interactions.csv")
    cut = len(log) // 2 + 1  # in the middle of an impression (3 rows each)
    log.iloc[:cut].to_csv(slate_files / "train.csv", index=False)
    log.iloc[cut:].to_csv(slate_files / "test.csv", index=False)
    config = slate_config(write_config, slate_files)
    code, message = run_cli(config, capsys, "--set", "data.files.interactions=null", "--set",
                            f"data.files.train={slate_files / 'train.csv'}", "--set",
                            f"data.files.test={slate_files / 'test.csv'}", "--set", "split.method=given")
    assert_clean_failure(code, message, tmp_path / "runs", "an impression lies in one file", "1 impression(s)")


def test_an_external_policy_on_a_slate_log_is_weighted_at_each_rows_own_slot_as_obp_does(write_config, slate_files,
                                                                                          tmp_path):
    """A policy given by arbitrary slot probabilities, on complete 3-slot impressions: its IIPS is Open Bandit
    Pipeline's IPW with a position, the mean over test rows of ``action_dist[i, a_i, position_i] / pscore_i * r_i``,
    computed here from the files alone."""
    log = pd.read_csv(slate_files / "interactions.csv")
    cut = 3 * (len(log) // 6)  # an impression boundary: 3 rows each
    log.iloc[:cut].to_csv(slate_files / "train.csv", index=False)
    test = log.iloc[cut:].reset_index(drop=True)
    test.to_csv(slate_files / "test.csv", index=False)
    items = pd.read_csv(slate_files / "items.csv")["item_id"].to_numpy()
    rng = np.random.default_rng(0)
    rows = np.arange(1, len(test) + 1)
    probabilities = rng.dirichlet(np.full(len(items), 0.3), size=(len(rows), 3))  # (row, position, item)
    frame = pd.DataFrame({"row": np.repeat(rows, 3 * len(items)), "position": np.tile(np.repeat([0, 1, 2], len(items)),
                                                                                      len(rows)),
                          "item_id": np.tile(items, 3 * len(rows)), "probability": probabilities.ravel()})
    frame.to_csv(tmp_path / "outside.csv", index=False)
    config = slate_config(write_config, slate_files, external_policies={"Outside": {"file": str(tmp_path / "outside.csv")}})
    config_text = config.read_text().replace(f"interactions: {slate_files / 'interactions.csv'}",
                                             f"train: {slate_files / 'train.csv'}\n    test: {slate_files / 'test.csv'}")
    config.write_text(config_text)
    assert main(["run", str(config), "--quiet"]) == 0
    estimates = pd.read_csv(run_dir(tmp_path) / "off_policy.csv").set_index(["policy", "estimator", "k"])
    at_own_slot = probabilities[np.arange(len(test)), test["position"].to_numpy() - 1,
                                np.searchsorted(items, test["item_id"].to_numpy())]
    obp_ipw = float(np.mean(at_own_slot / test["propensity"].to_numpy() * test["response"].to_numpy()))
    assert estimates.loc[("Outside", "IIPS", 3), "raw_value"] == pytest.approx(obp_ipw, rel=1e-9)
    assert ("Outside", "SIPS", 3) not in estimates.index  # slot marginals do not give whole-slate probabilities
    top = test["position"].to_numpy() == 1  # the first-item estimate reads the top slot's rows
    first = at_own_slot[top] / test["propensity"].to_numpy()[top] * test["response"].to_numpy()[top]
    assert estimates.loc[("Outside", "IPS", 1), "raw_value"] == pytest.approx(first.mean(), rel=1e-9)
