"""Batch augmentation on the device: one affine resample per batch, then lighting.

Flips, a random resized crop (zoom and aspect jitter), a small rotation and, for top-down images,
the eight lossless turns and flips are folded into one 2 x 3 matrix per image; a single
``grid_sample`` call then produces the whole batch at the training size. It runs wherever the
batch is (GPU, or vectorized on the CPU) and draws its random numbers from a CPU generator, so a
seed gives the same augmentations on every device.

The crop always lies inside the image's real pixels (rotated crops are shrunk until their corners
fit), so no padding or mirrored borders ever appear.

    aug = side_on()
    out = aug(images, sizes, 224, torch.Generator().manual_seed(0))  # (B, 3, 224, 224) in [0, 1]
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from threeline.vision.transforms import to_device


@dataclass(frozen=True)
class Augment:
    """What to vary, and by how much.

    Args:
        flip: random left-right flips.
        dihedral: also up-down flips and 90-degree turns (top-down images have no "up").
        min_scale: the crop's area as a fraction of the image's largest square, drawn from
            [min_scale, 1]; 1 means no zoom.
        ratio: range of the crop's aspect ratio (drawn log-uniformly).
        max_rotate: largest rotation in degrees (either way).
        max_lighting: largest change of brightness and of contrast (fractions).
        p_lighting: the probability of a lighting change per image.

    Example:
        >>> Augment(min_scale=0.8).max_rotate
        10.0
    """

    flip: bool = True
    dihedral: bool = False
    min_scale: float = 0.5
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    max_rotate: float = 10.0
    max_lighting: float = 0.2
    p_lighting: float = 0.75

    def __post_init__(self) -> None:
        if not 0 < self.min_scale <= 1:
            raise ValueError(f"min_scale must lie in (0, 1], got {self.min_scale!r}.")
        if not 0 < self.ratio[0] <= self.ratio[1]:
            raise ValueError(f"ratio must be (low, high) with 0 < low <= high, got {self.ratio!r}.")
        if not 0 <= self.max_rotate <= 45 or not 0 <= self.max_lighting < 1:
            raise ValueError(
                f"max_rotate must lie in [0, 45] degrees and max_lighting in [0, 1), got "
                f"{self.max_rotate!r} and {self.max_lighting!r}."
            )

    def __call__(self, images: torch.Tensor, sizes: torch.Tensor, size: int,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """uint8 (B, 3, H, W) padded images with true sizes (B, 2) -> float (B, 3, size, size).

        Values are in [0, 1], not yet normalized.

        Example:
            >>> images = torch.randint(0, 256, (2, 3, 40, 50), dtype=torch.uint8)
            >>> sizes = torch.tensor([[40, 50], [40, 40]])
            >>> side_on()(images, sizes, 32, torch.Generator().manual_seed(0)).shape
            torch.Size([2, 3, 32, 32])
        """
        theta = to_device(self.matrices(sizes, images.shape[-2:], generator),
                          images.device)  # (B, 2, 3)
        grid = F.affine_grid(theta, [len(images), 3, size, size], align_corners=False)
        out = F.grid_sample(images.float(), grid, mode="bilinear", padding_mode="border",
                            align_corners=False).div_(255.0)  # (B, 3, size, size)
        return self.lighting(out, generator)

    def matrices(self, sizes: torch.Tensor, canvas: tuple[int, int],
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """The (B, 2, 3) affine matrices mapping output to input coordinates (CPU, float32)."""
        n = len(sizes)
        h_img, w_img = sizes[:, 0].float(), sizes[:, 1].float()  # (B,)
        r = torch.rand(n, 8, generator=generator)  # (B, 8) uniforms, one column per choice
        side = torch.minimum(h_img, w_img)
        scale = self.min_scale + (1 - self.min_scale) * r[:, 0]
        lo, hi = math.log(self.ratio[0]), math.log(self.ratio[1])
        aspect = torch.exp(lo + (hi - lo) * r[:, 1])
        w = torch.minimum(side * torch.sqrt(scale * aspect), w_img)  # crop box, pixels
        h = torch.minimum(side * torch.sqrt(scale / aspect), h_img)
        angle = torch.deg2rad((2 * r[:, 2] - 1) * self.max_rotate)
        cos, sin = torch.cos(angle), torch.sin(angle)
        # shrink the rotated crop until its bounding box fits the box drawn above
        c, s = cos.abs(), sin.abs()
        shrink = torch.maximum((w * c + h * s) / w, (w * s + h * c) / h)
        cx = w / 2 + r[:, 3] * (w_img - w)  # the box lies inside the image
        cy = h / 2 + r[:, 4] * (h_img - h)
        half_w, half_h = w / shrink / 2, h / shrink / 2
        flip_x = torch.where((r[:, 5] < 0.5) & self.flip, -1.0, 1.0)
        flip_y = torch.where((r[:, 6] < 0.5) & self.dihedral, -1.0, 1.0)
        swap = (r[:, 7] < 0.5) & self.dihedral
        # output (u, v) -> optional swap -> flips -> scale to the crop -> rotate -> translate
        a = torch.zeros(n, 2, 2)
        a[:, 0, 0], a[:, 1, 1] = flip_x, flip_y
        a[swap] = a[swap].flip(-1)
        a = torch.diag_embed(torch.stack([half_w, half_h], 1)) @ a
        rot = torch.stack([torch.stack([cos, -sin], 1), torch.stack([sin, cos], 1)], 1)
        a = rot @ a  # (B, 2, 2), pixels per output unit
        canvas_h, canvas_w = float(canvas[0]), float(canvas[1])
        to_unit = torch.tensor([2 / canvas_w, 2 / canvas_h]).view(1, 2, 1)
        shift = torch.stack([2 * cx / canvas_w - 1, 2 * cy / canvas_h - 1], 1)  # (B, 2)
        return torch.cat([a * to_unit, shift[:, :, None]], 2)

    def lighting(self, images: torch.Tensor,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """Random brightness and contrast per image on float (B, 3, H, W) in [0, 1]."""
        if self.max_lighting == 0:
            return images
        r = torch.rand(len(images), 3, generator=generator)  # (B, 3)
        on = (r[:, 0] < self.p_lighting).float()
        contrast = 1 + on * self.max_lighting * (2 * r[:, 1] - 1)
        brightness = on * self.max_lighting / 2 * (2 * r[:, 2] - 1)
        contrast = to_device(contrast, images.device).view(-1, 1, 1, 1)
        brightness = to_device(brightness, images.device).view(-1, 1, 1, 1)
        return ((images - 0.5) * contrast + 0.5 + brightness).clamp_(0, 1)

    def for_tta(self) -> Augment:
        """A milder version for test-time augmentation: flips and a gentle zoom, no rotation
        or lighting.

        Example:
            >>> side_on().for_tta().max_rotate
            0.0
        """
        return replace(self, min_scale=max(self.min_scale, 0.75), ratio=(1.0, 1.0),
                       max_rotate=0.0, max_lighting=0.0)


def side_on() -> Augment:
    """For photos taken from the side (pets, cars, people): left-right flips only, since the
    world is not upside down; zoom, a small rotation and lighting.

    Example:
        >>> side_on().dihedral
        False
    """
    return Augment(flip=True, dihedral=False, min_scale=0.5, max_rotate=10.0, max_lighting=0.2)


def top_down() -> Augment:
    """For images seen from above (satellite, microscopy, documents on a scanner bed): all
    eight flips and quarter turns, zoom, a small rotation and lighting.

    Example:
        >>> top_down().dihedral
        True
    """
    return Augment(flip=True, dihedral=True, min_scale=0.5, max_rotate=10.0, max_lighting=0.2)


PRESETS = {"side_on": side_on, "top_down": top_down}


def get(spec: str | Augment | None) -> Augment | None:
    """None, a preset name (``"side_on"``, ``"top_down"``) or an :class:`Augment`.

    Example:
        >>> get("top_down") == top_down()
        True
    """
    if spec is None or isinstance(spec, Augment):
        return spec
    if isinstance(spec, str) and spec in PRESETS:
        return PRESETS[spec]()
    raise ValueError(
        f"Unknown augmentation {spec!r}; expected None, 'side_on' (photos from the side), "
        f"'top_down' (satellite, microscopy) or an Augment(...)."
    )
