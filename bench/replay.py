"""Replay with learning: batch scoring between updates against MABWiser's own per-event predict/partial_fit.

    python -m bench.replay                      # 1,000,000 events x 1,000 items, six MABWiser policies
    python -m bench.replay --events 100000 --items 200 --reference-events 3000

A uniformly logged stream with a hidden linear-logistic click model.  For each policy the fast replay
(``pipeline.replay.replay_with_learning``) walks all events; MABWiser's per-event reference
(``replay_per_event``) would take hours at this size, so it is timed on the first ``--reference-events``
events, where the fast path is timed too: the speed-up is the ratio of the two on the same events, and the
deterministic policies' curves must be identical there.  Results: ``bench/results/replay.csv``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
from mab2rec import BanditRecommender
from mabwiser.mab import LearningPolicy

from pipeline.replay import replay_per_event, replay_with_learning

RESULTS = Path(__file__).resolve().parent / "results"
POLICIES = {
    "Random": (LearningPolicy.Random(), False), "Popularity": (LearningPolicy.Popularity(), False),
    "ThompsonSampling": (LearningPolicy.ThompsonSampling(), False),
    "LinGreedy": (LearningPolicy.LinGreedy(epsilon=0.0), True), "LinUCB": (LearningPolicy.LinUCB(alpha=1.0), True),
    "LinTS": (LearningPolicy.LinTS(alpha=1.0), True),
}
DETERMINISTIC = {"LinGreedy", "LinUCB"}


def stream(rng, n: int, n_items: int, d: int):
    theta = np.random.default_rng(12345).normal(size=(n_items, d)) / np.sqrt(d)
    contexts = rng.normal(size=(n, d))
    items = rng.integers(n_items, size=n)
    truth = 1 / (1 + np.exp(-(contexts * theta[items]).sum(axis=1) + 2.5))
    return contexts, items, (rng.random(n) < truth).astype(int), np.full(n, 1 / n_items)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.replay", description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--items", type=int, default=1_000)
    parser.add_argument("--reference-events", type=int, default=5_000)
    parser.add_argument("--batch-size", type=int, default=100)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    train = stream(rng, 20 * args.items, args.items, 8)
    test = stream(rng, args.events, args.items, 8)
    prefix = tuple(array[:args.reference_events] for array in test)
    rows = []
    for name, (policy, contextual) in POLICIES.items():
        recommender = BanditRecommender(policy, top_k=5, seed=1, n_jobs=1)
        recommender.set_arms(list(range(args.items)))
        recommender.fit(train[1], train[2], train[0] if contextual else None)
        started = time.perf_counter()
        full = replay_with_learning(recommender, *test, args.batch_size, 0, contextual)
        full_seconds = time.perf_counter() - started
        started = time.perf_counter()
        fast = replay_with_learning(recommender, *prefix, args.batch_size, 0, contextual)
        fast_seconds = time.perf_counter() - started
        started = time.perf_counter()
        slow = replay_per_event(recommender, *prefix, args.batch_size, 0, contextual)
        slow_seconds = time.perf_counter() - started
        identical = fast.equals(slow) if name in DETERMINISTIC else None
        last = full.iloc[-1] if len(full) else pd.Series({"accepted": 0, "ctr": np.nan, "low": 0, "high": 1})
        rows.append({"policy": name, "events": args.events, "items": args.items, "full_seconds": full_seconds,
                     "accepted": int(last["accepted"]), "ctr": last["ctr"], "low": last["low"], "high": last["high"],
                     "reference_events": args.reference_events, "fast_seconds_on_reference": fast_seconds,
                     "per_event_seconds_on_reference": slow_seconds, "speedup": slow_seconds / fast_seconds,
                     "per_event_seconds_extrapolated": slow_seconds * args.events / args.reference_events,
                     "identical_on_reference": identical})
        print(f"{name}: {full_seconds:.1f} s for {args.events:,} events ({rows[-1]['accepted']} accepted); on the first "
              f"{args.reference_events:,}: fast {fast_seconds:.3f} s vs per-event {slow_seconds:.2f} s "
              f"({rows[-1]['speedup']:.0f}x){'' if identical is None else ', identical' if identical else ', DIFFER'}",
              flush=True)
    table = pd.DataFrame(rows)
    RESULTS.mkdir(exist_ok=True)
    table.to_csv(RESULTS / "replay.csv", index=False)
    total_fast = table["full_seconds"].sum()
    total_slow = table["per_event_seconds_extrapolated"].sum()
    print(f"\nsix policies over {args.events:,} events: fast {total_fast:.0f} s; per-event reference extrapolated "
          f"{total_slow:.0f} s ({total_slow / total_fast:.0f}x)")


if __name__ == "__main__":
    main()
