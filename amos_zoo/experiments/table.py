"""``amos-zoo table``: collect reproduce rows into the benchmark tables, side by side with published numbers.

A run is compared with a published number of the same model and task; the difference is shown plainly only when
the number was produced under the run's protocol and the same kind of split (official split, cross-validation),
and is labelled ``(different protocol)``, ``(different split)`` or both otherwise (``scoring`` too where a Decathlon
BrainTumour number was scored per label, the challenge's way, and the run on the BraTS regions, or the reverse).
AMOS rows make the AMOS table (``table.csv``, ``table.png``); Decathlon rows the Decathlon table (``decathlon.csv``,
``decathlon.png``: tasks as columns, runs and published sources as rows, mean Dice per task); ``table.md`` holds
both."""

from __future__ import annotations

import csv
import io
from importlib import resources
from pathlib import Path

import yaml

from amos_zoo.data.msd import MSD_TASKS
from amos_zoo.experiments.run import load_rows
from amos_zoo.io import write_text

__all__ = ["load_published", "build_table", "decathlon_markdown", "write_table"]

REQUIRED = ("published_name", "metric", "value", "split", "split_kind", "protocol_description", "citation")


def load_published(path: str | Path | None = None) -> list[dict]:
    """Published entries (default: the file shipped in ``amos_zoo/resources/published.yaml``); each must cite, and a
    Dice (``value``, optional ``per_class``) lie in [0, 1]; ``scored_on``, where given, is labels or regions."""
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
        values = [e["value"], *(e.get("per_class") or {}).values()]
        if e["metric"] == "dice" and not all(isinstance(v, (int, float)) and 0 <= v <= 1 for v in values):
            raise ValueError(
                f"{path or 'published.yaml'}: entry {i}: a Dice (value, per_class) outside [0, 1]: {values}"
            )
        if e.get("scored_on") not in (None, "labels", "regions"):
            raise ValueError(
                f"{path or 'published.yaml'}: entry {i}: scored_on is {e['scored_on']!r}, not 'labels' or 'regions'"
            )
    return entries


def _fmt(v) -> str:
    return "" if v is None else f"{v:.4f}"


def _scoring(row: dict) -> str | None:
    """How a Decathlon run was scored: "regions" when a scored region joins labels (BrainTumour's BraTS regions),
    "labels" when each label is scored on its own, None when the row does not say."""
    scored_on = row.get("scored_on")
    if not scored_on:
        return None
    return "regions" if any(len(labels) > 1 for labels in scored_on.values()) else "labels"


def comparison_label(row: dict, entry: dict) -> str:
    """ "" when a published number was produced under the run's protocol and kind of split (and, where the entry
    says how it was scored, ``scored_on``: labels or regions, the same way), else what differs."""
    differs = []
    if entry.get("protocol") != row.get("protocol"):
        differs.append("protocol")
    if entry.get("split_kind") != row.get("split_kind"):
        differs.append("split")
    scoring = _scoring(row)
    if entry.get("scored_on") and scoring and entry["scored_on"] != scoring:
        differs.append("scoring")
    if not differs:
        return ""
    what = differs[0] if len(differs) == 1 else f"{', '.join(differs[:-1])} and {differs[-1]}"
    return f"(different {what})"


def _in_benchmark(task: str | None, benchmark: str) -> bool:
    return (task in MSD_TASKS) == (benchmark == "decathlon")


def build_table(rows: list[dict], published: list[dict], benchmark: str = "amos") -> list[dict]:
    """One line per run and matching published number, and one per published number without a run (our cells
    empty, never invented), of one benchmark's tasks (``amos`` or ``decathlon``).

    One function because each column of a row is decided by the rules above, read top to bottom.
    """
    rows = [r for r in rows if _in_benchmark(r["task"], benchmark)]
    published = [p for p in published if _in_benchmark(p.get("task"), benchmark)]
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
    """Write ``table.md`` and, per benchmark with runs, its CSV and PNG (AMOS: ``table.csv``, ``table.png``;
    Decathlon: ``decathlon.csv``, ``decathlon.png``) into ``out`` (default: the runs folder); return the markdown."""
    runs = Path(runs)
    rows = load_rows(runs)
    if not rows:
        raise FileNotFoundError(f"{runs}: no row.json found; run `amos-zoo reproduce ... --out {runs}` first")
    published = load_published(published_path)
    out = Path(out) if out else runs
    sections = []
    if any(not _in_benchmark(r["task"], "decathlon") for r in rows):
        sections.append(_write_amos(build_table(rows, published), out))
    if any(_in_benchmark(r["task"], "decathlon") for r in rows):
        lines = build_table(rows, published, "decathlon")
        sections.append(decathlon_markdown(lines))
        _write_csv(lines, out / "decathlon.csv", [])
        _decathlon_chart(lines, out / "decathlon.png")
    markdown = "\n".join(sections)
    write_text(out / "table.md", markdown)
    return markdown


_CSV_FIELDS = [
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


def _write_csv(lines: list[dict], path: Path, organs: list[str]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=_CSV_FIELDS + [f"dice_{o}" for o in organs], extrasaction="ignore")
    writer.writeheader()
    for ln in lines:
        writer.writerow({**ln, **{f"dice_{o}": ln["per_organ_dice"].get(o) for o in organs}})
    write_text(path, buf.getvalue())


def _write_amos(lines: list[dict], out: Path) -> str:
    """The AMOS table's markdown (returned), ``table.csv`` and ``table.png``."""
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
    _write_csv(lines, out / "table.csv", organs)
    _chart(lines, out / "table.png")
    return "\n".join(md) + "\n"


def _decathlon_rows(lines: list[dict]) -> tuple[list[str], dict[str, dict[str, list[str]]], list[dict]]:
    """(row names, row -> task -> cell parts, published entries in footnote order) of the Decathlon table."""
    notes: list[dict] = []
    table: dict[str, dict[str, list[str]]] = {}
    for ln in lines:
        ref = ""
        if ln["published"] is not None:
            key = (ln["published_name"], ln["task"], ln["published"])
            found = [i for i, n in enumerate(notes) if (n["published_name"], n["task"], n["published"]) == key]
            if not found:
                notes.append(ln)
            ref = f"[{(found[0] if found else len(notes) - 1) + 1}]"
        if ln["dice"] is not None:
            name = f"{ln['protocol']} / {ln['model']}"
            cell = table.setdefault(name, {}).setdefault(ln["task"], [_fmt(ln["dice"])])
            if ref:
                cell.append(f"vs {_fmt(ln['published'])} {ref}" + (f" {ln['comparison']}" if ln["comparison"] else ""))
        elif ln["published"] is not None:
            table.setdefault(f"published: {ln['published_name']}", {}).setdefault(ln["task"], []).append(
                f"{_fmt(ln['published'])} {ref}"
            )
    runs_first = sorted(table, key=lambda n: (n.startswith("published: "), n))
    return runs_first, table, notes


def decathlon_markdown(lines: list[dict]) -> str:
    """The Decathlon table: one column per task, one row per run (protocol / model) and per published source without
    a run; a cell is our mean Dice over the task's labels (BrainTumour: its BraTS regions) and, beside it, each
    published number of that model and task, labelled when its protocol or split differs."""
    names, table, notes = _decathlon_rows(lines)
    tasks = list(MSD_TASKS)
    md = [
        "Medical Segmentation Decathlon: mean Dice per task (our cross-validation; published numbers beside, "
        "[n] = source below)",
        "",
        "| protocol / model | " + " | ".join(t.split("_", 1)[1] for t in tasks) + " |",
        "|---|" + "---|" * len(tasks),
    ]
    for name in names:
        md.append(f"| {name} | " + " | ".join(" ".join(table[name].get(t, [])) for t in tasks) + " |")
    md += ["", "Published numbers:"]
    for i, n in enumerate(notes, 1):
        md.append(
            f"- [{i}] {n['published_name']}, {n['task']}: {_fmt(n['published'])}; {n['published_protocol']}. "
            f"{n['citation']}"
        )
    return "\n".join(md) + "\n"


def _decathlon_chart(lines: list[dict], path: Path) -> None:
    """Grouped bars: per task, each run's mean Dice and each published number."""
    from amos_zoo.viz import _plt, _save

    names, table, _ = _decathlon_rows(lines)
    tasks = list(MSD_TASKS)
    plt = _plt()
    fig, ax = plt.subplots(figsize=(14, 5))
    width = 0.8 / max(1, len(names))
    for k, name in enumerate(names):
        values = [float(table[name][t][0].split()[0]) if t in table[name] else 0.0 for t in tasks]
        ax.bar([i - 0.4 + (k + 0.5) * width for i in range(len(tasks))], values, width=width, label=name)
    ax.set_xticks(range(len(tasks)), [t.split("_", 1)[1] for t in tasks], fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("mean Dice")
    ax.set_title("Medical Segmentation Decathlon: amos-zoo runs and published numbers (sources in table.md)")
    ax.legend(fontsize=7)
    _save(fig, path)


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
