"""The ``amos-zoo`` subcommands (other than LightningCLI's fit / validate / test), one typed function each.

The command line is built from these functions (:mod:`amos_zoo.cli.main`): their parameters are the options,
their docstrings the help, and the ``Example:`` line of each docstring ends its ``--help``. Each returns the exit
status. Heavy imports happen inside the functions, so ``amos-zoo models`` or ``amos-zoo weights`` answer at once.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Literal

__all__ = ["COMMANDS"]


def positional(*names: str):
    """Mark parameters as positional on the command line (``amos-zoo protocol show NAME``)."""

    def mark(fn):
        fn.positional = names
        return fn

    return mark


def quickstart(
    out: Path = Path("quickstart"),
    task: Literal["amos-ct", "amos-ctmr"] = "amos-ct",
    steps: int | None = None,
    n_train: int = 24,
    n_val: int = 6,
    seed: int = 0,
    wandb: bool = False,
) -> int:
    """Synthetic AMOS data -> train a small UNet on CPU -> predict in original geometry -> evaluate and plot.

    Everything goes under --out; the last line printed is the mean foreground Dice.

    Args:
        out: output folder.
        task: AMOS task to train on.
        steps: training steps (default: the quickstart protocol's).
        n_train: synthetic CT training cases.
        n_val: synthetic CT validation cases.
        seed: dataset and training seed.
        wandb: also log to Weights & Biases (offline).

    Example:
        amos-zoo quickstart --out quickstart
    """
    from amos_zoo.experiments.quickstart import QuickstartConfig, run_quickstart

    run_quickstart(
        QuickstartConfig(out=out, task=task, max_steps=steps, n_train=n_train, n_val=n_val, seed=seed, wandb=wandb)
    )
    return 0


def synth(
    out: Path,
    layout: Literal["amos", "msd"] = "amos",
    task: str | None = None,
    n_train_ct: int = 16,
    n_train_mr: int = 4,
    n_val_ct: int = 4,
    n_val_mr: int = 2,
    n_test: int = 2,
    seed: int = 0,
) -> int:
    """Write a synthetic dataset of phantom abdomens in the official AMOS 2022 (or a Decathlon task's) layout.

    imagesTr/labelsTr/imagesVa/labelsVa/imagesTs and dataset.json; all 15 AMOS organs; CT ids < 500, MRI >= 500.

    Args:
        out: dataset folder to create.
        layout: ``amos`` (AMOS 2022) or ``msd`` (Medical Segmentation Decathlon).
        task: with ``--layout msd``: Task01_BrainTumour ... Task10_Colon.
        n_train_ct: CT training cases (with ``msd``: training cases).
        n_train_mr: MRI training cases.
        n_val_ct: CT validation cases.
        n_val_mr: MRI validation cases.
        n_test: test cases (images only).
        seed: dataset seed.

    Example:
        amos-zoo synth --out data/synth
    """
    from amos_zoo.data.synth import write_synthetic_dataset

    if layout == "msd":
        from amos_zoo.data.msd import MSD_TASKS, write_msd_dataset

        if task is None:
            raise ValueError(f"--layout msd needs --task, one of: {', '.join(MSD_TASKS)}")
        root = write_msd_dataset(out, task, n_train=n_train_ct, n_test=n_test, seed=seed)
        spec = MSD_TASKS[task]
        print(
            f"wrote a synthetic {task} dataset ({spec.num_channels} channel(s), {len(spec.labels)} classes) to {root}. "
            f"Next: amos-zoo fit --config configs/base/cpu.yaml --protocol tiny/unet --data.root {root} --data.task all"
        )
        return 0
    root = write_synthetic_dataset(out, n_train_ct, n_train_mr, n_val_ct, n_val_mr, n_test, seed=seed)
    print(
        f"wrote the synthetic AMOS dataset to {root} (dataset.json, imagesTr, labelsTr, imagesVa, labelsVa, imagesTs). "
        f"Next: amos-zoo fit --config configs/base/cpu.yaml --protocol quickstart/unet --data.root {root}"
    )
    return 0


def models() -> int:
    """List the registered models: parameter counts (amos-zoo's and published), input constraints, source.

    Example:
        amos-zoo models
    """
    from amos_zoo.models.registry import list_models

    print(f"{'name':<11} {'params (M)':>10} {'published':>9}  constraints; description")
    for row in list_models():
        count = "-" if row["params_M"] is None else f"{row['params_M']:.1f}"
        pub = "-" if row["params_published_M"] is None else f"{row['params_published_M']:.1f}"
        print(f"{row['name']:<11} {count:>10} {pub:>9}  {row['constraints']}; {row['description']}")
    from amos_zoo.promptable.models import PROMPTABLE_MODELS

    print("\npromptable 2D models (amos-zoo evaluate-prompts; fine-tuning: configs/samed2d/medsam_finetune.yaml):")
    for spec in PROMPTABLE_MODELS.values():
        pub = "-" if spec.published_params is None else f"{spec.published_params[0] / 1e6:.1f}"
        print(
            f"{spec.name:<15} {spec.params / 1e6:>6.1f} {pub:>9}  {spec.image_size} x {spec.image_size}, "
            f"{spec.pipeline} input, {spec.multimask} output; {spec.description}"
        )
    return 0


def weights(markdown: bool = False, write: Path | None = None) -> int:
    """List the pretrained-weights registry (or print / write weights.md, generated from it).

    Args:
        markdown: print weights.md.
        write: write weights.md to this path (atomically).

    Example:
        amos-zoo weights --write weights.md
    """
    from amos_zoo.weights.registry import list_weights, render_markdown

    if write is not None:
        from amos_zoo.io import write_text

        write_text(write, render_markdown())
        print(f"wrote {write}")
        return 0
    if markdown:
        print(render_markdown(), end="")
        return 0
    print(f"{'name':<30} {'model':<11} {'classes':<8} {'format':<23} {'verified by':<12} task")
    for e in list_weights():
        classes = "encoder" if e.encoder_only else str(e.num_classes)
        print(f"{e.name:<30} {e.arch:<11} {classes:<8} {e.fmt:<23} {e.verification:<12} {e.task}")
    from amos_zoo.promptable.weights import PROMPTABLE_WEIGHTS

    print("\npromptable 2D models (amos-zoo evaluate-prompts --weights NAME):")
    for p in PROMPTABLE_WEIGHTS.values():
        where = p.url if p.direct_download else f"manual download: {p.url}"
        print(f"{p.name:<30} {p.model:<16} {p.fmt:<15} {'sha256' if p.sha256 else 'none':<12} {where}")
    print("\nentries verified by 'none' load only with --trust; details: amos-zoo weights --markdown (weights.md)")
    return 0


def protocol_list() -> int:
    """List the training protocols (cards with a source for every value).

    Example:
        amos-zoo protocol list
    """
    from amos_zoo.protocols import list_protocols

    for p in list_protocols():
        models = ", ".join(p.models) or "-"
        print(f"{p.name:<11} {p.kind:<9} models: {models:<28} {p.title}")
    print("\nshow one: amos-zoo protocol show NAME; apply one: amos-zoo fit ... --protocol NAME/MODEL")
    from amos_zoo.promptable.protocols import list_prompt_protocols

    print("\nprompt protocols (amos-zoo evaluate-prompts --protocol NAME; shown by protocol show NAME):")
    for pp in list_prompt_protocols():
        print(f"{pp.name:<18} {pp.title}")
    return 0


@positional("name")
def protocol_show(name: str, markdown: bool = False) -> int:
    """Print a protocol card: every setting with its value and source.

    Args:
        name: protocol name (amos-zoo protocol list).
        markdown: print it as markdown (the docs/protocols.md format).

    Example:
        amos-zoo protocol show btcv
    """
    from amos_zoo.promptable.protocols import list_prompt_protocols
    from amos_zoo.protocols import get_protocol, render_markdown

    prompt_cards = {pp.name: pp for pp in list_prompt_protocols()}
    if name in prompt_cards:  # a prompt protocol (amos-zoo evaluate-prompts)
        pp = prompt_cards[name]
        print(f"{pp.name}: {pp.title}\n{pp.summary}\n")
        for key, (value, _) in pp.settings.items():
            print(f"  {key} = {value}\n      source: {pp.source(key)}")
        return 0
    p = get_protocol(name)
    if markdown:
        print(render_markdown([p]), end="")
        return 0
    print(f"{p.name}: {p.title} ({p.kind})\n{p.summary}\n")
    if p.models:
        print(f"models its source trained: {', '.join(p.models)}\n")
    section = None
    for s in p.settings:
        if s.section != section:
            section = s.section
            print(f"[{section}]")
        print(f"  {s.key} = {s.value}\n      source: {p.cite(s.source)}")
    return 0


def protocol_docs(write: Path | None = None) -> int:
    """Print docs/protocols.md (every protocol card as markdown tables), or write it.

    Args:
        write: write it to this path (atomically) instead of printing.

    Example:
        amos-zoo protocol docs --write docs/protocols.md
    """
    from amos_zoo.protocols import render_markdown

    if write is None:
        print(render_markdown(), end="")
        return 0
    from amos_zoo.io import write_text

    write_text(write, render_markdown())
    print(f"wrote {write}")
    return 0


def check_data(data: Path, dataset_json: Path | None = None, workers: int | None = None) -> int:
    """Validate a whole dataset and report every problem with the file, what is wrong and the fix.

    Checks dataset.json (JSON, labels, duplicates, paths, empty splits, missing files) and every case in parallel:
    readable files, 3D/4D, NaN or infinite intensities, label values outside the label map, image/label shape or
    affine mismatch. Exit status 1 when problems are found.

    Args:
        data: dataset folder (holding dataset.json).
        dataset_json: index file (default DATA/dataset.json).
        workers: parallel processes (default: all cores).

    Example:
        amos-zoo check-data --data /data/amos22
    """
    from amos_zoo.data.check import check_dataset

    problems = check_dataset(data, dataset_json, workers=workers)
    if not problems:
        print(f"{data}: no problems found")
        return 0
    print(f"{data}: {len(problems)} problem(s)")
    for p in problems:
        print(f"- {p.file}\n    problem: {p.problem}\n    fix: {p.fix}")
    return 1


def evaluate(
    pred: Path,
    gt: Path,
    out: Path,
    dataset_json: Path | None = None,
    tolerance: str = "uniform-2mm",
    metrics: str = "dice,nsd,hd95,assd",
    empty_policy: Literal["score", "ignore", "nnunet"] = "score",
    workers: int | None = None,
) -> int:
    """Score a folder of predicted label NIfTIs against reference labels (Dice, NSD, HD95, ASSD).

    DeepMind surface-distance definitions; aggregated per organ, per modality and overall. Writes per_case.csv,
    summary.json, summary.md and boxplot.png under --out.

    Args:
        pred: folder of predicted label NIfTIs (<case>.nii.gz).
        gt: folder of reference label NIfTIs.
        out: report folder.
        dataset_json: dataset.json whose label map to use (default: AMOS's).
        tolerance: NSD tolerance: a preset (uniform-1mm, uniform-2mm, uniform-5mm, flare22, amos) or mm.
        metrics: comma-separated metrics.
        empty_policy: how organs absent from the reference are scored (README: metric conventions).
        workers: parallel processes (default: all cores).

    Example:
        amos-zoo evaluate --pred preds/ --gt amos22/labelsVa --out eval/
    """
    from amos_zoo.data.labels import AMOS_LABELS
    from amos_zoo.metrics.evaluate import evaluate_folders, markdown_table

    labels = AMOS_LABELS
    if dataset_json:
        from amos_zoo.data.index import load_index

        labels = load_index(dataset_json.parent, dataset_json).labels
    chosen = tuple(m.strip() for m in metrics.split(",") if m.strip())
    summary = evaluate_folders(
        pred, gt, out, labels=labels, tolerance=tolerance, metrics=chosen, empty_policy=empty_policy, workers=workers
    )
    print(markdown_table(summary, labels, [m for m in chosen if m in ("dice", "nsd")] or list(chosen[:1])))
    if summary["missing_predictions"]:
        print(f"missing predictions (scored as empty): {', '.join(summary['missing_predictions'])}")
    print(f"reports written to {out}: per_case.csv, summary.json, summary.md, boxplot.png")
    return 0


# long only through its docstring, which is the command's --help text
def predict(
    weights: str,
    input: Path,
    out: Path,
    split: str = "test",
    modality: Literal["CT", "MRI"] | None = None,
    tta: bool | None = None,
    overlap: float | None = None,
    sw_batch_size: int | None = None,
    precision: Literal["auto", "fp32", "bf16"] = "auto",
    interpolation: Literal["linear", "nearest"] | None = None,
    device: str | None = None,
    save_probabilities: bool = False,
    trust: bool = False,
    sha256: str | None = None,
    folds: list[int] | None = None,
) -> int:
    """Segment scans: one label NIfTI per input with exactly the input's shape and affine, plus a JSON label map.

    Finished cases are skipped on rerun; a bad input is reported and the others go on (exit status 1 if any failed).

    Args:
        weights: an amos-zoo checkpoint (.ckpt), a weights registry name, a URL, a MONAI bundle, an nnU-Net v2
            checkpoint_final.pth or an nnU-Net results folder (its folds' logits averaged, as nnU-Net's ensemble).
        input: a NIfTI file, a folder of them, a DICOM series folder (or a folder of them), or a dataset.json.
        out: output folder.
        split: dataset.json split to predict.
        modality: override the modality of every input.
        tta: mirror test-time augmentation (8 passes in 3D); default: the model card's protocol (--no_tta: off).
        overlap: sliding-window overlap (default: the model card's).
        sw_batch_size: windows per forward pass (default: the model card's).
        precision: auto = bf16 autocast on CUDA, fp32 on CPU; bf16 on CPU is about 2x faster where the CPU has
            native bf16.
        interpolation: labels back on the input grid (default: the model card's protocol): linear = class
            probabilities interpolated (nnU-Net); nearest = nearest network-grid label (research-contributions).
        device: cpu or cuda[:N] (default: cuda when available).
        save_probabilities: also write <case>_probabilities.npz.
        trust: load unverified or full-unpickling weights (only files you trust).
        sha256: expected SHA-256 of the weights file (verified before use).
        folds: with an nnU-Net results folder, the folds to ensemble (default: every fold_X with a
            checkpoint_final.pth).

    Example:
        amos-zoo predict --weights runs/amos-ct/btcv/swin_unetr/checkpoints/best.ckpt --input scans/ --out preds/
    """
    import torch

    from amos_zoo.infer.pipeline import collect_inputs, load_predictor, predict_many

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    predictor = load_predictor(
        weights,
        device=device,
        trust=trust,
        sha256=sha256,
        tta=tta,
        overlap=overlap,
        sw_batch_size=sw_batch_size,
        precision=precision,
        interpolation=interpolation,
        **({"folds": folds} if folds else {}),
    )
    jobs = collect_inputs(input, split=split, modality=modality)
    report = predict_many(predictor, jobs, out, save_probabilities=save_probabilities)
    print(
        f"predicted {len(report['done'])} case(s) into {out} in {report['seconds']:.1f} s; "
        f"skipped {len(report['skipped'])} already finished"
    )
    for case, reason in report["failed"].items():
        print(f"FAILED {case}: {reason}", file=sys.stderr)
    if report["failed"]:
        print(
            f"{len(report['failed'])} case(s) failed; fix them and rerun (finished cases are skipped)", file=sys.stderr
        )
        return 1
    return 0


def export(
    ckpt: str,
    format: Literal["bundle", "torchscript", "onnx"],
    out: Path,
    modality: Literal["CT", "MRI"] = "CT",
    trust: bool = False,
) -> int:
    """Export a trained model as a MONAI bundle, TorchScript or ONNX, checked against PyTorch before it is written.

    bundle: a MONAI bundle folder (configs/inference.json generated from the model card's recipe, metadata.json
    with the card, models/model.pt) that `python -m monai.bundle run` runs on NIfTI files; torchscript / onnx:
    model.ts / model.onnx plus model.json (the model card).

    Args:
        ckpt: amos-zoo checkpoint (.ckpt) or weights registry name.
        format: bundle, torchscript or onnx.
        out: output folder (must not exist or be empty).
        modality: the bundle's default normalisation (its config entry ``modality``; --modality on monai.bundle run).
        trust: load a checkpoint that needs full unpickling.

    Example:
        amos-zoo export --ckpt best.ckpt --format bundle --out exported/bundle
    """
    from amos_zoo.infer.export import export_model

    result = export_model(ckpt, format, out, modality=modality, trust=trust)
    print(f"exported {format} to {result.path}; max |difference| to PyTorch logits {result.max_abs_diff:.2e}")
    if format == "bundle":
        print(
            f"run it: python -m monai.bundle run --config_file {out}/configs/inference.json --meta_file "
            f"{out}/configs/metadata.json --bundle_root {out} --dataset_dir NIFTI_DIR --output_dir OUT [--modality MRI]"
        )
    return 0


def export_2d(
    data: Path,
    out: Path,
    axis: Literal["x", "y", "z", "all"] = "z",
    dataset_name: str = "AMOS",
    min_pixels: int = 100,
) -> int:
    """Slice a 3D AMOS/MSD dataset into the SA-Med2D-20M 2D layout (PNG slices, per-instance masks, JSON index).

    Args:
        data: 3D dataset folder (dataset.json).
        out: output folder.
        axis: slicing axis.
        dataset_name: dataset token in the file names.
        min_pixels: drop mask instances under this size (MedSAM: 100).

    Example:
        amos-zoo export-2d --data amos22 --out sa2d --axis z
    """
    from amos_zoo.data.samed2d import export_2d as run

    counts = run(data, out, axis, dataset_name, min_pixels=min_pixels)
    print(
        f"exported {counts['cases']} case(s) to {out}: {counts['images']} images, {counts['masks']} masks "
        f"({counts['dropped_small_masks']} instances under {min_pixels} pixels dropped)"
    )
    return 0


@positional("direction")
def convert(
    direction: Literal["to-nnunet", "from-nnunet"],
    data: Path,
    out: Path,
    dataset_id: int = 501,
    name: str | None = None,
) -> int:
    """Convert between the AMOS/Decathlon layout and nnU-Net v2 raw data (geometry and headers kept).

    to-nnunet: DatasetXXX_Name/ with imagesTr/{case}_{channel:04d}.nii.gz, labelsTr, imagesTs (the AMOS validation
    split goes to imagesTs with references in labelsTs). from-nnunet: a Decathlon-layout dataset.

    Args:
        direction: to-nnunet or from-nnunet.
        data: source dataset folder (dataset.json).
        out: to-nnunet: the nnUNet_raw folder; from-nnunet: the dataset folder.
        dataset_id: nnU-Net dataset id (to-nnunet).
        name: nnU-Net dataset name (to-nnunet; default: the dataset's).

    Example:
        amos-zoo convert to-nnunet --data amos22 --out nnUNet_raw --dataset_id 501
    """
    from amos_zoo.data.convert import from_nnunet, to_nnunet

    if direction == "to-nnunet":
        root = to_nnunet(data, out, dataset_id, name)
        print(
            f"wrote nnU-Net v2 raw data to {root}. Next: nnUNetv2_plan_and_preprocess -d {dataset_id}, train, predict "
            f"imagesTs, then amos-zoo evaluate --pred PRED --gt {root / 'labelsTs'} --out eval/"
        )
    else:
        print(f"wrote a Decathlon-layout dataset to {from_nnunet(data, out)}")
    return 0


#: the tasks `reproduce` runs: AMOS Task 1 and 2, AMOS's MR cases alone, and the ten Decathlon tasks
ReproduceTask = Literal[
    "amos-ct",
    "amos-ctmr",
    "amos-mr",
    "Task01_BrainTumour",
    "Task02_Heart",
    "Task03_Liver",
    "Task04_Hippocampus",
    "Task05_Prostate",
    "Task06_Lung",
    "Task07_Pancreas",
    "Task08_HepaticVessel",
    "Task09_Spleen",
    "Task10_Colon",
]


def reproduce(
    task: ReproduceTask,
    model: Literal["unet", "unetr", "swin_unetr", "vnet", "dynunet", "nnunet"],
    data: Path | None = None,
    protocol: str | None = None,
    out: Path = Path("runs"),
    smoke: bool = False,
    max_steps: int | None = None,
    folds: list[int] | None = None,
    fit_args: list[str] | None = None,
    checkpoint: Literal["final", "best"] | None = None,
) -> int:
    """One benchmark-table row: fit under a protocol, predict the validation cases in original geometry, evaluate.

    Writes OUT/TASK/PROTOCOL/MODEL/row.json (protocol, split, resolved config, commit, data hash, metrics, wall
    time, device, peak memory). --smoke runs the same path on synthetic data with small networks in minutes on a CPU.
    A Decathlon task (--task Task09_Spleen --data /data/Task09_Spleen) runs nnU-Net's 5-fold cross-validation over
    its training cases; BrainTumour is scored on the BraTS regions (whole tumour, tumour core, enhancing tumour).

    Args:
        task: AMOS task (amos-ct: Task 1, amos-ctmr: Task 2, amos-mr: the MR cases alone, the AMOS fork's MR task)
            or Decathlon task (Task01_BrainTumour ... Task10_Colon).
        model: the network.
        data: the task's dataset folder (AMOS 2022, or the MSD task's folder; holding dataset.json).
        protocol: protocol card (default: the published protocol that trained the model; amos-zoo protocol list).
        out: runs folder.
        smoke: synthetic data, small networks, 4 steps, CPU.
        max_steps: override the protocol's iteration budget.
        folds: cross-validation folds to run (nnU-Net's 5-fold split of every labelled case), e.g. [0,1,2,3,4].
        fit_args: further `amos-zoo fit` options, e.g. ["--trainer.devices", "4"].
        checkpoint: final (the weights at the end of training, as nnU-Net reports) or best (best validation Dice,
            chosen on the scored cases); default: the protocol's (amos-zoo protocol show NAME, eval.checkpoint).

    Example:
        amos-zoo reproduce --task amos-ct --model swin_unetr --protocol btcv --data /data/amos22 --out runs/
    """
    from amos_zoo.experiments.reproduce import run_reproduce

    row = run_reproduce(
        task,
        model,
        data,
        protocol=protocol,
        out=out,
        smoke=smoke,
        max_steps=max_steps,
        folds=folds,
        extra_args=fit_args or [],
        checkpoint=checkpoint,
    )
    if row is None:  # a DDP rank other than 0: rank 0 writes the row
        return 0
    overall = row["metrics"]["overall"]
    print(
        f"{task} {row['protocol']} {model}: mDSC {overall['dice']:.4f}, mNSD {overall['nsd']:.4f} over "
        f"{row['metrics']['cases']} validation cases ({row['split']}); row written under {out}. "
        f"Next: amos-zoo table {out}"
    )
    return 0


@positional("runs")
def table(runs: Path, published: Path | None = None, out: Path | None = None) -> int:
    """Collect reproduce rows into the benchmark tables, beside published numbers of the same protocol and split.

    Writes table.md (the AMOS table and the Decathlon table: tasks as columns, mean Dice per task), table.csv /
    table.png (AMOS) and decathlon.csv / decathlon.png; a number of another protocol or split is labelled.

    Args:
        runs: runs folder.
        published: published-numbers YAML (default: the shipped one).
        out: output folder (default: RUNS).

    Example:
        amos-zoo table runs/
    """
    from amos_zoo.experiments.table import write_table

    print(write_table(runs, out, published))
    folder = out or runs
    written = [n for n in ("table.csv", "table.png", "decathlon.csv", "decathlon.png") if (folder / n).is_file()]
    print(f"written: {folder / 'table.md'}, {', '.join(written)}")
    return 0


def configs() -> int:
    """Print where the shipped LightningCLI configs are and list them (compose them with --config).

    Example:
        amos-zoo configs
    """
    from amos_zoo.experiments.run import config_root

    root = config_root()
    print(f"shipped configs: {root}")
    for path in sorted(root.rglob("*.yaml")):
        print(f"  {path.relative_to(root)}")
    return 0


def plan(
    data: Path,
    protocol: str = "nnunet-v2",
    task: Literal["amos-ct", "amos-ctmr", "amos-mr", "all"] = "amos-ct",
    cache_dir: Path | None = None,
    workers: int | None = None,
) -> int:
    """Fingerprint a dataset and make a protocol's plan (target spacing, intensity statistics, normalisation mask;
    for nnunet-v2 the whole 3d_fullres configuration: patch, batch size, stages, kernels, strides, features), as
    nnU-Net plans it; written beside the preprocessing cache, where fit and reproduce read it (and build the
    network from it).

    Args:
        data: dataset folder (holding dataset.json).
        protocol: a protocol whose recipe is planned (nnunet-v2, amos-paper).
        task: which cases (every labelled case of the task, training and validation).
        cache_dir: preprocessing cache folder (default: DATA/.amos_zoo_cache/PROTOCOL, as fit uses).
        workers: parallel processes (default: all cores).

    Example:
        amos-zoo plan --data /data/amos22 --protocol nnunet-v2 --task amos-ctmr
    """
    import os

    from amos_zoo.data.datamodule import SegmentationDataModule

    dm = SegmentationDataModule(
        str(data),
        task=task,
        recipe=protocol,
        cache_dir=None if cache_dir is None else str(cache_dir),
        num_workers=workers or os.cpu_count() or 1,
    )
    if not dm.recipe.needs_plan:
        print(f"protocol {protocol}: its recipe is fixed (spacing {dm.recipe.spacing}); nothing to plan")
        return 0
    dm.ensure_plan()
    recipe = dm.recipe
    print(f"plan of {data} for protocol {protocol}, task {task}: {dm.plan_path}")
    print(f"  target spacing (x, y, z): {tuple(round(s, 4) for s in recipe.spacing)} mm")
    for c, stats in enumerate(recipe.intensity_stats or ()):
        low, high, mean, std = stats
        print(
            f"  channel {c} foreground intensities: 0.5 % {low:.2f}, 99.5 % {high:.2f}, mean {mean:.2f}, std {std:.2f}"
        )
    print(f"  z-score inside the non-zero mask: {recipe.zscore_nonzero_mask}")
    config = dm.plan_configuration
    if config is not None:  # nnU-Net v2's 3d_fullres configuration (x, y, z order)
        arch = config["architecture"]
        print(f"  3d_fullres patch (x, y, z): {tuple(config['patch_size'])}, batch size {config['batch_size']}")
        print(f"  network: {arch['n_stages']} stages, features {arch['features_per_stage']}")
        print(f"  kernels: {arch['kernel_sizes']}")
        print(f"  strides: {arch['strides']}")
        print(f"  batch Dice: {config['batch_dice']}; normalisation: {config['normalization_schemes']}")
    return 0


def evaluate_prompts(
    model: str,
    protocol: str,
    data: Path,
    out: Path,
    weights: str | None = None,
    image_size: int | None = None,
    points: int | None = None,
    iterations: int | None = None,
    box_shift: int | None = None,
    prompts: Path | None = None,
    seed: int = 0,
    split: Literal["samed2d-20", "all", "index-test"] = "samed2d-20",
    pipeline: Literal["samed2d", "medsam", "sam", "model"] | None = None,
    device: str = "cpu",
    trust: bool = False,
) -> int:
    """Evaluate a promptable 2D model (SAM, MedSAM, SAM-Med2D) under a prompt protocol on an SA-Med2D folder.

    Dice / IoU (and NSD under medsam-box) per mask, means per modality and sub-dataset; writes OUT/prompts.json
    (replay it with --prompts for another model), OUT/row.json and OUT/table.md (beside SAM-Med2D's published
    numbers of the same protocol). Each image is encoded once for all its masks.

    Args:
        model: sam_vit_b, medsam_vit_b, sam_med2d_vit_b (or the tiny test models sam_tiny, sam_med2d_tiny).
        protocol: samed2d-box, samed2d-points, samed2d-iterative or medsam-box.
        data: SA-Med2D folder (full release or the SAM-Med2D demo layout).
        out: output folder.
        weights: a promptable weights name (sam_vit_b, medsam_vit_b, sam_med2d_vit_b, ft_sam_vit_b) or a file path;
            none: random initialisation (tests only).
        image_size: network input size (default: the model's; SAM-Med2D's table runs SAM at 256 and 1024).
        points: points per mask under samed2d-points (1, 3 or 5).
        iterations: decodings under samed2d-iterative (clicks between them).
        box_shift: MedSAM box widening in pixels (default: the protocol's).
        prompts: a prompts file to replay instead of drawing prompts.
        seed: prompt and split seed.
        split: samed2d-20 (20 % per sub-dataset, seeded), all, or index-test (the index's test list).
        pipeline: replace the protocol's input pipeline (model: the model card's own, e.g. SAM's SamPredictor).
        device: cpu or cuda.
        trust: download weights whose source states no digest.

    Example:
        amos-zoo evaluate-prompts --model sam_med2d_vit_b --weights sam-med2d_b.pth --protocol samed2d-box
            --data DIR --out runs/box
    """
    from amos_zoo.promptable.evaluate import evaluate_prompts as run

    row = run(model, protocol, data, out, weights=weights, image_size=image_size, points=points,
              iterations=iterations, box_shift=box_shift, prompts=prompts, seed=seed, split=split, device=device,
              pipeline=pipeline, trust=trust)
    if row["load_report"]:
        print(row["load_report"]["summary"])
    print((out / "table.md").read_text(), end="")
    overall = row["summary"]["overall"]
    print(f"{overall['n_masks']} masks, {row['masks_per_second']:.1f} masks/s; written: {out / 'row.json'}, "
          f"{out / 'table.md'}, prompts: {row['prompts_file']}")
    return 0


@positional("runs")
def prompt_table(runs: Path, out: Path | None = None) -> int:
    """Collect evaluate-prompts rows (RUNS/**/row.json) into one table beside SAM-Med2D's published numbers.

    Args:
        runs: folder holding evaluate-prompts outputs.
        out: write the table here as markdown (default: print only).

    Example:
        amos-zoo prompt-table runs/
    """
    import json

    from amos_zoo.promptable.evaluate import prompt_table as render

    rows = [json.loads(p.read_text()) for p in sorted(Path(runs).rglob("row.json"))]
    rows = [r for r in rows if r.get("kind") == "promptable"]
    if not rows:
        raise FileNotFoundError(f"{runs}: no evaluate-prompts row.json below it")
    text = render(rows)
    if out is not None:
        from amos_zoo.io import write_text

        write_text(out, text)
    print(text, end="")
    return 0


#: command name -> function (``protocol list`` / ``protocol show`` are nested under ``protocol``)
COMMANDS = {
    "quickstart": quickstart,
    "synth": synth,
    "models": models,
    "weights": weights,
    "protocol list": protocol_list,
    "protocol show": protocol_show,
    "protocol docs": protocol_docs,
    "check-data": check_data,
    "plan": plan,
    "evaluate": evaluate,
    "predict": predict,
    "export": export,
    "export-2d": export_2d,
    "convert": convert,
    "reproduce": reproduce,
    "table": table,
    "configs": configs,
    "evaluate-prompts": evaluate_prompts,
    "prompt-table": prompt_table,
}
