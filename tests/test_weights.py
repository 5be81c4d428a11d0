"""Weights: registry and weights.md, every real checkpoint layout, legacy Swin merging, load reports that
refuse silent partial loads, and verified, cached, offline downloads (a loopback HTTP server)."""

from __future__ import annotations

import functools
import http.server
import json
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from monai.networks.nets import SwinUNETR
from monai.networks.nets.swin_unetr import PatchMerging, filter_swinunetr
from monai.networks.utils import copy_model_state

from amos_zoo.data.recipes import RECIPES
from amos_zoo.models.registry import MODEL_REGISTRY, create_model
from amos_zoo.weights import (
    WEIGHTS,
    HashMismatchError,
    UnsafeCheckpointError,
    UnverifiedWeightsError,
    WeightEntry,
    WeightsLoadError,
    fetch,
    load,
    load_with_report,
    render_markdown,
    sha256_of,
)
from amos_zoo.weights.formats import FORMATS

REPO = Path(__file__).resolve().parents[1]
SWIN = {"feature_size": 12}


def test_weights_md_is_generated_from_the_registry():
    committed = (REPO / "weights.md").read_text()
    assert committed == render_markdown(), "weights.md is stale: run `amos-zoo weights --write weights.md`"


def test_registry_entries_are_consistent():
    assert {"swin_unetr_ssl_encoder", "swin_unetr_btcv", "unetr_btcv", "swin_unetr_btcv_bundle"} <= set(WEIGHTS)
    for entry in WEIGHTS.values():
        assert entry.arch in MODEL_REGISTRY and entry.fmt in FORMATS
        assert entry.card.recipe is not None and entry.card.recipe.name in RECIPES
        assert entry.url.startswith("https://") and "drive.google.com" not in entry.url  # current direct addresses
        if entry.sha256 is None:
            assert ("not stated" in entry.hash_source) != (entry.md5 is not None), entry.name
        if entry.md5 is not None:  # an MD5 is taken only from a source that states no SHA-256, and says where
            assert entry.sha256 is None and "large_files.yml" in entry.hash_source and "model-zoo@" in entry.hash_source
        # swin entries trained before MONAI 1.5 carry the legacy patch merging in their card
        assert entry.card.legacy_patch_merging == (entry.arch == "swin_unetr"), entry.name
    assert WEIGHTS["unet_spleen_bundle"].md5 == "be4fa95e236df91766147c112ee6fafd"
    assert WEIGHTS["swin_unetr_btcv_bundle"].md5 == "50dd67a01b28a1d5487fd9ac27e682fb"
    assert WEIGHTS["unetr_btcv"].url.endswith("/research/UNETR_model_best_acc.pth")
    with pytest.raises(ValueError, match="sha256 must be 64"):
        WeightEntry(**{**WEIGHTS["unetr_btcv"].__dict__, "name": "x", "sha256": "abc"})
    with pytest.raises(ValueError, match="md5 must be 32"):
        WeightEntry(**{**WEIGHTS["unetr_btcv"].__dict__, "name": "x", "md5": "abc"})


class OldPatchMerging(PatchMerging):
    """MONAI <= 1.4's 3D patch merging, as written in its source (x5 == x2 and x6 == x3; issue #8284)."""

    def forward(self, x):
        b, d, h, w, c = x.shape
        if d % 2 or h % 2 or w % 2:
            x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2, 0, d % 2))
        x0 = x[:, 0::2, 0::2, 0::2, :]
        x1 = x[:, 1::2, 0::2, 0::2, :]
        x2 = x[:, 0::2, 1::2, 0::2, :]
        x3 = x[:, 0::2, 0::2, 1::2, :]
        x4 = x[:, 1::2, 0::2, 1::2, :]
        x5 = x[:, 0::2, 1::2, 0::2, :]
        x6 = x[:, 0::2, 0::2, 1::2, :]
        x7 = x[:, 1::2, 1::2, 1::2, :]
        return self.reduction(self.norm(torch.cat([x0, x1, x2, x3, x4, x5, x6, x7], -1)))


def _research_contributions_file(path: Path, net: torch.nn.Module) -> Path:
    torch.save(
        {"epoch": 10, "best_acc": np.float64(0.8186), "state_dict": net.state_dict(), "optimizer": {"state": {}}},
        path,
    )
    return path


def test_research_contributions_checkpoint_loads_weights_only_and_computes_as_published(tmp_path):
    torch.manual_seed(0)
    published = SwinUNETR(in_channels=1, out_channels=14, feature_size=12, downsample=OldPatchMerging).eval()
    ckpt = _research_contributions_file(tmp_path / "swin_btcv.pt", published)
    # torch's weights-only default refuses the numpy scalar (checked in a fresh interpreter: amos-zoo's
    # dataset cache allow-lists numpy scalars in this one)
    plain = subprocess.run(
        [sys.executable, "-c", f"import torch; torch.load({str(ckpt)!r}, weights_only=True)"],
        capture_output=True,
        text=True,
    )
    assert plain.returncode != 0 and "Unsupported global" in plain.stderr

    model = create_model("swin_unetr", 1, 14, **SWIN)
    model, report, _, raw = load_with_report(ckpt, model)
    assert raw.fmt == "research-contributions" and raw.meta["best_acc"] == pytest.approx(0.8186)
    assert len(report.loaded) == len(published.state_dict()) and not report.missing and not report.unexpected
    assert report.legacy_patch_merging
    x = torch.randn(1, 1, 64, 64, 64)
    with torch.no_grad():
        expected = published(x)
        assert torch.allclose(model.eval()(x), expected, atol=1e-5)
        # the same tensors in MONAI >= 1.5's merging compute something else: the flag matters
        plain = SwinUNETR(in_channels=1, out_channels=14, feature_size=12).eval()
        plain.load_state_dict(published.state_dict())
        assert (plain(x) - expected).abs().max() > 1e-3


def _swinvit_file(path: Path, swin: SwinUNETR) -> Path:
    """model_swinvit.pt's layout: 'module.' keys, mlp.fc1/fc2 names, plus the pretraining heads."""
    state = {}
    for key, value in swin.swinViT.state_dict().items():
        state["module." + key.replace(".mlp.linear1.", ".mlp.fc1.").replace(".mlp.linear2.", ".mlp.fc2.")] = value
    state["module.rotation_head.weight"] = torch.zeros(4, 384)
    state["module.contrastive_head.weight"] = torch.zeros(512, 384)
    torch.save({"state_dict": state}, path)
    return path


def test_ssl_swinvit_encoder_maps_like_load_from_and_reports(tmp_path):
    torch.manual_seed(1)
    source = SwinUNETR(in_channels=1, out_channels=2, feature_size=12)
    f = _swinvit_file(tmp_path / "model_swinvit.pt", source)
    with pytest.raises(RuntimeError):  # a plain strict load fails; strict=False would load nothing
        create_model("swin_unetr", 1, 3, **SWIN).load_state_dict(torch.load(f)["state_dict"])

    ours, report, _, raw = load_with_report(f, create_model("swin_unetr", 1, 3, **SWIN))
    reference = SwinUNETR(in_channels=1, out_channels=3, feature_size=12)
    reference.load_from(torch.load(f, weights_only=True))  # MONAI's own mapping
    encoder = [k for k in reference.state_dict() if k.startswith("swinViT.")]
    for k in encoder:
        assert torch.equal(ours.state_dict()[k], reference.state_dict()[k]), k
    assert raw.fmt == "ssl-swinvit" and len(report.loaded) == len(encoder)
    assert set(report.unexpected) == {"swinViT.rotation_head.weight", "swinViT.contrastive_head.weight"}
    assert report.missing and all(not k.startswith("swinViT.") for k in report.missing)  # decoder starts fresh

    # an encoder file short of part of the encoder is refused, not half-loaded
    state = torch.load(f)["state_dict"]
    del state["module.layers4.0.blocks.0.attn.qkv.weight"]
    torch.save({"state_dict": state}, tmp_path / "short.pt")
    with pytest.raises(WeightsLoadError, match="1 of the .* must load"):
        load(tmp_path / "short.pt", create_model("swin_unetr", 1, 3, **SWIN))


def test_ssl_monai_filter_layout_matches_copy_model_state(tmp_path):
    torch.manual_seed(2)
    source = SwinUNETR(in_channels=1, out_channels=2, feature_size=12)
    state = {}
    for key, value in source.swinViT.state_dict().items():
        if key.startswith("layers"):  # 'layers1.0.blocks...' -> 'encoder.layers1.0.0.blocks...'
            stage, rest = key.split(".0.", 1)
            state[f"encoder.{stage}.0.0.{rest}"] = value
        else:
            state[f"encoder.{key}"] = value
    state["encoder.mask_token"] = torch.zeros(1, 1, 12)
    torch.save({"model": state}, tmp_path / "ssl_pretrained_weights.pth")

    ours, report, _, raw = load_with_report(
        tmp_path / "ssl_pretrained_weights.pth", create_model("swin_unetr", 1, 3, **SWIN)
    )
    reference = SwinUNETR(in_channels=1, out_channels=3, feature_size=12)
    copy_model_state(reference, state, filter_func=filter_swinunetr)
    for k in reference.state_dict():
        if k.startswith("swinViT."):
            assert torch.equal(ours.state_dict()[k], reference.state_dict()[k]), k
    assert raw.fmt == "ssl-monai-filter" and "encoder.mask_token" in report.unexpected


def test_ssl_monai_filter_needs_a_model(tmp_path):
    torch.save({"model": {"encoder.patch_embed.proj.weight": torch.zeros(12, 1, 2, 2, 2)}}, tmp_path / "f.pth")
    with pytest.raises(ValueError, match="pass model="):
        load(tmp_path / "f.pth")


def _bundle(root: Path, net: torch.nn.Module, monai_version: str) -> Path:
    (root / "configs").mkdir(parents=True)
    (root / "models").mkdir()
    torch.save(net.state_dict(), root / "models" / "model.pt")
    metadata = {
        "version": "0.4.0",
        "monai_version": monai_version,
        "network_data_format": {"outputs": {"pred": {"channel_def": {str(i): f"organ{i}" for i in range(4)}}}},
    }
    (root / "configs" / "metadata.json").write_text(json.dumps(metadata))
    network_def = {  # as the swin_unetr_btcv_segmentation bundle writes it: img_size, which MONAI >= 1.5 rejects
        "_target_": "SwinUNETR",
        "spatial_dims": 3,
        "img_size": 96,
        "in_channels": 1,
        "out_channels": 4,
        "feature_size": 12,
        "use_checkpoint": False,
    }
    (root / "configs" / "inference.json").write_text(json.dumps({"network_def": network_def}))
    return root


def test_monai_bundle_folder_and_zip_load_with_legacy_merging(tmp_path):
    torch.manual_seed(3)
    published = SwinUNETR(in_channels=1, out_channels=4, feature_size=12, downsample=OldPatchMerging).eval()
    folder = _bundle(tmp_path / "swin_bundle", published, monai_version="1.3.0")
    archive = tmp_path / "swin_bundle.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for f in folder.rglob("*"):
            zf.write(f, Path("swin_bundle") / f.relative_to(folder))
    x = torch.randn(1, 1, 64, 64, 64)
    with torch.no_grad():
        expected = published(x)
    for source in (folder, archive):
        model, report, _, raw = load_with_report(source)
        assert raw.fmt == "bundle" and report.legacy_patch_merging and not report.missing
        with torch.no_grad():
            assert torch.allclose(model.eval()(x), expected, atol=1e-5)


def test_lightning_checkpoint_builds_its_own_network(amos_checkpoint):
    model = load(amos_checkpoint)
    ckpt = torch.load(amos_checkpoint, weights_only=True)
    for key, value in model.state_dict().items():
        assert torch.equal(value, ckpt["state_dict"][f"net.{key}"])


def test_loading_nothing_or_the_wrong_network_fails_clearly(tmp_path, amos_checkpoint):
    torch.save(create_model("vnet", 1, 3).state_dict(), tmp_path / "vnet.pt")
    with pytest.raises(WeightsLoadError, match="no tensor of the file matches"):
        load(tmp_path / "vnet.pt", create_model("unet", 1, 3, channels=(8, 16), strides=(2,)))
    with pytest.raises(WeightsLoadError, match="other shapes"):
        load(amos_checkpoint, create_model("unet", 1, 3, channels=(8, 16, 32), strides=(2, 2), num_res_units=1))
    with pytest.raises(ValueError, match="does not say which network"):
        load(tmp_path / "vnet.pt")


def test_untrusted_pickle_needs_trust(tmp_path):
    torch.save({"state_dict": {"w": torch.zeros(1)}, "hook": functools.partial(print, "x")}, tmp_path / "evil.pt")
    with pytest.raises(UnsafeCheckpointError, match="trust=True"):
        load(tmp_path / "evil.pt", torch.nn.Linear(1, 1))


class _Server:
    """A loopback HTTP server over a folder, counting requests (no network leaves the machine)."""

    def __init__(self, folder: Path):
        self.requests = 0
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *a, **kw):
                super().__init__(*a, directory=str(folder), **kw)

            def do_GET(self):  # noqa: N802
                server.requests += 1
                super().do_GET()

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture()
def server(tmp_path, monkeypatch):
    monkeypatch.setenv("AMOS_ZOO_HOME", str(tmp_path / "home"))
    served = tmp_path / "served"
    served.mkdir()
    s = _Server(served)
    yield s, served
    s.httpd.shutdown()


def test_download_is_verified_cached_and_atomic(server, tmp_path):
    srv, served = server
    net = create_model("unet", 1, 3, channels=(8, 16), strides=(2,), num_res_units=1)
    torch.save(net.state_dict(), served / "unet.pt")
    digest = sha256_of(served / "unet.pt")
    cache = tmp_path / "home" / "weights"

    with pytest.raises(HashMismatchError, match="differs"):
        fetch(f"{srv.url}/unet.pt", "0" * 64, progress=False)
    assert not cache.exists() or not any(cache.iterdir())  # nothing kept, not even a temporary file

    path = fetch(f"{srv.url}/unet.pt", digest, progress=False)
    assert path.parent == cache and sha256_of(path) == digest
    before = srv.requests
    assert fetch(f"{srv.url}/unet.pt", digest, progress=False) == path and srv.requests == before  # cached

    path.write_bytes(b"corrupted")  # a damaged cache entry is detected and downloaded again
    assert sha256_of(fetch(f"{srv.url}/unet.pt", digest, progress=False)) == digest

    with pytest.raises(UnverifiedWeightsError, match="SHA-256"):
        load(f"{srv.url}/unet.pt", net)
    same = create_model("unet", 1, 3, channels=(8, 16), strides=(2,), num_res_units=1)
    load(f"{srv.url}/unet.pt", same, sha256=digest)
    expected = net.state_dict()
    assert same.state_dict().keys() == expected.keys()
    assert all(torch.equal(v, expected[k]) for k, v in same.state_dict().items())
    # file:// URLs and local paths: the same verification, no copy
    assert fetch((served / "unet.pt").as_uri(), digest) == served / "unet.pt"
    with pytest.raises(HashMismatchError):
        fetch((served / "unet.pt").as_uri(), "1" * 64)


def test_registry_names_download_verify_and_refuse_unverified(server, monkeypatch, tmp_path):
    import dataclasses

    from amos_zoo.weights import md5_of

    srv, served = server
    net = create_model("unet", 1, 2, channels=(8, 16), strides=(2,), num_res_units=1)
    torch.save(net.state_dict(), served / "spleen.pt")
    base = WEIGHTS["unet_spleen_bundle"]
    card = base.card.with_(arch_kwargs={"channels": (8, 16), "strides": (2,), "num_res_units": 1})
    entry = dataclasses.replace(
        base,
        name="test_spleen",
        card=card,
        url=f"{srv.url}/spleen.pt",
        sha256=sha256_of(served / "spleen.pt"),
        md5=None,
    )
    monkeypatch.setitem(WEIGHTS, "test_spleen", entry)
    model, report, _, _ = load_with_report("test_spleen")
    expected = net.state_dict()
    assert model.state_dict().keys() == expected.keys()
    assert all(torch.equal(v, expected[k]) for k, v in model.state_dict().items())
    assert report.verified == "sha256"

    # a source that states only an MD5 (the model-zoo bundles): verified by it, and reported as such
    monkeypatch.setitem(
        WEIGHTS, "test_md5", dataclasses.replace(entry, name="test_md5", sha256=None, md5=md5_of(served / "spleen.pt"))
    )
    _, report, _, _ = load_with_report("test_md5")
    assert report.verified.startswith("md5 (stated by the source") and "verified: md5" in report.summary()
    monkeypatch.setitem(
        WEIGHTS, "test_bad_md5", dataclasses.replace(entry, name="test_bad_md5", sha256=None, md5="0" * 32)
    )
    with pytest.raises(HashMismatchError, match="MD5"):
        load("test_bad_md5")

    monkeypatch.setitem(
        WEIGHTS, "test_unverified", dataclasses.replace(entry, name="test_unverified", sha256=None, md5=None)
    )
    with pytest.raises(UnverifiedWeightsError, match="not verified.*--trust"):
        load("test_unverified")
    _, report, _, _ = load_with_report("test_unverified", trust=True)
    assert report.verified == "none (trusted)"
    monkeypatch.setitem(WEIGHTS, "test_page", dataclasses.replace(entry, name="test_page", direct_download=False))
    with pytest.raises(FileNotFoundError, match="web page"):
        load("test_page")
