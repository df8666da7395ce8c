"""The dashboard on small real runs (Streamlit's AppTest), including a deliberately broken run directory."""

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from streamlit.testing.v1 import AppTest

from pipeline.config import load_config
from pipeline.runner import run_pipeline

FAST_NL = {"embedding_dim": 4, "hidden": [8], "warm_start_epochs": 2, "retrain_every": 200, "retrain_epochs": 1}
SETTINGS = {
    "seeds": [1, 2],
    "data": {"synthetic": {"n_users": 150, "n_items": 25, "n_events": 1200, "n_days": 7}},
    "features": {"item_text": {"schema": {"transform": ["tfidf", ["svd", {"n_components": 4}]]}}},
    "policies": {"Random": {"learning_policy": "Random"}, "LinUCB": {"learning_policy": "LinUCB"},
                 "NeuralLinear": {"learning_policy": "NeuralLinear", "params": FAST_NL}},
    "evaluation": {"top_k": 5, "k_list": [1, 3, 5], "leaderboard_k": 3, "bootstrap_resamples": 50,
                   "replay": {"enabled": True, "batch_size": 20}},
    "simulation": {"enabled": True, "steps": 400, "batch_size": 100, "warmup": 100, "scenario": "shock",
                   "shock_step": 200, "rolling_window": 100, "sessions": {"max_steps": 4},
                   "session_comparison": {"enabled": True, "policies": ["Random", "LinUCB"], "rl_agents": ["DQN"],
                                          "train_steps": 200, "batch_size": 50, "cohort": 15,
                                          "ab_test": {"tests": 1, "aa_tests": 1, "users": 30, "enrollment_days": 2,
                                                      "window_days": 2}}},
}
APP = str(Path(__file__).resolve().parent.parent / "dashboard" / "app.py")
PAGES = ["Decision", "Leaderboard", "Metrics at k", "Off-policy vs truth", "Online simulation", "Sessions and A/B tests",
         "Recommendations explorer", "Items", "Config and compare runs"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("dash")
    made = {}
    slates = {**SETTINGS, "seeds": None, "seed": 4, "simulation": {},
              "data": {"synthetic": {**SETTINGS["data"]["synthetic"], "slate_size": 3, "logging": "softmax"}},
              "policies": {"Random": {"learning_policy": "Random"}, "LinUCB": {"learning_policy": "LinUCB"}}}
    for name, settings in (("slates", slates), ("main", SETTINGS),
                           ("other", {**SETTINGS, "seeds": None, "seed": 5, "simulation": {}})):  # other: newest
        path = root / f"{name}.yaml"
        path.write_text(yaml.safe_dump({**settings, "run": {"output_dir": str(root / "runs"), "name": name}}))
        made[name] = run_pipeline(load_config(path), progress=False).path
    broken = root / "runs" / "20000101-000000-broken"
    shutil.copytree(made["main"], broken)
    (broken / "metrics.parquet").write_bytes(b"not a parquet file")
    (broken / "simulation.parquet").unlink()
    unreadable = root / "runs" / "20000101-000000-unreadable"
    unreadable.mkdir()
    (unreadable / "run.json").write_text("{ not json")
    return root / "runs", made, broken


def open_app(runs_dir, monkeypatch, run_name=None, page=None):
    monkeypatch.setenv("BANDIT_RUNS_DIR", str(runs_dir))
    at = AppTest.from_file(APP, default_timeout=60).run()
    if run_name:
        at.sidebar.selectbox[0].set_value(run_name).run()
    if page:
        at.sidebar.radio[0].set_value(page).run()
    return at


@pytest.mark.parametrize("page", PAGES)
def test_every_page_renders_without_errors(runs, monkeypatch, page):
    runs_dir, made, _ = runs
    at = open_app(runs_dir, monkeypatch, made["main"].name, page)
    assert not at.exception and not at.error
    assert at.title[0].value == page


def test_opens_on_the_newest_run_and_summarises_it(runs, monkeypatch):
    runs_dir, made, _ = runs
    at = open_app(runs_dir, monkeypatch)
    assert at.sidebar.selectbox[0].value == made["other"].name  # runs are named by start time: newest first
    assert any("unreadable" in w.value for w in at.sidebar.warning)
    at.sidebar.selectbox[0].set_value(made["main"].name).run()
    summary = at.sidebar.markdown[0].value
    assert "**seeds** 1, 2" in summary and "1,200 events, 25 items" in summary and "**ground truth** yes" in summary


def test_leaderboard_shows_the_metrics_file_values_with_intervals(runs, monkeypatch):
    runs_dir, made, _ = runs
    at = open_app(runs_dir, monkeypatch, made["main"].name, "Leaderboard")
    shown = at.dataframe[0].value
    across = pd.read_parquet(made["main"] / "seed_summary.parquet").set_index(["policy", "metric", "k"])
    row = across.loc[("LinUCB", "true_ctr", 3)]
    assert row["interval"].startswith("none")  # two seeds: no t-interval; the cell shows the bootstrap interval
    metrics = pd.read_parquet(made["main"] / "metrics.parquet").query("policy == 'LinUCB' and metric == 'true_ctr' "
                                                                      "and k == 3")
    low, high = metrics["low"].mean(), metrics["high"].mean()
    assert shown.loc["LinUCB", "true_ctr@3"] == f"{row['mean']:.4f} [{low:.4f}, {high:.4f}]"
    assert list(shown.index)[-1] == "Oracle" and "Logging" in shown.index
    assert list(shown.columns)[0] == "true_ctr@3"  # the decision's metric leads
    # Marked best only where the paired difference to the runner-up excludes 0 (recomputed from draws.parquet).
    draws = pd.read_parquet(made["main"] / "draws.parquet").query("label == 'true_ctr@3' and policy != 'Oracle'")
    pooled = draws.groupby(["policy", "resample"])["value"].mean().unstack()
    means = across.xs(("true_ctr", 3), level=("metric", "k"))["mean"].drop("Oracle")
    leader, runner_up = means.sort_values(ascending=False).index[:2]
    significant = (pooled.loc[leader] - pooled.loc[runner_up]).quantile(0.025) > 0
    assert at.session_state["leaderboard_best"]["true_ctr@3"] == ([leader] if significant else [])
    assert at.session_state["leaderboard_best"]["coverage@3"] == []  # never marked
    at.selectbox[0].set_value(1).run()
    assert "true_ctr@1" in at.dataframe[0].value.columns
    assert at.query_params["k"] == ["1"] or at.query_params["k"] == "1"  # the choice lives in the URL


def test_leaderboard_says_why_cells_are_missing(runs, monkeypatch, tmp_path):
    import json

    runs_dir, made, _ = runs
    noted = tmp_path / "runs" / "20000101-000000-noted"
    shutil.copytree(made["other"], noted)
    info = json.loads((noted / "run.json").read_text())
    note = "seed 5 fold 0: the test split holds no click among its 240 events, so every replay metric is n/a"
    (noted / "run.json").write_text(json.dumps({**info, "name": noted.name, "notes": [note]}))
    at = open_app(noted.parent, monkeypatch, noted.name, "Leaderboard")
    assert note in [warning.value for warning in at.warning]


def test_leaderboard_cells_say_how_many_folds_had_no_value(runs, monkeypatch, tmp_path):
    runs_dir, made, _ = runs
    holed = tmp_path / "runs" / made["main"].name
    shutil.copytree(made["main"], holed)
    metrics = pd.read_parquet(holed / "metrics.parquet")
    hole = (metrics["policy"] == "LinUCB") & (metrics["metric"] == "CTR") & (metrics["k"] == 3) & (metrics["seed"] == 2)
    metrics.loc[hole, ["value", "low", "high"]] = np.nan  # seed 2's only fold has no value
    metrics.to_parquet(holed / "metrics.parquet")
    at = open_app(holed.parent, monkeypatch, holed.name, "Leaderboard")
    cells = pd.concat([frame.value for frame in at.dataframe], axis=1)
    assert cells.loc["LinUCB", "CTR@3"].endswith("(n/a in 1 of 2 test folds)")
    assert "n/a in" not in cells.loc["Random", "CTR@3"]


def test_metrics_at_k_table_matches_the_run(runs, monkeypatch):
    runs_dir, made, _ = runs
    at = open_app(runs_dir, monkeypatch, made["main"].name, "Metrics at k")
    assert at.selectbox[0].value == "true_ctr"
    table = at.dataframe[0].value
    across = pd.read_parquet(made["main"] / "seed_summary.parquet").set_index(["policy", "metric", "k"])
    assert table.loc["Random", 5] == pytest.approx(round(across.loc[("Random", "true_ctr", 5), "mean"], 4))


def test_off_policy_and_simulation_pages_show_the_run_tables(runs, monkeypatch):
    runs_dir, made, _ = runs
    at = open_app(runs_dir, monkeypatch, made["main"].name, "Off-policy vs truth")
    estimates = at.dataframe[0].value.set_index(["policy", "estimator"])
    expected = pd.read_parquet(made["main"] / "off_policy.parquet").query("k == 3").groupby(
        ["policy", "estimator"])["value"].mean()  # the page opens on the leaderboard's k
    assert estimates.loc[("LinUCB", "DR"), "value"] == pytest.approx(round(expected.loc[("LinUCB", "DR")], 4))
    assert "truth" in estimates.columns
    at.sidebar.radio[0].set_value("Online simulation").run()
    assert any("Replay with learning" in header.value for header in at.subheader)
    assert any("market shock at step 200" in c.value for c in at.caption)
    summary = at.dataframe[0].value.set_index("policy")
    assert set(summary.index) == {"Random", "LinUCB", "NeuralLinear", "Oracle"}
    assert set(summary["recovered"]) <= {"yes", "not recovered"}


def test_sessions_page_shows_the_comparison_and_the_ab_tests(runs, monkeypatch):
    runs_dir, made, _ = runs
    at = open_app(runs_dir, monkeypatch, made["main"].name, "Sessions and A/B tests")
    shown = at.dataframe[0].value.set_index("agent")
    summary = pd.read_parquet(made["main"] / "sessions_summary.parquet").set_index("agent")
    assert set(shown.index) == {"Oracle", "Random", "LinUCB", "DQN"}
    value = summary.loc["DQN", "return_per_session"]
    assert shown.loc["DQN", "return / session"].startswith(f"{value:.4f} [")  # with its interval over seeds
    assert any("Tuning seeds" in c.value and "[1, 2]" in c.value for c in at.caption)
    assert any("Simulated A/B tests" in header.value for header in at.subheader)
    assert any("mSPRT's confidence sequence" in c.value for c in at.caption)
    other = open_app(runs_dir, monkeypatch, made["other"].name, "Sessions and A/B tests")
    assert not other.exception and any("not in this run" in i.value for i in other.info)


def test_a_slate_run_leads_with_the_slate_estimate_and_its_truth(runs, monkeypatch):
    runs_dir, made, _ = runs
    at = open_app(runs_dir, monkeypatch, made["slates"].name, "Leaderboard")
    assert not at.exception and not at.error
    cells = at.dataframe[0].value
    assert cells.columns[0] == "true_slate_ctr@3" and "IIPS@3" in cells.columns
    estimates = pd.read_parquet(made["slates"] / "off_policy.parquet")
    observed = estimates.query("policy == 'Logging' and estimator == 'observed_slate'")["value"].mean()
    assert cells.loc["Logging", "IIPS@3"].startswith(f"{observed:.4f}")  # the logging policy's own slates
    at.sidebar.radio[0].set_value("Off-policy vs truth").run()
    assert not at.exception and not at.error
    shown = at.dataframe[0].value
    assert set(shown["estimator"]) >= {"IIPS", "SIPS", "RIPS", "observed_slate"} and "DR" not in set(shown["estimator"])
    truth = pd.read_parquet(made["slates"] / "metrics.parquet").query("metric == 'true_slate_ctr' and k == 3")
    assert shown.set_index("policy")["truth"].groupby(level=0).first()["LinUCB"] == pytest.approx(
        truth.query("policy == 'LinUCB'")["value"].mean(), abs=5e-5)  # the page rounds to 4 places
    at.sidebar.radio[0].set_value("Recommendations explorer").run()  # a context is an impression here
    assert not at.exception and not at.error
    first_context = pd.read_parquet(made["slates"] / "test_contexts.parquet")["context_id"].iloc[0]
    assert at.dataframe[0].value["slate_id"].tolist() == [first_context]


def test_explorer_shows_each_policy_list_with_items_and_truth(runs, monkeypatch):
    runs_dir, made, _ = runs
    at = open_app(runs_dir, monkeypatch, made["main"].name, "Recommendations explorer")
    lists = [df.value for df in at.dataframe[1:]]
    recs = pd.read_parquet(made["main"] / "recommendations.parquet")
    first = recs[(recs["seed"] == 1) & (recs["fold"] == 0)]
    context = np.sort(first["context_id"].unique())[0]
    expected = first[(first["context_id"] == context) & (first["policy"] == "LinUCB")]["item_id"].tolist()
    linucb = next(frame for frame in lists if frame["item_id"].tolist() == expected)
    assert {"name", "category", "price", "true_click_probability"} <= set(linucb.columns)
    assert linucb["true_click_probability"].between(0, 1).all()
    at.radio[0].set_value("a context set by hand").run()
    assert not at.exception and not at.error
    assert len(at.dataframe) == 1 + 3  # the context, then one list per saved policy


def test_items_and_config_pages(runs, monkeypatch):
    runs_dir, made, _ = runs
    at = open_app(runs_dir, monkeypatch, made["main"].name, "Items")
    distinct = at.dataframe[0].value.set_index("policy")["distinct items shown"]
    exposure = pd.read_parquet(made["main"] / "item_exposure.parquet")
    assert distinct["Random"] == exposure[(exposure["seed"] == 1) & (exposure["policy"] == "Random")]["item_id"].nunique()
    at.sidebar.radio[0].set_value("Config and compare runs").run()
    assert "seeds:" in at.code[0].value
    diff = at.code[1].value  # the other run against this one
    assert "-seed: 5" in diff and "+seed: 42" in diff and "-seeds: null" in diff
    side_by_side = at.dataframe[0].value
    assert set(side_by_side.columns) == {made["other"].name, made["main"].name}
    assert side_by_side.loc["Oracle"].notna().all()


def test_a_broken_run_shows_messages_and_the_rest_keeps_working(runs, monkeypatch):
    runs_dir, _, broken = runs
    at = open_app(runs_dir, monkeypatch, broken.name, "Leaderboard")
    assert not at.exception
    assert any("metrics.parquet of run" in e.value and "cannot be read" in e.value for e in at.error)
    at.sidebar.radio[0].set_value("Online simulation").run()
    assert not at.exception and any("not in this run" in i.value for i in at.info)
    at.sidebar.radio[0].set_value("Recommendations explorer").run()
    assert not at.exception and not at.error and len(at.dataframe) > 1
    at.sidebar.radio[0].set_value("Config and compare runs").run()
    assert not at.exception and "seeds:" in at.code[0].value


def test_decision_page_comes_first_and_shows_decision_json(runs, monkeypatch):
    import json

    runs_dir, made, _ = runs
    at = open_app(runs_dir, monkeypatch, made["main"].name)
    assert at.title[0].value == "Decision"
    decision = json.loads((made["main"] / "decision.json").read_text())
    shown = at.dataframe[0].value.set_index("policy")
    assert set(shown.index) == {row["policy"] for row in decision["policies"]}
    top = max(decision["policies"], key=lambda row: row["value"])
    assert shown.loc[top["policy"], "value [95%]"] == f"{top['value']:.4f} [{top['low']:.4f}, {top['high']:.4f}]"
    banner = (at.success[0].value if decision["policy"] else at.warning[0].value)
    assert (decision["policy"] or "No decision") in banner
    assert any(decision["metric"] in markdown.value for markdown in at.markdown)


def test_page_and_run_come_from_the_url(runs, monkeypatch):
    runs_dir, made, _ = runs
    monkeypatch.setenv("BANDIT_RUNS_DIR", str(runs_dir))
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params["page"] = "Items"
    at.query_params["run"] = made["main"].name
    at.run()
    assert at.title[0].value == "Items" and at.sidebar.selectbox[0].value == made["main"].name
