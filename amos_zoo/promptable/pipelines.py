"""Input pipelines of the promptable models' authors: image -> network input, prompts -> network coordinates,
low-resolution output -> mask at the image's original size.

* ``samed2d`` (OpenGVLab/SAM-Med2D@bfd2b93 ``DataLoader.py`` TestingDataset, ``utils.py`` train_transforms,
  ``test.py`` postprocess_masks): the 8-bit image read as BGR, ImageNet mean/std on 0-255, then resized to S x S
  without keeping the aspect ratio (``cv2.INTER_NEAREST``), or zero-padded to S x S around the centre when both
  sides are smaller than S; prompts are made on the mask resized the same way (nearest) and live in that S x S
  space; the output is upsampled (bilinear) to S x S, then cropped (padded input) or resized (bilinear) to the
  original size, foreground where the sigmoid is above 0.5 (``metrics.py``).
* ``medsam`` (bowang-lab/MedSAM@d71e8a1 ``MedSAM_Inference.py``): bicubic resize to 1024 x 1024 (skimage
  ``order=3``, anti-aliasing, cast to uint8), min-max to [0, 1], no mean/std; the box is given in original pixels
  and scaled by 1024 / (W, H); the low-resolution probability (sigmoid) is resized (bilinear) to the original size
  and thresholded at 0.5.
* ``sam`` (segment-anything ``SamPredictor``): longest side resized to S (``ResizeLongestSide.apply_image``, PIL
  bilinear), pixel mean/std, zero padding bottom/right; prompts in original pixels scaled by
  ``apply_coords``; ``Sam.postprocess_masks`` back to the original size, foreground where the logit is above 0.
  ``ResizeLongestSide.apply_image_torch`` is not used: in segment-anything 1.0 it takes the target size from the
  batch and channel dimensions.

The image encoder is called directly on the pipeline's tensor (as all three sources do), never through
``Sam.preprocess``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["Geometry", "Pipeline", "PIPELINES", "get_pipeline", "nearest_resize"]

IMAGENET_MEAN = np.array([123.675, 116.28, 103.53], dtype=np.float64)
IMAGENET_STD = np.array([58.395, 57.12, 57.375], dtype=np.float64)


@dataclass(frozen=True)
class Geometry:
    """How an image of ``original`` (H, W) was put into the S x S input: resized, or padded at ``pad`` (top, left),
    or (``sam``) resized to ``resized`` and padded bottom/right."""

    original: tuple[int, int]
    size: int
    pad: tuple[int, int] | None = None
    resized: tuple[int, int] | None = None


def nearest_resize(array: np.ndarray, size: int) -> np.ndarray:
    """``cv2.resize(..., (size, size), interpolation=cv2.INTER_NEAREST)``: source index ``floor(i * in / out)``."""
    h, w = array.shape[:2]
    rows = np.minimum(np.floor(np.arange(size) * (h / size)).astype(np.int64), h - 1)
    cols = np.minimum(np.floor(np.arange(size) * (w / size)).astype(np.int64), w - 1)
    return array[rows][:, cols]


def _centre_pad(array: np.ndarray, size: int) -> tuple[np.ndarray, tuple[int, int]]:
    """albumentations ``PadIfNeeded`` (position centre, constant 0): top = (S - h) // 2, the rest at the bottom."""
    h, w = array.shape[:2]
    top, left = (size - h) // 2, (size - w) // 2
    out = np.zeros((size, size, *array.shape[2:]), dtype=array.dtype)
    out[top : top + h, left : left + w] = array
    return out, (top, left)


class Pipeline:
    """One author's way in and out of the network."""

    name = ""
    #: the prompts' coordinates are in the S x S input (True) or in original pixels (False)
    prompts_in_input_space = False

    def __init__(self, size: int) -> None:
        self.size = int(size)

    def image(self, rgb: np.ndarray) -> tuple[torch.Tensor, Geometry]:
        """(1, 3, S, S) float input and its geometry from an 8-bit H x W x 3 RGB image."""
        raise NotImplementedError

    def prompt_mask(self, mask: np.ndarray, geometry: Geometry) -> np.ndarray:
        """The mask prompts are made from (in the prompts' space)."""
        return mask

    def coords(self, xy: np.ndarray, geometry: Geometry) -> np.ndarray:
        """Prompt coordinates (..., 2) as x, y in the network's S x S input."""
        return np.asarray(xy, dtype=np.float64)

    def upsample(self, low_res: torch.Tensor) -> torch.Tensor:
        """Low-resolution logits -> S x S logits (the space of iterative clicks)."""
        return F.interpolate(low_res, (self.size, self.size), mode="bilinear", align_corners=False)

    def mask(self, low_res: torch.Tensor, geometry: Geometry) -> np.ndarray:
        """Low-resolution logits (1, 1, s, s) -> boolean mask at the original size."""
        raise NotImplementedError


class SamMed2DPipeline(Pipeline):
    name = "samed2d"
    prompts_in_input_space = True

    def image(self, rgb):
        h, w = rgb.shape[:2]
        if h < self.size and w < self.size:
            bgr = rgb[..., ::-1].astype(np.float64)  # cv2.imread order
            normalised, pad = _centre_pad((bgr - IMAGENET_MEAN) / IMAGENET_STD, self.size)
            geometry = Geometry((h, w), self.size, pad=pad)
        else:  # the nearest resize picks pixels and the normalisation is per pixel: picking first, the same values
            bgr = nearest_resize(rgb, self.size)[..., ::-1].astype(np.float64)
            normalised = (bgr - IMAGENET_MEAN) / IMAGENET_STD
            geometry = Geometry((h, w), self.size)
        tensor = torch.from_numpy(np.ascontiguousarray(normalised.transpose(2, 0, 1))).float()[None]
        return tensor, geometry

    def prompt_mask(self, mask, geometry):
        if geometry.pad is not None:
            return _centre_pad(mask, self.size)[0]
        return nearest_resize(mask, self.size)

    def mask(self, low_res, geometry):
        logits = self.upsample(low_res)
        h, w = geometry.original
        if geometry.pad is not None:
            top, left = geometry.pad
            logits = logits[..., top : top + h, left : left + w]
        else:
            logits = F.interpolate(logits, (h, w), mode="bilinear", align_corners=False)
        return (torch.sigmoid(logits[0, 0]) > 0.5).cpu().numpy()  # metrics.py (not logit > 0: float32 rounding)


class MedSAMPipeline(Pipeline):
    name = "medsam"

    def image(self, rgb):
        from skimage import transform

        h, w = rgb.shape[:2]
        resized = transform.resize(
            rgb, (self.size, self.size), order=3, preserve_range=True, anti_aliasing=True
        ).astype(np.uint8)
        scaled = (resized - resized.min()) / np.clip(resized.max() - resized.min(), a_min=1e-8, a_max=None)
        tensor = torch.tensor(scaled).float().permute(2, 0, 1)[None]
        return tensor, Geometry((h, w), self.size)

    def coords(self, xy, geometry):
        h, w = geometry.original
        return np.asarray(xy, dtype=np.float64) / np.array([w, h]) * self.size

    def mask(self, low_res, geometry):
        probability = F.interpolate(torch.sigmoid(low_res), geometry.original, mode="bilinear", align_corners=False)
        return (probability[0, 0] > 0.5).cpu().numpy()


class SamPipeline(Pipeline):
    name = "sam"

    def _transform(self):
        from segment_anything.utils.transforms import ResizeLongestSide

        return ResizeLongestSide(self.size)

    def image(self, rgb):
        h, w = rgb.shape[:2]
        resized = self._transform().apply_image(np.ascontiguousarray(rgb))
        x = torch.as_tensor(resized).permute(2, 0, 1).float() - torch.tensor(IMAGENET_MEAN).float()[:, None, None]
        x = x / torch.tensor(IMAGENET_STD).float()[:, None, None]
        rh, rw = x.shape[-2:]
        x = F.pad(x, (0, self.size - rw, 0, self.size - rh))
        return x[None], Geometry((h, w), self.size, resized=(rh, rw))

    def coords(self, xy, geometry):
        return self._transform().apply_coords(np.asarray(xy, dtype=np.float64), geometry.original)

    def mask(self, low_res, geometry):
        logits = self.upsample(low_res)[..., : geometry.resized[0], : geometry.resized[1]]
        logits = F.interpolate(logits, geometry.original, mode="bilinear", align_corners=False)
        return (logits[0, 0] > 0).cpu().numpy()


PIPELINES = {p.name: p for p in (SamMed2DPipeline, MedSAMPipeline, SamPipeline)}


def get_pipeline(name: str, size: int) -> Pipeline:
    """The pipeline called ``name`` for an S x S network input."""
    if name not in PIPELINES:
        raise KeyError(f"unknown input pipeline {name!r}; known: {', '.join(PIPELINES)}")
    return PIPELINES[name](size)
