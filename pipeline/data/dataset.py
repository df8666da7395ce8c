"""The typed contract of the data stage: logged bandit data in canonical column names.

Whatever the source (the synthetic generator or the user's files), the later stages see a ``Dataset``
whose interactions use the names below, whose checks have already passed, and whose ``sources`` say
which file each table came from (for error messages downstream).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Mapping

import numpy as np
import pandas as pd

from pipeline.rewards import CLICKS, RewardScale

if TYPE_CHECKING:  # pragma: no cover
    from pipeline.data.synthetic import ClickModel

EVENT_ID = "event_id"
USER_ID = "user_id"
ITEM_ID = "item_id"
RESPONSE = "response"
PROPENSITY = "propensity"
ESTIMATE = "estimate"  # data.files.columns.propensity: estimate - fit the logging policy instead of reading it
TIMESTAMP = "timestamp"
POSITION = "position"  # slot of the row in a multi-item impression, 1 = top (slate logs)
SLATE_ID = "slate_id"  # groups the rows of one impression (integer codes after loading)
SLATE_PROPENSITY = "slate_propensity"  # the logging policy's probability of the whole slate
CASCADE_PROPENSITY = "cascade_propensity"  # ... of the slate's slots 1..position
#: The key Mab2Rec sees as "user": the user (user-level context) or the event (event-level context).
CONTEXT_ID = "context_id"

DAYPARTS = ("night", "morning", "afternoon", "evening")


def daypart(hours: np.ndarray) -> np.ndarray:
    """Hour of day (0-23) -> 'night' (0-5), 'morning' (6-11), 'afternoon' (12-17), 'evening' (18-23)."""
    return np.asarray(DAYPARTS, dtype=object)[np.asarray(hours) // 6]


def time_context(timestamps: pd.Series) -> pd.DataFrame:
    """The time flags of each event: its daypart and whether it falls on a weekend."""
    timestamps = pd.to_datetime(timestamps)
    return pd.DataFrame(
        {"daypart": daypart(timestamps.dt.hour.to_numpy()), "is_weekend": timestamps.dt.dayofweek.to_numpy() >= 5},
        index=timestamps.index,
    )


@dataclass(frozen=True)
class Dataset:
    """Logged interactions plus optional user and item tables.

    ``interactions`` has one row per logged event with ``event_id``, ``user_id``, ``item_id`` and a
    ``response`` (0/1 clicks, or real-valued rewards: ``reward`` says which); optionally ``propensity``
    (probability the logging policy showed that item), ``timestamp``, and the ``event_context`` columns that describe the moment of the event.  When
    ``event_context`` is non-empty every event is its own context; otherwise contexts are users, as in
    Mab2Rec.  ``test_mask`` marks rows of a given test file.  ``event_id`` is the row's position in the file as
    read (train rows first with separate files), kept when rows are dropped.  ``click_model`` is the hidden truth of
    synthetic data.
    """

    interactions: pd.DataFrame
    users: pd.DataFrame | None
    items: pd.DataFrame | None
    event_context: tuple[str, ...] = ()
    sources: Mapping[str, str] = field(default_factory=dict)
    click_model: "ClickModel | None" = None
    test_mask: np.ndarray | None = None
    propensity_estimated: bool = False  # no propensity column: the runner estimates them per fold
    reward: RewardScale = CLICKS  # what ``response`` holds (``pipeline/rewards.py``)
    dropped: Mapping[str, int] = field(default_factory=dict)  # events the data stage left out, by reason
    first_row_event: int = 0  # the event id of row 1 of the file users count rows in (the test file if separate)
    file_rows: int | None = None  # that file's data rows as read, before any were dropped (None: all are here)

    @property
    def context_level(self) -> str:
        return "event" if self.event_context else "user"

    @property
    def has_propensity(self) -> bool:
        """Whether off-policy estimation is possible: propensities logged, or to be estimated."""
        return PROPENSITY in self.interactions.columns or self.propensity_estimated

    @property
    def slate_size(self) -> int | None:
        """Slots per impression of a slate log (the largest position), None for one item per event."""
        return int(self.interactions[POSITION].max()) if POSITION in self.interactions.columns else None

    @property
    def slates_grouped(self) -> bool:
        """Whether the rows of each impression are grouped (a slate_id column)."""
        return SLATE_ID in self.interactions.columns

    @property
    def context_key(self) -> str:
        """The interaction column that identifies a context: the user, the event, or the event's impression."""
        if self.context_level == "user":
            return USER_ID
        return SLATE_ID if self.slates_grouped else EVENT_ID

    @property
    def has_timestamp(self) -> bool:
        return TIMESTAMP in self.interactions.columns

    @property
    def n_items(self) -> int:
        return len(self.items) if self.items is not None else self.interactions[ITEM_ID].nunique()

    def source(self, role: str) -> str:
        return self.sources.get(role, role)

    def summary(self) -> dict:
        return {
            "n_events": int(len(self.interactions)),
            "n_users": int(self.interactions[USER_ID].nunique()),
            "n_items": int(self.n_items),
            "response_rate": float(self.interactions[RESPONSE].mean()),
            "context_level": self.context_level,
            "event_context": list(self.event_context),
            "has_propensity": self.has_propensity,
            "slate_size": self.slate_size,
            "slates_grouped": self.slates_grouped,
            "propensity_estimated": self.propensity_estimated,
            "has_ground_truth": self.click_model is not None,
            "reward": self.reward.as_dict(),
            "dropped_events": dict(self.dropped),
            "sources": dict(self.sources),
        }
