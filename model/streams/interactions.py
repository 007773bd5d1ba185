"""A seeded stream of user-item ratings whose tastes drift.

Users and items have hidden biases and ``rank``-dimensional tastes; a rating is
``mean + user bias + item bias + taste . trait + noise``, rounded and clipped to 1..5.
Items are picked with a Zipf-like popularity, users uniformly (some users and items
appear only late: cold starts all along). Tastes drift: every user's taste vector
turns towards a new random one over the stream (by ``drift`` of the way at the end),
and at ``shift_at`` (a share of the stream) a third of the users switch tastes at
once. One event per ``interval_s`` seconds from ``start``. Pure numpy.

>>> rows = interactions(InteractionsConfig(events=1000, seed=1))
>>> len(rows["user"]), sorted(set(rows["rating"].tolist())) == [1.0, 2.0, 3.0, 4.0, 5.0]
(1000, True)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class InteractionsConfig:
    events: int = 100_000
    users: int = 2_000
    items: int = 1_000
    rank: int = 6
    noise: float = 0.4
    drift: float = 0.8
    shift_at: float = 0.6
    interval_s: float = 1.0
    start: int = 1_700_000_000  # epoch seconds of the first event
    seed: int = 0

    def __post_init__(self) -> None:
        if min(self.events, self.users, self.items, self.rank) < 1:
            msg = f"events, users, items and rank must be >= 1, got {self!r}"
            raise ValueError(msg)


def interactions(cfg: InteractionsConfig) -> dict[str, np.ndarray]:
    """Columns ``timestamp`` (epoch seconds), ``user``, ``item`` (text ids),
    ``rating``, in time order."""
    rng = np.random.default_rng(cfg.seed)
    n = cfg.events
    user_bias = rng.normal(0, 0.4, cfg.users)
    item_bias = rng.normal(0, 0.5, cfg.items)
    taste0 = rng.normal(0, 0.6, (cfg.users, cfg.rank))
    taste1 = rng.normal(0, 0.6, (cfg.users, cfg.rank))
    shifted = rng.random(cfg.users) < 1 / 3
    taste2 = rng.normal(0, 0.6, (cfg.users, cfg.rank))
    traits = rng.normal(0, 0.6, (cfg.items, cfg.rank))
    # arrivals: users uniform over those that exist by then, items Zipf-like
    first_user = rng.integers(0, n, cfg.users) * (rng.random(cfg.users) < 0.3)
    first_item = rng.integers(0, n, cfg.items) * (rng.random(cfg.items) < 0.2)
    popularity = 1.0 / np.arange(1, cfg.items + 1) ** 0.8
    t = np.arange(n)
    user = rng.integers(0, cfg.users, n)
    item = rng.choice(cfg.items, n, p=popularity / popularity.sum())
    # a user or item not there yet at t is replaced by one that was there from the start
    early_users, early_items = np.flatnonzero(first_user == 0), np.flatnonzero(first_item == 0)
    late_user, late_item = first_user[user] > t, first_item[item] > t
    user[late_user] = rng.choice(early_users, int(late_user.sum()))
    item[late_item] = rng.choice(early_items, int(late_item.sum()))
    frac = (t / max(1, n - 1))[:, None]
    taste = taste0[user] * (1 - cfg.drift * frac) + taste1[user] * cfg.drift * frac
    switched = shifted[user] & (t >= cfg.shift_at * n)
    taste[switched] = taste2[user[switched]]
    score = 3.5 + user_bias[user] + item_bias[item] + (taste * traits[item]).sum(1)
    rating = np.clip(np.rint(score + rng.normal(0, cfg.noise, n)), 1, 5)
    return {
        "timestamp": cfg.start + t * cfg.interval_s,
        "user": np.array([f"u{u}" for u in user]),
        "item": np.array([f"i{i}" for i in item]),
        "rating": rating.astype(np.float64),
    }
