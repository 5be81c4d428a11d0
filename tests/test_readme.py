"""What README.md shows runs: every `amos-zoo` command of its bash blocks, in order, and every Python block, on a
synthetic AMOS dataset standing in for /data/amos22, with small networks and a few steps (`fit` / `validate`
get `reproduce --smoke`'s options, `reproduce` gets `--smoke`). `make demo` is tests/test_quickstart.py's
command and `make test` is CI's."""

from __future__ import annotations

import json
import re
import shlex
import shutil
from pathlib import Path

import pytest

from amos_zoo.cli.main import main
from amos_zoo.experiments.reproduce import smoke_args

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()
CPU = [
    "--trainer.accelerator",
    "cpu",
    "--trainer.devices",
    "1",
    "--trainer.enable_progress_bar",
    "false",
]
SMALL_2D = ["--data.patch_size", "[64, 64]", "--data.max_val_cases", "2", "--model.arch_kwargs"]
SMALL_2D.append(json.dumps({"spatial_dims": 2, "channels": [8, 16, 32], "strides": [2, 2], "num_res_units": 1}))


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


def _adapt(args: list[str], work: Path) -> list[str]:
    """Small and quick on a CPU, as reproduce --smoke is; nothing of the command itself is dropped."""
    command = args[0]
    if command == "reproduce":
        return [*args, "--smoke"]
    if command in ("fit", "validate"):
        if "--protocol" in args:
            protocol, model = args[args.index("--protocol") + 1].split("/")
            return [*args, *smoke_args(model, protocol, work, steps=2, folds=False), *CPU]
        steps = ["--trainer.max_steps", "2", "--trainer.val_check_interval", "2", "--trainer.precision", "32-true"]
        return [*args, *SMALL_2D, *steps, "--data.num_workers", "0", *CPU]
    return args


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


@pytest.mark.slow
def test_every_readme_command_and_python_example_runs(synth_root, tmp_path, monkeypatch, capsys):
    work = tmp_path / "work"
    shutil.copytree(synth_root, work / "amos22", ignore=shutil.ignore_patterns(".amos_zoo_cache"))
    shutil.copytree(synth_root / "imagesTs", work / "scans")
    monkeypatch.chdir(work)
    monkeypatch.setenv("WANDB_MODE", "disabled")  # the configs' W&B logger, without writing a run
    ran = []
    for args in readme_commands():
        args = [a.replace("/data/amos22", str(work / "amos22")) for a in args]
        try:
            code = main(_adapt(args, work))
        except SystemExit as done:  # --print_config, --help: jsonargparse exits
            code = done.code or 0
        output = capsys.readouterr()
        assert code == 0, f"amos-zoo {' '.join(args)} exited {code}\n{output.out[-2000:]}\n{output.err[-3000:]}"
        ran.append(args[0])
    expected = {"fit", "validate", "reproduce", "table", "predict", "evaluate", "export", "check-data", "cache", "plan"}
    assert expected <= set(ran)
    assert (work / "runs/table.md").is_file() and (work / "eval/summary.json").is_file()
    assert len(list((work / "preds_val").glob("*.nii.gz"))) == 3

    for block in readme_blocks("python"):
        exec(compile(block, "README.md", "exec"), {})  # noqa: S102 - the README's own examples
