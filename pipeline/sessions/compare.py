"""The session-level comparison: bandits, RL agents and the myopic Oracle in the session shop, over seeds.

For every seed a shop is generated (its click model, users and items), then each agent

1. trains for ``train_steps`` environment steps on the shop's visits from one calendar (bandits learn online
   from every step; DQN and PPO through Stable-Baselines3's ``learn``): the learning curve;
2. is evaluated, frozen, on one whole calendar of visits it has not seen (another stream of the environment,
   the same for every agent of the seed): per session its return, length, clicks, diversity (distinct
   categories shown / items shown) and novelty (share of shown items this user had not been shown before in
   the calendar), and per user the return visits within ``days``.

Seeds are the unit of replication: each figure is the mean over the reporting seeds with a 95% t-interval
over seeds, and differences between agents are paired by seed (same shop, same first visits).  Tuning seeds
(where hyperparameters were chosen by hand) are reported apart and never mixed into the reported figures.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

from pipeline.config import SessionConfig, SyntheticConfig
from pipeline.data.synthetic import generate
from pipeline.policies import PolicySpec
from pipeline.sessions.agents import OracleAgent, PolicyAgent, StableBaselinesAgent, online_loop
from pipeline.sessions.environment import shop_session_env

EVALUATION_STREAM = 10_000  # evaluation calendars are seeded apart from the training ones


DQN_HYPERPARAMETERS = {"learning_starts": 1_000, "buffer_size": 50_000, "exploration_fraction": 0.3,
                       "target_update_interval": 1_000, "train_freq": 4, "learning_rate": 5e-4, "gamma": 0.9}


@dataclass
class ComparisonSettings:
    seeds: list[int] = field(default_factory=lambda: [1, 2, 3, 4, 5])
    tuning_seeds: list[int] = field(default_factory=lambda: [0])
    train_steps: int = 20_000
    batch_size: int = 500  # bandits: steps between two partial_fit calls (MABWiser deep-copies every arm on each)
    rl: dict[str, dict] = field(default_factory=lambda: {
        "DQN": dict(DQN_HYPERPARAMETERS),
        "PPO": {"n_steps": 1_024, "batch_size": 128, "learning_rate": 3e-4, "gamma": 0.9, "ent_coef": 0.01},
        "DQN-items": dict(DQN_HYPERPARAMETERS),  # DQN's, not tuned for the item-embedding network
    })

def evaluate(agent, env, seed: int) -> pd.DataFrame:
    """One whole calendar of visits, the agent frozen: one row per session."""
    rows, shown, history = [], [], defaultdict(set)
    total = clicks = 0.0
    for record in online_loop(agent, env, steps=10 ** 9, learn=False, seed=seed):
        info = record["info"]
        shown.append(record["action"])
        total += record["reward"]
        clicks += info["click"]
        if record["done"]:
            seen = history[info["user_id"]]
            novel = sum(item not in seen for item in shown)
            seen.update(shown)
            categories = env.unwrapped.item_category[shown]
            rows.append({"user_id": info["user_id"], "day": info["day"], "visit": info["visit"], "return": total,
                         "length": len(shown), "clicks": clicks, "diversity": len(set(categories)) / len(shown),
                         "novelty": novel / len(shown), "final_satisfaction": info["satisfaction"]})
            shown, total, clicks = [], 0.0, 0.0
            if env.unwrapped.calendar_over:
                break
    return pd.DataFrame(rows)


def compare(synthetic: SyntheticConfig, sessions: SessionConfig, bandits: list[PolicySpec],
            settings: ComparisonSettings, progress=print) -> dict:
    """Train and evaluate every agent on every seed: the tables of the comparison, and the first reporting
    seed's shop and trained agents (``shop``, ``agents``: what the A/B tests serve)."""
    session_rows, curve_rows, kept = [], [], {}
    for seed in [*settings.tuning_seeds, *settings.seeds]:
        shop = generate(synthetic, synthetic.seed if synthetic.seed is not None else seed)
        role = "tuning" if seed in settings.tuning_seeds else "reporting"
        agents = [(OracleAgent(), None)]
        for spec in bandits:
            train_env = shop_session_env(shop, sessions)
            agents.append((PolicyAgent(spec, train_env.action_space.n, seed, settings.batch_size), train_env))
        for algorithm, hyperparameters in settings.rl.items():
            train_env = shop_session_env(shop, sessions)
            agents.append((StableBaselinesAgent(algorithm, train_env, seed, **hyperparameters), train_env))
        for agent, train_env in agents:
            started = time.perf_counter()
            if train_env is not None:
                train_env.reset(seed=seed)
                curve = agent.train(train_env, settings.train_steps)
                curve_rows += [{"seed": seed, "role": role, "agent": agent.name, "step": step, "return": value}
                               for step, value in curve]
            trained = time.perf_counter() - started
            table = evaluate(agent, shop_session_env(shop, sessions), EVALUATION_STREAM + seed)
            table.insert(0, "agent", agent.name)
            table.insert(0, "role", role)
            table.insert(0, "seed", seed)
            session_rows.append(table)
            progress(f"seed {seed} ({role}) {agent.name}: {len(table)} sessions, return/session "
                     f"{table['return'].mean():.3f}, trained in {trained:.0f} s")
        if not kept and role == "reporting":
            kept = {"shop": shop, "agents": {agent.name: agent for agent, _ in agents}}
    sessions_table = pd.concat(session_rows, ignore_index=True)
    per_seed = per_seed_summary(sessions_table)
    return {"sessions": sessions_table, "curves": pd.DataFrame(curve_rows), "per_seed": per_seed,
            "summary": summary(per_seed[per_seed["role"] == "reporting"], [s.name for s in bandits]), **kept}


def per_seed_summary(sessions: pd.DataFrame) -> pd.DataFrame:
    """Per seed and agent: means per session, and return visits per user of the calendar."""
    grouped = sessions.groupby(["seed", "role", "agent"], sort=False)
    table = grouped.agg(sessions=("return", "size"), return_per_session=("return", "mean"),
                        session_length=("length", "mean"), clicks_per_session=("clicks", "mean"),
                        diversity=("diversity", "mean"), novelty=("novelty", "mean"))
    visits = sessions.groupby(["seed", "role", "agent", "user_id"], sort=False)["visit"].max()
    table["return_visits_per_user"] = (visits - 1).groupby(level=[0, 1, 2], sort=False).mean()
    table["clicks_per_user"] = sessions.groupby(["seed", "role", "agent", "user_id"], sort=False)["clicks"].sum(
        ).groupby(level=[0, 1, 2], sort=False).mean()
    return table.reset_index()


def t_interval(values: np.ndarray, level: float = 0.95, bounds: tuple[float, float] = (-np.inf, np.inf)
               ) -> tuple[float, float, float]:
    """Mean and its t-interval over seeds, cut to the metric's range ``bounds`` (a t-interval over three
    seeds of a small non-negative mean reaches below zero); NaN with fewer than two seeds."""
    values = np.asarray(values, dtype=float)
    mean = float(values.mean())
    if len(values) < 2:
        return mean, np.nan, np.nan
    half = stats.t.ppf((1 + level) / 2, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values))
    return mean, float(max(mean - half, bounds[0])), float(min(mean + half, bounds[1]))


# Each metric's range: returns, lengths and counts are non-negative (the shop's rewards are clicks or prices),
# diversity and novelty are shares.
METRICS = {"return_per_session": (0, np.inf), "session_length": (0, np.inf), "clicks_per_session": (0, np.inf),
           "diversity": (0, 1), "novelty": (0, 1), "return_visits_per_user": (0, np.inf),
           "clicks_per_user": (0, np.inf)}


def summary(per_seed: pd.DataFrame, bandit_names: list[str]) -> pd.DataFrame:
    """Each agent's metrics over the reporting seeds with 95% intervals, and its return per session minus the
    best bandit's and the Oracle's, paired by seed."""
    wide = per_seed.pivot(index="seed", columns="agent", values="return_per_session")
    best_bandit = max(bandit_names, key=lambda name: wide[name].mean()) if bandit_names else None
    rows = []
    for agent, group in per_seed.groupby("agent", sort=False):
        row = {"agent": agent, "seeds": len(group)}
        for metric, bounds in METRICS.items():
            row[metric], row[f"{metric}_low"], row[f"{metric}_high"] = t_interval(group[metric].to_numpy(),
                                                                                 bounds=bounds)
        for reference in ([best_bandit] if best_bandit else []) + ["Oracle"]:
            key = "best_bandit" if reference == best_bandit else "oracle"
            row[f"minus_{key}"], row[f"minus_{key}_low"], row[f"minus_{key}_high"] = t_interval(
                (wide[agent] - wide[reference]).to_numpy())
        row["best_bandit"] = best_bandit
        rows.append(row)
    return pd.DataFrame(rows)
