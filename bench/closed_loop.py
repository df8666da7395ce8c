"""The production loop, end to end: serve with uniform exploration, export the log, evaluate candidates on it,
then serve each candidate and compare its live click rate with the interval the evaluation gave it.

    python -m bench.closed_loop --redis redis://127.0.0.1:6390/0     # ~3 minutes on 2 cores

1. ``pipeline run`` on a synthetic shop (its hidden click model plays the users);
2. its LinUCB is served by a replica (the production path) with ``epsilon = 1``: every list uniformly random;
   simulated users (fresh events of the shop) click with the hidden model's probability; every shown item
   gets feedback;
3. ``export-log`` writes the served log; ``pipeline run`` on it trains the candidates on its first 80% and
   estimates each one's click rate on the rest (IPS, SNIPS, DR with 95% intervals);
4. each candidate is served as trained (LinUCB/LinGreedy/LinTS by a replica, the others by the laptop mode,
   no feedback: the model stays the one evaluated) to ``--live`` fresh users; its live click rate is the mean
   of the hidden click probabilities of the items it showed (the clicks' expectation, so the comparison is
   not blurred by click noise; the sampled clicks are reported too).

The acceptance: every interval contains its candidate's live click rate.  Written to
``bench/results/closed_loop.csv``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from fastapi.testclient import TestClient

from pipeline import layout
from pipeline.config import SyntheticConfig, load_config
from pipeline.data.dataset import USER_ID
from pipeline.data.synthetic import ClickModel, make_events
from pipeline.runner import run_pipeline
from pipeline.serving.app import create_app
from pipeline.serving.export import export_served_log
from pipeline.serving.replica import STREAM_POLICIES

CANDIDATES = {"LinUCB": {"learning_policy": "LinUCB", "params": {"alpha": 1.0}},
              "LinGreedy": {"learning_policy": "LinGreedy", "params": {"epsilon": 0.1}},
              "LinTS": {"learning_policy": "LinTS", "params": {"alpha": 0.5}},
              "Popularity": {"learning_policy": "Popularity"},
              "Random": {"learning_policy": "Random"}}
ESTIMATORS = ("IPS", "SNIPS", "DR")


class Shop:
    """Fresh users of a run's synthetic shop: contexts to serve, and their hidden click probabilities."""

    def __init__(self, run_dir: Path, seed: int):
        info = json.loads((run_dir / layout.RUN_JSON).read_text())
        data_seed = info["seeds"][0]
        self.users = pd.read_parquet(run_dir / layout.parquet(layout.data_table(data_seed, "users")))
        self.model = ClickModel.load(run_dir / layout.click_model(data_seed))
        self.synthetic = SyntheticConfig(**yaml.safe_load((run_dir / layout.CONFIG).read_text())["data"]["synthetic"])
        self.rng = np.random.default_rng(seed)

    def events(self, n: int) -> pd.DataFrame:
        config = self.synthetic.model_copy(update={"n_events": n})
        return make_events(config, self.users, self.rng).merge(self.users, on=USER_ID, how="left")

    def visit(self, client: TestClient, n: int, fields: list[str], feedback: bool) -> pd.DataFrame:
        """``n`` users each shown one item; their click probabilities and sampled clicks."""
        events = self.events(n)
        shown = []
        for row in events[fields].to_dict("records"):
            context = {key: (bool(v) if isinstance(v, np.bool_) else v.item() if hasattr(v, "item") else v)
                       for key, v in row.items()}
            answer = client.post("/recommend", json={"context": context, "k": 1})
            answer.raise_for_status()
            shown.append((answer.json()["request_id"], answer.json()["items"][0]["item_id"]))
        items = np.array([item for _, item in shown])
        probability = self.model.probability_of(events, items)
        clicks = self.rng.random(n) < probability
        if feedback:
            for (request_id, item), click in zip(shown, clicks):
                client.post("/feedback", json={"request_id": request_id, "item_id": item,
                                               "reward": int(click)}).raise_for_status()
        return pd.DataFrame({"item_id": items, "probability": probability, "click": clicks})


def serve(run_dir: Path, policy: str, redis_url: str, store_dir: Path, epsilon: float, seed: int) -> TestClient:
    if policy in STREAM_POLICIES:
        return TestClient(create_app(run_dir, policy, redis_url, namespace=f"closed-loop-{uuid.uuid4().hex}",
                                     epsilon=epsilon, explore_seed=seed))
    return TestClient(create_app(run_dir, policy, store_dir / f"{policy}.sqlite"))


def closed_loop(redis_url: str, workdir: Path, logged: int, live: int, n_items: int, seed: int) -> pd.DataFrame:
    shop_config = {"seed": seed,
                   "data": {"synthetic": {"n_users": 400, "n_items": n_items, "n_events": 3000, "n_days": 14}},
                   "features": {"item_text": {"schema": {"transform": ["tfidf", ["svd", {"n_components": 4}]]}}},
                   "policies": {"LinUCB": CANDIDATES["LinUCB"]},
                   "evaluation": {"top_k": 1, "k_list": [1], "leaderboard_k": 1, "bootstrap_resamples": 0},
                   "run": {"output_dir": str(workdir / "runs"), "name": "shop"}}
    (workdir / "shop.yaml").write_text(yaml.safe_dump(shop_config))
    shop_run = run_pipeline(load_config(workdir / "shop.yaml"), progress=False).path
    shop = Shop(shop_run, seed)
    namespace = f"closed-loop-{uuid.uuid4().hex}"
    with TestClient(create_app(shop_run, "LinUCB", redis_url, namespace=namespace, epsilon=1.0,
                               explore_seed=seed)) as client:
        fields = list(client.app.state.replica.served.context_fields)
        shop.visit(client, logged, fields, feedback=True)
    export_served_log(shop_run, "LinUCB", redis_url, namespace, workdir / "served")
    config = yaml.safe_load((workdir / "served" / "config.yaml").read_text())
    config["policies"] = CANDIDATES
    config["evaluation"]["bootstrap_resamples"] = 0
    (workdir / "served" / "config.yaml").write_text(yaml.safe_dump(config))
    evaluated = run_pipeline(load_config(workdir / "served" / "config.yaml"), progress=False).path
    estimates = pd.read_parquet(evaluated / layout.parquet(layout.OFF_POLICY))
    estimates = estimates[(estimates["k"] == 1) & estimates["estimator"].isin(ESTIMATORS)]
    rows = []
    for policy in CANDIDATES:
        with serve(evaluated, policy, redis_url, workdir, 0.0, seed) as client:
            outcome = shop.visit(client, live, fields, feedback=False)
        live_rate = float(outcome["probability"].mean())
        for _, estimate in estimates[estimates["policy"] == policy].iterrows():
            rows.append({"policy": policy, "estimator": estimate["estimator"], "estimate": estimate["value"],
                         "low": estimate["low"], "high": estimate["high"], "live_rate": live_rate,
                         "live_click_share": float(outcome["click"].mean()), "live_users": live,
                         "contains": bool(estimate["low"] <= live_rate <= estimate["high"]),
                         "matched_events": int(estimate["matched_events"])})
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--redis", required=True, help="redis://127.0.0.1:PORT/DB (loopback)")
    parser.add_argument("--logged", type=int, default=8000, help="uniformly explored responses logged")
    parser.add_argument("--live", type=int, default=4000, help="users each candidate serves live")
    parser.add_argument("--items", type=int, default=20)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--output", default="bench/results/closed_loop.csv")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as workdir:
        table = closed_loop(args.redis, Path(workdir), args.logged, args.live, args.items, args.seed)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.output, index=False)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print(f"\n{int(table['contains'].sum())} of {len(table)} intervals contain the live click rate")
    return 0 if table["contains"].all() else 1


if __name__ == "__main__":
    sys.exit(main())
