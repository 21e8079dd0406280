"""Networks written from scratch, short enough to read. Each is a plain ``nn.Module`` that
trains with ``Learner(model, data)``.

    from threeline.models import resnet
    learn = Learner(resnet(depth=18, n_classes=10, small_input=True), data)
"""

from threeline.models.convnet import FastConvNet, PatchWhitening, fast_convnet
from threeline.models.resnet import BasicBlock, Bottleneck, FastResNet, ResNet, fast_resnet, resnet
from threeline.models.rnn import (
    ARCHS,
    AWDLSTM,
    AWDLanguageModel,
    LockedDropout,
    PoolingHead,
    RNNClassifier,
    RNNLanguageModel,
    masked_concat_pool,
)

__all__ = ["ARCHS", "AWDLSTM", "AWDLanguageModel", "BasicBlock", "Bottleneck", "FastConvNet",
           "FastResNet", "LockedDropout", "PatchWhitening", "PoolingHead", "RNNClassifier",
           "RNNLanguageModel", "ResNet", "fast_convnet", "fast_resnet", "masked_concat_pool",
           "resnet"]
