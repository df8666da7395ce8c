"""Data stage: the synthetic generator or the user's files -> a checked ``Dataset``."""

import dataclasses

import pandas as pd

from pipeline.config import PipelineConfig
from pipeline.data.dataset import TIMESTAMP, Dataset, time_context
from pipeline.errors import ConfigError


def load_dataset(config: PipelineConfig) -> Dataset:
    if config.data.source == "synthetic":
        from pipeline.data.synthetic import generate

        dataset = generate(config.data.synthetic, seed=config.data_seed)
    else:
        from pipeline.data.files import load_files

        dataset = load_files(config.data.files)
    return with_time_flags(dataset) if config.features.time_flags else dataset


def with_time_flags(dataset: Dataset) -> Dataset:
    """Add each event's daypart and weekend flag as event context (``features.time_flags``)."""
    origin = dataset.source("interactions")
    if not dataset.has_timestamp:
        raise ConfigError(f"features.time_flags is true but {origin} has no timestamp column "
                          "(data.files.columns.timestamp)")
    if not pd.api.types.is_datetime64_any_dtype(dataset.interactions[TIMESTAMP]):
        raise ConfigError(f"features.time_flags needs date-time timestamps; {origin} has "
                          f"{dataset.interactions[TIMESTAMP].dtype} values")
    flags = time_context(dataset.interactions[TIMESTAMP])
    interactions = dataset.interactions.drop(columns=flags.columns, errors="ignore").join(flags)
    event_context = tuple(dict.fromkeys([*dataset.event_context, *flags.columns]))
    return dataclasses.replace(dataset, interactions=interactions, event_context=event_context)
