"""Grad-CAM heat maps, checked against a direct computation with hooks on the whole network."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from threeline.vision.heatmap import grad_cam, heatmap


def _photos(root, n: int = 2) -> list:
    return [sorted((root / "valid" / c).glob("*.jpg"))[0] for c in ("cats", "dogs")][:n]


def _hooked_cam(learn, photo, target: int | None) -> tuple[np.ndarray, int, np.ndarray]:
    """Grad-CAM the textbook way: the whole network run from the photo with gradients, a hook
    on the body's last feature maps, backward from one class score."""
    body, head = learn.body, learn.head
    body.eval()
    head.eval()
    p = learn.preprocess
    pixels = p(photo)[None].float() / 255  # (1, 3, S, S)
    mean = torch.tensor(p.mean).view(1, 3, 1, 1)
    std = torch.tensor(p.std).view(1, 3, 1, 1)
    x = ((pixels - mean) / std).requires_grad_(True)  # so the frozen body is in the graph
    features = body.features.forward_features(x)  # (1, F, h, w): the body's last layer
    saved = {}
    features.register_hook(lambda grad: saved.__setitem__("grad", grad))
    logits = head(body.pool(features))  # (1, C): body(x) is pool(forward_features(x))
    target = int(logits.argmax()) if target is None else target
    logits[0, target].backward()
    maps, grads = features.detach(), saved["grad"]  # (1, F, h, w) each
    weights = grads.mean(dim=(2, 3))[0]  # (F,)
    cam = torch.relu(torch.einsum("f,fhw->hw", weights, maps[0]))  # (h, w)
    up = F.interpolate(cam[None, None], size=(p.size, p.size), mode="bilinear",
                       align_corners=False)[0, 0]
    return (up / up.max()).numpy(), target, F.log_softmax(logits.detach(), 1)[0].numpy()


def test_heatmap_matches_hooked_gradients(trained, dogscats_demo):
    photos = _photos(dogscats_demo)
    maps, log_probs = grad_cam(trained, photos)
    assert maps.shape == (2, 224, 224) and maps.dtype == np.float32
    assert maps.min() >= 0 and np.allclose(maps.max(axis=(1, 2)), 1)
    for i, photo in enumerate(photos):
        expected, top, expected_log_probs = _hooked_cam(trained, photo, None)
        assert top == int(log_probs[i].argmax())
        np.testing.assert_allclose(log_probs[i], expected_log_probs, atol=1e-4)
        np.testing.assert_allclose(maps[i], expected, atol=2e-3)
    # another class, named: the map of the other label follows the same definition
    other = trained.classes[1 - int(log_probs[0].argmax())]
    expected, _, _ = _hooked_cam(trained, photos[0], trained.classes.index(other))
    np.testing.assert_allclose(heatmap(trained, photos[0], label=other)[0], expected, atol=2e-3)


def test_heatmap_batched_equals_one_by_one_and_checks_labels(trained, dogscats_demo):
    photos = _photos(dogscats_demo)
    modes = (trained.body.training, trained.head.training)
    images = [Image.open(p) for p in photos]  # PIL images work like files
    both = heatmap(trained, images, label=[0, "dogs"])
    for i, photo in enumerate(photos):
        alone = heatmap(trained, photo, label=[0, "dogs"][i])
        np.testing.assert_allclose(both[i], alone[0], atol=1e-4)
    assert not np.allclose(heatmap(trained, photos[0], "cats"), heatmap(trained, photos[0], 1))
    with pytest.raises(ValueError, match="not one of the model's classes"):
        heatmap(trained, photos, label="horses")
    with pytest.raises(ValueError, match="one per image"):
        heatmap(trained, photos, label=[0])
    with pytest.raises(ValueError, match="outside"):
        heatmap(trained, photos, label=5)
    with pytest.raises(ValueError, match="at least one image"):
        heatmap(trained, [])
    assert (trained.body.training, trained.head.training) == modes  # left as found
