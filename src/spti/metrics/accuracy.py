"""Downstream accuracy, the first number of the DP image benchmarks (DPImageBench): train a classifier on
the labelled synthetic images, test it on real labelled images.

Two classifiers:

* ``accuracy-linear`` — a linear probe: multinomial logistic regression (L2-regularised, fitted to the
  optimum with L-BFGS, so the result does not depend on a learning-rate schedule or a seed) on the image
  embedder's features, standardised with the training set's mean and spread. Fast, CPU, numpy/scipy only.
* ``accuracy-cnn`` — a small CNN trained from scratch on the pixels (resized to 32×32 RGB by default), the
  DPImageBench protocol: three conv blocks and two dense layers, Adam, a few epochs; on the GPU when torch
  sees one. Seeded; deterministic on the CPU.

Each result comes with what it means: chance (1 / the number of test classes, and the majority-class rate
of the test set), the **ceiling** (the same classifier trained on real labelled data), per-class accuracy
and the confusion matrix. Labels are matched by name; a class that only one side has is listed and
counted as it falls (a test class absent from the synthetic set can never be predicted: its accuracy is 0).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from spti.errors import BackendError, InputError

__all__ = [
    "ACCURACY_METRICS",
    "CNN_DEFAULTS",
    "LinearProbe",
    "expand_accuracy",
    "fit_cnn",
    "fit_linear_probe",
    "score",
    "train_and_test",
]

#: The accuracy metrics; ``accuracy`` in a metrics list means both.
ACCURACY_METRICS = ("accuracy-linear", "accuracy-cnn")
#: ``threads``: torch CPU threads while training (None: torch's setting). Fewer threads than cores help on
#: a busy machine: the small CNN's ops are short, and two threads on one free core lose 10x or more.
CNN_DEFAULTS: dict[str, Any] = {"epochs": 10, "resolution": 32, "batch_size": 64, "lr": 1e-3, "threads": None}
LINEAR_L2 = 1e-3


def expand_accuracy(metrics: Sequence[str]) -> list[str]:
    """``accuracy`` -> both classifiers (in place, duplicates dropped)."""
    out: list[str] = []
    for m in metrics:
        out.extend(ACCURACY_METRICS if m == "accuracy" else (m,))
    return list(dict.fromkeys(out))


class Predictor(Protocol):
    def predict(self, x: np.ndarray) -> np.ndarray: ...


# ---------------------------------------------------------------------------------------------- linear


@dataclass
class LinearProbe:
    """A fitted multinomial logistic regression on standardised features."""

    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray  # (D, K)
    bias: np.ndarray  # (K,)
    converged: bool = True

    def logits(self, x: np.ndarray) -> np.ndarray:
        z = (np.asarray(x, dtype=np.float64) - self.mean) / self.scale
        return z @ self.weights + self.bias

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.argmax(self.logits(x), axis=1)


def fit_linear_probe(x: np.ndarray, y: np.ndarray, n_classes: int, *, l2: float = LINEAR_L2,
                     max_iter: int = 1000) -> LinearProbe:
    """Multinomial logistic regression: minimise mean cross-entropy + ``l2``/2·‖W‖² (the bias is not
    penalised) with L-BFGS from zero weights — a strictly convex problem, so the fit is a function of the
    data alone. Why the penalty: on perfectly separable features the unpenalised optimum is at infinity."""
    from scipy.optimize import minimize

    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.int64)
    n, d = x.shape
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale = np.where(scale > 1e-8, scale, 1.0)
    z = (x - mean) / scale
    onehot = np.zeros((n, n_classes))
    onehot[np.arange(n), y] = 1.0

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w = theta[: d * n_classes].reshape(d, n_classes)
        b = theta[d * n_classes :]
        logits = z @ w + b
        logits -= logits.max(axis=1, keepdims=True)
        lse = np.log(np.exp(logits).sum(axis=1))
        p = np.exp(logits - lse[:, None])
        f = float(np.mean(lse - (logits * onehot).sum(axis=1))) + 0.5 * l2 * float(np.sum(w * w))
        g = (p - onehot) / n
        gw = z.T @ g + l2 * w
        return f, np.concatenate([gw.ravel(), g.sum(axis=0)])

    res = minimize(loss, np.zeros(d * n_classes + n_classes), jac=True, method="L-BFGS-B",
                   options={"maxiter": max_iter})
    theta = res.x
    return LinearProbe(mean, scale, theta[: d * n_classes].reshape(d, n_classes), theta[d * n_classes :],
                       bool(res.success))


# ---------------------------------------------------------------------------------------------- CNN


@dataclass
class CNNClassifier:
    """A trained small CNN and the normalisation of its training set."""

    model: Any
    mean: np.ndarray
    std: np.ndarray
    device: str
    threads: int | None = None

    def predict(self, x: np.ndarray) -> np.ndarray:
        import torch

        self.model.eval()
        out = []
        before = torch.get_num_threads()
        if self.threads:
            torch.set_num_threads(int(self.threads))
        try:
            with torch.no_grad():
                for j in range(0, len(x), 512):
                    xb = _normalise(torch, x[j : j + 512], self.mean, self.std, self.device)
                    out.append(self.model(xb).argmax(dim=1).cpu().numpy())
        finally:
            torch.set_num_threads(before)
        return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def _normalise(torch: Any, x: np.ndarray, mean: np.ndarray, std: np.ndarray, device: str) -> Any:
    t = torch.from_numpy(np.ascontiguousarray(x)).to(device=device, dtype=torch.float32) / 255.0
    return (t - torch.from_numpy(mean).to(device).view(1, -1, 1, 1)) / torch.from_numpy(std).to(device).view(1, -1, 1, 1)


def _small_cnn(torch: Any, n_classes: int, resolution: int) -> Any:
    nn = torch.nn

    def block(cin: int, cout: int) -> list[Any]:
        return [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(), nn.MaxPool2d(2)]

    side = resolution // 8
    return nn.Sequential(
        *block(3, 32), *block(32, 64), *block(64, 128),
        nn.Flatten(), nn.Linear(128 * side * side, 256), nn.ReLU(), nn.Linear(256, n_classes),
    )


def fit_cnn(x: np.ndarray, y: np.ndarray, n_classes: int, *, epochs: int = CNN_DEFAULTS["epochs"],
            batch_size: int = CNN_DEFAULTS["batch_size"], lr: float = CNN_DEFAULTS["lr"], seed: int = 0,
            device: str | None = None, threads: int | None = None) -> CNNClassifier:
    """Train the small CNN from scratch on ``x`` (``(N, 3, R, R)`` uint8, R a multiple of 8) for ``epochs``
    epochs of Adam. The weights' initialisation and the batch order come from ``seed`` (the caller's global
    torch random state is left as it was); on the CPU two calls give the same network. ``threads``: torch's
    CPU threads during training, restored afterwards."""
    try:
        import torch
    except ImportError:
        raise BackendError("accuracy-cnn needs torch: pip install 'spti[hf]'") from None
    if x.ndim != 4 or x.shape[1] != 3 or x.shape[2] != x.shape[3] or x.shape[2] % 8:
        raise InputError(f"accuracy-cnn: images must be (N, 3, R, R) with R a multiple of 8, got {x.shape}")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    before = torch.get_num_threads()
    if threads is not None and threads >= 1:
        torch.set_num_threads(int(threads))
    try:
        model = _train(torch, x, y, n_classes, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, device=device)
    finally:
        torch.set_num_threads(before)
    model.threads = threads if threads is not None and threads >= 1 else None
    return model


def _train(torch: Any, x: np.ndarray, y: np.ndarray, n_classes: int, *, epochs: int, batch_size: int, lr: float,
           seed: int, device: str) -> CNNClassifier:
    pix = x.reshape(len(x), 3, -1).astype(np.float64) / 255.0
    mean = pix.mean(axis=(0, 2)).astype(np.float32)
    std = np.maximum(pix.std(axis=(0, 2)), 1e-3).astype(np.float32)
    yt = torch.from_numpy(np.asarray(y, dtype=np.int64))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        model = _small_cnn(torch, n_classes, x.shape[2]).to(device)
    gen = torch.Generator().manual_seed(int(seed) + 1)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    lossf = torch.nn.CrossEntropyLoss()
    model.train()
    for _ in range(max(1, int(epochs))):
        order = torch.randperm(len(x), generator=gen).numpy()
        for j in range(0, len(x), batch_size):
            idx = order[j : j + batch_size]
            if len(idx) < 2 and len(x) >= 2:  # batch norm needs two images; the rest comes next epoch
                continue
            xb = _normalise(torch, x[idx], mean, std, device)
            opt.zero_grad()
            loss = lossf(model(xb), yt[idx].to(device))
            loss.backward()
            opt.step()
    return CNNClassifier(model, mean, std, device)


# ---------------------------------------------------------------------------------------------- scoring


@dataclass
class _Constant:
    """The classifier of a training set with one class: it predicts that class."""

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.zeros(len(x), dtype=np.int64)


def train_and_test(fit: Callable[[np.ndarray, np.ndarray, int], Predictor], train_x: np.ndarray,
                   train_labels: Sequence[str], test_x: np.ndarray, test_labels: Sequence[str]) -> dict[str, Any]:
    """Fit ``fit`` on the training set (its own classes, by name), predict the test set and :func:`score`."""
    classes = sorted(set(train_labels))
    if not classes:
        raise InputError("accuracy: the training set has no labelled image")
    index = {c: i for i, c in enumerate(classes)}
    y = np.array([index[c] for c in train_labels], dtype=np.int64)
    model = _Constant() if len(classes) == 1 else fit(train_x, y, len(classes))
    pred = [classes[int(p)] for p in model.predict(test_x)]
    out = score(test_labels, pred, classes)
    out["n_train"] = len(train_labels)
    if isinstance(model, LinearProbe) and not model.converged:
        out["warning"] = "the linear probe's optimiser stopped before converging"
    return out


def score(y_true: Sequence[str], y_pred: Sequence[str], train_classes: Sequence[str]) -> dict[str, Any]:
    """Overall and per-class accuracy, the confusion matrix (rows: true class, columns: predicted; over
    the classes of both sides, sorted), chance, and the classes only one side has."""
    if len(y_true) != len(y_pred):
        raise InputError(f"{len(y_pred)} predictions for {len(y_true)} test images")
    if not y_true:
        raise InputError("accuracy: the test set has no labelled image")
    test_classes = sorted(set(y_true))
    labels = sorted(set(test_classes) | set(train_classes) | set(y_pred))
    pos = {c: i for i, c in enumerate(labels)}
    cm = np.zeros((len(labels), len(labels)), dtype=np.int64)
    for t, p in zip(y_true, y_pred):
        cm[pos[t], pos[p]] += 1
    n = len(y_true)
    per_n = {c: int(cm[pos[c]].sum()) for c in test_classes}
    per_class = {c: float(cm[pos[c], pos[c]] / per_n[c]) for c in test_classes}
    correct = int(np.trace(cm))
    shared = [c for c in test_classes if c in set(train_classes)]
    n_shared = sum(per_n[c] for c in shared)
    majority = min(test_classes, key=lambda c: (-per_n[c], c))
    return {
        "value": correct / n,
        "n_test": n,
        "per_class": per_class,
        "n_test_per_class": per_n,
        "accuracy_shared_classes": (sum(int(cm[pos[c], pos[c]]) for c in shared) / n_shared) if n_shared else None,
        "confusion": {"labels": labels, "matrix": cm.tolist(), "rows": "true class", "columns": "predicted class"},
        "chance": {"uniform": 1.0 / len(test_classes), "majority": per_n[majority] / n, "majority_class": majority},
        "classes_only_train": sorted(set(train_classes) - set(test_classes)),
        "classes_only_test": sorted(set(test_classes) - set(train_classes)),
    }


# ---------------------------------------------------------------------------------------------- entries

def linear_description(space: str) -> str:
    return (f"linear probe: multinomial logistic regression (L2 {LINEAR_L2:g}, L-BFGS) on standardised "
            f"{space} image-embedder features")


def cnn_description(epochs: int, resolution: int) -> str:
    return (f"small CNN trained from scratch (3 conv blocks + 2 dense layers, Adam, {epochs} epochs) on "
            f"{resolution}x{resolution} RGB pixels")


@dataclass
class AccuracyPlan:
    """Which real images an accuracy metric tests on and trains its ceiling on."""

    test: Any  # LabelledImages
    ceiling_train: Any | None  # LabelledImages, or None: no ceiling
    on_private: bool  # the test set is the run's private images

    def describe(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "source": self.test.source,
            **({"train_source": self.ceiling_train.source} if self.ceiling_train is not None else {}),
            "test": self.test.description or f"all of {self.test.source}",
            "n_test": len(self.test),
            "classes": self.test.classes(),
            "computed_on_private_data": self.on_private,
        }
        if self.ceiling_train is not None:
            d["ceiling_train"] = self.ceiling_train.description or f"all of {self.ceiling_train.source}"
            d["n_ceiling_train"] = len(self.ceiling_train)
        return d


def accuracy_plan(real: Any, real_labelled: Any, real_train: Any, *, on_private: bool, ceiling: bool,
                  seed: int) -> AccuracyPlan | str:
    """The real test set (and the ceiling's training set) of the accuracy metrics, or the reason there is
    none. ``real_labelled``: a path or a ``LabelledImages``; None takes ``real`` when it is a path (the set the
    user named). Without ``real_train`` the real set is split in two halves (:func:`stratified_halves`): the
    ceiling trains on one, and both the synthetic classifier and the ceiling are tested on the other. The
    run's private images (``run_private``) are used only with ``on_private``."""
    import os

    from spti.metrics.labelled import LabelledImages, read_labelled

    base = real_labelled
    if base is None and isinstance(real, (str, os.PathLike)):
        base = real
    if base is None:
        return ("no real labelled test set: name one (evaluate.real_labelled / real_labelled=); the run's "
                "private images are used only on request (evaluate.accuracy_on_private)")
    if not isinstance(base, LabelledImages):
        base = read_labelled(base)
    if base.run_private and not on_private:
        return "the run's private images are used for accuracy only with evaluate.accuracy_on_private: true"
    if real_train is not None:
        train = real_train if isinstance(real_train, LabelledImages) else read_labelled(real_train)
        train.description = train.description or f"all of {train.source} (real_train)"
        return AccuracyPlan(base, train if ceiling else None, base.run_private)
    train, test = base.halves(seed)
    if not len(test):
        return "the real labelled set is too small to split into a train and a test half"
    return AccuracyPlan(test, train if ceiling and len(train) else None, base.run_private)


def accuracy_entry(classifier: str, fit: Callable[[np.ndarray, np.ndarray, int], Predictor],
                   syn: tuple[np.ndarray, Sequence[str | None]], test: tuple[np.ndarray, Sequence[str]],
                   ceiling: tuple[np.ndarray, Sequence[str]] | None, plan: AccuracyPlan,
                   details: dict[str, Any]) -> dict[str, Any]:
    """The ``metrics.json`` entry of one accuracy metric: the synthetic classifier's result on the real
    test set, chance, the ceiling (the same classifier trained on real data) and the not-DP marks.
    Synthetic images without a label are left out (counted)."""
    sx, slabels = syn
    keep = [i for i, lb in enumerate(slabels) if lb is not None]
    if not keep:
        raise InputError("accuracy: none of the synthetic images has a label (release/metadata.jsonl 'label')")
    r = train_and_test(fit, sx[keep], [slabels[i] for i in keep], *test)
    entry: dict[str, Any] = {
        "value": r.pop("value"),
        "classifier": classifier,
        "definition": "share of the real test images whose class the classifier, trained on the synthetic "
        "images, predicts",
        "n_synthetic": len(keep),
        "n_real_test": r.pop("n_test"),
        "classes_only_synthetic": r.pop("classes_only_train"),
        "classes_only_real": r.pop("classes_only_test"),
        "test_set": plan.test.description or f"all of {plan.test.source}",
        **details,
    }
    r.pop("n_train", None)
    entry.update(r)
    if len(keep) < len(slabels):
        entry["n_synthetic_unlabelled"] = len(slabels) - len(keep)
    if ceiling is not None:
        c = train_and_test(fit, *ceiling, *test)
        entry["ceiling"] = {
            "value": c["value"],
            "definition": "the same classifier trained on real labelled images, tested on the same test set",
            "train_set": plan.ceiling_train.description if plan.ceiling_train is not None else None,
            "n_train": c["n_train"],
            "per_class": c["per_class"],
            "confusion": c["confusion"],
        }
    if plan.on_private:
        entry["computed_against_private_data"] = True
        entry["differentially_private"] = False
        entry["note"] = ("trained and tested on the run's PRIVATE images (asked for with accuracy_on_private) — "
                         "do not publish")
    else:
        entry["computed_against_private_data"] = False
        entry["differentially_private"] = False
        entry["note"] = ("tested on the real labelled set named for it (the ceiling is trained on real images): "
                         "not differentially private with respect to that set — treat it like the real data")
    return entry
