"""Interpretation on real predictions: selections against direct computations, and the plots."""

from __future__ import annotations

import re
import shutil
from collections import Counter
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest
from PIL import Image

from threeline import ImageData, Learner
from threeline.vision.interpret import Interpretation
from threeline.vision.selection import (
    most_correct,
    most_incorrect,
    most_uncertain,
    random_pick,
    top_losses,
)

TITLE = re.compile(r"^(?P<pred>.+) (?P<prob>[01]\.\d{3})$")
N_MANY = 48  # classes in the many-class data set


@pytest.fixture(scope="module")
def four(tmp_path_factory, dogscats_demo, hymenoptera_demo) -> Learner:
    """ants, bees, cats, dogs: trained briefly so that it still makes some mistakes."""
    root = tmp_path_factory.mktemp("four")
    for source in (dogscats_demo, hymenoptera_demo):
        for split in ("train", "valid"):
            for folder in (source / split).iterdir():
                shutil.copytree(folder, root / split / folder.name)
    data = ImageData.from_folder(root, size=128)
    learn = Learner.pretrained("efficientnet_lite0", data, precompute=True, progress=False)
    learn.fit(0.01, 1)
    return learn


@pytest.fixture(scope="module")
def many(tmp_path_factory, dogscats_demo, hymenoptera_demo) -> Learner:
    """48 classes with long names, made by dealing all demo photos out in turn (3 train each)."""
    root = tmp_path_factory.mktemp("many")
    files = sorted(p for d in (dogscats_demo, hymenoptera_demo) for p in d.rglob("*.jpg"))
    seen: Counter = Counter()
    for i, path in enumerate(files):
        name = f"{i % N_MANY:02d}_class_with_a_long_descriptive_name"
        split = "train" if seen[name] < 3 else "valid"
        seen[name] += 1
        (root / split / name).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, root / split / name / path.name)
    data = ImageData.from_folder(root, size=64)
    learn = Learner.pretrained("efficientnet_lite0", data, precompute=True, progress=False)
    learn.fit(0.01, 2)
    return learn


def shown(fig) -> list:
    return [ax for ax in fig.axes if ax.images]


def check_png(path: Path, min_side: int = 100) -> None:
    assert path.is_file() and path.stat().st_size > 1000
    with Image.open(path) as image:
        assert image.format == "PNG" and min(image.size) > min_side


def check_titles(fig, interp: Interpretation, idx, probs: np.ndarray) -> None:
    """One image per index, titled with the predicted class, its probability, the true class."""
    axes = shown(fig)
    assert len(axes) == len(idx)
    for ax, i in zip(axes, idx, strict=True):
        lines = ax.get_title().split("\n")
        match = TITLE.match(lines[0])
        assert match, ax.get_title()
        pred = int(np.argmax(probs[i]))
        assert match["pred"] == interp.classes[pred]
        assert abs(float(match["prob"]) - probs[i, pred]) <= 5e-4
        true = interp.classes[interp.targets[i]]
        assert (f"true: {true}" in lines) == (pred != interp.targets[i])


# ----------------------------------------------------------------- selection logic


def direct(log_probs: np.ndarray, targets: np.ndarray):
    """The selections written out plainly, one image at a time."""
    n, c = log_probs.shape
    rows = [list(map(float, r)) for r in log_probs]
    pred = [max(range(c), key=lambda j, r=r: r[j]) for r in rows]
    p_true = [rows[i][targets[i]] for i in range(n)]

    def correct(cls):
        chosen = [i for i in range(n) if pred[i] == targets[i] and cls in (None, targets[i])]
        return sorted(chosen, key=lambda i: (-p_true[i], i))

    def incorrect(cls):
        chosen = [i for i in range(n) if pred[i] != targets[i] and cls in (None, targets[i])]
        return sorted(chosen, key=lambda i: (p_true[i], i))

    def gap(i):
        top = sorted(np.exp(rows[i]), reverse=True)
        return top[0] - top[1]

    losses = sorted(range(n), key=lambda i: (p_true[i], i))
    uncertain = sorted(range(n), key=lambda i: (gap(i), i))
    return pred, correct, incorrect, losses, uncertain


@pytest.mark.parametrize("name", ["trained", "four", "many"])
def test_selection_matches_direct_computation(name, request):
    learn = request.getfixturevalue(name)
    log_probs = learn.predict()
    interp = learn.interpret()
    assert np.array_equal(interp.log_probs, log_probs.astype(np.float64))
    targets = np.array(learn.data.valid.labels)
    pred, correct, incorrect, losses, uncertain = direct(log_probs, targets)
    lp = log_probs.astype(np.float64)
    assert top_losses(lp, targets).tolist() == losses
    assert top_losses(lp, targets, 5).tolist() == losses[:5]
    assert np.allclose(interp.losses[losses], -lp[losses, targets[losses]])
    for cls in [None, *range(len(learn.classes))]:
        assert most_correct(lp, targets, cls).tolist() == correct(cls)
        assert most_incorrect(lp, targets, cls).tolist() == incorrect(cls)
    assert most_uncertain(np.exp(lp)).tolist() == uncertain

    counts = Counter(zip(targets.tolist(), pred, strict=True))
    cm = interp.confusion_matrix()
    assert cm.sum() == len(learn.data.valid)
    for (t, p), n in counts.items():
        assert cm[t, p] == n
    expected = sorted(((learn.classes[t], learn.classes[p], n) for (t, p), n in counts.items()
                       if t != p), key=lambda x: (-x[2], learn.classes.index(x[0]),
                                                  learn.classes.index(x[1])))
    assert interp.most_confused() == expected
    assert interp.most_confused(min_count=2) == [x for x in expected if x[2] >= 2]


def test_most_uncertain_is_the_lessons_measure_for_two_classes(trained):
    probs = np.exp(trained.predict().astype(np.float64))
    order = most_uncertain(probs)
    distance = np.abs(probs[:, 1] - 0.5)  # the lesson's |p - 0.5| on the "dogs" column
    assert np.allclose(2 * distance[order], np.sort(2 * distance), atol=1e-6)


def test_random_pick_is_repeatable_and_stays_in_the_mask(four):
    interp = four.interpret()
    wrong = ~interp.correct
    assert wrong.sum() >= 3, "the four-class model should still make mistakes"
    picked = random_pick(wrong, 4, seed=1)
    assert len(picked) == min(4, wrong.sum()) and len(set(picked.tolist())) == len(picked)
    assert wrong[picked].all()
    assert np.array_equal(picked, random_pick(wrong, 4, seed=1))
    assert sorted(random_pick(wrong, 1000).tolist()) == np.flatnonzero(wrong).tolist()


# ----------------------------------------------------------------- plots


def test_image_plots_on_four_classes(four, tmp_path):
    interp = four.interpret()
    probs = np.exp(four.predict())
    lp, t = interp.log_probs, interp.targets
    worst = interp.most_confused()[0][0]  # the true class of the most frequent mix-up
    cases = {
        "random_correct": (interp.plot_random_correct, {"k": 6, "seed": 3},
                           random_pick(interp.correct, 6, 3)),
        "random_incorrect": (interp.plot_random_incorrect, {"k": 6},
                             random_pick(~interp.correct, 6, 0)),
        "most_correct": (interp.plot_most_correct, {"cls": "bees", "k": 4},
                         most_correct(lp, t, 1, 4)),
        "most_incorrect": (interp.plot_most_incorrect, {"cls": worst},
                           most_incorrect(lp, t, interp.classes.index(worst), 9)),
        "most_incorrect_any": (interp.plot_most_incorrect, {"k": 16},
                               most_incorrect(lp, t, None, 16)),
        "most_uncertain": (interp.plot_most_uncertain, {"k": 9}, most_uncertain(probs, 9)),
        "top_losses": (interp.plot_top_losses, {"k": 12}, top_losses(lp, t, 12)),
    }
    for name, (plot, kwargs, idx) in cases.items():
        assert len(idx) > 0, name
        fig = plot(**kwargs, save=tmp_path / f"{name}.png")
        check_titles(fig, interp, idx.tolist(), probs)
        check_png(tmp_path / f"{name}.png")
    top = shown(interp.plot_top_losses(3))
    for ax, i in zip(top, top_losses(lp, t, 3), strict=True):
        assert ax.get_title().endswith(f"loss {-lp[i, t[i]]:.2f}")


def test_image_plots_on_two_classes(trained, tmp_path):
    interp = trained.interpret()
    probs = np.exp(trained.predict())
    for cls in trained.classes:
        fig = interp.plot_most_correct(cls, save=tmp_path / f"{cls}.png")
        idx = most_correct(interp.log_probs, interp.targets, trained.classes.index(cls), 9)
        check_titles(fig, interp, idx.tolist(), probs)
        assert all(ax.get_title().startswith(cls) for ax in shown(fig))
        check_png(tmp_path / f"{cls}.png")
    wrong = int((~interp.correct).sum())
    fig = interp.plot_random_incorrect(save=tmp_path / "wrong.png")
    assert len(shown(fig)) == min(9, wrong)
    if wrong == 0:
        assert "none among 40 images" in fig.texts[0].get_text()
    check_png(tmp_path / "wrong.png", min_side=20)


def test_confusion_matrix_sums_to_the_validation_count(trained, four, tmp_path):
    for learn in (trained, four):
        interp = learn.interpret()
        fig = interp.plot_confusion_matrix(save=tmp_path / "cm.png")
        shown_counts = np.asarray(fig.axes[0].images[0].get_array())
        assert shown_counts.sum() == len(learn.data.valid)
        assert np.array_equal(shown_counts, interp.confusion_matrix())
        assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == learn.classes
        check_png(tmp_path / "cm.png")
        fig = interp.plot_confusion_matrix(normalize=True)
        rows = np.asarray(fig.axes[0].images[0].get_array()).sum(1)
        assert np.allclose(rows, 1)


def test_many_classes_stay_readable(many, tmp_path):
    interp = many.interpret()
    n_valid = len(many.data.valid)
    assert len(interp.classes) == N_MANY and interp.correct.sum() < n_valid
    fig = interp.plot_confusion_matrix(save=tmp_path / "cm.png")
    ax = fig.axes[0]
    cm = np.asarray(ax.images[0].get_array())
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert cm.shape == (30, 30) and len(labels) == 30
    assert cm.sum() == n_valid  # nothing is dropped: the rest is summed into "other"
    assert labels[-1] == f"other ({N_MANY - 29} classes)"
    assert all(len(label) <= 20 for label in labels[:-1])
    full = interp.confusion_matrix()
    errors = full.sum(0) + full.sum(1) - 2 * np.diag(full)
    kept = [interp.classes.index(next(c for c in interp.classes if c.startswith(label[:-1])))
            for label in labels[:-1]]
    assert errors[kept].min() >= np.delete(errors, kept).max()
    assert max(fig.get_size_inches()) <= 20
    check_png(tmp_path / "cm.png")
    assert sum(n for _, _, n in interp.most_confused()) == n_valid - interp.correct.sum()

    fig = interp.plot_top_losses(100, save=tmp_path / "top.png")
    assert len(shown(fig)) == 36 and fig._suptitle.get_text() == f"Top losses: 36 of {n_valid}"
    assert all(len(line) <= 26 for ax in shown(fig) for line in ax.get_title().split("\n"))
    check_png(tmp_path / "top.png")


def test_figures_render_inline_and_do_not_leak(trained):
    before = plt.get_fignums()
    interp = trained.interpret()
    figures = [interp.plot_most_uncertain(4), interp.plot_confusion_matrix()]
    assert plt.get_fignums() == before
    for fig in figures:
        assert fig._repr_png_().startswith(b"\x89PNG\r\n\x1a\n")


def test_show_batch(dogscats_demo, tmp_path):
    data = ImageData.from_folder(dogscats_demo, size=96)
    fig = data.show_batch(6, seed=2, save=tmp_path / "batch.png")
    picked = random_pick(np.ones(len(data.train), dtype=bool), 6, 2)
    axes = shown(fig)
    assert [ax.get_title() for ax in axes] == [data.classes[data.train.labels[i]] for i in picked]
    plain = [ax.images[0].get_array() for ax in axes]
    assert all(a.shape == (96, 96, 3) for a in plain)
    check_png(tmp_path / "batch.png")
    augmented = [ax.images[0].get_array() for ax in shown(data.show_batch(6, "side_on", 2))]
    again = [ax.images[0].get_array() for ax in shown(data.show_batch(6, "side_on", 2))]
    assert all(a.shape == (96, 96, 3) for a in augmented)
    assert all(np.array_equal(a, b) for a, b in zip(augmented, again, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(plain, augmented, strict=True))


# ----------------------------------------------------------------- other images, errors


def test_interpret_files_labelled_by_their_folders(trained, dogscats_demo):
    default = trained.interpret()
    interp = trained.interpret(dogscats_demo / "valid")
    assert interp.targets.tolist() == trained.data.valid.labels
    assert np.allclose(interp.probs, default.probs, atol=2e-3)
    names = [trained.classes[i] for i in trained.data.valid.labels]
    by_name = trained.interpret(trained.data.valid.files[:5], labels=names[:5])
    assert by_name.targets.tolist() == trained.data.valid.labels[:5]


def test_errors_say_what_to_do(trained, hymenoptera_demo, tmp_path):
    interp = trained.interpret()
    with pytest.raises(ValueError, match="not classes"):
        trained.interpret(hymenoptera_demo / "valid" / "ants")
    with pytest.raises(ValueError, match="one label"):
        trained.interpret(trained.data.valid.files[:3], labels=["cats"])
    with pytest.raises(ValueError, match="Unknown label 'cows'"):
        trained.interpret(trained.data.valid.files[:1], labels=["cows"])
    with pytest.raises(ValueError, match="without items"):
        trained.interpret(labels=[0])
    with pytest.raises(ValueError, match=r"Unknown class 'cows'.*'cats', 'dogs'"):
        interp.plot_most_correct("cows")
    with pytest.raises(ValueError, match="positive int"):
        interp.plot_top_losses(0)
    with pytest.raises(ValueError, match=r"\.png"):
        interp.plot_top_losses(2, save=tmp_path / "top.jpg")
    with pytest.raises(ValueError, match="same images"):
        Interpretation(interp.log_probs[:3], interp.targets, interp.items, interp.classes)
