"""Promptable 2D models (SAM ViT-B, MedSAM, SAM-Med2D) built from the ``segment-anything`` package's modules.

They take an image and a prompt (box, points, a previous mask) and return a mask, so they have their own registry
beside :data:`amos_zoo.models.registry.MODEL_REGISTRY` (whose networks map an image to class logits);
``amos-zoo models`` lists both. Each :class:`PromptableSpec` is the model card: the network configuration (ViT
size, input size, SAM-Med2D's adapters), the input pipeline the model's authors feed it
(:mod:`amos_zoo.promptable.pipelines`), how it handles prompts and which output it keeps. Nothing here imports
torch until a network is built.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

__all__ = ["PromptableSpec", "PROMPTABLE_MODELS", "register_promptable", "build_promptable", "get_promptable"]

_SAM = "facebookresearch/segment-anything (PyPI segment-anything 1.0) build_sam.py"
_SAMED2D = "OpenGVLab/SAM-Med2D@bfd2b93"
_MEDSAM = "bowang-lab/MedSAM@d71e8a1"

#: SAM ViT-B's image encoder, prompt encoder and mask decoder (segment_anything/build_sam.py, build_sam_vit_b)
VIT_B = {
    "image_size": 1024,
    "patch_size": 16,
    "embed_dim": 768,
    "depth": 12,
    "num_heads": 12,
    "global_attn_indexes": (2, 5, 8, 11),
    "window_size": 14,
    "prompt_dim": 256,
    "decoder_depth": 2,
    "decoder_mlp_dim": 2048,
    "decoder_heads": 8,
    "iou_hidden_dim": 256,
    "mask_in_chans": 16,
    "adapter": False,
}
#: a ViT small enough for CPU tests (every module of ViT-B, a 64 x 64 input, 4 x 4 tokens)
TINY = {
    **VIT_B,
    "image_size": 64,
    "embed_dim": 32,
    "depth": 2,
    "num_heads": 2,
    "global_attn_indexes": (1,),
    "window_size": 2,
    "prompt_dim": 32,
    "decoder_mlp_dim": 64,
    "decoder_heads": 2,
    "iou_hidden_dim": 32,
}


@dataclass(frozen=True)
class PromptableSpec:
    """The model card of a promptable model.

    Attributes:
        name: registry name.
        config: network configuration (:data:`VIT_B` keys).
        pipeline: the input pipeline its authors use (``sam``, ``medsam`` or ``samed2d``; a prompt protocol may
            name another: the SAM-Med2D table runs SAM through SAM-Med2D's loop).
        multimask: the output rule of its authors' inference (``best-iou``: three masks, the one with the highest
            predicted IoU kept; ``single``: the one-mask output).
        prompts: the prompts its authors evaluate it with.
        params: trainable parameters (stored so that listing builds nothing; a test recounts them).
        published_params: a published parameter count (with where it is stated), if any.
    """

    name: str
    config: dict[str, Any]
    pipeline: str
    multimask: str
    prompts: str
    description: str
    source: str
    params: int
    published_params: tuple[int, str] | None = None
    weights: tuple[str, ...] = field(default_factory=tuple)

    @property
    def image_size(self) -> int:
        return int(self.config["image_size"])

    def card(self) -> dict[str, Any]:
        """A JSON-safe summary (written into every evaluation row)."""
        return {
            "name": self.name,
            "image_size": self.image_size,
            "adapter": bool(self.config["adapter"]),
            "pipeline": self.pipeline,
            "multimask": self.multimask,
            "prompts": self.prompts,
            "source": self.source,
        }


PROMPTABLE_MODELS: dict[str, PromptableSpec] = {}


def register_promptable(spec: PromptableSpec) -> PromptableSpec:
    """Add a promptable model (unique here; tests/test_prompts.py checks no name is also a dense model's)."""
    from amos_zoo._registry import register_unique

    return register_unique(PROMPTABLE_MODELS, spec.name, spec, "promptable model")


def get_promptable(name: str) -> PromptableSpec:
    """The spec called ``name``."""
    if name not in PROMPTABLE_MODELS:
        raise KeyError(f"unknown promptable model {name!r}; registered: {', '.join(PROMPTABLE_MODELS)}")
    return PROMPTABLE_MODELS[name]


def build_promptable(name: str, **overrides: Any) -> nn.Module:
    """A freshly initialised network (``segment_anything.modeling.Sam``) of a registered promptable model;
    ``overrides`` replace configuration values (e.g. ``image_size=256`` for SAM in SAM-Med2D's 256 loop)."""
    cfg = {**get_promptable(name).config, **overrides}
    return build_sam(**cfg)


def build_sam(
    image_size: int,
    patch_size: int,
    embed_dim: int,
    depth: int,
    num_heads: int,
    global_attn_indexes: tuple[int, ...],
    window_size: int,
    prompt_dim: int,
    decoder_depth: int,
    decoder_mlp_dim: int,
    decoder_heads: int,
    iou_hidden_dim: int,
    mask_in_chans: int,
    adapter: bool,
) -> nn.Module:
    """SAM from ``segment_anything.modeling`` as ``_build_sam`` assembles it, with the input size free (SAM-Med2D's
    ``build_sam.py`` does the same) and, with ``adapter``, SAM-Med2D's adapter in every block."""
    from functools import partial

    import torch
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    from amos_zoo.promptable.adapter import AdapterBlock

    norm = partial(torch.nn.LayerNorm, eps=1e-6)
    encoder = ImageEncoderViT(
        depth=depth,
        embed_dim=embed_dim,
        img_size=image_size,
        mlp_ratio=4,
        norm_layer=norm,
        num_heads=num_heads,
        patch_size=patch_size,
        qkv_bias=True,
        use_rel_pos=True,
        global_attn_indexes=tuple(global_attn_indexes),
        window_size=window_size,
        out_chans=prompt_dim,
    )
    if adapter:
        for i in range(depth):
            window = window_size if i not in global_attn_indexes else 0
            encoder.blocks[i] = AdapterBlock(
                dim=embed_dim,
                num_heads=num_heads,
                mlp_ratio=4,
                qkv_bias=True,
                norm_layer=norm,
                use_rel_pos=True,
                window_size=window,
                input_size=(image_size // patch_size, image_size // patch_size),
            )
    tokens = image_size // patch_size
    return Sam(
        image_encoder=encoder,
        prompt_encoder=PromptEncoder(
            embed_dim=prompt_dim,
            image_embedding_size=(tokens, tokens),
            input_image_size=(image_size, image_size),
            mask_in_chans=mask_in_chans,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(
                depth=decoder_depth, embedding_dim=prompt_dim, mlp_dim=decoder_mlp_dim, num_heads=decoder_heads
            ),
            transformer_dim=prompt_dim,
            iou_head_depth=3,
            iou_head_hidden_dim=iou_hidden_dim,
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    ).eval()


_SAM_PROMPTS = "box or points, SamPredictor (segment_anything/predictor.py)"
for _spec in (
    PromptableSpec(
        "sam_vit_b",
        VIT_B,
        pipeline="sam",
        multimask="best-iou",
        prompts=_SAM_PROMPTS,
        description="Segment Anything ViT-B (Kirillov et al. 2023)",
        source=f"{_SAM}: build_sam_vit_b; longest side 1024, pixel mean/std, zero padding bottom/right",
        params=93_735_472,
        published_params=(93_735_472, f"{_MEDSAM} train_one_gpu.py: 'Number of total parameters: 93735472'"),
        weights=("sam_vit_b",),
    ),
    PromptableSpec(
        "medsam_vit_b",
        VIT_B,
        pipeline="medsam",
        multimask="single",
        prompts="box (MedSAM_Inference.py medsam_inference: points=None, multimask_output=False)",
        description="MedSAM: SAM ViT-B fine-tuned on 1.57 M medical image-mask pairs (Ma et al. 2024)",
        source=f"{_MEDSAM} MedSAM_Inference.py: 1024 x 1024 bicubic, min-max to [0, 1], box prompt, one mask",
        params=93_735_472,
        published_params=(93_735_472, f"{_MEDSAM} train_one_gpu.py: 'Number of total parameters: 93735472'"),
        weights=("medsam_vit_b",),
    ),
    PromptableSpec(
        "sam_med2d_vit_b",
        {**VIT_B, "image_size": 256, "adapter": True},
        pipeline="samed2d",
        multimask="best-iou",
        prompts="box, 1/3/5 points or iterative clicks (test.py)",
        description="SAM-Med2D: SAM ViT-B with an adapter per block, 256 x 256, fine-tuned on SA-Med2D-16M",
        source=f"{_SAMED2D} build_sam.py (image_size 256, encoder_adapter) and test.py",
        params=271_241_776,
        weights=("sam_med2d_vit_b",),
    ),
    PromptableSpec(
        "sam_tiny",
        TINY,
        pipeline="sam",
        multimask="best-iou",
        prompts=_SAM_PROMPTS,
        description="tiny SAM (64 x 64, 2 blocks of width 32) for tests",
        source="amos-zoo: every SAM module at test size",
        params=102_892,
    ),
    PromptableSpec(
        "sam_med2d_tiny",
        {**TINY, "adapter": True},
        pipeline="samed2d",
        multimask="best-iou",
        prompts="as sam_med2d_vit_b",
        description="tiny SAM-Med2D (adapters, 64 x 64) for tests",
        source="amos-zoo: every SAM-Med2D module at test size",
        params=155_244,
    ),
):
    register_promptable(_spec)
