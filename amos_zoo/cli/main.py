"""``amos-zoo``: one command for training (LightningCLI), data, models and evaluation."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main", "build_parser"]

LIGHTNING_COMMANDS = {
    "fit": "train a model (LightningCLI: --config configs/amos_ct/swin_unetr.yaml --data.root DIR)",
    "validate": "validate a checkpoint on the validation split (LightningCLI; --ckpt_path FILE)",
    "test": "score a checkpoint on the validation split (LightningCLI; --ckpt_path FILE)",
    "predict": "segment scans: --weights CKPT|NAME --input FILE|DIR|DICOM_DIR|dataset.json --out DIR "
    "(with --config: the LightningCLI predict loop)",
    "finetune": "fit starting from pretrained weights: --weights NAME|FILE --config CONFIG --data.root DIR "
    "[--freeze-encoder-epochs N] [--pretrained-lr-scale S] [--trust] [--sha256 HASH]",
}

EPILOG = (
    """Lightning subcommands (each has --help and --print_config):
"""
    + "\n".join(f"  {k:<10} {v}" for k, v in LIGHTNING_COMMANDS.items())
    + """

Examples:
  amos-zoo quickstart --out quickstart
  amos-zoo synth --out data/synth
  amos-zoo fit --config configs/amos_ct/swin_unetr.yaml --data.root /data/amos22
  amos-zoo evaluate --pred preds/ --gt amos22/labelsVa --out eval/
  amos-zoo weights
  amos-zoo finetune --weights swin_unetr_ssl_encoder --trust --config configs/amos_ct/swin_unetr.yaml --data.root DIR
  amos-zoo export --ckpt runs/x/last.ckpt --format bundle --out exported/
"""
)


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of the non-Lightning subcommands."""
    parser = argparse.ArgumentParser(
        prog="amos-zoo",
        description="Benchmarked MONAI baselines for AMOS 2022 and the Medical Segmentation Decathlon.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    q = sub.add_parser(
        "quickstart",
        help="synthetic data -> train a small UNet on CPU -> evaluate and plot",
        description="Generate the synthetic AMOS dataset, train a small UNet on CPU, predict the "
        "validation cases in their original geometry, evaluate them, and plot. Everything goes "
        "under --out. The last line printed is the mean foreground Dice.",
    )
    q.add_argument("--out", type=Path, default=Path("quickstart"), help="output folder (default ./quickstart)")
    q.add_argument("--steps", type=int, default=None, help="training steps (default 400)")
    q.add_argument("--task", default="amos-ct", choices=["amos-ct", "amos-ctmr"], help="AMOS task to train on")
    q.add_argument("--n-train", type=int, default=None, help="synthetic training cases (default 24)")
    q.add_argument("--n-val", type=int, default=None, help="synthetic validation cases (default 6)")
    q.add_argument("--wandb", action="store_true", help="also log to Weights & Biases (offline)")
    q.add_argument("--seed", type=int, default=0)

    s = sub.add_parser(
        "synth",
        help="write a synthetic AMOS-layout dataset of phantom abdomens",
        description="Write imagesTr/labelsTr/imagesVa/labelsVa/imagesTs and dataset.json in the "
        "official AMOS 2022 format: phantom abdomens with all 15 organs; CT ids < 500, MRI >= 500.",
    )
    s.add_argument("--out", type=Path, required=True, help="dataset folder to create")
    s.add_argument("--n-train-ct", type=int, default=16)
    s.add_argument("--n-train-mr", type=int, default=4)
    s.add_argument("--n-val-ct", type=int, default=4)
    s.add_argument("--n-val-mr", type=int, default=2)
    s.add_argument("--n-test", type=int, default=2)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--layout", choices=["amos", "msd"], default="amos", help="AMOS 2022 or Decathlon layout")
    s.add_argument("--task", default=None, help="with --layout msd: Task01_BrainTumour ... Task10_Colon")

    m = sub.add_parser(
        "models",
        help="list the registered models with parameters and input constraints",
        description="List every model of the registry: parameter count (computed and published), "
        "input constraints and source.",
    )
    m.add_argument("--no-count", action="store_true", help="skip building each model to count its parameters")

    r = sub.add_parser(
        "reproduce",
        help="one benchmark-table row: fit, predict the official validation split, evaluate, record",
        description="Fit a model with its AMOS recipe on the official training split, predict the official "
        "validation split in original geometry, evaluate (Dice, NSD 2 mm) and write OUT/TASK/MODEL/row.json "
        "(config, commit, data hash, metrics, wall time, device, peak memory). --smoke runs the same path on the "
        "synthetic dataset with small models in minutes on CPU. Extra LightningCLI overrides may follow '--'.",
    )
    r.add_argument("--task", required=True, choices=["amos-ct", "amos-ctmr"])
    r.add_argument("--model", required=True, choices=["unet", "unetr", "swin_unetr", "vnet", "dynunet"])
    r.add_argument("--data", type=Path, default=None, help="AMOS 2022 folder (holding dataset.json)")
    r.add_argument("--out", type=Path, default=Path("runs"), help="runs folder (default ./runs)")
    r.add_argument("--smoke", action="store_true", help="synthetic data, small models, 4 steps, CPU")
    r.add_argument("--max-steps", type=int, default=None, help="override the config's iteration budget")
    r.add_argument("overrides", nargs="*", help="LightningCLI overrides after '--', e.g. -- --data.num_workers 4")

    t = sub.add_parser(
        "table",
        help="collect reproduce rows into the benchmark table beside published numbers",
        description="Read every row.json under RUNS and write table.md, table.csv and table.png: per model mDSC and "
        "mNSD (CT, MRI, overall) and per-organ Dice, side by side with published numbers (each cited, with its "
        "split and protocol) and the difference. Unknown cells stay empty.",
    )
    t.add_argument("runs", type=Path, help="runs folder")
    t.add_argument("--published", type=Path, default=None, help="published-numbers YAML (default: the shipped one)")
    t.add_argument("--out", type=Path, default=None, help="output folder (default: RUNS)")

    c = sub.add_parser(
        "check-data",
        help="validate a whole dataset and report every problem with its fix",
        description="Check dataset.json (JSON, labels, duplicates, paths, empty splits, missing files) and every "
        "case in parallel: readable files, 3D/4D, NaN or infinite intensities, label values outside the label map, "
        "image/label shape or affine mismatch. Exit status 1 when problems are found.",
    )
    c.add_argument("--data", type=Path, required=True, help="dataset folder (holding dataset.json)")
    c.add_argument("--dataset-json", type=Path, default=None, help="index file (default DATA/dataset.json)")
    c.add_argument("--workers", type=int, default=None, help="parallel processes (default: all cores)")

    e = sub.add_parser(
        "evaluate",
        help="score a folder of predictions against reference labels",
        description="Dice, NSD, HD95 and ASSD per case and organ (DeepMind surface-distance "
        "definitions), aggregated per organ, per modality and overall. Writes per_case.csv, "
        "summary.json, summary.md and boxplot.png under --out.",
    )
    e.add_argument("--pred", type=Path, required=True, help="folder of predicted label NIfTIs (<case>.nii.gz)")
    e.add_argument("--gt", type=Path, required=True, help="folder of reference label NIfTIs")
    e.add_argument("--dataset-json", type=Path, default=None, help="dataset.json whose label map to use")
    e.add_argument(
        "--tolerance",
        default="uniform-2mm",
        help="NSD tolerance: a preset (uniform-1mm, uniform-2mm, uniform-5mm, flare22, amos) or mm",
    )
    e.add_argument("--metrics", default="dice,nsd,hd95,assd", help="comma-separated metrics")
    e.add_argument(
        "--empty-policy",
        default="score",
        choices=["score", "ignore"],
        help="how organs absent from the reference are scored (README: metric conventions)",
    )
    e.add_argument("--workers", type=int, default=None, help="parallel processes (default: all cores)")
    e.add_argument("--out", type=Path, required=True, help="report folder")

    w = sub.add_parser(
        "weights",
        help="list the pretrained weights registry (or print weights.md)",
        description="The weights registry: model, task, classes, format, hash status. --markdown prints weights.md "
        "(generated from the registry; a test checks the committed file).",
    )
    w.add_argument("--markdown", action="store_true", help="print weights.md")
    w.add_argument("--write", type=Path, default=None, help="write weights.md to this path (atomically)")

    x = sub.add_parser(
        "export",
        help="export a checkpoint as a MONAI bundle, TorchScript or ONNX (checked against PyTorch)",
        description="Export the network of an amos-zoo checkpoint (or a registry name). bundle: a MONAI bundle "
        "folder (configs/inference.json, metadata.json, models/model.pt) that `python -m monai.bundle run` runs on "
        "NIfTI files; torchscript / onnx: model.ts / model.onnx plus model.json (labels, recipe, window). Outputs are "
        "compared with PyTorch's before the folder is written.",
    )
    x.add_argument("--ckpt", required=True, help="amos-zoo checkpoint (.ckpt) or weights registry name")
    x.add_argument("--format", required=True, choices=["bundle", "torchscript", "onnx"], dest="fmt")
    x.add_argument("--out", type=Path, required=True, help="output folder (must not exist or be empty)")
    x.add_argument("--modality", default="CT", choices=["CT", "MRI"], help="bundle intensity normalisation")
    x.add_argument("--trust", action="store_true", help="load a checkpoint that needs full unpickling")

    cv = sub.add_parser(
        "convert",
        help="convert between the AMOS/Decathlon layout and nnU-Net v2 raw data",
        description="--to nnunet: write DatasetXXX_Name/ (imagesTr/{case}_{channel:04d}.nii.gz, labelsTr, imagesTs; "
        "the AMOS validation split goes to imagesTs with references in labelsTs; labels name -> id). --from nnunet: "
        "write a Decathlon-layout dataset (multi-channel cases as 4D NIfTI). Geometry and headers are kept.",
    )
    direction = cv.add_mutually_exclusive_group(required=True)
    direction.add_argument("--to", choices=["nnunet"], dest="to_format")
    direction.add_argument("--from", choices=["nnunet"], dest="from_format")
    cv.add_argument("--data", type=Path, required=True, help="source dataset folder (dataset.json)")
    cv.add_argument("--out", type=Path, required=True, help="--to: nnUNet_raw folder; --from: dataset folder")
    cv.add_argument("--dataset-id", type=int, default=501, help="nnU-Net dataset id (--to)")
    cv.add_argument("--name", default=None, help="nnU-Net dataset name (--to; default: the dataset's)")

    t2 = sub.add_parser(
        "export-2d",
        help="slice a 3D AMOS/MSD dataset into the SA-Med2D-20M 2D layout",
        description="Every labelled case (training and validation), reoriented to RAS, sliced along --axis; slices "
        "with foreground become 8-bit PNGs (CT window level 40 width 400, MR 0.5-99.5 percentiles), each class's "
        "connected instances binary masks named <image>--<class:04d>_<instance:03d>.png; instances under "
        "--min-pixels are dropped. Writes SAMed2D_v1.json and SAMed2D_v1_class_mapping_id.json.",
    )
    t2.add_argument("--data", type=Path, required=True, help="3D dataset folder (dataset.json)")
    t2.add_argument("--out", type=Path, required=True, help="output folder")
    t2.add_argument("--axis", default="z", choices=["x", "y", "z", "all"])
    t2.add_argument("--dataset-name", default="AMOS", help="dataset token in the file names")
    t2.add_argument("--min-pixels", type=int, default=100, help="drop mask instances under this size (MedSAM: 100)")
    return parser


def _cmd_quickstart(args) -> int:
    from amos_zoo.engine.quickstart import QuickstartConfig, run_quickstart

    cfg = QuickstartConfig(out=args.out, task=args.task, wandb=args.wandb, seed=args.seed)
    if args.steps is not None:
        cfg.max_steps = args.steps
        cfg.val_every = max(1, min(cfg.val_every, args.steps))
    if args.n_train is not None:
        cfg.n_train = args.n_train
    if args.n_val is not None:
        cfg.n_val = args.n_val
    run_quickstart(cfg)
    return 0


def _cmd_synth(args) -> int:
    from amos_zoo.data.synth import write_synthetic_dataset

    if args.layout == "msd":
        from amos_zoo.data.msd import MSD_TASKS, write_msd_dataset

        if args.task is None:
            raise ValueError(f"--layout msd needs --task, one of: {', '.join(MSD_TASKS)}")
        root = write_msd_dataset(args.out, args.task, n_train=args.n_train_ct, n_test=args.n_test, seed=args.seed)
        spec = MSD_TASKS[args.task]
        print(
            f"wrote a synthetic {args.task} dataset ({spec.num_channels} channel(s), {len(spec.labels)} classes) "
            f"to {root}. Next: amos-zoo fit --config configs/quickstart/unet.yaml --data.root {root} --data.task all"
        )
        return 0

    root = write_synthetic_dataset(
        args.out, args.n_train_ct, args.n_train_mr, args.n_val_ct, args.n_val_mr, args.n_test, seed=args.seed
    )
    print(
        f"wrote the synthetic AMOS dataset to {root} (dataset.json, imagesTr, labelsTr, imagesVa, labelsVa, "
        f"imagesTs). Next: amos-zoo fit --config configs/quickstart/unet.yaml --data.root {root}"
    )
    return 0


def _cmd_models(args) -> int:
    from amos_zoo.models.registry import MODEL_REGISTRY, count_parameters, create_model

    print(f"{'name':<12} {'params (M)':>10} {'published':>9}  constraints / description")
    for spec in MODEL_REGISTRY.values():
        count = ""
        if not args.no_count:
            net = create_model(spec.name, **(spec.published_params_setting or {}))
            count = f"{count_parameters(net) / 1e6:.1f}"
        pub = f"{spec.published_params:.1f}" if spec.published_params else "-"
        print(f"{spec.name:<12} {count:>10} {pub:>9}  {spec.constraints()}; {spec.description}")
    return 0


def _cmd_reproduce(args) -> int:
    from amos_zoo.engine.reproduce import run_reproduce

    row = run_reproduce(
        args.task,
        args.model,
        args.data,
        out=args.out,
        smoke=args.smoke,
        max_steps=args.max_steps,
        extra_args=args.overrides,
    )
    overall = row["metrics"]["overall"]
    print(
        f"{args.task} {args.model}: mDSC {overall['dice']:.4f}, mNSD {overall['nsd']:.4f} over "
        f"{row['metrics']['cases']} validation cases; row written to {args.out / args.task / args.model / 'row.json'}. "
        f"Next: amos-zoo table {args.out}"
    )
    return 0


def _cmd_table(args) -> int:
    from amos_zoo.engine.table import write_table

    print(write_table(args.runs, args.out, args.published))
    print(f"written: {(args.out or args.runs) / 'table.md'}, table.csv, table.png")
    return 0


def _cmd_check_data(args) -> int:
    from amos_zoo.data.check import check_dataset

    problems = check_dataset(args.data, args.dataset_json, workers=args.workers)
    if not problems:
        print(f"{args.data}: no problems found")
        return 0
    print(f"{args.data}: {len(problems)} problem(s)")
    for p in problems:
        print(f"- {p.file}\n    problem: {p.problem}\n    fix: {p.fix}")
    return 1


def _cmd_evaluate(args) -> int:
    from amos_zoo.data.labels import AMOS_LABELS
    from amos_zoo.metrics.evaluate import evaluate_folders, markdown_table

    labels = AMOS_LABELS
    if args.dataset_json:
        from amos_zoo.data.index import load_index

        labels = load_index(args.dataset_json.parent, args.dataset_json).labels
    metrics = tuple(m.strip() for m in args.metrics.split(",") if m.strip())
    summary = evaluate_folders(
        args.pred,
        args.gt,
        args.out,
        labels=labels,
        tolerance=args.tolerance,
        metrics=metrics,
        empty_policy=args.empty_policy,
        workers=args.workers,
    )
    print(markdown_table(summary, labels, [m for m in metrics if m in ("dice", "nsd")] or list(metrics[:1])))
    if summary["missing_predictions"]:
        print(f"missing predictions (scored as empty): {', '.join(summary['missing_predictions'])}")
    print(f"reports written to {args.out}: per_case.csv, summary.json, summary.md, boxplot.png")
    return 0


def predict_parser() -> argparse.ArgumentParser:
    """Parser of ``amos-zoo predict`` (segmenting scans)."""
    p = argparse.ArgumentParser(
        prog="amos-zoo predict",
        description="Segment scans with a trained model. Outputs one label NIfTI per input with exactly the input's "
        "shape and affine, plus a JSON with the label map. Finished cases are skipped on rerun; bad inputs are "
        "reported and the others go on (exit code 1 if any failed).",
    )
    p.add_argument("--weights", required=True, help="an amos-zoo checkpoint (.ckpt) or a weights registry name")
    p.add_argument(
        "--input",
        required=True,
        type=Path,
        help="a NIfTI file, a folder of NIfTI files, a DICOM series folder (or a folder of them), or a "
        "dataset.json (see --split)",
    )
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--split", default="test", help="dataset.json split to predict (default: test)")
    p.add_argument("--modality", choices=["CT", "MRI"], default=None, help="override the modality of every input")
    p.add_argument("--tta", action="store_true", help="mirror test-time augmentation (8 passes in 3D)")
    p.add_argument("--overlap", type=float, default=None, help="sliding-window overlap (default: the checkpoint's)")
    p.add_argument("--sw-batch-size", type=int, default=None, help="windows per forward pass")
    p.add_argument(
        "--precision",
        choices=["auto", "fp32", "bf16"],
        default="auto",
        help="network precision: auto = bf16 autocast on CUDA, fp32 on CPU; bf16 on CPU is ~2x faster where the "
        "CPU has native bf16",
    )
    p.add_argument(
        "--interpolation",
        choices=["linear", "nearest"],
        default="linear",
        help="labels back on the input grid: linear = class probabilities interpolated (nnU-Net); nearest = "
        "nearest network-grid label (MONAI Invertd)",
    )
    p.add_argument("--device", default="cuda" if _cuda() else "cpu", help="cpu or cuda[:N]")
    p.add_argument("--save-probabilities", action="store_true", help="also write <case>_probabilities.npz")
    p.add_argument("--trust", action="store_true", help="load unverified or full-unpickling weights (trusted files)")
    p.add_argument("--sha256", default=None, help="expected SHA-256 of the weights file (verified before use)")
    return p


def _cmd_weights(args) -> int:
    from amos_zoo.io import write_text
    from amos_zoo.weights import list_weights, render_markdown

    if args.write is not None:
        write_text(args.write, render_markdown())
        print(f"wrote {args.write}")
        return 0
    if args.markdown:
        print(render_markdown(), end="")
        return 0
    print(f"{'name':<30} {'model':<11} {'classes':<8} {'format':<23} {'verified':<9} task")
    for e in list_weights():
        classes = "encoder" if e.encoder_only else str(e.num_classes)
        verified = "sha256" if e.sha256 else "no"
        print(f"{e.name:<30} {e.arch:<11} {classes:<8} {e.fmt:<23} {verified:<9} {e.task}")
    print("\nunverified entries load only with --trust; details: amos-zoo weights --markdown (weights.md)")
    return 0


def _cmd_convert(args) -> int:
    from amos_zoo.data.convert import from_nnunet, to_nnunet

    if args.to_format:
        root = to_nnunet(args.data, args.out, args.dataset_id, args.name)
        print(
            f"wrote nnU-Net v2 raw data to {root}. Next: nnUNetv2_plan_and_preprocess -d {args.dataset_id}, train, "
            f"predict imagesTs, then amos-zoo evaluate --pred PRED --gt {root / 'labelsTs'} --out eval/"
        )
    else:
        root = from_nnunet(args.data, args.out)
        print(f"wrote a Decathlon-layout dataset to {root}")
    return 0


def _cmd_export_2d(args) -> int:
    from amos_zoo.data.samed2d import export_2d

    counts = export_2d(args.data, args.out, args.axis, args.dataset_name, min_pixels=args.min_pixels)
    print(
        f"exported {counts['cases']} case(s) to {args.out}: {counts['images']} images, {counts['masks']} masks "
        f"({counts['dropped_small_masks']} instances under {args.min_pixels} pixels dropped)"
    )
    return 0


def _cmd_export(args) -> int:
    from amos_zoo.engine.export import export_model

    result = export_model(args.ckpt, args.fmt, args.out, modality=args.modality, trust=args.trust)
    print(f"exported {args.fmt} to {result.path}; max |difference| to PyTorch logits {result.max_abs_diff:.2e}")
    if args.fmt == "bundle":
        print(
            f"run it: python -m monai.bundle run --config_file {args.out}/configs/inference.json --meta_file "
            f"{args.out}/configs/metadata.json --bundle_root {args.out} --dataset_dir NIFTI_DIR --output_dir OUT"
        )
    return 0


#: ``amos-zoo finetune`` option -> the LightningCLI ``fit`` option it stands for
FINETUNE_OPTIONS = {
    "--weights": "--model.pretrained",
    "--sha256": "--model.pretrained_sha256",
    "--freeze-encoder-epochs": "--model.freeze_encoder_epochs",
    "--pretrained-lr-scale": "--model.pretrained_lr_scale",
    "--head-init": "--model.head_init",
}


def finetune_to_fit_args(argv: Sequence[str]) -> list[str]:
    """Translate ``amos-zoo finetune`` arguments into ``amos-zoo fit`` arguments (the same run through fit)."""
    out: list[str] = []
    seen_weights = False
    items = list(argv)
    i = 0
    while i < len(items):
        arg = items[i]
        name, eq, value = arg.partition("=")
        if name == "--trust":
            out += ["--model.trust_pretrained", "true"]
        elif name in FINETUNE_OPTIONS:
            seen_weights |= name == "--weights"
            if eq:
                out.append(f"{FINETUNE_OPTIONS[name]}={value}")
            else:
                if i + 1 >= len(items):
                    raise SystemExit(f"amos-zoo finetune: error: {name} needs a value")
                out += [FINETUNE_OPTIONS[name], items[i + 1]]
                i += 1
        else:
            out.append(arg)
        i += 1
    if not seen_weights and not any(a in ("-h", "--help") for a in items):
        raise SystemExit("amos-zoo finetune: error: --weights NAME|FILE is required (amos-zoo weights lists names)")
    return ["fit", *out]


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _cmd_predict(argv: Sequence[str]) -> int:
    from amos_zoo.engine.predict import collect_inputs, load_predictor, predict_many

    args = predict_parser().parse_args(list(argv))
    opts = {}
    if args.overlap is not None:
        opts["overlap"] = args.overlap
    if args.sw_batch_size is not None:
        opts["sw_batch_size"] = args.sw_batch_size
    opts["precision"] = args.precision
    opts["interpolation"] = args.interpolation
    try:
        predictor = load_predictor(
            args.weights, device=args.device, trust=args.trust, sha256=args.sha256, tta=args.tta, **opts
        )
        jobs = collect_inputs(args.input, split=args.split, modality=args.modality)
    except (FileNotFoundError, ValueError, KeyError, OSError, RuntimeError) as err:
        print(f"amos-zoo predict: error: {err}", file=sys.stderr)
        return 2
    report = predict_many(predictor, jobs, args.out, save_probabilities=args.save_probabilities)
    print(
        f"predicted {len(report['done'])} case(s) into {args.out} in {report['seconds']:.1f} s; "
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


COMMANDS = {
    "quickstart": _cmd_quickstart,
    "synth": _cmd_synth,
    "models": _cmd_models,
    "check-data": _cmd_check_data,
    "reproduce": _cmd_reproduce,
    "table": _cmd_table,
    "evaluate": _cmd_evaluate,
    "weights": _cmd_weights,
    "export": _cmd_export,
    "export-2d": _cmd_export_2d,
    "convert": _cmd_convert,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``amos-zoo`` console script."""
    from_console = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "predict" and "--config" not in argv and not any(a.startswith("--ckpt_path") for a in argv):
        return _cmd_predict(argv[1:])
    if argv and argv[0] == "finetune":
        argv = finetune_to_fit_args(argv[1:])
        from_console = False
    if argv and argv[0] in LIGHTNING_COMMANDS:
        from amos_zoo.cli.lightning import run_lightning_cli

        run_lightning_cli(None if from_console else argv)
        return 0
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return COMMANDS[args.command](args)
    except (FileNotFoundError, ValueError, KeyError, OSError, RuntimeError) as err:
        print(f"amos-zoo {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
