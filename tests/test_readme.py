"""What README.md shows runs as a user types it: every `amos-zoo` line of its bash blocks, in order, with the `amos-zoo`
command of the wheel installed in a fresh environment (tests/conftest.py ``wheel_env``), each in its own process, from a
folder outside the checkout, on a synthetic AMOS dataset in /data/amos22's place; then its Python block, whose results
are checked. Each command prints none of the known third-party noise (amos_zoo.console.NOISE; tests/test_quiet.py shows
that ``--verbose`` lets it through). The only options added are the ones README "Development" shows (a CPU in seconds):
``reproduce`` gets ``--smoke``; ``fit``/``validate`` with ``--protocol P/M`` get ``reproduce --smoke``'s options for M
and the CPU options; a ``fit`` without a protocol (2D) gets the small 2D options. A new command needs no adapter here; a
new command kind that cannot run on a small dataset as typed needs an override that the README shows. `make demo` is
tests/test_quickstart.py's command and `make test` is CI's."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import REPO, check_cross_validation_smoke_run, check_official_smoke_run, check_smoke_row

from amos_zoo.console import NOISE
from amos_zoo.experiments.reproduce import smoke_args

README = (REPO / "README.md").read_text()
#: added to `fit` / `validate` / `test` commands with a protocol, after `reproduce --smoke`'s options
CPU = ["--trainer.accelerator", "cpu", "--trainer.devices", "1", "--trainer.enable_progress_bar", "false"]
#: added to a `fit` / `validate` without a protocol (the 2D configs)
SMALL_2D = ["--data.patch_size", "[64, 64]", "--data.max_val_cases", "2", "--data.num_workers", "0"]
SMALL_2D += ["--model.arch_kwargs", '{"spatial_dims": 2, "channels": [8, 16, 32], "strides": [2, 2]}']
SMALL_2D += ["--trainer.max_steps", "2", "--trainer.val_check_interval", "2", "--trainer.precision", "32-true"]
SMALL_2D += CPU
DATA = "/data/amos22"


def readme_blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def readme_commands() -> list[list[str]]:
    """The amos-zoo command lines of the bash blocks, without trailing comments."""
    out = []
    for block in readme_blocks("bash"):
        for line in block.splitlines():
            line = line.split("  #")[0].strip()
            if line.startswith("amos-zoo "):
                out.append(shlex.split(line)[1:])
    return out


def added_options(args: list[str], work: Path) -> list[str]:
    """The options README "Development" says the suite adds to this command (none for most)."""
    command = args[0]
    if command == "reproduce" and "--smoke" not in args:
        return ["--smoke"]
    if command in ("fit", "validate", "test") and "--print_config" not in args:
        if "--protocol" in args:
            protocol, model = args[args.index("--protocol") + 1].split("/")
            return [*smoke_args(model, protocol, work, steps=2, folds=False), *CPU]
        return SMALL_2D
    return []


def test_readme_shows_the_options_the_suite_adds():
    """README "Development" lists the added options verbatim (the 2D and CPU ones; the smoke ones by name)."""
    text = " ".join(README.split())
    assert shlex.join(SMALL_2D) in text.replace("`", "")
    assert shlex.join(CPU) in text.replace("`", "")
    assert "reproduce --smoke" in text and "smoke_args" in text and "/data/amos22" in text


def test_readme_names_both_amos_tasks_and_the_published_rows():
    commands = [" ".join(c) for c in readme_commands()]
    assert any("amos-ct " in c or c.endswith("amos-ct") for c in commands)
    assert any("amos-ctmr" in c for c in commands)
    import yaml

    published = yaml.safe_load((REPO / "amos_zoo/resources/published.yaml").read_text())["entries"]
    for entry in published:  # the README's table shows each published number with its reproduce command
        assert f"{entry['value']:.4f}".rstrip("0") in README or str(entry["value"]) in README, entry["published_name"]
        command = entry.get("reproduce", "").split("-- ")[-1]
        if command.startswith("amos-zoo"):
            assert command in README, command


CHECK_PYTHON_BLOCK = """
import json, nibabel, numpy
scan = nibabel.load("scans/amos_0006.nii.gz")
print("RESULTS", json.dumps({
    "net": type(net).__name__, "net_out": net.out.conv.conv.out_channels,
    "card_protocol": card.protocol, "card_arch": card.arch, "card_classes": len(card.labels),
    "loaded_all": not report.missing and not report.unexpected,
    "labels_shape": list(labels.shape), "scan_shape": list(scan.shape),
    "same_affine": bool(numpy.allclose(affine, scan.affine)), "labels": sorted(int(v) for v in numpy.unique(labels)),
}))
"""


@pytest.mark.slow
def test_every_readme_command_and_python_example_runs_as_typed(synth_root, wheel_env, tmp_path):
    work = tmp_path / "work"
    data = work / "amos22"
    shutil.copytree(synth_root, data, ignore=shutil.ignore_patterns(".amos_zoo_cache"))
    shutil.copytree(synth_root / "imagesTs", work / "scans")  # "scans/": the user's own scans
    env = {**wheel_env.env, "WANDB_MODE": "disabled", "AMOS_ZOO_HOME": str(tmp_path / "home")}
    ran = []
    for args in readme_commands():
        typed = [a.replace(DATA, str(data)) for a in args]
        line = [str(wheel_env.console), *typed, *added_options(typed, work)]
        done = subprocess.run(line, cwd=work, env=env, capture_output=True, text=True)
        assert done.returncode == 0, f"amos-zoo {shlex.join(args)} exited {done.returncode}\n{done.stderr[-3000:]}"
        printed = done.stdout + done.stderr  # quiet: none of the known third-party noise (amos_zoo.console.NOISE)
        noise = [why for _kind, _where, message, why in NOISE if re.search(message, printed)]
        assert not noise and "Traceback" not in printed, f"amos-zoo {shlex.join(args)}: {noise}\n{printed[-3000:]}"
        ran.append(args[0])
    expected = {"fit", "validate", "reproduce", "table", "predict", "evaluate", "export", "check-data", "cache", "plan"}
    assert expected <= set(ran)

    # what the commands wrote: the smoke row, the table, predictions on each scan's grid, the evaluation, exports
    check_smoke_row(work / "runs" / "amos-ct" / "btcv" / "unet", "amos-ct", "btcv", "unet")
    # the btcv and nnunet-v2 reproduce lines (checked here, not run again in tests/test_reproduce.py)
    runs = work / "runs"
    check_official_smoke_run(runs / "amos-ct" / "btcv" / "swin_unetr", "amos-ct", "btcv", "swin_unetr")
    check_cross_validation_smoke_run(runs, labelled_cases=7)  # the synthetic dataset: 4 training + 3 validation
    table = (work / "runs" / "table.md").read_text()  # `table` ran after the two reproduce lines before it
    assert "| amos-ct | btcv | swin_unetr (smoke) | official |" in table
    assert "| amos-ctmr | nnunet-v2 | nnunet (smoke) | cross-validation |" in table
    assert len(list((work / "preds_val").glob("*.nii.gz"))) == 3 and len(list((work / "preds").glob("*.nii.gz"))) == 1
    summary = json.loads((work / "eval" / "summary.json").read_text())
    assert summary["all"]["cases"] == 3 and set(summary["per_modality"]) == {"CT", "MRI"}
    assert (work / "exported" / "bundle" / "configs" / "inference.json").is_file()
    assert list((work / "exported" / "ts").glob("*.ts")) or list((work / "exported" / "ts").glob("*.pt"))
    assert (work / "nnUNet_raw").is_dir() and (work / "sa2d").is_dir()

    [block] = readme_blocks("python")
    script = work / "readme_example.py"
    script.write_text(block + CHECK_PYTHON_BLOCK)
    done = subprocess.run([wheel_env.python, script], cwd=work, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout.split("RESULTS", 1)[1])
    assert results["net"] == "SwinUNETR" and results["net_out"] == 16
    assert results["card_protocol"] == "btcv" and results["card_arch"] == "swin_unetr" and results["card_classes"] == 16
    assert results["loaded_all"] and results["same_affine"]
    assert results["labels_shape"] == results["scan_shape"] and set(results["labels"]) <= set(range(16))
    assert done.stdout.startswith("btcv ")  # the block's own print: card.protocol, roi_size, the load report
    assert not [line for line in done.stderr.splitlines() if "Warning" in line], done.stderr[-2000:]
