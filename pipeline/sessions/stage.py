"""The sessions stage of ``pipeline run`` (``simulation.session_comparison.enabled``): the comparison of
``compare.py`` over the run's seeds, then the A/B tests of ``ab_test.py`` on the first reporting seed's shop.

Tables (in the run directory): ``sessions_summary`` (per agent, over the reporting seeds, with intervals and the
paired differences), ``sessions_per_seed``, ``sessions_curves`` (training episodes' returns),
``ab_tests`` (one row per simulated test, ``kind`` ab or aa), ``ab_daily`` (day by day, every test) and
``ab_summary`` (``ab_test.summarise``, written by the runner).
"""

from __future__ import annotations

import logging

import pandas as pd

from pipeline.config import PipelineConfig
from pipeline.policies import PolicySpec
from pipeline.sessions.ab_test import ABSettings, plan_fixed_horizon, simulate
from pipeline.sessions.compare import ComparisonSettings, compare

log = logging.getLogger(__name__)


def run_sessions(config: PipelineConfig, policies: list[PolicySpec]) -> dict[str, pd.DataFrame]:
    settings = config.simulation.session_comparison
    bandits = [spec for spec in policies if settings.policies is None or spec.name in settings.policies]
    defaults = ComparisonSettings()
    comparison = ComparisonSettings(seeds=[s for s in config.seed_list if s not in settings.tuning_seeds],
                                    tuning_seeds=[s for s in config.seed_list if s in settings.tuning_seeds],
                                    train_steps=settings.train_steps, batch_size=settings.batch_size,
                                    rl={name: defaults.rl[name] for name in settings.rl_agents})
    sessions = config.simulation.sessions.model_copy(update={"cohort": settings.cohort})
    result = compare(config.data.synthetic, sessions, bandits, comparison, progress=log.info)
    tables = {"sessions_summary": result["summary"], "sessions_per_seed": result["per_seed"],
              "sessions_curves": result["curves"]}
    ab = settings.ab_test
    if ab.tests + ab.aa_tests == 0:
        return tables
    best = result["summary"].set_index("agent")["return_per_session"]
    control = ab.control or result["summary"]["best_bandit"].iloc[0] or "Oracle"
    treatment = ab.treatment or (max(settings.rl_agents, key=lambda name: best[name]) if settings.rl_agents
                                 else "Oracle")
    agents, shop = result["agents"], result["shop"]
    ab_settings = ABSettings(users=ab.users, enrollment_days=ab.enrollment_days, window_days=ab.window_days,
                             alpha=ab.alpha, power=ab.power, effect=ab.effect)
    planned, _ = plan_fixed_horizon(shop, sessions, agents[control], ab_settings, config.seed)
    rows, daily = [], []
    for kind, count, arms in (("ab", ab.tests, (control, treatment)), ("aa", ab.aa_tests, (control, control))):
        for test in range(count):
            outcome = simulate(shop, sessions, agents[arms[0]], agents[arms[1]], ab_settings, planned,
                               seed=(kind == "aa") * 100_000 + test)
            rows.append({"kind": kind, "test": test, "control": arms[0], "treatment": arms[1],
                         **{k: v for k, v in outcome.items() if k != "daily"}})
            daily.append(outcome["daily"].assign(kind=kind, test=test))
    log.info("A/B tests: %s vs %s, %d A/B and %d A/A tests, fixed horizon %d users per arm", control, treatment,
             ab.tests, ab.aa_tests, planned)
    tables["ab_tests"] = pd.DataFrame(rows).astype({"decision_day": float, "fixed_day": float})
    tables["ab_daily"] = pd.concat(daily, ignore_index=True)
    return tables
