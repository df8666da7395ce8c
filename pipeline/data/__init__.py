"""Data stage: the synthetic generator or the user's files -> a checked ``Dataset``."""

from pipeline.config import PipelineConfig
from pipeline.data.dataset import Dataset


def load_dataset(config: PipelineConfig) -> Dataset:
    if config.data.source == "synthetic":
        from pipeline.data.synthetic import generate

        return generate(config.data.synthetic, seed=config.data_seed)
    from pipeline.data.files import load_files

    return load_files(config.data.files)
