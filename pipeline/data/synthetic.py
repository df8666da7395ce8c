"""A realistic synthetic shop with a hidden ground-truth click model.

The generator makes users (age, gender, location, traffic source, membership), a catalog of items whose
name and description are written from templates (category nouns and materials, style adjectives, quality
phrases), and events at realistic times of day on a device.  A logging policy picks the shown item and every
event stores its propensity: uniformly random (``1 / n_items``) by default, or, with ``logging: softmax``, a
production-like logger (``ClickModel.logging_probabilities``) that favours items by a noisy view of the truth.
With ``slate_size`` above 1 every impression shows several items (``synthetic_slates.py``).  Clicks are drawn
from ``ClickModel``, a logistic model of user x item x time interactions with two non-linear parts (a U-shaped price
sensitivity in age, and a random tanh network over user, context and item attributes).  The click model
can return the probability of *any* item for *any* event, which is what lets the evaluation score policies
against the truth and compute the Oracle.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.config import EffectsConfig, SyntheticConfig
from pipeline.data.dataset import (CASCADE_PROPENSITY, DAYPARTS, EVENT_ID, ITEM_ID, POSITION, PROPENSITY, RESPONSE,
                                   SLATE_ID, SLATE_PROPENSITY, TIMESTAMP, USER_ID, Dataset, time_context)
from pipeline.data.synthetic_slates import log_slates

# ------------------------------------------------------------------------------------- vocabularies
CATEGORIES = {
    "electronics": dict(price=90, nouns=["wireless earbuds", "bluetooth speaker", "smart watch", "USB-C charger",
                                         "mechanical keyboard", "noise-cancelling headphones", "portable SSD", "webcam"],
                        materials=["aluminium", "matte plastic", "tempered glass"], uses=["gaming", "working from home",
                                                                                        "travel", "streaming music"]),
    "books": dict(price=18, nouns=["mystery novel", "cookbook", "history of Rome", "poetry collection", "sci-fi saga",
                                   "self-help guide", "children's picture book", "travel guide"],
                  materials=["hardcover", "paperback", "illustrated edition"], uses=["a rainy weekend", "the commute",
                                                                                      "bedtime reading", "book clubs"]),
    "fashion": dict(price=55, nouns=["denim jacket", "running sneakers", "wool scarf", "leather belt", "summer dress",
                                     "hoodie", "rain coat", "silk tie"],
                    materials=["cotton", "merino wool", "vegan leather"], uses=["everyday wear", "the office",
                                                                                "a night out", "cold mornings"]),
    "home": dict(price=45, nouns=["ceramic mug set", "cast iron skillet", "linen bedding", "desk lamp", "throw pillow",
                                  "chef's knife", "storage basket", "wall clock"],
                 materials=["stoneware", "bamboo", "stainless steel"], uses=["the kitchen", "cosy evenings",
                                                                             "small apartments", "hosting guests"]),
    "sports": dict(price=60, nouns=["yoga mat", "dumbbell pair", "cycling helmet", "tennis racket", "hiking backpack",
                                    "jump rope", "football", "water bottle"],
                   materials=["recycled rubber", "carbon fibre", "ripstop nylon"], uses=["home workouts", "trail runs",
                                                                                        "weekend hikes", "the gym"]),
    "beauty": dict(price=25, nouns=["face serum", "lip balm", "hair dryer", "perfume", "moisturiser", "nail polish set",
                                    "makeup brush kit", "sunscreen"],
                   materials=["shea butter", "aloe vera", "vitamin C"], uses=["a morning routine", "sensitive skin",
                                                                              "self-care Sundays", "gifting"]),
    "toys": dict(price=30, nouns=["building blocks", "plush bear", "puzzle", "remote-control car", "board game",
                                  "doll house", "science kit", "wooden train"],
                 materials=["beech wood", "soft plush", "BPA-free plastic"], uses=["family game night", "rainy days",
                                                                                    "curious kids", "birthdays"]),
    "grocery": dict(price=12, nouns=["coffee beans", "olive oil", "dark chocolate", "green tea", "granola",
                                     "pasta sauce", "honey jar", "spice set"],
                    materials=["single-origin", "cold-pressed", "stone-ground"], uses=["breakfast", "quick dinners",
                                                                                        "snacking", "baking"]),
    "garden": dict(price=35, nouns=["pruning shears", "plant pot", "garden hose", "seed kit", "bird feeder",
                                    "watering can", "solar lantern", "compost bin"],
                   materials=["terracotta", "galvanised steel", "weatherproof resin"], uses=["balcony gardens",
                                                                                            "spring planting",
                                                                                            "summer evenings",
                                                                                            "growing herbs"]),
    "music": dict(price=70, nouns=["acoustic guitar", "vinyl record", "ukulele", "keyboard stand", "drum pad",
                                   "guitar strings", "studio microphone", "metronome"],
                  materials=["spruce top", "maple", "die-cast metal"], uses=["beginners", "live gigs",
                                                                             "home recording", "practice sessions"]),
}
STYLES = {
    "budget": dict(price=0.6, adjectives=["affordable", "everyday", "value", "basic"],
                   phrases=["Great value for money.", "Simple, practical and affordable."]),
    "premium": dict(price=1.9, adjectives=["luxury", "premium", "professional-grade", "handcrafted"],
                    phrases=["Premium finish with meticulous craftsmanship.", "Designed for the discerning buyer."]),
    "eco": dict(price=1.15, adjectives=["eco-friendly", "sustainable", "organic", "recycled"],
                phrases=["Sustainably sourced with plastic-free packaging.", "Kind to the planet."]),
    "trendy": dict(price=1.25, adjectives=["trending", "limited-edition", "bold", "viral"],
                   phrases=["The must-have of the season.", "As seen all over social media."]),
    "classic": dict(price=1.0, adjectives=["classic", "timeless", "traditional", "reliable"],
                    phrases=["A timeless design that never goes out of style.", "Built to last for years."]),
}
QUALITY_PHRASES = ["Best-selling and top-rated by customers.", "Award-winning and loved by thousands of shoppers.",
                   "Five-star reviews across the board."]
BRANDS = ["Nordvik", "Alba", "Kestrel", "Lumen", "Marlow", "Oakridge", "Pico", "Quill", "Riva", "Solace", "Tundra",
          "Vesta", "Willow", "Zenith", "Aster", "Brio"]
AUDIENCES = ["for everyone", "for beginners", "for experts", "for families", "for students", "for travellers"]

GENDERS = ("female", "male", "nonbinary")
LOCATIONS = ("urban", "suburban", "rural")
TRAFFIC_SOURCES = ("organic", "search", "social", "email", "ads")
MEMBERSHIPS = ("none", "silver", "gold")
DEVICES = ("mobile", "desktop", "tablet")
AGE_BINS = np.array([25, 35, 50, 65])  # age groups: <25, 25-34, 35-49, 50-64, 65+
HOURLY_TRAFFIC = np.array([2, 1, 1, 1, 1, 2, 4, 6, 7, 7, 7, 8, 10, 9, 7, 7, 7, 8, 10, 12, 12, 10, 7, 4], dtype=float)

TERMS = tuple(EffectsConfig.model_fields)
HIDDEN_UNITS = 16


@dataclass
class _EventArrays:
    """Event-side inputs of the click model, as integer codes aligned with the model's vocabularies."""

    user: np.ndarray
    daypart: np.ndarray
    weekend: np.ndarray
    device: np.ndarray
    hidden: np.ndarray  # each event's contribution to the hidden tanh layer


class ClickModel:
    """Hidden logistic click model: ``P(click | event, item) = sigmoid(intercept + sum_t w_t * term_t / scale_t)``.

    Terms (each a lookup of a random table, standardised by ``scale_t`` to unit spread over uniformly
    random (event, item) pairs, so the YAML weights ``w_t`` are comparable):

    - ``item_quality``: ``q[item]``
    - ``segment_category``: ``A[age group x gender of user, category]``
    - ``traffic_source_category``: ``S[traffic source, category]``
    - ``time_category``: ``T[daypart, category] + W[category] * is_weekend``
    - ``device_category``: ``D[device, category]``
    - ``style_affinity``: ``B[membership, style] + L[location, style]``
    - ``price_sensitivity``: ``-(((age - 45) / 20)^2 - 0.5) * z(log price)``, U-shaped in age
    - ``nonlinear``: ``v . tanh(W_c c + W_i x_item + b)`` with ``c`` the user and event attributes
    - ``user_taste``: ``U[user, category]``, hidden per-user taste that no feature reveals
    """

    def __init__(self, users: pd.DataFrame, items: pd.DataFrame, effects: EffectsConfig, rng: np.random.Generator):
        self.user_ids = users[USER_ID].to_numpy()
        self.item_ids = items[ITEM_ID].to_numpy()
        self.categories = tuple(sorted(items["category"].unique()))
        self.weights = np.array([getattr(effects, term) for term in TERMS])
        n_cat, n_style = len(self.categories), len(STYLES)

        # Item side.
        self.item_category = _codes(items["category"], self.categories)
        self.item_style = _codes(items["style"], tuple(STYLES))
        self.quality = items["quality"].to_numpy(dtype=float)
        log_price = np.log(items["price"].to_numpy(dtype=float))
        self.price_z = (log_price - log_price.mean()) / (log_price.std() + 1e-12)

        # User side.
        age = users["age"].to_numpy(dtype=float)
        self.user_segment = np.digitize(age, AGE_BINS) * len(GENDERS) + _codes(users["gender"], GENDERS)
        self.user_source = _codes(users["traffic_source"], TRAFFIC_SOURCES)
        self.user_style = (rng.normal(size=(len(MEMBERSHIPS), n_style))[_codes(users["membership"], MEMBERSHIPS)]
                           + rng.normal(size=(len(LOCATIONS), n_style))[_codes(users["location"], LOCATIONS)]) / np.sqrt(2)
        self.price_sensitivity = ((age - 45.0) / 20.0) ** 2 - 0.5
        self.user_taste = rng.normal(size=(len(users), n_cat))

        # Interaction tables.
        self.segment_affinity = rng.normal(size=((len(AGE_BINS) + 1) * len(GENDERS), n_cat))
        self.source_affinity = rng.normal(size=(len(TRAFFIC_SOURCES), n_cat))
        self.daypart_affinity = rng.normal(size=(len(DAYPARTS), n_cat))
        self.weekend_affinity = rng.normal(size=n_cat)
        self.device_affinity = rng.normal(size=(len(DEVICES), n_cat))

        # Random tanh network: user/event attributes and item attributes -> hidden units -> one output.
        self._user_design = np.column_stack([
            (age - 45.0) / 15.0, _one_hot(users["gender"], GENDERS), _one_hot(users["location"], LOCATIONS),
            _one_hot(users["traffic_source"], TRAFFIC_SOURCES), _one_hot(users["membership"], MEMBERSHIPS),
        ])
        n_context = self._user_design.shape[1] + len(DEVICES) + len(DAYPARTS) + 1
        item_design = np.column_stack([np.eye(n_cat)[self.item_category], np.eye(n_style)[self.item_style],
                                       self.price_z, self.quality])
        self._context_weights = rng.normal(scale=1.5 / np.sqrt(4), size=(n_context, HIDDEN_UNITS))
        self.item_hidden = item_design @ rng.normal(scale=1.5 / np.sqrt(3), size=(item_design.shape[1], HIDDEN_UNITS))
        self.hidden_bias = rng.normal(size=HIDDEN_UNITS)
        self.hidden_out = rng.normal(size=HIDDEN_UNITS) / np.sqrt(HIDDEN_UNITS)

        self.scales = np.ones(len(TERMS))
        self.intercept = 0.0
        self.logger = np.zeros(0)  # softmax logger: [temperature, uniform share, per-item error...]; empty: uniform
        self.examination = np.zeros(0)  # slate logs: probability of looking at each slot; empty: one item per event

    # ----------------------------------------------------------------------------------- terms
    def event_arrays(self, events: pd.DataFrame) -> _EventArrays:
        return self.coded_events(np.searchsorted(self.user_ids, events[USER_ID].to_numpy()),
                                 _codes(events["daypart"], DAYPARTS), events["is_weekend"].to_numpy(dtype=float),
                                 _codes(events["device"], DEVICES))

    def coded_events(self, user: np.ndarray, part: np.ndarray, weekend: np.ndarray, device: np.ndarray
                     ) -> _EventArrays:
        """``event_arrays`` from codes: user rows, daypart and device positions in ``DAYPARTS`` and ``DEVICES``
        (one visit at a time, without a DataFrame: the session environment starts thousands)."""
        context = np.column_stack([self._user_design[user], np.eye(len(DEVICES))[device],
                                   np.eye(len(DAYPARTS))[part], weekend])
        return _EventArrays(user, part, weekend, device, context @ self._context_weights + self.hidden_bias)

    def _terms(self, ev: _EventArrays, rows: np.ndarray, items: np.ndarray) -> list[np.ndarray]:
        """Each raw term for event rows x items; ``rows``/``items`` broadcast (pairs or a full grid)."""
        user, cat = ev.user[rows], self.item_category[items]
        return [
            np.broadcast_to(self.quality[items], np.broadcast_shapes(rows.shape, items.shape)),
            self.segment_affinity[self.user_segment[user], cat],
            self.source_affinity[self.user_source[user], cat],
            self.daypart_affinity[ev.daypart[rows], cat] + self.weekend_affinity[cat] * ev.weekend[rows],
            self.device_affinity[ev.device[rows], cat],
            self.user_style[user, self.item_style[items]],
            -self.price_sensitivity[user] * self.price_z[items],
            np.tanh(ev.hidden[rows] + self.item_hidden[items]) @ self.hidden_out,
            self.user_taste[user, cat],
        ]

    def _logits(self, ev: _EventArrays, rows: np.ndarray, items: np.ndarray) -> np.ndarray:
        terms = self._terms(ev, rows, items)
        return self.intercept + sum(w / s * t for w, s, t in zip(self.weights, self.scales, terms))

    def calibrate(self, ev: _EventArrays, base_ctr: float, rng: np.random.Generator, n_pairs: int = 50_000) -> None:
        """Standardise every term over random (event, item) pairs, then solve the intercept for ``base_ctr``."""
        rows = rng.integers(len(ev.user), size=n_pairs)
        items = rng.integers(len(self.item_ids), size=n_pairs)
        terms = self._terms(ev, rows, items)
        self.scales = np.array([max(term.std(), 1e-12) for term in terms])
        self.intercept = 0.0
        logits = self._logits(ev, rows, items)
        low, high = -20.0, 20.0
        for _ in range(60):  # bisection: mean sigmoid is increasing in the intercept
            mid = (low + high) / 2
            low, high = (mid, high) if _sigmoid(logits + mid).mean() < base_ctr else (low, mid)
        self.intercept = (low + high) / 2

    # --------------------------------------------------------------------------------- public
    def logits(self, events: pd.DataFrame | _EventArrays) -> np.ndarray:
        """The click logit of every catalog item (columns in ``item_ids`` order) for a few event rows (or their
        ``coded_events``): ``probabilities`` is their sigmoid (the session environment adds its own terms)."""
        ev = events if isinstance(events, _EventArrays) else self.event_arrays(events)
        return self._grid_logits(ev, np.arange(len(ev.user)))

    def user_attributes(self, user_rows: np.ndarray) -> np.ndarray:
        """The users' attributes as the click model reads them (age standardised, the rest one-hot)."""
        return self._user_design[user_rows]

    def probabilities(self, events: pd.DataFrame, chunk_size: int = 512) -> np.ndarray:
        """Click probability of every catalog item (columns in ``item_ids`` order) for every event row."""
        ev = self.event_arrays(events)
        out = np.empty((len(events), len(self.item_ids)))
        for start in range(0, len(events), chunk_size):
            rows = np.arange(start, min(start + chunk_size, len(events)))
            out[start:start + len(rows)] = _sigmoid(self._grid_logits(ev, rows))
        return out

    def _grid_logits(self, ev: _EventArrays, rows: np.ndarray) -> np.ndarray:
        """``_logits`` for event ``rows`` x every item, computed per event and category / style first and then
        spread over the items (the same sum, grouped differently: equal to ``_logits`` up to rounding)."""
        w = self.weights / self.scales
        user = ev.user[rows]
        per_category = (w[1] * self.segment_affinity[self.user_segment[user]]
                        + w[2] * self.source_affinity[self.user_source[user]]
                        + w[3] * (self.daypart_affinity[ev.daypart[rows]]
                                  + self.weekend_affinity[None, :] * ev.weekend[rows, None])
                        + w[4] * self.device_affinity[ev.device[rows]]
                        + w[8] * self.user_taste[user])
        logits = per_category[:, self.item_category] + (self.intercept + w[0] * self.quality)[None, :]
        logits += w[5] * self.user_style[user][:, self.item_style]
        logits += (-w[6] * self.price_sensitivity[user])[:, None] * self.price_z[None, :]
        logits += w[7] * (np.tanh(ev.hidden[rows][:, None, :] + self.item_hidden[None]) @ self.hidden_out)
        return logits

    def best_items(self, events: pd.DataFrame, k: int, chunk_size: int = 2048) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` items of highest click probability per event (positions in ``item_ids``, best first) and
        their probabilities, without holding the events x items matrix (1.6 GB at 200k x 1,000)."""
        k = min(k, len(self.item_ids))
        positions, values = np.empty((len(events), k), dtype=np.int64), np.empty((len(events), k))
        for start in range(0, len(events), chunk_size):
            part = self.probabilities(events.iloc[start:start + chunk_size])
            top = np.argsort(-part, axis=1, kind="stable")[:, :k]
            positions[start:start + len(part)], values[start:start + len(part)] = top, np.take_along_axis(part, top, 1)
        return positions, values

    def pair_probabilities(self, events: pd.DataFrame, rows: np.ndarray, items: np.ndarray,
                           chunk_size: int = 250_000) -> np.ndarray:
        """Click probability of item position ``items[j]`` for event row ``rows[j]`` (many pairs, bounded memory)."""
        ev = self.event_arrays(events)
        out = np.empty(len(rows))
        for start in range(0, len(rows), chunk_size):
            part = slice(start, start + chunk_size)
            out[part] = _sigmoid(self._logits(ev, rows[part], items[part]))
        return out

    def probability_of(self, events: pd.DataFrame, item_ids: np.ndarray) -> np.ndarray:
        """Click probability of one given item per event (the logged item, say)."""
        ev = self.event_arrays(events)
        items = self.item_positions(item_ids)
        return _sigmoid(self._logits(ev, np.arange(len(events)), items))

    def logging_probabilities(self, events: pd.DataFrame, chunk_size: int = 512) -> np.ndarray:
        """The logging policy's probability of showing every item (columns in ``item_ids`` order) per event.

        Softmax logging: ``p(a | x) = eps / n + (1 - eps) softmax_a((logit(x, a) + e_a) / T)`` with the click
        model's true logit, a fixed per-item error ``e_a ~ N(0, noise^2)`` (the logger's mistaken view of each
        item), temperature ``T`` and uniform share ``eps`` (every item keeps a propensity of at least eps / n).
        """
        ev = self.event_arrays(events)
        out = np.empty((len(events), len(self.item_ids)))
        for start in range(0, len(events), chunk_size):
            rows = np.arange(start, min(start + chunk_size, len(events)))
            out[rows] = self._logger(self._grid_logits(ev, rows))
        return out

    def logged_value(self, events: pd.DataFrame) -> np.ndarray:
        """The logging policy's true value per event, ``sum_a p(a | x) P(click | x, a)`` (one logit grid for both)."""
        out = np.empty(len(events))
        for rows, logger, clicks in self.blocks(events):
            out[rows] = (logger * clicks).sum(axis=1)
        return out

    def blocks(self, events: pd.DataFrame, chunk_size: int = 512):
        """Per block of event rows: (rows, the logger's one-item distribution, every item's click probability),
        both (rows, items) from one logit grid."""
        ev = self.event_arrays(events)
        for start in range(0, len(events), chunk_size):
            rows = np.arange(start, min(start + chunk_size, len(events)))
            logits = self._grid_logits(ev, rows)
            yield rows, self._logger(logits), _sigmoid(logits)

    def _logger(self, logits: np.ndarray) -> np.ndarray:
        """The logging policy's distribution over the items, from the true logits of a block of events."""
        n_items = logits.shape[1]
        if len(self.logger) == 0:
            return np.full(logits.shape, 1.0 / n_items)
        temperature, uniform, error = self.logger[0], self.logger[1], self.logger[2:]
        scaled = (logits + error[None, :]) / temperature
        softmax = np.exp(scaled - scaled.max(axis=1, keepdims=True))
        return uniform / n_items + (1 - uniform) * softmax / softmax.sum(axis=1, keepdims=True)

    def item_positions(self, item_ids: np.ndarray) -> np.ndarray:
        positions = np.searchsorted(self.item_ids, item_ids)
        positions = np.clip(positions, 0, len(self.item_ids) - 1)
        if not np.array_equal(self.item_ids[positions], np.asarray(item_ids)):
            raise KeyError("item ids unknown to the click model")
        return positions

    def shifted(self, strength: float, rng: np.random.Generator) -> "ClickModel":
        """A market shock: a copy whose tastes moved by ``strength`` (0: none, 1: brand-new tastes).

        Every random table (item quality, all the category and style affinities, user tastes, the tanh
        network's output weights) becomes ``sqrt(1 - s^2) * old + s * fresh``, which keeps each term's
        spread, so the click rate stays about the same while which items are good for whom changes.
        """
        shocked = copy.deepcopy(self)
        keep = np.sqrt(max(1.0 - strength ** 2, 0.0))
        for name in ("quality", "segment_affinity", "source_affinity", "daypart_affinity", "weekend_affinity",
                     "device_affinity", "user_style", "user_taste", "hidden_out"):
            old = getattr(self, name)
            setattr(shocked, name, keep * old + strength * rng.normal(size=old.shape) * old.std())
        return shocked

    def save(self, path: Path) -> None:
        """Store every parameter (NumPy arrays) so the truth can be recomputed without the generator."""
        np.savez_compressed(path, **{name: np.asarray(value) for name, value in vars(self).items()})

    @classmethod
    def load(cls, path: Path) -> "ClickModel":
        model = cls.__new__(cls)
        model.logger = np.zeros(0)  # click models saved before softmax logging: uniform
        model.examination = np.zeros(0)  # ... and before slate logs: one item per event
        with np.load(path, allow_pickle=False) as arrays:
            for name in arrays.files:
                value = arrays[name]
                setattr(model, name, tuple(value) if name == "categories" else value)
        model.intercept = float(model.intercept)
        return model


# --------------------------------------------------------------------------------------- generator
def generate(config: SyntheticConfig, seed: int) -> Dataset:
    """Generate users, items, events and clicks; every draw comes from one generator seeded by ``seed``."""
    rng = np.random.default_rng(seed)
    users = _make_users(config.n_users, rng)
    items = _make_items(config.n_items, config.n_categories, rng)
    events = make_events(config, users, rng)
    model = ClickModel(users, items, config.effects, rng)
    model.calibrate(model.event_arrays(events), config.base_ctr, rng)

    if config.logging == "softmax":
        model.logger = np.r_[config.logging_temperature, config.logging_uniform_share,
                             rng.normal(scale=config.logging_noise, size=len(items))]
    columns = [EVENT_ID, USER_ID, ITEM_ID, RESPONSE, PROPENSITY, TIMESTAMP, "device", "daypart", "is_weekend"]
    if config.slate_size > 1:
        model.examination = np.asarray(config.examination())
        events = log_slates(model, events, items[ITEM_ID].to_numpy(), config.slate_size, model.examination, rng)
        columns += [SLATE_ID, POSITION, SLATE_PROPENSITY, CASCADE_PROPENSITY]
    else:
        shown, propensity = _log_items(model, events, rng)
        events[ITEM_ID] = items[ITEM_ID].to_numpy()[shown]
        events[PROPENSITY] = propensity
        events[RESPONSE] = (rng.random(len(events)) < model.probability_of(events, events[ITEM_ID].to_numpy())
                            ).astype(np.int8)

    public_items = items.drop(columns=["style", "quality"])  # hidden attributes stay with the click model
    return Dataset(
        interactions=events[columns],
        users=users,
        items=public_items,
        event_context=("device", "daypart", "is_weekend"),
        sources={"interactions": "synthetic interactions", "users": "synthetic users", "items": "synthetic items"},
        click_model=model,
    )


def _log_items(model: ClickModel, events: pd.DataFrame, rng: np.random.Generator,
               chunk_size: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Item positions the logging policy shows, one per event, and their propensities."""
    n_items = len(model.item_ids)
    if len(model.logger) == 0:  # uniform: drawn as before softmax logging existed, so old seeds give old data
        return rng.integers(n_items, size=len(events)), np.full(len(events), 1.0 / n_items)
    shown, propensity = np.empty(len(events), dtype=np.int64), np.empty(len(events))
    for start in range(0, len(events), chunk_size):
        probabilities = model.logging_probabilities(events.iloc[start:start + chunk_size])
        cumulative = np.cumsum(probabilities, axis=1)
        draws = rng.random(len(probabilities)) * cumulative[:, -1]
        picked = np.minimum((cumulative < draws[:, None]).sum(axis=1), n_items - 1)
        shown[start:start + len(picked)] = picked
        propensity[start:start + len(picked)] = probabilities[np.arange(len(picked)), picked]
    return shown, propensity


def _make_users(n_users: int, rng: np.random.Generator) -> pd.DataFrame:
    age = np.clip(np.where(rng.random(n_users) < 0.6, rng.normal(30, 7, n_users), rng.normal(52, 12, n_users)), 18, 85)
    return pd.DataFrame({
        USER_ID: np.arange(1, n_users + 1),
        "age": np.round(age).astype(int),
        "gender": rng.choice(GENDERS, n_users, p=[0.48, 0.47, 0.05]),
        "location": rng.choice(LOCATIONS, n_users, p=[0.45, 0.35, 0.2]),
        "traffic_source": rng.choice(TRAFFIC_SOURCES, n_users, p=[0.3, 0.25, 0.2, 0.1, 0.15]),
        "membership": rng.choice(MEMBERSHIPS, n_users, p=[0.6, 0.3, 0.1]),
        "preferred_device": rng.choice(DEVICES, n_users, p=[0.6, 0.3, 0.1]),
    })


def _make_items(n_items: int, n_categories: int, rng: np.random.Generator) -> pd.DataFrame:
    categories = list(CATEGORIES)[:n_categories]
    rows = []
    for item_number in range(n_items):
        category = categories[item_number % n_categories]  # every category gets a fair share
        vocab, style = CATEGORIES[category], rng.choice(list(STYLES))
        noun, adjective = rng.choice(vocab["nouns"]), rng.choice(STYLES[style]["adjectives"])
        quality = rng.normal()
        praise = rng.choice(QUALITY_PHRASES) if rng.random() < 1 / (1 + np.exp(-2 * quality)) - 0.15 else ""
        description = (
            f"{adjective.capitalize()} {noun} {rng.choice(AUDIENCES)}, made from {rng.choice(vocab['materials'])}. "
            f"{rng.choice(STYLES[style]['phrases'])} {praise} Perfect for {rng.choice(vocab['uses'])}."
        ).replace("  ", " ")
        price = vocab["price"] * STYLES[style]["price"] * rng.lognormal(0, 0.35)
        rows.append({
            ITEM_ID: item_number + 1,
            "name": f"{rng.choice(BRANDS)} {adjective.title()} {noun.title()}",
            "description": description,
            "category": category,
            "price": round(max(price, 1.0)) - 0.01,
            "style": style,
            "quality": quality,
        })
    return pd.DataFrame(rows)


def make_events(config: SyntheticConfig, users: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    """``config.n_events`` events of these users over ``config.n_days`` days from ``config.start_date``."""
    n = config.n_events
    activity = rng.lognormal(0, 1, len(users))
    user_rows = rng.choice(len(users), size=n, p=activity / activity.sum())
    day = rng.integers(config.n_days, size=n)
    hour = rng.choice(24, size=n, p=HOURLY_TRAFFIC / HOURLY_TRAFFIC.sum())
    seconds = day * 86_400 + hour * 3_600 + rng.integers(3_600, size=n)
    timestamp = pd.Timestamp(config.start_date) + pd.to_timedelta(np.sort(seconds), unit="s")
    order = np.argsort(seconds, kind="stable")
    user_rows = user_rows[order]
    preferred = users["preferred_device"].to_numpy()[user_rows]
    device = np.where(rng.random(n) < 0.75, preferred, rng.choice(DEVICES, size=n))
    events = pd.DataFrame({EVENT_ID: np.arange(n), USER_ID: users[USER_ID].to_numpy()[user_rows],
                           TIMESTAMP: timestamp, "device": device})
    return pd.concat([events, time_context(events[TIMESTAMP])], axis=1)


def _codes(values: pd.Series, vocabulary: tuple[str, ...]) -> np.ndarray:
    codes = pd.Categorical(values, categories=vocabulary).codes
    if (codes < 0).any():
        raise ValueError(f"values outside {vocabulary}: {sorted(set(values) - set(vocabulary))}")
    return codes


def _one_hot(values: pd.Series, vocabulary: tuple[str, ...]) -> np.ndarray:
    return np.eye(len(vocabulary))[_codes(values, vocabulary)]


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))
