"""The backbone registry: offline ImageNet weights that really classify, hub weights, errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import timm
import torch
from safetensors.torch import save_file

from threeline import ImageData, Learner, available_models
from threeline.vision.transforms import Preprocess, normalize
from threeline.vision.weights import REGISTRY, create_backbone, resolve, weights_file

CAT_CLASSES = range(281, 286)  # ImageNet: tabby, tiger cat, Persian, Siamese, Egyptian cat
DOG_CLASSES = range(151, 269)  # ImageNet: the dog breeds


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_offline_weights_classify_imagenet_cats_and_dogs(name, dogscats_demo):
    """The converted weights are the real ImageNet ones: most demo photos land on the right
    ImageNet super-class (a wrong key mapping would give noise)."""
    spec = resolve(name)
    path = weights_file(spec)
    assert path.suffix == ".safetensors" and path.exists()
    net = timm.create_model(spec.timm_name, pretrained=True,
                            pretrained_cfg_overlay=dict(file=str(path))).eval()
    config = timm.data.resolve_data_config({}, model=net)
    prep = Preprocess.from_config(config)
    hits = 0
    for cls, wanted in (("cats", CAT_CLASSES), ("dogs", DOG_CLASSES)):
        files = sorted((dogscats_demo / "valid" / cls).iterdir())[:10]
        batch = normalize(torch.stack([prep(f) for f in files]), prep.mean, prep.std)
        with torch.inference_mode():
            top = net(batch).argmax(1)  # (10,)
        hits += sum(int(t) in wanted for t in top)
    assert hits >= 16, f"only {hits}/20 demo photos classified as the right ImageNet animal"


def test_weights_conversion_is_cached(tmp_path):
    spec = resolve("efficientnet_lite0")
    first = weights_file(spec, tmp_path)
    mtime = first.stat().st_mtime_ns
    assert weights_file(spec, tmp_path) == first and first.stat().st_mtime_ns == mtime
    assert not list(first.parent.glob("*.tmp"))


def test_input_size_and_normalization_come_from_the_weights_config():
    """From the weights' timm config, except a size the registry names (lite2: trained at 260,
    measured better at 300)."""
    for name, size in (("efficientnet_lite0", 224), ("efficientnet_lite2", 300)):
        _, config, _ = create_backbone(name)
        assert config["input_size"] == (3, size, size)
        assert config["mean"] == (0.5, 0.5, 0.5)
    net, config, _ = create_backbone("efficientnet_lite2")
    assert net.config.size == 260  # the size it was trained at
    assert resolve("efficientnet_lite2").size == 300 and resolve("efficientnet_lite0").size is None


def test_unknown_architecture_lists_the_available_ones(dogscats_demo):
    data = ImageData.from_folder(dogscats_demo)
    with pytest.raises(ValueError, match="Unknown architecture 'resnet_9000'") as err:
        Learner.pretrained("resnet_9000", data)
    for name in available_models():
        assert name in str(err.value)


def test_any_timm_model_with_a_local_weights_file(dogscats_demo, tmp_path):
    reference = timm.create_model("resnet18", pretrained=False, num_classes=0)
    path = tmp_path / "resnet18.safetensors"
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(path))
    learn = Learner.pretrained("resnet18", ImageData.from_folder(dogscats_demo, size=64),
                               weights=path, progress=False)
    loaded = learn.body.features.state_dict()  # on the learner's device, which may be a GPU
    assert all(torch.equal(loaded[k].cpu(), v) for k, v in reference.state_dict().items())
    assert learn.preprocess.mean == (0.485, 0.456, 0.406)  # from resnet18's own config


def test_hub_weights_load_through_timm_from_the_hub_cache(tmp_path):
    """The online path, with no network: timm's hub download served from a local hub cache."""
    reference = timm.create_model("resnet18", pretrained=False)
    repo_id = reference.pretrained_cfg["hf_hub_id"]
    repo = tmp_path / ("models--" + repo_id.replace("/", "--"))
    commit = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    weights = {k: v.contiguous() for k, v in reference.state_dict().items()}
    save_file(weights, str(repo / "snapshots" / commit / "model.safetensors"))
    script = (
        "import json, sys, torch; from threeline.vision.weights import create_backbone;"
        "net, config, wid = create_backbone('resnet18');"
        "torch.save(net.state_dict(), sys.argv[1]);"
        "print(json.dumps({'id': wid, 'size': config['input_size']}))"
    )
    out = tmp_path / "loaded.pt"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path)}
    result = subprocess.run([sys.executable, "-c", script, str(out)], env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    info = json.loads(result.stdout.strip().splitlines()[-1])
    assert info["id"] == "resnet18:hub"
    loaded = torch.load(out, weights_only=True)
    assert loaded.keys() <= weights.keys() and len(loaded) > 50
    assert all(torch.equal(loaded[k], weights[k]) for k in loaded)
