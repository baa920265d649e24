"""Classification metrics of the genre task: accuracy, per-class precision/recall/F1, macro F1 and
the confusion matrix, as numbers and as the report `seqtool eval` prints."""

from __future__ import annotations

import numpy as np

__all__ = ["metrics", "format_report"]


def metrics(y_true, y_pred, labels: list[str]) -> dict:
    """Accuracy, per-class precision/recall/F1/support, macro F1 and the confusion matrix
    (rows: true class, columns: predicted class)."""
    C = len(labels)
    conf = np.zeros((C, C), np.int64)
    np.add.at(conf, (np.asarray(y_true, np.int64), np.asarray(y_pred, np.int64)), 1)
    n = int(conf.sum())
    tp = np.diag(conf).astype(np.float64)
    pred_n, true_n = conf.sum(axis=0), conf.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(pred_n > 0, tp / pred_n, 0.0)
        recall = np.where(true_n > 0, tp / true_n, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    present = true_n > 0
    per_class = {lab: {"precision": float(precision[c]), "recall": float(recall[c]), "f1": float(f1[c]),
                       "support": int(true_n[c])} for c, lab in enumerate(labels)}
    return {"accuracy": float(tp.sum() / n) if n else float("nan"), "n": n,
            "macro_f1": float(f1[present].mean()) if present.any() else float("nan"),
            "per_class": per_class, "labels": list(labels), "confusion": conf.tolist()}


def format_report(m: dict) -> str:
    """Accuracy line, per-class table, confusion matrix (rows true, columns predicted)."""
    labels = m["labels"]
    w = max(12, max(len(lab) for lab in labels) + 2)
    correct = sum(m["confusion"][i][i] for i in range(len(labels)))
    lines = [f"accuracy {m['accuracy']:.4f} ({correct}/{m['n']})  macro F1 {m['macro_f1']:.4f}", ""]
    lines.append(f"{'class':<{w}}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>10}")
    for lab in labels:
        c = m["per_class"][lab]
        lines.append(f"{lab:<{w}}{c['precision']:>10.4f}{c['recall']:>10.4f}{c['f1']:>10.4f}{c['support']:>10d}")
    lines += ["", "confusion matrix (rows: true class, columns: predicted class)"]
    cw = max(6, max(len(lab) for lab in labels) + 2)
    lines.append(f"{'':<{w}}" + "".join(f"{lab:>{cw}}" for lab in labels))
    for lab, row in zip(labels, m["confusion"]):
        lines.append(f"{lab:<{w}}" + "".join(f"{v:>{cw}d}" for v in row))
    return "\n".join(lines)
