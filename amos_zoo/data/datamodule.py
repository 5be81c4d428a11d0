"""The one LightningDataModule every model trains with.

It reads the dataset index, picks a task's cases from the official splits, runs the recipe's
deterministic preprocessing once into a validated disk cache (MONAI PersistentDataset; MetaTensors for
validation entries, plain tensors for training entries; the source files' size and modification time are part
of the case key, the recipe's deterministic settings part of every entry's name), samples positive/negative
patches for training and serves whole volumes for validation. Under DDP the validation cases are split between
processes without padding, so no case is scored twice.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from monai import transforms as mt
from monai.data import DataLoader, Dataset, list_data_collate

from amos_zoo.data.cache import ValidatedPersistentDataset, allow_cache_types, recipe_cache_key
from amos_zoo.data.index import DatasetIndex, load_index, select_task_cases
from amos_zoo.data.recipes import Recipe, get_recipe
from amos_zoo.data.resumable import EpochSeededDataset, EpochSeededSampler
from amos_zoo.data.transforms import deterministic_transforms, train_transforms

__all__ = ["SegmentationDataModule"]


def worker_init(worker_id: int) -> None:
    """DataLoader workers: MONAI's per-worker transform seeding, and SIGTERM / SIGINT left to the main process.

    A cluster's pre-emption (or Ctrl-C) signals the whole process group; the main process saves a checkpoint
    and stops (``PreemptionCheckpoint``), which needs its workers alive until it shuts them down.
    """
    import signal

    from monai.data.utils import worker_init_fn

    worker_init_fn(worker_id)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@dataclass(frozen=True)
class CacheJob:
    """One preprocessing-cache entry to fill (picklable: filled in a worker process)."""

    recipe: Recipe
    batch_size: int
    cache_dir: Path
    stage: str
    item: dict


def cache_dataset(recipe: Recipe, batch_size: int, cache_dir: Path, stage: str, data: list[dict]) -> Dataset:
    """The disk-cached dataset of one stage. PersistentDataset stores everything before the first random
    transform, which for training includes the padding to the patch size: the entry name says which stage and
    patch."""
    chain = deterministic_transforms(recipe) + (train_transforms(recipe, batch_size) if stage == "train" else [])
    cache_dir.mkdir(parents=True, exist_ok=True)
    allow_cache_types()
    ds = ValidatedPersistentDataset(
        data, transform=mt.Compose(chain), cache_dir=cache_dir, track_meta=stage != "train", weights_only=True
    )  # training entries stored as plain tensors: read back without rebuilding MetaTensors for every sample
    suffix = "-train-" + "x".join(str(p) for p in recipe.patch_size) if stage == "train" else "-val"
    ds.transform_hash = recipe_cache_key(recipe) + suffix
    return ds


def fill_cache_entry(job: CacheJob) -> None:
    """Preprocess one case into the cache (nothing to do when a valid entry exists)."""
    import multiprocessing

    if multiprocessing.parent_process() is not None:
        torch.set_num_threads(1)  # one case per worker process: the processes are the parallelism
    cache_dataset(job.recipe, job.batch_size, job.cache_dir, job.stage, [job.item])._cachecheck(job.item)


def _stamp(paths: list[str]) -> str:
    """Size and modification time of the source files: part of the cache key, so edited files are re-read."""
    parts = []
    for p in paths:
        st = os.stat(p)
        parts.append(f"{st.st_size}:{st.st_mtime_ns}")
    return "|".join(parts)


class ResumableDataLoader(DataLoader):
    """A DataLoader that tells Lightning it resumes exactly (its sampler skips the batches already trained)."""

    def state_dict(self) -> dict:
        """Nothing to store: the position is recomputed from the restored step count."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Nothing to restore (see :meth:`state_dict`)."""


class SegmentationDataModule(pl.LightningDataModule):
    """Data for every model: AMOS (Task 1/2), MSD and nnU-Net layouts through one index and one recipe.

    Args:
        root: dataset folder holding dataset.json (AMOS / MSD / nnU-Net v2 raw layout).
        task: ``amos-ct`` (Task 1), ``amos-ctmr`` (Task 2), ``amos-mr`` or ``all``.
        recipe: preprocessing recipe name (``btcv``, ``amos-nnunet``, ``quickstart``, ``tiny``...).
        spacing: override the recipe's target spacing (mm, x y z).
        patch_size: override the recipe's training patch size (voxels, x y z).
        num_samples: override patches drawn per volume per step.
        batch_size: volumes per training batch (each gives ``num_samples`` patches).
        num_workers: data loader processes.
        cache_dir: where preprocessed cases are stored; default ``<root>/.amos_zoo_cache/<recipe>``.
        cache: ``disk`` (PersistentDataset), or ``none`` to preprocess every time.
        train_split: split to train on (official ``training``).
        val_split: split to validate on (official ``validation``); when the dataset has none, the
            last ``val_fraction`` of the training cases are held out.
        val_fraction: fraction held out when there is no validation split.
        max_train_cases: use at most this many training cases (smoke runs).
        max_val_cases: use at most this many validation cases.
        dataset_json: index file, default ``root/dataset.json``.
        modality_override: case id -> CT/MRI, replacing the AMOS id rule.
        seed: seed of the training order and augmentation (a function of seed, epoch and the sample's position in
            the epoch, so every visit of a case has its own augmentation and a run resumed mid-epoch sees the same
            batches as an uninterrupted one).
        spatial_dims: 3 for volumes; 2 for SA-Med2D-layout slice folders (``amos-zoo export-2d``): slices are read
            with their masks, grouped by 3D case for the validation hold-out, and cropped to a 2D ``patch_size``.
        fold: cross-validation fold (0..num_folds-1) over every labelled case of the task (the training and the
            validation split together, as nnU-Net Revisited evaluated AMOS), split as nnU-Net splits
            (:func:`amos_zoo.data.folds.crossval_split`); None: the official training / validation split.
        num_folds: number of cross-validation folds.
        epoch_iterations: batches per training epoch (nnU-Net's 250); None: one pass over the training cases.
        global_batch: under N processes (GPUs), ``batch_size`` is the global batch, split evenly over the processes
            (nnU-Net v2), and foreground oversampling follows each sample's position in the global batch; False:
            every process takes ``batch_size`` (nnU-Net v1, research-contributions), the global batch is N times it.
            A global batch that N does not divide is refused. Protocol cards set it as their source does.
        prompt_protocol: 2D only: a promptable model's fine-tuning protocol card (``medsam-finetune``): each training
            item is an image through the card's input pipeline at ``patch_size`` (RGB, 3 channels), one of its masks
            drawn at random at that size and the mask's box in input pixels, widened per side by up to the card's
            shift; each validation item is one mask of a validation image with its tight box
            (:mod:`amos_zoo.promptable.finetune`). The draws follow ``seed`` like the rest of the random state.
        box_shift: prompt mode: the box widening in input pixels, replacing the card's (MedSAM's 20 px belong to a
            1024 x 1024 input).
    """

    def __init__(
        self,
        root: str,
        task: str = "amos-ct",
        recipe: str = "btcv",
        spacing: tuple[float, float, float] | None = None,
        patch_size: tuple[int, ...] | None = None,
        num_samples: int | None = None,
        batch_size: int = 1,
        num_workers: int = 2,
        cache_dir: str | None = None,
        cache: str = "disk",
        train_split: str = "training",
        val_split: str = "validation",
        val_fraction: float = 0.2,
        max_train_cases: int | None = None,
        max_val_cases: int | None = None,
        dataset_json: str | None = None,
        modality_override: dict[str, str] | None = None,
        seed: int = 0,
        spatial_dims: int = 3,
        fold: int | None = None,
        num_folds: int = 5,
        epoch_iterations: int | None = None,
        global_batch: bool = False,
        prompt_protocol: str | None = None,
        box_shift: int | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.root = Path(root)
        self.task = task
        self.recipe: Recipe = get_recipe(
            recipe,
            task=task,
            spacing=spacing,
            spacing_rule="fixed" if spacing is not None else None,  # a spacing given here wins over a plan's
            patch_size=patch_size,
            num_samples=num_samples,
            # a patch or spacing given here wins over a planned patch (which belongs to the planned spacing)
            patch_rule="fixed" if patch_size is not None or spacing is not None else None,
        )
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.cache = cache
        self.cache_dir = Path(cache_dir) if cache_dir else self.root / ".amos_zoo_cache" / self.recipe.name
        self._index: DatasetIndex | None = None
        self.train_ds = self.val_ds = None
        self.plan_configuration: dict | None = None  # nnU-Net v2 3d_fullres configuration, once planned
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 (SA-Med2D slices) or 3 (volumes); got {spatial_dims}")
        self.spatial_dims = spatial_dims
        if spatial_dims == 2 and len(self.recipe.patch_size) != 2:
            raise ValueError(f"2D mode needs a 2D patch_size (e.g. [256, 256]); got {self.recipe.patch_size}")
        if prompt_protocol is not None and spatial_dims != 2:
            raise ValueError("data.prompt_protocol (promptable fine-tuning) needs 2D slices: data.spatial_dims 2")
        if fold is not None and not 0 <= fold < num_folds:
            raise ValueError(f"fold must be in 0..{num_folds - 1}, got {fold}")

    # ---- facts other components link to -------------------------------------------------------------
    @property
    def index(self) -> DatasetIndex:
        """The dataset index (read on first use)."""
        if self._index is None:
            if self.spatial_dims == 2:
                from amos_zoo.data.samed2d import read_samed2d

                self._index = read_samed2d(self.root)
            else:
                self._index = load_index(self.root, self.hparams.dataset_json, self.hparams.modality_override)
        return self._index

    @property
    def num_classes(self) -> int:
        """Classes including background, from the dataset's label map."""
        return self.index.labels.num_classes

    @property
    def num_channels(self) -> int:
        """Input channels, from the dataset's modality / channel list (3 in prompt mode: the promptable models'
        pipelines feed RGB)."""
        if self.hparams.get("prompt_protocol"):
            return 3
        return self.index.num_channels

    @property
    def label_names(self) -> dict[int, str]:
        """id -> readable organ name."""
        return self.index.labels.display_names

    @property
    def patch_size(self) -> tuple[int, ...]:
        """Training patch size (also the sliding-window size)."""
        return tuple(self.recipe.patch_size)

    @property
    def recipe_settings(self) -> dict[str, Any]:
        """The recipe as a plain dictionary (linked into the model's card by the CLI)."""
        return self.recipe.to_dict()

    # ---- splits -------------------------------------------------------------------------------------
    def slice_dicts(self, stage: str) -> list[dict[str, Any]]:
        """2D mode: slice dictionaries of the ``train`` or ``val`` stage. When ``val_split`` names a split the index
        marks (the SAM-Med2D demo's ``test``), its slices validate and the ``training`` slices train; otherwise the
        last ``val_fraction`` of the 3D cases (all their slices) are held out, so no case is on both sides."""
        index = self.index
        slices = [s for s in index.slices if s.split == "training" and s.masks]
        marked = [s for s in index.slices if s.split == self.hparams.val_split and s.masks]
        if marked and self.hparams.val_split != "training":
            keep = slices if stage == "train" else marked
        else:
            cases = sorted({index.case_of(s) for s in slices})
            n_val = max(1, int(round(len(cases) * self.hparams.val_fraction)))
            val_cases = set(cases[-n_val:]) if len(cases) > 1 else set()
            keep = [s for s in slices if (index.case_of(s) in val_cases) == (stage == "val")]
            if stage == "val" and not keep:
                keep = slices
        limit = self.hparams.max_train_cases if stage == "train" else self.hparams.max_val_cases
        if limit:
            keep = keep[:limit]
        return [
            {"image": str(s.image), "masks": [(str(m.path), m.class_id) for m in s.masks], "case_id": s.image.stem}
            for s in keep
        ]

    def _setup_2d(self, stage: str | None) -> None:
        from amos_zoo.data.samed2d import LoadSamed2Dd

        if self.hparams.get("prompt_protocol"):
            return self._setup_prompts(stage)
        patch = tuple(self.recipe.patch_size)
        train_chain = [
            LoadSamed2Dd(),
            mt.SpatialPadd(["image", "label"], spatial_size=patch),
            mt.RandCropByPosNegLabeld(
                ["image", "label"],
                label_key="label",
                spatial_size=patch,
                pos=self.recipe.pos,
                neg=self.recipe.neg,
                num_samples=self.recipe.num_samples,
                image_key="image",
                image_threshold=0,
            ),
        ]
        if stage in (None, "fit"):
            self.train_ds = Dataset(self.slice_dicts("train"), transform=mt.Compose(train_chain))
        if stage in (None, "fit", "validate", "test"):
            self.val_ds = Dataset(self.slice_dicts("val"), transform=mt.Compose([LoadSamed2Dd()]))

    def _setup_prompts(self, stage: str | None) -> None:
        """Prompt mode: one item per training image (a random mask and its widened box, drawn per sample), one
        item per validation mask (its tight box)."""
        from amos_zoo.promptable.finetune import PromptSampled, prompt_protocol_settings

        pipeline, shift = prompt_protocol_settings(self.hparams.prompt_protocol, self.hparams.box_shift)
        size = self.recipe.patch_size[0]
        if len(set(self.recipe.patch_size)) != 1:
            raise ValueError(f"prompt mode takes a square input (data.patch_size [S, S]); got {self.recipe.patch_size}")
        if stage in (None, "fit"):
            train = self.slice_dicts("train")
            if not train:
                raise ValueError(f"{self.root}: no training slices with masks")
            self.train_ds = Dataset(train, transform=mt.Compose([PromptSampled(pipeline, size, shift)]))
        if stage in (None, "fit", "validate", "test"):
            per_mask = [
                {"image": d["image"], "masks": [mask], "case_id": Path(mask[0]).stem}
                for d in self.slice_dicts("val")
                for mask in d["masks"]
            ]
            self.val_ds = Dataset(per_mask, transform=mt.Compose([PromptSampled(pipeline, size, 0)]))

    @property
    def split_kind(self) -> str:
        """``cross-validation``, ``official`` or ``hold-out``."""
        if self.hparams.fold is not None:
            return "cross-validation"
        return "official" if self.hparams.val_split in self.index.splits else "hold-out"

    @property
    def split_description(self) -> str:
        """How training and validation cases are chosen (recorded in run rows)."""
        if self.hparams.fold is not None:
            return (
                f"fold {self.hparams.fold} of {self.hparams.num_folds}-fold cross-validation over every labelled "
                f"{self.task} case (nnU-Net's split)"
            )
        if self.hparams.val_split in self.index.splits:
            return f"official: train on '{self.hparams.train_split}', evaluate on '{self.hparams.val_split}'"
        return f"hold-out: the last {self.hparams.val_fraction:.0%} of '{self.hparams.train_split}'"

    def case_dicts(self, stage: str) -> list[dict[str, Any]]:
        """Case dictionaries of the ``train`` or ``val`` stage after task selection, fold and limits."""
        index = self.index
        train = select_task_cases(index, self.hparams.train_split, self.task)
        if self.hparams.fold is not None:
            from amos_zoo.data.folds import crossval_split

            labelled = [c for c in train if c.label is not None]
            if self.hparams.val_split in index.splits:
                labelled += [c for c in select_task_cases(index, self.hparams.val_split, self.task) if c.label]
            by_id = {c.case_id: c for c in labelled}
            split = crossval_split(list(by_id), self.hparams.num_folds)[self.hparams.fold]
            train, val = [by_id[i] for i in split["train"]], [by_id[i] for i in split["val"]]
        elif self.hparams.val_split in index.splits:
            val = select_task_cases(index, self.hparams.val_split, self.task)
        else:  # no official validation split (MSD, nnU-Net): a deterministic hold-out of the last cases
            n_val = max(1, int(round(len(train) * self.hparams.val_fraction)))
            train, val = train[:-n_val], train[-n_val:]
        cases = train if stage == "train" else val
        limit = self.hparams.max_train_cases if stage == "train" else self.hparams.max_val_cases
        if limit:
            cases = cases[:limit]
        out = []
        for case in cases:
            if case.label is None:
                continue
            d = case.as_dict()
            d["source_stamp"] = _stamp([str(p) for p in case.images] + [str(case.label)])
            out.append(d)
        return out

    # ---- the dataset's plan (nnU-Net's fingerprint) --------------------------------------------------------
    @property
    def plan_path(self) -> Path:
        """Where the plan of this recipe and task is written: beside the preprocessing cache."""
        return self.cache_dir / f"plan-{self.recipe.name}-{self.task}.json"

    def plan_cases(self) -> list[tuple[str, list[str], str]]:
        """The cases a plan fingerprints: every labelled case of the task (training and validation splits), as
        nnU-Net's AMOS conversions and the AMOS authors' fork put all of them in imagesTr."""
        index = self.index
        cases = [c for split in ("training", "validation") if split in index.splits for c in index.splits[split]]
        wanted = set(c.case_id for c in select_task_cases(index, self.hparams.train_split, self.task))
        if self.hparams.val_split in index.splits:
            wanted |= {c.case_id for c in select_task_cases(index, self.hparams.val_split, self.task)}
        return [(c.case_id, [str(p) for p in c.images], str(c.label)) for c in cases if c.label and c.case_id in wanted]

    def ensure_plan(self, progress: bool = True) -> None:
        """Complete a planned recipe from the dataset's plan (made once, beside the cache, then read back)."""
        if not self.recipe.needs_plan:
            return
        from amos_zoo.data.plan import load_plan, make_plan

        self.cache_dir.mkdir(parents=True, exist_ok=True)
        plan = load_plan(self.plan_path) if self.plan_path.is_file() else None
        if plan is not None and self.recipe.patch_rule == "planned" and plan.configuration is None:
            self.plan_path.unlink()  # a plan made before configurations: planned again
            plan = None
        if plan is None:
            workers = max(1, min(self.num_workers or 1, os.cpu_count() or 1))
            plan = make_plan(
                self.plan_cases(),
                self.recipe.name,
                self.recipe.fingerprint,
                self.plan_path,
                workers,
                progress,
                **self._configuration_args(),
            )
        self.plan_configuration = plan.configuration
        self.recipe = self.recipe.with_plan(plan)

    def _configuration_args(self) -> dict:
        """What nnU-Net's 3d_fullres configuration needs beyond the fingerprint: the classes and how nnU-Net's
        AMOS conversions name the channel (``CT``: CT normalisation; otherwise per-case z-score)."""
        if self.recipe.fingerprint != "nnunet-v2":
            return {}
        name = "CT" if self.recipe.ct_normalization == "nnunet" else "either_CT_or_MR"
        return {"num_classes": self.num_classes, "channel_names": [name] * self.index.num_channels}

    def _dataset(self, data: list[dict], chain: list, stage: str) -> Dataset:
        """A cached dataset. PersistentDataset stores everything before the first random transform, which
        for training includes the padding to the patch size: the entry name says which stage and patch."""
        if self.cache == "none":
            return Dataset(data, transform=mt.Compose(chain))
        if self.cache != "disk":
            raise ValueError(f"cache must be 'disk' or 'none', got {self.cache!r}")
        return cache_dataset(self.recipe, self.batch_size, self.cache_dir, stage, data)

    def setup(self, stage: str | None = None) -> None:
        """Build the datasets (runs on every process)."""
        if stage in (None, "fit"):
            self.batch_layout(self.world_size)  # refuse a global batch the processes cannot share, before any work
        if self.spatial_dims == 2:
            return self._setup_2d(stage)
        self.ensure_plan()
        deterministic = deterministic_transforms(self.recipe)
        if stage in (None, "fit"):
            self.train_ds = self._dataset(
                self.case_dicts("train"), deterministic + train_transforms(self.recipe, self.batch_size), "train"
            )
        if stage in (None, "fit", "validate", "test"):
            self.val_ds = self._dataset(self.case_dicts("val"), deterministic, "val")

    def prepare_data(self, workers: int | None = None, progress: bool = True) -> None:
        """Fill the preprocessing cache once (rank 0), in ``workers`` processes (default: ``num_workers``, at
        least 1) with a progress bar, so that later epochs and the other processes only read it.
        ``amos-zoo cache`` runs this before a multi-GPU run, whose other ranks would otherwise wait here."""
        if self.spatial_dims == 2:  # 2D slices are small PNGs: read directly
            return
        self.ensure_plan()
        if self.cache != "disk":
            return
        from amos_zoo.parallel import map_with_progress

        jobs = [
            CacheJob(self.recipe, self.batch_size, self.cache_dir, stage, item)
            for stage in ("train", "val")
            for item in self.case_dicts(stage)
        ]
        workers = max(1, workers if workers is not None else (self.num_workers or 1))
        filled = map_with_progress(fill_cache_entry, jobs, workers, desc="preprocessing cache", progress=progress)
        for _ in filled:
            pass

    # ---- batches over processes ----------------------------------------------------------------------
    def batch_layout(self, world_size: int) -> tuple[int, int]:
        """``(per-process batch, global batch)`` under ``world_size`` processes; a clear error when ``global_batch``
        cannot be split evenly."""
        if not self.hparams.global_batch:
            return self.batch_size, self.batch_size * world_size
        if self.batch_size % world_size:
            raise ValueError(
                f"data.batch_size {self.batch_size} is the global batch (data.global_batch true, as nnU-Net v2 splits "
                f"its plan's batch over the GPUs) and {world_size} processes cannot share it evenly; use a number of "
                f"devices that divides {self.batch_size}, or set data.batch_size to a multiple of {world_size} (a "
                "different recipe than the protocol's)"
            )
        return self.batch_size // world_size, self.batch_size

    @property
    def world_size(self) -> int:
        """Training processes (1 without a trainer)."""
        trainer = getattr(self, "trainer", None)
        return int(trainer.world_size) if trainer is not None else 1

    # ---- loaders ------------------------------------------------------------------------------------
    def train_dataloader(self) -> DataLoader:
        """Random patches; ``batch_size`` volumes x ``num_samples`` patches per step.

        Order and augmentation come from (seed, epoch, position in the epoch's global order); when training resumes
        from a mid-epoch checkpoint, the batches of that epoch already trained are skipped.
        """
        per_process, global_batch = self.batch_layout(self.world_size)
        sampler = EpochSeededSampler(
            self.train_ds,
            seed=self.hparams.seed,
            batch_size=per_process,
            epoch_iterations=self.hparams.epoch_iterations,
            global_slots=self.hparams.global_batch,
        )
        trainer = self.trainer
        if trainer is not None and trainer.fit_loop.restarting and trainer.global_step > 0:
            # batches of the current epoch trained before the restart, from the restored step count
            accumulate = trainer.accumulate_grad_batches
            batches_per_epoch = math.ceil(len(sampler) / per_process)
            steps_per_epoch = math.ceil(batches_per_epoch / accumulate)
            sampler.skip_epoch = trainer.current_epoch
            done_steps = trainer.global_step - trainer.current_epoch * steps_per_epoch
            sampler.skip_batches = min(max(done_steps, 0) * accumulate, batches_per_epoch)
        return ResumableDataLoader(
            EpochSeededDataset(
                self.train_ds,
                seed=self.hparams.seed,
                batch_size=global_batch if self.hparams.global_batch else per_process,
            ),
            batch_size=per_process,
            sampler=sampler,
            num_workers=self.num_workers,
            collate_fn=list_data_collate,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
            worker_init_fn=worker_init,
        )

    def val_dataloader(self) -> DataLoader:
        """Whole volumes, one per batch; split between DDP processes without duplicates.

        With more processes than cases, every process still needs one batch (a process without any would skip
        the epoch-end gather the others wait in): the extra processes repeat the first cases, and the metric
        accumulator, which keys cases by id, counts each case once.
        """
        sampler = None
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            from monai.data import DistributedSampler

            fewer_cases_than_processes = len(self.val_ds) < torch.distributed.get_world_size()
            sampler = DistributedSampler(self.val_ds, shuffle=False, even_divisible=fewer_cases_than_processes)
        return DataLoader(
            self.val_ds,
            batch_size=1,
            shuffle=False,
            sampler=sampler,
            num_workers=self.num_workers,
            worker_init_fn=worker_init,
        )

    test_dataloader = val_dataloader

    def predict_dataloader(self) -> DataLoader:
        """The ``test`` split's images (or the validation split's when there is none), preprocessed, whole."""
        split = "test" if "test" in self.index.splits else self.hparams.val_split
        cases = [c.as_dict() for c in self.index.split(split)]
        for c in cases:
            c.pop("label", None)
        ds = Dataset(cases, transform=mt.Compose(deterministic_transforms(self.recipe, keys=("image",))))
        return DataLoader(ds, batch_size=1, shuffle=False, num_workers=self.num_workers, worker_init_fn=worker_init)
