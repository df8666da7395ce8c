"""The NeuralLinear encoder: a two-tower MLP whose joint embedding feeds the Bayesian linear head.

    u = [1, MLP_context(x)]          v = [1, MLP_item(f)]          z(x, item) = [u * v, v]

``u * v`` (element-wise) holds the context x item interactions and ``v`` the item's own appeal, so a linear
head on ``z`` is a factorisation machine over learnt features.  Why this shape rather than one MLP over
the concatenated inputs:

- items with similar text, category and price get similar ``v``, so what is learnt about one item
  transfers to its neighbours (the generalisation disjoint LinUCB lacks);
- preferences combine multiplicatively (segment x category, tier x style); a product of towers has that
  bias built in, while a concatenation MLP would have to learn multiplication from a few hundred clicks;
- scoring every item for a context costs one pass of each tower plus a product, not one MLP pass per
  (context, item) pair.

Each tower is a ReLU MLP ending in a linear layer; inputs are standardised
inside the module (statistics of the training data), so raw large-magnitude features are safe.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def _mlp(n_in: int, hidden: tuple[int, ...], n_out: int) -> nn.Sequential:
    layers, width = [], n_in
    for size in hidden:
        layers += [nn.Linear(width, size), nn.ReLU()]
        width = size
    layers.append(nn.Linear(width, n_out))
    return nn.Sequential(*layers)


class TwoTowerEncoder(nn.Module):
    def __init__(self, context_dim: int, item_dim: int, hidden: tuple[int, ...], embedding_dim: int):
        super().__init__()
        self.context_tower = _mlp(context_dim, hidden, embedding_dim)
        self.item_tower = _mlp(item_dim, hidden, embedding_dim)
        self.output = nn.Linear(2 * (embedding_dim + 1), 1)  # the network's own head, used to train the towers
        for name, size in (("context", context_dim), ("item", item_dim)):
            self.register_buffer(f"{name}_mean", torch.zeros(size, dtype=torch.float64))
            self.register_buffer(f"{name}_scale", torch.ones(size, dtype=torch.float64))
        self.double()

    @property
    def context_dim(self) -> int:
        return self.context_mean.shape[0]

    @property
    def embedding_dim(self) -> int:
        return self.output.in_features

    def set_standardisation(self, contexts: np.ndarray, items: np.ndarray) -> None:
        for name, values in (("context", contexts), ("item", items)):
            values = torch.as_tensor(values, dtype=torch.float64)
            mean = values.mean(0) if len(values) else torch.zeros(values.shape[1], dtype=torch.float64)
            scale = values.std(0, unbiased=False) if len(values) > 1 else torch.ones_like(mean)
            getattr(self, f"{name}_mean").copy_(torch.nan_to_num(mean))
            getattr(self, f"{name}_scale").copy_(torch.where(torch.isfinite(scale) & (scale > 1e-12), scale, 1.0))

    def context_side(self, contexts: torch.Tensor) -> torch.Tensor:
        """``u`` for each context row, shape (n, e + 1)."""
        x = (contexts - self.context_mean) / self.context_scale
        return torch.cat([torch.ones(len(x), 1, dtype=x.dtype), self.context_tower(x)], dim=1)

    def item_side(self, items: torch.Tensor) -> torch.Tensor:
        """``v`` for each item row, shape (m, e + 1)."""
        f = (items - self.item_mean) / self.item_scale
        return torch.cat([torch.ones(len(f), 1, dtype=f.dtype), self.item_tower(f)], dim=1)

    @staticmethod
    def join(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """``z = [u * v, v]``; ``u`` and ``v`` broadcast (pairs, or (n, 1, e) x (1, m, e) for a grid)."""
        u, v = torch.broadcast_tensors(u, v)
        return torch.cat([u * v, v], dim=-1)

    def pair_logits(self, contexts: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """The network's own click logit for aligned (context, item) rows."""
        return self.output(self.join(self.context_side(contexts), self.item_side(items))).squeeze(-1)


def train_clicks(encoder: TwoTowerEncoder, contexts: np.ndarray, item_features: np.ndarray, rewards: np.ndarray,
                 epochs: int, lr: float, batch_size: int, generator: torch.Generator) -> float:
    """Fit the towers and output layer to the rewards: the logistic (binary cross-entropy) loss when every reward
    is 0 or 1 (clicks), else the squared error of the network's output (revenue, ratings, any real reward: the
    logistic loss on a reward of 50 pushes the logits up without bound)."""
    x = torch.as_tensor(contexts, dtype=torch.float64)
    f = torch.as_tensor(item_features, dtype=torch.float64)
    r = torch.as_tensor(rewards, dtype=torch.float64)
    loss_fn = nn.BCEWithLogitsLoss() if np.isin(rewards, (0.0, 1.0)).all() else nn.MSELoss()
    return _optimise(encoder, len(r), epochs, lr, batch_size, generator,
                     lambda idx: loss_fn(encoder.pair_logits(x[idx], f[idx]), r[idx]))


def pretrain_ranking(encoder: TwoTowerEncoder, contexts: np.ndarray, clicked_items: np.ndarray,
                     catalog: np.ndarray, loss: str, epochs: int, lr: float, batch_size: int,
                     generator: torch.Generator) -> float:
    """Warm start on the clicked events of the training log.

    - ``bpr`` (Rendle et al. 2009): ``-log sigmoid(s(x, clicked) - s(x, random item))`` with one negative
      drawn uniformly from the catalog per click;
    - ``contrastive`` (InfoNCE with in-batch negatives): softmax cross-entropy of each clicked item
      against the other clicks' items in the batch.
    """
    x = torch.as_tensor(contexts, dtype=torch.float64)
    catalog_t = torch.as_tensor(catalog, dtype=torch.float64)
    positives = torch.as_tensor(clicked_items, dtype=torch.long)

    def bpr(idx: torch.Tensor) -> torch.Tensor:
        negatives = torch.randint(len(catalog_t), (len(idx),), generator=generator)
        margin = encoder.pair_logits(x[idx], catalog_t[positives[idx]]) - encoder.pair_logits(x[idx], catalog_t[negatives])
        return nn.functional.softplus(-margin).mean()

    def contrastive(idx: torch.Tensor) -> torch.Tensor:
        u = encoder.context_side(x[idx])[:, None, :]
        v = encoder.item_side(catalog_t[positives[idx]])[None, :, :]
        logits = encoder.output(TwoTowerEncoder.join(u, v)).squeeze(-1)  # (batch, batch)
        return nn.functional.cross_entropy(logits, torch.arange(len(idx)))

    step = {"bpr": bpr, "contrastive": contrastive}[loss]
    return _optimise(encoder, len(positives), epochs, lr, batch_size, generator, step)


def _optimise(encoder: nn.Module, n: int, epochs: int, lr: float, batch_size: int, generator: torch.Generator,
              batch_loss) -> float:
    if n == 0 or epochs == 0:
        return float("nan")
    optimiser = torch.optim.Adam(encoder.parameters(), lr=lr)
    last = float("nan")
    for _ in range(epochs):
        order = torch.randperm(n, generator=generator)
        for start in range(0, n, batch_size):
            idx = order[start:start + batch_size]
            if len(idx) < 2:
                continue
            loss = batch_loss(idx)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            last = float(loss.detach())
    return last
