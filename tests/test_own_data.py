"""Your own data, never changed silently: free-text columns, wide one-hot encodings, events of unknown users."""

import json

import joblib
import pandas as pd

from helpers import assert_clean_failure, run_cli
from pipeline.cli import main


def only_run(root):
    (path,) = [p for p in (root / "runs").iterdir() if not p.name.startswith(".")]
    return path


def test_free_text_columns_are_detected_said_and_routed_to_textwiser_when_named(byo_config, sample_files, tmp_path,
                                                                               capsys):
    items = pd.read_csv(sample_files / "items.csv")
    items["title"] = items["name"] + " in " + items["category"] + ", our pick"  # long, distinct, several words
    items["blurb"] = items["description"].str.split(".").str[0]
    items["size"] = ["S", "M", "L", "XL"] * (len(items) // 4) + ["M"] * (len(items) % 4)  # a short category: kept
    items.to_csv(sample_files / "items.csv", index=False)
    users = pd.read_csv(sample_files / "users.csv")
    users["bio"] = [f"I like {x} things and long walks number {i}" for i, x in enumerate(users["location"])]
    users.to_csv(sample_files / "users.csv", index=False)
    assert main(["run", str(byo_config()), "--quiet"]) == 0
    out = capsys.readouterr().out
    run = only_run(tmp_path)
    notes = json.loads((run / "run.json").read_text())["notes"]
    for column, key in (("title", "features.item_categorical"), ("blurb", "features.item_categorical"),
                        ("bio", "features.context_categorical")):
        (note,) = [n for n in notes if f"column {column!r} looks like free text" in n]
        assert key in note and f"note: {note}" in out
    assert all("'size'" not in n for n in notes)
    assert "features.item_text.columns" in next(n for n in notes if "'title'" in n)
    assert "features.item_text.columns" not in next(n for n in notes if "'bio'" in n)  # TextWiser embeds items only
    featurizer = joblib.load(run / "artifacts" / "seed_7" / "item_featurizer.joblib")
    assert "size" in featurizer.tabular.categorical and not {"title", "blurb"} & set(featurizer.tabular.categorical)
    context = joblib.load(run / "artifacts" / "seed_7" / "fold_0" / "context_featurizer.joblib")
    assert "bio" not in context.categorical

    config = byo_config(features__item_text__columns=["name", "description", "title", "blurb"])
    assert main(["run", str(config), "--quiet"]) == 0
    newest = sorted(p for p in (tmp_path / "runs").iterdir() if not p.name.startswith("."))[-1]
    notes = json.loads((newest / "run.json").read_text())["notes"]
    assert not [n for n in notes if "'title'" in n or "'blurb'" in n]
    featurizer = joblib.load(newest / "artifacts" / "seed_7" / "item_featurizer.joblib")
    assert featurizer.text_columns == ["name", "description", "title", "blurb"]


def test_a_wide_one_hot_encoding_is_said(byo_config, sample_files, tmp_path):
    users = pd.read_csv(sample_files / "users.csv")
    users["zip"] = [f"Z{i:04d}" for i in range(len(users))]  # one level per user, but short: not free text
    users.to_csv(sample_files / "users.csv", index=False)
    assert main(["run", str(byo_config(features__one_hot_warning=40)), "--quiet"]) == 0
    notes = json.loads((only_run(tmp_path) / "run.json").read_text())["notes"]
    levels = users["zip"].nunique()
    assert any(f"'zip' ({levels:,} levels)" in n and "50 most frequent" in n for n in notes)
    width = 51 + sum(users[c].nunique() for c in ("gender", "location", "traffic_source", "membership"))
    assert any(f"become {width:,} one-hot columns" in n and "features.one_hot_warning = 40" in n for n in notes)


def test_events_of_users_missing_from_the_user_table_are_refused_or_dropped_and_counted(byo_config, sample_files,
                                                                                      tmp_path, capsys):
    users = pd.read_csv(sample_files / "users.csv")
    interactions = pd.read_csv(sample_files / "interactions.csv")
    gone = users["user_id"].iloc[:15]
    users.iloc[15:].to_csv(sample_files / "users.csv", index=False)
    expected = int(interactions["user_id"].isin(gone).sum())
    code, message = run_cli(byo_config(), capsys)
    assert_clean_failure(code, message, tmp_path / "runs", "15 'user_id' value(s)", f"{expected:,} of the",
                         "data.files.unknown_users: drop")
    assert main(["run", str(byo_config(data__files__unknown_users="drop")), "--quiet"]) == 0
    out = capsys.readouterr().out
    info = json.loads((only_run(tmp_path) / "run.json").read_text())
    assert info["data"]["dropped_events"] == {"unknown_users": expected}
    assert info["data"]["n_events"] == len(interactions) - expected
    assert f"note: {expected:,} of the {len(interactions):,} events" in out and "were dropped" in out
