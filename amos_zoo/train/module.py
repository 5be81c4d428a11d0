"""The one LightningModule for every model: DiceCE loss, configurable optimiser and schedule,
gaussian sliding-window validation scored by the metric suite, per-organ Dice logged (DDP-exact).

The module's network is built from its :class:`~amos_zoo.card.ModelCard` (:attr:`SegmentationModule.card`), and
every checkpoint stores that card, so a checkpoint alone can segment a scan.
"""

from __future__ import annotations

import os
import re
from typing import Any

import pytorch_lightning as pl
import torch
from monai.inferers import sliding_window_inference
from monai.losses import DiceCELoss

from amos_zoo.card import ModelCard
from amos_zoo.data.labels import label_key
from amos_zoo.data.recipes import Recipe
from amos_zoo.infer.stitching import with_cpu_stitching_fallback
from amos_zoo.metrics.aggregate import CaseResult, MetricAccumulator
from amos_zoo.metrics.case import evaluate_case
from amos_zoo.models.registry import build_network, network_kwargs
from amos_zoo.promptable.models import PROMPTABLE_MODELS

__all__ = ["RUN_CONFIG_ENV", "SegmentationModule"]

#: environment variable with the hash of the run's configuration, stored in every checkpoint (``amos-zoo reproduce``
#: sets it, so that a rerun resumes from a checkpoint only when it was written by the same configuration)
RUN_CONFIG_ENV = "AMOS_ZOO_RUN_CONFIG"


def check_deterministic_settings(device_type: str) -> None:
    """``--trainer.deterministic true`` on CUDA fails at the first step (cross-entropy's CUDA kernel has no
    deterministic implementation): a clear error naming the setting that works, before any work is done."""
    if (
        device_type == "cuda"
        and torch.are_deterministic_algorithms_enabled()
        and not torch.is_deterministic_algorithms_warn_only_enabled()
    ):
        raise ValueError(
            "--trainer.deterministic true cannot train on CUDA: cross-entropy's CUDA kernel has no deterministic "
            "implementation. Use --trainer.deterministic warn (deterministic algorithms where they exist, a "
            "warning where they do not; cuDNN autotuning off), or run on the CPU for bitwise repeatable runs"
        )


class SegmentationModule(pl.LightningModule):
    """Train and validate any registered model.

    Args:
        arch: model registry name (``unet``, ``unetr``, ``swin_unetr``, ``vnet``, ``dynunet``).
        arch_kwargs: MONAI constructor overrides (e.g. ``{"feature_size": 12}``).
        in_channels: input channels (linked from the data module by the CLI).
        num_classes: classes including background (linked from the data module).
        roi_size: sliding-window size (linked from the recipe's patch size).
        label_names: id -> organ name for logs (linked from the data module).
        optimizer: ``adamw``, ``adam`` or ``sgd``.
        amsgrad: Adam / AdamW with the AMSGrad variant (the AMOS authors' nnU-Net v1 trainer).
        lr: learning rate.
        weight_decay: weight decay.
        momentum: SGD momentum (nnU-Net uses 0.99 with nesterov).
        scheduler: ``warmup_cosine`` (linear warm-up then cosine decay, per step: research-contributions'
            LinearWarmupCosineAnnealingLR curve), ``poly`` (nnU-Net: ``lr * (1 - t / max_steps) ** 0.9``), ``plateau``
            (nnU-Net v1: ReduceLROnPlateau on the moving average of the training loss, once per ``epoch_steps``) or
            ``none``. The ``plateau``
            options follow.
        warmup_steps: linear warm-up steps for ``warmup_cosine``.
        epoch_steps: iterations of one nnU-Net epoch (250): ``plateau`` and ``early_stop_patience`` count them.
        plateau_patience: ``plateau``'s patience in epochs (nnU-Net v1: 30; factor 0.2, threshold 1e-3 absolute,
            on the loss moving average ``ma = 0.93 ma + 0.07 epoch_loss``).
        early_stop_patience: nnU-Net v1's stop: after this many epochs without the loss average improving by 5e-4,
            stop once the learning rate is at or below 1e-6 (else wait patience / 2 more epochs); None: never.
        max_steps: schedule length in optimiser steps (set it equal to ``trainer.max_steps``).
        sw_batch_size: windows per forward pass in sliding-window inference.
        sw_overlap: window overlap.
        sw_mode: window blending, ``gaussian`` or ``constant`` (MONAI's ``sliding_window_inference`` modes).
        loss_kwargs: extra ``DiceCELoss`` arguments (``squared_pred``, ``smooth_nr``, ``smooth_dr``...).
        warmup_start_lr: learning rate at step 0 of ``warmup_cosine``.
        min_lr: learning rate at the end of ``warmup_cosine``.
        val_metrics: metrics computed in validation (``dice``, ``nsd``, ``hd95``, ``assd``).
        nsd_tolerance: NSD tolerance preset or mm.
        pretrained: weights to start from (registry name, path, file:// or http(s) URL, MONAI bundle); loaded
            in ``setup("fit")`` (a resumed run then restores its own checkpoint over them). Layers that match are
            kept; the output head is re-initialised when the label set differs.
        pretrained_sha256: expected SHA-256 of ``pretrained``.
        trust_pretrained: allow unverified downloads and full unpickling of ``pretrained``.
        freeze_encoder_epochs: keep the encoder's weights fixed for this many epochs (their gradients are
            dropped before each optimiser step, which stays exact under DDP).
        pretrained_lr_scale: learning-rate factor for the layers loaded from ``pretrained`` (e.g. 0.1).
        head_init: for a new label set, ``transfer`` copies the head channels of classes both label sets name
            alike (background, spleen...) and initialises the others afresh; ``random`` re-initialises all.
        preprocessing: the data module's recipe as a dictionary (linked by the CLI; filled from the data module when
            training starts otherwise): part of the model card every checkpoint carries.
        legacy_patch_merging: Swin-UNETR with MONAI < 1.5's patch merging (set when fine-tuning from such weights).
        protocol: name of the training protocol (recorded in the model card).
        tta: the protocol predicts with mirror test-time augmentation (model card; ``amos-zoo predict`` and
            ``reproduce`` follow it).
        interpolation: how the protocol puts labels back on a scan's grid (``linear`` or ``nearest``; model card).
        blend: what prediction's mirroring averages and its sliding window blends (``logits`` or ``probabilities``;
            model card).
        sw_tiling: where prediction's windows go (``monai`` or ``nnunet``; model card). Validation during training
            uses MONAI's sliding window.

    A promptable arch (``sam_tiny``, ``medsam_vit_b``...: :mod:`amos_zoo.promptable`) builds that SAM-family network
    at the window's size and trains it with the promptable step of :mod:`amos_zoo.promptable.finetune` (MedSAM's
    recipe: prompt encoder frozen, Dice + BCE on one mask per image and its box) on a data module in prompt mode;
    validation scores each mask's thresholded prediction with its tight box by the metric suite (``val/dice_<class>``,
    ``val/mean_dice`` over classes, ``val/mask_dice`` over masks); ``pretrained`` names promptable weights.

    A network with deep supervision (DynUNet ``deep_supervision=True``) returns its outputs stacked in training;
    the loss is then nnU-Net v2's weighting: ``2**-i`` for output ``i``, the lowest resolution weighted 0,
    normalised to sum 1 (MONAI's DynUNet upsamples every output to the patch, where nnU-Net downsamples the target).
    """

    def __init__(
        self,
        arch: str = "unet",
        arch_kwargs: dict[str, Any] | None = None,
        in_channels: int = 1,
        num_classes: int = 16,
        roi_size: tuple[int, ...] = (96, 96, 96),
        label_names: dict[int, str] | None = None,
        optimizer: str = "adamw",
        amsgrad: bool = False,
        lr: float = 1e-4,
        weight_decay: float = 1e-5,
        momentum: float = 0.99,
        scheduler: str = "warmup_cosine",
        warmup_steps: int = 0,
        epoch_steps: int = 250,
        plateau_patience: int = 30,
        early_stop_patience: int | None = None,
        max_steps: int = 1000,
        sw_batch_size: int = 4,
        sw_overlap: float = 0.5,
        sw_mode: str = "gaussian",
        loss_kwargs: dict[str, Any] | None = None,
        warmup_start_lr: float = 0.0,
        min_lr: float = 0.0,
        val_metrics: tuple[str, ...] = ("dice",),
        nsd_tolerance: str | float = "uniform-2mm",
        pretrained: str | None = None,
        pretrained_sha256: str | None = None,
        trust_pretrained: bool = False,
        freeze_encoder_epochs: int = 0,
        pretrained_lr_scale: float = 1.0,
        head_init: str = "transfer",
        preprocessing: dict[str, Any] | None = None,
        legacy_patch_merging: bool = False,
        protocol: str | None = None,
        tta: bool = False,
        interpolation: str = "linear",
        blend: str = "logits",
        sw_tiling: str = "monai",
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.label_ids = list(range(1, num_classes))
        names = {int(k): v for k, v in (label_names or {}).items()}
        self.label_names = {i: names.get(i, f"class_{i}") for i in self.label_ids}
        if self.is_promptable:
            from amos_zoo.promptable.finetune import PromptLoss, build_promptable_network

            self.net = build_promptable_network(self.card)
            self.prompt_loss = PromptLoss()
        else:
            self.net = build_network(self.card)
        self.loss = DiceCELoss(to_onehot_y=True, softmax=True, **(loss_kwargs or {}))
        self.log_names = {i: re.sub(r"[^0-9a-zA-Z]+", "_", n).strip("_") for i, n in self.label_names.items()}
        self._val = MetricAccumulator(self.label_names, self.hparams.val_metrics)
        self._pretrained_keys: set[str] = set()
        self.pretrained_report: Any = None
        self._plateau: Any = None
        self._stitch_on_cpu = False  # validation's whole-volume output did not fit on the device
        self._fork_epoch: dict[str, Any] = {"losses": [], "ma": None, "best_ma": None, "best_epoch": 0, "epoch": 0}

    @property
    def is_promptable(self) -> bool:
        """The arch is a promptable model (image + box -> mask), trained with the promptable step."""
        return self.hparams.arch in PROMPTABLE_MODELS

    @property
    def card(self) -> ModelCard:
        """The model card of this network (architecture, channels, labels, recipe, window, patch merging)."""
        hp = self.hparams
        return ModelCard(
            arch=hp.arch,
            arch_kwargs=dict(hp.arch_kwargs or {}),
            in_channels=hp.in_channels,
            labels={0: "background", **self.label_names},
            recipe=Recipe.from_dict(hp.preprocessing) if hp.preprocessing else None,
            roi_size=tuple(hp.roi_size),
            sw_batch_size=hp.sw_batch_size,
            sw_overlap=hp.sw_overlap,
            sw_mode=hp.sw_mode,
            legacy_patch_merging=hp.legacy_patch_merging,
            protocol=hp.protocol,
            tta=hp.tta,
            interpolation=hp.get("interpolation", "linear"),
            blend=hp.get("blend", "logits"),
            sw_tiling=hp.get("sw_tiling", "monai"),
        )

    # ---- fine-tuning ------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        check_deterministic_settings(
            self.device.type if self._trainer is None else self.trainer.strategy.root_device.type
        )
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        prompt_protocol = datamodule.hparams.get("prompt_protocol") if hasattr(datamodule, "hparams") else None
        if self.is_promptable and prompt_protocol:  # the card records the fine-tuning protocol the data follows
            self.hparams.protocol = prompt_protocol
        elif self.is_promptable and datamodule is not None:
            raise ValueError(
                f"{self.hparams.arch} is a promptable model: train it on a data module in prompt mode "
                "(--data.prompt_protocol medsam-finetune; configs/samed2d/medsam_finetune.yaml)"
            )
        if datamodule is not None and hasattr(datamodule, "recipe") and getattr(datamodule, "spatial_dims", 3) == 3:
            # the data module's recipe, completed by the dataset's plan in its setup: every checkpoint's card
            # carries the preprocessing the network was trained with
            self.hparams.preprocessing = datamodule.recipe.to_dict()
            configuration = getattr(datamodule, "plan_configuration", None)
            planned = getattr(datamodule.recipe, "patch_rule", "fixed") == "planned"
            if planned and configuration is not None:
                self._build_planned_network(configuration)
        if stage == "fit" and self.hparams.pretrained and self.pretrained_report is None:
            self.load_pretrained()

    def _build_planned_network(self, configuration: dict[str, Any]) -> None:
        """nnU-Net's network (or DynUNet) as the dataset's plan configures it (stages, kernels, strides, features;
        the patch is the sliding window), built before the optimiser and kept in the hyperparameters, so that
        checkpoints (and their cards) rebuild it."""
        from amos_zoo.models.registry import MODEL_REGISTRY, check_patch_size

        hp = self.hparams
        current = dict(hp.arch_kwargs or {})
        arch = configuration["architecture"]
        if hp.arch not in ("nnunet", "dynunet"):  # another network on the planned patch: it must accept it
            patch = tuple(configuration["patch_size"])
            spec = MODEL_REGISTRY[hp.arch]
            overrides = {spec.fixed_size_arg: patch, **current} if spec.fixed_size_arg else current
            try:
                check_patch_size(hp.arch, patch, overrides)
            except ValueError as err:
                raise ValueError(f"{err}: the dataset's plan chose this patch; give --data.patch_size") from err
            if list(hp.roi_size) != list(configuration["patch_size"]):
                hp.roi_size = tuple(configuration["patch_size"])
                if MODEL_REGISTRY[hp.arch].fixed_size_arg:  # UNETR: its input size is the patch
                    self.net = build_network(self.card)
            return
        if hp.arch == "nnunet":
            planned = {**arch, "deep_supervision": bool(current.get("deep_supervision", False))}
        else:  # MONAI's DynUNet with the planned topology (its other arguments kept)
            planned = {
                **current,
                "kernel_size": arch["kernel_sizes"],
                "strides": arch["strides"],
                "filters": arch["features_per_stage"],
                "upsample_kernel_size": arch["strides"][1:],
            }
            if "deep_supr_num" in current:
                planned["deep_supr_num"] = min(int(current["deep_supr_num"]), arch["n_stages"] - 2)
        if current == planned and list(hp.roi_size) == list(configuration["patch_size"]):
            return
        hp.arch_kwargs, hp.roi_size = planned, tuple(configuration["patch_size"])
        self.net = build_network(self.card)
        print(
            f"amos-zoo: {hp.arch} topology from the dataset's plan: {arch['n_stages']} stages, patch "
            f"{tuple(hp.roi_size)}, strides {arch['strides']}"
        )

    def load_pretrained(self) -> Any:
        """Load ``pretrained`` into the network: matching layers kept, the head re-initialised for a new label set.

        Returns the :class:`~amos_zoo.weights.LoadReport` (also printed and kept as ``pretrained_report``).
        """
        from amos_zoo.models.registry import head_class_dims
        from amos_zoo.weights.formats import read_weights_file, to_model_keys
        from amos_zoo.weights.loading import apply_weights, file_card, resolve, transfer_head

        hp = self.hparams
        if self.is_promptable:  # SAM / MedSAM / SAM-Med2D weights: their own layouts and loaders
            from amos_zoo.promptable.finetune import resolve_and_load

            report = resolve_and_load(self.net, hp.pretrained, hp.pretrained_sha256, hp.trust_pretrained)
            self._pretrained_keys = set(report.loaded)
            self.pretrained_report = report
            print(f"amos-zoo fine-tune: {report.summary()}")
            return report
        path, entry, verified = resolve(hp.pretrained, sha256=hp.pretrained_sha256, trust=hp.trust_pretrained)
        raw = read_weights_file(path, trust=hp.trust_pretrained)
        card = file_card(raw, entry)
        if card is not None and card.arch != hp.arch:
            raise ValueError(f"weights {hp.pretrained!r} are for {card.arch}, but this run trains {hp.arch}")
        ours = {0: "background", **self.label_names}
        theirs = card.labels if card is not None else None
        same_labels = theirs is not None and _same_names(theirs, ours)
        class_dims = head_class_dims(hp.arch, hp.in_channels, hp.num_classes, **network_kwargs(self.card))
        reinit = set(class_dims) if theirs is not None and not same_labels else set()
        report = apply_weights(self.net, raw, card, source=str(hp.pretrained), reinit=reinit, reinit_head=True)
        report.verified = verified
        if theirs is not None and not same_labels and self.hparams.head_init == "transfer":
            by_name = {label_key(name): i for i, name in theirs.items()}
            class_map = {i: by_name[label_key(n)] for i, n in ours.items() if label_key(n) in by_name}
            state, _ = to_model_keys(raw)
            copied = transfer_head(self.net, state, class_dims, class_map)
            if copied:
                shared = ", ".join(ours[i] for i in sorted(class_map))
                print(f"amos-zoo fine-tune: head channels of the shared classes ({shared}) copied from the weights")
        if report.legacy_patch_merging:  # the saved hyperparameters (and card) must rebuild the same computation
            hp.legacy_patch_merging = True
        self._pretrained_keys = set(report.loaded)
        self.pretrained_report = report
        print(f"amos-zoo fine-tune: {report.summary()}")
        return report

    def _encoder_parameters(self) -> list[torch.nn.Parameter]:
        from amos_zoo.models.registry import MODEL_REGISTRY

        rule = MODEL_REGISTRY[self.hparams.arch].is_encoder_key
        return [p for name, p in self.net.named_parameters() if rule(name)]

    def on_before_optimizer_step(self, optimizer: Any) -> None:
        """Frozen encoder epochs: drop the encoder's gradients (after the DDP all-reduce) so it does not move."""
        if self.current_epoch < self.hparams.freeze_encoder_epochs:
            for param in self._encoder_parameters():
                param.grad = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (B, C, *spatial)."""
        if self.is_promptable:
            raise TypeError(
                f"{self.hparams.arch} is a promptable model (image + prompt -> mask): use "
                "amos_zoo.promptable.finetune.prompt_logits(module.net, image, box) or amos-zoo evaluate-prompts"
            )
        return self.net(x)

    # ---- training ---------------------------------------------------------------------------------
    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        if self.is_promptable:
            from amos_zoo.promptable.finetune import prompt_logits

            logits = prompt_logits(self.net, _plain(batch["image"]), _plain(batch["box"]))
            loss = self.prompt_loss(logits, _plain(batch["mask"]))
            self.log("train/loss", loss, prog_bar=True, batch_size=logits.shape[0])
            return loss
        image, label = _plain(batch["image"]), _plain(batch["label"])
        out = self(image)
        if isinstance(out, list | tuple):  # nnU-Net's deep supervision: outputs at decreasing resolutions
            weights = deep_supervision_weights(len(out)).to(out[0].device)
            loss = sum(w * self.loss(o, downsample_label(label, o.shape[2:])) for o, w in zip(out, weights) if w > 0)
        elif out.ndim == image.ndim + 1:  # deep supervision: (B, outputs, C, *spatial)
            weights = deep_supervision_weights(out.shape[1]).to(out.device)
            loss = sum(w * self.loss(out[:, i], label) for i, w in enumerate(weights) if w > 0)
        else:
            loss = self.loss(out, label)
        self.log("train/loss", loss, prog_bar=True, batch_size=image.shape[0])
        return loss

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        """nnU-Net v1's epoch bookkeeping for ``plateau`` and ``early_stop_patience``: every ``epoch_steps``
        iterations, the mean loss updates its moving average, the scheduler steps on it, and patience is checked.

        Under DDP the epoch's mean loss is averaged over every process first (each has trained on its own samples),
        so every process takes the same plateau decision, keeps the same learning rate and stops at the same step.
        """
        hp = self.hparams
        if hp.scheduler != "plateau" and hp.early_stop_patience is None:
            return
        state = self._fork_epoch
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        state["losses"].append(float(loss))
        if self.global_step == 0 or self.global_step % hp.epoch_steps:
            return
        epoch_loss = sum(state["losses"]) / len(state["losses"])
        if self.trainer.world_size > 1:  # every process reaches this step together, so the collective matches
            local = torch.tensor(epoch_loss, dtype=torch.float64, device=self.device)
            epoch_loss = float(self.trainer.strategy.reduce(local, reduce_op="mean"))
        state["losses"] = []
        state["ma"] = epoch_loss if state["ma"] is None else 0.93 * state["ma"] + 0.07 * epoch_loss
        self.log("train/loss_ma", state["ma"])
        if hp.scheduler == "plateau":
            self._plateau.step(state["ma"])
        epoch = state["epoch"]
        if state["best_ma"] is None or state["ma"] + 5e-4 < state["best_ma"]:
            state["best_ma"], state["best_epoch"] = state["ma"], epoch
        if hp.early_stop_patience is not None and epoch - state["best_epoch"] > hp.early_stop_patience:
            if self.trainer.optimizers[0].param_groups[0]["lr"] > 1e-6:
                state["best_epoch"] = epoch - hp.early_stop_patience // 2
            else:
                self.trainer.should_stop = True
        state["epoch"] = epoch + 1

    # ---- validation -------------------------------------------------------------------------------
    @torch.no_grad()
    def sliding_window(self, image: torch.Tensor) -> torch.Tensor:
        """Gaussian-weighted sliding-window logits of a whole volume.

        When the whole-volume output (16 classes of a full AMOS scan) does not fit on the device beside the network,
        the windows still run on the device and are stitched in CPU memory, for this and every later volume: the
        Predictor's fallback (:meth:`amos_zoo.infer.predictor.Predictor._logits`), in validation.
        """
        return with_cpu_stitching_fallback(
            self,
            lambda stitch_device: self._sliding_window(image, stitch_device),
            image.device,
            f"a {tuple(image.shape[2:])} volume in validation",
        )

    def _sliding_window(self, image: torch.Tensor, stitch_device: str | None) -> torch.Tensor:
        extra = {} if stitch_device is None else {"sw_device": image.device, "device": stitch_device}
        return sliding_window_inference(
            image,
            roi_size=self.hparams.roi_size,
            sw_batch_size=self.hparams.sw_batch_size,
            predictor=self,
            overlap=self.hparams.sw_overlap,
            mode=self.hparams.sw_mode,
            **extra,
        )

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        if self.is_promptable:
            return self._prompt_validation_step(batch, batch_idx)
        image, label = batch["image"], batch["label"]
        pred = self.sliding_window(image).argmax(1)
        spacing = _spacing_of(image)
        case_ids, modalities = batch.get("case_id"), batch.get("modality")
        for b in range(image.shape[0]):
            values = evaluate_case(
                label[b, 0].cpu().numpy().astype("uint8"),
                pred[b].cpu().numpy().astype("uint8"),
                spacing,
                self.label_ids,
                metrics=self.hparams.val_metrics,
                tolerance=self.hparams.nsd_tolerance,
            )
            key = str(case_ids[b]) if case_ids is not None else f"{self.global_rank}:{batch_idx}:{b}"
            modality = str(modalities[b]) if modalities is not None else "CT"
            self._val.add(CaseResult(key, modality, values))

    @torch.no_grad()
    def _prompt_validation_step(self, batch: dict, batch_idx: int) -> None:
        """Each mask's prediction with its tight box, thresholded (logit > 0), scored by the metric suite as a case
        holding that mask's class only (the other classes NaN: left out of their means)."""
        from amos_zoo.promptable.finetune import prompt_logits

        pred = prompt_logits(self.net, _plain(batch["image"]), _plain(batch["box"])) > 0
        nan = {m: float("nan") for m in self.hparams.val_metrics}
        for b in range(pred.shape[0]):
            values = evaluate_case(
                (batch["mask"][b, 0] > 0).cpu().numpy().astype("uint8"),
                pred[b, 0].cpu().numpy().astype("uint8"),
                (1.0, 1.0),
                [1],
                metrics=self.hparams.val_metrics,
                tolerance=self.hparams.nsd_tolerance,
            )[1]
            class_id = int(batch["class_id"][b])
            if class_id not in self.label_names:
                raise ValueError(f"{batch['case_id'][b]}: class {class_id} is not in the module's labels (num_classes)")
            key = str(batch["case_id"][b])
            modality = str(batch["modality"][b]) if "modality" in batch else "CT"
            self._val.add(CaseResult(key, modality, {i: values if i == class_id else nan for i in self.label_ids}))

    def on_validation_epoch_end(self) -> None:
        """Per-organ means over every validation case of every process (each case once, by its id), aggregated
        by the metric suite's accumulator (the same code as ``amos-zoo evaluate``)."""
        self._val.gather()
        summary = self._val.summary()
        self._val.reset()
        overall = summary["all"]
        nan = float("nan")
        if getattr(self, "validation_cut_short", False):  # pre-empted mid-validation: a subset's means would mislead
            self.validation_cut_short = False
            for metric in self.hparams.val_metrics:
                self.log(f"val/mean_{metric}", nan, sync_dist=False)  # Lightning's checkpointing ranks NaN last
            return
        for metric in self.hparams.val_metrics:
            for lid, name in self.label_names.items():
                value = overall["per_organ"][name][metric]
                self.log(f"val/{metric}_{self.log_names[lid]}", nan if value is None else value, sync_dist=False)
            mean = overall["overall"][metric]
            self.log(f"val/mean_{metric}", nan if mean is None else mean, prog_bar=True, sync_dist=False)
            if self.is_promptable:  # the mean over masks, as the prompt protocols average
                pooled = overall["pooled"][metric]
                self.log(f"val/mask_{metric}", nan if pooled is None else pooled, sync_dist=False)
        self.log("val/cases", float(overall["cases"]), sync_dist=False)

    def predict_step(self, batch: dict, batch_idx: int) -> dict:
        """Labels on the preprocessed grid (``amos-zoo predict --weights`` maps them back to the input grid)."""
        labels = self.sliding_window(batch["image"]).argmax(1)
        return {"case_id": batch.get("case_id"), "labels": labels.to(torch.uint8).cpu()}

    test_step = validation_step
    on_test_epoch_end = on_validation_epoch_end

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Refuse a checkpoint whose label map differs from the data module's (clear error, not a shape clash)."""
        meta = checkpoint.get("amos_zoo", {})
        if "fork_epoch" in meta:
            self._fork_epoch = dict(meta["fork_epoch"])
        self._pending_plateau = meta.get("plateau")
        stored = meta.get("labels")
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        if stored is None or datamodule is None or not hasattr(datamodule, "index"):
            return
        current = datamodule.index.labels.to_json()
        if stored != current:
            raise ValueError(
                f"the checkpoint was trained with labels {stored} but the dataset {datamodule.root} has {current}; "
                "use a checkpoint for this label map, or fine-tune from weights instead of resuming"
            )

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Store the model card (and the dataset's label map as written), so a checkpoint alone can segment a scan,
        and nnU-Net v1's epoch bookkeeping (a resumed ``plateau`` run continues it)."""
        meta: dict[str, Any] = {"format": 2, "card": self.card.to_dict(), "fork_epoch": dict(self._fork_epoch)}
        if self.is_promptable:  # the promptable model's own card (input pipeline, output rule) at this input size
            from amos_zoo.promptable.finetune import promptable_checkpoint_card

            meta["promptable"] = promptable_checkpoint_card(self.card)
        if os.environ.get(RUN_CONFIG_ENV):  # reproduce's run configuration: a rerun resumes only its own checkpoints
            meta["run_config_hash"] = os.environ[RUN_CONFIG_ENV]
        if self._plateau is not None:
            meta["plateau"] = self._plateau.state_dict()
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        if datamodule is not None and hasattr(datamodule, "index"):
            meta["labels"] = datamodule.index.labels.to_json()
        checkpoint["amos_zoo"] = meta

    # ---- optimisation -----------------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        hp = self.hparams
        params: Any = self.parameters()
        if self.is_promptable:  # the frozen prompt encoder is not optimised (train_one_gpu.py: encoder + decoder)
            params = [p for p in self.parameters() if p.requires_grad]
        elif self._pretrained_keys and hp.pretrained_lr_scale != 1.0:
            named = dict(self.net.named_parameters())
            pre = [p for k, p in named.items() if k in self._pretrained_keys]
            new = [p for k, p in named.items() if k not in self._pretrained_keys]
            params = [{"params": pre, "lr": hp.lr * hp.pretrained_lr_scale}, {"params": new, "lr": hp.lr}]
        if hp.optimizer == "adamw":
            opt = torch.optim.AdamW(params, lr=hp.lr, weight_decay=hp.weight_decay, amsgrad=hp.amsgrad)
        elif hp.optimizer == "adam":
            opt = torch.optim.Adam(params, lr=hp.lr, weight_decay=hp.weight_decay, amsgrad=hp.amsgrad)
        elif hp.optimizer == "sgd":
            opt = torch.optim.SGD(params, lr=hp.lr, weight_decay=hp.weight_decay, momentum=hp.momentum, nesterov=True)
        else:
            raise ValueError(f"optimizer must be adamw, adam or sgd; got {hp.optimizer!r}")
        if hp.scheduler == "none":
            return opt
        if hp.scheduler == "warmup_cosine":
            sched = torch.optim.lr_scheduler.LambdaLR(
                opt, _warmup_cosine(hp.warmup_steps, hp.max_steps, hp.warmup_start_lr / hp.lr, hp.min_lr / hp.lr)
            )
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
        if hp.scheduler == "poly":
            total = max(1, hp.max_steps)
            sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: (1 - min(t, total - 1) / total) ** 0.9)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
        if hp.scheduler == "plateau":  # stepped by on_train_batch_end once per nnU-Net epoch (not by Lightning)
            self._plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
                opt, mode="min", factor=0.2, patience=hp.plateau_patience, threshold=1e-3, threshold_mode="abs"
            )
            if getattr(self, "_pending_plateau", None):
                self._plateau.load_state_dict(self._pending_plateau)
            return opt
        raise ValueError(f"scheduler must be warmup_cosine, poly, plateau or none; got {hp.scheduler!r}")

    def lr_scheduler_step(self, scheduler: Any, metric: Any) -> None:
        """Step a scheduler (with the monitored value for ReduceLROnPlateau)."""
        if metric is None:
            scheduler.step()
        else:
            scheduler.step(metric)


def _plain(x: Any) -> Any:
    """A MONAI MetaTensor as a plain tensor (the network needs no metadata; plain tensors cost less per operation)."""
    return x.as_tensor() if hasattr(x, "as_tensor") else x


def downsample_label(label: torch.Tensor, shape: Any) -> torch.Tensor:
    """A label map at a deep-supervision output's resolution, as nnU-Net's DownsampleSegForDSTransform makes it
    (nearest-exact interpolation)."""
    if tuple(label.shape[2:]) == tuple(shape):
        return label
    return torch.nn.functional.interpolate(label.float(), tuple(shape), mode="nearest-exact").to(label.dtype)


def deep_supervision_weights(outputs: int) -> torch.Tensor:
    """nnU-Net v2's deep-supervision loss weights: ``2**-i`` for output ``i`` (full resolution first), the lowest
    resolution 0, normalised to sum 1 (nnUNetTrainer._build_loss)."""
    weights = torch.tensor([1 / 2**i for i in range(outputs)], dtype=torch.float32)
    if outputs > 1:
        weights[-1] = 0
    return weights / weights.sum()


def _warmup_cosine(warmup: int, total: int, start: float, end: float):
    """LR factor at step t: linear from ``start`` to 1 over ``warmup`` steps, then cosine down to ``end`` at
    ``total`` (research-contributions' LinearWarmupCosineAnnealingLR closed form, per step instead of per epoch)."""
    import math

    def factor(t: int) -> float:
        if t < warmup:
            return start + t * (1.0 - start) / max(warmup - 1, 1)
        span = max(total - warmup, 1)
        return end + 0.5 * (1.0 - end) * (1.0 + math.cos(math.pi * min(t - warmup, span) / span))

    return factor


def _same_names(a: dict[int, str], b: dict[int, str]) -> bool:
    """Two label maps with the same ids and names (case, spaces and underscores ignored)."""

    return sorted(a) == sorted(b) and all(label_key(a[i]) == label_key(b[i]) for i in a)


def _spacing_of(image: torch.Tensor) -> tuple[float, ...]:
    """Voxel spacing of a (batched) MetaTensor from its affine; 1 mm when there is none."""
    affine = getattr(image, "affine", None)
    n = image.ndim - 2
    if affine is None:
        return (1.0,) * n
    a = torch.as_tensor(affine)
    if a.ndim == 3:
        a = a[0]
    return tuple(float(v) for v in torch.linalg.norm(a[:n, :n].double(), dim=0))
