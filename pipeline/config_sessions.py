"""The config blocks of the session environment, its comparison and its A/B tests (``simulation.sessions``,
``simulation.session_comparison``; part of the schema in ``pipeline/config.py``, kept here for its length)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from pipeline.config_base import Strict


class SessionConfig(Strict):
    """The session environment (``pipeline/sessions``): one episode is one user's visit to the synthetic shop,
    and users come back on later days.  ``dynamics: false`` is the shop's contextual bandit: the session state
    then changes neither clicks nor leaving nor returning."""

    dynamics: bool = Field(True, description="false: clicks come from the shop's click model alone")
    max_steps: int = Field(20, ge=1, le=1000, description="recommendations in one session at most")
    fatigue: float = Field(1.0, ge=0, description="click logit lost per unit of fatigue of the shown category")
    fatigue_decay: float = Field(0.6, ge=0, lt=1, description="share of each category's fatigue left a step later")
    satisfaction_rate: float = Field(0.3, gt=0, le=1, description="how fast satisfaction moves to the relevance "
                                                                  "(true click probability / the best item's) of "
                                                                  "what is shown")
    leave: float = Field(0.05, ge=0, le=1, description="probability of leaving after any step")
    leave_fatigue: float = Field(0.1, ge=0, description="added to it per unit of the shown category's fatigue")
    leave_dissatisfaction: float = Field(0.4, ge=0, description="added to it times (1 - satisfaction)")
    return_rate: float = Field(0.3, gt=0, lt=1, description="probability of another visit after a session that "
                                                            "ends with satisfaction 0.5")
    return_satisfaction: float = Field(4.0, ge=0, description="return log-odds gained per unit of final "
                                                              "satisfaction")
    mean_return_gap: float = Field(3.0, ge=1, description="mean days until a return visit (geometric)")
    days: int = Field(28, ge=1, description="days of the visit calendar over which return visits are counted")
    cohort: int | None = Field(None, ge=1, description="users in the calendar (null: all the shop's users)")
    first_visit_days: int | None = Field(None, ge=1, description="first visits fall on these first days of the "
                                                                 "calendar (null: all of it); later days only "
                                                                 "see returns (an A/B test's enrollment)")
    reward: Literal["click", "revenue"] = Field("click", description="revenue: a click earns the item's price")


class ABTestConfig(Strict):
    """Simulated A/B tests after the session comparison (``pipeline/sessions/ab_test.py``)."""

    tests: int = Field(20, ge=0, description="A/B tests of control against treatment")
    aa_tests: int = Field(0, ge=0, description="A/A tests (the control in both arms): false-positive rates")
    control: str | None = Field(None, description="an agent of the comparison; null: the best bandit")
    treatment: str | None = Field(None, description="null: the best RL agent (or the Oracle without RL agents)")
    users: int = Field(400, ge=4, description="users per test, both arms together")
    enrollment_days: int = Field(14, ge=1)
    window_days: int = Field(7, ge=1, description="days each user's outcome (its clicks, returns included) covers")
    alpha: float = Field(0.05, gt=0, lt=1)
    power: float = Field(0.8, gt=0, lt=1, description="of the fixed-horizon test, at `effect`")
    effect: float = Field(0.5, gt=0, description="the lift in clicks per user the tests are sized for (the "
                                                  "fixed horizon's sample size, the mSPRT's mixing scale)")


class SessionComparisonConfig(Strict):
    """Bandits, RL agents and the Oracle in the session environment, in ``pipeline run`` (synthetic data only;
    several minutes: off by default, on in ``configs/sessions.yaml``)."""

    enabled: bool = False
    policies: list[str] | None = Field(None, description="the config's policies that take part; null: all")
    rl_agents: list[Literal["DQN", "PPO", "DQN-items"]] = Field(
        ["DQN", "PPO"], description="Stable-Baselines3 agents (DQN-items: DQN with an item-embedding Q-network)")
    train_steps: int = Field(20_000, ge=1, description="environment steps every agent learns from")
    batch_size: int = Field(500, ge=1, description="bandits: steps between two partial_fit calls")
    cohort: int = Field(400, ge=1, description="users of the evaluation calendar")
    tuning_seeds: list[int] = Field([], description="run seeds on which hyperparameters were chosen: reported "
                                                    "apart, never in the intervals")
    ab_test: ABTestConfig = ABTestConfig()
