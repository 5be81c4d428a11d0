"""``amos-zoo``: one command line. LightningCLI runs fit / validate / test; every other subcommand is a typed
function of :mod:`amos_zoo.cli.commands` whose signature and docstring make its options and help (jsonargparse).

``--verbose`` (before the subcommand) shows every third-party warning; without it, the known noise of MONAI,
Lightning and friends is filtered by name (:mod:`amos_zoo.console`).
"""

from __future__ import annotations

import inspect
import os
import sys
import typing
from collections.abc import Callable, Sequence

__all__ = ["main", "build_parser", "LIGHTNING_COMMANDS"]

LIGHTNING_COMMANDS = {
    "fit": "train a model (LightningCLI: --config configs/base/gpu.yaml --protocol btcv/swin_unetr --data.root DIR)",
    "validate": "score a checkpoint on the validation cases (LightningCLI; --ckpt_path FILE)",
    "test": "the same as validate, logged as test (LightningCLI; --ckpt_path FILE)",
}


def _doc_parts(fn: Callable) -> tuple[str, str, str]:
    """(one-line help, description, example) of a command function's docstring."""
    doc = inspect.getdoc(fn) or ""
    head, _, example = doc.partition("Example:")
    description = head.split("\nArgs:")[0].strip()
    return description.splitlines()[0], description, " ".join(example.split())


def _subparser(fn: Callable, prog: str):
    import docstring_parser
    from jsonargparse import ActionYesNo, ArgumentParser

    _, description, example = _doc_parts(fn)
    from amos_zoo.console import help_formatter

    parser = ArgumentParser(
        prog=prog,
        description=description,
        epilog=f"Example:\n  {example}",
        formatter_class=help_formatter(),
    )
    params = inspect.signature(fn).parameters
    hints = typing.get_type_hints(fn)
    helps = {p.arg_name: p.description for p in docstring_parser.parse(inspect.getdoc(fn) or "").params}
    positional = list(getattr(fn, "positional", ()))
    flags = [name for name, p in params.items() if p.annotation in (bool, "bool", "bool | None")]
    for name in positional:  # named first, in order: `amos-zoo protocol show NAME`
        parser.add_argument(name, type=hints.get(name, str), help=helps.get(name, ""))
    parser.add_function_arguments(fn, as_positional=False, skip=set(flags) | set(positional))
    for name in flags:
        parser.add_argument(f"--{name}", action=ActionYesNo, default=params[name].default, help=helps.get(name, ""))
    return parser


def build_parser():
    """The jsonargparse parser of every non-Lightning subcommand (``protocol`` has ``list`` and ``show``)."""
    from jsonargparse import ArgumentParser

    from amos_zoo.cli.commands import COMMANDS
    from amos_zoo.console import help_formatter

    lightning = "\n".join(f"  {k:<10} {v}" for k, v in LIGHTNING_COMMANDS.items())
    lightning += "\n  cache      fill the preprocessing cache fit would read, in parallel (fit's options; --workers N)"
    parser = ArgumentParser(
        prog="amos-zoo",
        description="Benchmarked MONAI baselines for AMOS 2022 and the Medical Segmentation Decathlon.",
        epilog=f"Lightning subcommands (each has --help and --print_config):\n{lightning}\n\n"
        "Example:\n  amos-zoo quickstart --out quickstart",
        formatter_class=help_formatter(),
    )
    parser.add_argument("--verbose", action="store_true", help="show every third-party warning and tip")
    sub = parser.add_subcommands(dest="command", required=False)
    nested: dict[str, dict[str, Callable]] = {}
    for name, fn in COMMANDS.items():
        if " " in name:
            group, leaf = name.split(" ", 1)
            nested.setdefault(group, {})[leaf] = fn
            continue
        sub.add_subcommand(name, _subparser(fn, f"amos-zoo {name}"), help=_doc_parts(fn)[0])
    for group, leaves in nested.items():
        group_parser = ArgumentParser(prog=f"amos-zoo {group}", formatter_class=help_formatter())
        sub.add_subcommand(group, group_parser, help=f"{group}: {', '.join(leaves)}")
        group_sub = group_parser.add_subcommands(dest="action")
        for leaf, fn in leaves.items():
            group_sub.add_subcommand(leaf, _subparser(fn, f"amos-zoo {group} {leaf}"), help=_doc_parts(fn)[0])
    return parser


def _run(argv: list[str]) -> int:
    from amos_zoo.cli.commands import COMMANDS

    parser = build_parser()
    cfg = parser.parse_args(argv)
    if cfg.get("command") is None:
        parser.print_help()
        return 0
    name = cfg.command
    args = cfg[name]
    if name == "protocol":
        name = f"protocol {args.action}"
        args = args[args.action]
    fn = COMMANDS[name]
    kwargs = {k: v for k, v in vars(args).items() if k in inspect.signature(fn).parameters}
    from amos_zoo.train.preempted import Preempted, preempted_exit_status

    try:
        return fn(**kwargs)
    except Preempted as stopped:
        print(f"amos-zoo {name}: {stopped}", file=sys.stderr)
        return preempted_exit_status(stopped.global_rank)
    except (FileNotFoundError, ValueError, KeyError, OSError, RuntimeError) as err:
        print(f"amos-zoo {name}: error: {err}", file=sys.stderr)
        return 2


def _cache(argv: list[str]) -> int:
    """``amos-zoo cache [--workers N] <fit options>``: fill the preprocessing cache of the data module that
    ``amos-zoo fit`` with the same options would build, in N processes, before a multi-GPU run (whose other
    ranks would otherwise wait for rank 0 to fill it)."""
    from amos_zoo.data.index import DatasetError
    from amos_zoo.train.cli import run_lightning_cli

    if argv[:1] in (["-h"], ["--help"]) or not argv:
        print(
            "usage: amos-zoo cache [--workers N] --config ... --protocol NAME/MODEL --data.root DIR [fit options]\n"
            "Fill the preprocessing cache that `amos-zoo fit` with the same options reads (N processes, default:\n"
            "all cores), e.g. before a multi-GPU run.\n\nExample:\n"
            "  amos-zoo cache --workers 16 --config configs/base/gpu.yaml --protocol btcv/swin_unetr "
            "--data.root /data/amos22"
        )
        return 0
    workers = None
    if "--workers" in argv:
        i = argv.index("--workers")
        workers, argv = int(argv[i + 1]), argv[:i] + argv[i + 2 :]
    try:
        cli = run_lightning_cli(argv, run=False)  # without a subcommand: parse and instantiate only
        datamodule = cli.datamodule
        datamodule.prepare_data(workers=workers or os.cpu_count() or 1)
    except (DatasetError, FileNotFoundError, ValueError) as err:
        print(f"amos-zoo cache: error: {err}", file=sys.stderr)
        return 2
    print(f"amos-zoo cache: the preprocessing cache of {datamodule.root} is complete in {datamodule.cache_dir}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``amos-zoo`` console script."""
    from amos_zoo.console import quiet_third_party

    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = "--verbose" in argv[:1]
    if verbose:
        argv = argv[1:]
    quiet_third_party(verbose)
    if argv and argv[0] == "cache":
        return _cache(argv[1:])
    if argv and argv[0] in LIGHTNING_COMMANDS:
        from amos_zoo.data.index import DatasetError
        from amos_zoo.train.callbacks import preempted_checkpoint
        from amos_zoo.train.cli import run_lightning_cli
        from amos_zoo.train.preempted import preempted_exit_status
        from amos_zoo.weights.formats import UnsafeCheckpointError

        try:
            cli = run_lightning_cli(argv)
        except (UnsafeCheckpointError, DatasetError) as err:
            print(f"amos-zoo {argv[0]}: error: {err}", file=sys.stderr)
            return 2
        if preempted_checkpoint(cli.trainer) is not None:  # the exit status tells a job script to resume
            return preempted_exit_status(cli.trainer.global_rank)
        return 0
    return _run(argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
