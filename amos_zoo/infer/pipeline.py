"""``amos-zoo predict``: segment files, folders, dataset.json splits and DICOM series, as a pipeline.

Reading and preprocessing the next case and writing the previous one run in background threads
while the network works on the current one. Finished cases are skipped on rerun; every output is
written atomically; a bad input is reported with its reason and the others go on (the command then
exits non-zero).
"""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
from tqdm.auto import tqdm

from amos_zoo.infer.predictor import InputError, Predictor, load_scan, nifti_header
from amos_zoo.io import save_nifti, write_json

__all__ = ["PredictJob", "collect_inputs", "load_predictor", "predict_many"]


@dataclass
class PredictJob:
    """One scan to segment: its id, source (file, channel files or DICOM folder) and modality."""

    case_id: str
    source: object
    modality: str = "CT"


def collect_inputs(inp: str | Path, split: str = "test", modality: str | None = None) -> list[PredictJob]:
    """Jobs for a NIfTI file, a folder of NIfTI files, a DICOM series folder, or a dataset.json (one split)."""
    from amos_zoo.data.index import case_id_from_path, load_index, modality_for

    inp = Path(inp)
    if inp.is_file() and inp.name.endswith(".json"):
        index = load_index(inp.parent, inp)
        cases = index.split(split)
        return [
            PredictJob(
                c.case_id, [str(p) for p in c.images] if len(c.images) > 1 else str(c.images[0]), modality or c.modality
            )
            for c in cases
        ]
    if inp.is_file():
        cid = case_id_from_path(inp)
        return [PredictJob(cid, str(inp), modality or modality_for(cid, ["CT"], None))]
    if inp.is_dir():
        niftis = sorted(p for p in inp.iterdir() if p.name.endswith((".nii", ".nii.gz")) and not p.name.startswith("."))
        if niftis:
            return [
                PredictJob(case_id_from_path(p), str(p), modality or modality_for(case_id_from_path(p), ["CT"], None))
                for p in niftis
            ]
        subdirs = sorted(p for p in inp.iterdir() if p.is_dir())
        if subdirs and not any(p.is_file() for p in inp.iterdir() if not p.name.startswith(".")):
            return [PredictJob(d.name, str(d), modality or "CT") for d in subdirs]  # one DICOM series per folder
        return [PredictJob(inp.name, str(inp), modality or "CT")]  # the folder is one DICOM series
    raise FileNotFoundError(f"{inp}: input not found (give a NIfTI file, a folder, a DICOM folder or a dataset.json)")


def load_predictor(
    source: str | Path, device: str = "cpu", trust: bool = False, sha256: str | None = None, **kwargs
) -> Predictor:
    """A Predictor from an amos-zoo checkpoint, a weights registry name, a URL, a MONAI bundle (its model card), an
    nnU-Net v2 checkpoint or results folder (every fold's checkpoint_final.pth, logits averaged as nnU-Net's ensemble).

    Files are loaded weights-only unless ``trust``; downloads are verified against ``sha256`` (or the
    registry's hash). ``kwargs`` override the card's settings (``overlap``, ``sw_batch_size``, ``tta``...).
    """
    from amos_zoo.infer.nnunet_results import is_results_folder, load_results_folder
    from amos_zoo.weights.loading import load_model

    folds = kwargs.pop("folds", None)
    if is_results_folder(source):  # nnU-Net v2's trained model folder: its folds' ensemble
        net, card = load_results_folder(source, folds=folds, trust=trust)
        return Predictor.from_card(net, card, device=device, **kwargs)
    if folds is not None:
        raise ValueError(f"{source}: folds are chosen from an nnU-Net results folder (plans.json, fold_X/)")
    net, card, _ = load_model(source, trust=trust, sha256=sha256)
    return Predictor.from_card(net, card, device=device, **kwargs)


def _is_done(out_dir: Path, case_id: str, save_probabilities: bool) -> bool:
    """A case is finished when its label map exists and reads back; it is written last (after the JSON and the
    probabilities), each atomically, so an interrupted case has no label map and is redone."""
    out_path = out_dir / f"{case_id}.nii.gz"
    if not out_path.is_file() or not (out_dir / f"{case_id}.json").is_file():
        return False
    if save_probabilities and not (out_dir / f"{case_id}_probabilities.npz").is_file():
        return False
    try:
        nib.load(str(out_path)).get_fdata(dtype="float32")  # a complete, readable file
        return True
    except Exception:  # noqa: BLE001 - unreadable: predict again
        return False


def predict_many(
    predictor: Predictor,
    jobs: list[PredictJob],
    out_dir: str | Path,
    save_probabilities: bool = False,
    progress: bool = True,
) -> dict:
    """Segment every job into ``out_dir/<case>.nii.gz`` (+ ``<case>.json`` label map).

    Returns:
        {"done": [...], "skipped": [...], "failed": {case: reason}, "seconds": s}.

    One function because the reader, the network and the writer threads share its state (report, bar).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    report: dict = {"done": [], "skipped": [], "failed": {}, "seconds": 0.0}
    todo = []
    for job in jobs:
        if _is_done(out_dir, job.case_id, save_probabilities):
            report["skipped"].append(job.case_id)
        else:
            todo.append(job)
    start = time.time()
    bar = tqdm(total=len(todo), desc="predict", unit="case", disable=not progress)

    def load(job: PredictJob):
        image = load_scan(job.source)
        predictor.check_channels(image)
        probs_grid = predictor.preprocess({"image": image, "modality": job.modality})
        return image, probs_grid

    def write(job: PredictJob, labels, affine, header, probs):
        # the label map last: its presence marks the case finished (see _is_done)
        write_json(
            out_dir / f"{job.case_id}.json",
            {
                "case": job.case_id,
                "source": str(job.source),
                "modality": job.modality,
                "labels": {str(k): v for k, v in sorted(predictor.label_names.items())},
                "shape": list(labels.shape),
                "affine": affine.tolist(),
            },
        )
        if save_probabilities:
            import numpy as np

            from amos_zoo.io import atomic_path

            with atomic_path(out_dir / f"{job.case_id}_probabilities.npz") as tmp, open(tmp, "wb") as f:
                np.savez_compressed(f, probabilities=probs.astype(np.float16))
        save_nifti(labels, affine, out_dir / f"{job.case_id}.nii.gz", header=header)

    with ThreadPoolExecutor(max_workers=1) as reader, ThreadPoolExecutor(max_workers=1) as writer:
        pending: Future | None = reader.submit(load, todo[0]) if todo else None
        writes: list[tuple[PredictJob, Future]] = []
        for i, job in enumerate(todo):
            current = pending
            pending = reader.submit(load, todo[i + 1]) if i + 1 < len(todo) else None
            try:
                image, pre = current.result()
                labels, affine, on_input = predictor.to_input_grid(
                    image, predictor.probabilities_from_preprocessed(pre, image), save_probabilities
                )
                header = nifti_header(job.source)
                writes.append(
                    (
                        job,
                        writer.submit(write, job, labels, affine, header, on_input if save_probabilities else None),
                    )
                )
            except (InputError, ValueError, OSError, RuntimeError) as err:
                report["failed"][job.case_id] = str(err)
            bar.update()
            elapsed = max(time.time() - start, 1e-6)
            bar.set_postfix(cases_per_min=f"{60 * bar.n / elapsed:.1f}")
        for job, fut in writes:
            try:
                fut.result()
                report["done"].append(job.case_id)
            except OSError as err:
                report["failed"][job.case_id] = f"cannot write the prediction: {err}"
    bar.close()
    report["seconds"] = time.time() - start
    return report
