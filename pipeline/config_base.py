"""The base of every config block (``pipeline/config.py`` is the schema)."""

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    """Base of every config block: unknown keys are errors and values are immutable once validated."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
