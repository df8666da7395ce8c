"""Labels of a quantity at a list length: ``"DR@5"``, ``"true_ctr@1"``, ``"IIPS@3"`` (metric or estimator, then k)."""

from __future__ import annotations


def split_label(label: str) -> tuple[str, int | None]:
    """``"DR@5"`` -> ``("DR", 5)``; a label without a numeric k gives ``(label, None)``."""
    name, _, k = label.rpartition("@")
    return (name, int(k)) if name and k.isdigit() else (label, None)


def make_label(name: str, k: int) -> str:
    return f"{name}@{k}"
