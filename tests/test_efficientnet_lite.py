"""The registered backbones are built without timm, and are timm's networks all the same: the
same keys in the same order, the same preprocessing, the same stages, and the same activations
from the same ImageNet weights on real photos."""

from __future__ import annotations

import pytest
import timm
import torch
from timm.models import group_parameters

from threeline.models.efficientnet_lite import efficientnet_lite
from threeline.vision.model import Body, body_groups
from threeline.vision.transforms import Preprocess, normalize
from threeline.vision.weights import REGISTRY, create_backbone, weights_file

LITES = sorted(REGISTRY)


def _timm(name: str, **kwargs) -> torch.nn.Module:
    return timm.create_model(REGISTRY[name].timm_name, **kwargs)


@pytest.mark.parametrize("name", LITES)
@pytest.mark.parametrize("num_classes", [0, 1000])
def test_keys_and_shapes_are_timms_in_order(name, num_classes):
    ours = efficientnet_lite(REGISTRY[name].lite, num_classes).state_dict()
    theirs = _timm(name, num_classes=num_classes).state_dict()
    assert list(ours) == list(theirs)
    assert [v.shape for v in ours.values()] == [v.shape for v in theirs.values()]


@pytest.mark.parametrize("name", LITES)
def test_same_weights_give_timms_activations_on_real_photos(name, dogscats_demo):
    """Through the learner's own loading path (converted ImageNet weights), on demo photos at
    the registry's size and at an odd size (the "same" padding differs there)."""
    ours, config, _ = create_backbone(name)
    theirs = _timm(name, num_classes=0, global_pool="", pretrained=True,
                   pretrained_cfg_overlay=dict(file=str(weights_file(REGISTRY[name])))).eval()
    ours.eval()
    files = sorted((dogscats_demo / "valid" / "dogs").iterdir())[:4]
    for size in (config["input_size"][1], 193):
        prep = Preprocess.from_config(config, size=size)
        batch = normalize(torch.stack([prep(f) for f in files]), prep.mean, prep.std)
        with torch.inference_mode():
            a, b = ours.forward_features(batch), theirs.forward_features(batch)
        assert a.shape == b.shape and a.abs().max() > 1
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(Body(ours)(batch), Body(theirs)(batch), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", LITES)
def test_preprocessing_is_the_weights_config(name):
    _, config, _ = create_backbone(name, pretrained=False)
    expected = timm.data.resolve_data_config({}, model=_timm(name, num_classes=0))
    expected["native_size"] = expected["input_size"][-1]  # what it was trained at
    if REGISTRY[name].size is not None:  # a size chosen by measurement (lite2: 300)
        expected["input_size"] = (3, REGISTRY[name].size, REGISTRY[name].size)
    assert config == expected


@pytest.mark.parametrize("name", LITES)
def test_layer_groups_are_timms_stages(name):
    """Discriminative learning rates split the body where they did with timm's network."""
    ours = efficientnet_lite(REGISTRY[name].lite)
    theirs = _timm(name, num_classes=0, global_pool="")
    named = {id(p): n for n, p in ours.named_parameters()}
    mine = [[named[id(p)] for p in g] for g in body_groups(Body(ours))]
    stages = list(group_parameters(theirs, theirs.group_matcher(coarse=True)).values())
    cut = round(len(stages) / 2)
    assert mine == [[n for s in stages[:cut] for n in s], [n for s in stages[cut:] for n in s]]
