"""Gradient-boosted trees (LightGBM) in the same API, and their average with the network.

    learn = tabular_learner(data, model="gbdt")       # or "ensemble"
    learn.fit(1e-2, 5)                                # the epoch table, the same metrics

How it fits the core: the booster is wrapped as an ``nn.Module`` without parameters
(:class:`GBDTModule`) whose forward returns log-probabilities (or values), so the core's
``validate``, ``get_preds``, metrics, ``save``/``load`` and prediction work unchanged.
:class:`GBDTLearner` overrides ``fit`` only for the boosting; with ``"ensemble"`` its ``fit``
first trains the network through the core's own ``fit`` (``trainable()`` is the network then),
then boosts, then prints the ensemble's row. The booster is saved as LightGBM's text model in
the safetensors file (bytes under ``gbdt.model``), so its checksum covers it and nothing is
pickled. LightGBM's learning rate is its own (``params=``); a network's ``lr`` means nothing to
boosting, so the boosted part ignores it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from threeline.progress import EpochTable
from threeline.tabular.data import TabularData
from threeline.tabular.learner import TabularLearner, model_config
from threeline.tabular.model import TabularModel
from threeline.tabular.preprocess import Preprocessor
from threeline.tabular.target import Target

DEFAULT_PARAMS = {
    "learning_rate": 0.05, "num_leaves": 31, "min_data_in_leaf": 20, "feature_fraction": 0.8,
    "bagging_fraction": 0.8, "bagging_freq": 1, "lambda_l2": 1.0, "cat_smooth": 10.0,
    "verbose": -1,
}
MAX_ROUNDS = 3000
EARLY_STOP = 100  # rounds without improvement on the inner holdout
INNER_PCT = 0.1  # of the training rows, held out to stop boosting (never the validation rows)
TRAIN_LOSS_SAMPLE = 100_000
# The network's share of the ensemble's probabilities. Fixed, not fitted on the validation rows:
# chosen on training rows only (Adult, 10 seeds: the network trained without the boosting's
# inner holdout, both scored on that holdout). There the trees alone scored 0.8723, network
# shares 0.2 / 0.3 / 0.5 scored 0.8723 / 0.8717 / 0.8709: the network, the weaker of the two,
# hurts at an equal share; 0.2 is the largest share that did not lose to the trees alone.
# Log-odds averaging scored about the same (0.8722 at 0.2).
NET_WEIGHT = 0.2


def features(cats: np.ndarray, conts: np.ndarray) -> np.ndarray:
    """The encoded table as LightGBM reads it: category codes then continuous values.

    Example:
        >>> features(np.array([[2]], np.int32), np.array([[0.5]], np.float32)).tolist()
        [[2.0, 0.5]]
    """
    return np.concatenate([cats.astype(np.float32), conts], axis=1)  # (N, C + K)


class GBDTModule(nn.Module):
    """A LightGBM booster as a module: ``(cats, conts) -> log-probabilities (B, classes)`` or
    values ``(B, 1)``; evaluated on the CPU. ``num_iteration`` limits the trees used."""

    def __init__(self, task: str, n_out: int):
        super().__init__()
        self.task, self.n_out = task, n_out
        self.booster = None
        self.num_iteration: int | None = None

    def forward(self, cats: torch.Tensor, conts: torch.Tensor) -> torch.Tensor:
        if self.booster is None:
            raise ValueError("The boosted trees are not trained yet: call learn.fit first.")
        x = features(cats.cpu().numpy(), conts.float().cpu().numpy())
        p = np.asarray(self.booster.predict(x, num_iteration=self.num_iteration))
        if self.task == "regression":
            return torch.from_numpy(p.astype(np.float32)).reshape(-1, 1).to(cats.device)
        if p.ndim == 1:  # binary: the probability of class 1
            p = np.stack([1 - p, p], axis=1)
        p = torch.from_numpy(np.clip(p, 1e-7, 1.0).astype(np.float32)).to(cats.device)
        return torch.log(p)  # (B, C): softmax of these is p itself

    def text(self) -> str:
        return self.booster.model_to_string()

    def load_text(self, text: str) -> None:
        import lightgbm as lgb

        self.booster = lgb.Booster(model_str=text)


class EnsembleModel(nn.Module):
    """The network and the boosted trees: probabilities (or values) averaged, the network
    weighted ``net_weight`` and the trees ``1 - net_weight`` (see ``NET_WEIGHT``)."""

    def __init__(self, net: TabularModel, gbdt: GBDTModule, net_weight: float = NET_WEIGHT):
        super().__init__()
        if not 0 <= net_weight <= 1:
            raise ValueError(f"net_weight must be in [0, 1], got {net_weight!r}.")
        self.net, self.gbdt, self.net_weight = net, gbdt, float(net_weight)

    def forward(self, cats: torch.Tensor, conts: torch.Tensor) -> torch.Tensor:
        a, b = self.net(cats, conts).float(), self.gbdt(cats, conts)
        w = self.net_weight
        if self.gbdt.task == "regression":
            return w * a.reshape(-1, 1) + (1 - w) * b
        return torch.log(w * F.softmax(a, -1) + (1 - w) * b.exp())  # (B, C) log-probabilities


class GBDTLearner(TabularLearner):
    """A tabular learner whose model is LightGBM (``ensemble=False``) or the average of the
    network and LightGBM (``ensemble=True``). See the module's docstring."""

    name = "tabular-gbdt"

    def __init__(self, model: nn.Module, data: TabularData | None, prep: Preprocessor,
                 target: Target, config: dict, params: dict | None = None, **kwargs):
        super().__init__(model, data, prep, target, config, **kwargs)
        self.params = {**DEFAULT_PARAMS, **(params or {})}
        self.ensemble = isinstance(model, EnsembleModel)
        self._net_only = False
        self._evaluating: nn.Module | None = None
        if not self.ensemble:
            self.checkpoint_dir = False  # no epochs of a network to checkpoint

    @property
    def booster_module(self) -> GBDTModule:
        return self.model.gbdt if self.ensemble else self.model

    def trainable(self) -> nn.Module:
        if self._evaluating is not None:
            return self._evaluating
        return self.model.net if self._net_only else self.model

    def fit(self, lr=1e-2, epochs: int = 5, **kwargs) -> list[dict]:
        """Ensemble: train the network with the core's ``fit(lr, epochs, ...)``, then boost.
        Boosted trees alone: boost; ``epochs`` rows in the table, ``lr`` unused (LightGBM's
        rate is ``params["learning_rate"]``)."""
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
            raise ValueError(f"epochs must be a whole number >= 1, got {epochs!r}.")
        rows: list[dict] = []
        if self.ensemble:
            self._net_only = True
            try:
                rows += super().fit(lr, epochs, **kwargs)
            finally:
                self._net_only = False
            if self.interrupted:
                return rows
        rows += self.boost(epochs)
        return rows

    def lr_find(self, *args, **kwargs):
        if not self.ensemble:
            raise ValueError("lr_find is for networks; boosted trees have no learning-rate "
                             "sweep. Use model='nn' or 'ensemble' (it sweeps the network).")
        self._net_only = True
        try:
            return super().lr_find(*args, **kwargs)
        finally:
            self._net_only = False

    def boost(self, n_rows: int = 5) -> list[dict]:
        """Train the booster (early stopping on an inner holdout of the training rows), then
        print ``n_rows`` rows of the epoch table along its rounds (and the ensemble's row)."""
        import lightgbm as lgb

        data = self._need_data()
        start = time.perf_counter()
        train, inner = _inner_split(data.rows["train"], self.seed)
        params = self._lgb_params(data)
        cat_idx = list(range(len(data.cat_names)))
        x = features(data.cats[train], data.conts[train])
        ds = lgb.Dataset(x, data.y[train], categorical_feature=cat_idx, free_raw_data=True)
        del x
        xi = features(data.cats[inner], data.conts[inner])
        dv = lgb.Dataset(xi, data.y[inner], categorical_feature=cat_idx, reference=ds)
        booster = lgb.train(params, ds, num_boost_round=MAX_ROUNDS, valid_sets=[dv],
                            callbacks=[lgb.early_stopping(EARLY_STOP, verbose=False)])
        module = self.booster_module
        module.booster, seconds = booster, time.perf_counter() - start
        best = booster.best_iteration or booster.current_iteration()
        return self._report(best, n_rows, seconds)

    def _lgb_params(self, data: TabularData) -> dict:
        params = dict(self.params)
        params.setdefault("seed", self.seed)
        params.setdefault("num_threads", max(1, torch.get_num_threads()))
        if self.target.task == "regression":
            params.setdefault("objective", "regression")
        elif len(self.target.classes) == 2:
            params.setdefault("objective", "binary")
        else:
            params.setdefault("objective", "multiclass")
            params.setdefault("num_class", len(self.target.classes))
        return params

    def _report(self, best: int, n_rows: int, seconds: float) -> list[dict]:
        """Rows of the table at evenly spaced rounds up to ``best``, then the ensemble's."""
        module = self.booster_module
        names = [m.name for m in self.metrics]
        table = EpochTable(["epoch", "rounds", "train_loss", "valid_loss", *names, "time"])
        rows = []
        for i in range(n_rows):
            module.num_iteration = max(1, round(best * (i + 1) / n_rows))
            row = {"epoch": len(self.history), "model": "gbdt", "rounds": module.num_iteration,
                   "train_loss": self._train_loss(module), **self._evaluate(module),
                   "time": seconds / n_rows}
            rows.append(row)
            self.history.append(row)
            table.row({**row, "time": f"{row['time']:.2f}s"})
        module.num_iteration = best
        if self.ensemble:
            row = {"epoch": "ensemble", "model": "ensemble", "rounds": best,
                   "train_loss": self._train_loss(self.model), **self._evaluate(self.model),
                   "time": 0.0}
            rows.append(row)
            self.history.append(row)
            table.row({**row, "time": ""})
        return rows

    def _evaluate(self, module: nn.Module) -> dict:
        self._evaluating = module
        try:
            return self.validate()
        finally:
            self._evaluating = None

    @torch.inference_mode()
    def _train_loss(self, module: nn.Module) -> float:
        data = self._need_data()
        rows = data.rows["train"][:TRAIN_LOSS_SAMPLE]
        out, y = self.get_preds(batches=_batches(data, rows, self.device), module=module)
        return float(self.loss(out, y))

    def state_dict(self) -> dict[str, torch.Tensor]:
        tensors = dict(self.model.state_dict())
        module = self.booster_module
        if module.booster is not None:
            text = np.frombuffer(module.text().encode("utf-8"), dtype=np.uint8).copy()
            tensors["gbdt.model"] = torch.from_numpy(text)
            tensors["gbdt.best"] = torch.tensor([module.num_iteration or 0])
        return tensors

    def load_state_dict(self, tensors: dict[str, torch.Tensor]) -> None:
        tensors = dict(tensors)
        text, best = tensors.pop("gbdt.model", None), tensors.pop("gbdt.best", None)
        if self.ensemble:
            super().load_state_dict(tensors)
        module = self.booster_module
        if text is not None:
            module.load_text(bytes(text.numpy().tobytes()).decode("utf-8"))
            module.num_iteration = int(best[0]) or None if best is not None else None

    def describe(self) -> dict:
        out = {**super().describe(), "kind": "ensemble" if self.ensemble else "gbdt",
               "model": type(self.model).__name__, "params": self.params}
        if self.ensemble:
            out["net_weight"] = self.model.net_weight
        return out


def _inner_split(train: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.random.default_rng(seed + 7).permutation(len(train))
    n_inner = max(1, round(INNER_PCT * len(train)))
    return np.sort(train[order[n_inner:]]), np.sort(train[order[:n_inner]])


def _batches(data: TabularData, rows: np.ndarray, device: torch.device,
             size: int = 8192) -> Iterator:
    for i in range(0, len(rows), size):
        r = rows[i:i + size]
        x = (torch.from_numpy(data.cats[r]).to(device), torch.from_numpy(data.conts[r]).to(device))
        yield x, torch.from_numpy(data.y[r]).to(device)


def gbdt_learner(data: TabularData, ensemble: bool = False, nn_kwargs: dict | None = None,
                 params: dict | None = None, **kwargs) -> GBDTLearner:
    """LightGBM on the encoded table, or (``ensemble=True``) LightGBM averaged with the
    network built from ``nn_kwargs`` (layers, ps, emb_drop)."""
    import lightgbm  # noqa: F401  (a clear ImportError now rather than at fit)

    gbdt = GBDTModule(data.target.task, data.target.n_out)
    config = model_config(data, **(nn_kwargs or {})) if ensemble else {}
    model = EnsembleModel(TabularModel(**config), gbdt) if ensemble else gbdt
    return GBDTLearner(model, data, data.prep, data.target, config, params=params, **kwargs)


def rebuild_gbdt(description: dict, tensors: dict[str, torch.Tensor], device=None,
                 data: TabularData | None = None, **kwargs) -> GBDTLearner:
    """A saved gbdt or ensemble learner (``Learner.load`` calls this through ``rebuild``)."""
    target = Target.from_dict(description["target"])
    gbdt = GBDTModule(target.task, target.n_out)
    config = description["config"]
    ensemble = description["kind"] == "ensemble"
    weight = description.get("net_weight", 0.5)  # files saved before NET_WEIGHT: equal shares
    model = EnsembleModel(TabularModel(**config), gbdt, weight) if ensemble else gbdt
    learn = GBDTLearner(model, data, Preprocessor.from_dict(description["prep"]), target,
                        config, params=description.get("params"), device=device, **kwargs)
    learn.load_state_dict(tensors)
    learn.history = list(description.get("history") or [])
    return learn
