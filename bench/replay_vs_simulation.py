"""Replay with learning against the online simulation's truth (issue 12's acceptance).

    python -m bench.replay_vs_simulation                # 20 seeds x 5 policies
    python -m bench.replay_vs_simulation --seeds 5 --steps 200

For each seed, a synthetic shop (30 items, uniformly logged) and for each policy the same warm start (the
first ``--warmup`` logged events).  Then, from that same start:

- **simulation**: the policy serves ``--steps`` events of the shop held out from the log, choosing its own
  items and learning from its own clicks (drawn from the click model) every
  ``--batch-size`` events; its truth is the mean true click probability of its choices over those steps,
  averaged over ``--trajectories`` independent runs (one run is one random learning path, whose own spread
  would otherwise be counted against the replay);
- **replay**: the policy walks the rest of the log (``pipeline.replay.replay_with_learning``, same batch size)
  until it has been credited with ``--steps`` events; its estimate is their click rate, with a 95% Wilson
  interval.

A case is covered when the simulation's truth is inside the replay's interval.  The replay is one random
trajectory of the learning process, so even a perfect replay misses a little more often than 5%.
Results: ``bench/results/replay_vs_simulation.csv``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from mab2rec import BanditRecommender
from mabwiser.mab import LearningPolicy

from pipeline.config import SyntheticConfig
from pipeline.data.dataset import ITEM_ID, RESPONSE
from pipeline.data.synthetic import generate
from pipeline.replay import replay_with_learning
from pipeline.simulation import featurize_events

RESULTS = Path(__file__).resolve().parent / "results"
POLICIES = {"LinUCB": (LearningPolicy.LinUCB(alpha=1.0), True), "LinGreedy": (LearningPolicy.LinGreedy(epsilon=0.1), True),
            "LinTS": (LearningPolicy.LinTS(alpha=0.5), True), "ThompsonSampling": (LearningPolicy.ThompsonSampling(), False),
            "Random": (LearningPolicy.Random(), False)}


def one_seed(seed: int, args) -> list[dict]:
    n_simulated = args.steps * args.trajectories
    shop = SyntheticConfig(n_items=30, n_users=1000, n_events=args.log_events + n_simulated, n_days=28)
    data = generate(shop, seed)
    events = data.interactions
    contexts = featurize_events(events, data, "standard")
    items = data.click_model.item_ids
    # After the warm start, a seeded random share of the events is where the simulated runs happen and the rest
    # is the log the replay walks: both come from the same users with the same activity (a fresh make_events
    # call would draw other heavy users, to whom the warm start transfers worse) and the same days: the shop's
    # item appeal moves with daypart and weekend, so the simulated runs are drawn from the stretch of time the
    # replay needs for its accepted events (about items x steps log events), each run spread over all of it.
    window = np.arange(args.warmup, min(len(events), args.warmup + (len(items) + args.trajectories) * args.steps))
    simulated = np.sort(np.random.default_rng([seed, 5]).choice(window, n_simulated, replace=False))
    logged = np.setdiff1d(np.arange(args.warmup, len(events)), simulated)
    probabilities = data.click_model.probabilities(events.iloc[simulated])
    warm = np.arange(args.warmup)
    rows = []
    for name, (policy, contextual) in POLICIES.items():
        recommender = BanditRecommender(policy, top_k=1, seed=seed, n_jobs=1)
        recommender.set_arms(list(items))
        recommender.fit(events[ITEM_ID].to_numpy()[warm], events[RESPONSE].to_numpy()[warm],
                        contexts[warm] if contextual else None)
        runs = [np.arange(number, n_simulated, args.trajectories) for number in range(args.trajectories)]
        truth = float(np.mean([simulate(recommender, contexts[simulated][run], probabilities[run], items, args,
                                        seed * 100 + number, contextual) for number, run in enumerate(runs)]))
        curve = replay_with_learning(recommender, contexts[logged], events[ITEM_ID].to_numpy()[logged],
                                     events[RESPONSE].to_numpy()[logged], events["propensity"].to_numpy()[logged],
                                     args.batch_size, seed, contextual)
        reached = curve[curve["accepted"] >= args.steps]
        point = reached.iloc[0] if len(reached) else curve.iloc[-1]
        rows.append({"seed": seed, "policy": name, "truth": truth, "replay_ctr": point["ctr"], "low": point["low"],
                     "high": point["high"], "accepted": int(point["accepted"]), "events_seen": int(point["events_seen"]),
                     "covered": bool(point["low"] <= truth <= point["high"])})
    return rows


def simulate(recommender, contexts, probabilities, items, args, seed: int, contextual: bool) -> float:
    """Mean true click probability of the policy's choices over ``steps`` online events (learning as it goes)."""
    import copy

    recommender = copy.deepcopy(recommender)
    uniforms = np.random.default_rng([seed, 6]).random(args.steps)
    chosen_p = []
    for start in range(0, args.steps, args.batch_size):
        block = slice(start, min(start + args.batch_size, args.steps))
        picks = np.asarray(recommender.mab.predict(contexts[block] if contextual else None)
                           if contextual else [recommender.mab.predict() for _ in range(block.stop - block.start)])
        p = probabilities[np.arange(block.start, block.stop), np.searchsorted(items, picks)]
        rewards = (uniforms[block] < p).astype(int)
        recommender.partial_fit(picks, rewards, contexts[block] if contextual else None)
        chosen_p.append(p)
    return float(np.concatenate(chosen_p).mean())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.replay_vs_simulation", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--log-events", type=int, default=30_000)
    parser.add_argument("--trajectories", type=int, default=10, help="simulated runs averaged into the truth")
    args = parser.parse_args(argv)
    rows = [row for seed in range(201, 201 + args.seeds) for row in one_seed(seed, args)]
    table = pd.DataFrame(rows)
    RESULTS.mkdir(exist_ok=True)
    table.to_csv(RESULTS / "replay_vs_simulation.csv", index=False)
    print(table.groupby("policy").agg(cases=("covered", "size"), covered=("covered", "mean"),
                                      mean_truth=("truth", "mean"), mean_replay=("replay_ctr", "mean"),
                                      mean_accepted=("accepted", "mean")).to_string(float_format="{:.3f}".format))
    print(f"\ncovered in {table['covered'].mean():.1%} of {len(table)} cases")


if __name__ == "__main__":
    main()
