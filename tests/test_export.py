"""Save and load (safetensors + JSON, no pickle), ONNX export, checkpoints and Ctrl-C in fit."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from threeline import ImageData, Learner, __version__, demo_path
from threeline.saving import ModelFileError, file_sha256, model_paths


def _valid_files(learn: Learner, n: int = 10) -> list:
    files = learn.data.valid.files
    return files[:n // 2] + files[-(n - n // 2):]  # both classes


def test_save_writes_safetensors_and_json_and_load_predicts_the_same(trained, tmp_path):
    weights = trained.save(tmp_path / "run" / "model")
    assert weights == tmp_path / "run" / "model.safetensors"
    assert sorted(p.name for p in weights.parent.iterdir()) == ["model.json", "model.safetensors"]
    info = json.loads((tmp_path / "run" / "model.json").read_text())
    assert info["arch"] == "efficientnet_lite0" and info["classes"] == ["cats", "dogs"]
    assert info["input_size"] == [3, 224, 224] and info["threeline_version"] == __version__
    assert info["preprocess"]["mean"] == list(trained.preprocess.mean)
    assert info["preprocess"]["std"] == list(trained.preprocess.std)
    assert len(info["history"]) == len(trained.history)

    files = _valid_files(trained, 6)
    loaded = Learner.load(tmp_path / "run", device="cpu", progress=False)  # the run folder
    assert loaded.classes == trained.classes and loaded.device.type == "cpu"
    np.testing.assert_allclose(loaded.predict(files), trained.predict(files), atol=1e-5)
    assert loaded.history[-1]["valid_loss"] == pytest.approx(trained.history[-1]["valid_loss"])
    for path in (weights, tmp_path / "run" / "model.json"):  # either file names the model too
        again = Learner.load(path, device="cpu", progress=False)
        for key, value in loaded.head.state_dict().items():
            assert torch.equal(again.head.state_dict()[key], value)


def test_load_with_data_validates_like_the_original(trained, tmp_path, dogscats_demo):
    trained.save(tmp_path / "model")
    data = ImageData.from_folder(dogscats_demo)
    loaded = Learner.load(tmp_path / "model", data=data, device="cpu", progress=False)
    assert loaded.validate() == pytest.approx(trained.validate(), abs=1e-5)
    other = ImageData.from_classes(["ants", "bees"], size=224)
    with pytest.raises(ValueError, match=r"classes .* differ"):
        Learner.load(tmp_path / "model", data=other, progress=False)


def test_gpu_layout_loads_on_cpu(trained, tmp_path):
    """A body in the default layout (what CUDA uses; a CPU uses channels_last) saves a file that
    loads anywhere."""
    trained.save(tmp_path / "plain")
    gpu_like = Learner.load(tmp_path / "plain", device="cpu", progress=False)
    gpu_like.body.to(memory_format=torch.contiguous_format)
    gpu_like.device = torch.device("cuda")  # recorded as trained on a GPU
    gpu_like.save(tmp_path / "gpu")
    assert json.loads((tmp_path / "gpu.json").read_text())["trained_on"]["device"] == "cuda"
    loaded = Learner.load(tmp_path / "gpu", device="cpu", progress=False)
    files = _valid_files(trained, 4)
    np.testing.assert_allclose(loaded.predict(files), trained.predict(files), atol=1e-5)


class _Payload:
    """Unpickling this would create a file: the attack a pickle-based model file allows."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_loading_a_crafted_file_never_runs_code(trained, tmp_path):
    trained.save(tmp_path / "model")
    marker = tmp_path / "code-was-run"
    weights, meta = model_paths(tmp_path / "model")
    pickle.loads(pickle.dumps(_Payload(tmp_path / "proof")))  # the payload works if unpickled
    assert (tmp_path / "proof").exists()

    def matching_checksum() -> None:  # an attacker who writes both files
        info = json.loads(meta.read_text())
        info["sha256"] = file_sha256(weights)
        meta.write_text(json.dumps(info))

    weights.write_bytes(pickle.dumps({"head.0.weight": _Payload(marker)}))
    with pytest.raises(ModelFileError, match="does not match the checksum"):
        Learner.load(tmp_path / "model", progress=False)
    matching_checksum()
    with pytest.raises(ModelFileError, match=r"not a readable safetensors file.*never pickle"):
        Learner.load(tmp_path / "model", progress=False)
    torch.save({"head.0.weight": _Payload(marker)}, weights)  # a .pt zip file in disguise
    matching_checksum()
    with pytest.raises(ModelFileError, match="never pickle"):
        Learner.load(tmp_path / "model", progress=False)
    assert not marker.exists()

    trained.save(tmp_path / "model")
    info = json.loads(meta.read_text())
    info["arch"] = "__import__('os').system('touch " + str(marker) + "')"
    meta.write_text(json.dumps(info))
    with pytest.raises(ValueError, match="Unknown architecture"):
        Learner.load(tmp_path / "model", progress=False)
    meta.write_text("{not json")
    with pytest.raises(ModelFileError, match="not valid JSON"):
        Learner.load(tmp_path / "model", progress=False)
    assert not marker.exists()
    with pytest.raises(ModelFileError, match=r"No saved model at .*learn.save"):
        Learner.load(tmp_path / "elsewhere", progress=False)


def test_onnx_export_matches_our_probabilities(trained, tmp_path):
    path = trained.export_onnx(tmp_path / "model.onnx")
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    meta = {p.key: p.value for p in model.metadata_props}
    assert json.loads(meta["classes"]) == ["cats", "dogs"]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    files = _valid_files(trained, 8)
    pixels = np.stack([trained.preprocess(f).numpy() for f in files]).astype(np.float32) / 255
    (probs,) = session.run(None, {"pixels": pixels})
    assert probs.shape == (8, 2)
    np.testing.assert_allclose(probs, np.exp(trained.predict(files)), atol=1e-4)
    assert (probs.argmax(1) == [0, 0, 0, 0, 1, 1, 1, 1]).mean() >= 0.75


@pytest.fixture(scope="module")
def small_data(dogscats_demo) -> ImageData:
    return ImageData.from_folder(dogscats_demo, size=128, batch_size=16)


def test_fit_saves_last_and_best_after_each_epoch(small_data, tmp_path):
    learn = Learner.pretrained("efficientnet_lite0", small_data, precompute=True, device="cpu",
                               progress=False)  # its losses are compared with a CPU reload
    learn.checkpoint_dir = tmp_path / "checkpoints"
    learn.fit(0.05, 3)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["best.json", "best.safetensors", "last.json", "last.safetensors"]
    last = json.loads((tmp_path / "checkpoints" / "last.json").read_text())
    best = json.loads((tmp_path / "checkpoints" / "best.json").read_text())
    losses = [row["valid_loss"] for row in learn.history]
    assert last["epoch"] == 2 and best["epoch"] == int(np.argmin(losses))
    assert best["valid_loss"] == pytest.approx(min(losses))
    reloaded = Learner.load(tmp_path / "checkpoints" / "best", data=small_data, device="cpu",
                            progress=False)
    reloaded.precompute = True
    assert reloaded.validate()["valid_loss"] == pytest.approx(min(losses), rel=1e-4, abs=1e-6)


def test_ctrl_c_goes_back_to_the_last_finished_epoch(small_data, tmp_path, capsys):
    # hidden=512: a head that takes several steps an epoch (a linear one is solved, one step)
    learn = Learner.pretrained("efficientnet_lite0", small_data, precompute=True, progress=False,
                               hidden=512)
    learn.checkpoint_dir = tmp_path / "ck"
    steps = learn.steps_per_epoch()
    total, mid_epoch = 3 * steps, {}

    def schedule(progress: float) -> float:  # interrupts two steps into the second epoch
        if round(progress * total) == steps + 2:
            mid_epoch.update({k: v.clone() for k, v in learn.head.state_dict().items()})
            raise KeyboardInterrupt
        return 1.0

    rows = learn.fit(0.05, 3, schedule=schedule)
    out = capsys.readouterr().out
    assert len(rows) == 1 and len(learn.history) == 1 and learn.interrupted
    assert "after epoch 0" in out and str(tmp_path / "ck" / "last.safetensors") in out
    saved = Learner.load(tmp_path / "ck" / "last", device="cpu", progress=False)
    for key, value in learn.head.state_dict().items():
        assert torch.equal(value.cpu(), saved.head.state_dict()[key]), key
    assert any(not torch.equal(v, learn.head.state_dict()[k]) for k, v in mid_epoch.items())
    learn.fit(0.01, 1)  # still usable
    assert len(learn.history) == 2 and learn.predict(small_data.valid.files[:2]).shape == (2, 2)


def test_a_model_trained_on_a_gpu_loads_and_predicts_on_cpu():
    """tests/data/gpu_trained.* is a small network (mobilenetv3_small_050, 96 px, from random
    weights) trained whole for 40 epochs on the demo photos and saved on an NVIDIA H100 (CUDA,
    bf16 autocast), with its probabilities on eight demo photos; here it runs on the CPU. There
    the photos were decoded by nvjpeg and the network ran in bfloat16: the probabilities
    differed from these by at most 0.017."""
    data = Path(__file__).parent / "data"
    recorded = json.loads((data / "gpu_predictions.json").read_text())
    assert json.loads((data / "gpu_trained.json").read_text())["trained_on"]["device"] == "cuda"
    learn = Learner.load(data / "gpu_trained", device="cpu", progress=False)
    files = [demo_path("dogscats") / f for f in recorded["files"]]
    expected = np.asarray(recorded["probs"])  # (8, 2), far from uniform: the network learned
    assert expected.max() > 0.99 and np.ptp(expected[:, 0]) > 0.9
    probs = np.exp(learn.predict(files))
    np.testing.assert_allclose(probs, expected, atol=0.03)
    assert (probs.argmax(1) == expected.argmax(1)).all()
    with torch.no_grad():
        learn.head[-1].bias[0] += 0.5  # the check is sharp enough to see a small change
    assert np.abs(np.exp(learn.predict(files)) - expected).max() > 0.03
