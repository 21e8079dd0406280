"""`python -m threeline.demo`: the three lines on the built-in demo photos (dogs vs cats)."""

from __future__ import annotations

import time

from threeline import ImageData, Learner, demo_path


def main() -> float:
    """Train on the demo data with cached activations; print the epoch table and the accuracy.

    Example:
        >>> accuracy = main()  # doctest: +SKIP
    """
    start = time.perf_counter()
    data = ImageData.from_folder(demo_path("dogscats"))
    learn = Learner.pretrained("efficientnet_lite0", data, precompute=True)
    print(data.summary(learn.preprocess.size))  # the size the backbone chose
    learn.fit(0.01, 3)
    accuracy = learn.validate()["accuracy"]
    print(f"valid accuracy {accuracy:.1%} on {len(data.valid)} images, "
          f"{time.perf_counter() - start:.1f} s in all, on {learn.device.type}")
    return accuracy


if __name__ == "__main__":
    main()
