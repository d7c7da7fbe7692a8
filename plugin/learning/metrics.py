"""Accuracy figures for the model card (numpy only)."""
import numpy as np


def confusion_matrix(truth, pred, n_classes):
    """truth/pred: integer arrays of class indices 0..n-1 (entries < 0 in truth are ignored)."""
    truth = np.asarray(truth).ravel()
    pred = np.asarray(pred).ravel()
    keep = (truth >= 0) & (truth < n_classes)
    idx = truth[keep].astype(np.int64) * n_classes + pred[keep].astype(np.int64)
    return np.bincount(idx, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def scores(cm, class_names):
    """OA, Cohen's kappa, per-class F1/IoU, macro F1 and mIoU (over classes present in truth)."""
    cm = cm.astype(np.float64)
    total = cm.sum()
    tp = np.diag(cm)
    truth = cm.sum(axis=1)
    pred = cm.sum(axis=0)
    oa = tp.sum() / total if total else 0.0
    pe = (truth * pred).sum() / (total * total) if total else 0.0
    kappa = (oa - pe) / (1 - pe) if pe < 1 else 0.0
    f1 = np.where(truth + pred > 0, 2 * tp / np.maximum(truth + pred, 1e-12), 0.0)
    iou = np.where(truth + pred - tp > 0, tp / np.maximum(truth + pred - tp, 1e-12), 0.0)
    present = truth > 0
    return {
        "overall_accuracy": round(float(oa), 4),
        "kappa": round(float(kappa), 4),
        "macro_f1": round(float(f1[present].mean()) if present.any() else 0.0, 4),
        "miou": round(float(iou[present].mean()) if present.any() else 0.0, 4),
        "per_class_f1": {name: (round(float(f1[i]), 4) if present[i] else None)
                         for i, name in enumerate(class_names)},
        "cells": int(total),
    }
