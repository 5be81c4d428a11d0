"""Prompts made from ground-truth masks by the sources' rules, seeded, written to a prompts file and replayed.

Rules (each a function of the mask in the pipeline's prompt space and a ``numpy.random.RandomState``; the draws are
the source's own calls in the source's order, so a RandomState seeded like ``np.random.seed`` gives the source's
prompts):

* ``largest_component_box`` (OpenGVLab/SAM-Med2D@bfd2b93 ``utils.py`` get_boxes_from_mask with ``max_pixel=0``,
  as ``DataLoader.py`` calls it since 2024-03-22, commit 2f7446a): the bounding box (x0, y0, x1, y1; x1 and y1 one
  past the last pixel, skimage ``regionprops`` bbox) of the largest 8-connected component; no jitter and no draw.
* ``sample_points`` (``utils.py`` init_point_sampling): 1 point: one random foreground pixel (label 1), a random
  background pixel (label 0) for an empty mask; N points: N // 2 foreground and N - N // 2 background pixels drawn
  with replacement, then shuffled.
* ``error_click`` (``utils.py`` select_random_points): one random pixel of the error region (prediction != truth);
  label 1 where the prediction missed, 0 where it is false; with no error, a random pixel labelled -1 (ignored by
  SAM's prompt encoder).
* ``tight_box`` (bowang-lab/MedSAM@d71e8a1 ``train_one_gpu.py`` NpyDataset): x_min, y_min, x_max, y_max of the
  mask's pixels (inclusive), each side widened by ``randint(0, shift)`` and clipped to the image.

Every mask gets its own RandomState seeded from the run seed and the mask's file name, so its prompts do not depend
on which other masks are evaluated or in what order.
"""

from __future__ import annotations

import random
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "Prompt",
    "mask_seed",
    "largest_component_box",
    "sample_points",
    "error_click",
    "tight_box",
    "make_prompt",
    "write_prompts",
    "read_prompts",
    "test_split",
]

PROMPTS_FORMAT = 1


@dataclass
class Prompt:
    """A box and/or points in the pipeline's prompt space, and the seed of the mask's later draws (clicks)."""

    box: list[float] | None = None
    point_coords: list[list[float]] = field(default_factory=list)
    point_labels: list[int] = field(default_factory=list)
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "box": self.box,
            "point_coords": self.point_coords,
            "point_labels": self.point_labels,
            "seed": self.seed,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Prompt:
        return cls(
            d.get("box"),
            [list(map(float, p)) for p in d["point_coords"]],
            [int(v) for v in d["point_labels"]],
            int(d["seed"]),
        )


def mask_seed(seed: int, key: str) -> int:
    """The seed of one mask's draws: the run seed and the mask's name (order-independent, platform-independent)."""
    return (int(seed) * 1_000_003 + zlib.crc32(key.encode())) % (2**32)


def largest_component_box(mask: np.ndarray) -> list[float]:
    """SAM-Med2D's box: the largest 8-connected component's bounding box, x0, y0, x1, y1 (x1, y1 exclusive)."""
    from skimage.measure import label, regionprops

    regions = regionprops(label(mask.astype(np.uint8)))
    if not regions:
        raise ValueError("empty mask: no box")
    y0, x0, y1, x1 = max(regions, key=lambda r: r.area).bbox  # sorted(..., reverse=True)[0]: the first largest
    return [float(x0), float(y0), float(x1), float(y1)]


def sample_points(mask: np.ndarray, n: int, rng: np.random.RandomState) -> tuple[list[list[float]], list[int]]:
    """SAM-Med2D's init_point_sampling: N points (x, y) and labels."""
    fg = np.argwhere(mask == 1)[:, ::-1]
    bg = np.argwhere(mask == 0)[:, ::-1]
    if n == 1:
        if len(fg):
            return [fg[rng.randint(len(fg))].astype(float).tolist()], [1]
        return [bg[rng.randint(len(bg))].astype(float).tolist()], [0]
    n_fg = n // 2
    n_bg = n - n_fg
    coords = np.concatenate(
        [fg[rng.choice(len(fg), size=n_fg, replace=True)], bg[rng.choice(len(bg), size=n_bg, replace=True)]]
    )
    labels = np.concatenate([np.ones(n_fg), np.zeros(n_bg)]).astype(int)
    order = rng.permutation(n)
    return coords[order].astype(float).tolist(), labels[order].tolist()


def error_click(pred: np.ndarray, truth: np.ndarray, rng: np.random.RandomState) -> tuple[list[float], int]:
    """SAM-Med2D's select_random_points for one mask and one point: (x, y) and its label."""
    error = np.argwhere(pred != truth)
    if len(error):
        y, x = error[rng.choice(len(error), 1, replace=True)][0]
    else:
        candidates = rng.randint(0, pred.shape[0], size=(1, 2))
        y, x = candidates[rng.choice(1, 1, replace=True)][0]
    if pred[y, x] == 0 and truth[y, x] == 1:
        label = 1
    elif pred[y, x] == 1 and truth[y, x] == 0:
        label = 0
    else:
        label = -1
    return [float(x), float(y)], label


def tight_box(mask: np.ndarray, shift: int, rng: random.Random) -> list[float]:
    """MedSAM's box: the mask's extent (inclusive), each side widened by ``randint(0, shift)`` (Python's random, as
    train_one_gpu.py), clipped to the image."""
    ys, xs = np.where(mask > 0)
    if not len(xs):
        raise ValueError("empty mask: no box")
    h, w = mask.shape
    x0 = max(0, int(xs.min()) - rng.randint(0, shift))
    x1 = min(w, int(xs.max()) + rng.randint(0, shift))
    y0 = max(0, int(ys.min()) - rng.randint(0, shift))
    y1 = min(h, int(ys.max()) + rng.randint(0, shift))
    return [float(x0), float(y0), float(x1), float(y1)]


def make_prompt(mask: np.ndarray, rule: str, seed: int, points: int = 0, box_shift: int = 0) -> Prompt:
    """The initial prompt of one mask (in the prompt space) under a protocol's rule."""
    binary = (mask > 0).astype(np.uint8)
    if rule == "largest-component-box":
        return Prompt(box=largest_component_box(binary), seed=seed)
    if rule == "points":
        coords, labels = sample_points(binary, points, np.random.RandomState(seed))
        return Prompt(point_coords=coords, point_labels=labels, seed=seed)
    if rule == "tight-box":
        return Prompt(box=tight_box(binary, box_shift, random.Random(seed)), seed=seed)
    raise ValueError(f"unknown prompt rule {rule!r}")


def write_prompts(path: str | Path, header: dict[str, Any], prompts: dict[str, Prompt]) -> None:
    """The prompts file (JSON, written atomically): how they were made, and one prompt per mask."""
    from amos_zoo.io import write_json

    write_json(
        Path(path), {"format": PROMPTS_FORMAT, **header, "prompts": {k: p.to_dict() for k, p in prompts.items()}}
    )


def read_prompts(path: str | Path, expect: dict[str, Any]) -> dict[str, Prompt]:
    """Read a prompts file and check that it was made under the same rule and input size (``expect``)."""
    from amos_zoo.io import read_json_object

    data = read_json_object(Path(path))
    if data.get("format") != PROMPTS_FORMAT:
        raise ValueError(f"{path}: not an amos-zoo prompts file (format {data.get('format')!r})")
    differ = {k: (data.get(k), v) for k, v in expect.items() if data.get(k) != v}
    if differ:
        raise ValueError(
            f"{path}: made under other settings, cannot replay: "
            + ", ".join(f"{k} is {a!r} in the file, {b!r} here" for k, (a, b) in differ.items())
        )
    return {k: Prompt.from_dict(v) for k, v in data["prompts"].items()}


def test_split(groups: dict[str, list[str]], fraction: float, seed: int) -> dict[str, list[str]]:
    """The SA-Med2D test split rule: in each sub-dataset, a seeded random ``fraction`` of its images by image index
    (images sorted by name; at least one image per sub-dataset)."""
    out = {}
    for i, (group, images) in enumerate(sorted(groups.items())):
        ordered = sorted(images)
        n = max(1, int(round(fraction * len(ordered))))
        rng = np.random.default_rng([int(seed), i, zlib.crc32(group.encode())])
        out[group] = [ordered[j] for j in sorted(rng.choice(len(ordered), size=n, replace=False))]
    return out


test_split.__test__ = False  # not a pytest test
