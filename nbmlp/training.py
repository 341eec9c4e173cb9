r"""The training loop: batches, seeded shuffling, optimizers, schedules, validation, early stopping.

One *step* is a forward pass, the loss, a backward pass and an update of every
parameter by the optimizer (:mod:`nbmlp.optim`, loop kernels); one *epoch* is
one pass over the training rows in batches of ``batch_size`` (``None``: the
whole set, i.e. full-batch gradient descent as in the note).

The loss recorded for an epoch is computed from the batches as they were seen,
*before* each batch's update:

* for a loss that is a **sum** over samples (``half_sse``, the note's
  ½ Σ_i Σ_k (t_ik - h_ik)^2) the batch losses are added, so a full-batch epoch
  records exactly L(θ) of the whole set;
* for a loss that is a **mean** over samples (``mse``, ``cross_entropy``) the
  batch losses are averaged with weights n_batch / n.

With ``weight_decay = λ > 0`` every step minimises L_batch + λ · ½ Σ_l Σ_jk w_jk^2
(weights only, biases are not decayed, as in scikit-learn) and the recorded
loss includes the λ-term.  Note that with a sum loss the effective step grows
with the batch size; mean losses do not have that coupling.

For full-batch plain gradient descent with nothing to do between epochs (no
decay, schedule, validation or callback), the whole epoch loop runs compiled in
:mod:`nbmlp.fused` when that module supports the network; otherwise the loop
below runs in Python and calls one kernel per formula.

If a loss or a gradient becomes NaN or infinite, training stops with
``FloatingPointError`` and the parameters that gave the last finite loss are
put back.
"""

from __future__ import annotations

import numbers

import numpy as np

from .optim import OPTIMIZERS, make_optimizer, update_kernels
from .validation import check_nonnegative_float, check_parameters, check_positive_float, check_positive_int

#: Losses that are sums over samples (the rest are means): decides how batch losses make an epoch loss.
SUM_LOSSES = frozenset({"half_sse"})

#: Learning-rate schedules by name; a callable ``schedule(epoch) -> lr`` is accepted too.
SCHEDULES = ("constant", "invscaling", "adaptive")

#: ``"adaptive"`` divides the rate by this factor on a plateau, and stops below ADAPTIVE_MIN_LR
#: (scikit-learn's values, ``sklearn/neural_network/_multilayer_perceptron.py``).
ADAPTIVE_FACTOR = 5.0
ADAPTIVE_MIN_LR = 1e-6


def _fused_module():
    """nbmlp.fused if it can be imported (it is optional), else None."""
    try:
        from . import fused
    except ImportError:
        return None
    return fused


def _is_one_hot(T) -> bool:
    return bool(np.all((T == 0) | (T == 1)) and np.all(T.sum(axis=1) == 1))


def split_validation(X, T, fraction: float, rng):
    """Hold out ``fraction`` of the rows (stratified by class when T is one-hot), seeded by ``rng``.

    Returns X_train, T_train, X_val, T_val; at least one row stays on each side.
    """
    n = X.shape[0]
    if n < 2:
        raise ValueError(f"a validation split needs at least 2 samples, got n = {n}")
    if _is_one_hot(T):
        labels = T.argmax(axis=1)
        held = []
        for label in np.unique(labels):
            rows = np.flatnonzero(labels == label)
            rng.shuffle(rows)
            held.extend(rows[: int(round(fraction * rows.size))])
        held = np.array(sorted(held), dtype=np.intp)
    else:
        held = np.sort(rng.permutation(n)[: int(round(fraction * n))])
    if held.size == 0:
        held = np.array([rng.integers(n)], dtype=np.intp)
    if held.size == n:
        held = held[1:]
    keep = np.ones(n, dtype=bool)
    keep[held] = False
    return X[keep], T[keep], X[held], T[held]


class Trainer:
    r"""Trains an :class:`nbmlp.MLP` in place and remembers where it stopped.

    A trainer keeps the optimizer's state, the shuffling generator and the
    stopping counters, so calling :meth:`run` again continues the same run
    (``MLPClassifier.partial_fit`` relies on this).

    Parameters
    ----------
    net : nbmlp.MLP
        The network; its ``W`` and ``b`` are updated in place.
    optimizer : {"sgd", "momentum", "nesterov", "adam"}
        The update rule (:mod:`nbmlp.optim`).  ``"sgd"`` is the note's plain
        step theta <- theta - lr dL/dtheta.
    lr : float
        Learning rate (the initial one when a schedule changes it).
    batch_size : int or None
        Rows per step; ``None`` (or anything >= n) is full-batch.
    shuffle : bool
        Shuffle the rows every epoch (mini-batch only), with ``seed``.
    seed : int or None
        Seeds the shuffling and the validation split (NumPy ``default_rng``).
    momentum : float
        mu in [0, 1) for ``"momentum"`` / ``"nesterov"``.
    beta1, beta2, epsilon : float
        Adam's constants (Kingma & Ba 2015 defaults).
    weight_decay : float
        λ >= 0 of the L2 term λ · ½ Σ w^2 added to every step's loss.
    lr_schedule : {"constant", "invscaling", "adaptive"} or callable
        ``"invscaling"``: lr / epoch^power_t (epochs count from 1; scikit-learn
        counts samples seen instead).  ``"adaptive"``: divide the rate by 5 when
        the monitored quantity has not improved by ``tol`` for more than
        ``n_iter_no_change`` epochs; stop once it falls below 1e-6.  A callable
        gets the epoch number (from 1) and returns the rate.
    power_t : float
        Exponent of ``"invscaling"``.
    validation_fraction : float
        In [0, 1): share of the rows held out of training (stratified for
        one-hot targets) to compute a validation loss each epoch.  The split
        is drawn by each call of :meth:`run`; to keep one validation set over
        several calls, pass ``validation_data`` instead.
    validation_data : (X_val, T_val) or None
        An explicit validation set instead of ``validation_fraction``.
    early_stopping : bool
        Stop when the validation score has not improved by ``tol`` for more than
        ``n_iter_no_change`` epochs, and put back the best parameters.
        Needs validation data.
    n_iter_no_change : int or None
        Patience of early stopping / convergence.  ``None`` (the default unless
        ``early_stopping``) trains for exactly the requested epochs.
    tol : float
        Smallest improvement that counts (loss down or score up).
    validation_score : callable or None
        ``score(net, X_val, T_val) -> float``, higher is better; default: minus
        the validation loss.
    compiled : "auto", True or False
        Use :mod:`nbmlp.fused` (the compiled epoch loop) when it applies and
        supports the net (``"auto"``); ``True`` makes its absence an error.
    callback : callable or None
        ``callback(epoch, loss)`` after every epoch (epochs count from 1 over
        the trainer's life).
    """

    def __init__(self, net, *, optimizer="sgd", lr=0.01, batch_size=None, shuffle=True, seed=None,
                 momentum=0.9, beta1=0.9, beta2=0.999, epsilon=1e-8, weight_decay=0.0,
                 lr_schedule="constant", power_t=0.5, validation_fraction=0.0, validation_data=None,
                 early_stopping=False, n_iter_no_change=None, tol=1e-4, validation_score=None,
                 compiled="auto", callback=None):
        self.net = net
        self.lr_init = check_positive_float(lr, "lr")
        self.lr = self.lr_init
        if batch_size is not None:
            batch_size = check_positive_int(batch_size, "batch_size")
        self.batch_size = batch_size
        if not isinstance(shuffle, (bool, np.bool_)):
            raise TypeError(f"shuffle must be True or False, got {shuffle!r}")
        self.shuffle = bool(shuffle)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)):
            raise TypeError(f"seed must be an integer or None, got {seed!r}")
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self.weight_decay = check_nonnegative_float(weight_decay, "weight_decay")
        if not (callable(lr_schedule) or (isinstance(lr_schedule, str) and lr_schedule in SCHEDULES)):
            raise ValueError(f"lr_schedule must be one of {SCHEDULES} or a callable, got {lr_schedule!r}")
        self.lr_schedule = lr_schedule
        self.power_t = check_positive_float(power_t, "power_t")
        if isinstance(validation_fraction, bool) or not isinstance(validation_fraction, numbers.Real):
            raise TypeError(f"validation_fraction must be a number in [0, 1), got {validation_fraction!r}")
        if not 0.0 <= validation_fraction < 1.0:
            raise ValueError(f"validation_fraction must be in [0, 1), got {validation_fraction!r}")
        self.validation_fraction = float(validation_fraction)
        self.validation_data = None
        if validation_data is not None:
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
                raise TypeError("validation_data must be a pair (X_val, T_val)")
            Xv = net._check_X(validation_data[0], "validation_data[0]")
            self.validation_data = (Xv, net._check_T(validation_data[1], Xv.shape[0], "validation_data[1]"))
        if not isinstance(early_stopping, (bool, np.bool_)):
            raise TypeError(f"early_stopping must be True or False, got {early_stopping!r}")
        self.early_stopping = bool(early_stopping)
        if self.early_stopping and self.validation_data is None and self.validation_fraction == 0.0:
            raise ValueError("early_stopping needs validation data: give validation_fraction > 0 or "
                             "validation_data=(X_val, T_val)")
        if n_iter_no_change is None and (self.early_stopping or lr_schedule == "adaptive"):
            n_iter_no_change = 10
        self.n_iter_no_change = None if n_iter_no_change is None else check_positive_int(
            n_iter_no_change, "n_iter_no_change")
        self.tol = check_nonnegative_float(tol, "tol")
        if validation_score is not None and not callable(validation_score):
            raise TypeError(f"validation_score must be callable or None, got {validation_score!r}")
        self.validation_score = validation_score
        if compiled not in ("auto", True, False):
            raise ValueError(f"compiled must be 'auto', True or False, got {compiled!r}")
        self.compiled = compiled
        if callback is not None and not callable(callback):
            raise TypeError(f"callback must be callable or None, got {callback!r}")
        self.callback = callback
        self.optimizer_name = optimizer
        self.optimizer = make_optimizer(optimizer, engine=net.engine, momentum=momentum, beta1=beta1,
                                        beta2=beta2, epsilon=epsilon, sgd_update=net._ops.sgd_update)
        self._update_ops = update_kernels(net.engine)

        self.loss_history: list[float] = []
        self.validation_loss_history: list[float] = []
        self.validation_score_history: list[float] = []
        self.epochs_run = 0
        self.samples_seen = 0
        self.best_loss = np.inf
        self.best_validation_score = -np.inf
        self._best_params = None
        self._no_improvement = 0
        self.converged = False
        self.stop_reason = None
        self.used_compiled_loop = False
        self.last_validation_data = None

    # -- pickling (the estimators pickle their trainer) -----------------------

    def __getstate__(self):
        state = self.__dict__.copy()
        state.pop("_update_ops")
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._update_ops = update_kernels(self.net.engine)

    # -- helpers -----------------------------------------------------------------

    @property
    def steps(self) -> int:
        """Number of parameter updates so far."""
        return self.optimizer.t

    def _can_use_fused(self, n: int) -> bool:
        if self.compiled is False:
            return False
        simple = (self.optimizer_name == "sgd" and (self.batch_size is None or self.batch_size >= n)
                  and self.weight_decay == 0.0 and self.lr_schedule == "constant" and self.callback is None
                  and self.validation_fraction == 0.0 and self.validation_data is None
                  and not self.early_stopping and self.n_iter_no_change is None)
        fused = _fused_module()
        ok = simple and fused is not None and self.net.engine.startswith("loops") and bool(fused.supports(self.net))
        if self.compiled is True and not ok:
            why = ("nbmlp.fused is not available" if fused is None else
                   "the run is not full-batch plain SGD without decay, schedule, validation or callback"
                   if not simple else "nbmlp.fused does not support this network or engine")
            raise ValueError(f"compiled=True but the compiled epoch loop cannot run: {why}")
        return ok

    def _lr_for_epoch(self, epoch: int) -> float:
        if callable(self.lr_schedule):
            lr = self.lr_schedule(epoch)
            return check_positive_float(lr, f"lr_schedule({epoch})")
        if self.lr_schedule == "invscaling":
            return self.lr_init / epoch**self.power_t
        return self.lr  # constant, or adaptive (changed on plateaus)

    def _penalty(self) -> float:
        if self.weight_decay == 0.0:
            return 0.0
        return self.weight_decay * sum(self._update_ops.l2_penalty(W.reshape(-1)) for W in self.net.W)

    def _step(self, Xb, Tb, lr, snapshot):
        """One step on a batch; returns its loss and its decay term, both before the update."""
        net = self.net
        z, h = net._forward_pass(Xb)
        data_loss = net._loss_value(z, h, Tb)
        penalty = self._penalty()
        loss = data_loss + penalty
        dW, db, _, _ = net._backward_pass(z, h, Tb, input_gradients=False)
        params = net.W + net.b
        if not (np.isfinite(loss) and all(np.isfinite(g).all() for g in dW + db)):
            if snapshot["valid"]:
                for param, saved in zip(params, snapshot["params"], strict=True):
                    param[...] = saved
            raise FloatingPointError(
                f"the loss or a gradient became non-finite at epoch {self.epochs_run + 1} (loss={loss}; "
                f"lr={lr} may be too large); the parameters of the last finite loss were restored")
        for saved, param in zip(snapshot["params"], params, strict=True):
            np.copyto(saved, param)
        snapshot["valid"] = True
        if self.weight_decay > 0.0:
            for grad, W in zip(dW, net.W, strict=True):
                self._update_ops.l2_gradient(grad.reshape(-1), W.reshape(-1), self.weight_decay)
        self.optimizer.step(params, dW + db, lr)
        return data_loss, penalty

    def _validation_scores(self, Xv, Tv):
        net = self.net
        z, h = net._forward_pass(Xv)
        val_loss = net._loss_value(z, h, Tv) + self._penalty()
        if self.validation_score is None:
            return val_loss, -val_loss
        return val_loss, float(self.validation_score(net, Xv, Tv))

    def _plateau(self, loss, score) -> bool:
        """Update the no-improvement counter (scikit-learn's rule); True when patience is exhausted."""
        if self.early_stopping:
            if score < self.best_validation_score + self.tol:
                self._no_improvement += 1
            else:
                self._no_improvement = 0
            if score > self.best_validation_score:
                self.best_validation_score = score
                self._best_params = [p.copy() for p in self.net.W + self.net.b]
        else:
            if loss > self.best_loss - self.tol:
                self._no_improvement += 1
            else:
                self._no_improvement = 0
        if loss < self.best_loss:
            self.best_loss = loss
        return self.n_iter_no_change is not None and self._no_improvement > self.n_iter_no_change

    # -- the loop ------------------------------------------------------------------

    def run(self, X, T, epochs: int) -> Trainer:
        """Train for up to ``epochs`` more epochs on (X, T); returns the trainer.

        X: (n, d0), T: (n, dL); both are checked (and copied) before any kernel runs.
        """
        net = self.net
        check_parameters(net)
        X = net._check_X(X)
        T = net._check_T(T, X.shape[0])
        epochs = check_positive_int(epochs, "epochs")
        self.converged = False
        self.stop_reason = None

        validation = self.validation_data
        if validation is None and self.validation_fraction > 0.0:
            X, T, Xv, Tv = split_validation(X, T, self.validation_fraction, self.rng)
            validation = (Xv, Tv)
        #: the (X_val, T_val) used by the last run, or None
        self.last_validation_data = validation
        n = X.shape[0]

        if self._can_use_fused(n):
            fused = _fused_module()
            losses = np.asarray(fused.fit_full_batch(net, X, T, epochs, self.lr), dtype=np.float64)
            self.used_compiled_loop = True
            self.optimizer.t += epochs
            self.epochs_run += epochs
            self.samples_seen += epochs * n
            self.loss_history.extend(losses.tolist())
            net.loss_history.extend(losses.tolist())
            if losses.size:
                self.best_loss = min(self.best_loss, float(losses.min()))
            self.stop_reason = "max_epochs"
            return self

        batch = n if self.batch_size is None else min(self.batch_size, n)
        is_sum = net.loss_name in SUM_LOSSES
        snapshot = {"params": [p.copy() for p in net.W + net.b], "valid": False}
        for _ in range(epochs):
            epoch = self.epochs_run + 1
            lr = self._lr_for_epoch(epoch)
            if batch == n:
                order = None
            else:
                order = self.rng.permutation(n) if self.shuffle else np.arange(n)
            epoch_loss = 0.0
            for start in range(0, n, batch):
                if order is None:
                    Xb, Tb = X, T
                else:
                    rows = order[start:start + batch]
                    Xb, Tb = X[rows], T[rows]
                data_loss, penalty = self._step(Xb, Tb, lr, snapshot)
                share = Xb.shape[0] / n
                epoch_loss += (data_loss if is_sum else share * data_loss) + share * penalty
            self.epochs_run = epoch
            self.samples_seen += n
            self.loss_history.append(epoch_loss)
            net.loss_history.append(epoch_loss)

            score = None
            if validation is not None:
                val_loss, score = self._validation_scores(*validation)
                self.validation_loss_history.append(val_loss)
                self.validation_score_history.append(score)
            if self.callback is not None:
                self.callback(epoch, epoch_loss)
            if self._plateau(epoch_loss, score):
                if self.lr_schedule == "adaptive" and self.lr / ADAPTIVE_FACTOR >= ADAPTIVE_MIN_LR:
                    self.lr /= ADAPTIVE_FACTOR
                    self._no_improvement = 0
                    continue
                self.converged = True
                self.stop_reason = "early_stopping" if self.early_stopping else "converged"
                break
        if self.stop_reason is None:
            self.stop_reason = "max_epochs"
        if self.early_stopping and self._best_params is not None:
            for param, best in zip(net.W + net.b, self._best_params, strict=True):
                param[...] = best
        return self


def train(net, X, T, *, epochs: int, **options) -> Trainer:
    """Train ``net`` in place on (X, T) for ``epochs`` epochs; returns the :class:`Trainer` (histories inside).

    ``options`` are those of :class:`Trainer` (``optimizer``, ``lr``, ``batch_size``, ...).

    >>> import nbmlp
    >>> X, y = nbmlp.load_iris()
    >>> net = nbmlp.MLP((4, 5, 3), seed=0)
    >>> run = train(net, X, nbmlp.one_hot(y), epochs=5, optimizer="adam", lr=0.01, batch_size=32, seed=0)
    >>> len(run.loss_history)
    5
    """
    return Trainer(net, **options).run(X, T, epochs)


__all__ = ["OPTIMIZERS", "SCHEDULES", "SUM_LOSSES", "Trainer", "split_validation", "train"]
