"""The session environment (seed 003's MDP on the synthetic shop) and the agent adapter."""

import gymnasium
import numpy as np
import pandas as pd
import pytest
from gymnasium.utils.env_checker import check_env
from scipy.special import expit, logit

from pipeline.config import SessionConfig, SyntheticConfig
from pipeline.data.synthetic import generate
from pipeline.policies import make_policy_spec
from pipeline.sessions.agents import OracleAgent, PolicyAgent, check_supported, online_loop
from pipeline.sessions.environment import ShopSessionEnv, shop_session_env

SMALL = SyntheticConfig(n_users=150, n_items=30, n_events=300)


@pytest.fixture(scope="module")
def shop():
    return generate(SMALL, 3)


def _events_of(info: dict) -> pd.DataFrame:
    """The shop's event row for the visit an info dict describes (the columns the click model reads)."""
    return pd.DataFrame({"user_id": [info["user_id"]], "device": [info["device"]], "daypart": [info["daypart"]],
                         "is_weekend": [info["is_weekend"]]})


def test_the_environment_passes_gymnasiums_checker(shop):
    check_env(shop_session_env(shop), skip_render_check=True)
    made = gymnasium.make("BanditShop/Sessions-v0", synthetic=SMALL.model_dump(), sessions={"max_steps": 5}, seed=3)
    check_env(made.unwrapped, skip_render_check=True)
    observation, _ = made.reset(seed=1)
    assert made.observation_space.contains(observation) and made.action_space.n == 30


def test_without_dynamics_it_is_the_shops_contextual_bandit(shop):
    """Every step's true click probabilities are the shop's click model's for that user and moment, exactly, and
    leaving and returning do not depend on what was shown."""
    config = SessionConfig(dynamics=False, leave=0.2, return_rate=0.4, max_steps=6)
    env = shop_session_env(shop, config)
    rng = np.random.default_rng(0)
    observation, info = env.reset(seed=5)
    for _ in range(120):
        truth = shop.click_model.probabilities(_events_of(info))[0]
        np.testing.assert_array_equal(env.click_probabilities(), truth)
        observation, reward, terminated, truncated, info = env.step(int(rng.integers(30)))
        assert info["leave_probability"] == 0.2
        assert info["click_probability"] == truth[info["item"]] and reward == float(info["click"])
        if terminated or truncated:
            observation, info = env.reset()


def test_fatigue_satisfaction_and_leaving_follow_their_formulas(shop):
    config = SessionConfig(fatigue=1.5, fatigue_decay=0.5, satisfaction_rate=0.4, leave=0.0, leave_fatigue=0.1,
                           leave_dissatisfaction=0.2, max_steps=8)
    env = shop_session_env(shop, config)
    _, info = env.reset(seed=11)
    base = shop.click_model.logits(_events_of(info))[0]
    categories = shop.click_model.item_category
    item = int(np.argmax(base))
    fatigue, satisfaction = 0.0, 1.0  # of the item's category, computed here step by step
    relevance = expit(base[item]) / expit(base).max()
    for step in range(5):
        expected = expit(base - 1.5 * np.where(categories == categories[item], fatigue, 0.0))
        np.testing.assert_allclose(env.click_probabilities(), expected, rtol=1e-12)
        _, _, terminated, truncated, info = env.step(item)
        satisfaction += 0.4 * (relevance - satisfaction)
        assert info["satisfaction"] == pytest.approx(satisfaction)
        assert info["leave_probability"] == pytest.approx(0.1 * fatigue + 0.2 * (1 - satisfaction))
        fatigue = 0.5 * fatigue + 1.0
        if terminated or truncated:
            break
    assert step >= 2  # a few repeats observed before the user left
    assert env.click_probabilities()[item] < expit(base[item])  # repeating a category tires the user


def test_users_return_more_often_after_better_sessions(shop):
    """The share of sessions followed by a return visit matches sigmoid(logit(rate) + k (s - 0.5)) for the
    final satisfaction, for sessions of the best and of the worst items."""
    config = SessionConfig(return_rate=0.3, return_satisfaction=4.0, mean_return_gap=1.0, days=10_000, max_steps=3,
                           leave=0.0, leave_fatigue=0.0, leave_dissatisfaction=0.0)
    env = shop_session_env(shop, config)
    shares = {}
    for name, pick in (("best", np.argmax), ("worst", np.argmin)):
        expected, returned = [], []
        _, info = env.reset(seed=2)
        for _ in range(1_500):
            _, _, terminated, truncated, info = env.step(int(pick(env.base_probabilities)))
            if terminated or truncated:
                expected.append(expit(logit(0.3) + 4.0 * (info["satisfaction"] - 0.5)))
                returned.append(info["returns_on_day"] is not None)
                env.reset()
        n, mean = len(returned), float(np.mean(expected))
        assert abs(np.mean(returned) - mean) < 4 * np.sqrt(mean * (1 - mean) / n)
        shares[name] = np.mean(returned)
    assert shares["best"] > shares["worst"] + 0.2


def test_same_seed_same_visits(shop):
    def visits(seed):
        env = shop_session_env(shop, SessionConfig(max_steps=4))
        records = list(online_loop(OracleAgent(), env, steps=200, learn=False, seed=seed))
        return [(r["info"]["user_id"], r["info"]["day"], r["action"], r["reward"]) for r in records]

    assert visits(4) == visits(4) and visits(4) != visits(5)


class SignBandit(gymnasium.Env):
    """A contextual bandit we did not build the adapter for: arm 1 pays when x > 0, arm 0 otherwise."""

    observation_space = gymnasium.spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
    action_space = gymnasium.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.x = self.np_random.uniform(-1, 1)
        return np.array([self.x, 1.0], dtype=np.float32), {}

    def step(self, action):
        reward = float(action == int(self.x > 0))
        return self.reset()[0], reward, True, False, {}


def test_a_project_policy_learns_in_an_environment_we_did_not_write():
    spec = make_policy_spec("LinUCB", "LinUCB", {"alpha": 0.5}, None, {})
    agent = PolicyAgent(spec, 2, seed=0, batch_size=50)
    curve = agent.train(SignBandit(), steps=600, seed=0)
    assert len(curve) == 600
    late = [value for step, value in curve[-200:]]
    assert np.mean(late) > 0.9  # a linear model of [x, 1] separates the arms
    assert np.mean([value for _, value in curve[:50]]) < 0.75  # it started from uniform choices


def test_unsupported_environments_get_one_sentence():
    with pytest.raises(ValueError, match="Discrete"):
        check_supported(gymnasium.make("Pendulum-v1"))
    with pytest.raises(ValueError, match="FlattenObservation"):
        check_supported(gymnasium.make("Blackjack-v1"))


def test_a_shop_without_ground_truth_is_refused(shop):
    without = type(shop)(**{**vars(shop), "click_model": None})
    with pytest.raises(ValueError, match="ground truth"):
        shop_session_env(without)
    assert isinstance(shop_session_env(shop), ShopSessionEnv)


def test_comparison_summary_pairs_agents_by_seed():
    """Intervals over seeds and the paired differences, against scipy's t computed here."""
    from scipy import stats

    from pipeline.sessions.compare import METRICS, summary

    rng = np.random.default_rng(0)
    rows = []
    for seed in range(4):
        shop_effect = rng.normal()  # shared by every agent of the seed: pairing removes it
        for agent, value in (("Oracle", 3.0), ("A", 1.0), ("B", 1.2), ("DQN", 1.1)):
            rows.append({"seed": seed, "role": "reporting", "agent": agent,
                         **{metric: value + shop_effect + rng.normal(scale=0.01) for metric in METRICS}})
    per_seed = pd.DataFrame(rows)
    table = summary(per_seed, ["A", "B"]).set_index("agent")
    assert (table["best_bandit"] == "B").all()
    dqn = per_seed[per_seed.agent == "DQN"].set_index("seed")["return_per_session"]
    best = per_seed[per_seed.agent == "B"].set_index("seed")["return_per_session"]
    low, high = stats.t.interval(0.95, 3, loc=(dqn - best).mean(), scale=stats.sem(dqn - best))
    assert table.loc["DQN", "minus_best_bandit_low"] == pytest.approx(low)
    assert table.loc["DQN", "minus_best_bandit_high"] == pytest.approx(high)
    assert high - low < 0.1  # paired: the shared shop effect (sd 1) cancels
    assert table.loc["DQN", "return_per_session_high"] - table.loc["DQN", "return_per_session_low"] > 0.5


def test_pipeline_run_writes_the_session_comparison_and_ab_tables(write_config, tiny_settings, capsys, tmp_path):
    """A tiny run with the stage on: every agent of every seed evaluated, tuning seeds kept apart, and each
    simulated test's daily rows consistent with its final row."""
    from helpers import run_cli

    settings = {**tiny_settings, "seeds": [0, 1, 2],
                "policies": {"LinGreedy": {"learning_policy": "LinGreedy", "params": {"epsilon": 0.05}},
                             "Random": {"learning_policy": "Random"}},
                "simulation": {"sessions": {"max_steps": 4},
                               "session_comparison": {
                                   "enabled": True, "tuning_seeds": [0], "train_steps": 300, "batch_size": 50,
                                   "cohort": 20, "rl_agents": ["DQN"],
                                   "ab_test": {"tests": 2, "aa_tests": 2, "users": 40, "enrollment_days": 3,
                                               "window_days": 2, "treatment": "Oracle"}}}}
    code, message = run_cli(write_config(settings), capsys)
    assert code == 0, message
    run = next(path.parent for path in (tmp_path / "runs").glob("*/run.json"))
    summary = pd.read_csv(run / "sessions_summary.csv").set_index("agent")
    assert set(summary.index) == {"Oracle", "LinGreedy", "Random", "DQN"} and (summary["seeds"] == 2).all()
    per_seed = pd.read_csv(run / "sessions_per_seed.csv")
    assert set(per_seed.loc[per_seed.role == "tuning", "seed"]) == {0}
    assert set(per_seed.loc[per_seed.role == "reporting", "seed"]) == {1, 2}
    oracle = per_seed[(per_seed.agent == "Oracle") & (per_seed.role == "reporting")]["return_per_session"]
    assert summary.loc["Oracle", "return_per_session"] == pytest.approx(oracle.mean())
    tests, daily = pd.read_csv(run / "ab_tests.csv"), pd.read_csv(run / "ab_daily.csv")
    assert sorted(tests["kind"]) == ["aa", "aa", "ab", "ab"]
    assert (tests.loc[tests.kind == "ab", "treatment"] == "Oracle").all()
    assert (tests.loc[tests.kind == "aa", "control"] == tests.loc[tests.kind == "aa", "treatment"]).all()
    for (kind, test), rows in daily.groupby(["kind", "test"]):
        final = tests[(tests.kind == kind) & (tests.test == test)].iloc[0]
        assert rows["lift"].iloc[-1] == pytest.approx(final["lift"])
        assert rows["p_always_valid"].is_monotonic_decreasing
    assert (run / "ab_summary.csv").exists()


def test_session_comparison_mistakes_are_named(write_config, tiny_settings, capsys):
    from helpers import assert_clean_failure, run_cli

    settings = {**tiny_settings, "seeds": [0],
                "simulation": {"session_comparison": {"enabled": True, "tuning_seeds": [0]}}}
    code, message = run_cli(write_config(settings), capsys)
    assert_clean_failure(code, message, write_config(settings).parent / "runs", "tuning_seeds", "seeds")
    settings["seeds"] = [0, 1]
    settings["simulation"]["session_comparison"]["ab_test"] = {"control": "NoSuch"}
    code, message = run_cli(write_config(settings), capsys)
    assert_clean_failure(code, message, write_config(settings).parent / "runs", "ab_test.control", "'NoSuch'")


def test_intervals_stay_inside_each_metrics_range():
    from pipeline.sessions.compare import t_interval

    mean, low, high = t_interval(np.array([0.01, 0.6, 0.02]), bounds=(0, np.inf))
    assert low == 0.0 and high > mean > 0  # the plain t-interval reaches below zero here
    assert t_interval(np.array([0.97, 1.0, 0.9]), bounds=(0, 1))[2] == 1.0


def test_each_policy_refuses_rewards_it_cannot_learn_from_in_one_sentence():
    class Revenue(SignBandit):
        def step(self, action):
            observation, reward, *rest = super().step(action)
            return observation, 49.99 * reward - 5.0, *rest  # a price, or a loss of 5

    for name, policy, says in (("TS", "ThompsonSampling", "binary rewards; the environment gave (44.99|-5.0)"),
                               ("Pop", "Popularity", "non-negative rewards; the environment gave -5.0")):
        agent = PolicyAgent(make_policy_spec(name, policy, {}, None, {}), 2, seed=0, batch_size=10)
        with pytest.raises(ValueError, match=f"policy '{name}'.*{says}"):
            agent.train(Revenue(), steps=50, seed=0)
    agent = PolicyAgent(make_policy_spec("LinGreedy", "LinGreedy", {"epsilon": 0.1}, None, {}), 2, seed=0,
                        batch_size=25)
    curve = agent.train(Revenue(), steps=400, seed=0)
    assert np.mean([value for _, value in curve[-100:]]) > 30  # it learns which arm earns 44.99


def test_the_item_embedding_q_network_shares_what_it_learns_across_alike_items(shop):
    """DQN-items scores an item from its features: two items with the same features differ in every state by
    the same amount (their own offsets b_a; SB3's MlpPolicy has one unrelated output per item); an environment
    without item features is refused in one sentence."""
    from pipeline.sessions.agents import StableBaselinesAgent

    env = shop_session_env(shop, SessionConfig())
    features = env.item_features()
    assert features.shape == (30, env.n_categories + 1)
    np.testing.assert_array_equal(features[:, :-1].sum(axis=1), 1.0)  # one category each
    env.item_features = lambda: np.vstack([features[:29], features[:1]])  # the last item: the first one's twin
    twins = (0, 29)
    agent = StableBaselinesAgent("DQN-items", env, seed=0, learning_starts=50, train_freq=1, buffer_size=1000)
    agent.train(steps=200)
    observations = np.stack([env.reset(seed=seed)[0] for seed in range(5)])
    q = agent.model.q_net(agent.model.policy.obs_to_tensor(observations)[0]).detach().numpy()
    assert q.shape == (5, 30) and np.isfinite(q).all()
    gap = q[:, twins[0]] - q[:, twins[1]]
    assert np.ptp(gap) < 1e-5 and np.ptp(q[:, 0] - q[:, 1]) > 1e-3  # a state-free gap, unlike other pairs
    assert np.ptp(q[:, :29], axis=1).min() > 0  # the items differ
    with pytest.raises(ValueError, match="item_features"):
        StableBaselinesAgent("DQN-items", SignBandit(), seed=0)
