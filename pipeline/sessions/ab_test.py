"""A/B-test simulation on the session shop: randomised users, a sequential test checked daily, and a
fixed-horizon test sized in advance.

Users are randomised half and half to the control and the treatment policy (both frozen).  Each enrolls on
its first visit, on one of the first ``enrollment_days`` days, and is followed for ``window_days``: its outcome is
the clicks (or revenue) of all its visits in that window, returns included, which is what a session-aware
policy can change.  An outcome is known once its window has closed, so on day ``d`` the test sees the users
who enrolled ``window_days`` or more days before; outcomes of different users are independent given the
assignment, which is what both tests assume.

- **Sequential (mSPRT**, Johari, Pekelis & Walsh 2017, "Always valid inference"): for the lift estimate
  ``D = mean_B - mean_A`` with variance ``V = s_A^2 / n_A + s_B^2 / n_B`` and a normal mixing distribution
  ``N(0, tau^2)`` over the true lift (``tau`` = the effect the test is sized for),

      Lambda = sqrt(V / (V + tau^2)) * exp(tau^2 D^2 / (2 V (V + tau^2))),

  the always-valid p-value is ``p_d = min(p_{d-1}, 1 / Lambda_d)``; rejecting the first day ``p_d <= alpha``
  keeps the false-positive rate at most ``alpha`` however often one looks (``V`` is estimated, so this holds
  as the samples grow; the A/A simulation measures it).  Its confidence sequence,
  ``D -+ sqrt(V (V + tau^2) / tau^2 * (2 log(1 / alpha) + log((V + tau^2) / V)))``, is valid at every day too.
- **Offline prediction** (``offline_lift``), made before the test from a log of uniformly random
  recommendations: IPS (``offpolicy.estimators.IPS``) of each policy's clicks per step, their difference paired
  on the same log times the control's steps per user in the window (from the pilot).  It is myopic by
  construction: it knows neither the states the policies would lead users into nor the returns they would
  cause, which is what the comparison with the simulated lift measures.
- **Fixed horizon**: Welch's z-test once, at the day both arms first have the planned number of completed users
  ``n = 2 (z_{1-alpha/2} + z_{power})^2 sigma^2 / effect^2`` (``sigma`` from a pilot run of the control).
  Looking at it every day instead would inflate its false-positive rate (``naive_daily``, reported for
  comparison only).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from pipeline.config import SessionConfig
from pipeline.data.dataset import Dataset
from pipeline.offpolicy.estimators import IPS, LoggedFeedback
from pipeline.sessions.agents import online_loop
from pipeline.sessions.environment import ShopSessionEnv


@dataclass(frozen=True)
class ABSettings:
    users: int = 1_000  # per test, both arms together
    enrollment_days: int = 14
    window_days: int = 7
    alpha: float = 0.05
    power: float = 0.8
    effect: float = 0.3  # the lift (per-user outcome units) the test is sized for; the mixture's tau


def msprt_statistic(lift: float, variance: float, tau: float) -> float:
    """The mixture likelihood ratio Lambda of the module docstring (``inf`` for a zero variance with a lift)."""
    if variance <= 0:
        return np.inf if lift != 0 else 1.0
    tau2 = tau ** 2
    return float(np.sqrt(variance / (variance + tau2)) * np.exp(tau2 * lift ** 2 / (2 * variance * (variance + tau2))))


def confidence_sequence(lift: float, variance: float, tau: float, alpha: float) -> tuple[float, float]:
    tau2 = tau ** 2
    half = np.sqrt(variance * (variance + tau2) / tau2 * (2 * np.log(1 / alpha) + np.log((variance + tau2) / variance)))
    return lift - half, lift + half


def planned_users_per_arm(sigma: float, effect: float, alpha: float, power: float) -> int:
    z = stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)
    return int(np.ceil(2 * (z * sigma / effect) ** 2))


def user_outcomes(shop: Dataset, sessions: SessionConfig, agent, users: pd.DataFrame, settings: ABSettings,
                  seed: int) -> pd.DataFrame:
    """Serve ``users`` with ``agent`` through one calendar: per user, the enrollment day and the outcome."""
    config = sessions.model_copy(update={"days": settings.enrollment_days + settings.window_days, "cohort": None,
                                         "first_visit_days": settings.enrollment_days})
    env = ShopSessionEnv(shop.click_model, users, shop.items, config)
    enrolled, outcome, steps = {}, {}, {}
    for record in online_loop(agent, env, steps=10 ** 9, learn=False, seed=seed):
        info = record["info"]
        user = info["user_id"]
        first = enrolled.setdefault(user, info["day"])
        if info["day"] < first + settings.window_days:
            outcome[user] = outcome.get(user, 0.0) + record["reward"]
            steps[user] = steps.get(user, 0) + 1
        if record["done"] and env.calendar_over:
            break
    table = pd.DataFrame({"user_id": list(enrolled), "enrolled": list(enrolled.values())})
    table["outcome"] = table["user_id"].map(outcome).fillna(0.0)
    table["steps"] = table["user_id"].map(steps).fillna(0).astype(int)
    table["known_on"] = table["enrolled"] + settings.window_days
    return table


def plan_fixed_horizon(shop: Dataset, sessions: SessionConfig, control, settings: ABSettings,
                       seed: int) -> tuple[int, pd.DataFrame]:
    """Users per arm for the fixed-horizon test, from a pilot run of the control on ``settings.users`` users of
    the shop (its outcome spread); and the pilot's table (its steps per user scale the offline prediction)."""
    users = shop.users.sample(min(settings.users, len(shop.users)), random_state=seed)
    pilot = user_outcomes(shop, sessions, control, users, settings, seed=99_999)
    sigma = max(float(pilot["outcome"].std()), 1e-9)
    return planned_users_per_arm(sigma, settings.effect, settings.alpha, settings.power), pilot


def analyse(control: pd.DataFrame, treatment: pd.DataFrame, settings: ABSettings, planned: int) -> dict:
    """Daily looks at the completed users: the mSPRT's always-valid p-value, the naive daily z-test, the
    fixed-horizon test at the planned size, and the final lift with its 95% interval."""
    alpha, tau = settings.alpha, settings.effect
    p_always, decision_day, naive_day, fixed, days = 1.0, None, None, None, []
    for day in range(1, settings.enrollment_days + settings.window_days + 1):
        a = control.loc[control["known_on"] <= day, "outcome"].to_numpy()
        b = treatment.loc[treatment["known_on"] <= day, "outcome"].to_numpy()
        if min(len(a), len(b)) < 2:
            continue
        lift, variance = b.mean() - a.mean(), a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b)
        p_always = min(p_always, 1.0 / msprt_statistic(lift, variance, tau))
        p_naive = 2 * stats.norm.sf(abs(lift) / np.sqrt(variance)) if variance > 0 else float(lift == 0)
        low, high = confidence_sequence(lift, variance, tau, alpha) if variance > 0 else (lift, lift)
        days.append({"day": day, "n_control": len(a), "n_treatment": len(b), "lift": lift, "cs_low": low,
                     "cs_high": high, "p_always_valid": p_always, "p_naive": p_naive})
        if decision_day is None and p_always <= alpha:
            decision_day = day
        if naive_day is None and p_naive <= alpha:
            naive_day = day
        if fixed is None and min(len(a), len(b)) >= planned:
            fixed = {"fixed_day": day, "fixed_p": p_naive, "fixed_significant": bool(p_naive <= alpha)}
    final = days[-1]
    half = stats.norm.ppf(0.975) * np.sqrt(control["outcome"].var(ddof=1) / len(control)
                                           + treatment["outcome"].var(ddof=1) / len(treatment))
    return {"lift": final["lift"], "lift_low": final["lift"] - half, "lift_high": final["lift"] + half,
            "control_mean": control["outcome"].mean(), "treatment_mean": treatment["outcome"].mean(),
            "sequential_significant": decision_day is not None, "decision_day": decision_day,
            "naive_daily_significant": naive_day is not None, "planned_per_arm": planned,
            **(fixed or {"fixed_day": None, "fixed_p": np.nan, "fixed_significant": False}),
            "daily": pd.DataFrame(days)}


def offline_lift(shop: Dataset, sessions: SessionConfig, control, treatment, steps: int, steps_per_user: float,
                 seed: int) -> dict:
    """The lift predicted from ``steps`` uniformly logged steps (see the module docstring), with a 95% interval
    from the delta method on the paired per-step differences (the steps-per-user factor taken as known)."""
    env = ShopSessionEnv(shop.click_model, shop.users, shop.items, sessions)
    n_items = env.action_space.n
    rows = []
    observation, _ = env.reset(seed=seed)
    for _ in range(steps):
        chosen = [agent.act(observation, env) for agent in (control, treatment)]
        action = int(env.np_random.integers(n_items))
        observation_next, reward, terminated, truncated, _ = env.step(action)
        rows.append((action, reward, *chosen))
        observation = env.reset()[0] if terminated or truncated else observation_next
    action, reward, control_pick, treatment_pick = np.array(rows, dtype=float).T
    columns = []
    for pick in (control_pick, treatment_pick):
        n = len(reward)
        data = LoggedFeedback(context=np.arange(n), reward=reward, propensity=np.full(n, 1 / n_items),
                              target=(pick == action).astype(float), reward_hat=np.zeros(n), direct=np.zeros(n),
                              n_contexts=n)
        columns.append(IPS().columns(data)[:, 0])
    difference = columns[1] - columns[0]
    per_step, se = float(difference.mean()), float(difference.std(ddof=1) / np.sqrt(len(difference)))
    half = stats.norm.ppf(0.975) * se * steps_per_user
    return {"predicted_lift": per_step * steps_per_user, "predicted_low": per_step * steps_per_user - half,
            "predicted_high": per_step * steps_per_user + half, "predicted_se": se * steps_per_user,
            "logged_steps": steps, "steps_per_user": steps_per_user}


def summarise(tests: pd.DataFrame) -> pd.DataFrame:
    """Per ``kind`` of test: how often each rule declared significance (with its Monte Carlo standard error),
    the median decision and fixed-horizon days, and how often the 95% interval covered the true lift (0 for
    A/A tests, else estimated by the mean lift over the tests)."""
    rows = []
    for kind, group in tests.groupby("kind", sort=False):
        mean_lift = 0.0 if kind == "aa" else float(group["lift"].mean())
        row = {"kind": kind, "tests": len(group), "mean_lift": mean_lift,
               "interval_covers": float(((group["lift_low"] <= mean_lift) & (mean_lift <= group["lift_high"])).mean())}
        for day in ("decision_day", "fixed_day"):  # among the tests that reached one
            row[f"median_{day}"] = float(group[day].median()) if group[day].notna().any() else np.nan
        for rule in ("sequential_significant", "fixed_significant", "naive_daily_significant"):
            share = float(group[rule].mean())
            row[rule] = share
            row[f"{rule}_se"] = float(np.sqrt(share * (1 - share) / len(group)))
        rows.append(row)
    return pd.DataFrame(rows)


def simulate(shop: Dataset, sessions: SessionConfig, control, treatment, settings: ABSettings, planned: int,
             seed: int) -> dict:
    """One randomised test: ``settings.users`` users of the shop, half to each arm."""
    rng = np.random.default_rng([seed, 14])
    chosen = shop.users.iloc[rng.choice(len(shop.users), size=min(settings.users, len(shop.users)), replace=False)]
    half = len(chosen) // 2
    outcomes = [user_outcomes(shop, sessions, agent, part, settings, seed * 2 + arm) for arm, (agent, part)
                in enumerate(((control, chosen.iloc[:half]), (treatment, chosen.iloc[half:])))]
    return analyse(*outcomes, settings, planned)
