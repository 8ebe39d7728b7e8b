"""Per-epoch metrics from a confusion matrix: overall accuracy, per-class F1 and IoU.

The matrix is accumulated on the device during the epoch (one ``bincount`` per
batch), so metrics cost nothing measurable next to the model; pixels with the
ignore index (segmentation pixels without a class) are left out.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


class ConfusionMatrix:
    """Counts of (true class, predicted class) pairs over an epoch."""

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self._counts: Any = None
        self.matrix = np.zeros((num_classes, num_classes), np.int64)

    def update(self, logits: Any, target: Any) -> None:
        """Add a batch: logits ``(B, K, ...)``, targets ``(B, ...)`` of class indices."""
        import torch

        k = self.num_classes
        pred = logits.argmax(dim=1).reshape(-1)
        true = target.reshape(-1)
        valid = (true >= 0) & (true < k)
        counts = torch.bincount(true[valid] * k + pred[valid], minlength=k * k)
        self._counts = counts if self._counts is None else self._counts + counts

    def compute(self) -> np.ndarray:
        if self._counts is not None:
            self.matrix = self.matrix + self._counts.cpu().numpy().reshape(
                self.num_classes, self.num_classes
            )
            self._counts = None
        return self.matrix


def scores(matrix: np.ndarray, class_names: Sequence[str]) -> dict[str, Any]:
    """Overall accuracy, per-class precision/recall/F1/IoU and their means.

    Classes with no true and no predicted sample get ``None`` scores and are left
    out of the means, so an absent class neither helps nor hurts.
    """
    m = matrix.astype(np.float64)
    total = m.sum()
    tp = np.diag(m)
    true = m.sum(axis=1)
    pred = m.sum(axis=0)
    per_class: dict[str, dict[str, float | int | None]] = {}
    f1s, ious = [], []
    for i, name in enumerate(class_names):
        if true[i] == 0 and pred[i] == 0:
            per_class[name] = {
                "support": 0,
                "precision": None,
                "recall": None,
                "f1": None,
                "iou": None,
            }
            continue
        precision = tp[i] / pred[i] if pred[i] else 0.0
        recall = tp[i] / true[i] if true[i] else 0.0
        f1 = 2 * tp[i] / (true[i] + pred[i])
        iou = tp[i] / (true[i] + pred[i] - tp[i])
        f1s.append(f1)
        ious.append(iou)
        per_class[name] = {
            "support": int(true[i]),
            "precision": float(precision),
            "recall": float(recall),
            "f1": float(f1),
            "iou": float(iou),
        }
    return {
        "accuracy": float(tp.sum() / total) if total else 0.0,
        "mean_f1": float(np.mean(f1s)) if f1s else 0.0,
        "mean_iou": float(np.mean(ious)) if ious else 0.0,
        "per_class": per_class,
    }
