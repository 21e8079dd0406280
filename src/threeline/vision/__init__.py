"""Images: folders (or CSVs) of photos, a pretrained body, a new head.

    from threeline import ImageData, Learner
    data = ImageData.from_folder("data/dogscats")
    learn = Learner.pretrained("efficientnet_lite2", data, precompute=True)
"""

from threeline.vision.data import ImageData, demo_path
from threeline.vision.factory import pretrained, rebuild
from threeline.vision.learner import ImageLearner
from threeline.vision.weights import available_models

__all__ = ["ImageData", "ImageLearner", "available_models", "demo_path", "pretrained", "rebuild"]
