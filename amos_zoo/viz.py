"""Plots people would rather look at than read: per-organ bars and boxes, and prediction overlays."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from amos_zoo.io import atomic_path

__all__ = ["dice_barplot", "metric_boxplot", "overlay_png"]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    _plt().close(fig)
    return Path(path)


def dice_barplot(per_organ: dict[str, float], path: str | Path, title: str = "Dice per organ") -> Path:
    """Horizontal bar chart of one value per organ, with the mean marked."""
    plt = _plt()
    names = list(per_organ)
    values = [per_organ[n] if per_organ[n] is not None else float("nan") for n in names]
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(names) + 1.2))
    ax.barh(names[::-1], values[::-1], color="#3b7dd8")
    mean = float(np.nanmean(values)) if values else float("nan")
    ax.axvline(mean, color="#d84b3b", linestyle="--", label=f"mean {mean:.3f}")
    ax.set_xlim(0, 1)
    ax.set_xlabel("Dice")
    ax.set_title(title)
    ax.legend(loc="lower right")
    return _save(fig, path)


def metric_boxplot(data: dict[str, dict[str, list[float]]], path: str | Path) -> Path:
    """One box-plot panel per metric (``{"dice": {organ: [per-case values]}}``), organ names on the left of each.

    The figure uses matplotlib's constrained layout, which makes room for each panel's organ names, so a panel's
    labels never run into the panel on its left.
    """
    plt = _plt()
    rows = max((len(per_organ) for per_organ in data.values()), default=1)
    height = 0.32 * rows + 1.5
    fig, axes = plt.subplots(1, len(data), figsize=(6.5 * len(data), height), squeeze=False, layout="constrained")
    for ax, (metric, per_organ) in zip(axes[0], data.items()):
        names = list(per_organ)
        vals = [[v for v in per_organ[n] if not math.isnan(v)] for n in names]
        ax.boxplot(vals, vert=False, tick_labels=names)
        ax.set_xlim(-0.02, 1.02)
        ax.set_xlabel(metric.upper())
        ax.set_title(f"{metric.upper()} per organ (per case)")
        ax.invert_yaxis()
    return _save(fig, path)


def overlay_png(
    image: np.ndarray,
    truth: np.ndarray | None,
    pred: np.ndarray,
    path: str | Path,
    axis: int = 2,
    index: int | None = None,
    window: tuple[float, float] = (-175, 250),
    title: str = "",
    names: dict[int, str] | None = None,
) -> Path:
    """An image slice with the predicted (solid) and reference (dashed) contours of every label, and a legend of
    each label's colour and name (``names``: label id -> organ name; the id when absent).

    Arrays are in RAS voxel order (x right, y anterior, z superior); axial slices are shown in the
    radiological convention (patient's right on the left of the picture, anterior up).
    """
    from matplotlib.lines import Line2D

    plt = _plt()
    if index is None:
        ref = truth if truth is not None else pred
        counts = (ref > 0).sum(axis=tuple(a for a in range(3) if a != axis))
        index = int(np.argmax(counts))
    take = [slice(None)] * 3
    take[axis] = index
    img = np.clip(image[tuple(take)].astype(float), *window)
    to_view = lambda a: np.flipud(np.asarray(a).T)[:, ::-1]  # noqa: E731 - rows anterior->posterior
    fig, ax = plt.subplots(figsize=(8.5, 6), layout="constrained")
    ax.imshow(to_view(img), cmap="gray")
    cmap = plt.get_cmap("tab20")
    labels = sorted(set(np.unique(pred[tuple(take)])) | set(np.unique(truth[tuple(take)]) if truth is not None else ()))
    handles = []
    for lid in labels:
        if lid == 0:
            continue
        color = cmap((int(lid) - 1) % 20)
        ax.contour(to_view(pred[tuple(take)] == lid), levels=[0.5], colors=[color], linewidths=1.5)
        if truth is not None:
            ax.contour(
                to_view(truth[tuple(take)] == lid), levels=[0.5], colors=[color], linewidths=1.0, linestyles="dashed"
            )
        name = (names or {}).get(int(lid), f"label {int(lid)}")
        handles.append(Line2D([], [], color=color, linewidth=3, label=f"{int(lid)} {name}"))
    if handles:
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    ax.set_title(title or f"slice {index}: prediction solid, reference dashed")
    ax.axis("off")
    return _save(fig, path)
