"""Bandits against RL agents in the session shop (issue 14; seed 003), over seeds.

    python -m bench.sessions                          # dynamics on (the default session shop)
    python -m bench.sessions --no-dynamics            # the shop's contextual bandit: the sanity check
    python -m bench.sessions --seeds 1 2 3 4 5 --train-steps 30000
    python -m bench.sessions --config my.yaml          # the shop (data.synthetic) and the dynamics
                                                       # (simulation.sessions) of a config

Each seed generates a shop (``data.synthetic`` defaults, 200 items), trains every agent for ``--train-steps``
steps of visits, then evaluates it frozen on a calendar of ``--cohort`` users over 28 days that it has not seen
(``pipeline/sessions/compare.py``).  Hyperparameters were set by hand on the tuning seed (0) only; the reported
figures are over the other seeds, with 95% t-intervals over seeds and differences paired by seed.  Results:
``bench/results/sessions_<dynamics|no_dynamics>_{summary,per_seed,curves}.csv``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd

from pipeline.config import SessionConfig, SyntheticConfig, load_config
from pipeline.policies import make_policy_spec
from pipeline.sessions.compare import ComparisonSettings, compare

BANDITS = {
    "LinUCB": ("LinUCB", {"alpha": 0.5}),
    "LinGreedy": ("LinGreedy", {"epsilon": 0.05}),
    "LinTS": ("LinTS", {"alpha": 0.25}),
    "NeuralLinear": ("NeuralLinear", {"warm_start": "none"}),
}


def binned_curves(curves: pd.DataFrame, width: int = 1_000) -> pd.DataFrame:
    """The learning curves in bins of ``width`` training steps (mean return of the episodes ending in each), so
    the results folder holds kilobytes, not every episode."""
    binned = curves.assign(step=(curves["step"] - 1) // width * width + width)
    return binned.groupby(["seed", "role", "agent", "step"], sort=False)["return"].agg(
        mean_return="mean", episodes="size").reset_index()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, help="a pipeline config: its data.synthetic and simulation.sessions "
                                                    "(default: their defaults, with 1,000 logged events)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--tuning-seeds", type=int, nargs="*", default=[0])
    parser.add_argument("--train-steps", type=int, default=20_000)
    parser.add_argument("--cohort", type=int, default=400, help="users in the evaluation calendar")
    parser.add_argument("--bandits", nargs="*", default=list(BANDITS), choices=list(BANDITS))
    parser.add_argument("--rl", nargs="*", default=["DQN", "PPO"], choices=["DQN", "PPO", "DQN-items"])
    parser.add_argument("--no-dynamics", action="store_true", help="sessions without fatigue, satisfaction or "
                                                                   "returns that depend on what was shown")
    parser.add_argument("--output", type=Path, default=Path("bench/results"))
    args = parser.parse_args()
    started = time.perf_counter()
    if args.config is not None:
        config = load_config(args.config)
        synthetic, sessions = config.data.synthetic, config.simulation.sessions
    else:
        synthetic, sessions = SyntheticConfig(n_events=1_000), SessionConfig()
    sessions = sessions.model_copy(update={"cohort": args.cohort,
                                           "dynamics": sessions.dynamics and not args.no_dynamics})
    defaults = ComparisonSettings()
    settings = ComparisonSettings(seeds=args.seeds, tuning_seeds=args.tuning_seeds, train_steps=args.train_steps,
                                  rl={name: defaults.rl[name] for name in args.rl})
    bandits = [make_policy_spec(name, BANDITS[name][0], BANDITS[name][1], None, {}) for name in args.bandits]
    tables = compare(synthetic, sessions, bandits, settings)
    tag = "dynamics" if sessions.dynamics else "no_dynamics"
    args.output.mkdir(parents=True, exist_ok=True)
    tables["curves"] = binned_curves(tables["curves"])
    for name in ("summary", "per_seed", "curves"):
        tables[name].to_csv(args.output / f"sessions_{tag}_{name}.csv", index=False)
    columns = ["agent", "return_per_session", "return_per_session_low", "return_per_session_high",
               "minus_best_bandit", "minus_best_bandit_low", "minus_best_bandit_high", "minus_oracle",
               "session_length", "return_visits_per_user", "diversity", "novelty"]
    with pd.option_context("display.width", 250):
        print(tables["summary"][columns].round(3).to_string(index=False))
    print(json.dumps({"dynamics": sessions.dynamics, "best_bandit": tables["summary"]["best_bandit"].iloc[0],
                      "minutes": round((time.perf_counter() - started) / 60, 1)}))


if __name__ == "__main__":
    main()
