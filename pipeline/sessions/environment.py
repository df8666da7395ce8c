"""The synthetic shop as a Gymnasium environment with sessions and returning users (seed 003's MDP).

One episode is one user's visit.  Each step the agent shows one item (``Discrete(n_items)``, positions in the
click model's ``item_ids``); the user clicks with probability

    p_t(a) = sigmoid(logit_shop(user, moment, a) - fatigue * F_t[category(a)])

where ``logit_shop`` is the synthetic shop's hidden click model (``ClickModel.logits``) and ``F_t`` the user's
fatigue per category: after every step ``F <- fatigue_decay * F`` and the shown category gains 1.  The user's
satisfaction moves towards the relevance of what was shown, ``s <- s + rate (p_shop(a) / max_b p_shop(b) - s)``,
and after the step the user leaves with probability

    q_t = clip(leave + leave_fatigue * F_t[category(a)] + leave_dissatisfaction * (1 - s_{t+1}), 0, 1);

a visit ends after ``max_steps`` at most (truncation).  A user comes back ``Geometric(1 / mean_return_gap)``
days later with probability ``sigmoid(logit(return_rate) + return_satisfaction * (s_end - 0.5))``, within a
calendar of ``days`` days over a cohort of users; ``reset`` starts the calendar's next visit and a new calendar
when one is over.  With ``dynamics: false`` the clicks are the shop's (``p_t = p_shop``), leaving has the constant
probability ``leave`` and returning ``return_rate``: the shop's contextual bandit, with sessions.

The truth stays computable: ``click_probabilities()`` is every item's click probability at the current step,
which is what the myopic Oracle maximises and what the tests compare with the shop.

Observation (``Box``, float32, each part bounded): the user's attributes as the click model reads them, the
visit's device, daypart and weekend flag, then the session state: each category's fatigue times
``1 - fatigue_decay`` (in [0, 1]), satisfaction, the step over ``max_steps`` and the visits so far over 10.
"""

from __future__ import annotations

import heapq

import gymnasium
import numpy as np
import pandas as pd
from gymnasium import spaces
from scipy.special import expit, logit

from pipeline.config import SessionConfig
from pipeline.data.dataset import DAYPARTS, USER_ID, Dataset, daypart
from pipeline.data.synthetic import DEVICES, HOURLY_TRAFFIC, ClickModel

VISITS_SCALE = 10.0  # visits so far are observed divided by this, capped at 1


class ShopSessionEnv(gymnasium.Env):
    """Sessions in the synthetic shop; see the module docstring for the dynamics."""

    metadata = {"render_modes": []}

    def __init__(self, click_model: ClickModel, users: pd.DataFrame, items: pd.DataFrame,
                 config: SessionConfig = SessionConfig(), start_date: str = "2026-01-05"):
        self.model, self.config = click_model, config
        self.users = users.reset_index(drop=True)
        self.user_rows = np.searchsorted(click_model.user_ids, self.users[USER_ID].to_numpy())
        self.preferred_device = np.array([DEVICES.index(device) for device in self.users["preferred_device"]])
        prices = items.set_index("item_id").loc[click_model.item_ids, "price"].to_numpy(dtype=float)
        self.prices = prices
        self.item_value = prices if config.reward == "revenue" else np.ones(len(prices))
        self.item_category = click_model.item_category
        self.n_categories = len(click_model.categories)
        self.start = pd.Timestamp(start_date)
        user_width = click_model.user_attributes(self.user_rows[:1]).shape[1]
        self._moment_width = len(DEVICES) + len(DAYPARTS) + 1
        width = user_width + self._moment_width + self.n_categories + 3
        self.observation_space = spaces.Box(low=-5.0, high=5.0, shape=(width,), dtype=np.float32)
        self.action_space = spaces.Discrete(len(click_model.item_ids))
        self._calendar: list[tuple[int, int, int]] = []  # (day, tie-break, user index), a heap
        self.period, self._order = -1, 0
        self.visits = np.zeros(len(self.users), dtype=int)

    # ------------------------------------------------------------------------------------- episodes
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if seed is not None:  # a seeded reset starts afresh: same seed, same visits
            self._calendar, self.period, self._order = [], -1, 0
        if self.calendar_over:
            self._new_calendar()
        self.day, _, self.user = heapq.heappop(self._calendar)
        self.visits[self.user] += 1
        self.event = self._moment()
        self.base_logits = self.model.logits(self.model.coded_events(
            self.user_rows[[self.user]], np.array([self.event["daypart"]]), np.array([float(self.event["is_weekend"])]),
            np.array([self.event["device"]])))[0]
        self.base_probabilities = expit(self.base_logits)
        self.fatigue = np.zeros(self.n_categories)
        self.satisfaction, self.step_index = 1.0, 0
        self._user_part = self.model.user_attributes(self.user_rows[[self.user]])[0]
        self._moment_part = np.concatenate([np.eye(len(DEVICES))[self.event["device"]],
                                            np.eye(len(DAYPARTS))[self.event["daypart"]],
                                            [float(self.event["is_weekend"])]])
        return self._observation(), self._info()

    @property
    def calendar_over(self) -> bool:
        """No visit is left in this calendar (returns included): the next ``reset`` starts a new one."""
        return not self._calendar or self._calendar[0][0] >= self.config.days

    def _new_calendar(self) -> None:
        """A cohort's first visits, one per user on a uniformly random day (returns are added as visits end)."""
        self.period += 1
        cohort = self.config.cohort or len(self.users)
        chosen = self.np_random.choice(len(self.users), size=min(cohort, len(self.users)), replace=False)
        days = self.np_random.integers(min(self.config.first_visit_days or self.config.days, self.config.days),
                                       size=len(chosen))
        self._calendar = [(int(day), self._next_order(), int(user)) for day, user in zip(days, chosen)]
        heapq.heapify(self._calendar)
        self.visits[:] = 0

    def _next_order(self) -> int:
        self._order += 1
        return self._order

    def _moment(self) -> dict:
        """The visit's time and device, drawn as the shop draws its events (``make_events``): the daypart and
        device as positions in ``DAYPARTS`` and ``DEVICES``."""
        hour = int(self.np_random.choice(24, p=HOURLY_TRAFFIC / HOURLY_TRAFFIC.sum()))
        device = (self.preferred_device[self.user] if self.np_random.random() < 0.75
                  else int(self.np_random.integers(len(DEVICES))))
        return {"daypart": DAYPARTS.index(daypart(np.array([hour]))[0]), "device": int(device),
                "is_weekend": (self.start + pd.Timedelta(days=self.day)).dayofweek >= 5}

    # ------------------------------------------------------------------------------------- steps
    def click_probabilities(self) -> np.ndarray:
        """Every item's true click probability now (what the myopic Oracle maximises)."""
        if not self.config.dynamics:
            return self.base_probabilities
        return expit(self.base_logits - self.config.fatigue * self.fatigue[self.item_category])

    def step(self, action):
        if not self.action_space.contains(action):
            raise ValueError(f"action {action!r} is not an item position in 0..{self.action_space.n - 1}")
        action = int(action)
        config, category = self.config, self.item_category[action]
        probability = float(self.click_probabilities()[action])
        click = self.np_random.random() < probability
        shown_fatigue = self.fatigue[category]
        relevance = self.base_probabilities[action] / self.base_probabilities.max()
        self.satisfaction += config.satisfaction_rate * (relevance - self.satisfaction)
        self.fatigue *= config.fatigue_decay
        self.fatigue[category] += 1.0
        self.step_index += 1
        leave = config.leave
        if config.dynamics:
            leave += config.leave_fatigue * shown_fatigue + config.leave_dissatisfaction * (1 - self.satisfaction)
        terminated = bool(self.np_random.random() < min(leave, 1.0))
        truncated = not terminated and self.step_index >= config.max_steps
        info = {**self._info(), "item": action, "click": bool(click), "click_probability": probability,
                "relevance": float(relevance), "leave_probability": float(min(leave, 1.0))}
        if terminated or truncated:
            info["returns_on_day"] = self._schedule_return()
        return self._observation(), float(click) * float(self.item_value[action]), terminated, truncated, info

    def _schedule_return(self) -> int | None:
        """Whether and when this user comes back (a later visit of the calendar), from the final satisfaction."""
        config = self.config
        shift = config.return_satisfaction * (self.satisfaction - 0.5) if config.dynamics else 0.0
        if self.np_random.random() >= expit(logit(config.return_rate) + shift):
            return None
        day = self.day + int(self.np_random.geometric(1.0 / config.mean_return_gap))
        if day < config.days:
            heapq.heappush(self._calendar, (day, self._next_order(), self.user))
            return day
        return None

    def item_features(self) -> np.ndarray:
        """Each item's public features, in action order: its category (one-hot) and its standardised log price
        (what a catalogue shows; the click model's hidden item factors are not given).  For agents that embed
        items (``item_q.py``)."""
        categories = np.eye(self.n_categories)[self.item_category]
        log_price = np.log1p(self.prices)
        spread = log_price.std()
        return np.column_stack([categories, (log_price - log_price.mean()) / (spread if spread > 0 else 1.0)])

    def _observation(self) -> np.ndarray:
        session = np.concatenate([self.fatigue * (1 - self.config.fatigue_decay),
                                  [self.satisfaction, self.step_index / self.config.max_steps,
                                   min(self.visits[self.user] / VISITS_SCALE, 1.0)]])
        vector = np.concatenate([self._user_part, self._moment_part, session])
        return np.clip(vector, -5.0, 5.0).astype(np.float32)

    def _info(self) -> dict:
        return {"user_id": int(self.users[USER_ID].iloc[self.user]), "day": self.day, "period": self.period,
                "visit": int(self.visits[self.user]), "step": self.step_index, "satisfaction": self.satisfaction,
                "device": DEVICES[self.event["device"]], "daypart": DAYPARTS[self.event["daypart"]],
                "is_weekend": bool(self.event["is_weekend"])}


def shop_session_env(shop: Dataset, config: SessionConfig = SessionConfig()) -> ShopSessionEnv:
    """The environment of a generated synthetic shop (``pipeline.data.synthetic.generate``)."""
    if shop.click_model is None:
        raise ValueError("the session environment needs the synthetic shop's click model; bring-your-own data "
                         "has no ground truth to simulate users from")
    return ShopSessionEnv(shop.click_model, shop.users, shop.items, config)


def make_registered(synthetic: dict | None = None, sessions: dict | None = None, seed: int = 0) -> ShopSessionEnv:
    """The entry point of ``gymnasium.make("BanditShop/Sessions-v0", synthetic={...}, sessions={...}, seed=0)``:
    the shop generated from the ``data.synthetic`` and ``simulation.sessions`` keys of our config."""
    from pipeline.config import SyntheticConfig
    from pipeline.data.synthetic import generate

    shop = generate(SyntheticConfig(**(synthetic or {})), seed)
    return shop_session_env(shop, SessionConfig(**(sessions or {})))
