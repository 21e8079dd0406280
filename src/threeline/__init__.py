"""threeline: train an image classifier on your own folders of images in three lines.

    from threeline import ImageData, Learner
    data = ImageData.from_folder("path/to/images")
    learn = Learner.pretrained("efficientnet_lite2", data, precompute=True)
    learn.fit(0.01, 3)
"""

from threeline.data import ImageData, demo_path
from threeline.learner import Learner
from threeline.weights import available_models, cache_dir

__version__ = "0.1.0"

__all__ = ["ImageData", "Learner", "__version__", "available_models", "cache_dir", "demo_path"]
