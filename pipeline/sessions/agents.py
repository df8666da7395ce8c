"""Agents that act step by step in a Gymnasium environment: the one adapter every policy of the project goes
through, so they can be benchmarked on our session shop or on any environment a user brings.

The contract (``Agent``) needs an environment whose actions are ``Discrete(n)`` (the arms) and whose
observations are a ``Box`` (flattened into the context vector):

- ``act(observation, env) -> int``: the action now (``env`` is there for the Oracle, which reads the truth);
- ``observe(observation, action, reward)``: one step's feedback (online learners learn from it);
- ``train(env, steps) -> list[(step, episode return)]``: learn for ``steps`` environment steps and return the
  training episodes' returns (the learning curve).  Bandits train through the same act/observe loop as
  evaluation; Stable-Baselines3's agents through their own ``learn``.

Agents:

- ``PolicyAgent``: any policy of the config (every MABWiser policy via Mab2Rec, NeuralLinear) through its
  ``fit``/``partial_fit``: uniformly random actions until the first ``batch_size`` steps are fitted, then
  ``partial_fit`` every ``batch_size`` steps (MABWiser walks every arm on each call, so one call per step
  would dominate the run).  Actions come from the project's fast scorer of the fitted model
  (``scoring.scorer_for``, the arithmetic of MABWiser's predict on all arms at once: Mab2Rec's ``recommend``
  took 10 ms per step for LinUCB on 200 arms), or from ``recommend`` where there is none.  Each step is a
  bandit event: the reward is the step's, never the episode's.
- ``OracleAgent``: the myopic Oracle, the highest true click probability now (environments with
  ``click_probabilities()``, as ours); the reference of the comparison, not a learner.
- ``StableBaselinesAgent``: Stable-Baselines3's DQN (replay buffer, target network) or PPO (a clipped
  policy gradient with a learnt value baseline), MLP policies on the observation.  We use the library rather
  than our own RL code: its implementations are tested against published results.  ``DQN-items`` is its DQN
  with our item-embedding Q-network (``item_q.py``), for environments that give ``item_features()``.
"""

from __future__ import annotations

from typing import Protocol

import gymnasium
import numpy as np

from pipeline.policies import REAL_REWARD_POLICIES, PolicySpec, accepted_rewards, learns_from
from pipeline.scoring import scorer_for, top_k


class Agent(Protocol):
    name: str

    def act(self, observation: np.ndarray, env: gymnasium.Env) -> int: ...

    def observe(self, observation: np.ndarray, action: int, reward: float) -> None: ...

    def train(self, env: gymnasium.Env, steps: int) -> list[tuple[int, float]]: ...


def check_supported(env: gymnasium.Env) -> None:
    """One sentence when an environment does not fit the adapter (not a traceback from deep inside a policy)."""
    if not isinstance(env.action_space, gymnasium.spaces.Discrete):
        raise ValueError(f"the agents choose one of n arms: the environment's action space must be Discrete, "
                         f"not {type(env.action_space).__name__}")
    if not isinstance(env.observation_space, gymnasium.spaces.Box):
        raise ValueError(f"the agents read a context vector: the observation space must be a Box, not "
                         f"{type(env.observation_space).__name__} (flatten it with gymnasium.wrappers."
                         "FlattenObservation)")


def online_loop(agent: Agent, env: gymnasium.Env, steps: int, learn: bool, seed: int | None = None):
    """Run ``agent`` for ``steps`` environment steps (finishing the last episode); yields one dict per step with
    the step's observation-free record: episode number, action, reward, done and the environment's info."""
    check_supported(env)
    observation, info = env.reset(seed=seed)
    episode, step = 0, 0
    while True:
        action = agent.act(observation, env)
        following, reward, terminated, truncated, info = env.step(action)
        if learn:
            agent.observe(observation, action, reward)
        done = terminated or truncated
        yield {"episode": episode, "action": action, "reward": reward, "done": done, "info": info}
        step += 1
        observation = following
        if done:
            if step >= steps:
                return
            episode += 1
            observation, info = env.reset()


def episode_returns(records) -> list[tuple[int, float]]:
    """(steps so far, return) at the end of every episode of an ``online_loop``."""
    out, total, step = [], 0.0, 0
    for record in records:
        step += 1
        total += record["reward"]
        if record["done"]:
            out.append((step, total))
            total = 0.0
    return out


def check_reward(spec: PolicySpec, reward: float) -> None:
    if not np.isfinite(reward) or not learns_from(spec, reward, reward in (0, 1)):
        raise ValueError(f"policy {spec.name!r} ({type(spec.learning_policy).__name__}) learns from "
                         f"{accepted_rewards(spec)} rewards; the environment gave {reward!r}. Use a policy that takes "
                         f"real rewards ({REAL_REWARD_POLICIES}) or rescale the reward")


class PolicyAgent:
    """A policy of the project (a ``PolicySpec`` of the config) acting through Mab2Rec's recommend/partial_fit."""

    def __init__(self, spec: PolicySpec, n_actions: int, seed: int, batch_size: int = 100):
        self.name, self.spec, self.batch_size = spec.name, spec, batch_size
        self.recommender = spec.build(top_k=1, seed=seed)
        self.recommender.set_arms(list(range(n_actions)))
        self.rng = np.random.default_rng([seed, 3])
        self.n_actions, self.fitted, self.scorer = n_actions, False, None
        self._contexts: list[np.ndarray] = []
        self._actions: list[int] = []
        self._rewards: list[float] = []

    def act(self, observation: np.ndarray, env: gymnasium.Env | None = None) -> int:
        if not self.fitted:
            return int(self.rng.integers(self.n_actions))
        context = np.asarray(observation, dtype=float).reshape(1, -1)
        if self.scorer is not None:
            lists, _ = top_k(self.scorer.expectations(context, self.rng), 1)
            return int(self.scorer.arms[lists[0, 0]])
        return int(self.recommender.recommend(list(context) if self.spec.is_contextual else [[]])[0])

    def observe(self, observation: np.ndarray, action: int, reward: float) -> None:
        check_reward(self.spec, reward)
        self._contexts.append(np.asarray(observation, dtype=float).ravel())
        self._actions.append(action)
        self._rewards.append(reward)
        if len(self._actions) >= self.batch_size:
            contexts = np.array(self._contexts) if self.spec.is_contextual else None
            learn = self.recommender.partial_fit if self.fitted else self.recommender.fit
            learn(np.array(self._actions), np.array(self._rewards), contexts)
            self.fitted, self.scorer = True, scorer_for(self.recommender)
            self._contexts, self._actions, self._rewards = [], [], []

    def train(self, env: gymnasium.Env, steps: int, seed: int | None = None) -> list[tuple[int, float]]:
        return episode_returns(online_loop(self, env, steps, learn=True, seed=seed))


class OracleAgent:
    """The myopic Oracle: the item of highest true click probability at this step (no learning)."""

    name = "Oracle"

    def act(self, observation: np.ndarray, env: gymnasium.Env) -> int:
        truth = getattr(env.unwrapped, "click_probabilities", None)
        if truth is None:
            raise ValueError("the Oracle needs an environment that knows its true click probabilities "
                             "(a click_probabilities() method, as the session shop has)")
        return int(np.argmax(truth()))

    def observe(self, observation, action, reward) -> None:
        pass

    def train(self, env: gymnasium.Env, steps: int, seed: int | None = None) -> list[tuple[int, float]]:
        return []


class StableBaselinesAgent:
    """Stable-Baselines3's DQN or PPO, trained by its own ``learn`` on the environment, acting greedily after."""

    ALGORITHMS = ("DQN", "PPO", "DQN-items")

    def __init__(self, algorithm: str, env: gymnasium.Env, seed: int, **hyperparameters):
        import stable_baselines3
        from stable_baselines3.common.monitor import Monitor

        if algorithm not in self.ALGORITHMS:
            raise ValueError(f"algorithm {algorithm!r}: one of {', '.join(self.ALGORITHMS)}")
        check_supported(env)
        self.name, self.monitor = algorithm, Monitor(env)
        policy = "MlpPolicy"
        if algorithm == "DQN-items":  # DQN with the item-embedding Q-network (item_q.py)
            from pipeline.sessions.item_q import ItemEmbeddingDQNPolicy

            if not hasattr(env.unwrapped, "item_features"):
                raise ValueError("DQN-items embeds the items' features: the environment needs an item_features() "
                                 "method giving one row per action")
            policy = ItemEmbeddingDQNPolicy
            hyperparameters = {**hyperparameters, "policy_kwargs": {
                "item_features": env.unwrapped.item_features(), **hyperparameters.get("policy_kwargs", {})}}
        self.model = getattr(stable_baselines3, algorithm.split("-")[0])(policy, self.monitor, seed=seed, device="cpu",
                                                                         verbose=0, **hyperparameters)

    def train(self, env: gymnasium.Env | None = None, steps: int = 0, seed: int | None = None
              ) -> list[tuple[int, float]]:
        self.model.learn(total_timesteps=steps)
        lengths, returns = self.monitor.get_episode_lengths(), self.monitor.get_episode_rewards()
        return list(zip(np.cumsum(lengths).tolist(), returns))

    def act(self, observation: np.ndarray, env: gymnasium.Env | None = None) -> int:
        action, _ = self.model.predict(observation, deterministic=True)
        return int(action)

    def observe(self, observation, action, reward) -> None:
        pass  # acting after training: frozen, as a shipped model would be between retrains
