"""What the logged response is: a 0/1 click, or a real-valued reward (revenue, a rating) within a known range.

The data stage decides it (``data.files.reward_range``, else 0/1 when every response is 0 or 1, else the
observed minimum and maximum) and every later stage reads it from ``Dataset.reward``:

- **intervals** of mean rewards (replay CTR, off-policy estimates, the decision's) stay inside ``[low, high]``;
  their floors for small samples (Wilson's interval, the Bernoulli variance bound) hold for any reward bounded
  in [0, 1], so they are computed on the unit scale ``(r - low) / (high - low)`` and mapped back;
- **metrics that need binary responses** (AUC, Precision, Recall, NDCG, MAP: they count "relevant" items) are
  not computed for real-valued rewards, and the run says so; CTR is then the mean reward of the matched events;
- **policies** learn from what they can: Thompson sampling only from 0/1 rewards, Popularity only from
  non-negative ones (``policies.accepted_rewards``); a policy that cannot learn from the data is refused before
  any training, by name.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Replay metrics defined for 0/1 responses only.
BINARY_ONLY_METRICS = ("AUC", "Precision", "Recall", "NDCG", "MAP")


@dataclass(frozen=True)
class RewardScale:
    """The range a response can take and whether it is a 0/1 click."""

    low: float = 0.0
    high: float = 1.0
    binary: bool = True
    declared: bool = True  # False: [low, high] is only the range observed in the data

    def __post_init__(self):
        if not (np.isfinite(self.low) and np.isfinite(self.high) and self.low < self.high):
            raise ValueError(f"a reward range needs finite low < high, not [{self.low}, {self.high}]")

    @property
    def width(self) -> float:
        return self.high - self.low

    def to_unit(self, values):
        return (np.asarray(values, dtype=float) - self.low) / self.width

    def from_unit(self, values):
        return self.low + self.width * np.asarray(values, dtype=float)

    def clip(self, values):
        return np.clip(values, self.low, self.high)

    def describe(self) -> str:
        if self.binary:
            return "0/1 clicks"
        source = "declared" if self.declared else "observed in the data (data.files.reward_range not given)"
        return f"real-valued rewards in [{self.low:g}, {self.high:g}], {source}"

    def as_dict(self) -> dict:
        return {"low": self.low, "high": self.high, "binary": self.binary, "declared": self.declared}


CLICKS = RewardScale()


def scale_of(responses: np.ndarray, declared: tuple[float, float] | None) -> RewardScale:
    """The scale of finite ``responses``: the declared range (they must lie in it), else 0/1 or the observed one."""
    responses = np.asarray(responses, dtype=float)
    binary = bool(np.isin(responses, (0.0, 1.0)).all())
    if declared is not None:
        return RewardScale(float(declared[0]), float(declared[1]), binary and tuple(declared) == (0, 1), True)
    if binary:
        return CLICKS
    low, high = float(responses.min()), float(responses.max())
    return RewardScale(low, high if high > low else low + 1.0, False, False)
