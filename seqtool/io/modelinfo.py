"""What a model or checkpoint file holds (``seqtool info``), read without building the model."""

from __future__ import annotations

import os

from seqtool.tasks.base import Report

__all__ = ["describe"]

_SHOW_FIRST = 8
# Config keys described in the architecture line; the rest are listed as key=value after it.
_ARCH_KEYS = ("cell", "layers", "hidden", "bidirectional", "dropout")


def _items(value) -> list | None:
    """The entries of a vocabulary/label set stored as a list or as a name -> index dict."""
    if isinstance(value, list):
        return value
    if isinstance(value, dict) and value and all(isinstance(v, int) for v in value.values()):
        return sorted(value, key=value.get)
    return None


def _collections(block) -> dict[str, list]:
    """Named lists inside a free-form vocab/labels entry (one unnamed list is called '')."""
    items = _items(block)
    if items is not None:
        return {"": items}
    if isinstance(block, dict):
        return {k: v for k, v in ((k, _items(v)) for k, v in block.items()) if v is not None}
    return {}


def _last_value(series):
    """Last loss of a list of numbers or of [step, loss] pairs."""
    if isinstance(series, list) and series:
        last = series[-1]
        return last[-1] if isinstance(last, list) and last else last
    return None


def _history_summary(history: dict) -> dict:
    if not isinstance(history, dict):
        return {}
    out = {k: history[k] for k in ("steps", "epochs", "seconds") if k in history}
    best = history.get("best_val_loss")
    if best is None and isinstance(history.get("val_loss"), list):
        values = [v[-1] if isinstance(v, list) else v for v in history["val_loss"]]
        values = [v for v in values if isinstance(v, (int, float))]
        best = min(values) if values else None
    if best is not None:
        out["best_val_loss"] = best
    if "best_step" in history:
        out["best_step"] = history["best_step"]
    last = _last_value(history.get("train_loss"))
    if last is not None:
        out["last_train_loss"] = last
    return out


def _architecture(config: dict) -> str:
    parts = []
    if "cell" in config:
        parts.append(str(config["cell"]).upper())
    if "layers" in config or "hidden" in config:
        parts.append(f"{config.get('layers', '?')} layer(s) x {config.get('hidden', '?')} hidden")
    if config.get("bidirectional"):
        parts.append("bidirectional")
    if config.get("dropout"):
        parts.append(f"dropout {config['dropout']}")
    rest = [f"{k}={v}" for k, v in config.items()
            if k not in _ARCH_KEYS and not isinstance(v, (dict, list))]
    return ", ".join(parts + rest) or "(no config)"


def _fmt_num(v) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def _summary(path, arrays: dict, meta: dict) -> dict:
    from seqtool.io.modelfile import OPTIM_PREFIX, parameter_count

    optim_arrays = sum(1 for k in arrays if k.startswith(OPTIM_PREFIX))
    sets = {"vocab": _collections(meta.get("vocab")), "labels": _collections(meta.get("labels"))}
    return {
        "path": str(path),
        "task": meta["task"],
        "format_version": meta["format_version"],
        "bytes": os.path.getsize(path),
        "config": meta.get("config") or {},
        "parameters": parameter_count(arrays),
        "arrays": len(arrays) - optim_arrays,
        "checkpoint": bool(meta.get("training_state")) or optim_arrays > 0,
        "optim_arrays": optim_arrays,
        **{kind: {name: {"size": len(items), "first": items[:_SHOW_FIRST]}
                  for name, items in found.items()} for kind, found in sets.items()},
        "history": _history_summary(meta.get("history") or {}),
    }, sets


def _text(summary: dict, sets: dict) -> str:
    s = summary
    lines = [
        f"file:          {s['path']} ({s['bytes']:,} bytes, format version {s['format_version']})",
        f"task:          {s['task']}",
        f"architecture:  {_architecture(s['config'])}",
        f"parameters:    {s['parameters']:,} in {s['arrays']} arrays",
    ]
    for kind, found in sets.items():
        for name, items in found.items():
            label = f"{kind} {name}".strip() + ":"
            shown = ", ".join(repr(x) if isinstance(x, str) else str(x) for x in items[:_SHOW_FIRST])
            more = ", ..." if len(items) > _SHOW_FIRST else ""
            lines.append(f"{label:<15}{len(items)}: {shown}{more}")
    if s["history"]:
        lines.append("history:       " + ", ".join(
            f"{k.replace('_', ' ')} {_fmt_num(v)}" for k, v in s["history"].items()))
    if s["checkpoint"]:
        lines.append(f"checkpoint:    yes (optimizer arrays: {s['optim_arrays']}; can --resume)")
    return "\n".join(lines)


def describe(path) -> Report:
    """Task, architecture, parameter count, vocabulary/labels and training history of a file."""
    from seqtool.io.modelfile import load_model

    arrays, meta = load_model(path)
    summary, sets = _summary(path, arrays, meta)
    data = {k: v for k, v in summary.items() if k != "optim_arrays"}
    return Report(data, _text(summary, sets))
