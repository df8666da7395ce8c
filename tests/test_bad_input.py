"""Bad input: one paragraph naming the file, key or column; exit code 2; no run directory at all."""

import subprocess
import sys

import pandas as pd
import pytest

from pipeline.cli import main


def run_cli(config_path, capsys, *extra):
    code = main(["run", str(config_path), "--quiet", *extra])
    captured = capsys.readouterr()
    return code, captured.err.strip()


def assert_clean_failure(code, message, runs_dir, *fragments):
    assert code == 2
    assert message.startswith("error: ") and "\n" not in message and "Traceback" not in message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    # Nothing that looks like a run, complete or partial (the features cache, .cache, is not a run).
    assert not runs_dir.exists() or [p for p in runs_dir.iterdir() if p.name != ".cache"] == []


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


def test_non_binary_response(byo_config, sample_files, capsys, runs_dir):
    path = sample_files / "interactions.csv"
    log = pd.read_csv(path)
    log.loc[5, "clicked"] = 3
    log.to_csv(path, index=False)
    code, message = run_cli(byo_config(), capsys)
    assert_clean_failure(code, message, runs_dir, "interactions.csv", "'clicked' must be a binary response",
                         "found 1 other value(s), e.g. 3")


def test_missing_response_value(byo_config, sample_files, capsys, runs_dir):
    path = sample_files / "interactions.csv"
    log = pd.read_csv(path)
    log.loc[7, "clicked"] = None
    log.to_csv(path, index=False)
    code, message = run_cli(byo_config(), capsys)
    assert_clean_failure(code, message, runs_dir, "'clicked' has 1 missing (NaN) value(s), first at data row 7")


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
    assert_clean_failure(code, message, runs_dir, "1 'item_id' value(s) in the interactions are missing from",
                         "items.csv, e.g. 4")


def test_user_missing_from_user_features(byo_config, sample_files, capsys, runs_dir):
    path = sample_files / "users.csv"
    users = pd.read_csv(path)
    users[users["user_id"] != 22].to_csv(path, index=False)
    code, message = run_cli(byo_config(), capsys)
    assert_clean_failure(code, message, runs_dir, "'user_id' value(s) in the interactions are missing", "users.csv")


def test_duplicate_item_rows(byo_config, sample_files, capsys, runs_dir):
    path = sample_files / "items.csv"
    items = pd.read_csv(path)
    pd.concat([items, items.head(1)]).to_csv(path, index=False)
    code, message = run_cli(byo_config(), capsys)
    assert_clean_failure(code, message, runs_dir, "items.csv", "'item_id' must identify one row each")


def test_empty_temporal_test_split(byo_config, sample_files, capsys, runs_dir):
    path = sample_files / "interactions.csv"
    pd.read_csv(path).head(3).to_csv(path, index=False)
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
    assert_clean_failure(code, message, runs_dir, "column 'p_log' (data.files.columns.propensity) is missing")


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
