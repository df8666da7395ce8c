"""Convert the Open Bandit Dataset sample into the bring-your-own layout (then run ``configs/obd.yaml``).

    pip download obp==0.5.7 --no-deps --no-binary :all: --ignore-requires-python -d /tmp/obp  # once, with network
    python -m scripts.open_bandit_dataset /tmp/obp/obp-0.5.7.tar.gz      # writes data/obd/
    python -m pipeline run configs/obd.yaml                             # the uniformly random log
    python -m pipeline run configs/obd.yaml --set data.files.interactions=data/obd/bts_all/interactions.csv

The sample (ZOZOTOWN, Saito et al. 2021; CC BY 4.0) ships in obp's source archive under
``obp/dataset/obd/<behavior>/<campaign>/``: 10,000 rows per logging policy (``random``: uniform; ``bts``:
Bernoulli Thompson sampling), 80 items, three slots.  Each row is one (impression, slot): ``position``,
the item-position propensity ``propensity_score``, a click, four hashed user features.  What it does not have,
and what that means here:

- no impression id: the rows are a random subset of (impression, slot) rows (9,982 distinct timestamps in
  10,000), so the rows of one impression cannot be grouped: only the per-slot estimators (IIPS, SN-IIPS)
  apply, and SIPS, RIPS and PI are skipped with a note;
- no user id: every row is written as its own user, and the four user features are its event context.
"""

from __future__ import annotations

import argparse
import io
import tarfile
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
USER_FEATURES = ["user_feature_0", "user_feature_1", "user_feature_2", "user_feature_3"]


def read_member(source: Path, behavior: str, campaign: str, name: str) -> pd.DataFrame:
    """``obp/dataset/obd/<behavior>/<campaign>/<name>`` from the source archive or an extracted folder."""
    inner = f"obp/dataset/obd/{behavior}/{campaign}/{name}"
    if source.is_dir():
        matches = sorted(source.glob(f"**/{inner}"))
        if not matches:
            raise SystemExit(f"{source}: no {inner} below it (expected obp's extracted source archive)")
        return pd.read_csv(matches[0], index_col=0)
    with tarfile.open(source) as archive:
        member = next((m for m in archive.getmembers() if m.name.endswith(inner)), None)
        if member is None:
            raise SystemExit(f"{source}: the archive has no {inner} (expected obp's source archive, e.g. "
                             "obp-0.5.7.tar.gz)")
        return pd.read_csv(io.BytesIO(archive.extractfile(member).read()), index_col=0)


def convert(log: pd.DataFrame) -> pd.DataFrame:
    """The OBD columns in our layout: one user per row (OBD has no user ids), the slot as ``position``."""
    return pd.DataFrame({"user_id": range(len(log)), "item_id": log["item_id"], "click": log["click"],
                         "propensity": log["propensity_score"], "timestamp": log["timestamp"],
                         "position": log["position"], **{column: log[column] for column in USER_FEATURES}})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m scripts.open_bandit_dataset", description=__doc__.split("\n")[0])
    parser.add_argument("source", type=Path, help="obp's source archive (obp-0.5.7.tar.gz) or its extracted folder")
    parser.add_argument("--campaign", choices=["all", "men", "women"], default="all")
    parser.add_argument("--out", type=Path, default=ROOT / "data" / "obd")
    args = parser.parse_args(argv)
    if not args.source.exists():
        raise SystemExit(f"{args.source} does not exist; download obp's source archive first (see --help)")
    for behavior in ("random", "bts"):
        folder = args.out / f"{behavior}_{args.campaign}"
        folder.mkdir(parents=True, exist_ok=True)
        log = convert(read_member(args.source, behavior, args.campaign, f"{args.campaign}.csv"))
        log.to_csv(folder / "interactions.csv", index=False)
        read_member(args.source, behavior, args.campaign, "item_context.csv").to_csv(folder / "items.csv", index=False)
        print(f"{behavior}: {len(log)} rows, {log['item_id'].nunique()} items, {log['click'].sum()} clicks, "
              f"positions {sorted(log['position'].unique().tolist())} -> {folder}")


if __name__ == "__main__":
    main()
