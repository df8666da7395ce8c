"""The synthetic generator and its hidden click model."""

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score

from pipeline.config import EffectsConfig, FeaturesConfig, SyntheticConfig
from pipeline.data.synthetic import ClickModel, generate
from pipeline.features import item_featurizer


@pytest.fixture(scope="module")
def shop():
    return generate(SyntheticConfig(), seed=11)


def test_defaults_match_the_documented_shop(shop):
    assert len(shop.interactions) == 10_000 and len(shop.items) == 200
    assert shop.items["category"].nunique() >= 8
    assert shop.items["category"].value_counts().min() >= 200 // 10
    assert {"name", "description", "category", "price"} <= set(shop.items.columns)
    assert {"age", "gender", "location", "traffic_source", "membership"} <= set(shop.users.columns)
    assert {"device", "daypart", "is_weekend", "timestamp"} <= set(shop.interactions.columns)
    assert shop.interactions["timestamp"].is_monotonic_increasing
    assert set(shop.interactions["daypart"]) == {"night", "morning", "afternoon", "evening"}
    assert shop.interactions["is_weekend"].any() and not shop.interactions["is_weekend"].all()
    # A uniformly random logging policy, with its propensity stored per event.
    np.testing.assert_allclose(shop.interactions["propensity"], 1 / 200)
    assert shop.interactions["item_id"].value_counts().max() < 3 * 10_000 / 200
    # The hidden attributes are not part of the public catalog.
    assert "quality" not in shop.items and "style" not in shop.items


def test_item_text_is_varied_and_textwiser_features_carry_signal(shop):
    assert shop.items["description"].nunique() >= 190 and shop.items["name"].nunique() >= 150
    featurizer = item_featurizer(shop, FeaturesConfig(item_categorical=[], item_numeric=[]), seed=0)
    text_only = featurizer.transform(shop.items)
    assert text_only.shape == (200, 16) and featurizer.feature_names_[0] == "text_0"
    # From the text vectors alone, a linear model recovers the category far above chance (0.1).
    accuracy = cross_val_score(LogisticRegression(max_iter=2000), text_only, shop.items["category"], cv=5).mean()
    assert accuracy > 0.6


def test_base_rate_is_calibrated_and_logged_clicks_follow_the_model(shop):
    probabilities = shop.click_model.probabilities(shop.interactions)
    assert probabilities.shape == (10_000, 200)
    assert probabilities.min() > 0 and probabilities.max() < 1
    assert probabilities.mean() == pytest.approx(0.05, abs=0.004)
    assert shop.interactions["response"].mean() == pytest.approx(0.05, abs=0.01)
    # Personalisation matters: the best item per event is far better than the best single item.
    assert probabilities.max(axis=1).mean() > 2 * probabilities.mean(axis=0).max()


def test_pairwise_and_grid_probabilities_agree(shop):
    events = shop.interactions.iloc[:500]
    grid = shop.click_model.probabilities(events, chunk_size=64)
    columns = shop.click_model.item_positions(events["item_id"].to_numpy())
    np.testing.assert_allclose(shop.click_model.probability_of(events, events["item_id"].to_numpy()),
                               grid[np.arange(500), columns], rtol=1e-12)


def test_click_model_round_trips_through_its_file(shop, tmp_path):
    shop.click_model.save(tmp_path / "model.npz")
    loaded = ClickModel.load(tmp_path / "model.npz")
    events = shop.interactions.iloc[:200]
    np.testing.assert_array_equal(loaded.probabilities(events), shop.click_model.probabilities(events))


def test_same_seed_same_data_other_seed_other_data():
    small = SyntheticConfig(n_users=50, n_items=20, n_events=300)
    first, again, other = generate(small, 5), generate(small, 5), generate(small, 6)
    pd.testing.assert_frame_equal(first.interactions, again.interactions)
    pd.testing.assert_frame_equal(first.items, again.items)
    assert not first.interactions["item_id"].equals(other.interactions["item_id"])


def test_effect_weights_switch_terms_on_and_off():
    only_quality = {name: 0.0 for name in EffectsConfig.model_fields} | {"item_quality": 1.0}
    shop = generate(SyntheticConfig(n_users=100, n_items=30, n_events=500, effects=only_quality), seed=1)
    probabilities = shop.click_model.probabilities(shop.interactions)
    # Without user or context terms every event ranks the items identically.
    np.testing.assert_allclose(probabilities, np.broadcast_to(probabilities[0], probabilities.shape))
    with_context = generate(SyntheticConfig(n_users=100, n_items=30, n_events=500), seed=1)
    spread = with_context.click_model.probabilities(with_context.interactions).std(axis=0).mean()
    assert spread > 0.01


def test_softmax_logging_stores_the_propensity_of_the_shown_item_and_its_truth():
    """The logger's distribution sums to 1 per event, its minimum is the uniform share over n, each stored
    propensity is that distribution at the shown item, and the logging policy's true value is the sum of its
    probabilities times the click probabilities (recomputed here from the two tables)."""
    import numpy as np

    from pipeline.config import SyntheticConfig
    from pipeline.data.synthetic import generate

    data = generate(SyntheticConfig(n_users=100, n_items=20, n_events=400, logging="softmax",
                                    logging_temperature=0.5, logging_uniform_share=0.2), 3)
    events, model = data.interactions, data.click_model
    logger = model.logging_probabilities(events)
    assert np.allclose(logger.sum(axis=1), 1) and logger.min() >= 0.2 / 20 - 1e-12
    shown = model.item_positions(events["item_id"].to_numpy())
    assert np.allclose(events["propensity"].to_numpy(), logger[np.arange(len(events)), shown])
    assert events["propensity"].std() > 0.01  # really not uniform
    assert np.allclose(model.logged_value(events), (logger * model.probabilities(events)).sum(axis=1))
    uniform = generate(SyntheticConfig(n_users=100, n_items=20, n_events=400), 3).click_model
    assert np.allclose(uniform.logged_value(events), uniform.probabilities(events).mean(axis=1))
