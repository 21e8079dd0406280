"""A training step within ``learn.step_memory``: a batch of images whose activations would pass
it runs as several forward and backward passes and one optimizer step, the same step."""

from __future__ import annotations

import torch
from torch import nn

from threeline import ImageData, Learner
from threeline.callbacks import Callback, CancelFit
from threeline.vision import batches


def _learner(demo, seed: int = 0) -> Learner:
    data = ImageData.from_folder(demo, size=64, batch_size=8, num_workers=0, verbose=False)
    learn = Learner.pretrained("efficientnet_lite0", data, device="cpu", progress=False,
                               seed=seed)
    learn.checkpoint_dir = False
    return learn


def test_parts_follow_the_activations_measured(dogscats_demo):
    learn = _learner(dogscats_demo)
    assert learn.step_memory == 1 << 30  # a CPU's default
    learn.unfreeze()
    module = learn.trainable()
    x, _ = next(batches.train_batches(learn))  # (8, 3, 64, 64)
    per_image = batches.saved_bytes_per_image(learn, module, x)
    assert per_image > 10 * x[0].numel() * 4  # many layers' outputs, not the input alone
    assert all(not m.training for m in learn._body_norms) and module.training  # as it was

    learn.step_memory, learn._step_bytes = 3 * per_image, None
    assert batches.step_parts(learn, module, x) == 3  # 3 images a pass at most: 3 + 3 + 2
    assert learn._step_bytes == per_image
    learn.step_memory = 1  # never below two images a pass (the head's BatchNorm trains)
    assert batches.step_parts(learn, module, x) == 4
    learn.step_memory = None
    assert batches.step_parts(learn, module, x) == 1
    learn.step_memory, learn.train_bn = 1, True  # BatchNorm statistics per pass: one pass
    learn.set_train_mode(module)
    assert batches.step_parts(learn, module, x) == 1

    learn.train_bn = False
    learn.freeze()  # a frozen body keeps nothing for the backward pass
    frozen = learn.trainable()
    learn.set_train_mode(frozen)
    assert batches.saved_bytes_per_image(learn, frozen, x) < per_image / 20


class _OneStep(Callback):
    def __init__(self):
        self.losses: list[float] = []

    def on_batch_end(self, learn, loss) -> None:
        self.losses.append(float(loss))
        raise CancelFit


def test_a_step_in_parts_gives_the_gradients_of_the_whole_batch(dogscats_demo):
    """With a head without BatchNorm (whose statistics would be a pass's), the parts' summed
    gradients are the batch's, and so is the loss."""

    def one_step(step_memory: int | None) -> tuple[Learner, float, list[torch.Tensor]]:
        learn = _learner(dogscats_demo)
        torch.manual_seed(0)
        learn.model[1] = nn.Linear(learn.body.out_features, 2)
        learn.unfreeze()
        learn.step_memory, stop = step_memory, _OneStep()
        learn.fit(1e-3, 1, callbacks=[stop])
        grads = [p.grad for p in learn.model.parameters() if p.requires_grad]
        return learn, stop.losses[0], grads

    whole, loss, expected = one_step(None)
    parts, parts_loss, found = one_step(1)  # two images a pass: 4 passes
    assert parts._step_bytes > 0 and whole._step_bytes is None
    assert abs(parts_loss - loss) < 1e-5
    assert len(found) == len(expected) > 100
    for got, want in zip(found, expected, strict=True):
        assert torch.allclose(got, want, rtol=1e-3, atol=1e-6)
