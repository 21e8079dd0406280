"""The three lines end to end on real photos: accuracy, the activation cache, predictions."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from conftest import shared_dataset
from threeline import ImageData, Learner


def _count_backbone_images(learn: Learner) -> list[int]:
    """Instrument (not replace) the real backbone: count the images it processes."""
    seen = [0]
    learn.body.register_forward_hook(lambda m, args, out: seen.__setitem__(
        0, seen[0] + args[0].shape[0]))
    return seen


def test_three_lines_on_ants_and_bees_reach_90_percent_on_cpu():
    data = ImageData.from_folder(shared_dataset("hymenoptera"), size=224)
    learn = Learner.pretrained("efficientnet_lite2", data, precompute=True, device="cpu",
                               progress=False)
    rows = learn.fit(0.01, 3)
    assert len(rows) == 3 and set(rows[0]) >= {"train_loss", "valid_loss", "accuracy", "time"}
    assert rows[-1]["accuracy"] >= 0.90, rows


def test_fit_records_history_and_learns(trained):
    assert trained.history[-1]["accuracy"] >= 0.9
    assert trained.history[-1]["valid_loss"] < trained.history[0]["valid_loss"] + 0.05


def test_cache_is_reused_then_rebuilt_when_a_file_changes(dogscats_demo, tmp_path):
    root = tmp_path / "photos"
    shutil.copytree(dogscats_demo, root)
    cache = tmp_path / "cache"

    def learner() -> tuple[Learner, list[int]]:
        data = ImageData.from_folder(root, size=96)
        learn = Learner.pretrained("efficientnet_lite0", data, precompute=True,
                                   cache_dir=cache, progress=False)
        return learn, _count_backbone_images(learn)

    first, seen = learner()
    first.fit(0.01, 1)
    assert seen[0] == 200  # 80 training photos, also mirrored for the solved head, 40 valid
    assert len(list((cache / "features").glob("*.safetensors"))) == 2

    second, seen = learner()
    second.fit(0.01, 1)
    assert seen[0] == 0, "the second run must read the cache, not run the backbone"
    assert torch.equal(first.features("train")[0], second.features("train")[0])

    victim = sorted((root / "valid" / "dogs").iterdir())[0]
    Image.open(victim).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(victim)
    third, seen = learner()
    third.fit(0.01, 1)
    assert seen[0] == 40, "only the changed split (valid) is recomputed"

    (root / "train" / "cats" / "extra.jpg").write_bytes(victim.read_bytes())
    fourth, seen = learner()
    fourth.fit(0.01, 1)
    assert seen[0] == 162  # the new training split, and its mirror


def test_a_solved_head_also_learns_from_the_training_photos_mirrored(dogscats_demo, tmp_path):
    """The mirrored activations are the body's on each photo flipped left to right (cached
    with the split, read back by the next run)."""
    from threeline.vision import features

    data = ImageData.from_folder(dogscats_demo, size=96)
    learn = Learner.pretrained("efficientnet_lite0", data, precompute=True,
                               cache_dir=tmp_path, progress=False)
    learn.fit(0.01, 1)
    x, y = learn._cached["train"]
    mirrored, y_mirrored = learn._cached[features.MIRRORED]
    assert mirrored.shape == x.shape and torch.equal(y, y_mirrored) and len(x) == 80
    from threeline.vision import batches

    photo = next(iter(batches.image_batches(learn, data.train.files[5:6], None, False)))[0]
    with torch.no_grad():  # the preprocessed photo (1, 3, 96, 96), mirrored, through the body
        direct = features.inference_body(learn)(photo.flip(-1))[0]  # (D,)
    assert torch.allclose(direct.bfloat16().float(), mirrored[5].float(), rtol=0.02, atol=0.02)
    assert not torch.allclose(mirrored[5].float(), x[5].float(), rtol=0.02, atol=0.02)
    again = Learner.pretrained("efficientnet_lite0", ImageData.from_folder(dogscats_demo, size=96),
                               precompute=True, cache_dir=tmp_path, progress=False)
    again.features("train")
    assert torch.equal(again._cached[features.MIRRORED][0].cpu(), mirrored.cpu())


def test_fine_tunes_first_stage_solves_on_the_photos_alone(dogscats_demo, tmp_path):
    """fine_tune's head only starts the whole network's training: no mirrored pass there."""
    learn = Learner.pretrained("efficientnet_lite0", ImageData.from_folder(dogscats_demo, size=64),
                               cache_dir=tmp_path, progress=False)
    learn.checkpoint_dir = False
    learn.fine_tune(1, freeze_epochs=1)
    stored = [load_file(f) for f in (tmp_path / "features").glob("*.safetensors")]
    assert sorted(len(t["features"]) for t in stored) == [40, 80]
    assert not any("mirrored" in t for t in stored)
    learn.freeze()
    learn.precompute = True  # the three lines' fit on the same learner does mirror
    learn.fit(0.01, 1)
    assert learn.mirrors_training_images
    assert any(len(t.get("mirrored", [])) == 80
               for t in map(load_file, (tmp_path / "features").glob("*.safetensors")))


def test_the_mirror_images_already_in_memory_stay_out_when_not_wanted(dogscats_demo, tmp_path):
    """After the three lines (mirror images in memory), a solve that must not use them (as in
    fine_tune's first stage) standardizes by the photos alone; the next three lines use both."""
    learn = Learner.pretrained("efficientnet_lite0", ImageData.from_folder(dogscats_demo, size=64),
                               precompute=True, cache_dir=tmp_path, progress=False)
    learn.fit(0.01, 1)
    x = learn.features("train")[0]  # (80, D)
    mirrored = learn._cached["train_mirrored"][0].float()
    norm = learn.head[0]
    assert torch.allclose(norm.running_mean, torch.cat([x, mirrored]).mean(0), atol=1e-4)
    learn._mirror_train = False
    learn.fit(0.01, 1)
    assert torch.allclose(norm.running_mean, x.mean(0), atol=1e-4)
    assert not torch.allclose(x.mean(0), torch.cat([x, mirrored]).mean(0), atol=1e-4)


def test_killed_precompute_leaves_no_corrupt_cache(dogscats_demo, tmp_path):
    cache = tmp_path / "cache"
    script = (
        "import sys; from threeline import ImageData, Learner;"
        "data = ImageData.from_folder(sys.argv[1], size=128, batch_size=8);"
        "learn = Learner.pretrained('efficientnet_lite0', data, precompute=True,"
        " cache_dir=sys.argv[2]);"
        "[learn.features('train') for _ in range(1)]"
    )
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-c", script, str(dogscats_demo), str(cache)],
                            env=env, stderr=subprocess.PIPE, text=True, start_new_session=True)
    for line in proc.stderr:  # wait until the backbone is busy, then kill everything
        if "precompute train" in line:
            break
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    for f in (cache / "features").glob("*.safetensors") if (cache / "features").exists() else []:
        load_file(str(f))  # any finished file must be whole
    data = ImageData.from_folder(dogscats_demo, size=128, batch_size=8)
    learn = Learner.pretrained("efficientnet_lite0", data, precompute=True, cache_dir=cache,
                               progress=False)
    x, _ = learn.features("train")
    assert x.shape == (80, learn.body.out_features) and torch.isfinite(x).all()


def test_predict_gives_log_probabilities_matching_new_files(trained):
    log_preds = trained.predict()
    assert log_preds.shape == (40, 2) and log_preds.dtype == np.float32
    assert np.allclose(np.exp(log_preds).sum(1), 1, atol=1e-5)
    files = trained.data.valid.files
    on_files = trained.predict(files)
    assert np.allclose(np.exp(on_files), np.exp(log_preds), atol=1e-3)
    on_images = trained.predict([Image.open(f) for f in files[:5]])
    assert np.allclose(on_images, on_files[:5], atol=1e-4)
    on_folder = trained.predict(files[0].parent)
    assert on_folder.shape == (20, 2)


def test_same_seed_same_training(dogscats_demo):
    data = ImageData.from_folder(dogscats_demo, size=96)
    runs = []
    for _ in range(2):
        learn = Learner.pretrained("efficientnet_lite0", data, precompute=True, seed=3,
                                   progress=False)
        runs.append([r["train_loss"] for r in learn.fit(0.01, 2)])
    assert runs[0] == runs[1]


def test_errors_are_clear(dogscats_demo, trained):
    data = ImageData.from_folder(dogscats_demo)
    with pytest.raises(TypeError, match="data must be an ImageData"):
        Learner.pretrained("efficientnet_lite0", str(dogscats_demo))
    with pytest.raises(ValueError, match="lr must be a positive number"):
        trained.fit(-1, 1)
    with pytest.raises(FileNotFoundError, match="neither an image file nor a folder"):
        trained.predict(["no/such/file.jpg"])
    assert data.classes == trained.classes
    # dropout 0.5 used to build a head whose last dropout was 1.0: it trained to 50 % and beyond
    # without a word
    for dropout in (0.5, -0.1, "0.2"):
        with pytest.raises(ValueError, match=r"dropout must be at least 0 and below 0.5"):
            Learner.pretrained("efficientnet_lite0", data, dropout=dropout)
    with pytest.raises(ValueError, match="hidden must be a whole number >= 0"):
        Learner.pretrained("efficientnet_lite0", data, hidden=-1)


def test_progress_lines_not_bars_when_output_is_not_a_terminal(dogscats_demo, tmp_path):
    script = (
        "import sys; from threeline import ImageData, Learner;"
        "data = ImageData.from_folder(sys.argv[1], size=64);"
        "Learner.pretrained('efficientnet_lite0', data, precompute=True,"
        " cache_dir=sys.argv[2]).fit(0.01, 2)"
    )
    result = subprocess.run([sys.executable, "-c", script, str(dogscats_demo), str(tmp_path)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "\r" not in result.stdout + result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[0].split() == ["epoch", "train_loss", "valid_loss", "accuracy", "time"]
    assert [line.split()[0] for line in lines[1:]] == ["0", "1"]
    assert "precompute train + valid: 120/120 img" in result.stderr
