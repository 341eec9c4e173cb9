r"""scikit-learn-style estimators: :class:`MLPClassifier` and :class:`MLPRegressor`.

They follow scikit-learn's conventions (``sklearn/neural_network/_multilayer_perceptron.py``): the
same constructor parameters and names, ``fit`` / ``partial_fit`` / ``predict`` / ``score``,
``get_params`` / ``set_params`` read from the ``__init__`` signature, fitted attributes ending in
``_`` (``coefs_``, ``intercepts_``, ``loss_curve_``, ...).  So they work inside scikit-learn's
``Pipeline``, ``clone``, ``GridSearchCV`` and ``cross_val_score`` -- yet scikit-learn is not needed
to import or use them.  With scikit-learn installed they pass its ``check_estimator`` in full, and
raise and warn with its classes (:mod:`nbmlp.exceptions`: ``NotFittedError``, ``ConvergenceWarning``,
``DataConversionWarning`` subclass scikit-learn's); the input checks use its wordings ("Expected 2D
array", "X has 3 features, but ... is expecting 4 features as input", "The feature names should
match those that were passed during fit", ...).  scikit-learn is imported only when one of those
classes is first needed, or by ``__sklearn_tags__``, which only scikit-learn itself calls.

``fit`` and ``partial_fit`` take ``sample_weight`` (a weight of 2 is the sample given twice: each
batch's mean loss weighs its samples, and the L2 term is scaled by the batch's total weight), and a
data frame's column names become ``feature_names_in_``.  ``warm_start=True`` and ``partial_fit``
continue the fitted network, its ``loss_curve_`` and its optimizer's state.

Underneath, an estimator is an :class:`nbmlp.MLP` (``net_``) trained by :mod:`nbmlp.training` with
the loop kernels: inputs go in unchanged (``h0 = X``, not the note's sigma(X)); the classifier has a
softmax output with the fused cross-entropy loss (also for two classes, where scikit-learn uses one
logistic unit), the regressor an identity output with the mean squared error.

Defaults that differ from scikit-learn's, and why:

* ``activation="tanh"`` (scikit-learn: ``"relu"``).  The networks people build with nbmlp are
  small; a relu layer of a few units fed unscaled inputs often has units that never activate
  ("dead" relus), and a 5-unit relu net on Iris then fails on some seeds.  tanh does not.
* ``learning_rate_init=0.01`` (scikit-learn: 0.001) and ``max_iter=1000`` (scikit-learn: 200).
  With Adam at 0.001 a small network on a small data set is still far from converged after 200
  epochs; at 0.01 it converges (by ``tol``) within a few hundred.  On Iris,
  ``MLPClassifier(hidden_layer_sizes=(5,))`` then reaches about 97 % cross-validated accuracy.
"""

from __future__ import annotations

import inspect
import numbers
import sys
import warnings

import numpy as np

from . import distributed, exceptions, ops
from .engines import get_engine
from .network import MLP
from .training import Trainer
from .validation import all_finite, check_dtype, usable_in_place

#: ``batch_size="auto"`` means min(AUTO_BATCH_SIZE, n_samples), as in scikit-learn.
AUTO_BATCH_SIZE = 200

#: scikit-learn's name for an activation -> nbmlp's.
ACTIVATION_SYNONYMS = {"logistic": "sigmoid"}

#: The hidden-layer activations an estimator accepts: those of nbmlp's table of operations, and
#: scikit-learn's synonyms.
HIDDEN_ACTIVATIONS = ops.HIDDEN_ACTIVATIONS + tuple(ACTIVATION_SYNONYMS)


def __getattr__(name):
    # NotFittedError, ConvergenceWarning, DataConversionWarning live in nbmlp.exceptions (built on first use).
    if name in exceptions.CLASSES:
        return getattr(exceptions, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _check_random_state(random_state):
    """An integer seed from ``random_state`` (None, an int >= 0, or a NumPy RandomState / Generator)."""
    if random_state is None:
        return int(np.random.default_rng().integers(2**63 - 1))
    if isinstance(random_state, numbers.Integral) and not isinstance(random_state, bool):
        if random_state < 0:
            raise ValueError(f"random_state must be None, an integer >= 0, a RandomState or a Generator, "
                             f"got {random_state!r}")
        return int(random_state)
    if isinstance(random_state, np.random.RandomState):
        return int(random_state.randint(np.iinfo(np.int32).max))
    if isinstance(random_state, np.random.Generator):
        return int(random_state.integers(2**63 - 1))
    raise TypeError(f"random_state must be None, an integer >= 0, a RandomState or a Generator, "
                    f"got {random_state!r}")


# ---------------------------------------------------------------------------
# Input checks, worded as scikit-learn's (its estimator checks look for these messages)
# ---------------------------------------------------------------------------


def _is_sparse(X) -> bool:
    """scipy.sparse matrices and arrays (without importing scipy)."""
    return hasattr(X, "toarray") and hasattr(X, "nnz")


def _feature_names(X):
    """The column names of a data frame if they are all strings, else None (scikit-learn's rule)."""
    columns = getattr(X, "columns", None)
    if columns is None or isinstance(X, np.ndarray):
        return None
    names = np.asarray(list(columns), dtype=object)
    if names.size == 0:
        return None
    types = sorted({type(v).__qualname__ for v in names})
    if len(types) > 1 and "str" in types:
        raise TypeError(f"Feature names are only supported if all input features have string names, but X has "
                        f"{types} as column name types; convert them all to strings "
                        "(X.columns = X.columns.astype(str)) or drop the names")
    return names if types == ["str"] else None


def _list_names(names, limit=5):
    lines = [f"- {name}\n" for name in names[:limit]]
    return "".join(lines) + ("- ...\n" if len(names) > limit else "")


def _check_feature_names(estimator, X, *, reset):
    """Set ``feature_names_in_`` (reset) or check X's column names against it."""
    names = _feature_names(X)
    if reset:
        if names is not None:
            estimator.feature_names_in_ = names
        elif hasattr(estimator, "feature_names_in_"):
            del estimator.feature_names_in_
        return
    fitted = getattr(estimator, "feature_names_in_", None)
    if fitted is None and names is None:
        return
    if fitted is None:
        warnings.warn(f"X has feature names, but {type(estimator).__name__} was fitted without feature names",
                      UserWarning, stacklevel=4)
        return
    if names is None:
        warnings.warn(f"X does not have valid feature names, but {type(estimator).__name__} was fitted with "
                      "feature names", UserWarning, stacklevel=4)
        return
    if len(fitted) == len(names) and np.all(fitted == names):
        return
    message = "The feature names should match those that were passed during fit.\n"
    unexpected = sorted(set(names) - set(fitted))
    missing = sorted(set(fitted) - set(names))
    if unexpected:
        message += "Feature names unseen at fit time:\n" + _list_names(unexpected)
    if missing:
        message += "Feature names seen at fit time, yet now missing:\n" + _list_names(missing)
    if not unexpected and not missing:
        message += "Feature names must be in the same order as they were in fit.\n"
    raise ValueError(message)


def _check_finite(arr, name):
    if arr.dtype.kind == "f" and not all_finite(arr):
        if np.isnan(arr).any():
            raise ValueError(f"Input {name} contains NaN.")
        raise ValueError(f"Input {name} contains infinity or a value too large for {arr.dtype!r}.")


def _as_float_array(X, name, dtype):
    """X as a 2-D finite array of ``dtype`` (numbers, numeric object arrays, data frames); sparse refused.

    X itself when :func:`nbmlp.validation.usable_in_place` (a C-contiguous, writable ndarray of
    ``dtype``); otherwise a converted copy.
    """
    if X is None:
        raise ValueError(f"Expected 2D array, got None instead: {name} is required")
    if _is_sparse(X):
        raise TypeError(f"sparse input is not supported: {name} is a {type(X).__name__}; "
                        f"pass a dense array ({name}.toarray())")
    try:
        arr = np.asarray(X)
    except Exception as exc:  # ragged nested lists and the like
        raise ValueError(f"{name} must be a 2-D array of numbers: {exc}") from exc
    if arr.dtype.kind == "c":
        raise ValueError(f"Complex data not supported: {name} has dtype {arr.dtype}")
    if arr.dtype.kind == "O":
        try:
            arr = arr.astype(np.float64)
        except TypeError as exc:  # e.g. a dict in a cell
            raise TypeError(f"{name} must hold numbers: {exc}") from exc
        except (ValueError, OverflowError) as exc:  # a string that is not a number, an int beyond float64
            raise ValueError(f"{name} must hold numbers: {exc}") from exc
    elif arr.dtype.kind not in "biuf":
        raise ValueError(f"{name} must hold numbers, got dtype {arr.dtype}")
    if arr.ndim == 0:
        raise ValueError(f"Expected 2D array, got scalar array instead: {name}={arr!r}")
    if arr.ndim == 1:
        raise ValueError(f"Expected 2D array, got 1D array instead: {name} has shape {arr.shape}. Reshape your "
                         "data either using array.reshape(-1, 1) if your data has a single feature or "
                         "array.reshape(1, -1) if it contains a single sample.")
    if arr.ndim > 2:
        raise ValueError(f"Found array with dim {arr.ndim}, while dim <= 2 is required: {name} has shape "
                         f"{arr.shape}")
    if arr.shape[0] == 0:
        raise ValueError(f"Found array with 0 sample(s) (shape={arr.shape}) while a minimum of 1 is required.")
    if arr.shape[1] == 0:
        raise ValueError(f"Found array with 0 feature(s) (shape={arr.shape}) while a minimum of 1 is required.")
    _check_finite(arr, name)
    if usable_in_place(arr, dtype):
        return arr  # only read: training and prediction copy what they keep
    with np.errstate(over="ignore"):
        out = np.array(arr, dtype=dtype, order="C")
    if arr.dtype.kind == "f" and arr.dtype.itemsize > out.dtype.itemsize and not all_finite(out):
        raise ValueError(f"Input {name} contains a value too large for {np.dtype(dtype)!r}.")
    return out


def _check_y_present(estimator, y):
    if y is None:
        raise ValueError(f"{type(estimator).__name__} requires y to be passed, but the target y is None")
    if _is_sparse(y):
        raise TypeError("sparse input is not supported: y must be a dense array")


def _column_or_1d(y):
    """A column vector (n, 1) becomes (n,) with scikit-learn's DataConversionWarning."""
    if y.ndim == 2 and y.shape[1] == 1:
        warnings.warn("A column-vector y was passed when a 1d array was expected. Please change the shape of y "
                      "to (n_samples,), for example using ravel().", exceptions.DataConversionWarning,
                      stacklevel=4)
        return y[:, 0]
    return y


def _check_lengths(X, y):
    if y.shape[0] != X.shape[0]:
        raise ValueError(f"Found input variables with inconsistent numbers of samples: X has {X.shape[0]}, "
                         f"y has {y.shape[0]}")


def _check_sample_weight(sample_weight, n):
    """None, or a float64 copy of non-negative finite weights, one per sample, not all zero."""
    if sample_weight is None:
        return None
    if _is_sparse(sample_weight):
        raise TypeError("sparse input is not supported: sample_weight must be a dense 1-D array")
    sw = np.asarray(sample_weight)
    if sw.ndim == 0:
        sw = np.full(n, sw)
    if sw.dtype.kind not in "biuf" or sw.ndim != 1 or sw.shape[0] != n:
        raise ValueError(f"sample_weight must be a 1-D array of {n} numbers (one per sample), got shape "
                         f"{sw.shape} and dtype {sw.dtype}")
    sw = sw.astype(np.float64)
    if not np.isfinite(sw).all() or (sw < 0).any():
        raise ValueError("sample_weight must hold finite numbers >= 0")
    if not (sw > 0).any():
        raise ValueError("sample_weight is zero for every sample: at least one weight must be positive")
    return sw


class _BaseMLP:
    """What the classifier and the regressor share; not public."""

    _estimator_type = None  # scikit-learn < 1.6 reads this

    def __init__(self, hidden_layer_sizes=(100,), activation="tanh", *, solver="adam", alpha=0.0001,
                 batch_size="auto", learning_rate="constant", learning_rate_init=0.01, power_t=0.5,
                 max_iter=1000, shuffle=True, random_state=None, tol=1e-4, verbose=False, warm_start=False,
                 momentum=0.9, nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1,
                 beta_1=0.9, beta_2=0.999, epsilon=1e-8, n_iter_no_change=10, dtype="float64", engine="loops"):
        # scikit-learn's rule: store every argument unchanged; check it in fit.
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.dtype = dtype
        self.engine = engine

    # -- scikit-learn's estimator protocol, without scikit-learn -----------------

    @classmethod
    def _get_param_names(cls):
        signature = inspect.signature(cls.__init__)
        return sorted(p.name for p in signature.parameters.values()
                      if p.name != "self" and p.kind != p.VAR_KEYWORD)

    def get_params(self, deep=True):
        """The constructor parameters and their values (``deep`` is accepted for compatibility)."""
        return {name: getattr(self, name) for name in self._get_param_names()}

    def set_params(self, **params):
        """Set constructor parameters; returns the estimator."""
        valid = self._get_param_names()
        for name, value in params.items():
            if name not in valid:
                raise ValueError(f"Invalid parameter {name!r} for estimator {type(self).__name__}; "
                                 f"valid parameters are {valid}")
            setattr(self, name, value)
        return self

    def __repr__(self):
        defaults = {p.name: p.default for p in inspect.signature(type(self).__init__).parameters.values()}
        changed = []
        for name in self._get_param_names():
            value = getattr(self, name)
            default = defaults.get(name, inspect.Parameter.empty)
            try:
                same = bool(value == default) if not isinstance(value, np.ndarray) else False
            except Exception:
                same = False
            if not same:
                changed.append(f"{name}={value!r}")
        return f"{type(self).__name__}({', '.join(changed)})"

    def __setstate__(self, state):
        self.__dict__.update(state)
        net = state.get("net_")
        if net is not None:
            # joblib.load(..., mmap_mode="r") hands back read-only memory maps; the net's kernels take plain
            # writable arrays, so the estimator keeps its own copies.
            net.W = [np.array(w) for w in net.W]
            net.b = [np.array(b) for b in net.b]
            if isinstance(getattr(net, "optimizer_state", None), dict):
                net.optimizer_state = {k: np.array(v) if isinstance(v, np.ndarray) else v
                                       for k, v in net.optimizer_state.items()}

    def __sklearn_is_fitted__(self):
        return hasattr(self, "net_")

    def _sklearn_tags(self, target=None, **kind_tags):
        """scikit-learn >= 1.6 reads an estimator's kind and needs from these tags (only it calls this)."""
        from sklearn.utils import InputTags, Tags, TargetTags

        target_tags = TargetTags(required=True, **(target or {}))
        return Tags(estimator_type=self._estimator_type, target_tags=target_tags, input_tags=InputTags(),
                    **kind_tags)

    # -- checks --------------------------------------------------------------------

    def _validate_params(self):
        """Check every hyper-parameter before any kernel runs; returns the hidden sizes as a tuple."""
        sizes = self.hidden_layer_sizes
        if isinstance(sizes, numbers.Integral) and not isinstance(sizes, bool):
            sizes = (sizes,)
        if isinstance(sizes, (str, bytes)) or not hasattr(sizes, "__iter__"):
            raise TypeError(f"hidden_layer_sizes must be an int or a sequence of ints, got {sizes!r}")
        sizes = tuple(sizes)
        for d in sizes:
            if isinstance(d, bool) or not isinstance(d, numbers.Integral) or d < 1:
                raise ValueError(f"hidden_layer_sizes must hold positive integers, got {self.hidden_layer_sizes!r}")
        if not isinstance(self.activation, str) or self.activation not in HIDDEN_ACTIVATIONS:
            raise ValueError(f"activation must be one of {HIDDEN_ACTIVATIONS}, got {self.activation!r}")
        if self.solver not in ("sgd", "adam"):
            hint = " (L-BFGS is not implemented in nbmlp)" if self.solver == "lbfgs" else ""
            raise ValueError(f"solver must be 'sgd' or 'adam'{hint}, got {self.solver!r}")
        if self.learning_rate not in ("constant", "invscaling", "adaptive"):
            raise ValueError(f"learning_rate must be 'constant', 'invscaling' or 'adaptive', "
                             f"got {self.learning_rate!r}")
        if not (self.batch_size == "auto" or (isinstance(self.batch_size, numbers.Integral)
                                              and not isinstance(self.batch_size, bool) and self.batch_size >= 1)):
            raise ValueError(f"batch_size must be 'auto' or a positive integer, got {self.batch_size!r}")
        for name in ("alpha", "tol"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value < np.inf:
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        for name in ("max_iter", "n_iter_no_change"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if isinstance(self.validation_fraction, bool) or not isinstance(self.validation_fraction, numbers.Real) \
                or not 0.0 < self.validation_fraction < 1.0:
            raise ValueError(f"validation_fraction must be in (0, 1), got {self.validation_fraction!r}")
        for name in ("shuffle", "verbose", "warm_start", "nesterovs_momentum", "early_stopping"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise TypeError(f"{name} must be True or False, got {getattr(self, name)!r}")
        for name in ("learning_rate_init", "power_t", "epsilon"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (0 < value < np.inf):
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
        for name in ("momentum", "beta_1", "beta_2"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value < 1:
                raise ValueError(f"{name} must be in [0, 1), got {value!r}")
        check_dtype(self.dtype)
        get_engine(self.engine)
        return sizes

    def _optimizer_options(self):
        if self.solver == "adam":
            return {"optimizer": "adam", "beta1": self.beta_1, "beta2": self.beta_2, "epsilon": self.epsilon,
                    "lr_schedule": "constant"}
        if self.momentum == 0:
            return {"optimizer": "sgd", "lr_schedule": self.learning_rate}
        return {"optimizer": "nesterov" if self.nesterovs_momentum else "momentum", "momentum": self.momentum,
                "lr_schedule": self.learning_rate}

    # -- data --------------------------------------------------------------------

    def _validate_X(self, X, *, reset):
        """X checked and converted to the estimator's dtype; sets (reset) or checks the feature names and count."""
        _check_feature_names(self, X, reset=reset)
        X = _as_float_array(X, "X", self.dtype)
        if not reset and X.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {X.shape[1]} features, but {type(self).__name__} is expecting "
                             f"{self.n_features_in_} features as input.")
        return X

    def _continues(self, incremental) -> bool:
        """True when this fit continues the fitted network (partial_fit, or fit with warm_start)."""
        return hasattr(self, "net_") and (incremental or self.warm_start)

    # -- training --------------------------------------------------------------------

    def _new_net(self, hidden, n_in, n_out, seed):
        activation = ACTIVATION_SYNONYMS.get(self.activation, self.activation)
        return MLP((n_in, *hidden, n_out), seed=seed, dtype=self.dtype, engine=self.engine, input_sigmoid=False,
                   activation=activation, output_activation=self._output_activation, loss=self._loss)

    def _new_trainer(self, net, n_samples, seed, incremental, mean_weight):
        batch = min(AUTO_BATCH_SIZE, n_samples) if self.batch_size == "auto" else min(self.batch_size, n_samples)
        # scikit-learn adds alpha/2 ||W||^2 / n_batch to each batch's mean loss: lambda = alpha / n_batch, with
        # n_batch counted in units of weight (so that a weight of 2 is the same as a repeated row).
        early = self.early_stopping and not incremental
        return Trainer(net, lr=self.learning_rate_init, batch_size=batch, shuffle=self.shuffle, seed=seed,
                       weight_decay=self.alpha / (batch * mean_weight), power_t=self.power_t,
                       validation_fraction=self.validation_fraction if early else 0.0, early_stopping=early,
                       n_iter_no_change=self.n_iter_no_change, tol=self.tol, **self._optimizer_options())

    def _report(self, epoch, loss):
        print(f"Iteration {epoch}, loss = {loss:.8f}", file=sys.stdout)

    def _score_net(self, net, Xv, Tv):
        raise NotImplementedError

    def _fit(self, X, T, *, incremental, sample_weight=None):
        """Train on checked (X, T) for max_iter epochs (one for partial_fit), continuing a fitted net if asked."""
        hidden = self._validate_params()
        seed = _check_random_state(self.random_state)
        n, d = X.shape
        reuse = self._continues(incremental)
        if reuse and self.net_.sizes[-1] != T.shape[1]:
            raise ValueError(f"y has {T.shape[1]} outputs, but {type(self).__name__} was fitted with "
                             f"{self.net_.sizes[-1]}")
        net = self.net_ if reuse else self._new_net(hidden, d, T.shape[1], seed)
        early = self.early_stopping and not incremental
        trainer = getattr(self, "_trainer", None) if reuse else None
        if trainer is None or trainer.early_stopping != early:
            mean_weight = 1.0 if sample_weight is None else float(sample_weight.mean())
            trainer = self._new_trainer(net, n, seed, incremental, mean_weight)
        if not reuse:  # only now that every option has been accepted
            self.net_ = net
            self.n_features_in_ = d
            self.n_outputs_ = T.shape[1]
            self.n_layers_ = len(hidden) + 2
            self.out_activation_ = self._output_activation
            self.t_ = 0
        self._trainer = trainer
        epochs = 1 if incremental else self.max_iter
        before = len(net.loss_history)
        # Equal weights are the unweighted problem (mean losses): only unequal ones go to the trainer.
        weights = {} if sample_weight is None or np.all(sample_weight == sample_weight[0]) \
            else {"sample_weight": sample_weight}
        trainer.callback = self._report if self.verbose else None
        trainer.validation_score = self._score_net if early else None
        try:
            if distributed.is_dask_collection(X):
                distributed.run_trainer(trainer, X, T, epochs)
            else:
                trainer.run(X, T, epochs, **weights)
        finally:
            trainer.callback = None  # keep the estimator picklable and free of references
            trainer.validation_score = None
        ran = len(net.loss_history) - before
        self.loss_curve_ = list(net.loss_history)
        self.loss_ = self.loss_curve_[-1]
        self.n_iter_ = len(self.loss_curve_)
        self.t_ += ran * n
        if early:
            scores = getattr(net, "validation_score_history", None) or trainer.validation_score_history
            self.validation_scores_ = list(scores)
            self.best_validation_score_ = max(self.validation_scores_)
            self.best_loss_ = None
        else:
            self.validation_scores_ = None
            self.best_validation_score_ = None
            self.best_loss_ = min(self.loss_curve_)
        if not incremental and ran == epochs:
            warnings.warn(f"{type(self).__name__}: max_iter={self.max_iter} epochs ran and the optimization "
                          f"has not converged yet (tol={self.tol}).", exceptions.ConvergenceWarning, stacklevel=3)
        return self

    # -- fitted attributes ----------------------------------------------------------

    def _check_fitted(self):
        if not hasattr(self, "net_"):
            raise exceptions.NotFittedError(f"This {type(self).__name__} instance is not fitted yet. Call 'fit' "
                                            "with appropriate arguments before using this estimator.")

    @property
    def coefs_(self):
        """``coefs_[l]`` is W_{l+1}, shape (d_l, d_{l+1}): the weights into layer l + 1 (the net's own arrays)."""
        self._check_fitted()
        return self.net_.W

    @property
    def intercepts_(self):
        """``intercepts_[l]`` is b_{l+1}, shape (d_{l+1},)."""
        self._check_fitted()
        return self.net_.b

    def _forward(self, X):
        self._check_fitted()
        return self.net_.forward(self._validate_X(X, reset=False))


class MLPClassifier(_BaseMLP):
    r"""Multi-layer perceptron classifier: softmax output, cross-entropy loss, loop kernels underneath.

    Parameters are scikit-learn's (``sklearn.neural_network.MLPClassifier``), with the defaults
    explained in :mod:`nbmlp.estimators` where they differ:

    hidden_layer_sizes : tuple of int, default (100,)
        Widths of the hidden layers.
    activation : str, default "tanh"
        Hidden-layer activation: one of :data:`HIDDEN_ACTIVATIONS` (``nbmlp.ops.HIDDEN_ACTIVATIONS``,
        and "logistic", scikit-learn's name for "sigmoid").  scikit-learn's default is "relu"; see the module docstring.
    solver : {"sgd", "adam"}, default "adam"
        "sgd" uses ``momentum`` (Nesterov's if ``nesterovs_momentum``); momentum=0 is plain SGD.
        "lbfgs" is not available.
    alpha : float, default 1e-4
        L2 penalty; each batch adds alpha / (2 n_batch) Σ w^2 to its mean loss, as in scikit-learn.
    batch_size : int or "auto", default "auto"
        "auto" is min(200, n_samples).
    learning_rate : {"constant", "invscaling", "adaptive"}, default "constant"
        Schedule for solver="sgd" (see :class:`nbmlp.training.Trainer`; "invscaling" counts epochs).
    learning_rate_init : float, default 0.01
        Step size (scikit-learn: 0.001; see the module docstring).
    power_t : float, default 0.5
    max_iter : int, default 1000
        Epochs (scikit-learn: 200; see the module docstring).
    shuffle : bool, default True
    random_state : int, RandomState, Generator or None
        Seeds the weights, the shuffling and the validation split.
    tol : float, default 1e-4
    verbose : bool, default False
        Print the loss after every epoch.
    warm_start : bool, default False
        Continue from the current weights, loss curve and optimizer state when ``fit`` is called again.
    momentum : float, default 0.9
    nesterovs_momentum : bool, default True
    early_stopping : bool, default False
        Hold out ``validation_fraction`` of the rows (stratified) and stop when the validation
        accuracy has not improved by ``tol`` for ``n_iter_no_change`` epochs; the best weights are kept.
    validation_fraction : float, default 0.1
    beta_1, beta_2, epsilon : float
        Adam's constants (0.9, 0.999, 1e-8).
    n_iter_no_change : int, default 10
    dtype : "float64" or "float32", default "float64"
        nbmlp addition: the precision of the network.
    engine : str, default "loops"
        nbmlp addition: which kernels compute (see ``nbmlp.ENGINES``).

    Attributes
    ----------
    classes_, n_features_in_, feature_names_in_ (fitted on a data frame with string column
    names), n_outputs_, n_layers_, out_activation_ ("softmax"), coefs_,
    intercepts_, loss_, loss_curve_, best_loss_, validation_scores_, best_validation_score_,
    n_iter_, t_ (samples seen), net_ (the :class:`nbmlp.MLP`).

    Examples
    --------
    >>> import nbmlp
    >>> X, y = nbmlp.load_iris()
    >>> clf = nbmlp.MLPClassifier(hidden_layer_sizes=(5,), random_state=0).fit(X, y)
    >>> clf.predict(X[:3]).tolist(), clf.predict_proba(X[:1]).shape
    ([0, 0, 0], (1, 3))
    """

    _estimator_type = "classifier"
    _output_activation = "softmax"
    _loss = "cross_entropy"

    def __sklearn_tags__(self):
        from sklearn.utils import ClassifierTags

        return self._sklearn_tags(classifier_tags=ClassifierTags())

    def _labels(self, y, n):
        """y checked as n class labels (numbers or strings), 1-D."""
        _check_y_present(self, y)
        y = _column_or_1d(np.asarray(y))
        if y.dtype.kind == "c":
            raise ValueError(f"Complex data not supported: y has dtype {y.dtype}")
        if y.ndim != 1:
            raise ValueError(f"y should be a 1d array of class labels, got an array of shape {y.shape} instead "
                             "(multi-label and multi-output targets are not supported)")
        if y.shape[0] != n:
            raise ValueError(f"Found input variables with inconsistent numbers of samples: X has {n}, "
                             f"y has {y.shape[0]}")
        if y.dtype.kind == "f":
            _check_finite(y, "y")
            if np.any(y != np.round(y)):
                raise ValueError("Unknown label type: continuous. MLPClassifier needs class labels (integers or "
                                 "strings); MLPRegressor fits continuous targets")
        elif y.dtype.kind == "O":
            if not all(isinstance(v, str) for v in y):
                raise ValueError("Unknown label type: y has dtype object with values that are not strings; "
                                 "pass labels as a numeric or a string array")
        elif y.dtype.kind not in "biuUS":
            raise ValueError(f"Unknown label type: y has dtype {y.dtype}")
        return y

    def _encode(self, y, classes):
        """One-hot targets for labels y in ``classes`` (sorted)."""
        index = np.clip(np.searchsorted(classes, y), 0, classes.size - 1)
        unknown = classes[index] != y
        if np.any(unknown):
            raise ValueError(f"y contains labels not in classes_: {np.unique(y[unknown]).tolist()}")
        T = np.zeros((y.size, classes.size), dtype=self.dtype)
        T[np.arange(y.size), index] = 1.0
        return T

    def fit(self, X, y, sample_weight=None):
        """Train on X (n_samples, n_features) and class labels y (n_samples,); returns self.

        ``sample_weight`` (n_samples,), optional: each sample's weight in the loss (a weight of 2 counts
        as the sample given twice).
        """
        if distributed.is_dask_collection(X) or distributed.is_dask_collection(y):
            distributed.refuse_sample_weight(sample_weight)
            self._validate_params()
            return self._fit(*distributed.classifier_targets(self, X, y), incremental=False)
        self._validate_params()
        continues = self._continues(False)
        X = self._validate_X(X, reset=not continues)
        y = self._labels(y, X.shape[0])
        sample_weight = _check_sample_weight(sample_weight, X.shape[0])
        classes = self.classes_ if continues else np.unique(y)
        weighted = classes if sample_weight is None else np.unique(y[sample_weight > 0])
        if weighted.size < 2:
            raise ValueError(f"y has {weighted.size} class ({weighted.tolist()}) with a positive sample weight; "
                             "a classifier needs at least 2 classes")
        T = self._encode(y, classes)
        self.classes_ = classes
        return self._fit(X, T, incremental=False, sample_weight=sample_weight)

    def partial_fit(self, X, y, classes=None, sample_weight=None):
        """One epoch over (X, y), continuing the loss curve and the optimizer's state.

        ``classes`` (every label y may ever hold) is required on the first call.
        """
        self._validate_params()
        first = not hasattr(self, "net_")
        if first and classes is None:
            raise ValueError("classes must be passed on the first call to partial_fit")
        X = self._validate_X(X, reset=first)
        y = self._labels(y, X.shape[0])
        sample_weight = _check_sample_weight(sample_weight, X.shape[0])
        if classes is not None:
            classes = np.unique(np.asarray(classes))
            if not first and not np.array_equal(classes, self.classes_):
                raise ValueError(f"classes={classes.tolist()} is not the same as on the first call "
                                 f"({self.classes_.tolist()})")
            if classes.size < 2:
                raise ValueError(f"classes has {classes.size} class; a classifier needs at least 2 classes")
        T = self._encode(y, self.classes_ if not first else classes)
        if first:
            self.classes_ = classes
        return self._fit(X, T, incremental=True, sample_weight=sample_weight)

    def predict_proba(self, X):
        """Class probabilities, shape (n_samples, n_classes), columns in the order of ``classes_``."""
        if distributed.is_dask_collection(X):
            return distributed.predict_blocks(self.predict_proba, X)
        return self._forward(X)

    def predict_log_proba(self, X):
        """log of :meth:`predict_proba`."""
        with np.errstate(divide="ignore"):
            return np.log(self.predict_proba(X))

    def predict(self, X):
        """The most probable class of every row of X."""
        if distributed.is_dask_collection(X):
            return distributed.predict_blocks(self.predict, X)
        self._check_fitted()
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]

    def score(self, X, y, sample_weight=None):
        """Mean accuracy on (X, y) (weighted by ``sample_weight`` if given)."""
        if distributed.is_dask_collection(X):
            return distributed.accuracy(self, X, y, sample_weight)
        correct = (self.predict(X) == np.asarray(y)).astype(np.float64)
        return float(np.average(correct, weights=sample_weight))

    def _score_net(self, net, Xv, Tv):
        return float(np.mean(net.forward(Xv).argmax(axis=1) == Tv.argmax(axis=1)))


class MLPRegressor(_BaseMLP):
    r"""Multi-layer perceptron regressor: identity output, mean squared error, loop kernels underneath.

    Same parameters as :class:`MLPClassifier` (and as ``sklearn.neural_network.MLPRegressor``).
    The loss is L = 1/(n d) Σ_i Σ_k (y_ik - yhat_ik)^2, a mean over samples and outputs;
    scikit-learn's squared error is half of that, so ``loss_curve_`` values are twice
    scikit-learn's (the minimiser is the same).  With ``early_stopping`` the validation score
    is R^2.  ``predict`` returns shape (n_samples,) when ``y`` was 1-D.

    Examples
    --------
    >>> import numpy as np, nbmlp
    >>> X = np.linspace(-1, 1, 50)[:, None]
    >>> reg = nbmlp.MLPRegressor(hidden_layer_sizes=(8,), random_state=0, n_iter_no_change=50)
    >>> reg.fit(X, X[:, 0] ** 2).predict(X).shape
    (50,)
    >>> round(reg.score(X, X[:, 0] ** 2), 2)
    0.97
    """

    _estimator_type = "regressor"
    _output_activation = "identity"
    _loss = "mse"

    def __sklearn_tags__(self):
        from sklearn.utils import RegressorTags

        return self._sklearn_tags(regressor_tags=RegressorTags(), target={"multi_output": True,
                                                                           "single_output": True})

    def _targets(self, y, n):
        """y checked as numeric targets; returns T (n, n_outputs) and whether y was 1-D."""
        _check_y_present(self, y)
        y = _column_or_1d(np.asarray(y))
        if y.dtype.kind == "c":
            raise ValueError(f"Complex data not supported: y has dtype {y.dtype}")
        if y.dtype.kind == "O":
            try:
                y = y.astype(np.float64)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"y must hold numbers: {exc}") from exc
        elif y.dtype.kind not in "biuf":
            raise ValueError(f"y must hold numbers, got dtype {y.dtype}")
        if y.ndim not in (1, 2) or y.shape[0] != n or y.size == 0:
            raise ValueError(f"y must have shape (n_samples,) or (n_samples, n_outputs) with n_samples = {n}, "
                             f"got {y.shape}")
        _check_finite(y.astype(np.float64), "y")
        return y.reshape(n, -1).astype(self.dtype), y.ndim == 1

    def fit(self, X, y, sample_weight=None):
        """Train on X (n_samples, n_features) and targets y (n_samples,) or (n_samples, n_outputs); returns self.

        ``sample_weight`` (n_samples,), optional: each sample's weight in the loss.
        """
        if distributed.is_dask_collection(X) or distributed.is_dask_collection(y):
            distributed.refuse_sample_weight(sample_weight)
            self._validate_params()
            X, T, one_d = distributed.regressor_targets(X, y)
            self._fit(X, T, incremental=False)
            self._y_1d = one_d
            return self
        self._validate_params()
        X = self._validate_X(X, reset=not self._continues(False))
        T, one_d = self._targets(y, X.shape[0])
        sample_weight = _check_sample_weight(sample_weight, X.shape[0])
        self._fit(X, T, incremental=False, sample_weight=sample_weight)
        self._y_1d = one_d
        return self

    def partial_fit(self, X, y, sample_weight=None):
        """One epoch over (X, y), continuing the loss curve and the optimizer's state."""
        self._validate_params()
        first = not hasattr(self, "net_")
        X = self._validate_X(X, reset=first)
        T, one_d = self._targets(y, X.shape[0])
        sample_weight = _check_sample_weight(sample_weight, X.shape[0])
        self._fit(X, T, incremental=True, sample_weight=sample_weight)
        if first:
            self._y_1d = one_d
        return self

    def predict(self, X):
        """The network's outputs for X: (n_samples,) if fitted on 1-D y, else (n_samples, n_outputs)."""
        if distributed.is_dask_collection(X):
            return distributed.predict_blocks(self.predict, X)
        out = self._forward(X)
        return out[:, 0] if self._y_1d else out

    @staticmethod
    def _r2(y, pred, sample_weight=None):
        y = np.asarray(y, dtype=np.float64).reshape(len(y), -1)
        pred = np.asarray(pred, dtype=np.float64).reshape(len(pred), -1)
        w = np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
        mean = np.average(y, axis=0, weights=w)
        ss_res = np.sum(w[:, None] * (y - pred) ** 2, axis=0)
        ss_tot = np.sum(w[:, None] * (y - mean) ** 2, axis=0)
        with np.errstate(divide="ignore", invalid="ignore"):
            r2 = np.where(ss_tot > 0, 1.0 - ss_res / np.where(ss_tot > 0, ss_tot, 1.0),
                          np.where(ss_res > 0, 0.0, 1.0))
        return float(np.mean(r2))

    def score(self, X, y, sample_weight=None):
        """Coefficient of determination R^2, averaged uniformly over outputs (as scikit-learn)."""
        if distributed.is_dask_collection(X):
            return distributed.r2(self, X, y, sample_weight)
        return self._r2(y, self.predict(X), sample_weight)

    def _score_net(self, net, Xv, Tv):
        return self._r2(Tv, net.forward(Xv))


__all__ = ["MLPClassifier", "MLPRegressor", *exceptions.CLASSES]
