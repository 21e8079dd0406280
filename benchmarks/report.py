"""Turn the runs' JSON records into the markdown tables of ``benchmarks/results/``.

Each figure is a median over repeats (different seeds) with the range (min-max) beside it.
Ratios threeline / other are taken pair by pair (same task, mode and seed, same process order
within the same sweep on the same machine) and then summarised the same way.
"""

from __future__ import annotations

import statistics
from collections import defaultdict

FRAMEWORK_ORDER = ["threeline", "threeline, cache warm", "fastai", "torch"]
NAMES = {
    "threeline": "threeline",
    "threeline, cache warm": "threeline, cache warm",
    "fastai": "fastai",
    "torch": "PyTorch tutorial loop",
}

NOTES = """\
How to read this:
- *valid acc*: accuracy on the validation images after the last epoch (no TTA); *TTA acc*: the
  same with each framework's `tta()` (threeline's and fastai's; the tutorial loop has none).
- *total s*: wall seconds from building the data pipeline to the end of training, the last
  epoch's validation included (imports and the CUDA context excluded; *import s* is shown apart).
  *setup s* is the part before the first epoch (data pipeline, model, weights). *s/epoch* is the
  training part divided by the number of passes over the training images; *img/s* is training
  images times passes divided by the training part. threeline's `precompute` pass over the train
  and validation images happens inside `fit`, so it is on the clock.
- *peak*: the largest GPU memory torch allocated (CUDA) or the largest resident set of the
  training process (CPU; decoding worker processes not included), read at the end of training.
- *runs*: repeats with different seeds; figures are `median (min-max)`.
- *cache warm*: a second threeline run that finds the activations cached by the first one (what
  re-running a notebook costs); it is not a separate method.
"""


def _label(run: dict) -> str:
    spec = run["spec"]
    if spec["framework"] == "threeline" and spec.get("warm_cache"):
        return "threeline, cache warm"
    return spec["framework"]


def _fmt(values: list[float], digits: int = 1, scale: float = 1.0) -> str:
    values = [v * scale for v in values if v is not None]
    if not values:
        return "—"
    mid = statistics.median(values)
    if len(values) == 1:
        return f"{mid:.{digits}f}"
    return f"{mid:.{digits}f} ({min(values):.{digits}f}–{max(values):.{digits}f})"


def _ratio(values: list[float], digits: int = 2) -> str:
    return _fmt(values, digits) if values else "—"


def groups(runs: list[dict]) -> dict[tuple[str, str, str], list[dict]]:
    out: dict[tuple[str, str, str], list[dict]] = defaultdict(list)
    for run in runs:
        if run.get("status", "ok") == "ok":
            out[(run["spec"]["task"], run["spec"]["mode"], _label(run))].append(run)
    return out


def _ordered(keys):
    modes = ["frozen", "finetune"]
    return sorted(keys, key=lambda k: (k[0], modes.index(k[1]) if k[1] in modes else 9,
                                       FRAMEWORK_ORDER.index(k[2]) if k[2] in FRAMEWORK_ORDER
                                       else 9))


def figures_table(runs: list[dict]) -> str:
    grouped = groups(runs)
    if not grouped:
        return "(no finished runs)\n"
    kinds = {r["peak_kind"] for rs in grouped.values() for r in rs}
    peak = {"gpu": "peak GPU MiB", "rss": "peak RSS MiB"}.get(kinds.pop(), "peak MiB")
    if kinds:  # both kinds in one table
        peak = "peak MiB"
    lines = [
        f"| task | mode | framework | runs | valid acc % | TTA acc % | total s | setup s | "
        f"s/epoch | img/s | {peak} | TTA s | import s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key in _ordered(grouped):
        rs = grouped[key]
        task, mode, label = key
        per_epoch = [_per_epoch(r) for r in rs]
        lines.append(
            f"| {task} | {mode} | {NAMES.get(label, label)} | {len(rs)} "
            f"| {_fmt([r['accuracy'] for r in rs], 1, 100)} "
            f"| {_fmt([r['tta_accuracy'] for r in rs], 1, 100)} "
            f"| {_fmt([r['total_s'] for r in rs])} | {_fmt([r['setup_s'] for r in rs])} "
            f"| {_fmt(per_epoch, 2)} | {_fmt([r['images_per_s'] for r in rs], 0)} "
            f"| {_fmt([r['peak_mib'] for r in rs], 0)} | {_fmt([r['tta_s'] for r in rs])} "
            f"| {_fmt([r['import_s'] for r in rs])} |"
        )
    return "\n".join(lines) + "\n"


def _per_epoch(run: dict) -> float:
    return run["fit_s"] / run["epochs_run"]


def ratios_table(runs: list[dict]) -> str:
    grouped = groups(runs)
    lines = [
        "| task | mode | threeline ÷ | pairs | total time | s/epoch | img/s | peak memory "
        "| acc − other (points) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    found = False
    for task, mode, label in _ordered(grouped):
        if not label.startswith("threeline"):
            continue
        mine = {r["spec"]["seed"]: r for r in grouped[(task, mode, label)]}
        for other in ("fastai", "torch"):
            theirs = {r["spec"]["seed"]: r for r in grouped.get((task, mode, other), [])}
            seeds = sorted(set(mine) & set(theirs))
            if not seeds:
                continue
            found = True
            pairs = [(mine[s], theirs[s]) for s in seeds]
            lines.append(
                f"| {task} | {mode} | {NAMES[label]} ÷ {NAMES[other]} | {len(pairs)} "
                f"| {_ratio([a['total_s'] / b['total_s'] for a, b in pairs])} "
                f"| {_ratio([_per_epoch(a) / _per_epoch(b) for a, b in pairs])} "
                f"| {_ratio([a['images_per_s'] / b['images_per_s'] for a, b in pairs])} "
                f"| {_ratio([a['peak_mib'] / b['peak_mib'] for a, b in pairs])} "
                f"| {_fmt([100 * (a['accuracy'] - b['accuracy']) for a, b in pairs], 1)} |"
            )
    return "\n".join(lines) + "\n" if found else "(no pairs yet)\n"


def recipes_table(runs: list[dict]) -> str:
    grouped = groups(runs)
    lines = ["| task | mode | framework | what ran | train / valid images | passes |",
             "|---|---|---|---|---|---|"]
    for key in _ordered(grouped):
        r = grouped[key][0]
        lines.append(f"| {key[0]} | {key[1]} | {NAMES.get(key[2], key[2])} | `{r['recipe']}` "
                     f"| {r['n_train']} / {r['n_valid']} | {r['epochs_run']} |")
    return "\n".join(lines) + "\n"


def failures(runs: list[dict]) -> str:
    bad = [r for r in runs if r.get("status", "ok") != "ok"]
    if not bad:
        return ""
    lines = ["", "Runs that did not finish:", ""]
    for r in bad:
        s = r["spec"]
        lines.append(f"- {s['framework']} {s['task']} {s['mode']} seed {s['seed']}: {r['status']}")
    return "\n".join(lines) + "\n"


def markdown(runs: list[dict], header: str, skipped: list[str]) -> str:
    parts = [header, "", "## Figures", "", figures_table(runs), "",
             "## threeline ÷ other, pair by pair (same seed, same sweep)", "",
             "Below 1 is better for threeline in time and memory, above 1 in img/s.", "",
             ratios_table(runs), "", "## What ran", "", recipes_table(runs), "", NOTES]
    if skipped:
        parts += ["", "Left out to stay within the time budget: " + "; ".join(skipped) + "."]
    parts.append(failures(runs))
    return "\n".join(parts).rstrip() + "\n"
