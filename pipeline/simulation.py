"""Online simulation: policies serve the synthetic shop live, learning from their own clicks.

Every policy is first fitted on ``warmup`` uniformly random events, then serves ``steps`` new events in
batches of ``batch_size``: it picks one item per event, the click model decides the click, and the policy
learns with ``partial_fit`` after each batch.  All policies see the same events and the same uniform draws
for the clicks (common random numbers), so their differences are not luck of the draw.  Per policy and
batch it records:

- ``cum_reward``: clicks so far; ``expected_reward``: sum of the true click probabilities of its choices;
- ``cum_regret``: sum over events of ``p(best item) - p(chosen item)`` (expected regret against the Oracle);
- ``ctr``: the batch's click rate; ``rolling_ctr`` / ``rolling_expected_ctr``: over the last
  ``rolling_window`` steps (never reaching back across a shock).

In the ``shock`` scenario the click model changes at ``shock_step`` (``ClickModel.shifted``).  A policy's
*share* is its rolling expected CTR divided by the Oracle's; its recovery time is the number of steps
after the shock until the share is back to ``recovery_share`` (0.9) times its value just before the shock,
or "not recovered".
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.config import PipelineConfig, SimulationConfig
from pipeline.data.dataset import USER_ID, Dataset
from pipeline.data.synthetic import make_events
from pipeline.feature_columns import infer_feature_columns
from pipeline.features import TabularFeaturizer
from pipeline.policies import PolicySpec

ORACLE = "Oracle"


def simulate(config: PipelineConfig, dataset: Dataset, item_vectors: pd.DataFrame | None, policies: list[PolicySpec],
             seed: int, progress=None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Run the scenario; returns (per-batch curves, per-policy summary)."""
    settings = config.simulation
    rng = np.random.default_rng([seed, 2])  # its own stream: the offline data of this seed stay as they were
    chosen = [p for p in policies if settings.policies is None or p.name in settings.policies]
    synthetic = config.data.synthetic
    start = pd.Timestamp(synthetic.start_date) + pd.Timedelta(days=synthetic.n_days)
    days = max(1, round(synthetic.n_days * (settings.warmup + settings.steps) / synthetic.n_events))
    events = make_events(synthetic.model_copy(update={"n_events": settings.warmup + settings.steps, "n_days": days,
                                                      "start_date": start.date()}), dataset.users, rng)
    contexts = featurize_events(events, dataset, config.features.context_scaling)
    item_ids = dataset.click_model.item_ids
    models = [dataset.click_model]
    if settings.scenario == "shock":
        models.append(dataset.click_model.shifted(settings.shock_strength, rng))
    uniforms = rng.random(len(events))  # shared click draws

    warm = slice(0, settings.warmup)
    warm_items = item_ids[rng.integers(len(item_ids), size=settings.warmup)]
    warm_rewards = (uniforms[warm] < models[0].probability_of(events.iloc[warm], warm_items)).astype(int)
    recommenders = {}
    for spec in chosen:
        recommender = spec.build(top_k=1, seed=seed, item_features=item_vectors)
        recommender.set_arms(list(item_ids))
        recommender.fit(warm_items, warm_rewards, _fit_input(spec, contexts[warm]))
        recommenders[spec.name] = recommender

    shock = settings.shock_step if settings.scenario == "shock" else settings.steps
    per_step = {name: np.zeros((settings.steps, 3)) for name in [*recommenders, ORACLE]}  # reward, p, p_best
    for start_step in range(0, settings.steps, settings.batch_size):
        steps = np.arange(start_step, min(start_step + settings.batch_size, settings.steps))
        rows = steps + settings.warmup
        batch = events.iloc[rows]
        probabilities = models[0].probabilities(batch) if steps[0] < shock else None
        if steps[-1] >= shock:  # the shocked model from shock_step on, even inside a batch
            shocked = models[1].probabilities(batch)
            probabilities = shocked if probabilities is None else np.where((steps >= shock)[:, None], shocked,
                                                                            probabilities)
        best = probabilities.max(axis=1)
        per_step[ORACLE][steps] = np.column_stack([uniforms[rows] < best, best, best])
        for spec in chosen:
            recommender = recommenders[spec.name]
            picks = _first_items(recommender, _predict_input(spec, contexts[rows]), len(rows), item_ids.dtype)
            p = probabilities[np.arange(len(rows)), np.searchsorted(item_ids, picks)]
            reward = (uniforms[rows] < p).astype(int)
            per_step[spec.name][steps] = np.column_stack([reward, p, best])
            recommender.partial_fit(picks, reward, _fit_input(spec, contexts[rows]))
        if progress is not None:
            progress(len(rows))
    shock = settings.shock_step if settings.scenario == "shock" else None
    curves = pd.concat([_curves(name, values, settings, shock) for name, values in per_step.items()], ignore_index=True)
    return curves, _summary(curves, per_step, settings, shock)


def featurize_events(events: pd.DataFrame, dataset: Dataset, scaling: str) -> np.ndarray:
    raw = events[[USER_ID, *dataset.event_context]].merge(dataset.users, on=USER_ID, how="left").drop(columns=USER_ID)
    categorical, numeric = infer_feature_columns(raw, [], None, None, [], "simulation", "features.context")
    return TabularFeaturizer(categorical, numeric, scaling).fit(raw).transform(raw)


def _fit_input(spec: PolicySpec, contexts: np.ndarray):
    """Contexts for fit/partial_fit: none for MABWiser's non-contextual policies (as Mab2Rec's ``train``)."""
    return contexts if spec.is_contextual else None


def _predict_input(spec: PolicySpec, contexts: np.ndarray):
    """Contexts for recommend: one empty context per event for non-contextual policies (as Mab2Rec's ``score``)."""
    return contexts if spec.is_contextual else [[]] * len(contexts)


def _first_items(recommender, contexts, n: int, dtype) -> np.ndarray:
    lists = recommender.recommend(contexts)
    lists = [lists] if n == 1 else lists  # Mab2Rec returns a bare list for a single context
    return np.array([items[0] for items in lists], dtype=dtype)


def _rolling_mean(values: np.ndarray, window: int, reset: int | None) -> np.ndarray:
    """Mean of the last ``window`` values at each step, never reaching back before ``reset``."""
    out = np.empty(len(values))
    for part in ((slice(0, reset), slice(reset, None)) if reset else (slice(None),)):
        segment = values[part]
        cumulative = np.concatenate([[0.0], np.cumsum(segment)])
        ends = np.arange(1, len(segment) + 1)
        starts = np.maximum(ends - window, 0)
        out[part] = (cumulative[ends] - cumulative[starts]) / (ends - starts)
    return out


def _curves(name: str, values: np.ndarray, settings: SimulationConfig, shock: int | None) -> pd.DataFrame:
    reward, p, best = values.T
    ends = np.minimum(np.arange(settings.batch_size, settings.steps + settings.batch_size, settings.batch_size),
                      settings.steps)
    rolling = _rolling_mean(reward, settings.rolling_window, shock)
    rolling_expected = _rolling_mean(p, settings.rolling_window, shock)
    starts = np.concatenate([[0], ends[:-1]])
    return pd.DataFrame({
        "policy": name, "step": ends,
        "cum_reward": np.cumsum(reward)[ends - 1], "expected_reward": np.cumsum(p)[ends - 1],
        "cum_regret": np.cumsum(best - p)[ends - 1],
        "ctr": [reward[a:b].mean() for a, b in zip(starts, ends)],
        "rolling_ctr": rolling[ends - 1], "rolling_expected_ctr": rolling_expected[ends - 1],
        "shock_step": shock if shock is not None else np.nan,
    })


def _summary(curves: pd.DataFrame, per_step: dict, settings: SimulationConfig, shock: int | None) -> pd.DataFrame:
    oracle = curves[curves["policy"] == ORACLE].set_index("step")["rolling_expected_ctr"]
    rows = []
    for name, group in curves.groupby("policy", sort=False):
        group = group.set_index("step")
        regret = group["cum_regret"]
        half = regret.index[len(regret) // 2 - 1] if len(regret) > 1 else regret.index[-1]
        row = {"policy": name, "steps": settings.steps, "cum_reward": group["cum_reward"].iloc[-1],
               "expected_reward": group["expected_reward"].iloc[-1], "cum_regret": regret.iloc[-1],
               # regret of the second half over the first: 1 for linear growth, below 1 when learning
               "regret_growth_ratio": (regret.iloc[-1] - regret.loc[half]) / max(regret.loc[half], 1e-12),
               "shock_step": shock if shock is not None else np.nan, "recovery_steps": np.nan, "recovered": ""}
        if shock is not None:
            share = group["rolling_expected_ctr"] / oracle
            before = share[share.index <= shock].iloc[-1]
            after = share[share.index > shock]
            back = after[after >= settings.recovery_share * before]
            row["recovered"] = "yes" if len(back) else "not recovered"
            row["recovery_steps"] = back.index[0] - shock if len(back) else np.nan
            row["pre_shock_share"] = before
        rows.append(row)
    return pd.DataFrame(rows)
