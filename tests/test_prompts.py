"""Promptable 2D models: networks equal to segment-anything's, SAM-Med2D's adapter, the authors' input pipelines
(resizing and padding inverted exactly), prompts equal to the sources' rules (the sources' functions are quoted
below as small cited snippets and run with the same seeds), replayed prompts, one encoding per image with the same
numbers, checkpoint layouts, and evaluate-prompts on the SAM-Med2D demo slices and on synthetic slices."""

from __future__ import annotations

import json
import pickle
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from amos_zoo.cli.main import main
from amos_zoo.promptable.evaluate import PromptRunner, collect_items, evaluate_prompts, prompt_table
from amos_zoo.promptable.models import PROMPTABLE_MODELS, build_promptable
from amos_zoo.promptable.pipelines import get_pipeline, nearest_resize
from amos_zoo.promptable.prompts import (
    error_click,
    largest_component_box,
    sample_points,
    test_split,
    tight_box,
)
from amos_zoo.promptable.protocols import get_prompt_protocol, list_prompt_protocols
from amos_zoo.promptable.weights import load_promptable_weights, read_promptable_checkpoint
from amos_zoo.weights.loading import WeightsLoadError

# ---- the sources' own rules, quoted (OpenGVLab/SAM-Med2D@bfd2b93 utils.py; torch inputs replaced by numpy) ----


def source_get_boxes_from_mask(mask, box_num=1, std=0.1, max_pixel=0):  # utils.py get_boxes_from_mask
    from skimage.measure import label, regionprops

    regions = regionprops(label(mask))
    boxes = [tuple(region.bbox) for region in regions]
    if len(boxes) >= box_num:
        sorted_regions = sorted(regions, key=lambda x: x.area, reverse=True)[:box_num]
        boxes = [tuple(region.bbox) for region in sorted_regions]
    noise_boxes = []
    for box in boxes:
        y0, x0, y1, x1 = box
        width, height = abs(x1 - x0), abs(y1 - y0)
        noise_std = min(width, height) * std
        max_noise = min(max_pixel, int(noise_std * 5))
        try:
            noise_x = np.random.randint(-max_noise, max_noise)
        except ValueError:
            noise_x = 0
        try:
            noise_y = np.random.randint(-max_noise, max_noise)
        except ValueError:
            noise_y = 0
        noise_boxes.append((x0 + noise_x, y0 + noise_y, x1 + noise_x, y1 + noise_y))
    return noise_boxes


def source_init_point_sampling(mask, get_point=1):  # utils.py init_point_sampling
    fg_coords = np.argwhere(mask == 1)[:, ::-1]
    bg_coords = np.argwhere(mask == 0)[:, ::-1]
    fg_size, bg_size = len(fg_coords), len(bg_coords)
    if get_point == 1:
        if fg_size > 0:
            return [fg_coords[np.random.randint(fg_size)].tolist()], [1]
        return [bg_coords[np.random.randint(bg_size)].tolist()], [0]
    num_fg = get_point // 2
    num_bg = get_point - num_fg
    fg_indices = np.random.choice(fg_size, size=num_fg, replace=True)
    bg_indices = np.random.choice(bg_size, size=num_bg, replace=True)
    coords = np.concatenate([fg_coords[fg_indices], bg_coords[bg_indices]], axis=0)
    labels = np.concatenate([np.ones(num_fg), np.zeros(num_bg)]).astype(int)
    indices = np.random.permutation(get_point)
    return coords[indices].tolist(), labels[indices].tolist()


def source_select_random_points(one_pred, one_gt, point_num=1):  # utils.py select_random_points, one mask
    one_erroer = (one_pred != one_gt).astype(np.uint8)
    indices = np.argwhere(one_erroer == 1)
    if indices.shape[0] > 0:
        selected_indices = indices[np.random.choice(indices.shape[0], point_num, replace=True)]
    else:
        indices = np.random.randint(0, 256, size=(point_num, 2))
        selected_indices = indices[np.random.choice(indices.shape[0], point_num, replace=True)]
    points, labels = [], []
    for x, y in selected_indices.reshape(-1, 2):
        if one_pred[x, y] == 0 and one_gt[x, y] == 1:
            label = 1
        elif one_pred[x, y] == 1 and one_gt[x, y] == 0:
            label = 0
        else:
            label = -1
        points.append((y, x))
        labels.append(label)
    return points, labels


# ---- synthetic slices in the SAM-Med2D demo layout ------------------------------------------------------------


def _disc(shape, centre, radius):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius**2


def write_synthetic_slices(root: Path) -> Path:
    """Two 8-bit grey slices (40 x 52: padded into a 64 input; 96 x 128: resized), masks with two components."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    index = {}
    for name, shape in (("amos_0001_10", (40, 52)), ("s0002_20", (96, 128))):
        organ = _disc(shape, (shape[0] // 2, shape[1] // 3), shape[0] // 5)
        other = _disc(shape, (shape[0] // 3, 3 * shape[1] // 4), shape[0] // 8)
        satellite = _disc(shape, (shape[0] - 6, 5), 2)  # a small second component of the organ's mask
        grey = (40 + 150 * organ + 90 * other + rng.normal(0, 8, shape)).clip(0, 255).astype(np.uint8)
        Image.fromarray(np.repeat(grey[..., None], 3, -1)).save(root / "images" / f"{name}.png")
        masks = []
        for label, mask in (("liver", organ | satellite), ("spleen", other)):
            path = root / "masks" / f"{name}_{label}_000.png"
            Image.fromarray((mask * 255).astype(np.uint8)).save(path)
            masks.append(f"data_demo/masks/{path.name}")
        index[f"data_demo/images/{name}.png"] = masks
    (root / "image2label_train.json").write_text(json.dumps(index))
    return root


@pytest.fixture(scope="module")
def slices(tmp_path_factory) -> Path:
    return write_synthetic_slices(tmp_path_factory.mktemp("sa2d") / "demo")


@pytest.fixture(scope="module")
def demo(shared_data) -> Path:
    return shared_data / "samed2d_demo"


# ---- networks ----------------------------------------------------------------------------------------------------


def test_create_model_builds_a_promptable_model_by_name():
    from amos_zoo.models.registry import create_model

    net = create_model("sam_tiny", image_size=128)
    assert net.image_encoder.img_size == 128 and net.prompt_encoder.input_image_size == (128, 128)
    with pytest.raises(ValueError, match="no channel arguments"):
        create_model("sam_tiny", out_channels=3)


def test_vit_b_is_segment_anythings_network_with_the_published_parameter_count():
    from segment_anything import sam_model_registry

    with torch.device("meta"):
        ours = build_promptable("sam_vit_b")
        theirs = sam_model_registry["vit_b"]()
    shapes = [{k: v.shape for k, v in net.state_dict().items()} for net in (ours, theirs)]
    assert shapes[0] == shapes[1]
    assert sum(p.numel() for p in ours.parameters()) == 93_735_472  # MedSAM train_one_gpu.py's printed count
    for spec in PROMPTABLE_MODELS.values():  # the stored counts (amos-zoo models) are the networks' own
        with torch.device("meta"):
            assert sum(p.numel() for p in build_promptable(spec.name).parameters()) == spec.params, spec.name


def test_sam_med2d_adapter_keys_and_computation_follow_the_source():
    with torch.device("meta"):
        sam = build_promptable("sam_vit_b", image_size=256).state_dict()
        med = build_promptable("sam_med2d_vit_b").state_dict()
    extra = {k: tuple(v.shape) for k, v in med.items() if k not in sam}
    expected = {}  # SAM-Med2D image_encoder.py Adapter_Layer(768, mlp_ratio=0.25) in every Block, named "Adapter"
    for i in range(12):
        p = f"image_encoder.blocks.{i}.Adapter."
        expected |= {p + "norm.weight": (768,), p + "norm.bias": (768,), p + "channel.0.weight": (192, 768)}
        expected |= {p + "channel.2.weight": (768, 192), p + "spatial.0.weight": (768, 768, 3, 3)}
        expected |= {p + "spatial.2.weight": (768, 768, 4, 4)}
    assert extra == expected and all(med[k].shape == v.shape for k, v in sam.items())

    torch.manual_seed(0)
    net = build_promptable("sam_med2d_tiny")
    block = net.image_encoder.blocks[0]
    seen = {}
    block.norm2.register_forward_hook(lambda m, i, o: seen.update(norm2=o, before=i[0]))
    x = torch.randn(1, 4, 4, 32)
    out = block(x)
    n = seen["norm2"]
    # Block.forward with the adapter: x + mlp(norm2(x)) + Adapter(norm2(x)); Adapter_Layer.forward by hand
    a = block.Adapter
    c = n.permute(0, 3, 1, 2)
    gate = a.channel(c.mean((2, 3))).view(1, 32, 1, 1)
    by_hand = a.norm((c + a.spatial(gate * c)).permute(0, 2, 3, 1))
    assert torch.allclose(out, seen["before"] + block.mlp(n) + by_hand, atol=1e-6)


# ---- pipelines ---------------------------------------------------------------------------------------------------


def test_samed2d_resize_is_opencv_nearest_and_the_output_maps_back_exactly():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (128, 96, 3)).astype(np.uint8)
    ref = F.interpolate(torch.from_numpy(image).permute(2, 0, 1)[None].float(), (64, 64), mode="nearest")
    assert np.array_equal(nearest_resize(image, 64), ref[0].permute(1, 2, 0).numpy())  # floor(i * in / out)

    pipe = get_pipeline("samed2d", 64)
    x, geometry = pipe.image(image)
    bgr = image[..., ::-1].astype(np.float64)
    # DataLoader.py's order (normalise, then utils.train_transforms' resize): the same values, bit for bit
    expected = nearest_resize((bgr - [123.675, 116.28, 103.53]) / [58.395, 57.12, 57.375], 64)
    assert torch.equal(x[0], torch.from_numpy(np.ascontiguousarray(expected.transpose(2, 0, 1))).float())
    # block-aligned low-resolution logits -> the original size (bilinear twice), then the prompt space again
    # (stripes: bilinear interpolation of a one-dimensional +-1 step crosses 0 exactly at the cell border)
    square = get_pipeline("samed2d", 64)
    _, g = square.image(np.zeros((128, 128, 3), np.uint8))
    for stripes in (rng.integers(0, 2, (16, 1)), rng.integers(0, 2, (1, 16))):
        cells = np.broadcast_to(stripes, (16, 16)) > 0
        blocks = torch.from_numpy(cells.astype(np.float32) * 2 - 1)[None, None]
        original = square.mask(blocks, g)
        assert np.array_equal(original, np.kron(cells, np.ones((8, 8), bool)))
        assert np.array_equal(square.prompt_mask(original, g), np.kron(cells, np.ones((4, 4), bool)))


def test_samed2d_padding_is_centred_zero_after_normalisation_and_cropped_back():
    pipe = get_pipeline("samed2d", 64)
    image = np.full((40, 52, 3), 200, np.uint8)
    x, geometry = pipe.image(image)
    assert geometry.pad == (12, 6)  # albumentations PadIfNeeded centre: (64 - 40) // 2, (64 - 52) // 2
    assert (x[0, :, :12] == 0).all() and (x[0, :, 52:] == 0).all() and (x[0, :, :, :6] == 0).all()
    assert torch.allclose(x[0, 0, 12:52, 6:58], torch.tensor((200 - 123.675) / 58.395))
    truth = _disc((40, 52), (20, 20), 9)
    padded = pipe.prompt_mask(truth, geometry)
    assert padded.shape == (64, 64) and np.array_equal(padded[12:52, 6:58], truth) and padded.sum() == truth.sum()
    blocks = torch.from_numpy(np.kron(np.eye(4), np.ones((4, 4))).astype(np.float32) * 2 - 1)[None, None]
    full = pipe.upsample(blocks)[0, 0].numpy() > 0
    assert np.array_equal(pipe.mask(blocks, geometry), full[12:52, 6:58])  # test.py postprocess_masks crop


def test_sam_pipeline_is_segment_anythings_preprocess_and_postprocess():
    from segment_anything.utils.transforms import ResizeLongestSide

    torch.manual_seed(0)
    sam = build_promptable("sam_tiny")
    image = np.random.default_rng(2).integers(0, 256, (96, 128, 3)).astype(np.uint8)
    pipe = get_pipeline("sam", 64)
    x, geometry = pipe.image(image)
    resized = ResizeLongestSide(64).apply_image(image)
    reference = sam.preprocess(torch.as_tensor(resized).permute(2, 0, 1)[None].float())
    assert geometry.resized == (48, 64) and torch.allclose(x, reference, atol=1e-5)
    low = torch.randn(1, 1, 16, 16)
    expected = sam.postprocess_masks(low, geometry.resized, geometry.original) > sam.mask_threshold
    assert np.array_equal(pipe.mask(low, geometry), expected[0, 0].numpy())
    assert np.allclose(
        pipe.coords([[128, 96]], geometry), ResizeLongestSide(64).apply_coords(np.array([[128, 96]]), (96, 128))
    )


def test_medsam_pipeline_follows_medsam_inference():
    from skimage import transform

    image = np.random.default_rng(3).integers(0, 256, (50, 70, 3)).astype(np.uint8)
    pipe = get_pipeline("medsam", 64)
    x, geometry = pipe.image(image)
    # MedSAM_Inference.py (bowang-lab/MedSAM@d71e8a1), at 64 instead of 1024
    img = transform.resize(image, (64, 64), order=3, preserve_range=True, anti_aliasing=True).astype(np.uint8)
    img = (img - img.min()) / np.clip(img.max() - img.min(), a_min=1e-8, a_max=None)
    assert torch.equal(x[0], torch.tensor(img).float().permute(2, 0, 1))
    assert np.allclose(pipe.coords(np.array([[35, 25]]), geometry), np.array([[35, 25]]) / [70, 50] * 64)
    low = torch.randn(1, 1, 16, 16)
    prob = F.interpolate(torch.sigmoid(low), (50, 70), mode="bilinear", align_corners=False)
    assert np.array_equal(pipe.mask(low, geometry), (prob[0, 0] > 0.5).numpy())


# ---- prompts -----------------------------------------------------------------------------------------------------


def _masks():
    rng = np.random.default_rng(4)
    out = []
    for _ in range(6):
        m = np.zeros((64, 64), np.uint8)
        for _ in range(rng.integers(1, 4)):
            y, x = rng.integers(0, 56, 2)
            h, w = rng.integers(2, 12, 2)
            m[y : y + h, x : x + w] = 1
        out.append(m)
    return out


def test_box_is_the_largest_components_bounding_box_as_in_sam_med2d():
    for m in _masks():
        assert largest_component_box(m) == [float(v) for v in source_get_boxes_from_mask(m)[0]]
    m = np.zeros((20, 20), np.uint8)
    m[2:5, 3:9] = 1  # 18 pixels
    m[10:18, 10:12] = 1  # 16 pixels
    m[0, 19] = 1
    assert largest_component_box(m) == [3.0, 2.0, 9.0, 5.0]  # x0, y0 and one past x1, y1
    m[11, 12] = m[12, 12] = m[13, 12] = 1  # diagonal contact only? no: joined side by side, now 19 pixels
    assert largest_component_box(m) == [10.0, 10.0, 13.0, 18.0]


@pytest.mark.parametrize("n", [1, 3, 5])
def test_points_are_sam_med2d_draws_with_the_same_seed(n):
    for seed, m in enumerate(_masks()):
        np.random.seed(seed)
        coords, labels = source_init_point_sampling(m, n)
        ours = sample_points(m, n, np.random.RandomState(seed))
        assert ours == ([[float(c) for c in xy] for xy in coords], labels)
        assert sum(ours[1]) == (1 if n == 1 else n // 2)
        for (x, y), label in zip(*ours):
            assert m[int(y), int(x)] == label  # foreground points on the mask, background points off it


def test_iterative_click_is_an_error_pixel_with_the_sources_label():
    rng = np.random.default_rng(5)
    for seed in range(20):
        truth = (rng.random((32, 32)) > 0.6).astype(np.uint8)
        pred = (rng.random((32, 32)) > 0.6).astype(np.uint8)
        np.random.seed(seed)
        points, labels = source_select_random_points(pred, truth)
        (x, y), label = error_click(pred, truth, np.random.RandomState(seed))
        assert [x, y] == [float(v) for v in points[0]] and label == labels[0]
        assert pred[int(y), int(x)] != truth[int(y), int(x)] and label == int(truth[int(y), int(x)])
    same = np.ones((256, 256), np.uint8)
    np.random.seed(7)
    points, labels = source_select_random_points(same, same)
    assert error_click(same, same, np.random.RandomState(7)) == ([float(v) for v in points[0]], -1) and labels == [-1]


def test_medsam_box_widens_each_side_by_up_to_the_shift_and_clips():
    import random

    m = np.zeros((40, 50), np.uint8)
    m[5:20, 30:48] = 1
    assert tight_box(m, 0, random.Random(0)) == [30.0, 5.0, 47.0, 19.0]  # inclusive extent, as np.where gives
    boxes = np.array([tight_box(m, 20, random.Random(s)) for s in range(200)])
    assert boxes[:, 0].min() >= 10 and boxes[:, 0].max() == 30 and boxes[:, 1].min() == 0 and boxes[:, 2].max() == 50
    assert len(np.unique(boxes[:, 3])) > 15 and boxes[:, 3].max() <= 39


def test_split_takes_a_seeded_fifth_of_each_sub_dataset():
    groups = {"A": [f"a{i:03d}" for i in range(50)], "B": [f"b{i}" for i in range(9)], "C": ["c0", "c1"]}
    split = test_split(groups, 0.2, seed=3)
    assert {k: len(v) for k, v in split.items()} == {"A": 10, "B": 2, "C": 1}
    assert all(set(v) <= set(groups[k]) for k, v in split.items())
    assert split == test_split({k: list(reversed(v)) for k, v in groups.items()}, 0.2, seed=3)  # by sorted index
    assert split != test_split(groups, 0.2, seed=4)


def test_prompt_protocol_cards_cite_every_value_and_match_the_code():
    names = {p.name for p in list_prompt_protocols()}
    assert {"samed2d-box", "samed2d-points", "samed2d-iterative", "medsam-box", "medsam-finetune"} <= names
    for p in list_prompt_protocols():
        assert all(src for _, src in p.settings.values()), p.name
    assert get_prompt_protocol("samed2d-box").get("prompt.rule") == "largest-component-box"
    assert "2f7446a" in get_prompt_protocol("samed2d-box").source("prompt.rule")
    assert get_prompt_protocol("samed2d-iterative").get("prompt.iterations") == 8
    assert get_prompt_protocol("medsam-box").get("decode.multimask") == "single"
    fine = get_prompt_protocol("medsam-finetune")
    assert (fine.get("train.lr"), fine.get("train.weight_decay"), fine.get("prompt.box_shift")) == (1e-4, 0.01, 20)


# ---- decoding and evaluation ----------------------------------------------------------------------------------


def test_multimask_keeps_the_output_with_the_highest_predicted_iou():
    torch.manual_seed(0)
    net = build_promptable("sam_med2d_tiny")
    runner = PromptRunner(net, get_pipeline("samed2d", 64), multimask=True)
    embedding, geometry = runner.encode(np.full((64, 64, 3), 90, np.uint8))
    low, iou = runner.decode(embedding, geometry, [[20.0, 30.0]], [1], None)
    with torch.no_grad():
        sparse, dense = net.prompt_encoder(
            points=(torch.tensor([[[20.0, 30.0]]]), torch.tensor([[1]])), boxes=None, masks=None
        )
        all_low, all_iou = net.mask_decoder(embedding, net.prompt_encoder.get_dense_pe(), sparse, dense, True)
    best = int(all_iou[0].argmax())
    assert all_low.shape[1] == 3 and torch.equal(low, all_low[:, best : best + 1]) and iou.item() == all_iou.max()


def test_encoding_each_image_once_gives_the_numbers_of_encoding_every_mask(slices, tmp_path):
    torch.manual_seed(0)
    net = build_promptable("sam_med2d_tiny")
    calls = []
    net.image_encoder.register_forward_hook(lambda *a: calls.append(1))
    once = evaluate_prompts(
        "sam_med2d_tiny",
        "samed2d-points",
        slices,
        tmp_path / "once",
        split="all",
        points=3,
        progress=False,
        network=net,
    )
    n_once = len(calls)
    every = evaluate_prompts(
        "sam_med2d_tiny",
        "samed2d-points",
        slices,
        tmp_path / "every",
        split="all",
        points=3,
        progress=False,
        network=net,
        encode_once=False,
    )
    assert (n_once, len(calls) - n_once) == (2, 4)  # 2 images, 4 masks
    strip = [{k: v for k, v in r.items()} for r in once["masks"]]
    assert strip == every["masks"] and once["prompts_sha256"] == every["prompts_sha256"]


@pytest.mark.parametrize("protocol, options", [("samed2d-box", {}), ("samed2d-points", {"points": 5})])
def test_decoding_the_masks_of_an_image_in_one_batch_gives_the_masks_of_one_at_a_time(
    demo, tmp_path, protocol, options
):
    """segment-anything's decoder takes a batch of prompts against one image embedding: one call per image gives
    the masks (and multimask choices) of one call per mask, on the demo's masks; iterative clicks are not batched."""
    torch.manual_seed(0)
    net = build_promptable("sam_med2d_tiny")
    decoder_calls: dict[str, list[int]] = {"batched": [], "one": [], "iterative": []}
    masks: dict[str, dict[str, np.ndarray]] = {"batched": {}, "one": {}, "iterative": {}}
    rows = {}
    for mode in ("batched", "one", "iterative"):
        hook = net.mask_decoder.register_forward_hook(
            lambda m, a, out, mode=mode: decoder_calls[mode].append(len(out[0]))
        )
        run = {"protocol": "samed2d-iterative", "iterations": 2} if mode == "iterative" else {"protocol": protocol}
        row = evaluate_prompts(
            "sam_med2d_tiny",
            data=demo,
            out=tmp_path / mode,
            split="all",
            progress=False,
            network=net,
            seed=3,
            batch_masks=mode != "one",
            on_mask=masks[mode].__setitem__,
            **options,
            **run,
        )
        hook.remove()
        rows[mode] = row["masks"]
        assert row["batch_masks"] == (mode == "batched")
    per_image = Counter(r["image"] for r in rows["one"])
    assert (len(per_image), len(rows["one"])) == (4, 30)  # the demo (label2image_test.json and image2label_train.json)
    assert sorted(decoder_calls["batched"]) == sorted(per_image.values())  # one call per image, all its masks
    assert decoder_calls["one"] == [1] * 30 and decoder_calls["iterative"] == [1] * 60
    assert masks["batched"].keys() == masks["one"].keys()
    assert all(np.array_equal(masks["batched"][k], masks["one"][k]) for k in masks["one"])
    assert rows["batched"] == rows["one"]  # the scores alike


def test_prompts_are_replayed_bit_for_bit_by_another_model(slices, tmp_path):
    torch.manual_seed(0)
    first = evaluate_prompts(
        "sam_med2d_tiny",
        "samed2d-iterative",
        slices,
        tmp_path / "a",
        split="all",
        iterations=3,
        seed=11,
        progress=False,
    )
    prompts = tmp_path / "a" / "prompts.json"
    written = json.loads(prompts.read_text())
    assert written["image_size"] == 64 and written["seed"] == 11 and len(written["prompts"]) == 4
    for key, p in written["prompts"].items():  # one positive click on the mask, in the 64 x 64 input space
        mask = np.asarray(Image.open(slices / "masks" / key)) > 0
        _, g = get_pipeline("samed2d", 64).image(np.zeros((*mask.shape, 3), np.uint8))
        ((x, y),) = p["point_coords"]
        assert p["point_labels"] == [1] and get_pipeline("samed2d", 64).prompt_mask(mask, g)[int(y), int(x)]
    again = evaluate_prompts(
        "sam_med2d_tiny",
        "samed2d-iterative",
        slices,
        tmp_path / "b",
        split="all",
        iterations=3,
        seed=11,
        prompts=prompts,
        progress=False,
        network=build_promptable("sam_med2d_tiny"),
    )
    assert again["prompts_replayed"] and again["prompts_sha256"] == first["prompts_sha256"]
    torch.manual_seed(0)
    same_net = evaluate_prompts(
        "sam_med2d_tiny",
        "samed2d-iterative",
        slices,
        tmp_path / "c",
        split="all",
        iterations=3,
        seed=11,
        prompts=prompts,
        progress=False,
    )
    assert same_net["masks"] == first["masks"]  # same weights, same prompts, same clicks: the same numbers
    assert all(len(r["clicks"]) == 2 for r in same_net["masks"])
    other = evaluate_prompts(
        "sam_tiny",
        "samed2d-iterative",
        slices,
        tmp_path / "d",
        split="all",
        iterations=3,
        seed=11,
        prompts=prompts,
        progress=False,
    )
    assert other["prompts_sha256"] == first["prompts_sha256"] and other["model"]["name"] == "sam_tiny"
    with pytest.raises(ValueError, match="points is 1 in the file, 3 here"):
        evaluate_prompts(
            "sam_tiny",
            "samed2d-points",
            slices,
            tmp_path / "e",
            split="all",
            points=3,
            seed=11,
            prompts=prompts,
            progress=False,
        )


def test_evaluate_prompts_on_the_demo_slices(demo, tmp_path, capsys):
    out = tmp_path / "box"
    assert (
        main(
            [
                "evaluate-prompts",
                "--model",
                "sam_med2d_tiny",
                "--protocol",
                "samed2d-box",
                "--data",
                str(demo),
                "--out",
                str(out),
                "--split",
                "all",
            ]
        )
        == 0
    )
    row = json.loads((out / "row.json").read_text())
    assert row["split"]["n_masks"] == 30 and row["split"]["n_images"] == 4
    assert set(row["summary"]["by_dataset"]) == {"AMOS", "TotalSegmentator"}
    assert row["summary"]["by_dataset"]["TotalSegmentator"]["n_masks"] == 23
    for r in row["masks"]:
        assert 0 <= r["iou"] <= r["dice"] <= 1 and r["iou"] == pytest.approx(r["dice"] / (2 - r["dice"]))
    prompts = json.loads((out / "prompts.json").read_text())["prompts"]
    hip = np.asarray(Image.open(demo / "masks" / "s0619_32_hip_left_000.png")) > 0
    geometry = get_pipeline("samed2d", 64).image(np.zeros((*hip.shape, 3), np.uint8))[1]
    small = get_pipeline("samed2d", 64).prompt_mask(hip, geometry).astype(np.uint8)
    assert prompts["s0619_32_hip_left_000.png"]["box"] == [float(v) for v in source_get_boxes_from_mask(small)[0]]
    assert "masks/s" in capsys.readouterr().out

    rows = evaluate_prompts(
        "sam_tiny", "medsam-box", demo, tmp_path / "medsam", split="samed2d-20", seed=1, progress=False
    )
    assert "nsd" in rows["summary"]["overall"] and rows["split"]["fraction"] == 0.2
    assert rows["split"]["of"] == {"AMOS": 2, "TotalSegmentator": 2}
    assert rows["split"]["chosen"] == {"AMOS": 1, "TotalSegmentator": 1}
    chosen = json.loads((tmp_path / "medsam" / "split.json").read_text())["images"]
    again, record = collect_items(demo, "samed2d-20", 0.2, seed=1)  # the same rule and seed: the same images
    assert chosen == sorted({i.image.name for i in again}) and len(chosen) == 2
    assert main(["prompt-table", str(tmp_path), "--out", str(tmp_path / "table.md")]) == 0  # both runs, one table
    table = (tmp_path / "table.md").read_text()
    assert "| sam_med2d_tiny |" in table and "| sam_tiny |" in table and "| medsam-box |" in table


def test_table_sits_beside_the_published_number_of_the_same_protocol(slices, tmp_path):
    row = evaluate_prompts("sam_med2d_tiny", "samed2d-box", slices, tmp_path / "r", split="all", progress=False)
    assert "| sam_med2d_tiny | none (random init) | 64 | samed2d-box |" in prompt_table([row])
    as_published = {**row, "weights": "sam_med2d_vit_b", "image_size": 256}
    line = prompt_table([as_published]).splitlines()[-1]
    dice = row["summary"]["overall"]["dice"] * 100
    assert "| 79.30 |" in line and f"{dice - 79.30:+.2f}" in line and "bfd2b93" in line
    points = {**as_published, "settings": {**row["settings"], "protocol": "samed2d-points", "points": 3}}
    assert "| 76.35 |" in prompt_table([points])  # 3 points, SAM-Med2D 256
    assert "| 79.30 |" not in prompt_table([{**as_published, "image_size": 1024}])  # no number at 1024


def test_sams_own_pipeline_prompts_in_original_pixels(slices, tmp_path):
    from segment_anything import SamPredictor

    torch.manual_seed(0)
    net = build_promptable("sam_tiny")
    kept = {}
    row = evaluate_prompts(
        "sam_tiny",
        "samed2d-box",
        slices,
        tmp_path,
        split="all",
        pipeline="model",
        network=net,
        progress=False,
        on_mask=kept.__setitem__,
    )
    assert row["settings"]["pipeline"] == "sam"
    prompts = json.loads((tmp_path / "prompts.json").read_text())["prompts"]
    key = "s0002_20_liver_000.png"
    truth = np.asarray(Image.open(slices / "masks" / key)) > 0
    assert prompts[key]["box"] == largest_component_box(truth.astype(np.uint8))  # in the 96 x 128 original
    predictor = SamPredictor(net)  # segment-anything's own predictor, single output, highest predicted IoU kept
    predictor.set_image(np.asarray(Image.open(slices / "images" / "s0002_20.png").convert("RGB")))
    masks, scores, _ = predictor.predict(box=np.array(prompts[key]["box"]), multimask_output=True)
    assert np.array_equal(kept[key], masks[int(np.argmax(scores))])
    with pytest.raises(ValueError, match="iterative clicks"):
        evaluate_prompts(
            "sam_tiny", "samed2d-iterative", slices, tmp_path / "it", split="all", pipeline="sam", progress=False
        )


def test_collect_items_refuses_an_unknown_split_and_an_empty_selection(slices):
    with pytest.raises(ValueError, match="split must be one of"):
        collect_items(slices, "random")
    with pytest.raises(ValueError, match="no masks to evaluate"):
        collect_items(slices, "index-test")


# ---- checkpoints -------------------------------------------------------------------------------------------------


class _Payload:
    """An object whose unpickling would create a file (stands in for code a checkpoint could run)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_sam_med2d_checkpoint_reads_weights_only_without_unpickling_the_optimizer(tmp_path, monkeypatch):
    torch.manual_seed(0)
    trained = build_promptable("sam_med2d_tiny")
    optimizer = torch.optim.Adam(trained.parameters(), lr=1e-4)
    sum(p.sum() for p in trained.parameters()).backward()
    optimizer.step()
    path = tmp_path / "sam-med2d_b.pth"
    torch.save({"model": trained.state_dict(), "optimizer": optimizer}, path)  # train.py's layout
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)
    monkeypatch.setattr(torch.optim.Adam, "__setstate__", lambda *a: pytest.fail("the optimizer was unpickled"))
    net = build_promptable("sam_med2d_tiny")
    report = load_promptable_weights(net, path)
    assert report.fmt == "sam-med2d" and report.skipped == ["optimizer"] and not report.missing
    assert len(report.loaded) == len(trained.state_dict()) and "skipped unread: optimizer" in report.summary()
    assert all(torch.equal(a, b) for a, b in zip(trained.state_dict().values(), net.state_dict().values()))

    marker = tmp_path / "ran"
    torch.save({"model": trained.state_dict(), "optimizer": _Payload(marker)}, tmp_path / "evil.pth")
    state, fmt, _ = read_promptable_checkpoint(tmp_path / "evil.pth")
    assert fmt == "sam-med2d" and len(state) == len(trained.state_dict()) and not marker.exists()


def test_flat_sam_state_dict_loads_and_resizes_like_sam_med2d_load_from(tmp_path):
    torch.manual_seed(0)
    sam = build_promptable("sam_tiny", image_size=128)
    torch.save(sam.state_dict(), tmp_path / "sam.pth")
    small = build_promptable("sam_tiny")  # 64: 4 x 4 tokens instead of 8 x 8
    report = load_promptable_weights(small, tmp_path / "sam.pth")
    assert report.fmt == "sam-state-dict" and set(report.resized) == {
        "image_encoder.pos_embed",
        "image_encoder.blocks.1.attn.rel_pos_h",
        "image_encoder.blocks.1.attn.rel_pos_w",
    }
    # SAM-Med2D build_sam.py load_from: pos_embed permuted to (b, c, h, w), bilinear, back; rel_pos as an image
    pos = sam.state_dict()["image_encoder.pos_embed"].permute(0, 3, 1, 2)
    pos = F.interpolate(pos, (4, 4), mode="bilinear", align_corners=False).permute(0, 2, 3, 1)
    assert torch.equal(small.state_dict()["image_encoder.pos_embed"], pos)
    rel = sam.state_dict()["image_encoder.blocks.1.attn.rel_pos_h"][None, None]
    rel = F.interpolate(rel, (7, 16), mode="bilinear", align_corners=False)[0, 0]
    assert torch.equal(small.state_dict()["image_encoder.blocks.1.attn.rel_pos_h"], rel)
    with pytest.raises(WeightsLoadError, match="not in the file"):  # SAM weights leave SAM-Med2D's adapters empty
        load_promptable_weights(build_promptable("sam_med2d_tiny"), tmp_path / "sam.pth")
    torch.save({"epoch": torch.tensor(3)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="without SAM's image_encoder"):
        read_promptable_checkpoint(tmp_path / "other.pth")


def test_weights_that_need_a_manual_download_say_so(slices, tmp_path):
    with pytest.raises(ValueError, match="download the file by hand"):
        evaluate_prompts("sam_med2d_vit_b", "samed2d-box", slices, tmp_path, weights="sam_med2d_vit_b")
    with pytest.raises(ValueError, match="states no digest; pass --trust"):
        evaluate_prompts("sam_vit_b", "samed2d-box", slices, tmp_path, weights="sam_vit_b")


def test_promptable_names_are_not_dense_model_names():
    """`create_model` looks a name up among the dense models first, so a promptable model must not share one."""
    from amos_zoo.models.registry import MODEL_REGISTRY
    from amos_zoo.promptable.models import PROMPTABLE_MODELS

    assert PROMPTABLE_MODELS and not set(PROMPTABLE_MODELS) & set(MODEL_REGISTRY)
