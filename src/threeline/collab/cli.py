"""Command-line entry points for ratings tables (wired into ``threeline`` by ``cli.py``).

    train_cli("ml-100k/u.data", "runs/ml", epochs=5, titles="ml-100k/u.item")
    recommend_cli("runs/ml", user=196, k=10)
    predict_cli("runs/ml", "pairs.csv")
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from threeline.collab.data import CollabData
from threeline.collab.learner import CollabLearner, collab_learner

SEPARATORS = ("\t", "::", "|", ",", ";")


def sniff(path: str | Path) -> tuple[str, list[str] | None]:
    """(separator, column names or None when the file has a header) from the first line.

    Example:
        >>> sniff("ml-100k/u.data")   # doctest: +SKIP
        ('\\t', ['user', 'item', 'rating', 'timestamp'])
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ratings file {path} does not exist; check the path.")
    with open(path, encoding="utf-8", errors="replace") as f:
        first = f.readline().rstrip("\r\n")
    sep = max(SEPARATORS, key=first.count)
    fields = first.split(sep)
    if len(fields) < 3:
        raise ValueError(f"{path}: its first line {first[:60]!r} has fewer than 3 fields "
                         "separated by tab, '::', '|', ',' or ';'; expected user, item, rating.")
    try:
        float(fields[2])
    except ValueError:
        return sep, None  # a header row
    names = ["user", "item", "rating", "timestamp"][: len(fields)]
    return sep, names + [f"column{n}" for n in range(len(names), len(fields))]


def train_cli(ratings: str | Path, out: str | Path, epochs: int = 5, lr: float = 5e-3,
              kind: str = "dot", n_factors: int = 50, valid: str | Path | None = None,
              valid_pct: float = 0.2, titles: str | Path | None = None, wd: float | None = None,
              device: str | None = None, seed: int = 0) -> CollabLearner:
    """Train on a ratings file and save ``out/model.*``, ``out/history.csv``, ``out/args.json``.

    ``valid``: a second ratings file to validate on (e.g. ``u1.test``), else a random
    ``valid_pct``.
    """
    import pandas as pd

    sep, names = sniff(ratings)
    df = pd.read_csv(ratings, sep=sep, names=names, header=None if names else "infer",
                     engine="python" if len(sep) > 1 else "c")
    valid_idx = None
    if valid is not None:
        vsep, vnames = sniff(valid)
        vdf = pd.read_csv(valid, sep=vsep, names=names or vnames,
                          header=None if vnames else "infer",
                          engine="python" if len(vsep) > 1 else "c")
        valid_idx = list(range(len(df), len(df) + len(vdf)))
        df = pd.concat([df, vdf], ignore_index=True)
    data = CollabData.from_df(df, valid_pct=valid_pct, valid_idx=valid_idx, titles=titles,
                              seed=seed)
    learn = collab_learner(data, n_factors=n_factors, kind=kind, device=device, seed=seed)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    learn.checkpoint_dir = out / "checkpoints"
    learn.fit(lr, epochs, wd=wd)
    learn.save(out / "model")
    pd.DataFrame(learn.history).to_csv(out / "history.csv", index=False)
    args = {"ratings": str(ratings), "epochs": epochs, "lr": lr, "kind": kind,
            "n_factors": n_factors, "valid": str(valid) if valid else None,
            "valid_pct": valid_pct, "titles": str(titles) if titles else None, "wd": wd,
            "seed": seed}
    (out / "args.json").write_text(json.dumps(args, indent=2))
    return learn


def load_run(run_folder: str | Path, device: str | None = None) -> CollabLearner:
    """The learner saved in a run folder (``model.*``) or at a model path."""
    from threeline.learner import Learner

    path = Path(run_folder)
    path = path / "model" if path.is_dir() else path
    learn = Learner.load(path, device=device)
    if not isinstance(learn, CollabLearner):
        raise ValueError(f"{run_folder} holds a {type(learn).__name__}, not a ratings model; "
                         "use `threeline predict` for it.")
    return learn


def recommend_cli(run_folder: str | Path, user: Any, k: int = 10,
                  device: str | None = None) -> Any:
    """The top ``k`` unrated items for ``user`` as a DataFrame (item, title, predicted).

    A user given as text that looks like a number is tried both ways ("196" and 196).
    """
    return load_run(run_folder, device).recommend(user, k)


def predict_cli(run_folder: str | Path, pairs: str | Path, out_csv: str | Path | None = None,
                device: str | None = None) -> Any:
    """Predicted ratings for a file of (user, item) pairs; a DataFrame with ``predicted``."""
    import pandas as pd

    learn = load_run(run_folder, device)
    if not Path(pairs).is_file():
        raise FileNotFoundError(f"pairs file {pairs} does not exist; check the path.")
    first = Path(pairs).read_text(errors="replace").split("\n", 1)[0].rstrip("\r")
    sep = max(SEPARATORS, key=first.count)
    headerless = all(_is_number(v) for v in first.split(sep)[:2])
    df = pd.read_csv(pairs, sep=sep, engine="python" if len(sep) > 1 else "c",
                     header=None if headerless else "infer",
                     names=[*learn.catalog.columns] if headerless else None,
                     usecols=[0, 1] if headerless else None)
    result = df.copy()
    result["predicted"] = learn.predict(df)
    if out_csv is not None:
        result.to_csv(out_csv, index=False)
    return result


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
