"""Training protocols as data: one YAML card per protocol, every value with its source.

A card (``amos_zoo/protocols/<name>.yaml``) lists settings by section (preprocessing, sampling, augmentation,
network, optimisation, split, inference, post-processing, metrics). Each setting has a key, a value and the
source it was taken from (repository path and commit, or paper and table; ``amos-zoo choice: why`` where the
project chose). The key says where the value goes:

* ``recipe.<field>``: the protocol's preprocessing :class:`~amos_zoo.data.recipes.Recipe` (named after the card);
* ``model.<arg>`` / ``data.<arg>`` / ``trainer.<arg>``: the LightningCLI config of ``amos-zoo fit``;
* ``network.<arg>``: the network's constructor arguments (``model.arch_kwargs``);
* ``eval.<name>``: how ``amos-zoo reproduce`` scores a row: ``eval.checkpoint`` (``final``: the weights at the end of
  training, or ``best``: the best validation checkpoint) and ``eval.empty_policy`` (the metric suite's empty-organ
  rule, :mod:`amos_zoo.metrics.case`);
* ``doc.<name>``: documentation only (what the source did, where amos-zoo has no switch for it).

A key ending in ``@<model>`` (``network.feature_size@swin_unetr``) applies only when that model is trained; a
``recipe`` key ending in ``@<task>`` (``recipe.ct_normalization@amos-ctmr``) only on that AMOS task.

``amos-zoo fit --protocol btcv/swin_unetr`` applies a card (and that model's network settings); ``amos-zoo protocol
show btcv`` prints it; ``docs/protocols.md`` is rendered from the cards (a test keeps them equal). This module
is data at the bottom of the package: it imports neither torch, MONAI nor any other amos-zoo module.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

__all__ = [
    "Protocol",
    "Setting",
    "ProtocolError",
    "CHECKPOINT_CHOICES",
    "get_protocol",
    "list_protocols",
    "protocol_config",
    "render_markdown",
]

_TARGETS = ("recipe", "model", "data", "trainer", "network", "eval", "doc")
_TASKS = ("amos-ct", "amos-ctmr", "amos-mr")
#: which checkpoint a row evaluates: the weights at the end of training, or the best validation checkpoint
CHECKPOINT_CHOICES = ("final", "best")


class ProtocolError(ValueError):
    """A protocol card is malformed or a protocol name is unknown."""


@dataclass(frozen=True)
class Setting:
    """One value of a protocol, with its source."""

    section: str
    key: str
    value: Any
    source: str

    @property
    def target(self) -> str:
        """Where the value goes: recipe, model, data, trainer, network, eval or doc."""
        return self.key.split(".", 1)[0]

    @property
    def path(self) -> str:
        """The key after the target, without a ``@model`` restriction."""
        return self.key.split(".", 1)[1].split("@", 1)[0]

    @property
    def only_for(self) -> str | None:
        """The model this setting is restricted to (``@model``), or None."""
        return self.key.split("@", 1)[1] if "@" in self.key else None


@dataclass(frozen=True)
class Protocol:
    """A protocol card: its settings with sources, the models its source trained, and its split."""

    name: str
    title: str
    summary: str
    kind: str  # "published" (a source's protocol) or "amos-zoo" (a choice of this project)
    split: str  # "official" (training / validation lists) or "cross-validation" (nnU-Net's 5 folds)
    sources: dict[str, str]
    settings: tuple[Setting, ...]
    models: tuple[str, ...] = field(default_factory=tuple)

    def values(self, target: str, model: str | None = None, task: str | None = None) -> dict[str, Any]:
        """``{key without the target prefix: value}`` of one target (``recipe``, ``model``...), with the settings
        restricted to ``model`` or ``task`` (``@...``) included when they are given."""
        out = {s.path: s.value for s in self.settings if s.target == target and s.only_for is None}
        chosen = {v for v in (model, task) if v}
        out.update({s.path: s.value for s in self.settings if s.target == target and s.only_for in chosen})
        return out

    def network(self, model: str) -> dict[str, Any]:
        """Constructor arguments of ``model`` under this protocol (empty: the registry's defaults)."""
        return self.values("network", model)

    def evaluation(self) -> dict[str, str]:
        """How ``reproduce`` scores this protocol's row: ``checkpoint`` (``final`` or ``best``; default ``final``, as
        nnU-Net reports) and ``empty_policy`` (default ``score``)."""
        values = {"checkpoint": "final", "empty_policy": "score", **self.values("eval")}
        if values["checkpoint"] not in CHECKPOINT_CHOICES:
            raise ProtocolError(f"protocol {self.name}: eval.checkpoint is one of {CHECKPOINT_CHOICES}")
        return values

    def setting(self, key: str) -> Setting:
        """The setting with this key."""
        for s in self.settings:
            if s.key == key:
                return s
        raise KeyError(f"protocol {self.name!r} has no setting {key!r}")

    def cite(self, source: str) -> str:
        """A source string with its ``ref:`` prefix expanded (``rc: x.py`` -> ``research-contributions@...: x.py``)."""
        ref, sep, rest = source.partition(":")
        if sep and ref.strip() in self.sources:
            return f"{self.sources[ref.strip()]}: {rest.strip()}" if rest.strip() else self.sources[ref.strip()]
        return source


def _protocol_dir() -> Path:
    return Path(str(resources.files("amos_zoo.protocols")))


def _parse(path: Path) -> Protocol:
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ProtocolError(f"{path}: not valid YAML ({err})") from err
    missing = [k for k in ("name", "title", "summary", "kind", "split", "sources", "sections") if k not in data]
    if missing:
        raise ProtocolError(f"{path}: missing {', '.join(missing)}")
    if data["name"] != path.stem:
        raise ProtocolError(f"{path}: name {data['name']!r} differs from the file name")
    if data["split"] not in ("official", "cross-validation") or data["kind"] not in ("published", "amos-zoo"):
        raise ProtocolError(f"{path}: split is official or cross-validation, kind published or amos-zoo")
    settings = []
    for section, entries in data["sections"].items():
        for key, entry in (entries or {}).items():
            if not isinstance(entry, dict) or "value" not in entry or not entry.get("source"):
                raise ProtocolError(f"{path}: {section}.{key} needs a value and a source")
            if key.split(".", 1)[0] not in _TARGETS or "." not in key:
                raise ProtocolError(f"{path}: {key}: keys start with one of {', '.join(_TARGETS)} and a dot")
            if key.split(".", 1)[0] == "recipe" and "@" in key and key.split("@", 1)[1] not in _TASKS:
                raise ProtocolError(f"{path}: {key}: a recipe varies by AMOS task (@amos-ct...), not by model")
            settings.append(Setting(section, key, entry["value"], str(entry["source"])))
    keys = [s.key for s in settings]
    dupes = sorted({k for k in keys if keys.count(k) > 1})
    if dupes:
        raise ProtocolError(f"{path}: settings given twice: {dupes}")
    return Protocol(
        name=data["name"],
        title=data["title"],
        summary=" ".join(str(data["summary"]).split()),
        kind=data["kind"],
        split=data["split"],
        sources={str(k): str(v) for k, v in data["sources"].items()},
        settings=tuple(settings),
        models=tuple(data.get("models", ())),
    )


@cache
def _all() -> dict[str, Protocol]:
    return {p.stem: _parse(p) for p in sorted(_protocol_dir().glob("*.yaml"))}


def list_protocols() -> list[Protocol]:
    """Every protocol card, by name."""
    return list(_all().values())


def get_protocol(name: str) -> Protocol:
    """A protocol card by name (``amos-zoo protocol list``)."""
    cards = _all()
    if name not in cards:
        raise ProtocolError(f"unknown protocol {name!r}; available: {', '.join(cards)}")
    return cards[name]


def _nest(flat: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in flat.items():
        node = out
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


def protocol_config(name: str, model: str | None = None) -> dict[str, Any]:
    """The LightningCLI config (``{"model": ..., "data": ..., "trainer": ...}``) a protocol sets, with ``model``'s
    architecture and network arguments when given (``--protocol NAME/MODEL``)."""
    protocol = get_protocol(name)
    flat: dict[str, Any] = {}
    for target in ("model", "data", "trainer"):
        flat.update({f"{target}.{k}": v for k, v in protocol.values(target, model).items()})
    flat["data.recipe"] = protocol.name
    flat["model.protocol"] = protocol.name
    if model is not None:  # the command line checks the name against the model registry (train/cli.py)
        flat["model.arch"] = model
        flat["model.arch_kwargs"] = protocol.network(model)
    return _nest(flat)


def _fmt(value: Any) -> str:
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    return str(value)


def render_markdown(protocols: list[Protocol] | None = None) -> str:
    """docs/protocols.md: one table per protocol (setting, value, source), generated from the cards."""
    protocols = protocols if protocols is not None else list_protocols()
    lines = [
        "# amos-zoo protocols",
        "",
        "Generated from `amos_zoo/protocols/*.yaml` by `amos-zoo protocol docs --write docs/protocols.md`; a test",
        "fails when this file and the cards differ. Apply one with `amos-zoo fit --protocol NAME/MODEL ...` or",
        "`amos-zoo reproduce --protocol NAME --model MODEL ...`. Keys say where a value goes: `recipe.*` (the",
        "preprocessing recipe), `model.*` / `data.*` / `trainer.*` (the LightningCLI config), `network.*` (the",
        "network's arguments), `eval.*` (how `reproduce` scores the row: checkpoint and empty-organ rule), `doc.*`",
        "(what the source does where amos-zoo has no switch; documentation only). A key ending in `@MODEL` applies",
        "to that network only, a recipe key ending in `@TASK` to that AMOS task only. A source says `equals` only",
        "where a test shows equality with the source's own code (the test is named), `approximates` with what",
        "differs, or `amos-zoo choice` and why.",
        "",
    ]
    for p in protocols:
        lines += [f"## `{p.name}`: {p.title}", "", p.summary, "", f"Split: {p.split}. Kind: {p.kind}.", ""]
        if p.models:
            lines += [f"Models its source trained: {', '.join(f'`{m}`' for m in p.models)}.", ""]
        lines += ["Sources:", ""] + [f"- `{k}`: {v}" for k, v in p.sources.items()] + [""]
        lines += ["| section | setting | value | source |", "|---|---|---|---|"]
        for s in p.settings:
            value = _fmt(s.value).replace("|", "\\|")
            lines.append(f"| {s.section} | `{s.key}` | {value} | {s.source.replace('|', chr(92) + '|')} |")
        lines.append("")
    return "\n".join(lines)
