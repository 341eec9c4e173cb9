r"""The public network: :class:`MLP`, its forward pass, loss, gradients and training.

Plain Python in three steps per call -- validate, allocate, dispatch -- with
every formula computed by a kernel of the chosen engine (:mod:`nbmlp.engines`).

Notation (the note's, extended to L layers, sizes ``(d0, d1, ..., dL)``)::

    z0 = X                      (n x d0)   the input batch
    h0 = sigma(z0)              (or h0 = X when input_sigmoid=False)
    z_l = h_{l-1} W_l + b_l     (n x d_l), W_l: d_{l-1} x d_l, b_l: d_l
    h_l = act_l(z_l)
    L   = loss(h_L, T)          the note: ½ Σ_i Σ_k (t_ik - h_L,ik)^2

Python lists are 0-based, so ``net.W[0]`` is the note's W_1 (W^(1)) and
``net.b[0]`` is b_1; the per-layer quantities ``z``, ``h``, ``dL_dz``, ``dL_dh``
are indexed by l itself: ``dL_dz[2]`` is the note's dL/dz^(2).
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType

import numpy as np

from . import distributed, ops, serialization
from .engines import engine_names, get_engine
from .training import train
from .validation import (
    check_activations,
    check_dtype,
    check_loss,
    check_matrix,
    check_parameter_budget,
    check_parameters,
    check_path,
    check_seed,
    check_sizes,
)

#: activation name -> (forward kernel, backward kernel), derived from :data:`nbmlp.ops.ACTIVATIONS`.
#: Backward kernels take the saved output h, never z: every derivative here is a
#: function of h.  softmax's backward is None: it is fused with the cross-entropy loss.
ACTIVATIONS = MappingProxyType({name: (op.forward, op.backward) for name, op in ops.ACTIVATIONS.items()})

#: How a loss is computed: which kernels, and on which output (an entry of :data:`nbmlp.ops.LOSSES`).
LossSpec = ops.Loss

#: loss name -> LossSpec: the table of operations' losses.
LOSSES = ops.LOSSES


@dataclass
class Gradients:
    r"""Everything one backward pass computes, named as in the note.

    ``W[l-1]`` = dL/dW_l (d_{l-1} x d_l) and ``b[l-1]`` = dL/db_l (d_l,), shaped
    like ``net.W`` / ``net.b``.  For l = 0..L: ``dL_dz[l]`` = dL/dz^(l) and
    ``dL_dh[l]`` = dL/dh^(l), both n x d_l; ``dL_dz[0]`` is the gradient with
    respect to the input batch X.  ``z[l]`` and ``h[l]`` are the forward values
    they were computed from.  With the fused softmax + cross-entropy loss,
    ``dL_dh[L]`` is ``None``: that loss differentiates straight to dL/dz^(L).
    """

    W: list
    b: list
    dL_dz: list
    dL_dh: list
    z: list
    h: list
    loss: float

    def __repr__(self) -> str:
        shapes = ", ".join(f"dW{l + 1}{tuple(w.shape)}" for l, w in enumerate(self.W))
        return f"Gradients(loss={self.loss:.6g}, {shapes})"


class MLP:
    r"""A fully connected network trained by batch backpropagation.

    Parameters
    ----------
    sizes : sequence of int
        Layer widths ``(d0, d1, ..., dL)``; the note's network is ``(4, 5, 3)``.
    seed : int or None
        Seed of the weight initialisation (NumPy ``default_rng``).
    dtype : "float64" or "float32"
        The dtype of parameters and of every computation.
    engine : str
        Which implementation computes the formulas; see ``nbmlp.ENGINES``.
        ``"loops"`` (the default) runs the Numba loop kernels, ``"numpy"`` the
        vectorized reference.
    input_sigmoid : bool
        The note computes ``h0 = sigma(X)``; ``False`` feeds ``h0 = X``.
    activation : str or list of str
        Activation of every layer (one name) or of each of the L layers:
        a name of ``nbmlp.ops.HIDDEN_ACTIVATIONS`` (``sigmoid`` is the note's).
    output_activation : str or None
        Overrides the activation of the last layer.  ``loss="cross_entropy"``
        implies ``"softmax"``.
    loss : str
        ``"half_sse"`` (the note's ½ΣΣ(t - h)^2, a sum), ``"mse"`` (a mean over
        samples and outputs) or ``"cross_entropy"`` (softmax + cross-entropy,
        mean over samples).

    Weights are drawn uniformly from ±sqrt(6 / (d_in + d_out)) (Glorot) or
    ±sqrt(6 / d_in) (He, for the relu family), as the entry of the layer's
    activation says (``nbmlp.ops.ACTIVATIONS[name].init``); biases start at zero.
    """

    def __init__(self, sizes=(4, 5, 3), *, seed=None, dtype="float64", engine="loops", input_sigmoid=True,
                 activation="sigmoid", output_activation=None, loss="half_sse"):
        self._sizes = check_sizes(sizes)
        self.dtype = check_dtype(dtype)
        check_parameter_budget(self._sizes, self.dtype)
        self._ops = get_engine(engine)
        self.engine = engine
        if not isinstance(input_sigmoid, (bool, np.bool_)):
            raise TypeError(f"input_sigmoid must be True or False, got {input_sigmoid!r}")
        self.input_sigmoid = bool(input_sigmoid)
        self._loss = check_loss(loss)
        self.loss_name = loss
        self.activations = check_activations(activation, output_activation, self.n_layers, self._loss)
        self.seed = check_seed(seed)
        #: training losses, one per epoch (or as thinned by ``fit(history=...)``)
        self.loss_history: list[float] = []
        #: None, or {"mean": (d0,), "scale": (d0,)}: predict / predict_proba feed (X - mean) / scale.
        self.preprocessing = None
        #: None, or the class labels (numbers or strings) that predict returns for the outputs, in order.
        self.classes = None
        #: validation loss and score per epoch, when training had validation data
        self.validation_loss_history: list[float] = []
        self.validation_score_history: list[float] = []
        #: where training stopped (optimizer moments, step and epoch counters, shuffling state):
        #: None or a dict of plain data, so that fit twice for 20 epochs equals one fit of 40
        self.optimizer_state = None
        self._init_parameters(np.random.default_rng(seed))

    # -- structure -----------------------------------------------------------

    @property
    def sizes(self) -> tuple:
        """``(d0, d1, ..., dL)``, fixed when the network is built (the parameters are shaped from it)."""
        return self._sizes

    @sizes.setter
    def sizes(self, value):
        raise AttributeError(f"net.sizes is fixed at {self._sizes} (W and b are shaped from it); "
                             f"build a new MLP({value!r}) instead")

    @property
    def n_layers(self) -> int:
        """L, the number of weight layers."""
        return len(self.sizes) - 1

    def _init_parameters(self, rng) -> None:
        self.W, self.b = [], []
        for l in range(1, len(self.sizes)):
            d_in, d_out = self.sizes[l - 1], self.sizes[l]
            limit = ops.ACTIVATIONS[self.activations[l - 1]].init_limit(d_in, d_out)
            self.W.append(rng.uniform(-limit, limit, size=(d_in, d_out)).astype(self.dtype))
            self.b.append(np.zeros(d_out, dtype=self.dtype))

    @property
    def ops(self):
        """The kernels of the net's engine (a namespace with every name in ``nbmlp.engines.KERNEL_NAMES``)."""
        return self._ops

    def set_engine(self, engine: str) -> MLP:
        """Switch the implementation of every kernel; returns the net."""
        self._ops = get_engine(engine)
        self.engine = engine
        return self

    def __repr__(self) -> str:
        return (f"MLP(sizes={self.sizes}, activations={self.activations}, loss={self.loss_name!r}, "
                f"dtype={self.dtype.name!r}, engine={self.engine!r}, input_sigmoid={self.input_sigmoid})")

    # -- input checks --------------------------------------------------------

    def check_X(self, X, name="X", *, copy=True):
        """X checked and converted for this net: (n, d0), finite, C-contiguous, in the net's dtype.

        A copy, unless ``copy=False`` and X already is such an array (see :func:`nbmlp.validation.check_matrix`).
        """
        return check_matrix(X, name, self.sizes[0], self.dtype, copy=copy)

    def check_T(self, T, n, name="T", *, copy=True):
        """T checked and converted for this net: (n, dL), finite, C-contiguous, in the net's dtype (as check_X)."""
        return check_matrix(T, name, self.sizes[-1], self.dtype, rows=n, copy=copy)

    _check_X = check_X
    _check_T = check_T

    # -- the passes ------------------------------------------------------------

    def forward_pass(self, X, *, out=None, ops=None):
        """z[l], h[l] for l = 0..L on a checked batch X (see :meth:`check_X`).

        ``out``: the (z, h) of an earlier call on a batch of the same shape; its arrays are refilled
        and returned, nothing is allocated.  ``ops``: the kernels to run instead of the net's engine's
        (a namespace with every name in ``nbmlp.engines.KERNEL_NAMES``).
        """
        ops = self._ops if ops is None else ops
        if out is None:
            n = X.shape[0]
            z = [X] + [np.empty((n, d), dtype=self.dtype) for d in self.sizes[1:]]
            h = [np.empty_like(X) if self.input_sigmoid else X] + [np.empty_like(z_l) for z_l in z[1:]]
        else:
            z, h = out
            z[0] = X
            if not self.input_sigmoid:
                h[0] = X
        if self.input_sigmoid:
            ops.sigmoid_forward(h[0], X)
        for l, (W, b, activation) in enumerate(zip(self.W, self.b, self.activations), start=1):
            ops.linear_forward(z[l], h[l - 1], W, b)
            getattr(ops, ACTIVATIONS[activation][0])(h[l], z[l])
        return z, h

    def loss_value(self, z, h, T, sample_weight=None, *, ops=None) -> float:
        """The loss of a forward pass (z, h) against T; with ``sample_weight`` (n,) float64, the weighted
        form of :mod:`nbmlp.compiled` (each sample's term times w_i, means over Σ w_i).  ``ops`` as in
        :meth:`forward_pass`."""
        out = z[-1] if self._loss.fused_softmax else h[-1]
        if sample_weight is None:
            return float(getattr(self._ops if ops is None else ops, self._loss.loss_kernel)(out, T))
        w = np.asarray(sample_weight, dtype=np.float64)
        if self._loss.fused_softmax:
            z64 = out.astype(np.float64)
            top = z64.max(axis=1, keepdims=True)
            lse = top + np.log(np.exp(z64 - top).sum(axis=1, keepdims=True))
            return float(np.sum(w * np.sum(T * (lse - z64), axis=1)) / w.sum())
        per_sample = np.sum((T.astype(np.float64) - out) ** 2, axis=1)
        if self.loss_name == "half_sse":
            return float(0.5 * np.sum(w * per_sample))
        return float(np.sum(w * per_sample) / (w.sum() * out.shape[1]))

    def _backward_buffers(self, h, input_gradients):
        """dW, db, dz, dh for :meth:`backward_pass`: an array where the pass writes, None elsewhere."""
        L = self.n_layers
        dz = [None] + [np.empty_like(h_l) for h_l in h[1:]]
        dh = [None] + [np.empty_like(h_l) for h_l in h[1:]]
        if self._loss.fused_softmax:
            dh[L] = None  # the loss differentiates straight to dL/dz_L
        if input_gradients:
            dh[0] = np.empty_like(h[0])
            dz[0] = np.empty_like(h[0]) if self.input_sigmoid else dh[0]
        return [np.empty_like(w) for w in self.W], [np.empty_like(b) for b in self.b], dz, dh

    def backward_pass(self, z, h, T, *, input_gradients=True, sample_weight=None, out=None, ops=None):
        """dL/dW, dL/db and the per-layer dL/dz, dL/dh (l = L down to 0); ``sample_weight`` as in
        :meth:`loss_value`.  ``out``: the result of an earlier call with the same shapes and
        ``input_gradients``, refilled; ``ops`` as in :meth:`forward_pass`."""
        ops = self._ops if ops is None else ops
        L = self.n_layers
        dW, db, dz, dh = self._backward_buffers(h, input_gradients) if out is None else out
        top = dz[L] if self._loss.fused_softmax else dh[L]
        getattr(ops, self._loss.backward_kernel)(top, h[L], T)
        if sample_weight is not None:  # the unweighted kernels' rows, times w_i (and n / Σw for means)
            w = np.asarray(sample_weight, dtype=np.float64)
            scale = w if self.loss_name == "half_sse" else w * (w.size / w.sum())
            top *= scale[:, None].astype(top.dtype)
        for l in range(L, 0, -1):
            if not (l == L and self._loss.fused_softmax):  # that loss gives dL/dz_L itself
                getattr(ops, ACTIVATIONS[self.activations[l - 1]][1])(dz[l], dh[l], h[l])
            ops.linear_backward_weight(dW[l - 1], dz[l], h[l - 1])
            ops.linear_backward_bias(db[l - 1], dz[l])
            if l > 1 or input_gradients:
                ops.linear_backward_input(dh[l - 1], dz[l], self.W[l - 1])
        if input_gradients and self.input_sigmoid:
            ops.sigmoid_backward(dz[0], dh[0], h[0])
        return dW, db, dz, dh

    # -- public API ------------------------------------------------------------

    def forward(self, X) -> np.ndarray:
        """h_L, the network's output for the batch X (n x d0) -> (n x dL); a dask array for a dask X."""
        check_parameters(self)
        if distributed.is_dask_collection(X):
            return distributed.forward(self, X)
        X = self.check_X(X)
        return self.forward_pass(X)[1][-1]

    def loss(self, X, T) -> float:
        """The loss of the batch (X, T); for the note's loss, ½ Σ_i Σ_k (t_ik - h_L,ik)^2."""
        check_parameters(self)
        if distributed.is_dask_collection(X) or distributed.is_dask_collection(T):
            return distributed.loss(self, X, T)
        X = self.check_X(X)
        T = self.check_T(T, X.shape[0])
        z, h = self.forward_pass(X)
        return self.loss_value(z, h, T)

    def gradients(self, X, T) -> Gradients:
        """One forward and one backward pass: every gradient of the note, see :class:`Gradients`."""
        check_parameters(self)
        if distributed.is_dask_collection(X) or distributed.is_dask_collection(T):
            return Gradients(**distributed.gradient_sums(self, X, T))
        X = self.check_X(X)
        T = self.check_T(T, X.shape[0])
        z, h = self.forward_pass(X)
        loss = self.loss_value(z, h, T)
        dW, db, dz, dh = self.backward_pass(z, h, T)
        return Gradients(W=dW, b=db, dL_dz=dz, dL_dh=dh, z=z, h=h, loss=loss)

    def _raw_input(self, X):
        """X checked, then scaled by ``preprocessing`` if the net has one."""
        X = check_matrix(X, "X", self.sizes[0], self.dtype)
        if self.preprocessing is None:
            return X
        if not isinstance(self.preprocessing, dict) or set(self.preprocessing) != {"mean", "scale"}:
            raise ValueError("net.preprocessing must be None or a dict with the keys 'mean' and 'scale'")
        d0 = self.sizes[0]
        mean, scale = (np.asarray(self.preprocessing[k], dtype=np.float64) for k in ("mean", "scale"))
        for key, arr in (("mean", mean), ("scale", scale)):
            if arr.shape != (d0,) or not np.isfinite(arr).all():
                raise ValueError(f"net.preprocessing[{key!r}] must be {d0} finite numbers, got shape {arr.shape}")
        if (scale == 0).any():
            raise ValueError("net.preprocessing['scale'] must not contain zeros")
        return ((X - mean) / scale).astype(self.dtype)

    def _checked_classes(self, n_labels):
        if self.classes is None:
            return None
        classes = np.asarray(self.classes)
        if classes.shape != (n_labels,):
            raise ValueError(f"net.classes must hold {n_labels} labels for this net's outputs, got shape "
                             f"{classes.shape}")
        return classes

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities for raw inputs X (n x d0): softmax outputs, or sigmoid outputs.

        ``preprocessing`` is applied first.  One sigmoid output p gives two columns (1 - p, p); several
        sigmoid outputs are independent probabilities, one per output.  Other output activations are
        not probabilities: ValueError.
        """
        out_activation = self.activations[-1]
        if out_activation not in ("softmax", "sigmoid"):
            raise ValueError(f"predict_proba needs a softmax or sigmoid output layer; this net's output is "
                             f"{out_activation!r}, whose values are not probabilities (use forward or predict)")
        h = self.forward(self._raw_input(X))
        if h.shape[1] == 1 and out_activation == "sigmoid":
            return np.column_stack([1.0 - h[:, 0], h[:, 0]])
        return h

    @property
    def predicts_classes(self) -> bool:
        """True when :meth:`predict` returns class labels, False when it returns the output values.

        A net with ``classes`` predicts classes; otherwise an identity output layer, or a single output
        other than sigmoid, gives values (regression), and anything else scores classes.
        """
        if self.classes is not None:
            return True
        out_activation = self.activations[-1]
        return not (out_activation == "identity" or (self.sizes[-1] == 1 and out_activation != "sigmoid"))

    def predict(self, X) -> np.ndarray:
        """Predictions for raw inputs X (n x d0), ``preprocessing`` applied first.

        Classes (see :attr:`predicts_classes`): the argmax of the outputs -- for one output, p >= 0.5 --
        returned as ``classes[index]`` when the net has ``classes``, else as the index.  Values: shape
        (n,) for one output, else (n, dL).
        """
        h = self.forward(self._raw_input(X))
        if not self.predicts_classes:
            return h[:, 0] if h.shape[1] == 1 else h
        if h.shape[1] == 1:
            index = (h[:, 0] >= 0.5).astype(np.intp)
            classes = self._checked_classes(2)
        else:
            index = h.argmax(axis=1)
            classes = self._checked_classes(h.shape[1])
        return index if classes is None else classes[index]

    def fit(self, X, T, epochs=1000, lr=0.01, *, callback=None, sample_weight=None, **options) -> MLP:
        """Train in place; by default full-batch gradient descent W_l <- W_l - lr dL/dW_l, b_l <- b_l - lr dL/db_l.

        Runs ``epochs`` epochs in the compiled training loop (:mod:`nbmlp.compiled`)
        and appends each epoch's loss (before its update) to ``loss_history``.
        ``callback(epoch, loss)`` is called for every epoch (epochs count from 1),
        in batches after each compiled chunk of about 75 ms.  ``sample_weight``
        (n,) weighs each sample's loss term and gradient.  Training continues
        from ``optimizer_state``: two fits of 20 epochs equal one of 40.  If the
        loss, a gradient or the final parameters become NaN or infinite, the
        parameters of the last finite loss are restored and
        ``FloatingPointError`` is raised; Ctrl-C raises ``KeyboardInterrupt``
        within a chunk, keeping every finished epoch.

        Keyword ``options`` choose other training (mini-batches, momentum, Adam,
        weight decay, schedules, validation, early stopping, ``history``): see
        :class:`nbmlp.training.Trainer`, which runs every fit.  The run's
        buffers (activations, gradients, scratch) stay allocated for the next
        fit with the same shapes, up to :data:`nbmlp.compiled.SPARE_BYTES`;
        ``nbmlp.compiled.SPARES.clear()`` lets them go.
        """
        dask = distributed.is_dask_collection(X) or distributed.is_dask_collection(T)
        # Shapes, dtypes and layout here, before Trainer(...) reads them; the pass over the values is
        # Trainer.run's (one pass per fit, before any kernel), or here on the Dask path, which has no other.
        check_parameters(self, finite=dask)
        if dask:
            return distributed.fit(self, X, T, epochs, lr, callback=callback, sample_weight=sample_weight, **options)
        train(self, X, T, epochs=epochs, lr=lr, callback=callback, sample_weight=sample_weight, **options)
        return self

    # -- persistence -----------------------------------------------------------

    #: Attributes other than the parameters that a saved file carries (None / [] when a net lacks them).
    SAVED_ATTRIBUTES = {"loss_history": list, "validation_loss_history": list, "validation_score_history": list,
                        "optimizer_state": None, "preprocessing": None, "classes": None}

    def to_state(self) -> dict:
        """Everything :meth:`save` writes, as a dict of plain values (the live arrays, not copies)."""
        check_parameters(self)
        state = {"sizes": self.sizes, "activations": self.activations, "loss": self.loss_name,
                 "input_sigmoid": self.input_sigmoid, "dtype": self.dtype.name, "engine": self.engine,
                 "W": self.W, "b": self.b}
        for name, default in self.SAVED_ATTRIBUTES.items():
            value = getattr(self, name, None)
            state[name] = default() if value is None and default is not None else value
        return state

    @classmethod
    def from_state(cls, state: dict, *, engine: str | None = None) -> MLP:
        """The network a state dict describes (:meth:`to_state`, or :func:`nbmlp.serialization.load_state`).

        ``engine`` overrides the saved engine (the saved one is used if registered, otherwise ``"loops"``).
        """
        if engine is None:
            engine = state["engine"] if state["engine"] in engine_names() else "loops"
        net = cls(state["sizes"], seed=0, dtype=state["dtype"], engine=engine, input_sigmoid=state["input_sigmoid"],
                  activation=list(state["activations"]), loss=state["loss"])
        net.W = [np.array(w, dtype=net.dtype, order="C") for w in state["W"]]
        net.b = [np.array(b, dtype=net.dtype, order="C") for b in state["b"]]
        for name, default in cls.SAVED_ATTRIBUTES.items():
            value = state.get(name)
            setattr(net, name, list(value) if default is list and value is not None else value)
        check_parameters(net)
        return net

    def save(self, path, *, metadata=None) -> None:
        """Write the network to ``path`` (``.npz``, no pickle, atomically); see :func:`nbmlp.load`.

        ``metadata`` is an optional dict of extra numbers, strings or arrays stored
        next to the network; read it back with ``load(path, return_metadata=True)``.
        """
        serialization.save_state(self.to_state(), path, metadata=metadata)

    def __getstate__(self):
        # The engine's kernels are compiled functions: pickle the engine's name, not its namespace.
        state = self.__dict__.copy()
        state.pop("_ops", None)
        return state

    def __setstate__(self, state):
        if "sizes" in state:  # pickled when sizes was a plain attribute
            state["_sizes"] = state.pop("sizes")
        self.__dict__.update(state)
        self._ops = get_engine(self.engine)


def load(path, *, engine: str | None = None, return_metadata: bool = False):
    """Read a network written by :meth:`MLP.save`; returns the :class:`MLP`.

    ``engine`` overrides the saved engine (the saved one is used if registered,
    otherwise ``"loops"``).  With ``return_metadata=True`` returns
    ``(net, metadata)``.  Raises ``ValueError`` naming the file for any file
    that is not a complete, consistent nbmlp model (see
    :mod:`nbmlp.serialization`), ``FileNotFoundError`` if there is no file.
    """
    if engine is not None:
        get_engine(engine)  # a bad engine argument is the caller's error, not the file's
    path = check_path(path)
    state = serialization.load_state(path)
    try:
        net = MLP.from_state(state, engine=engine)
    except (TypeError, ValueError) as exc:
        raise serialization.ModelFileError(f"{path!r} is not a valid nbmlp model file: "
                                           f"its architecture is not valid: {exc}") from exc
    return (net, state["metadata"]) if return_metadata else net
