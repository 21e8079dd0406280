"""``threeline ratings`` and ``threeline recommend``: the command line of ratings tables.

Parsing imports nothing heavy; each command imports the application when it runs.

    threeline ratings ml-100k/u.data --titles ml-100k/u.item --out runs/ml   # train, save
    threeline recommend runs/ml --user 196 -k 10                             # top unrated items
    threeline predict runs/ml pairs.csv                                      # ratings of pairs
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

EXAMPLES = {
    "ratings": """A ratings file has one row per rating: user, item, rating (then anything),
separated by a tab, '::', '|', ',' or ';', with or without a header row (MovieLens' u.data works
as it is).

examples:
  threeline ratings ml-100k/u.data --titles ml-100k/u.item --out runs/ml
  threeline ratings ml-100k/u1.base --valid ml-100k/u1.test --epochs 5 --out runs/u1
  threeline ratings ratings.csv --kind nn --factors 64

The run folder gets model.safetensors + model.json, checkpoints/, history.csv and args.json.""",
    "recommend": """examples:
  threeline recommend runs/ml --user 196
  threeline recommend runs/ml --user 196 -k 20 --csv > top20.csv""",
}


def add_commands(command: Callable[[str, str], argparse.ArgumentParser],
                 number: Callable[..., Callable], device: Callable[[str], str]) -> None:
    """Add ``ratings`` and ``recommend`` with ``command(name, help)`` (the main parser's)."""
    train = command("ratings", "Train a recommender on a ratings file; write a run folder.")
    train.epilog = EXAMPLES["ratings"]
    train.add_argument("ratings", metavar="FILE", help="ratings: user, item, rating per row")
    train.add_argument("--out", type=Path, default=None,
                       help="run folder to write (default runs/<file name>-ratings)")
    train.add_argument("--epochs", type=number(int, 1), default=5, help="default 5")
    train.add_argument("--lr", type=number(float, 0, 10, low_open=True), default=5e-3,
                       help="peak learning rate (default 5e-3)")
    train.add_argument("--kind", choices=["dot", "nn"], default="dot",
                       help="dot product + biases (default) or an embedding network")
    train.add_argument("--factors", type=number(int, 1), default=50,
                       help="length of each user's and item's vector (default 50)")
    train.add_argument("--wd", type=number(float, 0), default=None,
                       help="weight decay (default: the model's own)")
    train.add_argument("--valid", type=Path, default=None,
                       help="a second ratings file to validate on (else a random --valid-pct)")
    train.add_argument("--valid-pct", type=number(float, 0, 1, low_open=True, high_open=True),
                       default=0.2, help="share held out for validation (default 0.2)")
    train.add_argument("--titles", type=Path, default=None,
                       help="item titles: a file of item id, title (MovieLens' u.item works)")
    train.add_argument("--seed", type=int, default=42, help="random seed (default 42)")
    train.add_argument("--device", type=device, default=None,
                       help="cpu, cuda, cuda:N or mps (default: CUDA when present)")
    train.set_defaults(run=cmd_ratings)

    recommend = command("recommend", "The top items a user has not rated, from a ratings run.")
    recommend.epilog = EXAMPLES["recommend"]
    recommend.add_argument("model", metavar="MODEL", help="a ratings run folder or model file")
    recommend.add_argument("--user", required=True, help="the user's id, as in the ratings")
    recommend.add_argument("-k", type=number(int, 1), default=10, help="items (default 10)")
    recommend.add_argument("--csv", action="store_true", help="write CSV instead of a table")
    recommend.add_argument("--device", type=device, default=None,
                           help="cpu, cuda, cuda:N or mps (default: CUDA when present)")
    recommend.set_defaults(run=cmd_recommend)


def cmd_ratings(args: argparse.Namespace) -> int:
    """``threeline ratings FILE``: train, save the run folder, print where it is."""
    from threeline.collab.cli import train_cli

    out = args.out or Path("runs") / f"{Path(args.ratings).stem}-ratings"
    learn = train_cli(args.ratings, out, epochs=args.epochs, lr=args.lr, kind=args.kind,
                      n_factors=args.factors, valid=args.valid, valid_pct=args.valid_pct,
                      titles=args.titles, wd=args.wd, device=args.device, seed=args.seed)
    print(f"Saved to {out}/ (valid RMSE {learn.history[-1]['rmse']:.4f}). Recommend with: "
          f"threeline recommend {out} --user USER")
    return 0


def cmd_recommend(args: argparse.Namespace) -> int:
    """``threeline recommend RUN --user U``: the top ``k`` unrated items, as a table or CSV."""
    from threeline.collab.cli import recommend_cli

    with _warnings_as_lines():  # e.g. an unknown user: recommended by item bias alone
        table = recommend_cli(args.model, args.user, args.k, device=args.device)
    if args.csv:
        table.to_csv(sys.stdout, index=False)
    else:
        print(table.to_string(index=False))
    return 0


def predict_pairs(model: str, paths: list[str], output: Path | None, device: str | None) -> int:
    """``threeline predict RUN pairs.csv``: predicted ratings of (user, item) pairs as CSV."""
    from threeline.collab.cli import predict_cli

    if output is not None and len(paths) > 1:
        raise ValueError("--output names one file, but several pairs files were given; give "
                         "one at a time.")
    for path in paths:
        with _warnings_as_lines():  # e.g. unknown users or items: bias-only predictions
            table = predict_cli(model, path, output, device=device)
        if output is None:
            table.to_csv(sys.stdout, index=False)
        else:
            print(f"Wrote {len(table)} rows to {output}", file=sys.stderr)
    return 0


@contextlib.contextmanager
def _warnings_as_lines() -> Iterator[None]:
    """The library's warnings as one ``threeline: warning: ...`` line each on stderr."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    for w in caught:
        print(f"threeline: warning: {' '.join(str(w.message).split())}", file=sys.stderr)
