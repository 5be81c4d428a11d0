"""Protocol cards: every card resolves to a recipe and to a LightningCLI config for each model its source trained,
every value carries a source, docs/protocols.md is generated from the cards, and the nnU-Net topology the cards
give DynUNet is what nnU-Net's own planner function computes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from amos_zoo.card import ModelCard
from amos_zoo.data.labels import AMOS_LABELS
from amos_zoo.data.recipes import RECIPES, get_recipe
from amos_zoo.experiments.table import load_published
from amos_zoo.models.registry import build_network
from amos_zoo.protocols import get_protocol, list_protocols, protocol_config, render_markdown

REPO = Path(__file__).resolve().parents[1]


def test_docs_protocols_md_is_generated_from_the_cards():
    committed = (REPO / "docs" / "protocols.md").read_text()
    assert committed == render_markdown(), (
        "docs/protocols.md is stale: run `amos-zoo protocol docs --write docs/protocols.md`"
    )


def test_the_three_published_protocols_and_their_splits():
    names = {p.name: p for p in list_protocols()}
    assert {"amos-paper", "nnunet-v2", "btcv"} <= set(names)
    assert names["nnunet-v2"].split == "cross-validation" and names["amos-paper"].split == "official"
    assert all(p.kind == "published" for n, p in names.items() if n in ("amos-paper", "nnunet-v2", "btcv"))


@pytest.mark.parametrize("name", [p.name for p in list_protocols()])
def test_every_protocol_resolves_to_its_card(name):
    protocol = get_protocol(name)
    assert protocol.settings and all(s.source for s in protocol.settings)
    sections = {s.section for s in protocol.settings}
    assert {"preprocessing", "sampling"} <= sections
    recipe = RECIPES[name]
    assert recipe.name == name and recipe.patch_size == tuple(protocol.values("recipe")["patch_size"])
    for task in ("amos-ct", "amos-ctmr"):
        get_recipe(name, task=task)
    for model in protocol.models:
        config = protocol_config(name, model)
        assert config["model"]["arch"] == model and config["data"]["recipe"] == name
        card = ModelCard(model, config["model"]["arch_kwargs"], 1, AMOS_LABELS.display_names, recipe, recipe.patch_size)
        try:
            with torch.device("meta"):  # no memory, no init cost
                net = build_network(card)
        except RuntimeError:  # Swin-UNETR's constructor calls .item()
            net = build_network(card)
        assert sum(p.numel() for p in net.parameters()) > 0
    if protocol.kind == "published":  # a published protocol cites its sources, not only amos-zoo's choices
        assert any(not s.source.startswith("amos-zoo") for s in protocol.settings)


def test_protocol_values_per_model_and_task():
    nnunet = get_protocol("nnunet-v2")
    assert get_recipe("nnunet-v2", task="amos-ct").ct_normalization == "nnunet"  # Dataset218: channel 'CT'
    assert get_recipe("nnunet-v2", task="amos-ctmr").ct_normalization == "zscore"  # Dataset219: 'either_CT_or_MR'
    assert nnunet.network("dynunet")["deep_supervision"] is True
    paper = protocol_config("amos-paper", "vnet")["model"]
    assert (paper["optimizer"], paper["amsgrad"], paper["lr"], paper["weight_decay"]) == ("adam", True, 3e-4, 3e-5)
    assert (paper["scheduler"], paper["plateau_patience"], paper["epoch_steps"]) == ("plateau", 30, 250)
    assert get_recipe("amos-paper", task="amos-ctmr").mri_normalization == "ct"  # the fork's quirk, kept
    unetr = protocol_config("btcv", "unetr")["model"]["loss_kwargs"]
    assert unetr == {"squared_pred": True, "smooth_nr": 0.0, "smooth_dr": 1e-6}  # UNETR/BTCV/main.py
    assert protocol_config("btcv", "swin_unetr")["model"]["loss_kwargs"] == {}


def test_dynunet_topology_is_nnunets_own():
    """The kernels and strides the cards give DynUNet are what nnU-Net's planner computes for the 64x160x160 (z, y,
    x) patch at AMOS's median spacing 0.69 x 0.69 x 2.0 mm (cards: x, y, z order)."""
    topology = pytest.importorskip("nnunetv2.experiment_planning.experiment_planners.network_topology")
    _, pools, kernels, shape, _ = topology.get_pool_and_conv_props((2.0, 0.69, 0.69), (64, 160, 160), 4, 999999)
    assert tuple(int(s) for s in shape) == (64, 160, 160)
    for name in ("amos-paper", "nnunet-v2"):
        network = get_protocol(name).network("dynunet")
        assert [list(k)[::-1] for k in kernels] == network["kernel_size"], name
        assert [list(p)[::-1] for p in pools] == network["strides"], name


def test_published_numbers_name_real_protocols():
    names = {p.name for p in list_protocols()}
    for entry in load_published():
        assert entry["protocol"] is None or entry["protocol"] in names
        assert entry["split_kind"] in ("cross-validation", "official", "hold-out", "not stated")
