"""Networks written from scratch, short enough to read. Each is a plain ``nn.Module`` that
trains with ``Learner(model, data)``.

    from threeline.models import resnet
    learn = Learner(resnet(depth=18, n_classes=10, small_input=True), data)
"""

from threeline.models.resnet import BasicBlock, Bottleneck, FastResNet, ResNet, fast_resnet, resnet

__all__ = ["BasicBlock", "Bottleneck", "FastResNet", "ResNet", "fast_resnet", "resnet"]
