"""Loading a trained network together with what inference needs: recipe, labels, window size."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from amos_zoo.data.recipes import get_recipe
from amos_zoo.models.registry import with_patch_size

__all__ = ["load_for_inference"]


def load_for_inference(
    ckpt: str | Path, *, trust: bool = False, sha256: str | None = None
) -> tuple[nn.Module, dict[str, Any]]:
    """The network (eval mode) with its recipe, labels, window size and constructor arguments.

    ``ckpt``: an amos-zoo checkpoint, a weights registry name (not an encoder-only one), a URL or a MONAI bundle.
    """
    from amos_zoo.weights.loading import file_labels, load_with_report

    net, report, entry, raw = load_with_report(ckpt, sha256=sha256, trust=trust)
    if raw.fmt not in ("lightning", "bundle") and entry is None:
        raise ValueError(
            f"{ckpt}: a {raw.fmt} file does not say how to preprocess scans; use an amos-zoo checkpoint (.ckpt), "
            "a MONAI bundle or a registry name (amos-zoo weights)"
        )
    if entry is not None and entry.encoder_only:
        raise ValueError(f"weights {entry.name!r} hold only an encoder; fine-tune them first (amos-zoo finetune)")
    if entry is not None:
        hp = {
            "sw_batch_size": 4,
            "sw_overlap": 0.5,
            "arch": entry.arch,
            "arch_kwargs": entry.model_kwargs,
            "in_channels": entry.in_channels,
            "num_classes": entry.num_classes,
            "roi_size": entry.roi_size,
        }
        recipe = get_recipe(entry.recipe["name"], **{k: v for k, v in entry.recipe.items() if k != "name"})
    elif raw.fmt == "bundle":
        from amos_zoo.weights.formats import bundle_network

        arch, cin, cout, kwargs = bundle_network(raw)
        inferer = raw.meta.get("inference", {}).get("inferer", {})
        hp = {"arch": arch, "arch_kwargs": kwargs, "in_channels": cin, "num_classes": cout}
        hp["roi_size"] = tuple(inferer.get("roi_size", (96, 96, 96)))
        hp["sw_batch_size"] = inferer.get("sw_batch_size", 4)
        hp["sw_overlap"] = inferer.get("overlap", 0.5)
        recipe = get_recipe("btcv", patch_size=hp["roi_size"])  # bundle preprocessing is not parsed; see README
    else:
        hp = dict(raw.meta["hyper_parameters"])
        stored = raw.meta.get("amos_zoo", {}).get("recipe")
        dm = raw.meta.get("datamodule_hyper_parameters", {})
        recipe = (
            get_recipe(stored["name"], **{k: v for k, v in stored.items() if k != "name"})
            if stored
            else get_recipe(dm.get("recipe", "btcv"), spacing=dm.get("spacing"), patch_size=dm.get("patch_size"))
        )
    labels = file_labels(raw, entry) or {i: f"class_{i}" for i in range(hp["num_classes"])}
    if raw.fmt == "lightning" and hp.get("label_names"):  # the readable names the model was trained with
        labels = {0: labels.get(0, "background"), **{int(k): v for k, v in hp["label_names"].items()}}
    info = {
        "arch": hp["arch"],
        "arch_kwargs": with_patch_size(hp["arch"], hp.get("arch_kwargs"), hp["roi_size"]),
        "in_channels": int(hp.get("in_channels", 1)),
        "num_classes": int(hp["num_classes"]),
        "roi_size": tuple(int(s) for s in hp["roi_size"]),
        "sw_batch_size": int(hp.get("sw_batch_size", 4)),
        "overlap": float(hp.get("sw_overlap", 0.5)),
        "recipe": recipe,
        "labels": {int(k): v for k, v in labels.items()},
        "load_report": report.summary(),
    }
    return net.eval(), info
