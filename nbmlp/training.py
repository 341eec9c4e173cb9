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

Every run trains in the compiled loop of :mod:`nbmlp.compiled` (``compiled=True``,
the default), in chunks of about 75 ms between which Python records the
histories, calls the callback and looks for Ctrl-C.  ``compiled=False`` runs
the same steps in Python, one engine kernel per formula: with
``engine="numpy"`` that is the vectorized reference twin the tests hold the
compiled loop against (1e-10 in float64).

The run's state -- optimizer moments, step and epoch counts, the current rate
and stopping counters, the shuffling generator -- is kept on the net as
``net.optimizer_state`` (plain data), so a new Trainer (e.g. a second
``MLP.fit``) with the same optimizer continues where the last one stopped.

If a loss, a gradient or the parameters after an update become NaN or
infinite, training stops with ``FloatingPointError`` and the parameters that
gave the last finite loss are put back.  On Ctrl-C, ``KeyboardInterrupt``
reaches the caller within a chunk; every finished epoch is kept (parameters
and optimizer state are those after the last finished step).
"""

from __future__ import annotations

import json
import math
import numbers
import signal
import threading

import numpy as np

from . import compiled as engine
from . import fused
from .compiled import SUM_LOSSES
from .optim import OPTIMIZERS, make_optimizer, update_kernels
from .validation import (
    check_nonnegative_float,
    check_parameters,
    check_positive_float,
    check_positive_int,
    check_sample_weight,
)

#: Learning-rate schedules by name; a callable ``schedule(epoch) -> lr`` is accepted too.
SCHEDULES = ("constant", "invscaling", "adaptive")

#: Values of ``history``: record every epoch, or none (an int k records every k-th epoch).
HISTORY_MODES = ("epoch", "none")

#: The slots of net.optimizer_state's moment vectors, by optimizer.
STATE_ARRAYS = {"sgd": (), "momentum": ("velocity",), "nesterov": ("velocity",),
                "adam": ("first_moment", "second_moment")}


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


def _check_net(net):
    if not all(hasattr(net, a) for a in ("W", "b", "sizes", "activations", "loss_name", "dtype", "check_X", "ops")):
        raise TypeError(f"net must be an nbmlp.MLP, got {type(net).__name__} ({net!r:.60})")
    return net


class _DeferredInterrupt:
    """Ctrl-C during compiled chunks: remembered by a handler, raised by the loop between chunks."""

    def __init__(self):
        self.hit = False
        self._old = None

    def install(self):
        if self._old is not None or threading.current_thread() is not threading.main_thread():
            return
        if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
            return  # someone else handles SIGINT (or ignores it): leave it to them

        def handler(signum, frame):
            self.hit = True

        self._old = signal.signal(signal.SIGINT, handler)

    def uninstall(self):
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)
            self._old = None


class Trainer:
    r"""Trains an :class:`nbmlp.MLP` in place and remembers where it stopped.

    A trainer keeps the stopping counters and the shuffling generator, and
    writes the optimizer's state to ``net.optimizer_state`` after every run,
    so calling :meth:`run` again -- or a new trainer with the same optimizer --
    continues the same run (``MLPClassifier.partial_fit`` relies on this).

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
        A net trained before with the same seed continues that generator.
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
        gets the epoch number (from 1) and returns the rate; it is called for
        the epochs of a chunk before the chunk runs.
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
        the validation loss.  A Python score makes every chunk one epoch long.
    compiled : bool
        ``True`` (default): the compiled loop of :mod:`nbmlp.compiled`.
        ``False``: the same steps in Python over the net's engine (the
        reference twin with ``engine="numpy"``).
    callback : callable or None
        ``callback(epoch, loss)`` for every finished epoch (epochs count from 1
        over the net's training), called after each compiled chunk for the
        epochs it finished -- so a callback costs nothing inside the loop.
    history : "epoch", "none" or int k
        What goes to ``loss_history`` and the validation histories (here and on
        the net): every epoch, nothing, or every k-th epoch.  Memory does not
        grow with the number of epochs otherwise.
    """

    def __init__(self, net, *, optimizer="sgd", lr=0.01, batch_size=None, shuffle=True, seed=None,
                 momentum=0.9, beta1=0.9, beta2=0.999, epsilon=1e-8, weight_decay=0.0,
                 lr_schedule="constant", power_t=0.5, validation_fraction=0.0, validation_data=None,
                 early_stopping=False, n_iter_no_change=None, tol=1e-4, validation_score=None,
                 compiled=True, callback=None, history="epoch"):
        self.net = _check_net(net)
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
        if seed is not None and seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed!r}")
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
            Xv = net.check_X(validation_data[0], "validation_data[0]")
            self.validation_data = (Xv, net.check_T(validation_data[1], Xv.shape[0], "validation_data[1]"))
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
        if compiled not in (True, False, "auto"):
            raise ValueError(f"compiled must be True or False, got {compiled!r}")
        self.compiled = compiled is not False
        if callback is not None and not callable(callback):
            raise TypeError(f"callback must be callable or None, got {callback!r}")
        self.callback = callback
        if not (history in HISTORY_MODES or (isinstance(history, numbers.Integral) and not isinstance(history, bool)
                                             and history >= 1)):
            raise ValueError(f"history must be one of {HISTORY_MODES} or a positive integer k, got {history!r}")
        self.history = history
        self.optimizer_name = optimizer
        self.optimizer = make_optimizer(optimizer, engine=net.engine, momentum=momentum, beta1=beta1,
                                        beta2=beta2, epsilon=epsilon, sgd_update=net.ops.sgd_update)
        self._update_ops = update_kernels(net.engine)
        self._flat_moments = {}  # state name -> (optimizer attribute, its list, the list's arrays, the flat vector)

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
        state["_flat_moments"] = {}  # a copy's state arrays no longer view the flat vectors
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._update_ops = update_kernels(self.net.engine)
        self.__dict__.setdefault("_flat_moments", {})

    # -- state on the net ----------------------------------------------------------

    @property
    def steps(self) -> int:
        """Number of parameter updates so far."""
        return self.optimizer.t

    def _param_sizes(self):
        """Sizes of the parameters in the flat layout W_1, b_1, W_2, b_2, ... of the state vectors."""
        return [a.size for W, b in zip(self.net.W, self.net.b, strict=True) for a in (W, b)]

    def _viewed(self, name):
        """The flat vector that the optimizer's arrays of state ``name`` are still the views of, or None."""
        known = self._flat_moments.get(name)
        if known is None:
            return None
        attribute, parts, made, flat = known
        if getattr(self.optimizer, attribute, None) is parts and len(parts) == len(made) and all(
                a is b for a, b in zip(parts, made, strict=True)):
            return flat
        return None

    def _moments(self):
        """The optimizer's state as flat vectors in the layout W_1, b_1, W_2, ... (zeros if not started).

        The Python optimizer keeps one array per parameter in the order of ``net.W + net.b``.  When
        those arrays are still the views :meth:`_set_moments` made, the flat vector they view is
        returned itself (the compiled loop updates it in place); otherwise a new one is assembled.
        """
        opt, total, L = self.optimizer, sum(self._param_sizes()), self.net.n_layers
        out = []
        for name, attribute in zip(STATE_ARRAYS[self.optimizer_name], opt.rule.state, strict=True):
            parts = getattr(opt, attribute, None)
            flat = self._viewed(name)
            if flat is not None:
                out.append(flat)
            elif parts and len(parts) == 2 * L:
                out.append(np.concatenate([a.reshape(-1) for l in range(L) for a in (parts[l], parts[L + l])]
                                          ).astype(self.net.dtype, copy=False))
            else:
                out.append(np.zeros(total, self.net.dtype))
        return out

    def _set_moments(self, vectors, *, copy=True):
        """Make the optimizer's state arrays views of flat vectors: copies of ``vectors``, or (``copy=False``)
        the vectors themselves where they are already contiguous in the net's dtype."""
        names = STATE_ARRAYS[self.optimizer_name]
        if not names or not copy and all(self._viewed(name) is flat for name, flat in zip(names, vectors, strict=True)):
            return  # no state, or the arrays already view these vectors
        opt, L = self.optimizer, self.net.n_layers
        offsets = np.cumsum([0] + self._param_sizes())
        for name, attribute, flat in zip(names, opt.rule.state, vectors, strict=True):
            flat = np.array(flat, dtype=self.net.dtype) if copy else np.ascontiguousarray(flat, self.net.dtype)
            pieces = [flat[a:b] for a, b in zip(offsets[:-1], offsets[1:])]
            parts = [pieces[2 * l] for l in range(L)] + [pieces[2 * l + 1] for l in range(L)]
            setattr(opt, attribute, parts)
            self._flat_moments[name] = (attribute, parts, tuple(parts), flat)

    def load_state(self):
        """Continue from net.optimizer_state when it belongs to this optimizer and these parameter sizes."""
        state = getattr(self.net, "optimizer_state", None)
        if not isinstance(state, dict) or state.get("optimizer") != self.optimizer_name:
            return
        total = sum(self._param_sizes())
        names = STATE_ARRAYS[self.optimizer_name]
        if any(np.asarray(state.get(k, ())).shape != (total,) for k in names):
            return
        self._set_moments([np.asarray(state[k]) for k in names])
        self.optimizer.t = int(state["step"])
        self.epochs_run = int(state["epoch"])
        self.samples_seen = int(state.get("samples_seen", 0))
        self.lr = float(state.get("lr", self.lr))
        self.best_loss = float(state.get("best_loss", self.best_loss))
        self.best_validation_score = float(state.get("best_validation_score", self.best_validation_score))
        self._no_improvement = int(state.get("no_improvement", 0))
        if state.get("seed") == repr(self.seed) and "shuffle_state" in state:
            self.rng.bit_generator.state = json.loads(state["shuffle_state"])

    def store_state(self):
        """Write the optimizer's state, counters and shuffling generator to net.optimizer_state (plain data)."""
        state = {"optimizer": self.optimizer_name, "step": int(self.optimizer.t), "epoch": int(self.epochs_run),
                 "samples_seen": int(self.samples_seen), "lr": float(self.lr), "best_loss": float(self.best_loss),
                 "best_validation_score": float(self.best_validation_score),
                 "no_improvement": int(self._no_improvement), "seed": repr(self.seed),
                 "shuffle_state": json.dumps(self.rng.bit_generator.state)}
        moments = self._moments()
        self._set_moments(moments, copy=False)  # the optimizer's arrays view what the net now holds
        for name, flat in zip(STATE_ARRAYS[self.optimizer_name], moments, strict=True):
            state[name] = flat
        self.net.optimizer_state = state

    # -- helpers -----------------------------------------------------------------

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

    def _record(self, epoch, loss, val_loss=None, score=None):
        keep = self.history == "epoch" or (self.history != "none" and epoch % self.history == 0)
        if not keep:
            return
        net = self.net
        self.loss_history.append(loss)
        net.loss_history.append(loss)
        if val_loss is not None:
            for where in (self, net):
                where.validation_loss_history.append(val_loss)
                where.validation_score_history.append(score)

    def _stop_state(self):
        fstate = np.array([self.best_loss, self.best_validation_score, self.lr, 0.0], dtype=np.float64)
        istate = np.array([self.optimizer.t, 0, self._no_improvement, engine.RUNNING, 0,
                           self._best_params is not None], dtype=np.int64)
        return fstate, istate

    def _take_stop_state(self, fstate, istate):
        self.best_loss = float(fstate[engine.F_BEST_LOSS])
        self.best_validation_score = float(fstate[engine.F_BEST_SCORE])
        self.lr = float(fstate[engine.F_LR])
        self._no_improvement = int(istate[engine.I_NO_IMPROVEMENT])
        self.optimizer.t = int(istate[engine.I_STEP])

    def _end_of_epoch(self, fstate, istate, loss, score):
        """The shared stopping rule (:func:`nbmlp.compiled.end_of_epoch`); returns (stop, new_best)."""
        return engine.end_of_epoch(fstate, istate, float(loss), float(score), int(self.early_stopping),
                                   float(self.tol), int(self.n_iter_no_change or 0),
                                   int(self.lr_schedule == "adaptive"))

    def _non_finite(self, loss, lr):
        return FloatingPointError(
            f"the loss, a gradient or the parameters became non-finite at epoch {self.epochs_run + 1} "
            f"(loss={loss}; lr={lr} may be too large); the parameters of the last finite loss were restored")

    # -- the loop ------------------------------------------------------------------

    def run(self, X, T, epochs: int, *, sample_weight=None) -> Trainer:
        """Train for up to ``epochs`` more epochs on (X, T); returns the trainer.

        X: (n, d0), T: (n, dL); both are checked (and copied) before any kernel
        runs.  sample_weight: None or (n,) weights >= 0 (see :mod:`nbmlp.compiled`
        for the weighted losses).
        """
        net = self.net
        check_parameters(net)
        X = net.check_X(X, copy=False)  # only read, and not kept after the run
        T = net.check_T(T, X.shape[0], copy=False)
        w = check_sample_weight(sample_weight, X.shape[0])
        epochs = check_positive_int(epochs, "epochs")
        self.converged = False
        self.stop_reason = None
        self.load_state()

        validation = self.validation_data
        if validation is None and self.validation_fraction > 0.0:
            if w is not None:
                keep_w = np.column_stack([X, w])
                Xk, T, Xv, Tv = split_validation(keep_w, T, self.validation_fraction, self.rng)
                X, w = np.ascontiguousarray(Xk[:, :-1], dtype=X.dtype), np.ascontiguousarray(Xk[:, -1])
            else:
                X, T, Xv, Tv = split_validation(X, T, self.validation_fraction, self.rng)
            X, T = np.ascontiguousarray(X), np.ascontiguousarray(T)
            validation = (np.ascontiguousarray(Xv), np.ascontiguousarray(Tv))
        #: the (X_val, T_val) used by the last run, or None
        self.last_validation_data = validation
        try:
            if self.compiled and self._plain_full_batch(X.shape[0], w, validation):
                self._run_fused(X, T, epochs)
            elif self.compiled:
                self._run_compiled(X, T, w, validation, epochs)
            else:
                self._run_python(X, T, w, validation, epochs)
        finally:
            self.store_state()
        if self.stop_reason is None:
            self.stop_reason = "max_epochs"
        if self.early_stopping and self._best_params is not None:
            for param, best in zip(net.W + net.b, self._best_params, strict=True):
                param[...] = best
        return self

    def _draw_order(self, n, batch):
        """The row order of the next epoch: None (full batch, in order), or a permutation (same draws as always)."""
        if batch >= n:
            return None
        return self.rng.permutation(n) if self.shuffle else np.arange(n)

    def _plain_full_batch(self, n, w, validation) -> bool:
        """True for the note's training -- full-batch plain gradient descent, nothing between epochs -- on a
        small net: :mod:`nbmlp.fused` runs it with the samples along the vectors."""
        return (self.optimizer_name == "sgd" and (self.batch_size is None or self.batch_size >= n)
                and self.weight_decay == 0.0 and self.lr_schedule == "constant" and validation is None
                and self.n_iter_no_change is None and w is None and self.history == "epoch"
                and fused.supports(self.net) and fused.forward_work(self.net, n) <= fused.SMALL_MAX_WORK)

    def _run_fused(self, X, T, epochs):
        net = self.net
        n = X.shape[0]
        timer = engine.StepTimer()
        interrupt = _DeferredInterrupt()
        variant = fused.variant(net)  # what the compiled loop is compiled for
        done = 0
        try:
            while done < epochs:
                k = min(epochs - done, timer.next_steps(), engine.MAX_CHUNK_EPOCHS)
                before = [p.copy() for p in net.W + net.b]
                timer.start()
                try:
                    with engine.compile_watch(("fused", net.dtype.name, variant),
                                              f"{net.dtype.name}, {variant}, full batch"):
                        losses = fused.fit_full_batch(net, X, T, k, self.lr)
                except FloatingPointError as err:  # fused put its finite losses on the net already
                    recorded = err.losses.tolist()
                    self.loss_history.extend(recorded)
                    self._advance(recorded, n)
                    raise self._non_finite(np.nan, self.lr) from None
                timer.stop(k)
                interrupt.install()
                if not all(np.isfinite(p).all() for p in net.W + net.b):  # the last update overflowed:
                    for p, saved in zip(net.W + net.b, before, strict=True):  # redo the chunk without it
                        p[...] = saved
                    if k > 1:
                        fused.fit_full_batch(net, X, T, k - 1, self.lr)
                    recorded = losses.tolist()
                    self.loss_history.extend(recorded)
                    net.loss_history.extend(recorded)
                    self._advance(recorded, n)
                    raise self._non_finite("finite", self.lr)
                recorded = losses.tolist()
                self.loss_history.extend(recorded)
                net.loss_history.extend(recorded)
                self._advance(recorded, n)
                done += k
                if interrupt.hit:
                    raise KeyboardInterrupt
        finally:
            interrupt.uninstall()
        self.used_compiled_loop = True

    def _advance(self, recorded, n):
        """Count the epochs of ``recorded`` (one plain step each) and call the callback for them."""
        first = self.epochs_run + 1
        self.epochs_run += len(recorded)
        self.samples_seen += len(recorded) * n
        self.optimizer.t += len(recorded)
        if recorded:
            self.best_loss = min(self.best_loss, min(recorded))
        if self.callback is not None:
            for e, loss in enumerate(recorded):
                self.callback(first + e, loss)

    def _run_compiled(self, X, T, w, validation, epochs):
        net = self.net
        n = X.shape[0]
        batch = n if self.batch_size is None else min(self.batch_size, n)
        per_epoch = -(-n // batch)
        python_score = validation is not None and self.validation_score is not None
        opt = self.optimizer
        moments = self._moments()
        unused = np.zeros(0, net.dtype)  # the state vectors a rule does not have (never read)
        s1 = moments[0] if moments else unused
        s2 = moments[1] if len(moments) > 1 else unused
        run = engine.CompiledRun(
            net, X, T, w, validation, rule=engine.KINDS["optimizer"][self.optimizer_name], batch_size=batch,
            momentum=getattr(opt, "momentum", 0.0), beta1=getattr(opt, "beta1", 0.9),
            beta2=getattr(opt, "beta2", 0.999), epsilon=getattr(opt, "epsilon", 1e-8),
            weight_decay=self.weight_decay, early_stopping=self.early_stopping,
            patience=self.n_iter_no_change, tol=self.tol, adaptive=self.lr_schedule == "adaptive",
            rule_in_driver=not python_score, s1=s1, s2=s2)
        if self._best_params is not None and self.early_stopping:
            L = net.n_layers
            for l in range(L):
                run.best[2 * l][...] = self._best_params[l].reshape(-1)
                run.best[2 * l + 1][...] = self._best_params[L + l]
        self.used_compiled_loop = True
        fstate, istate = self._stop_state()
        timer = engine.StepTimer()
        interrupt = _DeferredInterrupt()
        pending = None  # the permutation of an epoch a chunk stopped inside, and the rng state after it
        done = 0
        try:
            while done < epochs:
                steps = timer.next_steps()
                n_epochs = 1 if python_score else min(epochs - done, max(1, -(-steps // per_epoch)),
                                                      engine.MAX_CHUNK_EPOCHS)
                state_before = self.rng.bit_generator.state
                if batch >= n:  # full batch: nothing is drawn
                    perms, rng_states = np.zeros((n_epochs, 1), np.int64), None
                else:
                    rows, rng_states = [], []
                    for e in range(n_epochs):
                        rows.append(pending if e == 0 and pending is not None
                                    else self._draw_order(n, batch).astype(np.int64))
                        rng_states.append(self.rng.bit_generator.state)
                    perms = np.stack(rows)
                if self.lr_schedule in ("constant", "adaptive"):
                    lrs = np.full(n_epochs, self.lr, np.float64)
                else:
                    lrs = np.array([self._lr_for_epoch(self.epochs_run + 1 + e) for e in range(n_epochs)])
                losses = np.zeros(n_epochs, np.float64)
                vlosses = np.zeros(n_epochs, np.float64)
                step0 = int(istate[engine.I_STEP])
                timer.start()
                finished = run.chunk(perms, lrs, fstate, istate, losses, vlosses, steps)
                timer.stop(int(istate[engine.I_STEP]) - step0)
                interrupt.install()  # after the first chunk: compiling stays interruptible
                pending = perms[finished] if istate[engine.I_POS] > 0 else None
                used = finished + (pending is not None)
                if rng_states is not None and used < n_epochs:  # give back the draws of the epochs not started
                    self.rng.bit_generator.state = rng_states[used - 1] if used > 0 else state_before
                self._take_stop_state(fstate, istate)
                if validation is None and self.history == "epoch":  # the common case, without a loop
                    recorded = losses[:finished].tolist()
                    self.loss_history.extend(recorded)
                    net.loss_history.extend(recorded)
                    first = self.epochs_run + 1
                    self.epochs_run += finished
                    self.samples_seen += finished * n
                    if self.callback is not None:
                        for e, loss in enumerate(recorded):
                            self.callback(first + e, loss)
                for e in range(finished if validation is not None or self.history != "epoch" else 0):
                    epoch = self.epochs_run + 1
                    self.epochs_run = epoch
                    self.samples_seen += n
                    val_loss = score = None
                    if validation is not None:
                        val_loss = float(vlosses[e])
                        score = -val_loss
                        if python_score:
                            score = float(self.validation_score(net, *validation))
                            stop, new_best = self._end_of_epoch(fstate, istate, losses[e], score)
                            self._take_stop_state(fstate, istate)
                            if new_best:
                                for buf, p in zip(run.best, run.params, strict=True):
                                    buf[...] = p
                                istate[engine.I_HAVE_BEST] = 1
                            if stop:
                                istate[engine.I_STATUS] = engine.STOPPED
                    self._record(epoch, float(losses[e]), val_loss, score)
                    if self.callback is not None:
                        self.callback(epoch, float(losses[e]))
                done += finished
                if istate[engine.I_HAVE_BEST]:
                    L = net.n_layers
                    self._best_params = ([run.best[2 * l].reshape(net.W[l].shape).copy() for l in range(L)]
                                         + [run.best[2 * l + 1].copy() for l in range(L)])
                status = istate[engine.I_STATUS]
                if status == engine.NON_FINITE:
                    raise self._non_finite(fstate[engine.F_EPOCH_LOSS], lrs[min(finished, n_epochs - 1)])
                if status == engine.STOPPED:
                    self.converged = True
                    self.stop_reason = "early_stopping" if self.early_stopping else "converged"
                    break
                if interrupt.hit:
                    raise KeyboardInterrupt
        finally:
            interrupt.uninstall()
            run.close()
            self._set_moments([s1, s2][:len(STATE_ARRAYS[self.optimizer_name])], copy=False)

    def _run_python(self, X, T, w, validation, epochs):
        """The reference twin: the same steps in Python, one engine kernel per formula."""
        net = self.net
        n = X.shape[0]
        batch = n if self.batch_size is None else min(self.batch_size, n)
        is_sum = net.loss_name in SUM_LOSSES
        wtotal = float(n if w is None else w.sum())
        params = net.W + net.b
        snapshot = [p.copy() for p in params]
        have_snapshot = False
        fstate, istate = self._stop_state()
        lr = self.lr
        for _ in range(epochs):
            epoch = self.epochs_run + 1
            lr = self._lr_for_epoch(epoch)
            order = self._draw_order(n, batch)
            epoch_loss = 0.0
            for start in range(0, n, batch):
                rows = slice(start, start + batch) if order is None else order[start:start + batch]
                Xb, Tb = X[rows], T[rows]
                wb = None if w is None else w[rows]
                z, h = net.forward_pass(Xb)
                data_loss = net.loss_value(z, h, Tb, wb)
                penalty = self._penalty()
                dW, db, _, _ = net.backward_pass(z, h, Tb, input_gradients=False, sample_weight=wb)
                if not (math.isfinite(data_loss + penalty) and all(np.isfinite(g).all() for g in dW + db)):
                    if have_snapshot:
                        for param, saved in zip(params, snapshot, strict=True):
                            param[...] = saved
                    raise self._non_finite(data_loss + penalty, lr)
                for saved, param in zip(snapshot, params, strict=True):
                    np.copyto(saved, param)
                have_snapshot = True
                if self.weight_decay > 0.0:
                    for grad, W in zip(dW, net.W, strict=True):
                        self._update_ops.l2_gradient(grad.reshape(-1), W.reshape(-1), self.weight_decay)
                self.optimizer.step(params, dW + db, lr)
                if not all(np.isfinite(p).all() for p in params):  # the update overflowed
                    for param, saved in zip(params, snapshot, strict=True):
                        param[...] = saved
                    raise self._non_finite(data_loss + penalty, lr)
                share = (Xb.shape[0] if wb is None else float(wb.sum())) / wtotal
                epoch_loss += (data_loss if is_sum else share * data_loss) + share * penalty
            self.epochs_run = epoch
            self.samples_seen += n
            val_loss = score = None
            if validation is not None:
                Xv, Tv = validation
                z, h = net.forward_pass(Xv)
                val_loss = net.loss_value(z, h, Tv) + self._penalty()
                score = -val_loss if self.validation_score is None else float(self.validation_score(net, Xv, Tv))
            self._record(epoch, epoch_loss, val_loss, score)
            if self.callback is not None:
                self.callback(epoch, epoch_loss)
            fstate[engine.F_LR] = self.lr
            istate[engine.I_STEP] = self.optimizer.t
            stop, new_best = self._end_of_epoch(fstate, istate, epoch_loss, 0.0 if score is None else score)
            self._take_stop_state(fstate, istate)
            if new_best:
                self._best_params = [p.copy() for p in params]
            if stop:
                self.converged = True
                self.stop_reason = "early_stopping" if self.early_stopping else "converged"
                break


def train(net, X, T, *, epochs: int, sample_weight=None, **options) -> Trainer:
    """Train ``net`` in place on (X, T) for ``epochs`` epochs; returns the :class:`Trainer` (histories inside).

    ``options`` are those of :class:`Trainer` (``optimizer``, ``lr``, ``batch_size``, ...).

    >>> import nbmlp
    >>> X, y = nbmlp.load_iris()
    >>> net = nbmlp.MLP((4, 5, 3), seed=0)
    >>> run = train(net, X, nbmlp.one_hot(y), epochs=5, optimizer="adam", lr=0.01, batch_size=32, seed=0)
    >>> len(run.loss_history)
    5
    """
    return Trainer(net, **options).run(X, T, epochs, sample_weight=sample_weight)


__all__ = ["HISTORY_MODES", "OPTIMIZERS", "SCHEDULES", "SUM_LOSSES", "Trainer", "split_validation", "train"]
