"""``amos-zoo table``: collect reproduce rows into the benchmark table, side by side with published numbers.

A run is compared with a published number of the same model and task; the difference is shown plainly only when
the number was produced under the run's protocol and the same kind of split (official split, cross-validation),
and is labelled ``(different protocol)``, ``(different split)`` or both otherwise."""

from __future__ import annotations

import csv
import io
from importlib import resources
from pathlib import Path

import yaml

from amos_zoo.experiments.run import load_rows
from amos_zoo.io import write_text

__all__ = ["load_published", "build_table", "write_table"]

REQUIRED = ("published_name", "metric", "value", "split", "split_kind", "protocol_description", "citation")


def load_published(path: str | Path | None = None) -> list[dict]:
    """Published entries (default: the file shipped in ``amos_zoo/resources/published.yaml``); each must cite."""
    text = (
        Path(path).read_text() if path else resources.files("amos_zoo").joinpath("resources/published.yaml").read_text()
    )
    entries = yaml.safe_load(text)["entries"]
    for i, e in enumerate(entries):
        missing = [k for k in REQUIRED if not e.get(k)] + ([] if "protocol" in e else ["protocol"])
        if missing:
            raise ValueError(
                f"{path or 'published.yaml'}: entry {i} lacks {', '.join(missing)}; every number needs "
                "its source, split and protocol"
            )
    return entries


def _fmt(v) -> str:
    return "" if v is None else f"{v:.4f}"


def comparison_label(row: dict, entry: dict) -> str:
    """ "" when a published number was produced under the run's protocol and kind of split, else what differs."""
    differs = []
    if entry.get("protocol") != row.get("protocol"):
        differs.append("protocol")
    if entry.get("split_kind") != row.get("split_kind"):
        differs.append("split")
    return f"(different {' and '.join(differs)})" if differs else ""


def build_table(rows: list[dict], published: list[dict]) -> list[dict]:
    """One line per run and matching published number, and one per published number without a run (our cells
    empty, never invented).

    One function because each column of a row is decided by the rules above, read top to bottom.
    """
    lines = []
    matched: set[int] = set()
    for row in sorted(rows, key=lambda r: (r["task"], r.get("protocol") or "", r["model"])):
        m = row["metrics"]
        pubs = [
            (i, p)
            for i, p in enumerate(published)
            if p.get("model") == row["model"] and p.get("task") in (row["task"], None) and p["metric"] == "dice"
        ]
        for i, _ in pubs:
            matched.add(i)
        base = {
            "task": row["task"],
            "model": row["model"] + (" (smoke)" if row.get("smoke") else ""),
            "dice": m["overall"].get("dice"),
            "nsd": m["overall"].get("nsd"),
            "dice_ct": m["per_modality"].get("CT", {}).get("dice"),
            "dice_mri": m["per_modality"].get("MRI", {}).get("dice"),
            "nsd_ct": m["per_modality"].get("CT", {}).get("nsd"),
            "nsd_mri": m["per_modality"].get("MRI", {}).get("nsd"),
            "protocol": row.get("protocol"),
            "split": row.get("split"),
            "split_kind": row.get("split_kind"),
            "steps": row.get("steps"),
            "device": row.get("device"),
            "per_organ_dice": m.get("per_organ_dice", {}),
        }
        if not pubs:
            lines.append(
                {
                    **base,
                    "published": None,
                    "published_name": "",
                    "published_protocol": "",
                    "citation": "",
                    "difference": None,
                    "comparison": "",
                }
            )
        for _, p in pubs:
            lines.append(
                {
                    **base,
                    "published": p["value"],
                    "published_name": p["published_name"],
                    "published_protocol": f"{p['protocol'] or p['protocol_description']}; {p['split']}",
                    "citation": p["citation"],
                    "difference": None if base["dice"] is None else base["dice"] - p["value"],
                    "comparison": comparison_label(row, p),
                }
            )
    for i, p in enumerate(published):
        if i in matched or p["metric"] != "dice":
            continue
        lines.append(
            {
                "task": p.get("task") or "not stated",
                "model": p.get("model") or "-",
                "dice": None,
                "nsd": None,
                "dice_ct": None,
                "dice_mri": None,
                "nsd_ct": None,
                "nsd_mri": None,
                "protocol": "",
                "split": "",
                "split_kind": "",
                "steps": None,
                "device": None,
                "per_organ_dice": {},
                "published": p["value"],
                "published_name": p["published_name"],
                "published_protocol": f"{p['protocol'] or p['protocol_description']}; {p['split']}",
                "citation": p["citation"],
                "difference": None,
                "comparison": "",
            }
        )
    return lines


def write_table(runs: str | Path, out: str | Path | None = None, published_path: str | Path | None = None) -> str:
    """Write ``table.md``, ``table.csv`` and ``table.png`` into ``out`` (default: the runs folder); return markdown.

    One function because it writes the three renderings of the same rows (markdown, CSV, PNG).
    """
    runs = Path(runs)
    rows = load_rows(runs)
    if not rows:
        raise FileNotFoundError(f"{runs}: no row.json found; run `amos-zoo reproduce ... --out {runs}` first")
    lines = build_table(rows, load_published(published_path))
    out = Path(out) if out else runs
    md = [
        "| task | protocol | model | split | mDSC | mNSD | DSC CT | DSC MRI | published mDSC | difference | "
        "published as | published protocol |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for ln in lines:
        diff = _fmt(ln["difference"])
        if diff and ln["comparison"]:
            diff += f" {ln['comparison']}"
        md.append(
            f"| {ln['task']} | {ln['protocol'] or ''} | {ln['model']} | {ln['split_kind'] or ''} | "
            f"{_fmt(ln['dice'])} | {_fmt(ln['nsd'])} | {_fmt(ln['dice_ct'])} | "
            f"{_fmt(ln['dice_mri'])} | {_fmt(ln['published'])} | {diff} | {ln['published_name']} | "
            f"{ln['published_protocol']} |"
        )
    organs = sorted({o for ln in lines for o in ln["per_organ_dice"]}, key=lambda o: o)
    runs_only = [ln for ln in lines if ln["dice"] is not None and ln["per_organ_dice"]]
    if runs_only:
        md += [
            "",
            "Per-organ Dice",
            "",
            "| task | model | " + " | ".join(organs) + " |",
            "|---|---|" + "---|" * len(organs),
        ]
        seen = set()
        for ln in runs_only:
            if (ln["task"], ln["protocol"], ln["model"]) in seen:
                continue
            seen.add((ln["task"], ln["protocol"], ln["model"]))
            md.append(
                f"| {ln['task']} | {ln['protocol']}/{ln['model']} | "
                + " | ".join(_fmt(ln["per_organ_dice"].get(o)) for o in organs)
                + " |"
            )
    md += ["", "Sources:"] + sorted({f"- {ln['published_name']}: {ln['citation']}" for ln in lines if ln["citation"]})
    markdown = "\n".join(md) + "\n"
    write_text(out / "table.md", markdown)

    buf = io.StringIO()
    fields = [
        "task",
        "model",
        "dice",
        "nsd",
        "dice_ct",
        "dice_mri",
        "nsd_ct",
        "nsd_mri",
        "protocol",
        "split_kind",
        "split",
        "steps",
        "device",
        "published",
        "published_name",
        "published_protocol",
        "difference",
        "comparison",
        "citation",
    ]
    writer = csv.DictWriter(buf, fieldnames=fields + [f"dice_{o}" for o in organs], extrasaction="ignore")
    writer.writeheader()
    for ln in lines:
        writer.writerow({**ln, **{f"dice_{o}": ln["per_organ_dice"].get(o) for o in organs}})
    write_text(out / "table.csv", buf.getvalue())
    _chart(lines, out / "table.png")
    return markdown


def _chart(lines: list[dict], path: Path) -> None:
    from amos_zoo.viz import _plt, _save

    plt = _plt()
    labels = [
        f"{ln['task']}\n{ln['model']}" + (f"\nvs {ln['published_name']}" if ln["published_name"] else "")
        for ln in lines
    ]
    ours = [ln["dice"] if ln["dice"] is not None else 0.0 for ln in lines]
    pub = [ln["published"] if ln["published"] is not None else 0.0 for ln in lines]
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(lines)), 5))
    xs = range(len(lines))
    ax.bar([x - 0.2 for x in xs], ours, width=0.4, label="amos-zoo run", color="#3b7dd8")
    ax.bar([x + 0.2 for x in xs], pub, width=0.4, label="published", color="#aaaaaa")
    ax.set_xticks(list(xs), labels, fontsize=7)
    ax.set_ylim(0, 1)
    ax.set_ylabel("mean Dice")
    ax.set_title("AMOS 2022: amos-zoo runs vs published numbers (protocols in table.md)")
    ax.legend()
    _save(fig, path)
