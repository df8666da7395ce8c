"""An item-embedding Q-network for Stable-Baselines3's DQN: ``Q(s, a) = f(s) . g(x_a) + h(x_a) + b_a``.

Stable-Baselines3's ``MlpPolicy`` ends in one output per action: with 200 items each output is learnt only from
the steps that showed that item (about 100 of 20,000), and nothing learnt about one item carries to a similar
one.  Here the state ``s`` and each item's public features ``x_a`` (the environment's ``item_features()``:
category, price) are embedded in one space by two small networks, so every step trains the item network
that all items share.  Everything else is SB3's DQN (replay buffer, target network, epsilon-greedy, Huber loss):
only the Q-network is replaced, through the policy's ``make_q_net``.
"""

from __future__ import annotations

import numpy as np
import torch
from stable_baselines3.common.torch_layers import create_mlp
from stable_baselines3.dqn.policies import DQNPolicy, QNetwork
from torch import nn


class ItemEmbeddingQNetwork(QNetwork):
    """``forward(obs)`` -> (batch, items) Q-values from a state embedding and the items' embeddings."""

    def __init__(self, observation_space, action_space, features_extractor, features_dim, item_features: np.ndarray,
                 embedding_dim: int = 32, net_arch=None, activation_fn=nn.ReLU, normalize_images: bool = True):
        super().__init__(observation_space, action_space, features_extractor, features_dim, net_arch=net_arch,
                         activation_fn=activation_fn, normalize_images=normalize_images)
        if item_features.shape[0] != action_space.n:
            raise ValueError(f"item_features has {item_features.shape[0]} rows for {action_space.n} actions")
        self.q_net = nn.Sequential(*create_mlp(features_dim, embedding_dim, self.net_arch, activation_fn))  # f(s)
        self.register_buffer("items", torch.as_tensor(item_features, dtype=torch.float32))
        width = item_features.shape[1]
        self.item_net = nn.Sequential(nn.Linear(width, embedding_dim), activation_fn(),
                                      nn.Linear(embedding_dim, embedding_dim))  # g(x)
        self.item_bias = nn.Linear(width, 1)  # h(x): how clickable an item is whatever the state
        # b_a: what the public features miss about an item (its hidden appeal), learnt from its own steps only
        self.item_offset = nn.Parameter(torch.zeros(action_space.n))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        state = self.q_net(self.extract_features(obs, self.features_extractor))
        return state @ self.item_net(self.items).T + self.item_bias(self.items).T + self.item_offset


class ItemEmbeddingDQNPolicy(DQNPolicy):
    """``DQNPolicy`` whose online and target networks are ``ItemEmbeddingQNetwork``s; give ``item_features``
    (items x features, in action order) and optionally ``embedding_dim`` in ``policy_kwargs``."""

    def __init__(self, *args, item_features: np.ndarray, embedding_dim: int = 32, **kwargs):
        self.item_features, self.embedding_dim = np.asarray(item_features, dtype=np.float32), embedding_dim
        super().__init__(*args, **kwargs)

    def make_q_net(self) -> ItemEmbeddingQNetwork:
        net_args = self._update_features_extractor(self.net_args, features_extractor=None)
        return ItemEmbeddingQNetwork(**net_args, item_features=self.item_features,
                                     embedding_dim=self.embedding_dim).to(self.device)
