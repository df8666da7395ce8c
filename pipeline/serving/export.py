"""``export-log``: the served log and its feedback as bring-your-own data, so ``pipeline run`` evaluates the next
candidates on production traffic (the loop from serving back to evaluation).

Every served response becomes one row per shown item: the request's context (as ``event_context`` columns),
the item, whether it was clicked (the feedback's reward; a shown item without feedback counts as not clicked,
so export after the feedback window for the late clicks to count), the time, and the probabilities the serving
policy gave it (``exploration.py``).  Lists of one item make a one-item log (``propensity``); longer lists a
slate log (``position``, ``slate_id``, ``propensity`` per item-position, ``slate_propensity``,
``cascade_propensity``; README "Slate logs").  A ``config.yaml`` beside the data reruns the run's policies on it.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pandas as pd
import redis
import yaml

from pipeline import layout
from pipeline.config import load_config
from pipeline.data.dataset import (CASCADE_PROPENSITY, ITEM_ID, POSITION, PROPENSITY, RESPONSE, SLATE_ID,
                                   SLATE_PROPENSITY, TIMESTAMP, USER_ID)
from pipeline.errors import ConfigError
from pipeline.serving.served_log import served_logs
from pipeline.serving.streams import ITEM_SEPARATOR, StreamKeys, decoded, ensure_partitions, stream_id

CHUNK = 10_000  # stream entries per read


def _entries(client, stream: str):
    """Every entry of a stream, oldest first, read in chunks."""
    after = "-"
    while chunk := client.xrange(stream, min=after, count=CHUNK):
        yield from chunk
        after = "(" + chunk[-1][0].decode()


def _responses(client, keys: StreamKeys):
    """(request id, time issued, fields) of every response in every replica's served log."""
    for stream in served_logs(client, keys):
        tag = stream.rsplit(":", 1)[1]
        for entry_id, fields in _entries(client, stream):
            entry_id = entry_id.decode()
            yield f"{tag}-{entry_id}", pd.Timestamp(stream_id(entry_id)[0], unit="ms"), decoded(fields)


def served_rows(client, keys: StreamKeys) -> pd.DataFrame:
    """One row per (response, shown item) with its context, rewards joined from every feedback partition, from
    every replica's served log, in time order; built a chunk of responses at a time (a million responses as
    Python dicts at once would not fit in memory)."""
    rewards: dict[tuple[str, str], float] = {}
    for p in range(ensure_partitions(client, keys, None, create=False)):
        for _, fields in _entries(client, keys.feedback(p)):
            fields = decoded(fields)
            rewards[(fields["request_id"], fields["item"])] = float(fields["reward"])
    frames, rows = [], []
    for request_id, issued, fields in _responses(client, keys):
        items = fields["items"].strip(ITEM_SEPARATOR).split(ITEM_SEPARATOR)
        propensities = json.loads(fields["propensities"])
        context = json.loads(fields["context"])
        for position, item in enumerate(items):
            rows.append({**context, USER_ID: request_id, ITEM_ID: item, RESPONSE: rewards.get((request_id, item), 0.0),
                         TIMESTAMP: issued, POSITION: position + 1, SLATE_ID: request_id,
                         PROPENSITY: propensities["position"][position], SLATE_PROPENSITY: propensities["slate"],
                         CASCADE_PROPENSITY: propensities["cascade"][position], "model_version": fields["version"]})
        if len(rows) >= CHUNK:
            frames.append(pd.DataFrame(rows))
            rows = []
    frames.append(pd.DataFrame(rows))
    table = pd.concat(frames, ignore_index=True)
    return table.sort_values([TIMESTAMP, SLATE_ID, POSITION], kind="stable", ignore_index=True) if len(table) else table


def export_served_log(run_dir: Path, policy: str, url: str, namespace: str, output: Path) -> str:
    """Write ``interactions.csv``, ``items.csv`` (when the run has an item table) and ``config.yaml`` to
    ``output``; returns a summary to print."""
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise ConfigError(f"--output {output}: exists and is not an empty folder; give a new folder")
    try:
        client = redis.Redis.from_url(url)
        rows = served_rows(client, StreamKeys(namespace))
    except redis.RedisError as error:
        raise ConfigError(f"--store {url[:60]}: cannot read Redis ({str(error)[:200]})") from None
    if rows.empty:
        raise ConfigError(f"namespace {namespace!r} has no served responses to export")
    context_columns = [c for c in rows.columns if c not in (USER_ID, ITEM_ID, RESPONSE, TIMESTAMP, POSITION, SLATE_ID,
                                                          PROPENSITY, SLATE_PROPENSITY, CASCADE_PROPENSITY,
                                                          "model_version")]
    list_length = int(rows[POSITION].max())
    if list_length == 1:  # a one-item log: the slate columns would only repeat the propensity
        rows = rows.drop(columns=[POSITION, SLATE_ID, SLATE_PROPENSITY, CASCADE_PROPENSITY])
    # Written beside the destination and renamed at the end: an interrupted export leaves no half folder.
    partial = output.with_name(f".{output.name}.partial-{os.getpid()}")
    try:
        partial.mkdir(parents=True)
        rows.to_csv(partial / "interactions.csv", index=False)
        config = _config(run_dir, partial, output, context_columns, list_length)
        (partial / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        if output.exists():
            output.rmdir()  # checked empty above
        partial.rename(output)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    load_config(output / "config.yaml")  # what we wrote must be a valid config
    clicks, responses = int(rows[RESPONSE].sum()), rows[USER_ID].nunique()
    no_overlap = float((rows[PROPENSITY] >= 1.0 - 1e-12).mean())
    summary = (f"exported {responses} responses ({len(rows)} rows, lists of up to {list_length}, {clicks} clicks) "
               f"to {output}; run: python -m pipeline run {output / 'config.yaml'}")
    if no_overlap > 0.5:
        summary += (f"\nnote: {no_overlap:.0%} of the rows were shown with probability 1 (served without "
                    "exploration): off-policy estimates can only evaluate policies that choose the same items; "
                    "serve with --explore-epsilon")
    return summary


def _config(run_dir: Path, folder: Path, output: Path, context_columns: list[str], list_length: int) -> dict:
    """The run's config with its data replaced by the exported files (written to ``folder``, named by their
    final place ``output``) and its synthetic-only parts off."""
    config = yaml.safe_load((run_dir / layout.CONFIG).read_text())
    info = json.loads((run_dir / layout.RUN_JSON).read_text())
    files = {"interactions": str((output / "interactions.csv").resolve()), "event_context": context_columns}
    items = run_dir / layout.parquet(layout.data_table(info["seeds"][0], "items"))
    if items.is_file():  # synthetic data: its item table
        pd.read_parquet(items).to_csv(folder / "items.csv", index=False)
        files["item_features"] = str((output / "items.csv").resolve())
    elif (config.get("data", {}).get("files") or {}).get("item_features"):
        files["item_features"] = str(Path(config["data"]["files"]["item_features"]).resolve())
    config["data"] = {"source": "files", "files": files}
    config["seeds"] = None
    config["run"] = {**config.get("run", {}), "name": f"served-{run_dir.name}"}
    evaluation = config.setdefault("evaluation", {})
    evaluation["ground_truth"] = False
    evaluation["top_k"] = max(int(evaluation.get("top_k", 1)), list_length)
    kept = {k for k in evaluation.get("k_list", []) if k <= evaluation["top_k"]}
    evaluation["k_list"] = sorted({1, list_length} | kept)
    evaluation["leaderboard_k"] = list_length
    evaluation.setdefault("decision", {})["metric"] = "auto"
    config.setdefault("simulation", {})["enabled"] = False
    for key in ("context_categorical", "context_numeric"):  # context columns keep their names: keep the lists
        config.setdefault("features", {}).setdefault(key, None)
    return config
