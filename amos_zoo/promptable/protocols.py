"""Prompt protocols as data: one YAML card per protocol in ``amos_zoo/promptable/protocols/``, every value with its
source (repository path and commit, or ``amos-zoo choice: why``).

Keys say what a value sets: ``input.*`` (the input pipeline, :mod:`amos_zoo.promptable.pipelines`), ``prompt.*``
(how prompts are made, :mod:`amos_zoo.promptable.prompts`), ``decode.*`` (which output is kept), ``metric.*``,
``split.*`` (the test split rule), ``train.*`` (fine-tuning), ``doc.*`` (documentation only). The training
protocols' cards (:mod:`amos_zoo.protocols`) have another schema (they configure LightningCLI), so these live apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

__all__ = ["PromptProtocol", "get_prompt_protocol", "list_prompt_protocols", "render_markdown"]

_TARGETS = ("input", "prompt", "decode", "metric", "split", "train", "doc")


@dataclass(frozen=True)
class PromptProtocol:
    """A prompt protocol: its settings (key -> (value, source)) and the sources' references."""

    name: str
    title: str
    summary: str
    sources: dict[str, str]
    settings: dict[str, tuple[Any, str]]

    def get(self, key: str, default: Any = None) -> Any:
        """A setting's value."""
        return self.settings[key][0] if key in self.settings else default

    def source(self, key: str) -> str:
        """A setting's source, its ``ref:`` prefix expanded."""
        text = self.settings[key][1]
        ref, sep, rest = text.partition(":")
        if sep and ref.strip() in self.sources:
            return f"{self.sources[ref.strip()]}: {rest.strip()}"
        return text

    def record(self) -> dict[str, Any]:
        """The protocol as written into a row: every value with its source."""
        return {
            "name": self.name,
            "settings": {k: {"value": v, "source": self.source(k)} for k, (v, _) in self.settings.items()},
        }


def _dir() -> Path:
    return Path(str(resources.files("amos_zoo.promptable").joinpath("protocols")))


def _parse(path: Path) -> PromptProtocol:
    import yaml

    data = yaml.safe_load(path.read_text())
    missing = [k for k in ("name", "title", "summary", "sources", "settings") if k not in data]
    if missing:
        raise ValueError(f"{path}: missing {', '.join(missing)}")
    if data["name"] != path.stem:
        raise ValueError(f"{path}: name {data['name']!r} differs from the file name")
    settings = {}
    for key, entry in data["settings"].items():
        if not isinstance(entry, dict) or "value" not in entry or not entry.get("source"):
            raise ValueError(f"{path}: {key} needs a value and a source")
        if key.split(".", 1)[0] not in _TARGETS or "." not in key:
            raise ValueError(f"{path}: {key}: keys start with one of {', '.join(_TARGETS)} and a dot")
        settings[key] = (entry["value"], str(entry["source"]))
    return PromptProtocol(
        data["name"],
        data["title"],
        " ".join(str(data["summary"]).split()),
        {str(k): str(v) for k, v in data["sources"].items()},
        settings,
    )


@cache
def _all() -> dict[str, PromptProtocol]:
    return {p.stem: _parse(p) for p in sorted(_dir().glob("*.yaml"))}


def list_prompt_protocols() -> list[PromptProtocol]:
    """Every prompt protocol card."""
    return list(_all().values())


def get_prompt_protocol(name: str) -> PromptProtocol:
    """A prompt protocol card by name."""
    cards = _all()
    if name not in cards:
        raise KeyError(f"unknown prompt protocol {name!r}; available: {', '.join(cards)}")
    return cards[name]


def render_markdown() -> str:
    """The prompt protocols as markdown tables (setting, value, source)."""
    lines = []
    for p in list_prompt_protocols():
        lines += [f"### `{p.name}`: {p.title}", "", p.summary, "", "| setting | value | source |", "|---|---|---|"]
        lines += [f"| `{k}` | {v} | {p.source(k)} |" for k, (v, _) in p.settings.items()]
        lines.append("")
    return "\n".join(lines)
