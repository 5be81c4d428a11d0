"""SA-Med2D-20M 2D slice datasets: read both published layouts, check every image-mask pair, and slice an
AMOS/MSD 3D dataset into the release's layout (``amos-zoo export-2d``).

Layouts (REFERENCE.md):

* the full release: ``images/``, ``masks/``, ``SAMed2D_v1.json`` (image -> list of masks) and
  ``SAMed2D_v1_class_mapping_id.json``; images ``{modality}--{dataset}--{case}--{axis}_{slice:04d}.png``,
  masks ``{image stem}--{class_id:04d}_{instance:03d}.png``;
* the SAM-Med2D demo: ``image2label_train.json`` (image -> masks) and ``label2image_test.json``
  (mask -> image), masks ``{image stem}_{label name}_{instance:03d}.png``, paths starting with the
  release folder's name (``data_demo/``).

Class names are resolved to one label map: AMOS organs keep their AMOS ids (readable and official
spellings both match), other classes get ids after them in name order.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from amos_zoo.data.labels import AMOS_LABELS, LabelMap, label_key

__all__ = [
    "MaskRef",
    "Slice2D",
    "Samed2DIndex",
    "read_samed2d",
    "check_samed2d",
    "load_slice",
    "export_2d",
    "slice_name",
    "MIN_MASK_PIXELS",
    "LoadSamed2Dd",
]

#: masks (connected instances) smaller than this many pixels are dropped by export-2d, as MedSAM does in 2D
MIN_MASK_PIXELS = 100

_FULL_IMAGE = re.compile(r"^(?P<modality>[^-]+)--(?P<dataset>.+?)--(?P<case>.+)--(?P<axis>[xyz])_(?P<slice>\d{4})$")
_FULL_MASK = re.compile(r"^(?P<image>.+)--(?P<cls>\d{4})_(?P<inst>\d{3})$")
_DEMO_MASK = re.compile(r"^(?P<label>.+)_(?P<inst>\d{3})$")


@dataclass(frozen=True)
class MaskRef:
    """One binary mask file: its class (name and resolved id) and instance number."""

    path: Path
    class_name: str
    class_id: int
    instance: int


@dataclass
class Slice2D:
    """One 2D image with its masks and what its name says about its origin."""

    image: Path
    masks: list[MaskRef] = field(default_factory=list)
    split: str = "training"
    modality: str | None = None
    dataset: str | None = None
    case: str | None = None
    axis: str | None = None
    slice_index: int | None = None


@dataclass
class Samed2DIndex:
    """A read SA-Med2D dataset: slices, the resolved label map, and files no index lists."""

    root: Path
    layout: str
    slices: list[Slice2D]
    labels: LabelMap
    unindexed_images: list[Path] = field(default_factory=list)

    #: SA-Med2D images are grey (stored as 3 equal channels): one input channel
    num_channels: int = 1
    channel_names: tuple[str, ...] = ("grey",)

    def case_of(self, s: Slice2D) -> str:
        """The 3D case a slice comes from (slices of one case must not straddle a train/validation split)."""
        if s.case:
            return f"{s.dataset}--{s.case}"
        return re.sub(r"_\d+$", "", s.image.stem)  # demo names: <case>_<slice>


def _norm(name: str) -> str:
    return re.sub(r"[^0-9a-z]+", " ", name.lower()).strip()


def resolve_label_map(names: list[str]) -> dict[str, int]:
    """Class name -> id: AMOS organs keep their AMOS ids, others follow in name order."""
    amos = {}
    for i in AMOS_LABELS.foreground_ids:
        amos[label_key(AMOS_LABELS.names[i])] = i
        amos[label_key(AMOS_LABELS.display_name(i))] = i
    mapping = {n: amos[label_key(n)] for n in names if label_key(n) in amos}
    next_id = max(AMOS_LABELS.names) + 1
    for name in sorted({n for n in names if n not in mapping}, key=_norm):
        mapping[name] = next_id
        next_id += 1
    return mapping


def _label_map(mapping: dict[str, int]) -> LabelMap:
    names = {0: "background"}
    for i in range(1, max(mapping.values(), default=0) + 1):
        names[i] = AMOS_LABELS.names.get(i, f"unused_{i}")
    for name, i in mapping.items():
        names[i] = _norm(name) if i > max(AMOS_LABELS.names) else AMOS_LABELS.names[i]
    return LabelMap(names)


def _resolve(root: Path, rel: str, index_file: Path) -> Path:
    """A path from an index file, relative to the dataset folder; the release's top folder (``data_demo/``)
    may or may not be part of it. Paths may not leave the dataset folder."""
    rel_path = Path(rel)
    candidates = [root / rel_path]
    if len(rel_path.parts) > 1:
        candidates.append(root / Path(*rel_path.parts[1:]))
    chosen = next((c for c in candidates if c.exists()), candidates[-1])
    if rel_path.is_absolute() or ".." in rel_path.parts or not chosen.resolve().is_relative_to(root.resolve()):
        raise ValueError(f"{index_file}: path {rel!r} leaves the dataset folder {root}")
    return chosen


def _parse_image(s: Slice2D) -> None:
    m = _FULL_IMAGE.match(s.image.stem)
    if m:
        s.modality, s.dataset, s.case = m["modality"], m["dataset"], m["case"]
        s.axis, s.slice_index = m["axis"], int(m["slice"])


def read_samed2d(root: str | Path) -> Samed2DIndex:
    """Read an SA-Med2D dataset folder in the full-release or the SAM-Med2D demo layout."""
    root = Path(root)
    full, demo_train, demo_test = (
        root / "SAMed2D_v1.json",
        root / "image2label_train.json",
        root / "label2image_test.json",
    )
    if full.is_file():
        return _read_full(root, full)
    if demo_train.is_file() or demo_test.is_file():
        return _read_demo(root, demo_train, demo_test)
    raise FileNotFoundError(
        f"{root}: no SA-Med2D index (SAMed2D_v1.json, or image2label_train.json / label2image_test.json)"
    )


def _load_json(path: Path) -> dict:
    from amos_zoo.io import read_json_object

    return read_json_object(path)


def _read_full(root: Path, index_file: Path) -> Samed2DIndex:
    index = _load_json(index_file)
    mapping_file = root / "SAMed2D_v1_class_mapping_id.json"
    id_to_name: dict[int, str] = {}
    if mapping_file.is_file():
        raw = _load_json(mapping_file)
        for k, v in raw.items():  # accept {name: id} and {id: name}
            if str(k).isdigit():
                id_to_name[int(k)] = str(v)
            else:
                id_to_name[int(v)] = str(k)
    slices = []
    for image_rel, masks in index.items():
        s = Slice2D(_resolve(root, image_rel, index_file))
        _parse_image(s)
        for mask_rel in masks:
            path = _resolve(root, mask_rel, index_file)
            m = _FULL_MASK.match(path.stem)
            if m is None:
                raise ValueError(f"{index_file}: mask name {path.name!r} is not '<image>--<class:04d>_<instance:03d>'")
            cls = int(m["cls"])
            s.masks.append(MaskRef(path, id_to_name.get(cls, f"class_{cls}"), cls, int(m["inst"])))
        slices.append(s)
    names = sorted({mk.class_name for s in slices for mk in s.masks} | set(id_to_name.values()))
    resolved = resolve_label_map(names)  # every class of the mapping file, also those with no mask here
    for s in slices:
        s.masks = [MaskRef(mk.path, mk.class_name, resolved[mk.class_name], mk.instance) for mk in s.masks]
    return Samed2DIndex(root, "full", slices, _label_map(resolved), _unindexed(root, slices))


def _read_demo(root: Path, train_file: Path, test_file: Path) -> Samed2DIndex:
    by_image: dict[Path, Slice2D] = {}
    if train_file.is_file():
        for image_rel, masks in _load_json(train_file).items():
            s = by_image.setdefault(
                _resolve(root, image_rel, train_file), Slice2D(_resolve(root, image_rel, train_file))
            )
            s.masks += [MaskRef(_resolve(root, m, train_file), "", 0, 0) for m in masks]
    if test_file.is_file():
        for mask_rel, image_rel in _load_json(test_file).items():
            image = _resolve(root, image_rel, test_file)
            s = by_image.setdefault(image, Slice2D(image, split="test"))
            s.masks.append(MaskRef(_resolve(root, mask_rel, test_file), "", 0, 0))
    parsed = []
    for s in by_image.values():
        stem = s.image.stem
        refs = []
        for mk in s.masks:
            if not mk.path.stem.startswith(stem + "_") or not _DEMO_MASK.match(mk.path.stem[len(stem) + 1 :]):
                raise ValueError(f"mask {mk.path.name!r} is not '<image stem>_<label>_<instance:03d>' for {stem!r}")
            m = _DEMO_MASK.match(mk.path.stem[len(stem) + 1 :])
            refs.append((mk.path, m["label"], int(m["inst"])))
        parsed.append((s, refs))
    resolved = resolve_label_map(sorted({label for _, refs in parsed for _, label, _ in refs}))
    for s, refs in parsed:
        s.masks = [MaskRef(p, label, resolved[label], inst) for p, label, inst in refs]
    slices = list(by_image.values())
    return Samed2DIndex(root, "demo", slices, _label_map(resolved), _unindexed(root, slices))


def _unindexed(root: Path, slices: list[Slice2D]) -> list[Path]:
    listed = {s.image.resolve() for s in slices}
    folder = root / "images"
    return sorted(p for p in folder.glob("*.png") if p.resolve() not in listed) if folder.is_dir() else []


def _read_png(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im)


class LoadSamed2Dd:
    """MONAI-style dictionary transform: ``{"image": png, "masks": [(png, class id), ...]}`` -> channel-first
    image (1, H, W) scaled to [0, 1] and label (1, H, W) composed from the masks."""

    def __call__(self, data: dict) -> dict:
        import torch

        d = dict(data)
        s = Slice2D(Path(d["image"]), [MaskRef(Path(p), "", int(c), 0) for p, c in d.pop("masks")])
        image, label = load_slice(s)
        d["image"] = torch.from_numpy(image / 255.0).float()[None]
        d["label"] = torch.from_numpy(label.astype(np.int64)).float()[None]
        return d


def check_samed2d(index: Samed2DIndex) -> list[str]:
    """Every problem of every image-mask pair: missing or unreadable files, size mismatch, non-binary or empty
    masks; also images that no index lists. Empty when all is well."""
    problems: list[str] = []

    def read(path: Path, missing: str, what: str) -> np.ndarray | None:
        if not path.is_file():
            problems.append(f"{path}: {missing}")
            return None
        try:
            return _read_png(path)
        except OSError as err:
            problems.append(f"{path}: unreadable {what} ({err})")
            return None

    for s in index.slices:
        image = read(s.image, "image listed in the index but missing", "image")
        if image is None:
            continue
        for mk in s.masks:
            mask = read(mk.path, f"mask listed for {s.image.name} but missing", "mask")
            if mask is None:
                continue
            if mask.shape[:2] != image.shape[:2]:
                problems.append(f"{mk.path}: mask is {mask.shape[:2]}, its image {s.image.name} is {image.shape[:2]}")
            values = np.unique(mask)
            if not set(values.tolist()) <= {0, 1, 255}:
                problems.append(f"{mk.path}: not a binary mask (values {values[:6].tolist()})")
            elif values.max() == 0:
                problems.append(f"{mk.path}: empty mask")
    problems += [f"{p}: image in images/ that no index file lists" for p in index.unindexed_images]
    return problems


def load_slice(s: Slice2D) -> tuple[np.ndarray, np.ndarray]:
    """(image as float32 HxW grey, label HxW uint16 with the resolved class ids; later masks win overlaps)."""
    image = _read_png(s.image).astype(np.float32)
    if image.ndim == 3:
        image = image[..., :3].mean(-1)
    label = np.zeros(image.shape, dtype=np.uint16)
    for mk in s.masks:
        mask = _read_png(mk.path)
        mask = mask[..., 0] if mask.ndim == 3 else mask
        label[mask > 0] = mk.class_id
    return image, label


# ---- export: 3D dataset -> SA-Med2D layout ------------------------------------------------------------------


def slice_name(modality: str, dataset: str, case: str, axis: str, index: int) -> str:
    """The release's image stem, e.g. ``ct_00--AMOS--amos_0004--z_0075``."""
    return f"{modality}--{dataset}--{case}--{axis}_{index:04d}"


def _to_uint8(volume: np.ndarray, modality: str) -> np.ndarray:
    """MedSAM/SA-Med2D intensity preprocessing: CT window level 40 width 400; MR 0.5-99.5 percentile of the
    non-zero voxels; both rescaled to 0..255."""
    volume = volume.astype(np.float32)
    if modality == "CT":
        lo, hi = 40 - 200, 40 + 200
    else:
        nonzero = volume[volume > 0]
        lo, hi = np.percentile(nonzero, [0.5, 99.5]) if nonzero.size else (0.0, 1.0)
    scaled = (np.clip(volume, lo, hi) - lo) / max(hi - lo, 1e-6) * 255.0
    return np.round(scaled).astype(np.uint8)


def _plane(volume: np.ndarray, axis: str, k: int) -> np.ndarray:
    """Slice ``k`` of a RAS volume along ``axis``, as an image with rows = the later axis (PNG convention)."""
    a = "xyz".index(axis)
    return np.ascontiguousarray(np.take(volume, k, axis=a).T)


def export_2d(
    data: str | Path,
    out: str | Path,
    axes: str = "z",
    dataset_name: str = "AMOS",
    splits: tuple[str, ...] = ("training", "validation"),
    min_pixels: int = MIN_MASK_PIXELS,
) -> dict:
    """Slice a 3D AMOS/MSD dataset into the SA-Med2D-20M layout under ``out``.

    Every labelled case is reoriented to RAS; each slice along ``axes`` (``z``, ``y``, ``x`` or ``all``)
    with any foreground becomes a 3-channel 8-bit PNG (CT window level 40 width 400, MR percentiles 0.5-99.5),
    and each class's connected instances (8-connectivity) become binary masks, those under ``min_pixels``
    dropped. Writes ``SAMed2D_v1.json`` and ``SAMed2D_v1_class_mapping_id.json``; files are written atomically.

    Returns counts of cases, images, masks and dropped small masks.

    One function because it follows the release layout's steps per case, slice and instance.
    """
    import nibabel as nib
    from PIL import Image
    from scipy import ndimage
    from tqdm import tqdm

    from amos_zoo.data.index import load_index
    from amos_zoo.io import atomic_path, write_json

    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    index = load_index(data)
    axis_list = ["x", "y", "z"] if axes == "all" else [axes]
    if any(a not in "xyz" for a in axis_list):
        raise ValueError(f"axis must be x, y, z or all; got {axes!r}")
    cases = [c for split in splits for c in index.split(split) if c.label is not None] if splits else []
    entries: dict[str, list[str]] = {}
    counts = {"cases": 0, "images": 0, "masks": 0, "dropped_small_masks": 0}

    def save_png(array: np.ndarray, path: Path) -> None:
        with atomic_path(path) as tmp:
            Image.fromarray(array).save(tmp, format="PNG")

    for case in tqdm(cases, desc="export-2d", unit="case"):
        image_nii = nib.as_closest_canonical(nib.load(str(case.images[0])))
        label_nii = nib.as_closest_canonical(nib.load(str(case.label)))
        volume = np.asanyarray(image_nii.dataobj)
        labels = np.asanyarray(label_nii.dataobj).astype(np.int64)
        if volume.ndim == 4:
            volume = volume[..., 0]  # the first channel (MSD multi-channel): SA-Med2D images are grey
        grey = _to_uint8(volume, case.modality)
        modality = "ct_00" if case.modality == "CT" else "mr_00"
        counts["cases"] += 1
        for axis in axis_list:
            a = "xyz".index(axis)
            for k in range(labels.shape[a]):
                plane_labels = _plane(labels, axis, k)
                if not plane_labels.any():
                    continue
                stem = slice_name(modality, dataset_name, case.case_id, axis, k)
                masks = []
                for cls in np.unique(plane_labels):
                    if cls == 0:
                        continue
                    components, n = ndimage.label(plane_labels == cls, structure=np.ones((3, 3)))
                    instance = 0
                    for c in range(1, n + 1):
                        component = components == c
                        if component.sum() < min_pixels:
                            counts["dropped_small_masks"] += 1
                            continue
                        mask_path = out / "masks" / f"{stem}--{int(cls):04d}_{instance:03d}.png"
                        save_png((component * 255).astype(np.uint8), mask_path)
                        masks.append(f"masks/{mask_path.name}")
                        instance += 1
                if not masks:
                    continue
                plane = _plane(grey, axis, k)
                save_png(np.repeat(plane[..., None], 3, axis=-1), out / "images" / f"{stem}.png")
                entries[f"images/{stem}.png"] = masks
                counts["images"] += 1
                counts["masks"] += len(masks)
    write_json(out / "SAMed2D_v1.json", entries)
    write_json(out / "SAMed2D_v1_class_mapping_id.json", {name: i for i, name in index.labels.names.items() if i})
    return counts
