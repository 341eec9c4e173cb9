"""Data sets that ship with nbmlp (no download at run time) and small helpers.

Every loader returns ``X`` (float64, n x d) and ``y`` (int64 class labels, n).
Sources and licences: ``nbmlp/data/README.md``.
"""

from __future__ import annotations

import csv
from importlib import resources

import numpy as np


def _read_bundled_csv(filename: str):
    with resources.files("nbmlp.data").joinpath(filename).open("r", encoding="ascii") as f:
        rows = list(csv.reader(f))
    table = np.array(rows[1:], dtype=np.float64)
    return table[:, :-1], table[:, -1].astype(np.int64)


def load_iris():
    """Fisher's Iris: X (150 x 4: sepal length, sepal width, petal length, petal width, in cm), y in {0, 1, 2}.

    The note's network, 4 inputs -> 5 hidden -> 3 outputs, fits this table exactly.
    """
    return _read_bundled_csv("iris.csv")


IRIS_CLASSES = ("setosa", "versicolor", "virginica")


def one_hot(y, n_classes: int | None = None, dtype="float64") -> np.ndarray:
    """T with t_ik = 1 if y_i == k else 0 (n x n_classes), for integer labels 0..n_classes-1."""
    y = np.asarray(y)
    if y.ndim != 1 or y.dtype.kind not in "iu":
        raise TypeError(f"y must be a 1-D array of integer class labels, got dtype {y.dtype} and shape {y.shape}")
    if y.size and y.min() < 0:
        raise ValueError("y must hold labels >= 0")
    n_classes = int(y.max()) + 1 if n_classes is None else int(n_classes)
    if y.size and y.max() >= n_classes:
        raise ValueError(f"label {int(y.max())} does not fit n_classes={n_classes}")
    T = np.zeros((y.size, n_classes), dtype=dtype)
    T[np.arange(y.size), y] = 1.0
    return T


def train_test_split(X, y, test_fraction=0.2, seed=0):
    """Stratified split: each class contributes ``test_fraction`` of its rows to the test part.

    Returns X_train, X_test, y_train, y_test (copies; inputs untouched).
    """
    X = np.asarray(X)
    y = np.asarray(y)
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    rng = np.random.default_rng(seed)
    test = []
    for label in np.unique(y):
        rows = np.flatnonzero(y == label)
        rng.shuffle(rows)
        test.extend(rows[: int(round(test_fraction * rows.size))])
    is_test = np.zeros(y.size, dtype=bool)
    is_test[test] = True
    return X[~is_test].copy(), X[is_test].copy(), y[~is_test].copy(), y[is_test].copy()


def standardize(X_train, *others):
    """Scale every column to mean 0, standard deviation 1 using the training rows' statistics."""
    mean = X_train.mean(axis=0)
    std = X_train.std(axis=0)
    std[std == 0.0] = 1.0
    return tuple((A - mean) / std for A in (X_train, *others))
