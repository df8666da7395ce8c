"""Bad input: one paragraph naming the file, key or column; exit code 2; no run directory at all."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from helpers import assert_clean_failure, run_cli
from pipeline.cli import main


@pytest.fixture
def runs_dir(tmp_path):
    return tmp_path / "runs"


@pytest.mark.parametrize("override, fragments", [
    ("evaluation.topk=5", ["unknown key 'evaluation.topk'", "Did you mean 'top_k'"]),
    ("evaluation.top_k=many", ["'evaluation.top_k'", "valid integer", "'many'"]),
    ("split.test_fraction=0", ["'split.test_fraction'", "greater than 0"]),
    ("policies.Mine={learning_policy: LinUBC}", ["'policies.Mine'", "unknown learning_policy 'LinUBC'", "LinUCB"]),
])
def test_config_mistakes(byo_config, capsys, runs_dir, override, fragments):
    path = byo_config()
    code, message = run_cli(path, capsys, "--set", override)
    assert_clean_failure(code, message, runs_dir, str(path), *fragments)


def test_missing_data_file(byo_config, sample_files, capsys, runs_dir):
    (sample_files / "users.csv").unlink()
    code, message = run_cli(byo_config(), capsys)
    assert_clean_failure(code, message, runs_dir, "data.files.user_features", "users.csv does not exist")


def test_missing_required_column(byo_config, sample_files, capsys, runs_dir):
    path = sample_files / "interactions.csv"
    pd.read_csv(path).drop(columns="clicked").to_csv(path, index=False)
    code, message = run_cli(byo_config(), capsys)
    assert_clean_failure(code, message, runs_dir, "interactions.csv", "missing required column 'clicked'",
                         "data.files.columns.response", "found columns: user_id, item_id, timestamp")


@pytest.mark.parametrize("values, changes, fragments", [
    # a 3 makes the log real-valued ([0, 3], observed): the sample config's Thompson-sampling policy cannot learn
    ({5: 3}, {}, ["policy 'ClustersTS'", "learns from binary rewards", "real-valued rewards in [0, 3], observed"]),
    ({5: -1.5}, {}, ["policy 'Popularity'", "learns from non-negative rewards", "[-1.5, 1]"]),
    ({5: 3}, {"data__files__reward_range": [0, 2]}, ["'clicked'", "1 value(s) outside data.files.reward_range [0, 2]",
                                                     "e.g. 3"]),
    ({5: "lots"}, {}, ["interactions.csv", "'clicked' must hold numbers", "found 1 other value(s), e.g. 'lots'"]),
    ({5: 3}, {"policies": {"LinUCB": {"learning_policy": "LinUCB"}}, "evaluation__replay__enabled": True},
     ["evaluation.replay.enabled", "needs 0/1 responses"]),
])
def test_responses_policies_cannot_learn_from(byo_config, sample_files, capsys, runs_dir, values, changes, fragments):
    path = sample_files / "interactions.csv"
    log = pd.read_csv(path)
    log["clicked"] = log["clicked"].astype(object)
    for row, value in values.items():
        log.loc[row, "clicked"] = value
    log.to_csv(path, index=False)
    code, message = run_cli(byo_config(**changes), capsys)
    assert_clean_failure(code, message, runs_dir, *fragments)


def test_a_reward_range_must_be_increasing(byo_config, capsys, runs_dir):
    code, message = run_cli(byo_config(data__files__reward_range=[5, 5]), capsys)
    assert_clean_failure(code, message, runs_dir, "reward_range", "finite low < high")


def test_missing_response_value(byo_config, sample_files, capsys, runs_dir):
    path = sample_files / "interactions.csv"
    log = pd.read_csv(path)
    log.loc[7, "clicked"] = None
    log.to_csv(path, index=False)
    code, message = run_cli(byo_config(), capsys)
    assert_clean_failure(code, message, runs_dir, "'clicked' has 1 missing (NaN) value(s), first at row 8")


@pytest.mark.parametrize("table, column, id_column", [("users.csv", "age", "user_id"), ("items.csv", "price", "item_id")])
def test_nan_in_features(byo_config, sample_files, capsys, runs_dir, table, column, id_column):
    path = sample_files / table
    frame = pd.read_csv(path)
    frame.loc[2, column] = float("nan")
    frame.to_csv(path, index=False)
    code, message = run_cli(byo_config(), capsys)
    assert_clean_failure(code, message, runs_dir, table, f"feature column '{column}' has 1 missing",
                         f"{id_column} {int(frame.loc[2, id_column])}", "features.exclude")


def test_item_missing_from_item_features(byo_config, sample_files, capsys, runs_dir):
    path = sample_files / "items.csv"
    items = pd.read_csv(path)
    items[items["item_id"] != 4].to_csv(path, index=False)
    code, message = run_cli(byo_config(), capsys)
    assert_clean_failure(code, message, runs_dir, "1 'item_id' value(s) in 115 of the 4,000 interactions are missing",
                         "items.csv, e.g. 4")


def test_user_missing_from_user_features(byo_config, sample_files, capsys, runs_dir):
    path = sample_files / "users.csv"
    users = pd.read_csv(path)
    users[users["user_id"] != 22].to_csv(path, index=False)
    code, message = run_cli(byo_config(), capsys)
    assert_clean_failure(code, message, runs_dir, "'user_id' value(s) in", "interactions are missing from", "users.csv",
                         "unknown_users: drop")


def test_duplicate_item_rows(byo_config, sample_files, capsys, runs_dir):
    path = sample_files / "items.csv"
    items = pd.read_csv(path)
    pd.concat([items, items.head(1)]).to_csv(path, index=False)
    code, message = run_cli(byo_config(), capsys)
    assert_clean_failure(code, message, runs_dir, "items.csv", "'item_id' must identify one row each")


def test_empty_temporal_test_split(byo_config, sample_files, capsys, runs_dir):
    path = sample_files / "interactions.csv"
    log = pd.read_csv(path)
    pd.concat([log[log["clicked"] == 1].head(1), log[log["clicked"] == 0].head(2)]).to_csv(path, index=False)
    code, message = run_cli(byo_config(split__test_fraction=0.1), capsys)
    assert_clean_failure(code, message, runs_dir, "interactions.csv", "the test split of fold 0 is empty")


def test_empty_given_test_file(byo_config, sample_files, capsys, runs_dir):
    log = pd.read_csv(sample_files / "interactions.csv")
    log.to_csv(sample_files / "train.csv", index=False)
    log.head(0).to_csv(sample_files / "test.csv", index=False)
    files = {"train": str(sample_files / "train.csv"), "test": str(sample_files / "test.csv"),
             "user_features": str(sample_files / "users.csv"), "columns": {"response": "clicked"}}
    code, message = run_cli(byo_config(data__files=files, split__method=None), capsys)
    assert_clean_failure(code, message, runs_dir, "data.files.test", "test.csv has no rows")


def test_temporal_split_needs_a_timestamp(byo_config, sample_files, capsys, runs_dir):
    path = sample_files / "interactions.csv"
    pd.read_csv(path).drop(columns="timestamp").to_csv(path, index=False)
    files = {"interactions": str(path), "user_features": str(sample_files / "users.csv"),
             "columns": {"response": "clicked"}}
    code, message = run_cli(byo_config(data__files=files), capsys)
    assert_clean_failure(code, message, runs_dir, "split.method is 'temporal'", "no timestamp column",
                         "split.method: kfold")


def test_explicitly_named_optional_column_must_exist(byo_config, capsys, runs_dir):
    code, message = run_cli(byo_config(), capsys, "--set", "data.files.columns.propensity=p_log")
    assert_clean_failure(code, message, runs_dir, "column 'p_log' (data.files.columns.propensity) is missing",
                         "(data.files.columns.propensity from --set)")


def test_contextual_policy_without_any_context(byo_config, sample_files, capsys, runs_dir):
    files = {"interactions": str(sample_files / "interactions.csv"), "columns": {"response": "clicked"}}
    code, message = run_cli(byo_config(data__files=files), capsys)
    assert_clean_failure(code, message, runs_dir, "policies ['LinGreedy', 'LinUCB', 'LinTS', 'ClustersTS'] need "
                         "context features", "data.files.user_features")


def test_unsupported_file_type(byo_config, sample_files, capsys, runs_dir):
    (sample_files / "users.csv").rename(sample_files / "users.xlsx")
    code, message = run_cli(byo_config(data__files__user_features=str(sample_files / "users.xlsx")), capsys)
    assert_clean_failure(code, message, runs_dir, "users.xlsx has suffix '.xlsx'; expected one of .csv, .parquet")


def test_module_entry_point_exits_non_zero(byo_config, runs_dir):
    result = subprocess.run([sys.executable, "-m", "pipeline", "run", str(byo_config()), "--set", "seed=x"],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert "'seed' (from --set): Input should be a valid integer" in result.stderr
    assert not runs_dir.exists()


def test_time_flags_need_date_time_stamps(byo_config, sample_files, capsys, runs_dir):
    path = sample_files / "interactions.csv"
    log = pd.read_csv(path)
    log["timestamp"] = range(len(log))  # sequence numbers order events but carry no time of day
    log.to_csv(path, index=False)
    code, message = run_cli(byo_config(features__time_flags=True), capsys)
    assert_clean_failure(code, message, runs_dir, "features.time_flags needs date-time timestamps", "int64")


def test_explicit_item_text_column_must_exist(byo_config, capsys, runs_dir):
    code, message = run_cli(byo_config(), capsys, "--set", "features.item_text.columns=[title]")
    assert_clean_failure(code, message, runs_dir, "items.csv", "column(s) ['title'] named in features.item_text.columns",
                         "found columns: item_id, name, description, category, price")


# ---------------------------------------------------------------------------------------------------------------
# A wider catalog: each case changes the sample files or the config as a user might, and the run must end in one
# paragraph that names the culprit, exit code 2 and no run directory.
def _write(frame_or_text, path):
    if isinstance(frame_or_text, str):
        path.write_text(frame_or_text)
    elif path.suffix == ".parquet":
        frame_or_text.to_parquet(path, index=False)
    else:
        frame_or_text.to_csv(path, index=False)
    return str(path)


def _no_clicks(files):
    log = pd.read_csv(files / "interactions.csv")
    return {"data__files__interactions": _write(log.assign(clicked=0), files / "interactions.csv")}


def _blank_text_csv(files):
    items = pd.read_csv(files / "items.csv").assign(name="   ", description=" ")
    return {"data__files__item_features": _write(items, files / "items.csv")}


def _empty_text_parquet(files):
    items = pd.read_csv(files / "items.csv").assign(name="", description="")
    return {"data__files__item_features": _write(items, files / "items.parquet")}


def _min_df_too_high(files):
    return {"features__item_text": {"columns": ["name", "description"],
                                    "schema": {"transform": [["tfidf", {"min_df": 1000}], ["svd", {"n_components": 8}]]}}}


def _few_rows_for_clusters(files):
    log = pd.read_csv(files / "interactions.csv")
    few = pd.concat([log[log["clicked"] == 1].head(2), log[log["clicked"] == 0].head(2)])
    return {"data__files__interactions": _write(few, files / "interactions.csv"), "evaluation__top_k": 1,
            "evaluation__k_list": [1], "evaluation__leaderboard_k": 1}


def _data_path_is_a_directory(files):
    return {"data__files__interactions": str(files)}


def _output_under_a_file(files):
    return {"run__output_dir": str(files / "items.csv" / "runs")}


def _extra_field_in_a_row(files):
    lines = (files / "interactions.csv").read_text().splitlines()
    lines[10] += ",surprise"  # line 11 of the file, data row 10
    return {"data__files__interactions": _write("\n".join(lines) + "\n", files / "interactions.csv")}


def _unreadable_timestamp(files):
    log = pd.read_csv(files / "interactions.csv")
    log.loc[41, "timestamp"] = "yesterday-ish"
    return {"data__files__interactions": _write(log, files / "interactions.csv")}


def _two_timestamp_formats(files):
    log = pd.read_csv(files / "interactions.csv")
    log.loc[5, "timestamp"] = "05/01/2026 10:00"
    return {"data__files__interactions": _write(log, files / "interactions.csv")}


def _non_whole_float_ids(files):
    log = pd.read_csv(files / "interactions.csv")
    log["user_id"] = log["user_id"] + 0.5
    return {"data__files__interactions": _write(log, files / "interactions.parquet")}


def _list_longer_than_catalog(files):
    return {"evaluation__top_k": 50, "evaluation__k_list": [1, 50], "evaluation__leaderboard_k": 50}


@pytest.mark.parametrize("make, fragments", [
    (_no_clicks, ["column 'clicked' (data.files.columns.response) is 0 in all 4000 rows", "interactions.csv"]),
    (_blank_text_csv, ["items.csv", "TextWiser could not featurize", "empty vocabulary", "40 of 40 item(s) have no text",
                       "features.item_text.columns: []"]),
    (_empty_text_parquet, ["items.parquet", "empty vocabulary", "40 of 40 item(s) have no text"]),
    (_min_df_too_high, ["items.csv", "min_df", "features.item_text.schema"]),
    (_few_rows_for_clusters, ["policy 'ClustersTS' needs at least 5 training rows", "n_clusters=5", "has 3"]),
    (_data_path_is_a_directory, ["data.files.interactions", "is a directory; expected a CSV or Parquet file"]),
    (_output_under_a_file, ["run.output_dir", "items.csv", "Not a directory"]),
    (_extra_field_in_a_row, ["interactions.csv", "row 10 (line 11 of the file)"]),
    (_unreadable_timestamp, ["interactions.csv", "'timestamp'", "'yesterday-ish' at row 42"]),
    (_two_timestamp_formats, ["not in the format of row 1 ('2026-01-05 00:02:09'): '05/01/2026 10:00' at row 6"]),
    (_non_whole_float_ids, ["interactions are missing from", "float64 ids",
                            "int64 ids", "write the ids the same way in both"]),
    (_list_longer_than_catalog, ["evaluation.top_k=50", "offers only 40 item(s)", "at most 40"]),
])
def test_bad_data_and_settings_catalog(byo_config, sample_files, capsys, runs_dir, make, fragments):
    code, message = run_cli(byo_config(**make(sample_files)), capsys)
    assert_clean_failure(code, message, runs_dir, *fragments)


def test_whole_number_float_ids_match_integer_ids(byo_config, sample_files, capsys, runs_dir):
    """22.0 in a Parquet file (a column that passed through floats) is the user 22 of users.csv."""
    log = pd.read_csv(sample_files / "interactions.csv")
    log["user_id"] = log["user_id"].astype(float)
    path = _write(log, sample_files / "interactions.parquet")
    code, _ = run_cli(byo_config(data__files__interactions=path), capsys)
    assert code == 0
    recs = pd.read_parquet(next(runs_dir.glob("*-config")) / "recommendations.parquet")
    assert set(recs["context_id"]) <= set(log["user_id"].astype(int)) and recs["context_id"].dtype == "int64"


@pytest.mark.parametrize("text, fragments", [
    ("policies:\n  LinUCB: {learning_policy: LinUCB}\n  LinUCB: {learning_policy: LinTS}\n",
     ["the key 'LinUCB' appears twice in one block, at lines 2 and 3"]),
    ("seed: 1\nevaluation: {top_k: 5}\nseed: 2\n", ["the key 'seed' appears twice in one block, at lines 1 and 3"]),
])
def test_repeated_yaml_keys_are_rejected_with_their_lines(write_config, tmp_path, capsys, runs_dir, text, fragments):
    path = tmp_path / "repeated.yaml"
    path.write_text(text)
    code, message = run_cli(path, capsys)
    assert_clean_failure(code, message, runs_dir, str(path), *fragments)


def test_config_that_is_not_utf8(tmp_path, capsys, runs_dir):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("seed: 1\nrun: {name: caf\u00e9}\n".encode("latin-1"))
    code, message = run_cli(path, capsys)
    assert_clean_failure(code, message, runs_dir, str(path), "not a UTF-8 text file", "byte 0xe9 at line 2")


def test_config_path_that_is_a_directory(tmp_path, capsys, runs_dir):
    code, message = run_cli(tmp_path, capsys)
    assert_clean_failure(code, message, runs_dir, str(tmp_path), "is a directory")


@pytest.mark.parametrize("override, fragments", [
    ("data.files.columns.timestamp=user_id", ["'data.files.columns' (from --set)",
                                              "'user_id' and 'timestamp' both name the column 'user_id'"]),
    ("policies.LinUCB.params.alpha=-1", ["'policies.LinUCB' (from --set)", "alpha cannot be negative"]),
    ("policies.ClustersTS.neighborhood_params.n_clusters=0", ["'policies.ClustersTS' (from --set)", "n_clusters"]),
    ("evaluation.k_list=[1,3,9]", ["'evaluation' (from --set)", "k_list"]),
    ("run.name=a/b", ["'run.name' (from --set)", "without / or \\"]),
    ("features.context_scaling=robust", ["'features.context_scaling' (from --set)", "'standard', 'minmax' or 'none'"]),
])
def test_values_given_with_set_are_blamed_on_set(byo_config, capsys, runs_dir, override, fragments):
    code, message = run_cli(byo_config(), capsys, "--set", override)
    assert_clean_failure(code, message, runs_dir, *fragments)


def test_synthetic_lists_longer_than_the_shop(tiny_config, capsys, tmp_path):
    code, message = run_cli(tiny_config, capsys, "--set", "data.synthetic.n_items=4")
    assert_clean_failure(code, message, tmp_path / "runs", "evaluation.top_k=5 is more than data.synthetic.n_items=4",
                         "(from --set)")


def test_a_full_disk_is_a_user_error_and_keeps_nothing(tiny_config, capsys, tmp_path, monkeypatch):
    import errno

    from pipeline.rundir import RunDirectory

    def full(self, name, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(self.file(f"{name}.parquet")))

    monkeypatch.setattr(RunDirectory, "write_table", full)
    code, message = run_cli(tiny_config, capsys)
    assert_clean_failure(code, message, tmp_path / "runs", "No space left on device", "run.output_dir")


def test_a_read_only_output_folder_is_a_user_error(tiny_config, capsys, tmp_path, monkeypatch):
    import errno

    from pipeline.rundir import RunDirectory

    def read_only(self):
        raise OSError(errno.EROFS, "Read-only file system", str(self.output_dir))

    monkeypatch.setattr(RunDirectory, "_reserve", read_only)
    code, message = run_cli(tiny_config, capsys)
    assert_clean_failure(code, message, tmp_path / "runs", "run.output_dir", "Read-only file system")


def test_a_bug_is_reported_as_internal_with_its_traceback_saved(tiny_config, capsys, tmp_path, monkeypatch):
    import pipeline.runner

    def broken(*args, **kwargs):
        raise ZeroDivisionError("a bug of ours")

    monkeypatch.setattr(pipeline.runner, "make_folds", broken)
    code = main(["run", str(tiny_config), "--quiet"])
    message = capsys.readouterr().err.strip()
    assert code == 1
    assert message.startswith("internal error: this is a bug in the pipeline") and "\n" not in message
    reports = list((tmp_path / "runs" / ".errors").glob("error-*.txt"))
    assert len(reports) == 1 and str(reports[0]) in message
    assert "Traceback" in reports[0].read_text() and "ZeroDivisionError: a bug of ours" in reports[0].read_text()
    assert [p.name for p in (tmp_path / "runs").iterdir() if p.name not in (".cache", ".errors")] == []


def test_a_test_split_without_clicks_says_why_its_replay_metrics_are_missing(byo_config, sample_files, capsys,
                                                                           runs_dir):
    path = sample_files / "interactions.csv"
    log = pd.read_csv(path, parse_dates=["timestamp"])
    order = np.argsort(log["timestamp"].to_numpy(), kind="stable")
    log.loc[order[-1000:], "clicked"] = 0  # the temporal test split: the latest 25% of 4,000 events
    log.to_csv(path, index=False)
    code = main(["run", str(byo_config()), "--quiet"])
    printed = capsys.readouterr().out
    assert code == 0
    note = "seed 7 fold 0: the test split holds no click among its 1000 events"
    assert f"note: {note}" in printed and "n/a" in printed
    run = json.loads(next(runs_dir.glob("*-config/run.json")).read_text())
    assert any(n.startswith(note) for n in run["notes"])


@pytest.mark.parametrize("target, extra, fragments", [
    ("missing", [], ["does not exist"]),
    ("file", [], ["is a file, not a run directory"]),
    ("partial", [], ["is not a finished run (it has no run.json"]),
    ("run", ["--batch-size", "0"], ["argument --batch-size", "at least 1; got 0"]),
    ("run", ["--port", "70000"], ["argument --port", "from 1 to 65535; got '70000'"]),
    ("run", ["--port", "-1"], ["argument --port", "from 1 to 65535; got '-1'"]),
    ("run", ["--snapshot-every", "x"], ["argument --snapshot-every", "expected a whole number; got 'x'"]),
])
def test_serve_refuses_what_it_cannot_serve(tmp_path, capsys, target, extra, fragments):
    paths = {"missing": tmp_path / "nope", "file": tmp_path / "a.txt", "partial": tmp_path / ".partial-x",
             "run": tmp_path / "20260101-000000-done"}
    paths["file"].write_text("x")
    paths["partial"].mkdir()
    paths["run"].mkdir()
    (paths["run"] / "run.json").write_text('{"status": "complete", "seeds": [1]}')
    argv = ["serve", str(paths[target]), "--policy", "LinUCB", *extra]
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse's own refusal of a flag value
        code = exit_.code
    message = capsys.readouterr().err.strip()
    assert code == 2 and "Traceback" not in message
    for fragment in fragments:
        assert fragment in message, (fragment, message)


def test_serve_on_a_port_in_use_is_a_user_error(tmp_path, capsys):
    import socket

    run = tmp_path / "20260101-000000-done"
    run.mkdir()
    (run / "run.json").write_text('{"status": "complete", "seeds": [1]}')
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        code = main(["serve", str(run), "--policy", "LinUCB", "--port", str(busy.getsockname()[1])])
    message = capsys.readouterr().err.strip()
    assert code == 2 and message.startswith("error: serve: cannot listen on 127.0.0.1:")
    assert "Address already in use" in message and "choose another --port" in message
