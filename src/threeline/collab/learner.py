"""The collaborative-filtering learner: the core's Learner plus recommend, similar and predict.

    learn = collab_learner(data, n_factors=50)        # 4 dot products + biases + who rated
                                                      # what (implicit); kind="nn" too
    learn.fit(5e-3, 5)                                # the core's loop and epoch table
    learn.recommend(196, k=10); learn.similar(50, k=5); learn.predict(pairs)
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from threeline.collab.catalog import Catalog
from threeline.collab.data import CollabData
from threeline.collab.models import DotProductBias, EmbeddingNN
from threeline.learner import Learner
from threeline.losses import MSE, from_description

KINDS = ("dot", "nn")
DEFAULT_WD = {"dot": 0.2, "dot+implicit": 0.35, "nn": 0.05}  # L2 on the embedding rows used
DEFAULT_MEMBERS = {False: 4, True: 2}  # dot products averaged, without / with implicit
IMPLICIT_MAX_RATINGS = 200_000  # implicit=None: on for up to this many training ratings
PREDICT_BATCH = 65_536


class CollabLearner(Learner):
    """A :class:`threeline.learner.Learner` of ratings that knows its users and items.

    ``fit(lr, epochs, wd=None)``: ``wd`` is the weight decay of the embeddings, applied to the
    rows each batch uses (see :mod:`threeline.collab.models`); None takes the kind's default.
    """

    name = "collab"

    def __init__(self, model: nn.Module, data: CollabData | None, catalog: Catalog,
                 config: dict, **kwargs: Any):
        super().__init__(model, data, loss=MSE(), **kwargs)
        self.catalog, self.config = catalog, config

    # ---- training: wd goes to the embedding rows, not to AdamW over whole tables --------
    def fit(self, lr: Any, epochs: int = 1, wd: float | None = None, **kwargs: Any
            ) -> list[dict]:
        """Train as :meth:`Learner.fit`; ``wd`` None: the default of this model kind."""
        return super().fit(lr, epochs, self._wd(wd), **kwargs)

    def lr_find(self, *args: Any, wd: float | None = None, **kwargs: Any) -> Any:
        return super().lr_find(*args, wd=self._wd(wd), **kwargs)

    def before_fit(self) -> None:
        """Give the model the training rows: decay weights by count, who rated what."""
        if self.data is not None and hasattr(self.model, "set_training_rows"):
            rows = self.data.train_idx
            self.model.set_training_rows(torch.from_numpy(self.data.users[rows]),
                                         torch.from_numpy(self.data.items[rows]))

    def run_fit(self, lrs: list[float], epochs: int, wd: float, callbacks: list,
                validate: bool = True) -> list[dict]:
        self.model.wd = float(wd)  # the per-row L2 of the embeddings (RowDecay)
        return super().run_fit(lrs, epochs, 0.0, callbacks, validate)

    def _wd(self, wd: float | None) -> float:
        variant = self.config["kind"] + ("+implicit" if self.config.get("implicit") else "")
        return DEFAULT_WD[variant] if wd is None else wd

    # ---- answers --------------------------------------------------------------------------
    def predict(self, pairs: Any, user: str | None = None, item: str | None = None
                ) -> np.ndarray:
        """Predicted ratings for (user, item) pairs: a DataFrame (columns ``user``/``item``,
        by default the training table's names, else its first two) or a list of pairs.

        Unknown users or items get the bias-only prediction, with a warning saying how many.

        Example:
            >>> learn.predict([(196, 242), (196, 302)])   # doctest: +SKIP
            array([3.9, 3.6], dtype=float32)
        """
        users, items = self._pair_ids(pairs, user, item)
        u, i = self.catalog.user_codes(users), self.catalog.item_codes(items)
        _warn_unknown(users, items, u, i)
        return self.scores(u, i)

    def recommend(self, user: Any, k: int = 10, exclude_rated: bool = True) -> Any:
        """The ``k`` items with the highest predicted rating that ``user`` has not rated.

        Returns a DataFrame: item, title, predicted. An unknown user gets the items with the
        highest bias-only prediction, with a warning.
        """
        import pandas as pd

        _check_k(k)
        code = int(self.catalog.user_codes([user])[0])
        if code == 0:
            warnings.warn(f"user {user!r} was not in the training ratings: recommending by item "
                          "bias only (global mean + item bias).", stacklevel=2)
        items = np.arange(1, self.catalog.n_items + 1)
        scores = self.scores(np.full(len(items), code), items)  # (n_items,)
        if exclude_rated and code:
            scores[self.catalog.rated(code) - 1] = -np.inf
        top = np.argsort(-scores, kind="stable")[:k]
        top = top[np.isfinite(scores[top])]
        return pd.DataFrame({"item": self.catalog.item_ids[items[top]],
                             "title": [self.catalog.title(c) for c in items[top]],
                             "predicted": scores[top]})

    def similar(self, item: Any, k: int = 10) -> Any:
        """The ``k`` items whose embedding vectors have the highest cosine with ``item``'s.

        Returns a DataFrame: item, title, similarity.
        """
        import pandas as pd

        _check_k(k)
        code = int(self.catalog.item_codes([item])[0])
        if code == 0:
            raise ValueError(f"item {item!r} was not in the training ratings, so it has no "
                             "vector to compare; pick an item the model was trained on.")
        with torch.no_grad():
            vectors = nn.functional.normalize(self.model.item_vectors().float(), dim=-1)
            sims = (vectors @ vectors[code]).cpu().numpy()  # (n_items + 1,)
        sims[[0, code]] = -np.inf
        top = np.argsort(-sims, kind="stable")[:k]
        return pd.DataFrame({"item": self.catalog.item_ids[top],
                             "title": [self.catalog.title(c) for c in top],
                             "similarity": sims[top]})

    @torch.inference_mode()
    def scores(self, user_codes: np.ndarray, item_codes: np.ndarray) -> np.ndarray:
        """Predicted ratings for codes (0 = unknown), in batches on the learner's device."""
        self.model.eval()
        out = []
        for start in range(0, len(user_codes), PREDICT_BATCH):
            u = torch.as_tensor(user_codes[start:start + PREDICT_BATCH], device=self.device)
            i = torch.as_tensor(item_codes[start:start + PREDICT_BATCH], device=self.device)
            out.append(self.model(u, i).float().cpu())
        return torch.cat(out).numpy() if out else np.zeros(0, dtype=np.float32)

    def _pair_ids(self, pairs: Any, user: str | None, item: str | None
                  ) -> tuple[np.ndarray, np.ndarray]:
        import pandas as pd

        if isinstance(pairs, pd.DataFrame):
            names = list(pairs.columns)
            default = [c if c in names else None for c in self.catalog.columns]
            u_col = user or default[0] or (names[0] if len(names) >= 2 else None)
            i_col = item or default[1] or (names[1] if len(names) >= 2 else None)
            for col in (u_col, i_col):
                if col is None or col not in names:
                    raise ValueError(f"predict needs user and item columns; got {names}. Pass "
                                     "user= and item= with the column names.")
            return pairs[u_col].to_numpy(), pairs[i_col].to_numpy()
        try:
            users, items = zip(*pairs, strict=True)
        except (TypeError, ValueError):
            raise TypeError("predict takes a DataFrame of (user, item) columns or a list of "
                            "(user, item) pairs.") from None
        return np.array(users, dtype=object), np.array(items, dtype=object)

    def interpret(self) -> Any:
        """Item biases, item vectors and the worst predictions: a CollabInterpretation."""
        from threeline.collab.interpret import CollabInterpretation

        return CollabInterpretation(self)

    # ---- saving ---------------------------------------------------------------------------
    def describe(self) -> dict:
        return {"application": "threeline.collab", "model": type(self.model).__name__,
                "loss": self.loss.describe(), "config": self.config,
                "catalog": self.catalog.describe()}

    def state_dict(self) -> dict[str, torch.Tensor]:
        return dict(self.model.state_dict()) | self.catalog.tensors()

    def load_state_dict(self, tensors: dict[str, torch.Tensor]) -> None:
        super().load_state_dict({k: v for k, v in tensors.items()
                                 if not k.startswith("catalog.")})

    def static_state_prefixes(self) -> tuple[str, ...]:
        return ("catalog.",)


def collab_learner(data: CollabData, n_factors: int = 50,
                   y_range: tuple[float, float] | None = None, kind: str = "dot",
                   layers: Sequence[int] = (100,), dropout: float = 0.1,
                   members: int | None = None, implicit: bool | None = None,
                   **kwargs: Any) -> CollabLearner:
    """A learner of ratings: ``kind="dot"`` (dot product + biases) or ``"nn"`` (embedding net).

    ``y_range`` (the sigmoid's range) defaults to the ratings' range widened by half its
    width on each side ((-1, 7) for ratings 1..5: the sigmoid's nearly straight middle), and
    predictions out of training are clipped to the ratings' range. For ``kind="dot"``:

    - ``implicit``: whether a user's vector also sums vectors of the items the user rated, and
      an item's vector those of the users who rated it (SVD++'s implicit feedback, from the
      training rows; :mod:`threeline.collab.implicit`). Each step then costs time in
      proportion to the whole training table, so None turns it on for tables of up to
      ``IMPLICIT_MAX_RATINGS`` training ratings (MovieLens 100k on a CPU: RMSE about 0.018
      lower, in under 3 times the time; at 200,000 ratings about 3 times).
    - ``members``: how many dot products (each with its own biases, trained as if alone) are
      averaged; None: 4, or 2 with ``implicit`` (as good there as 4, in less time).

    Other keyword arguments go to :class:`threeline.learner.Learner` (``device=``, ``seed=``,
    ``progress=``).

    Example:
        >>> learn = collab_learner(data, n_factors=50)  # doctest: +SKIP
        >>> learn.fit(5e-3, 5)                                             # doctest: +SKIP
    """
    if not isinstance(data, CollabData):
        raise TypeError(f"data must be a CollabData (CollabData.from_csv / from_df), got "
                        f"{type(data).__name__}.")
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}.")
    low, high = float(data.ratings.min()), float(data.ratings.max())
    if y_range is None:
        pad = (high - low) / 2 or 0.5
        y_range = (low - pad, high + pad)
    catalog = Catalog.from_data(data)
    implicit = _implicit(implicit, kind, data)
    members = DEFAULT_MEMBERS[implicit] if members is None else members
    config = {"kind": kind, "n_factors": n_factors, "y_range": [float(v) for v in y_range],
              "layers": [int(n) for n in layers], "dropout": dropout, "members": members,
              "implicit": implicit, "clip": [low, high],
              "n_users": data.n_users, "n_items": data.n_items}
    seed = kwargs.get("seed", 0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(config, catalog.mean)
    return CollabLearner(model, data, catalog, config, **kwargs)


def build_model(config: dict, mean: float | None) -> nn.Module:
    """The model a config describes (untrained)."""
    args = (config["n_users"], config["n_items"], config["n_factors"],
            tuple(config["y_range"]), mean)
    if config["kind"] == "nn":
        model = EmbeddingNN(*args, layers=config["layers"], dropout=config["dropout"])
    else:  # saved before "members" and "implicit" existed: one plain dot product
        model = DotProductBias(*args, members=config.get("members", 1),
                               implicit=config.get("implicit", False))
    model.clip = tuple(config["clip"]) if config.get("clip") else None
    return model


def rebuild(description: dict, tensors: dict[str, torch.Tensor], device: Any = None,
            data: CollabData | None = None, **kwargs: Any) -> CollabLearner:
    """The learner :meth:`CollabLearner.save` wrote (called by ``Learner.load``)."""
    config = description["config"]
    catalog = Catalog.rebuild(description["catalog"], tensors)
    learn = CollabLearner(build_model(config, catalog.mean), data, catalog, config,
                          device=device, **kwargs)
    learn.loss = from_description(description["loss"])
    learn.load_state_dict(tensors)
    learn.history = list(description.get("history") or [])
    return learn


def _implicit(implicit: bool | None, kind: str, data: CollabData) -> bool:
    """Whether the model sums who rated what: ``implicit``, or None for small tables."""
    if implicit is None:
        implicit = len(data.train_idx) <= IMPLICIT_MAX_RATINGS
    return bool(implicit) and kind == "dot"


def _check_k(k: int) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}.")


def _warn_unknown(users: np.ndarray, items: np.ndarray, u: np.ndarray, i: np.ndarray) -> None:
    bad_u, bad_i = np.flatnonzero(u == 0), np.flatnonzero(i == 0)
    if len(bad_u) or len(bad_i):
        examples = ([f"user {users[bad_u[0]]!r}"] if len(bad_u) else []) + (
            [f"item {items[bad_i[0]]!r}"] if len(bad_i) else [])
        n = int(((u == 0) | (i == 0)).sum())
        warnings.warn(f"{n:,} of {len(u):,} pairs have a user or item not in the training "
                      f"ratings (e.g. {', '.join(examples)}): they get the bias-only "
                      "prediction (global mean + the known side's bias).", stacklevel=3)
