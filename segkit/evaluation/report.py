"""Scores out: ``metrics.json`` (the fixture's layout, null never NaN) and a table for the terminal."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

# As the references return them: pycocotools and panopticapi fractions, detectron2's semantic percent.
UNITS = {"instance_segm": "fraction", "instance_bbox": "fraction", "panoptic": "fraction", "semantic": "percent"}


def metrics_document(sections: dict) -> dict:
    """The sections (``instance_segm``, ``instance_bbox``, ``panoptic``, ``semantic``) plus ``units``."""
    unknown = [name for name in sections if name not in UNITS]
    if unknown:
        raise ValueError(f"unknown metrics section {unknown[0]!r}")
    document = {name: _no_nan(section) for name, section in sections.items()}
    document["units"] = {name: UNITS[name] for name in sections}
    return document


def _no_nan(value):
    if isinstance(value, dict):
        return {str(k): _no_nan(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_no_nan(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item"):  # numpy scalars
        return _no_nan(value.item())
    return value


def write_metrics(path, sections: dict) -> Path:
    """Write ``metrics.json`` atomically; returns its path."""
    path = Path(path)
    text = json.dumps(metrics_document(sections), indent=1, allow_nan=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def _number(value, scale: float = 1.0, digits: int = 1) -> str:
    return "-" if value is None else f"{value * scale:.{digits}f}"


def _table(rows) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(width) if i == 0 else cell.rjust(width)
                      for i, (cell, width) in enumerate(zip(row, widths))).rstrip() for row in rows]


def _instance_lines(name: str, section: dict) -> list[str]:
    stats = section["stats"]
    lines = [f"{name} (x100)"]
    lines += _table([list(stats), [_number(v, 100) for v in stats.values()]])
    per_category = section["per_category_AP"]
    if len(per_category) > 1:
        lines.append("")
        lines += _table([["category", "AP"]] + [[k, _number(v, 100)] for k, v in per_category.items()])
    return lines


def _panoptic_lines(section: dict) -> list[str]:
    lines = ["panoptic (x100)"]
    rows = [["", "PQ", "SQ", "RQ", "n"]]
    for group in ("All", "Things", "Stuff"):
        g = section[group]
        rows.append([group, _number(g["pq"], 100), _number(g["sq"], 100), _number(g["rq"], 100), str(g["n"])])
    lines += _table(rows)
    lines.append("")
    rows = [["category", "PQ", "SQ", "RQ", "TP", "FP", "FN"]]
    for category_id, c in section["per_class"].items():
        rows.append([f"{category_id} {c.get('name') or ''}".strip(), _number(c["pq"], 100), _number(c["sq"], 100),
                     _number(c["rq"], 100), str(c["tp"]), str(c["fp"]), str(c["fn"])])
    return lines + _table(rows)


def _semantic_lines(section: dict) -> list[str]:
    lines = ["semantic (%)"]
    lines += _table([["mIoU", "fwIoU", "mACC", "pACC"],
                     [_number(section[k]) for k in ("mIoU", "fwIoU", "mACC", "pACC")]])
    lines.append("")
    rows = [["class", "IoU", "ACC"]] + [[name, _number(iou), _number(section["ACC"][name])]
                                        for name, iou in section["IoU"].items()]
    return lines + _table(rows)


def render_table(sections: dict) -> str:
    """A plain-text summary of the sections ('-' marks an undefined value)."""
    blocks = []
    for name, section in sections.items():
        if name.startswith("instance_"):
            label = "mask AP" if name == "instance_segm" else "box AP"
            blocks.append(_instance_lines(label, section))
        elif name == "panoptic":
            blocks.append(_panoptic_lines(section))
        elif name == "semantic":
            blocks.append(_semantic_lines(section))
    return "\n\n".join("\n".join(block) for block in blocks)
