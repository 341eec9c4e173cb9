"""MLPClassifier / MLPRegressor: scikit-learn's conventions, with and without scikit-learn installed."""

from __future__ import annotations

import importlib.util
import pickle
import subprocess
import sys
import warnings

import numpy as np
import pytest

import nbmlp
from nbmlp.estimators import ConvergenceWarning, MLPClassifier, MLPRegressor, NotFittedError

HAS_SKLEARN = importlib.util.find_spec("sklearn") is not None
needs_sklearn = pytest.mark.skipif(not HAS_SKLEARN, reason="scikit-learn not installed")

#: The issue's acceptance bar for MLPClassifier(hidden_layer_sizes=(5,)) on Iris.
IRIS_MIN_ACCURACY = 0.95


def _stratified_folds(y, k, seed):
    rng = np.random.default_rng(seed)
    folds = [[] for _ in range(k)]
    for label in np.unique(y):
        rows = np.flatnonzero(y == label)
        rng.shuffle(rows)
        for m, row in enumerate(rows):
            folds[m % k].append(row)
    return [np.array(f) for f in folds]


@pytest.mark.parametrize("seed", range(5))
def test_default_classifier_reaches_95_percent_on_held_out_iris(seed):
    """5-fold cross-validation, every sample held out once; only hidden_layer_sizes and the seed are set."""
    X, y = nbmlp.load_iris()
    correct = 0
    for test in _stratified_folds(y, 5, seed):
        train = np.setdiff1d(np.arange(len(y)), test)
        clf = MLPClassifier(hidden_layer_sizes=(5,), random_state=seed).fit(X[train], y[train])
        correct += int(np.sum(clf.predict(X[test]) == y[test]))
    assert correct / len(y) >= IRIS_MIN_ACCURACY


def test_default_classifier_on_random_held_out_splits():
    """Mean accuracy over ten stratified 80/20 splits (a 30-sample test set moves in steps of 3.3 %)."""
    X, y = nbmlp.load_iris()
    scores = []
    for seed in range(10):
        X_train, X_test, y_train, y_test = nbmlp.train_test_split(X, y, test_fraction=0.2, seed=seed)
        clf = MLPClassifier(hidden_layer_sizes=(5,), random_state=seed).fit(X_train, y_train)
        scores.append(clf.score(X_test, y_test))
    assert np.mean(scores) >= IRIS_MIN_ACCURACY
    assert min(scores) >= 0.85


def test_fitted_attributes_follow_scikit_learn():
    X, y = nbmlp.load_iris()
    clf = MLPClassifier(hidden_layer_sizes=(5, 4), random_state=0, max_iter=30)
    with pytest.warns(ConvergenceWarning, match="max_iter=30"):
        clf.fit(X, y)
    assert [w.shape for w in clf.coefs_] == [(4, 5), (5, 4), (4, 3)]
    assert [b.shape for b in clf.intercepts_] == [(5,), (4,), (3,)]
    assert clf.coefs_[0] is clf.net_.W[0]
    assert clf.n_layers_ == 4 and clf.n_outputs_ == 3 and clf.n_features_in_ == 4
    assert clf.out_activation_ == "softmax" and clf.classes_.tolist() == [0, 1, 2]
    assert clf.n_iter_ == 30 == len(clf.loss_curve_) and clf.loss_ == clf.loss_curve_[-1]
    assert clf.best_loss_ == min(clf.loss_curve_) and clf.validation_scores_ is None
    assert clf.t_ == 30 * 150
    proba = clf.predict_proba(X)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-12)
    np.testing.assert_array_equal(clf.predict(X), proba.argmax(axis=1))
    np.testing.assert_allclose(clf.predict_log_proba(X[:5]), np.log(proba[:5]))


def test_string_labels_binary_and_reproducibility():
    X, y = nbmlp.make_moons(120, noise=0.1, seed=0)
    names = np.array(["lower", "upper"])[1 - y]
    a = MLPClassifier(hidden_layer_sizes=(10,), random_state=3).fit(X, names)
    b = MLPClassifier(hidden_layer_sizes=(10,), random_state=3).fit(X, names)
    assert a.classes_.tolist() == ["lower", "upper"]
    assert set(a.predict(X)) <= {"lower", "upper"}
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))
    assert a.score(X, names) >= 0.85  # two moons with 10 tanh units: a curved boundary


def test_early_stopping_keeps_the_best_validation_score():
    X, y = nbmlp.datasets.load_digits()
    X = X[:400] / 16.0
    y = y[:400]
    clf = MLPClassifier(hidden_layer_sizes=(16,), early_stopping=True, random_state=0, max_iter=300)
    clf.fit(X, y)
    assert clf.best_loss_ is None
    assert len(clf.validation_scores_) == clf.n_iter_ < 300
    assert clf.best_validation_score_ == max(clf.validation_scores_)
    assert 0.0 <= clf.best_validation_score_ <= 1.0


def test_partial_fit_needs_classes_then_runs_one_epoch_each_call():
    X, y = nbmlp.load_iris()
    clf = MLPClassifier(hidden_layer_sizes=(5,), random_state=0)
    with pytest.raises(ValueError, match="classes must be passed"):
        clf.partial_fit(X, y)
    for call in range(1, 6):
        clf.partial_fit(X, y, classes=[0, 1, 2])
        assert clf.n_iter_ == call and len(clf.loss_curve_) == call
    assert clf.loss_curve_[-1] < clf.loss_curve_[0]
    with pytest.raises(ValueError, match="not the same"):
        clf.partial_fit(X, y, classes=[0, 1])
    with pytest.raises(ValueError, match="labels not in classes_"):
        clf.partial_fit(X, np.full(150, 7))


def test_warm_start_continues_from_the_fitted_weights():
    X, y = nbmlp.load_iris()
    clf = MLPClassifier(hidden_layer_sizes=(5,), random_state=0, warm_start=True, max_iter=50)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(X, y)
        first = list(clf.loss_curve_)
        clf.fit(X, y)
    # the second fit starts where the first stopped, not at a fresh net's loss
    assert abs(clf.loss_curve_[0] - first[-1]) < 0.1 * (first[0] - first[-1])


def test_regressor_one_and_two_outputs():
    rng = np.random.default_rng(0)
    X = rng.uniform(-1, 1, size=(80, 2))
    y = X[:, 0] - 0.5 * X[:, 1]
    reg = MLPRegressor(hidden_layer_sizes=(6,), random_state=0, solver="sgd", learning_rate_init=0.05,
                       n_iter_no_change=30).fit(X, y)
    assert reg.predict(X).shape == (80,) and reg.out_activation_ == "identity"
    assert reg.score(X, y) > 0.95  # a linear target
    Y = np.column_stack([y, 2 * y])
    reg2 = MLPRegressor(hidden_layer_sizes=(6,), random_state=0, n_iter_no_change=30).fit(X, Y)
    assert reg2.predict(X).shape == (80, 2) and reg2.n_outputs_ == 2


def test_regressor_score_is_r2_by_its_definition():
    reg = MLPRegressor(hidden_layer_sizes=(3,), random_state=0, max_iter=5)
    X = np.array([[0.0], [1.0], [2.0], [3.0]])
    y = np.array([1.0, 3.0, 2.0, 6.0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        reg.fit(X, y)
    pred = reg.predict(X)
    mean = 3.0  # (1 + 3 + 2 + 6) / 4
    expected = 1.0 - np.sum((y - pred) ** 2) / np.sum((y - mean) ** 2)
    assert reg.score(X, y) == pytest.approx(expected, rel=1e-12)


def test_get_params_set_params_and_repr():
    clf = MLPClassifier(hidden_layer_sizes=(7,), alpha=0.5)
    params = clf.get_params()
    assert params["hidden_layer_sizes"] == (7,) and params["alpha"] == 0.5 and params["solver"] == "adam"
    assert clf.set_params(alpha=0.1, max_iter=3) is clf and clf.alpha == 0.1 and clf.max_iter == 3
    with pytest.raises(ValueError, match="Invalid parameter 'alpah'"):
        clf.set_params(alpah=1.0)
    assert repr(clf) == "MLPClassifier(alpha=0.1, hidden_layer_sizes=(7,), max_iter=3)"
    assert type(clf)(**clf.get_params()).get_params() == clf.get_params()


@needs_sklearn
def test_parameter_names_are_scikit_learns():
    from sklearn.neural_network import MLPClassifier as SkClassifier
    from sklearn.neural_network import MLPRegressor as SkRegressor

    for ours, theirs in ((MLPClassifier, SkClassifier), (MLPRegressor, SkRegressor)):
        # max_fun belongs to L-BFGS, which nbmlp does not have; dtype and engine are nbmlp's
        assert set(ours().get_params()) == (set(theirs().get_params()) - {"max_fun", "loss"}) | {"dtype", "engine"}


@pytest.mark.parametrize(
    "params, error, match",
    [
        ({"solver": "lbfgs"}, ValueError, "L-BFGS is not implemented"),
        ({"activation": "swish"}, ValueError, "activation"),
        ({"hidden_layer_sizes": (5, 0)}, ValueError, "hidden_layer_sizes"),
        ({"hidden_layer_sizes": "5"}, TypeError, "hidden_layer_sizes"),
        ({"batch_size": 0}, ValueError, "batch_size"),
        ({"learning_rate": "cosine"}, ValueError, "learning_rate"),
        ({"alpha": -1.0}, ValueError, "alpha"),
        ({"max_iter": 0}, ValueError, "max_iter"),
        ({"validation_fraction": 1.0}, ValueError, "validation_fraction"),
        ({"shuffle": "yes"}, TypeError, "shuffle"),
        ({"dtype": "float16"}, TypeError, "dtype"),
        ({"engine": "gpu"}, ValueError, "engine"),
        ({"random_state": "seed"}, TypeError, "random_state"),
        ({"learning_rate_init": 0.0}, ValueError, "learning_rate_init"),
        ({"momentum": 1.5, "solver": "sgd"}, ValueError, "momentum"),
    ],
)
def test_bad_parameters_are_refused_at_fit(params, error, match):
    X, y = nbmlp.load_iris()
    clf = MLPClassifier(**params)  # stored unchanged, as scikit-learn requires
    with pytest.raises(error, match=match):
        clf.fit(X, y)
    assert not hasattr(clf, "net_")


def test_bad_data_and_unfitted_use():
    X, y = nbmlp.load_iris()
    clf = MLPClassifier(hidden_layer_sizes=(3,))
    with pytest.raises(NotFittedError, match="not fitted"):
        clf.predict(X)
    with pytest.raises(ValueError, match="not fitted"):  # NotFittedError is a ValueError
        _ = clf.coefs_
    with pytest.raises(ValueError, match="same number of samples"):
        clf.fit(X, y[:-1])
    with pytest.raises(ValueError, match="at least 2 classes"):
        clf.fit(X, np.zeros(150, dtype=int))
    with pytest.raises(ValueError, match="multi-label"):
        clf.fit(X, np.zeros((150, 3)))
    with pytest.raises(ValueError, match="2-D"):
        clf.fit(X[:, 0], y)
    X_bad = X.copy()
    X_bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        clf.fit(X_bad, y)
    clf.set_params(max_iter=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(X, y)
    with pytest.raises(ValueError, match="3 features"):
        clf.predict(X[:, :3])


def test_pickle_round_trip_and_training_after_it():
    X, y = nbmlp.load_iris()
    clf = MLPClassifier(hidden_layer_sizes=(5,), random_state=0, verbose=False).fit(X, y)
    clone = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(clone.predict_proba(X), clf.predict_proba(X))
    clone.partial_fit(X, y)
    assert clone.n_iter_ >= 1


def test_verbose_prints_the_loss(capsys):
    X, y = nbmlp.load_iris()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        MLPClassifier(hidden_layer_sizes=(3,), max_iter=2, verbose=True, random_state=0).fit(X, y)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and lines[0].startswith("Iteration 1, loss = ")


def test_estimators_work_without_scikit_learn():
    """A fresh interpreter where importing sklearn fails: nbmlp and its estimators still work."""
    code = (
        "import sys; sys.modules['sklearn'] = None\n"
        "import nbmlp, pickle\n"
        "X, y = nbmlp.load_iris()\n"
        "clf = nbmlp.MLPClassifier(hidden_layer_sizes=(5,), random_state=0).fit(X, y)\n"
        "assert clf.score(X, y) > 0.9\n"
        "clf2 = type(clf)(**clf.get_params())\n"
        "pickle.loads(pickle.dumps(clf)).predict(X)\n"
        "print('ok', 'sklearn' in sys.modules and sys.modules['sklearn'] is None)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok True"


@needs_sklearn
def test_clone_pipeline_cross_val_score_and_grid_search():
    from sklearn.base import clone, is_classifier, is_regressor
    from sklearn.model_selection import GridSearchCV, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.utils.validation import check_is_fitted

    X, y = nbmlp.load_iris()
    clf = MLPClassifier(hidden_layer_sizes=(5,), random_state=0)
    assert is_classifier(clf) and is_regressor(MLPRegressor()) and not is_classifier(MLPRegressor())
    copy = clone(clf)
    assert copy is not clf and copy.get_params() == clf.get_params()
    pipe = make_pipeline(StandardScaler(), clf)
    scores = cross_val_score(pipe, X, y, cv=5)
    assert scores.mean() >= IRIS_MIN_ACCURACY
    pipe.fit(X, y)
    check_is_fitted(pipe[-1])
    grid = GridSearchCV(MLPClassifier(random_state=0, max_iter=200, tol=1e-3),
                        {"hidden_layer_sizes": [(3,), (6,)]}, cv=3).fit(X, y)
    assert grid.best_params_["hidden_layer_sizes"] in [(3,), (6,)]


@needs_sklearn
def test_regressor_in_cross_val_score_uses_r2():
    from sklearn.metrics import r2_score
    from sklearn.model_selection import cross_val_score

    rng = np.random.default_rng(1)
    X = rng.uniform(-1, 1, size=(60, 1))
    y = np.sin(2 * X[:, 0])
    reg = MLPRegressor(hidden_layer_sizes=(8,), random_state=0, n_iter_no_change=50)
    scores = cross_val_score(reg, X, y, cv=3)
    assert scores.mean() > 0.8
    reg.fit(X, y)
    assert reg.score(X, y) == pytest.approx(r2_score(y, reg.predict(X)), rel=1e-12)
