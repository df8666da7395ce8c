"""Write the small bring-your-own example under data/sample/: `python -m scripts.make_sample_data` (committed).

It draws a small shop from the synthetic generator and keeps only what a real log would have, in
Mab2Rec's layout: interactions (user_id, item_id, clicked, timestamp), user features and item features.
The response column is called ``clicked`` to show the column mapping in configs/byo_example.yaml.
"""

from pathlib import Path

from pipeline.config import SyntheticConfig
from pipeline.data.synthetic import generate

OUT = Path(__file__).resolve().parent.parent / "data" / "sample"

if __name__ == "__main__":
    dataset = generate(SyntheticConfig(n_users=300, n_items=40, n_events=4000, n_days=14), seed=7)
    OUT.mkdir(parents=True, exist_ok=True)
    log = dataset.interactions[["user_id", "item_id", "response", "timestamp"]].rename(columns={"response": "clicked"})
    log.to_csv(OUT / "interactions.csv", index=False)
    dataset.users.drop(columns=["preferred_device"]).to_csv(OUT / "users.csv", index=False)
    dataset.items.to_csv(OUT / "items.csv", index=False)
    print(f"wrote {len(log)} interactions, {len(dataset.users)} users, {len(dataset.items)} items to {OUT}")
