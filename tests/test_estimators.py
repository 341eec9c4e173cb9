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
from nbmlp.estimators import ConvergenceWarning, DataConversionWarning, MLPClassifier, MLPRegressor, NotFittedError

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
    # the curve goes on, and its second part starts where the first stopped, not at a fresh net's loss
    assert clf.loss_curve_[:50] == first and len(clf.loss_curve_) == 100
    assert abs(clf.loss_curve_[50] - first[-1]) < 0.1 * (first[0] - first[-1])


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
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        clf.fit(X, y[:-1])
    with pytest.raises(ValueError, match="at least 2 classes"):
        clf.fit(X, np.zeros(150, dtype=int))
    with pytest.raises(ValueError, match="multi-label"):
        clf.fit(X, np.zeros((150, 3)))
    with pytest.raises(ValueError, match="Expected 2D array, got 1D array"):
        clf.fit(X[:, 0], y)
    X_bad = X.copy()
    X_bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        clf.fit(X_bad, y)
    clf.set_params(max_iter=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(X, y)
    with pytest.raises(ValueError, match="X has 3 features, but MLPClassifier is expecting 4"):
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


# ---------------------------------------------------------------------------
# scikit-learn's own estimator checks, and the conventions they encode
# ---------------------------------------------------------------------------


if HAS_SKLEARN:
    from sklearn.utils.estimator_checks import parametrize_with_checks

    CHECKED = [MLPClassifier(hidden_layer_sizes=(5,), max_iter=100, random_state=0),
               MLPRegressor(hidden_layer_sizes=(5,), max_iter=100, random_state=0)]

    @parametrize_with_checks(CHECKED)
    def test_scikit_learn_estimator_checks(estimator, check):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            check(estimator)


@needs_sklearn
def test_exceptions_are_scikit_learns():
    import sklearn.exceptions as sk

    assert issubclass(NotFittedError, sk.NotFittedError) and issubclass(NotFittedError, ValueError)
    assert issubclass(ConvergenceWarning, sk.ConvergenceWarning)
    assert issubclass(DataConversionWarning, sk.DataConversionWarning)
    X, y = nbmlp.load_iris()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.filterwarnings("ignore", category=sk.ConvergenceWarning)  # silences nbmlp's too
        MLPClassifier(hidden_layer_sizes=(3,), max_iter=2, random_state=0).fit(X, y)


def test_exceptions_without_scikit_learn():
    code = ("import sys; sys.modules['sklearn'] = None\n"
            "from nbmlp.estimators import NotFittedError, ConvergenceWarning, DataConversionWarning\n"
            "assert issubclass(NotFittedError, ValueError) and issubclass(NotFittedError, AttributeError)\n"
            "assert issubclass(ConvergenceWarning, UserWarning) and issubclass(DataConversionWarning, UserWarning)\n"
            "print('ok')\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_import_nbmlp_does_not_import_scikit_learn():
    code = "import sys, nbmlp; print('sklearn' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_classifier_refuses_continuous_y_and_warns_on_a_column_vector():
    X, y = nbmlp.load_iris()
    clf = MLPClassifier(hidden_layer_sizes=(3,), max_iter=3, random_state=0)
    with pytest.raises(ValueError, match="Unknown label type: continuous"):
        clf.fit(X, X[:, 0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        with pytest.warns(DataConversionWarning, match="column-vector y"):
            clf.fit(X, y[:, None])
    assert clf.predict(X).shape == (150,)


@pytest.mark.parametrize("X, error, match", [
    (np.ones((4, 2)) * 1j, ValueError, "Complex data not supported"),
    (np.array([[1.0, "a"], [2.0, 3.0]], dtype=object), ValueError, "must hold numbers"),
    (np.zeros((0, 2)), ValueError, r"0 sample\(s\)"),
    (np.zeros((4, 0)), ValueError, r"0 feature\(s\)"),
    (np.array([[1.0, np.nan], [2.0, 3.0]]), ValueError, r"Input X contains NaN\."),
    (np.array([[1.0, -np.inf], [2.0, 3.0]]), ValueError, r"Input X contains infinity"),
    (np.array([[np.inf, -np.inf], [2.0, 3.0]]), ValueError, r"Input X contains NaN|Input X contains infinity"),
    (np.array([[10**400, 1], [2, 3]], dtype=object), ValueError, "X must hold numbers: int too large"),
])
def test_bad_X_is_refused_in_scikit_learns_words(X, error, match):
    with pytest.raises(error, match=match):
        MLPRegressor(hidden_layer_sizes=(2,), max_iter=2).fit(X, np.arange(len(X), dtype=float))


def test_X_is_left_as_it_was_and_narrowing_overflow_is_refused(rng):
    X = rng.normal(size=(20, 3))
    y = X.sum(axis=1)
    before = X.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for dtype in ("float64", "float32"):
            reg = MLPRegressor(hidden_layer_sizes=(4,), max_iter=3, batch_size=8, dtype=dtype, random_state=0)
            reg.fit(X, y).partial_fit(X, y)
            reg.predict(X)
    np.testing.assert_array_equal(X, before)
    big = X.copy()
    big[3, 1] = 1e300  # finite in float64, infinite in float32
    with pytest.raises(ValueError, match=r"Input X contains a value too large for dtype\('float32'\)"):
        MLPRegressor(hidden_layer_sizes=(4,), max_iter=3, dtype="float32").fit(big, y)


def test_numeric_object_arrays_are_accepted():
    X, y = nbmlp.load_iris()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        a = MLPClassifier(hidden_layer_sizes=(3,), max_iter=5, random_state=0).fit(X.astype(object), y)
        b = MLPClassifier(hidden_layer_sizes=(3,), max_iter=5, random_state=0).fit(X, y)
    np.testing.assert_array_equal(a.predict_proba(X.astype(object)), b.predict_proba(X))


def test_sparse_input_is_refused_clearly():
    sparse = pytest.importorskip("scipy.sparse")
    X, y = nbmlp.load_iris()
    with pytest.raises(TypeError, match="sparse input is not supported"):
        MLPClassifier(hidden_layer_sizes=(3,)).fit(sparse.csr_matrix(X), y)


def test_data_frame_columns_are_remembered_and_checked():
    pd = pytest.importorskip("pandas")
    X, y = nbmlp.load_iris()
    frame = pd.DataFrame(X, columns=["sepal_l", "sepal_w", "petal_l", "petal_w"])
    clf = MLPClassifier(hidden_layer_sizes=(5,), random_state=0).fit(frame, y)
    assert clf.feature_names_in_.tolist() == list(frame.columns) and clf.n_features_in_ == 4
    assert clf.score(frame, y) > 0.9
    with pytest.raises(ValueError, match="Feature names must be in the same order"):
        clf.predict(frame[["petal_w", "petal_l", "sepal_w", "sepal_l"]])
    with pytest.warns(UserWarning, match="X does not have valid feature names"):
        clf.predict(X)


def test_warm_start_and_partial_fit_continue_the_curve_and_the_optimizer():
    """fit(20) then fit(20) with warm_start is fit(40): same curve, same weights (Adam's state carried on)."""
    X, y = nbmlp.load_iris()
    kw = dict(hidden_layer_sizes=(4,), random_state=0, tol=0.0, n_iter_no_change=1000, batch_size=150)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        once = MLPClassifier(max_iter=40, **kw).fit(X, y)
        twice = MLPClassifier(max_iter=20, warm_start=True, **kw).fit(X, y)
        twice.fit(X, y)
    assert twice.n_iter_ == 40 == len(twice.loss_curve_)
    np.testing.assert_allclose(twice.loss_curve_, once.loss_curve_, rtol=1e-12)
    np.testing.assert_allclose(twice.coefs_[0], once.coefs_[0], rtol=1e-12)

    stepwise = MLPClassifier(**kw)
    for _ in range(40):
        stepwise.partial_fit(X, y, classes=[0, 1, 2])
    np.testing.assert_allclose(stepwise.loss_curve_, once.loss_curve_, rtol=1e-12)
    assert stepwise.t_ == 40 * 150


def test_sample_weight_checks():
    X, y = nbmlp.load_iris()
    clf = MLPClassifier(hidden_layer_sizes=(3,), max_iter=3, random_state=0)
    with pytest.raises(ValueError, match="zero for every sample"):
        clf.fit(X, y, sample_weight=np.zeros(150))
    with pytest.raises(ValueError, match="one per sample"):
        clf.fit(X, y, sample_weight=np.ones(149))
    with pytest.raises(ValueError, match="1 class"):
        clf.fit(X, y, sample_weight=(y == 2).astype(float))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ones = clf.fit(X, y, sample_weight=np.ones(150)).predict_proba(X)
        plain = clf.fit(X, y).predict_proba(X)
    np.testing.assert_array_equal(ones, plain)


def test_alpha_inf_and_negative_random_state_name_the_parameter():
    X, y = nbmlp.load_iris()
    with pytest.raises(ValueError, match="alpha must be a finite number"):
        MLPClassifier(alpha=np.inf).fit(X, y)
    with pytest.raises(ValueError, match="random_state must be None, an integer >= 0"):
        MLPClassifier(random_state=-1).fit(X, y)


def test_activation_choices_come_from_nbmlps_table():
    from nbmlp.estimators import HIDDEN_ACTIVATIONS

    assert set(HIDDEN_ACTIVATIONS) == set(nbmlp.ops.HIDDEN_ACTIVATIONS) | {"logistic"}
    assert {"leaky_relu", "softplus"} <= set(HIDDEN_ACTIVATIONS)
