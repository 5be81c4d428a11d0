"""Benchmark: masks per second of ``amos-zoo evaluate-prompts`` against SAM-Med2D's own test loop, same prompts.

SAM-Med2D's test.py (OpenGVLab/SAM-Med2D@bfd2b93) treats every mask as one item: its TestingDataset reads the
image, normalises and resizes it, and the loop runs the image encoder again for every mask, then the prompt
encoder and mask decoder, postprocess_masks, the loss criterion and SegMetrics. ``source_loop`` below is that
loop, step by step (cv2's nearest resize as torch's ``nearest``, which is the same rule; the prompts replayed
from amos-zoo's prompts file, as test.py's --prompt_path does). amos-zoo encodes each image once for all its
masks and decodes their boxes in one batched prompt-encoder + mask-decoder call. Both run the same network, in
the same process, precision (fp32) and thread count, warmed up, interleaved, ``--repeats`` times; the script
prints the median and spread of masks per second,
``ratio_vs_source_loop`` and ``agreement`` (the fraction of masks whose predicted pixels are identical in both
loops).

    python benchmarks/bench_prompts.py [--data ../shared/data/samed2d_demo] [--configs tiny vit_b_256]
        [--device cpu] [--threads 1] [--repeats 3]

Configurations: ``tiny`` (the test model, 64 x 64), ``vit_b_256`` (SAM-Med2D ViT-B with adapters at 256),
``vit_b_1024`` (SAM ViT-B at 1024, in SAM-Med2D's loop as its README table runs it; for a GPU). Weights are random:
speed and agreement do not depend on them.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

CONFIGS = {
    "tiny": ("sam_med2d_tiny", {}),
    "vit_b_256": ("sam_med2d_vit_b", {}),
    "vit_b_1024": ("sam_vit_b", {"image_size": 1024}),
}
MEAN = np.array([123.675, 116.28, 103.53])
STD = np.array([58.395, 57.12, 57.375])


def focal_dice_iou_loss(pred, mask, pred_iou, weight=20.0, gamma=2.0, alpha=0.25):
    """SAM-Med2D utils.py FocalDiceloss_IoULoss (FocalLoss, DiceLoss smooth 1, MaskIoULoss), which test.py
    computes for every mask."""
    p = torch.sigmoid(pred)
    num_pos = torch.sum(mask)
    num_neg = mask.numel() - num_pos
    loss_pos = -alpha * mask * (1 - p) ** gamma * torch.log(p + 1e-12)
    loss_neg = -(1 - alpha) * (1 - mask) * p**gamma * torch.log(1 - p + 1e-12)
    focal = (torch.sum(loss_pos) + torch.sum(loss_neg)) / (num_pos + num_neg + 1e-12)
    dice = 1 - (2.0 * torch.sum(p * mask) + 1.0) / (torch.sum(p) + torch.sum(mask) + 1.0)
    intersection = torch.sum(p * mask)
    iou = (intersection + 1e-7) / (torch.sum(p) + torch.sum(mask) - intersection + 1e-7)
    return weight * focal + dice + torch.mean((iou - pred_iou) ** 2)


def source_loop(net, items, prompts: dict, size: int, device: str) -> dict[str, np.ndarray]:
    """SAM-Med2D test.py with --boxes_prompt and --prompt_path, one item per mask (image encoded every time)."""
    from PIL import Image

    out = {}
    for item in items:
        # DataLoader.py TestingDataset.__getitem__
        image = np.asarray(Image.open(item.image).convert("RGB"))[..., ::-1].astype(np.float64)  # cv2.imread: BGR
        image = (image - MEAN) / STD
        mask = np.asarray(Image.open(item.mask))
        mask = (mask[..., 0] if mask.ndim == 3 else mask) / 255.0
        h, w = mask.shape
        x = torch.from_numpy(image.transpose(2, 0, 1).copy()).float()[None]
        if h < size and w < size:  # utils.train_transforms: PadIfNeeded, centre, 0
            top, left = (size - h) // 2, (size - w) // 2
            x = F.pad(x, (left, size - w - left, top, size - h - top))
        else:  # A.Resize(INTER_NEAREST)
            x = F.interpolate(x, (size, size), mode="nearest")
        prompt = prompts[item.key]
        boxes = torch.as_tensor([prompt["box"]], dtype=torch.float)[None].to(device)
        x = x.to(device)
        with torch.no_grad():  # test.py main
            image_embeddings = net.image_encoder(x)
            sparse, dense = net.prompt_encoder(points=None, boxes=boxes, masks=None)
            low_res_masks, iou_predictions = net.mask_decoder(
                image_embeddings=image_embeddings,
                image_pe=net.prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                multimask_output=True,
            )
        max_indexs = torch.max(iou_predictions, dim=1)[1]
        low_res_masks = torch.stack([low_res_masks[i : i + 1, idx] for i, idx in enumerate(max_indexs)], 0)
        masks = F.interpolate(low_res_masks, (size, size), mode="bilinear", align_corners=False)  # postprocess_masks
        if h < size and w < size:
            masks = masks[..., top : h + top, left : w + left]
        else:
            masks = F.interpolate(masks, (h, w), mode="bilinear", align_corners=False)
        gt = torch.from_numpy(mask)[None, None].float()
        _ = focal_dice_iou_loss(masks, gt, iou_predictions.max(dim=1, keepdim=True)[0]).item()  # test.py criterion
        pred = (torch.sigmoid(masks) > 0.5).float()  # metrics.py: sigmoid, threshold 0.5
        inter = (pred * gt).sum()
        _ = (
            ((2 * inter + 1e-7) / (pred.sum() + gt.sum() + 1e-7)).item(),
            ((inter + 1e-7) / (pred.sum() + gt.sum() - inter + 1e-7)).item(),
        )
        out[item.key] = pred[0, 0].cpu().numpy() > 0
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared/data/samed2d_demo"))
    parser.add_argument("--configs", nargs="+", default=["tiny", "vit_b_256"], choices=list(CONFIGS))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from amos_zoo.promptable.evaluate import collect_items, evaluate_prompts
    from amos_zoo.promptable.models import build_promptable

    items, _ = collect_items(args.data, "all")
    per_image = len(items) / len({i.image for i in items})
    print(
        f"data {args.data}: {len(items)} masks on {len({i.image for i in items})} images ({per_image:.1f} per "
        f"image); device {args.device}, {args.threads} threads, fp32, {args.repeats} interleaved repeats"
    )
    results = {}
    for config in args.configs:
        name, overrides = CONFIGS[config]
        torch.manual_seed(0)
        net = build_promptable(name, **overrides).to(args.device).eval()
        size = net.image_encoder.img_size
        work = Path(tempfile.mkdtemp())
        ours: dict[str, np.ndarray] = {}

        def run_ours(sink, work=work, net=net, name=name):
            evaluate_prompts(
                name,
                "samed2d-box",
                args.data,
                work / "ours",
                split="all",
                progress=False,
                network=net,
                device=args.device,
                prompts=work / "first" / "prompts.json",
                on_mask=sink.__setitem__,
            )

        evaluate_prompts(
            name, "samed2d-box", args.data, work / "first", split="all", progress=False, network=net, device=args.device
        )  # writes the prompts; warms up
        prompts = json.loads((work / "first" / "prompts.json").read_text())["prompts"]
        source_loop(net, items[:2], prompts, size, args.device)  # warm-up
        times = {"amos-zoo": [], "source loop": []}
        theirs: dict[str, np.ndarray] = {}
        for _ in range(args.repeats):
            for label in ("source loop", "amos-zoo"):
                if args.device.startswith("cuda"):
                    torch.cuda.synchronize()
                start = time.perf_counter()
                if label == "amos-zoo":
                    run_ours(ours)
                else:
                    theirs = source_loop(net, items, prompts, size, args.device)
                if args.device.startswith("cuda"):
                    torch.cuda.synchronize()
                times[label].append(len(items) / (time.perf_counter() - start))
        agreement = np.mean([np.array_equal(ours[k], theirs[k]) for k in theirs])
        ratios = [a / b for a, b in zip(times["amos-zoo"], times["source loop"])]
        results[config] = {
            "masks_per_second": {k: statistics.median(v) for k, v in times.items()},
            "spread": {k: [min(v), max(v)] for k, v in times.items()},
            "ratio_vs_source_loop": statistics.median(ratios),
            "ratio_spread": [min(ratios), max(ratios)],
            "agreement": float(agreement),
            "input": size,
        }
        for label, v in times.items():
            print(f"{config:<11} {label:<12} {statistics.median(v):8.2f} masks/s (spread {min(v):.2f} .. {max(v):.2f})")
    print(json.dumps(results, indent=1))
    for config, r in results.items():
        print(
            f"{config}: ratio_vs_source_loop {r['ratio_vs_source_loop']:.2f}x (spread {r['ratio_spread'][0]:.2f} .. "
            f"{r['ratio_spread'][1]:.2f}), agreement {r['agreement']:.3f}"
        )


if __name__ == "__main__":
    main()
