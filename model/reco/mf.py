"""Streaming biased matrix factorization, prequential: predict each event, then learn.

:class:`StreamingMF` keeps a global mean, a bias and a factor row per user and per
item (rows from :class:`model.reco.ids.IdTable`: growing or hashed ids) and walks a
micro-batch event by event in order (:file:`mf_kernel.c`, compiled on first use like
the other kernels, with a numpy fallback): each event's ``prediction`` comes from the
parameters as they were before it, then the event's rating updates them (row-wise
RMSProp steps, L2). So a prediction never uses its own rating, nor any later one.

- cold start: a new user starts with a zero bias and a zero factor row, so its first
  prediction is the mean plus the item's bias; a new item starts with a zero bias and
  a small random factor row drawn from its id's hash (the same row whatever order ids
  arrive in: one side must start off zero for the factors to learn at all);
- drifting tastes: RMSProp's step size does not shrink over the stream, and
  ``mean_decay`` makes the global mean forget (exponential weights);
- implicit feedback (every interaction a 1): with ``negatives=k`` each rated event is
  followed by k items drawn at random from those known before the batch, learnt as
  0s (negative sampling), so the model ranks what a user interacts with above what
  they pass by;
- :meth:`StreamingMF.top_k`: a user's best items from the live parameters, excluding
  the items the user rated;
- :meth:`StreamingMF.snapshot` / :meth:`StreamingMF.restore`: all of it, picklable.

>>> mf = StreamingMF(MFConfig(factors=4, seed=0))
>>> pred = mf.predict_learn(["u1", "u1", "u2"], ["a", "b", "a"], [4.0, 2.0, 5.0])
>>> pred.shape, float(pred[0]) == 0.0  # nothing known before the first rating
((3,), True)
>>> [item for item, _ in mf.top_k("u2", 2)]  # u2 rated a: b is the only candidate
['b']
"""

from __future__ import annotations

import ctypes
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from model.learn import native
from model.reco.ids import IdTable, fingerprint

SOURCE = Path(__file__).with_name("mf_kernel.c")
_p, _i64, _i32, _f32, _f64 = (
    ctypes.c_void_p, ctypes.c_int64, ctypes.c_int32, ctypes.c_float, ctypes.c_double
)  # fmt: skip
_SIGNATURES = {
    "mf_prequential": (
        _i64,
        [_i64, _p, _p, _p, _p, _f64, _p, _p, _p, _p, _i32, _p, _p, _p, _p]
        + [_f32] * 7
        + [_i32, _p],
    )
}


@dataclass(frozen=True)
class MFConfig:
    """How the factorization learns. Every field is validated."""

    factors: int = 16
    lr: float = 0.01  # factor rows' RMSProp step
    bias_lr: float = 0.01  # biases' RMSProp step
    reg: float = 0.01  # L2 on biases and factors
    beta: float = 0.99  # RMSProp's decay of the squared gradient
    init_scale: float = 0.1  # a new item's factor row ~ N(0, init_scale^2)
    mean_decay: float = 0.0  # 0: running global mean; else its forgetting per rating
    rating_range: tuple[float, float] | None = None  # predictions clipped to it
    negatives: int = 0  # implicit feedback: items sampled as 0-ratings after each rating
    user_buckets: int | None = None  # None: a growing table of users
    item_buckets: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.factors < 1:
            msg = f"factors must be >= 1, got {self.factors!r}"
            raise ValueError(msg)
        for name in ("lr", "bias_lr", "init_scale"):
            if not getattr(self, name) > 0:
                msg = f"{name} must be > 0, got {getattr(self, name)!r}"
                raise ValueError(msg)
        if self.negatives < 0:
            msg = f"negatives must be >= 0, got {self.negatives!r}"
            raise ValueError(msg)
        if self.reg < 0 or not 0 <= self.beta < 1 or not 0 <= self.mean_decay < 1:
            msg = (
                "need reg >= 0, 0 <= beta < 1 and 0 <= mean_decay < 1, got "
                f"{self.reg!r}, {self.beta!r}, {self.mean_decay!r}"
            )
            raise ValueError(msg)
        if self.rating_range is not None and not self.rating_range[0] < self.rating_range[1]:
            msg = f"rating_range must be (low, high) with low < high, got {self.rating_range!r}"
            raise ValueError(msg)


class _Side:
    """The rows of one side (users or items): ids, biases, factors, RMSProp state."""

    def __init__(self, buckets: int | None, factors: int, init_scale: float, seed: int) -> None:
        self.ids = IdTable(buckets)
        self.factors, self.init_scale, self.seed = factors, init_scale, seed
        capacity = buckets or 64
        self.bias = np.zeros(capacity, np.float32)
        self.rows = np.zeros((capacity, factors), np.float32)
        self.v = np.zeros(capacity, np.float32)  # factor rows' squared gradient
        self.vb = np.zeros(capacity, np.float32)  # biases' squared gradient
        self.made = np.zeros(capacity, bool)  # rows initialized

    def rows_of(self, ids: Any) -> np.ndarray:
        rows = self.ids.rows(ids)
        if len(rows):
            self._grow(int(rows.max()) + 1)
            new = np.unique(rows[~self.made[rows]])
            if len(new):
                self._init(new)
        return rows

    def _grow(self, needed: int) -> None:
        capacity = len(self.bias)
        if needed <= capacity:
            return
        size = max(needed, 2 * capacity)
        for name in ("bias", "v", "vb", "made"):
            old = getattr(self, name)
            grown = np.zeros(size, old.dtype)
            grown[:capacity] = old
            setattr(self, name, grown)
        rows = np.zeros((size, self.factors), np.float32)
        rows[:capacity] = self.rows
        self.rows = rows

    def _init(self, rows: np.ndarray) -> None:
        self.made[rows] = True
        if self.init_scale == 0:
            return
        names = self.ids.names
        for row in rows.tolist():
            rng = np.random.default_rng((self.seed, fingerprint(names[row])))
            self.rows[row] = rng.normal(0.0, self.init_scale, self.factors)

    def snapshot(self) -> dict[str, Any]:
        n = self.ids.size if self.ids.buckets is None else len(self.bias)
        return {"ids": self.ids.snapshot(), "bias": self.bias[:n].copy(),
                "rows": self.rows[:n].copy(), "v": self.v[:n].copy(),
                "vb": self.vb[:n].copy(), "made": self.made[:n].copy()}  # fmt: skip

    def restore(self, state: dict[str, Any]) -> None:
        self.ids.restore(state["ids"])
        n = len(state["bias"])
        self.bias = np.zeros(max(n, 64), np.float32)
        self.rows = np.zeros((len(self.bias), self.factors), np.float32)
        self.v, self.vb = np.zeros_like(self.bias), np.zeros_like(self.bias)
        self.made = np.zeros(len(self.bias), bool)
        for name in ("bias", "rows", "v", "vb", "made"):
            getattr(self, name)[:n] = state[name]


class StreamingMF:
    """Biased matrix factorization learned one event at a time (module docstring)."""

    def __init__(self, config: MFConfig | None = None, *, kernel: bool = True) -> None:
        self.config = c = config or MFConfig()
        self.users = _Side(c.user_buckets, c.factors, 0.0, c.seed)
        self.items = _Side(c.item_buckets, c.factors, c.init_scale, c.seed + 1)
        self.mean = np.zeros(2, np.float64)  # [weight, mean]
        self._seen = np.zeros(0, np.int64)  # user row << 32 | item row, rated: sorted
        self._seen_new: list[np.ndarray] = []  # codes not merged into _seen yet, each sorted
        self.learned = 0  # learning steps (sampled negatives included)
        self.rated = 0  # the events' own ratings learnt
        self._lib = native.compiled(SOURCE, _SIGNATURES) if kernel else None

    def predict_learn(self, users: Any, items: Any, ratings: Any) -> np.ndarray:
        """Each event's prediction before it, then learn it (a NaN rating: predict only)."""
        return self._walk(users, items, np.asarray(ratings, np.float32), learn=True)

    def predict(self, users: Any, items: Any) -> np.ndarray:
        """Predictions from the current parameters; nothing learned, no id added (an
        unknown user or item contributes nothing: the mean plus the other side's bias)."""
        u = self.users.ids.rows(users, add=False)
        i = self.items.ids.rows(items, add=False)
        out = np.full(len(u), self.mean[1], np.float64)
        known_u, known_i = (
            (u >= 0) & (u < len(self.users.bias)),
            (i >= 0) & (i < len(self.items.bias)),
        )
        out[known_u] += self.users.bias[u[known_u]]
        out[known_i] += self.items.bias[i[known_i]]
        both = known_u & known_i
        out[both] += np.einsum(
            "nf,nf->n", self.users.rows[u[both]], self.items.rows[i[both]], dtype=np.float64
        )
        return self._clip(out).astype(np.float32)

    def top_k(
        self, user: Any, k: int = 10, *, exclude_seen: bool = True
    ) -> list[tuple[str, float]]:
        """The user's ``k`` best items by predicted rating, from the live parameters,
        without the items the user rated (``exclude_seen``)."""
        count = self.items.ids.size if self.items.ids.buckets is None else len(self.items.bias)
        if count == 0 or k < 1:
            return []
        (u,) = self.users.ids.rows([user], add=False)
        scores = self.mean[1] + self.items.bias[:count].astype(np.float64)
        if 0 <= u < len(self.users.bias):
            scores = scores + self.users.bias[u] + self.items.rows[:count] @ self.users.rows[u]
        made = self.items.made[:count]
        scores[~made] = -np.inf
        if exclude_seen and u >= 0:
            rated = self._rated_by(int(u))
            scores[rated[rated < count]] = -np.inf
        order = np.argsort(-scores, kind="stable")
        names = self.items.ids.names
        return [
            (names[int(r)], float(self._clip(np.array([scores[r]]))[0]))
            for r in order[:k]
            if np.isfinite(scores[r])
        ]

    def _walk(self, users: Any, items: Any, ratings: np.ndarray, learn: bool) -> np.ndarray:
        known_items = len(self.items.ids.names)  # before this batch
        u = self.users.rows_of(users)
        i = self.items.rows_of(items)
        if not (len(u) == len(i) == len(ratings)):
            msg = f"users, items and ratings differ in length: {len(u)}, {len(i)}, {len(ratings)}"
            raise ValueError(msg)
        k = self.config.negatives
        if k and learn and known_items > 1:
            return self._walk_sampled(u, i, ratings, known_items)
        return self._walk_rows(u, i, ratings, learn)

    def _walk_sampled(
        self, u: np.ndarray, i: np.ndarray, ratings: np.ndarray, known_items: int
    ) -> np.ndarray:
        """Each event, then its sampled negatives (0s; none after an unrated event)."""
        k, n = self.config.negatives, len(u)
        rng = np.random.default_rng((self.config.seed, self.learned, n))
        rows = np.fromiter(self.items.ids.names, np.int64, known_items)
        wide_u = np.repeat(u, k + 1)
        wide_i = np.repeat(i, k + 1)
        wide_r = np.zeros(n * (k + 1), np.float32)
        wide_r[:: k + 1] = ratings
        negative = np.ones(n * (k + 1), bool)
        negative[:: k + 1] = False
        wide_i[negative] = rows[rng.integers(0, known_items, n * k)]
        wide_r[negative & np.repeat(np.isnan(ratings), k + 1)] = np.nan
        out = self._walk_rows(wide_u, wide_i, wide_r, True, seen=~negative)
        return out[:: k + 1]

    def _walk_rows(
        self,
        u: np.ndarray,
        i: np.ndarray,
        ratings: np.ndarray,
        learn: bool,
        seen: np.ndarray | None = None,
    ) -> np.ndarray:
        out = np.empty(len(u), np.float32)
        c = self.config
        lo, hi = c.rating_range or (-math.inf, math.inf)
        if self._lib is not None:
            u, i = np.ascontiguousarray(u), np.ascontiguousarray(i)
            ratings = np.ascontiguousarray(ratings)
            us, it = self.users, self.items
            self.learned += self._lib.mf_prequential(
                len(u), u.ctypes.data, i.ctypes.data, ratings.ctypes.data,
                self.mean.ctypes.data, c.mean_decay, us.bias.ctypes.data, it.bias.ctypes.data,
                us.rows.ctypes.data, it.rows.ctypes.data, c.factors, us.v.ctypes.data,
                it.v.ctypes.data, us.vb.ctypes.data, it.vb.ctypes.data, c.lr, c.bias_lr,
                c.reg, c.beta, 1e-8, lo, hi, int(learn), out.ctypes.data,
            )  # fmt: skip
        else:
            self.learned += self._walk_numpy(u, i, ratings, learn, lo, hi, out)
        rated = ~np.isnan(ratings) if seen is None else seen & ~np.isnan(ratings)
        if learn:
            self.rated += int(rated.sum())
        self._seen_new.append(np.sort(u[rated].astype(np.int64) << 32 | i[rated]))
        if len(self._seen_new) >= 64:  # merged now and then: amortized linear
            self._merge_seen()
        return out

    @property
    def seen(self) -> np.ndarray:
        """Every (user row << 32 | item row) rated so far, sorted, once each."""
        self._merge_seen()
        return self._seen

    def _rated_by(self, user_row: int) -> np.ndarray:
        """Item rows ``user_row`` rated; reads, never reorganizes, the index (a query
        may run beside the step that learns)."""
        bounds = [user_row << 32, (user_row + 1) << 32]
        parts = []
        pending = list(self._seen_new)  # before the index (see _merge_seen)
        for codes in [self._seen, *pending]:  # each sorted
            lo, hi = np.searchsorted(codes, bounds)
            parts.append(codes[lo:hi])
        return np.concatenate(parts) & 0xFFFFFFFF

    def _merge_seen(self) -> None:
        if not self._seen_new:
            return
        merged = list(self._seen_new)
        new = np.unique(np.concatenate(merged))
        at = np.searchsorted(self._seen, new)
        there = np.zeros(len(new), bool)
        inside = at < len(self._seen)
        there[inside] = self._seen[at[inside]] == new[inside]
        # the merged index first, then the list without what it merged: a reader that
        # took the list before the index sees every code (some twice), never too few
        self._seen = np.insert(self._seen, at[~there], new[~there])
        self._seen_new = self._seen_new[len(merged) :]

    def _walk_numpy(self, u: np.ndarray, i: np.ndarray, ratings: np.ndarray, learn: bool,
                    lo: float, hi: float, out: np.ndarray) -> int:  # fmt: skip
        """The kernel's loop in numpy (no compiler): the same steps, slower."""
        c, us, it, learned = self.config, self.users, self.items, 0
        for e in range(len(u)):
            pu, qi = us.rows[u[e]], it.rows[i[e]]
            raw = self.mean[1] + us.bias[u[e]] + it.bias[i[e]] + float(pu @ qi)
            out[e] = min(max(raw, lo), hi)
            if not learn or math.isnan(ratings[e]):
                continue
            err = float(ratings[e]) - raw
            self.mean[0] = (
                self.mean[0] * (1 - c.mean_decay) + 1 if c.mean_decay else self.mean[0] + 1
            )
            self.mean[1] += (ratings[e] - self.mean[1]) / self.mean[0]
            for side, row, g in ((us, u[e], -(err - c.reg * us.bias[u[e]])),
                                 (it, i[e], -(err - c.reg * it.bias[i[e]]))):  # fmt: skip
                side.vb[row] = c.beta * side.vb[row] + (1 - c.beta) * g * g
                side.bias[row] -= c.bias_lr * g / math.sqrt(side.vb[row] + 1e-8)
            gu = -(err * qi - c.reg * pu)
            gi = -(err * pu - c.reg * qi)
            us.v[u[e]] = c.beta * us.v[u[e]] + (1 - c.beta) * float(gu @ gu) / c.factors
            it.v[i[e]] = c.beta * it.v[i[e]] + (1 - c.beta) * float(gi @ gi) / c.factors
            step_u = c.lr / math.sqrt(us.v[u[e]] + 1e-8)
            step_i = c.lr / math.sqrt(it.v[i[e]] + 1e-8)
            new_p = pu - step_u * gu
            qi -= step_i * gi
            pu[:] = new_p
            learned += 1
        return learned

    def _clip(self, x: np.ndarray) -> np.ndarray:
        if self.config.rating_range is None:
            return x
        return np.clip(x, *self.config.rating_range)

    def snapshot(self) -> dict[str, Any]:
        return {"users": self.users.snapshot(), "items": self.items.snapshot(),
                "mean": self.mean.copy(), "seen": self._seen.copy(),
                "seen_new": [a.copy() for a in self._seen_new],
                "learned": self.learned, "rated": self.rated}  # fmt: skip

    def restore(self, state: dict[str, Any]) -> None:
        self.users.restore(state["users"])
        self.items.restore(state["items"])
        self.mean = np.array(state["mean"], np.float64)
        self._seen = np.asarray(state["seen"], np.int64).copy()
        self._seen_new = [np.sort(np.asarray(a, np.int64)) for a in state.get("seen_new", [])]
        self.learned, self.rated = int(state["learned"]), int(state.get("rated", 0))
