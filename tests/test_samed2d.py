"""SA-Med2D-20M 2D data: the real SAM-Med2D demo sample is read and every image-mask pair checked; the
synthetic AMOS data exported to the release layout reads back with each mask equal to the 3D label's slice."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from amos_zoo.cli.main import main
from amos_zoo.data.index import load_index
from amos_zoo.data.samed2d import check_samed2d, export_2d, load_slice, read_samed2d


def test_demo_sample_reads_and_every_pair_checks(shared_data):
    index = read_samed2d(shared_data / "samed2d_demo")
    assert index.layout == "demo" and len(index.slices) == 4
    assert sum(len(s.masks) for s in index.slices) == 30
    assert {s.split for s in index.slices} == {"training", "test"}
    problems = check_samed2d(index)
    assert problems == [
        f"{shared_data / 'samed2d_demo' / 'images' / 'amos_0507_31.png'}: image in images/ that no index file lists"
    ]
    ids = {m.class_name: m.class_id for s in index.slices for m in s.masks}
    assert ids["liver"] == 6 and ids["spleen"] == 1 and ids["aorta"] == 8 and ids["inferior_vena_cava"] == 9
    assert min(v for k, v in ids.items() if k.startswith("rib")) > 15  # non-AMOS classes follow the AMOS ids
    assert index.labels.names[6] == "liver" and index.labels.num_classes == max(ids.values()) + 1
    for s in index.slices:  # every pair: same size, binary, the label composed from the masks
        image, label = load_slice(s)
        for m in s.masks:
            mask = np.asarray(Image.open(m.path))
            assert mask.shape[:2] == image.shape and set(np.unique(mask)) <= {0, 255} and mask.max() == 255
            assert (label[mask > 0] > 0).all()


def test_demo_index_with_a_missing_mask_is_reported(shared_data, tmp_path):
    import shutil

    root = tmp_path / "demo"
    shutil.copytree(shared_data / "samed2d_demo", root)
    (root / "masks" / "amos_0006_90_liver_000.png").unlink()
    problems = check_samed2d(read_samed2d(root))
    assert any("amos_0006_90_liver_000.png: mask listed for amos_0006_90.png but missing" in p for p in problems)


@pytest.mark.parametrize("axis", ["z", "x"])
def test_export_2d_round_trip(synth_root, tmp_path, axis):
    out = tmp_path / "sa2d"
    counts = export_2d(synth_root, out, axis, min_pixels=0)
    assert counts["images"] > 0 and counts["dropped_small_masks"] == 0
    index = read_samed2d(out)
    assert index.layout == "full" and not check_samed2d(index)
    ds = load_index(synth_root)
    cases = {c.case_id: c for split in ("training", "validation") for c in ds.split(split)}
    seen = set()
    for s in index.slices:
        assert s.dataset == "AMOS" and s.axis == axis and s.modality in ("ct_00", "mr_00")
        volume = np.asanyarray(nib.as_closest_canonical(nib.load(str(cases[s.case].label))).dataobj)
        expected = np.take(volume, s.slice_index, axis="xyz".index(axis)).T
        _, label = load_slice(s)
        np.testing.assert_array_equal(label, expected)  # masks per class and instance rebuild the slice
        seen.add(s.case)
    assert seen == set(cases)
    mapping = json.loads((out / "SAMed2D_v1_class_mapping_id.json").read_text())
    assert mapping["liver"] == 6 and mapping["arota"] == 8


def test_export_2d_command_drops_small_instances(synth_root, tmp_path):
    out = tmp_path / "sa2d"
    assert main(["export-2d", "--data", str(synth_root), "--out", str(out), "--axis", "z", "--min_pixels", "30"]) == 0
    index = read_samed2d(out)
    for s in index.slices[:20]:
        for m in s.masks:
            assert (np.asarray(Image.open(m.path)) > 0).sum() >= 30
