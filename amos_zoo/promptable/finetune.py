"""Fine-tuning a promptable model with MedSAM's recipe: what :class:`~amos_zoo.train.module.SegmentationModule` and
:class:`~amos_zoo.data.datamodule.SegmentationDataModule` use when the arch is a promptable model and the data
module is in prompt mode (``--data.prompt_protocol medsam-finetune``, ``configs/samed2d/medsam_finetune.yaml``).

The recipe (protocol card ``medsam-finetune``; bowang-lab/MedSAM@d71e8a1 ``train_one_gpu.py``): each step takes
images with one of their masks drawn at random, a box around that mask widened by ``randint(0, 20)`` pixels per
side; the image encoder and mask decoder are trained, the prompt encoder frozen (no gradient); the decoder's single
output is upsampled (bilinear) to the input size and compared with the mask by Dice (MONAI ``DiceLoss(sigmoid=True,
squared_pred=True)``) + binary cross-entropy; AdamW, learning rate 1e-4, weight decay 0.01. Images go through the
card's input pipeline (MedSAM: 1024 x 1024 bicubic, min-max to [0, 1]); masks are resized to the input size by
nearest neighbour, as ``pre_CT_MR.py`` resizes labels (``order=0``). Validation scores the thresholded mask's Dice
with the tight box (no widening), through the metric suite.
"""

from __future__ import annotations

import random
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.transforms import Randomizable

if TYPE_CHECKING:
    from amos_zoo.card import ModelCard

__all__ = [
    "PromptSampled",
    "PromptLoss",
    "build_promptable_network",
    "prompt_logits",
    "prompt_protocol_settings",
    "resolve_and_load",
    "promptable_checkpoint_card",
]


def prompt_protocol_settings(protocol: str, box_shift: int | None = None) -> tuple[str, int]:
    """(input pipeline, box widening in input pixels) of a fine-tuning prompt protocol card; ``box_shift`` replaces
    the card's widening (the card's 20 px belong to a 1024 input)."""
    from amos_zoo.promptable.protocols import get_prompt_protocol

    card = get_prompt_protocol(protocol)
    if card.get("prompt.rule") != "tight-box":
        raise ValueError(f"prompt protocol {protocol!r} is not a fine-tuning protocol with a box (medsam-finetune)")
    shift = int(card.get("prompt.box_shift", 0) if box_shift is None else box_shift)
    return str(card.get("input.pipeline")), shift


class PromptSampled(Randomizable):
    """``{"image": png, "masks": [(png, class id), ...]}`` -> the image through a promptable model's input pipeline
    (3, S, S), one of its masks drawn at random (1, S, S) at the input size, that mask's box in input pixels widened
    by up to ``box_shift`` per side (``tight_box``), and the mask's class id. Its random state is the data module's
    per-sample state (``set_random_state``), so the draws are a function of the seed and the sample's position.

    The pipeline is deterministic, so its outputs are kept (least recently used first out) up to ``cache_bytes``
    per process: at a 64 x 64 input every image of a small set, at 1024 x 1024 about ten.
    """

    def __init__(self, pipeline: str, size: int, box_shift: int, cache_bytes: int = 128 * 2**20) -> None:
        from amos_zoo.promptable.pipelines import get_pipeline

        if pipeline not in ("medsam", "samed2d"):
            raise ValueError(f"fine-tuning takes the medsam or samed2d input pipeline (a plain resize), not {pipeline}")
        self.pipeline = get_pipeline(pipeline, size)
        self.box_shift = int(box_shift)
        self.cache_bytes = int(cache_bytes)
        self._images: OrderedDict[str, tuple[torch.Tensor, Any]] = OrderedDict()

    def _image(self, path: str) -> tuple[torch.Tensor, Any]:
        from amos_zoo.promptable.evaluate import _read_rgb

        if path in self._images:
            self._images.move_to_end(path)
            return self._images[path]
        image, geometry = self.pipeline.image(_read_rgb(Path(path)))
        self._images[path] = (image[0], geometry)
        while sum(t.nbytes for t, _ in self._images.values()) > self.cache_bytes and len(self._images) > 1:
            self._images.popitem(last=False)
        return image[0], geometry

    def randomize(self, data: Any = None) -> None:
        """Nothing ahead: the draws happen in ``__call__`` (which mask, then the box's four widenings)."""

    def __call__(self, data: dict) -> dict:
        from amos_zoo.promptable.evaluate import _read_mask
        from amos_zoo.promptable.pipelines import nearest_resize
        from amos_zoo.promptable.prompts import tight_box

        d = dict(data)
        masks = d.pop("masks")
        image, geometry = self._image(str(d["image"]))
        path, class_id = masks[int(self.R.randint(len(masks)))]  # train_one_gpu.py: random.choice(label_ids)
        truth = _read_mask(Path(path)).astype(np.uint8)
        if self.pipeline.name == "medsam":
            mask = nearest_resize(truth, self.pipeline.size)  # pre_CT_MR.py: label resized with order=0
        else:
            mask = self.pipeline.prompt_mask(truth, geometry)
        box = tight_box(mask, self.box_shift, random.Random(int(self.R.randint(2**31))))  # Python's random, as
        d["image"] = image.clone()  # train_one_gpu.py draws the widening (a copy: the cached one stays unchanged)
        d["mask"] = torch.from_numpy(np.ascontiguousarray(mask[None])).float()
        d["box"] = torch.tensor(box, dtype=torch.float32)
        d["class_id"] = int(class_id)
        return d


def build_promptable_network(card: ModelCard) -> torch.nn.Module:
    """The SAM-family network a promptable card describes (input size = the card's window), with the prompt
    encoder frozen (train_one_gpu.py MedSAM.__init__: ``requires_grad = False``)."""
    from amos_zoo.promptable.models import build_promptable

    kwargs = dict(card.arch_kwargs)
    kwargs.setdefault("image_size", int(card.roi_size[0]))
    net = build_promptable(card.arch, **kwargs)
    for p in net.prompt_encoder.parameters():
        p.requires_grad = False
    return net.train()


def prompt_logits(net: torch.nn.Module, image: torch.Tensor, box: torch.Tensor) -> torch.Tensor:
    """Logits at the input size for a batch of images and one box each (train_one_gpu.py MedSAM.forward: the
    prompt encoder under no_grad, one mask output, bilinear upsampling to the input size)."""
    embedding = net.image_encoder(image)
    with torch.no_grad():
        sparse, dense = net.prompt_encoder(points=None, boxes=box[:, None, :], masks=None)
    # one image and its box at a time: segment-anything 1.0's decoder repeats one image's embedding for every
    # prompt (MedSAM's copy of it takes a batch of images, one prompt each; the result is the same)
    dense_pe = net.prompt_encoder.get_dense_pe()
    low_res = torch.cat(
        [
            net.mask_decoder(
                image_embeddings=embedding[i : i + 1],
                image_pe=dense_pe,
                sparse_prompt_embeddings=sparse[i : i + 1],
                dense_prompt_embeddings=dense[i : i + 1],
                multimask_output=False,
            )[0]
            for i in range(len(image))
        ]
    )
    return F.interpolate(low_res, image.shape[-2:], mode="bilinear", align_corners=False)


class PromptLoss(torch.nn.Module):
    """train_one_gpu.py's loss: ``DiceLoss(sigmoid=True, squared_pred=True, reduction="mean")`` +
    ``BCEWithLogitsLoss(reduction="mean")``."""

    def __init__(self) -> None:
        super().__init__()
        from monai.losses import DiceLoss

        self.dice = DiceLoss(sigmoid=True, squared_pred=True, reduction="mean")
        self.bce = torch.nn.BCEWithLogitsLoss(reduction="mean")

    def forward(self, logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.dice(logits, mask) + self.bce(logits, mask)


def resolve_and_load(net: torch.nn.Module, weights: str, sha256: str | None = None, trust: bool = False):
    """Load promptable weights (a registry name: downloaded and verified as ``evaluate-prompts`` does; or a file)
    into ``net``; the load report."""
    from amos_zoo.promptable.weights import load_promptable_weights, resolve_promptable_weights

    path, verified = resolve_promptable_weights(weights, trust=trust, sha256=sha256)
    return load_promptable_weights(net, path, verified=verified)


def promptable_checkpoint_card(card: ModelCard) -> dict[str, Any]:
    """The promptable model's card as a checkpoint records it: its registry card at the trained input size, with the
    input pipeline and output of the fine-tuning protocol it was trained through (MedSAM's for ``medsam-finetune``)."""
    from amos_zoo.promptable.models import get_promptable
    from amos_zoo.promptable.protocols import list_prompt_protocols

    size = int(dict(card.arch_kwargs).get("image_size", card.roi_size[0]))
    out = {**get_promptable(card.arch).card(), "image_size": size, "protocol": card.protocol}
    protocol = next((p for p in list_prompt_protocols() if p.name == card.protocol), None)
    if protocol is not None:  # what it was trained with: the protocol's pipeline and output
        out["pipeline"] = protocol.get("input.pipeline", out["pipeline"])
        out["multimask"] = protocol.get("decode.multimask", out["multimask"])
    return out
