"""Multi-label images on real satellite chips: labels from a CSV, BinaryCrossEntropy picked from
the data, F2 in the table, thresholds tuned and saved, predict/tta/ONNX, interpretation."""

from __future__ import annotations

import contextlib
import io
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import shared_dataset
from threeline import ImageData, Learner
from threeline.losses import BinaryCrossEntropy, CrossEntropy
from threeline.vision import label_scores as scores
from threeline.vision import labels as L
from threeline.vision import multilabel as ML
from threeline.vision import tables as T

N_CHIPS = 200


def _subset(root: Path, n: int, with_ext: bool = False) -> Path:
    """The first ``n`` rows of landcover's labels.csv, with links to their chips."""
    source = shared_dataset("landcover")
    lines = (source / "labels.csv").read_text().splitlines()
    (root / "images").mkdir(parents=True)
    rows = [lines[0]]
    for line in lines[1:n + 1]:
        name, tags = line.split(",")
        (root / "images" / f"{name}.jpg").symlink_to(source / "images" / f"{name}.jpg")
        rows.append(f"{name}.jpg,{tags}" if with_ext else line)
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root


def _csv_tags(root: Path) -> dict[str, set[str]]:
    rows = (root / "labels.csv").read_text().splitlines()[1:]
    return {r.split(",")[0].removesuffix(".jpg"): set(r.split(",")[1].split()) for r in rows}


@pytest.fixture(scope="module")
def chips(tmp_path_factory) -> Path:
    return _subset(tmp_path_factory.mktemp("landcover") / "lc", N_CHIPS)


@pytest.fixture(scope="module")
def learn(chips) -> Learner:
    data = ImageData.from_csv(chips, "labels.csv", folder="images", label_delim=" ", size=224,
                              batch_size=32)
    learn = Learner.pretrained("efficientnet_lite0", data, precompute=True, device="cpu",
                               progress=False)
    learn.checkpoint_dir = False
    learn.fit(0.01, 3)
    return learn


# ----------------------------------------------------------------- reading labels


def test_from_csv_gives_multi_hot_rows_that_match_the_csv_and_a_seeded_split(chips):
    data = ImageData.from_csv(chips, "labels.csv", folder="images", label_delim=" ")
    assert data.multi_label and data.classes == ["builtup", "farmland", "forest", "meadow",
                                                 "water"]
    assert len(data.valid) == round(0.2 * N_CHIPS)
    assert len(data.train) == N_CHIPS - len(data.valid)
    tags = _csv_tags(chips)
    for split in (data.train, data.valid):
        for path, row in zip(split.files, split.labels, strict=True):
            assert set(T.label_names(data.classes, row)) == tags[path.stem]
    again = ImageData.from_csv(chips, "labels.csv", folder="images", label_delim=" ")
    other = ImageData.from_csv(chips, "labels.csv", folder="images", label_delim=" ", seed=1)
    assert again.valid.files == data.valid.files and other.valid.files != data.valid.files
    assert "builtup" in repr(data) and not data.skipped


def test_names_with_extensions_a_dataframe_and_one_hot_columns_give_the_same_labels(tmp_path):
    pd = pytest.importorskip("pandas")
    root = _subset(tmp_path / "lc", 60, with_ext=True)
    base = ImageData.from_csv(root, "labels.csv", folder="images", label_delim=" ")
    frame = pd.read_csv(root / "labels.csv")
    from_df = ImageData.from_df(frame, root, "images", " ")
    hot = frame[["image_name"]].copy()
    for name in base.classes:
        hot[name] = frame["tags"].str.split().apply(lambda tags, n=name: int(n in tags))
    hot.to_csv(root / "onehot.csv", index=False)
    from_hot = ImageData.from_csv(root, "onehot.csv", folder="images")
    for other in (from_df, from_hot):
        assert other.classes == base.classes and other.multi_label
        assert other.train.files == base.train.files and other.train.labels == base.train.labels


def test_single_label_csv_gets_cross_entropy(tmp_path):
    root = _subset(tmp_path / "lc", 80)
    lines = (root / "labels.csv").read_text().splitlines()
    single = [lines[0]] + [line for line in lines[1:] if " " not in line.split(",")[1]]
    (root / "single.csv").write_text("\n".join(single) + "\n")
    data = ImageData.from_csv(root, "single.csv", folder="images")
    assert not data.multi_label and isinstance(data.train.labels[0], int)
    assert sum(data.train.counts(data.classes).values()) == len(data.train)
    learn = Learner.pretrained("efficientnet_lite0", data, device="cpu", progress=False)
    assert isinstance(learn.loss, CrossEntropy) and not learn.multi_label
    with pytest.raises(ValueError, match="single-label"):
        Learner.pretrained("efficientnet_lite0", data, device="cpu", loss=BinaryCrossEntropy())


def test_rows_without_files_and_files_without_rows_are_counted_listed_and_skipped(tmp_path):
    root = _subset(tmp_path / "lc", 50)
    with open(root / "labels.csv", "a") as f:
        f.write("ghost1,water\nghost2,forest farmland\n")
    extra = root / "images" / "stray.jpg"
    shutil.copy(root / "images" / "s0000.jpg", extra)
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        data = ImageData.from_csv(root, "labels.csv", folder="images", label_delim=" ")
    line = err.getvalue()
    assert "2 of 52 rows name no image" in line and "ghost1" in line and "ghost2" in line
    assert "1 of 51 images" in line and "stray.jpg" in line
    assert len(data.train) + len(data.valid) == 50
    reasons = {p.name: r for p, r in data.skipped.items()}
    assert reasons["stray.jpg"].startswith("no row") and reasons["ghost1"].startswith("no such")


@pytest.mark.parametrize("content, kwargs, message", [
    ("image_name,tags\ns0000,water\ns0000,forest\n", {}, "twice"),
    ("image_name,tags\nnope1,water\nnope2,forest\n", {}, "None of the 2 images"),
    ("image_name,tags\ns0000,water\n", {"label_col": "labels"}, "not a column"),
    ("image_name,water,forest\ns0000,1,maybe\n", {}, "Cannot tell which column"),
    ("image_name,water,forest\ns0000,1,maybe\n", {"label_col": ["water", "forest"]},
     "0 or 1"),
    ("image_name,tags\ns0000,water\ns0001\n", {}, "different number of fields"),
])
def test_bad_tables_say_what_is_wrong(tmp_path, content, kwargs, message):
    root = _subset(tmp_path / "lc", 4)
    (root / "bad.csv").write_text(content)
    with pytest.raises(ValueError, match=message):
        ImageData.from_csv(root, "bad.csv", folder="images", label_delim=" ", **kwargs)


def test_missing_csv_or_folder_is_a_clear_error(tmp_path):
    root = _subset(tmp_path / "lc", 4)
    with pytest.raises(FileNotFoundError, match="labels file"):
        ImageData.from_csv(root, "nope.csv", folder="images")
    with pytest.raises(FileNotFoundError, match="image folder"):
        ImageData.from_csv(root, "labels.csv", folder="pictures")


def test_cli_data_guesses_the_tag_separator(chips):
    data = L.cli_data(chips, chips / "labels.csv", size=224)
    assert data.multi_label and len(data.classes) == 5


# ----------------------------------------------------------------- training and using


def test_fit_shows_f2_and_beats_predicting_every_label(learn):
    row = learn.history[-1]
    assert isinstance(learn.loss, BinaryCrossEntropy) and learn.multi_label
    assert {"f2", "accuracy_multi"} <= set(row)
    targets = np.asarray(learn.data.valid.labels)
    every_label = scores.fbeta_samples(np.ones(targets.shape), targets, 0.5)
    assert row["f2"] >= every_label + 0.1, (row, every_label)
    assert row["accuracy_multi"] >= 0.8


def test_tuned_thresholds_are_used_by_the_table_and_saved_with_the_model(learn, tmp_path):
    probs = learn.predict()  # (N, L) independent probabilities
    targets = np.asarray(learn.data.valid.labels)
    assert probs.shape == targets.shape and probs.min() >= 0 and probs.max() <= 1
    at_half = scores.fbeta_samples(probs, targets, 0.5)
    old = learn.loss.thresholds
    try:
        tuned = learn.tune_thresholds()
        assert tuned.shape == (5,) and np.allclose(learn.loss.thresholds.numpy(), tuned)
        assert scores.fbeta_samples(probs, targets, tuned) >= at_half
        assert learn.validate()["f2"] == pytest.approx(scores.fbeta_samples(probs, targets, tuned),
                                                       abs=1e-5)
        assert learn.describe()["loss"]["thresholds"] == pytest.approx(tuned.tolist())
        learn.save(tmp_path / "model")
        loaded = Learner.load(tmp_path / "model", device="cpu", progress=False)
        assert loaded.multi_label and np.allclose(loaded.loss.thresholds.numpy(), tuned)
        chip = learn.data.valid.files[:2]
        assert np.allclose(loaded.predict(chip), learn.predict(chip), atol=1e-5)
        rows = ML.prediction_rows(loaded, chip, loaded.predict(chip))
        above = scores.decide(loaded.predict(chip), tuned)
        assert {(r[0], r[1]) for r in rows if r[1] != "(none)"} == {
            (str(chip[i]), learn.classes[j]) for i, j in zip(*np.nonzero(above), strict=True)}
    finally:
        learn.loss.thresholds = old


def test_predict_and_tta_give_independent_probabilities(learn):
    one = learn.predict([str(learn.data.valid.files[0])])
    assert one.shape == (1, 5) and one.min() >= 0 and one.max() <= 1
    assert not np.allclose(one.sum(1), 1)
    files = learn.data.valid.files[:12]
    averaged = learn.tta(n=1, items=files)
    assert averaged.shape == (12, 5) and averaged.min() >= 0 and averaged.max() <= 1
    assert np.corrcoef(averaged.ravel(), learn.predict(files).ravel())[0, 1] > 0.9


def test_lr_find_runs_on_multi_label_activations(learn):
    before = {k: v.clone() for k, v in learn.head.state_dict().items()}
    result = learn.lr_find(num_it=20)
    assert np.isfinite(result.suggestion)
    assert all(torch.equal(before[k], v) for k, v in learn.head.state_dict().items())


def test_onnx_export_returns_the_sigmoid_probabilities(learn, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    path = learn.export_onnx(tmp_path / "chips.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    files = learn.data.valid.files[:3]
    pixels = torch.stack([learn.preprocess(f) for f in files]).float().numpy() / 255
    (out,) = session.run(None, {"pixels": pixels})
    assert np.allclose(out, learn.predict(files), atol=2e-3)
    meta = session.get_modelmeta().custom_metadata_map
    assert "sigmoid" in meta["output"] and "binary_cross_entropy" in meta["threeline"]


def test_fine_tune_with_top_down_trains_the_whole_network(chips):
    data = ImageData.from_csv(chips, "labels.csv", folder="images", label_delim=" ", size=64,
                              batch_size=24)
    for split, n in ((data.train, 48), (data.valid, 16)):
        split.files, split.labels = split.files[:n], split.labels[:n]
    learn = Learner.pretrained("efficientnet_lite0", data, device="cpu", progress=False,
                               augment="top_down")
    learn.checkpoint_dir = False
    assert learn.augment.dihedral and learn.augment.max_lighting > 0
    body = next(learn.body.parameters()).detach().clone()
    rows = learn.fine_tune(1, freeze_epochs=1)
    assert len(rows) == 2 and all(np.isfinite(r["f2"]) for r in rows)
    assert not torch.equal(body, next(learn.body.parameters()))
    assert learn.tta_views == 4 and np.isfinite(learn.history[-1]["tta_f2"])  # a small set
    assert np.allclose(learn.predict(), learn.tta(4), atol=1e-6)  # (N, L) probabilities


# ----------------------------------------------------------------- interpretation


def test_interpretation_counts_agree_with_the_labels(learn, tmp_path):
    interp = learn.interpret()
    assert isinstance(interp, ML.MultiLabelInterpretation)
    assert len(interp) == len(learn.data.valid)
    targets = np.asarray(learn.data.valid.labels)
    per_label = interp.per_label()
    for j, name in enumerate(learn.classes):
        m = per_label[name]
        assert m["support"] == targets[:, j].sum()
        assert m["tp"] + m["fp"] + m["fn"] + m["tn"] == len(targets)
    assert np.array_equal(np.diag(interp.cooccurrence()), targets.sum(0))
    order = interp.most_wrong()
    assert (np.diff(interp.wrong[order]) <= 0).all()
    figures = {"most_wrong": interp.plot_most_wrong(4),
               "top_losses": interp.plot_top_losses(4),
               "counts": interp.plot_confusion_counts(),
               "cooccurrence": interp.plot_cooccurrence(),
               "heatmaps": interp.plot_heatmaps(2)}
    for name, fig in figures.items():
        path = tmp_path / f"{name}.png"
        fig.savefig(path)
        assert path.stat().st_size > 1000, name
    interp.plot_most_wrong(2, save=tmp_path / "saved.png")
    assert (tmp_path / "saved.png").stat().st_size > 1000


def test_interpretation_of_new_images_takes_label_names(learn):
    files = learn.data.valid.files[:3]
    names = [T.label_names(learn.classes, row) for row in learn.data.valid.labels[:3]]
    interp = learn.interpret(files, names)
    assert np.array_equal(interp.targets, np.asarray(learn.data.valid.labels[:3]))
    with pytest.raises(ValueError, match="Unknown label"):
        learn.interpret(files, [["lava"]] * 3)


def test_heatmap_method_explains_a_named_label(learn):
    maps = learn.heatmap([learn.data.valid.files[0]], label="water")
    assert maps.shape == (1, 224, 224) and maps.min() >= 0 and maps.max() <= 1


def test_thresholds_are_tuned_per_label_on_arrays():
    rng = np.random.default_rng(0)
    targets = (rng.random((400, 3)) < [0.5, 0.2, 0.1]).astype(int)
    # label 2's probabilities are shifted low: its best threshold is lower than the others'
    probs = np.clip(targets * 0.6 + rng.random((400, 3)) * 0.4 - [0, 0, 0.35], 0.001, 0.999)
    tuned = scores.tune_thresholds(probs, targets)
    assert tuned[2] < tuned[0]
    assert scores.fbeta_samples(probs, targets, tuned) >= scores.fbeta_samples(probs, targets, 0.5)
    assert scores.fbeta_samples(probs, targets, tuned) == pytest.approx(1.0)



# ----------------------------------------------------------------- the command line


def test_cli_trains_from_a_csv_and_predicts_every_label_above_its_threshold(chips, tmp_path,
                                                                           capsys):
    from threeline.cli import main

    out = tmp_path / "run"
    assert main(["train", str(chips), "--csv", "labels.csv", "--arch", "efficientnet_lite0",
                 "--device", "cpu", "--batch-size", "32", "--epochs", "3", "--out",
                 str(out)]) == 0
    said = capsys.readouterr().out
    assert "f2" in said and "Thresholds tuned on the validation set" in said
    learn = Learner.load(out, device="cpu")
    assert isinstance(learn.loss, BinaryCrossEntropy)
    thresholds = ML.thresholds_of(learn)
    assert not np.allclose(thresholds, 0.5)  # tuned, and saved with the model
    assert (out / "label_confusion.png").stat().st_size > 0
    tags = _csv_tags(chips)
    photos = sorted((chips / "images").iterdir())[:6]
    assert main(["predict", str(out), *map(str, photos), "--csv"]) == 0
    rows = [line.split(",") for line in capsys.readouterr().out.splitlines()[1:]]
    probs = learn.predict(photos)  # (6, L) independent probabilities
    for photo, p in zip(photos, probs, strict=True):
        printed = {r[1] for r in rows if r[0] == str(photo)}
        above = {c for c, pc, t in zip(learn.classes, p, thresholds, strict=True) if pc > t}
        assert printed == (above or {"(none)"})  # every label above its threshold, no other
    hits = sum(len({r[1] for r in rows if r[0] == str(ph)} & tags[ph.stem]) for ph in photos)
    assert hits >= 4  # the printed tags are mostly the chips' own
