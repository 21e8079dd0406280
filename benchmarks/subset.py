"""Copy a seeded, class-balanced subset of a dataset folder (to carry it to another machine).

    python benchmarks/subset.py ../shared/data/dogscats .gpu/data/dogscats \
        --max-train 2000 --max-valid 400
    python benchmarks/subset.py ../shared/data/hymenoptera .gpu/data/hymenoptera   # all of it

The files are the ones ``compare.py --max-train N --max-valid M`` picks on the full folder, so a
sweep on the copy and a sweep on the original with the same caps train on the same images.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from common import select_files


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("source", type=Path)
    p.add_argument("dest", type=Path)
    p.add_argument("--max-train", type=int)
    p.add_argument("--max-valid", type=int)
    args = p.parse_args(argv)
    selection = select_files(args.source, args.max_train, args.max_valid)
    if args.dest.exists():
        shutil.rmtree(args.dest)
    total = 0
    for name in selection.files():
        target = args.dest / Path(name).relative_to(args.source)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(name, target)
        total += target.stat().st_size
    print(f"{args.dest}: {len(selection.train)} train / {len(selection.valid)} valid images, "
          f"{total / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
