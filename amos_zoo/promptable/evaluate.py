"""``amos-zoo evaluate-prompts``: one promptable model under one prompt protocol on an SA-Med2D-layout folder.

Every mask of the selected images is one item (as the sources' test loops). Its prompt is made by the protocol's
rule (:mod:`amos_zoo.promptable.prompts`) or replayed from a prompts file; the image goes through the protocol's
input pipeline (:mod:`amos_zoo.promptable.pipelines`) and is encoded once for all its masks (the sources' loops
encode it again for every mask: ``encode_once=False`` does that, with the same numbers). With one decoding per mask
(box, points) the prompts of all the masks of an image go through the prompt encoder and mask decoder in one
batched call (``batch_masks=False``: one call per mask; the same masks on the demo slices, tested: the batched
matrix products round differently in the last bit, about 1e-7, so a pixel exactly at the threshold could differ);
iterative clicks decode one mask at a time. The mask is scored at the original size by the metric suite
(:func:`amos_zoo.metrics.case.evaluate_case`: Dice, NSD; IoU = Dice / (2 - Dice), exact for binary masks). The run
writes ``prompts.json`` (unless it replayed one), ``row.json`` (model card, protocol with sources, split, load
report, means per modality and sub-dataset, every mask) and ``table.md``.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from functools import cache
from itertools import groupby
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["MaskItem", "PromptRunner", "collect_items", "evaluate_prompts", "summarise_masks", "prompt_table"]

SPLITS = ("samed2d-20", "all", "index-test")


@dataclass(frozen=True)
class MaskItem:
    """One mask to segment: its key (file name), files, class and origin."""

    key: str
    image: Path
    mask: Path
    class_name: str
    modality: str
    dataset: str


def _origin(s) -> tuple[str, str]:
    """(modality, sub-dataset) of a slice: from the full release's file names, or from the demo's names (AMOS ids
    above 500 are MRI, AMOS 2022 data description; ``s<digits>`` subjects are TotalSegmentator CT)."""
    if s.dataset:
        return (s.modality or "unknown").split("_")[0].upper(), s.dataset
    stem = s.image.stem
    m = re.match(r"^amos_(\d+)_", stem)
    if m:
        return ("MR" if int(m[1]) > 500 else "CT"), "AMOS"
    if re.match(r"^s\d+_", stem):
        return "CT", "TotalSegmentator"
    return "unknown", "unknown"


def collect_items(data: str | Path, split: str = "samed2d-20", fraction: float = 0.2, seed: int = 0):
    """The masks to evaluate and the split's record: ``samed2d-20`` (a seeded random ``fraction`` of each
    sub-dataset's images), ``all``, or ``index-test`` (the images the index marks as test: the demo's
    label2image_test.json)."""
    from amos_zoo.data.samed2d import read_samed2d
    from amos_zoo.promptable.prompts import test_split

    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    index = read_samed2d(data)
    slices = [s for s in index.slices if s.masks]
    record: dict[str, Any] = {"rule": split, "seed": seed}
    if split == "samed2d-20":
        groups: dict[str, list[str]] = {}
        for s in slices:
            groups.setdefault(_origin(s)[1], []).append(s.image.name)
        chosen = test_split(groups, fraction, seed)
        keep = {name for names in chosen.values() for name in names}
        slices = [s for s in slices if s.image.name in keep]
        record.update(fraction=fraction, of={g: len(v) for g, v in groups.items()})
        record["images"] = chosen  # written to split.json beside the row (millions of names in the full release)
    elif split == "index-test":
        slices = [s for s in slices if s.split == "test"]
    items = []
    for s in sorted(slices, key=lambda s: s.image.name):
        modality, dataset = _origin(s)
        for mk in sorted(s.masks, key=lambda m: m.path.name):
            items.append(MaskItem(mk.path.name, s.image, mk.path, mk.class_name, modality, dataset))
    if not items:
        raise ValueError(f"{data}: no masks to evaluate under split {split!r}")
    record["n_images"] = len({i.image for i in items})
    record["n_masks"] = len(items)
    return items, record


def collect_groups(items: list[MaskItem]) -> dict[str, list[str]]:
    """Sub-dataset -> its images among ``items``."""
    groups: dict[str, set[str]] = {}
    for i in items:
        groups.setdefault(i.dataset, set()).add(i.image.name)
    return {k: sorted(v) for k, v in sorted(groups.items())}


def _read_rgb(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def _read_mask(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        mask = np.asarray(im)
    mask = mask[..., 0] if mask.ndim == 3 else mask
    if not mask.any():
        raise ValueError(f"{path}: empty mask (no prompt can be made from it)")
    return mask > 0


class PromptRunner:
    """A SAM-family network with an input pipeline: encode an image, decode a prompt, iterate clicks."""

    def __init__(self, model, pipeline, multimask: bool, device: str = "cpu") -> None:
        self.model = model.to(device).eval()
        self.pipeline = pipeline
        self.multimask = multimask
        self.device = device
        self._dense_pe = None

    def encode(self, rgb: np.ndarray):
        import torch

        x, geometry = self.pipeline.image(rgb)
        with torch.inference_mode():
            return self.model.image_encoder(x.to(self.device)), geometry

    def decode(self, embedding, geometry, coords, labels, box, mask_input=None):
        """Low-resolution logits (1, 1, s, s) and predicted IoU of one prompt (coordinates in prompt space)."""
        return self.decode_batch(embedding, geometry, [(coords, labels, box)], mask_input)

    def segment(self, embedding, geometry, prompt, truth_in_prompt_space, iterations: int = 1):
        """The mask at the original size after ``iterations`` decodings (clicks from the error region between
        them, SAM-Med2D utils.generate_point), and the clicks added."""
        import torch

        from amos_zoo.promptable.prompts import error_click

        coords, labels = list(prompt.point_coords), list(prompt.point_labels)
        rng = np.random.RandomState(prompt.seed)
        mask_input = None
        clicks = []
        for step in range(iterations):
            low_res, _ = self.decode(embedding, geometry, coords, labels, prompt.box, mask_input)
            if step < iterations - 1:
                predicted = (torch.sigmoid(self.pipeline.upsample(low_res))[0, 0] > 0.5).cpu().numpy()
                xy, label = error_click(predicted.astype(np.uint8), truth_in_prompt_space.astype(np.uint8), rng)
                coords.append(xy)
                labels.append(label)
                clicks.append([*xy, label])
                mask_input = torch.sigmoid(low_res)
        return self.pipeline.mask(low_res, geometry), clicks

    def decode_batch(self, embedding, geometry, prompts: list[tuple[Any, Any, Any]], mask_input=None):
        """Low-resolution logits (B, 1, s, s) and predicted IoUs (B, 1) of B prompts ``(coords, labels, box)`` of
        one image, in one prompt-encoder + mask-decoder call (segment-anything's decoder repeats the image's
        embedding for every prompt: ``SamPredictor.predict_torch``'s batch of prompts). The prompts must have the
        same kind and number of points (true within a protocol); the multimask choice stays per prompt.
        ``mask_input``: the previous low-resolution output of an iterative click (one prompt)."""
        import torch

        points = None
        if len(prompts[0][0]):
            xy = np.stack([self.pipeline.coords(np.asarray(c), geometry) for c, _, _ in prompts])
            points = (
                torch.as_tensor(xy, dtype=torch.float, device=self.device),
                torch.as_tensor(np.array([labels for _, labels, _ in prompts]), dtype=torch.int, device=self.device),
            )
        boxes = None
        if prompts[0][2] is not None:
            corners = [
                self.pipeline.coords(np.asarray(box, dtype=np.float64).reshape(2, 2), geometry).reshape(4)
                for _, _, box in prompts
            ]
            boxes = torch.as_tensor(np.stack(corners), dtype=torch.float, device=self.device)
        with torch.inference_mode():  # the sources' no_grad, less bookkeeping per operation; the same numbers
            if self._dense_pe is None:  # a function of the grid only: computed once, not per mask
                self._dense_pe = self.model.prompt_encoder.get_dense_pe()
            sparse, dense = self.model.prompt_encoder(points=points, boxes=boxes, masks=mask_input)
            low_res, iou = self.model.mask_decoder(
                image_embeddings=embedding,
                image_pe=self._dense_pe,
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                multimask_output=self.multimask,
            )
        if self.multimask:  # per prompt: the highest predicted IoU (SAM-Med2D test.py prompt_and_decoder)
            best = torch.argmax(iou, dim=1)
            rows = torch.arange(len(best), device=best.device)
            low_res, iou = low_res[rows, best][:, None], iou[rows, best][:, None]
        return low_res, iou

    def segment_batch(self, embedding, geometry, prompts: list) -> list:
        """:meth:`segment` (one decoding) for every mask of one image in one batched decoder call, the multimask
        choice per mask. Iterative clicks are not batched: the decoder's matrix products over a batch round in the
        last bit (about 1e-7) unlike one prompt's, which moved one pixel of one of the demo's 30 masks after three
        click rounds, and a moved pixel can move every later click."""
        low_res, _ = self.decode_batch(embedding, geometry, [(p.point_coords, p.point_labels, p.box) for p in prompts])
        return [(self.pipeline.mask(low_res[i : i + 1], geometry), []) for i in range(len(prompts))]


def _segment_image(runner: PromptRunner, encoded, prompts: list) -> list:
    """Every prompt of one image, batched by prompt shape (number of points, box or not: one batch within a
    protocol), results in the given order."""
    shapes: dict[tuple[int, bool], list[int]] = {}
    for i, prompt in enumerate(prompts):
        shapes.setdefault((len(prompt.point_coords), prompt.box is None), []).append(i)
    results: list = [None] * len(prompts)
    for members in shapes.values():
        for i, result in zip(members, runner.segment_batch(*encoded, [prompts[i] for i in members])):
            results[i] = result
    return results


def _score(truth: np.ndarray, pred: np.ndarray, with_nsd: bool, tolerance: float) -> dict[str, float]:
    from amos_zoo.metrics.case import evaluate_case

    metrics = ("dice", "nsd") if with_nsd else ("dice",)
    row = evaluate_case(
        truth.astype(np.uint8), pred.astype(np.uint8), (1.0, 1.0), [1], tolerance=tolerance, metrics=metrics
    )[1]
    out = {"dice": row["dice"], "iou": row["dice"] / (2.0 - row["dice"])}
    if with_nsd:
        out["nsd"] = row["nsd"]
    return out


def summarise_masks(masks: list[dict[str, Any]], metrics: list[str]) -> dict[str, Any]:
    """Means over masks: overall, per modality, per sub-dataset and per class."""

    def mean(rows):
        return {m: float(np.mean([r[m] for r in rows])) for m in metrics} | {"n_masks": len(rows)}

    out: dict[str, Any] = {"overall": mean(masks)}
    for field in ("modality", "dataset", "class_name"):
        groups: dict[str, list] = {}
        for r in masks:
            groups.setdefault(r[field], []).append(r)
        out[f"by_{field}"] = {k: mean(v) for k, v in sorted(groups.items())}
    return out


def _load_model(model: str, weights: str | None, image_size: int | None, trust: bool):
    from amos_zoo.promptable.models import build_promptable, get_promptable
    from amos_zoo.promptable.weights import load_promptable_weights, resolve_promptable_weights

    spec = get_promptable(model)
    size = image_size or spec.image_size
    if weights in (None, "", "none"):
        return spec, build_promptable(model, image_size=size), None, size
    path, verified = resolve_promptable_weights(weights, trust=trust)  # before the network: a refusal costs nothing
    network = build_promptable(model, image_size=size)
    report = load_promptable_weights(network, path, verified=verified)
    return spec, network, report, size


def evaluate_prompts(
    model: str,
    protocol: str,
    data: str | Path,
    out: str | Path,
    weights: str | None = None,
    image_size: int | None = None,
    points: int | None = None,
    iterations: int | None = None,
    box_shift: int | None = None,
    prompts: str | Path | None = None,
    seed: int = 0,
    split: str = "samed2d-20",
    device: str = "cpu",
    pipeline: str | None = None,
    encode_once: bool = True,
    batch_masks: bool = True,
    trust: bool = False,
    progress: bool = True,
    network=None,
    on_mask=None,
) -> dict[str, Any]:
    """Evaluate ``model`` under prompt ``protocol`` on the SA-Med2D folder ``data``; write prompts.json, row.json and
    table.md under ``out`` and return the row. ``prompts`` replays a prompts file (made by any model at the same
    input size under the same protocol settings). ``network`` evaluates an already built network instead of
    building ``model`` (its card is still ``model``'s); ``on_mask(key, mask)`` receives every predicted mask.
    ``pipeline`` replaces the protocol's input pipeline (``model``: the model card's own, e.g. SAM's
    ``SamPredictor`` preprocessing for ``sam_vit_b``). ``encode_once`` encodes each image once for all its masks and
    ``batch_masks`` decodes them in one call (one decoding per mask only); both off is the sources' loop.

    One function because it is the sources' test loop in order: items, prompts, encode, decode, score, write."""
    import torch
    from tqdm import tqdm

    from amos_zoo.io import write_json, write_text
    from amos_zoo.metrics.tolerances import get_tolerances
    from amos_zoo.promptable.pipelines import get_pipeline
    from amos_zoo.promptable.prompts import make_prompt, mask_seed, read_prompts, write_prompts
    from amos_zoo.promptable.protocols import get_prompt_protocol
    from amos_zoo.weights.download import sha256_of

    card = get_prompt_protocol(protocol)
    if network is None:
        spec, network, report, size = _load_model(model, weights, image_size, trust)
    else:
        from amos_zoo.promptable.models import get_promptable

        spec, report, size = get_promptable(model), None, int(network.image_encoder.img_size)
    pipeline_name = pipeline or card.get("input.pipeline")
    if pipeline_name == "model":
        pipeline_name = spec.pipeline
    pipeline = get_pipeline(pipeline_name, size)
    n_points = int(points if points is not None else card.get("prompt.points", 0))
    n_iterations = int(iterations if iterations is not None else card.get("prompt.iterations", 1))
    shift = int(box_shift if box_shift is not None else card.get("prompt.box_shift", 0))
    if n_iterations > 1 and not pipeline.prompts_in_input_space:
        raise ValueError("iterative clicks are made in the network's input space: use the samed2d pipeline")
    rule = card.get("prompt.rule")
    header = {
        "protocol": protocol,
        "rule": rule,
        "points": n_points,
        "box_shift": shift,
        "pipeline": pipeline_name,
        "image_size": size,
        "seed": seed,
    }
    items, split_record = collect_items(data, split, float(card.get("split.fraction", 0.2)), seed)
    replayed = read_prompts(prompts, header) if prompts else None
    if replayed is not None:
        absent = [i.key for i in items if i.key not in replayed]
        if absent:
            raise ValueError(f"{prompts}: no prompt for {len(absent)} masks ({absent[:3]}...)")
    runner = PromptRunner(network, pipeline, multimask=card.get("decode.multimask") == "best-iou", device=device)
    with_nsd = "nsd" in card.get("metric.metrics", [])
    tolerance = get_tolerances(float(card.get("metric.nsd_tolerance", 2.0)))  # built once, not per mask
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    made: dict[str, Any] = {}
    rows = []
    start = time.perf_counter()
    bar = tqdm(total=len(items), desc=f"{model} {protocol}", unit="mask", disable=not progress)
    for image_path, group in groupby(items, key=lambda i: i.image):  # items are sorted by image
        group = list(group)
        encoded = runner.encode(_read_rgb(image_path)) if encode_once else None
        work = []  # (item, truth, truth in prompt space, prompt, (embedding, geometry))
        for item in group:
            embedding, geometry = encoded if encode_once else runner.encode(_read_rgb(item.image))
            truth = _read_mask(item.mask)
            # the mask in the prompt space: to draw prompts, and for iterative clicks
            truth_prompt = pipeline.prompt_mask(truth, geometry) if replayed is None or n_iterations > 1 else None
            if replayed is not None:
                prompt = replayed[item.key]
            else:
                try:
                    prompt = make_prompt(
                        truth_prompt, rule, mask_seed(seed, item.key), points=n_points, box_shift=shift
                    )
                except ValueError as err:
                    raise ValueError(f"{item.mask}: {err}") from err
                made[item.key] = prompt
            work.append((item, truth, truth_prompt, prompt, (embedding, geometry)))
        if encode_once and batch_masks and n_iterations == 1:  # every mask of the image in one decoder call
            results = _segment_image(runner, encoded, [w[3] for w in work])
        else:
            results = [runner.segment(*w[4], w[3], w[2], n_iterations) for w in work]
        for (item, truth, _, _, _), (pred, clicks) in zip(work, results):
            if on_mask is not None:
                on_mask(item.key, pred)
            scores = _score(truth, pred, with_nsd, tolerance)
            rows.append(
                {
                    "mask": item.key,
                    "image": item.image.name,
                    "class_name": item.class_name,
                    "modality": item.modality,
                    "dataset": item.dataset,
                    **scores,
                    "clicks": clicks,
                }
            )
            bar.update(1)
        bar.set_postfix(dice=f"{np.mean([r['dice'] for r in rows]):.3f}")
    bar.close()
    seconds = time.perf_counter() - start
    prompts_path = Path(prompts) if prompts else out / "prompts.json"
    if replayed is None:
        write_prompts(prompts_path, header, made)
    metric_names = ["dice", "iou", "nsd"] if with_nsd else ["dice", "iou"]
    import hashlib

    images = sorted({i.image.name for i in items})
    split_record = {k: v for k, v in split_record.items() if k != "images"}
    split_record["chosen"] = {k: len(v) for k, v in collect_groups(items).items()}
    split_record["images_sha256"] = hashlib.sha256("\n".join(images).encode()).hexdigest()
    write_json(out / "split.json", {"rule": split_record["rule"], "seed": seed, "images": images})
    row = {
        "kind": "promptable",
        "model": spec.card(),
        "weights": weights,
        "load_report": report.to_dict() if report else None,
        "image_size": size,
        "protocol": card.record(),
        "settings": header | {"iterations": n_iterations},
        "split": split_record,
        "prompts_file": str(prompts_path),
        "prompts_sha256": sha256_of(prompts_path),
        "prompts_replayed": replayed is not None,
        "encode_once": encode_once,
        "batch_masks": encode_once and batch_masks and n_iterations == 1,
        "device": device,
        "torch_threads": torch.get_num_threads(),
        "seconds": seconds,
        "masks_per_second": len(rows) / seconds if seconds else None,
        "summary": summarise_masks(rows, metric_names),
        "masks": rows,
    }
    write_json(out / "row.json", row)
    write_text(out / "table.md", prompt_table([row]))
    return row


@cache
def _published() -> list[dict[str, Any]]:
    from importlib import resources

    import yaml

    text = resources.files("amos_zoo").joinpath("resources/published.yaml").read_text()
    return yaml.safe_load(text).get("promptable", [])


def _matches(row: dict[str, Any], p: dict[str, Any]) -> bool:
    s = row["settings"]
    return (
        p["protocol"] == s["protocol"]
        and p["image_size"] == row["image_size"]
        and p.get("points", 0) == (s["points"] if s["protocol"] == "samed2d-points" else 0)
        and p["weights"] == row["weights"]
    )


def prompt_table(rows: list[dict[str, Any]]) -> str:
    """Markdown: one line per run, beside the published number of the same protocol, prompt count, input size and
    weights (the authors' test images are not published: the split always differs and the line says so)."""
    lines = [
        "| model | weights | size | protocol | prompt | masks | Dice | IoU | NSD | published Dice | difference | "
        "published as |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    published = _published()
    for row in rows:
        s, summary = row["settings"], row["summary"]["overall"]
        prompt = f"{s['points']} pt" if s["protocol"] == "samed2d-points" else s["rule"]
        if s["iterations"] > 1:
            prompt += f", {s['iterations']} decodings"
        match = next((p for p in published if _matches(row, p)), None)
        nsd = f"{summary['nsd'] * 100:.2f}" if "nsd" in summary else ""
        pub = diff = name = ""
        if match:
            pub = f"{match['value']:.2f}"
            diff = f"{summary['dice'] * 100 - match['value']:+.2f}"
            name = f"{match['published_name']} ({match['citation']}; split: {match['split']})"
        lines.append(
            f"| {row['model']['name']} | {row['weights'] or 'none (random init)'} | {row['image_size']} | "
            f"{s['protocol']} | {prompt} | {summary['n_masks']} | {summary['dice'] * 100:.2f} | "
            f"{summary['iou'] * 100:.2f} | {nsd} | {pub} | {diff} | {name} |"
        )
    return "\n".join(lines) + "\n"
