r"""The table of operations: every activation, loss and update rule of nbmlp, one entry each.

This module is the single source of truth for *which* operations exist and
what is true of each.  Everything else derives from it:

* :data:`nbmlp.engines.KERNEL_NAMES` (:func:`kernel_names`) and every engine of
  the registry: the literal loops (:mod:`nbmlp.kernels`), the NumPy twins
  (:mod:`nbmlp.reference`) and the tuned loops (:mod:`nbmlp.kernels_tuned`)
  each provide a function of every kernel name listed here -- one name, three
  tiers, the same signature;
* ``nbmlp.ACTIVATIONS`` / ``nbmlp.LOSSES`` and the argument checks of
  :class:`nbmlp.MLP` (which activation may sit where, which loss needs which
  output, the weight initialisation);
* ``nbmlp.optim.OPTIMIZERS``, :func:`nbmlp.optim.make_optimizer`'s choices and
  hyperparameter checks, ``nbmlp.optim.UPDATE_KERNEL_NAMES`` and every
  optimizer's step (which kernel, which state lists, which hyperparameters);
* the compiled training loop, which branches on the named constants ``ACT_*``,
  ``LOSS_*`` and ``OPT_*`` (each entry's ``code``);
* the CLI's and the estimators' choices (through ``nbmlp.ACTIVATIONS``,
  :data:`HIDDEN_ACTIVATIONS`, ``nbmlp.LOSSES``, ``nbmlp.optim.OPTIMIZERS``);
* the test suite, which iterates over the entries (kernel against twin, the
  backward against the derivative of the forward, finite differences).

Adding an activation therefore means: one entry below, its two loop kernels
in :mod:`nbmlp.kernels`, their NumPy twins in :mod:`nbmlp.reference`, their
tuned forms in :mod:`nbmlp.kernels_tuned`, its derivation in the docs -- and
a branch on its ``code`` in the compiled training loop.  A constant of a
formula (leaky_relu's slope, :data:`nbmlp.kernels.LEAKY_RELU_SLOPE`) lives
beside the literal kernels that compile it in.

Kernel names are plain strings so that this module imports nothing of nbmlp:
every other module can read it without an import cycle.  Every backward kernel
of an activation reads the saved *output* h, never z, so each entry's
``derivative`` is written in h.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import MappingProxyType

# ---------------------------------------------------------------------------
# Named constants of the compiled training loop (each entry's ``code``)
# ---------------------------------------------------------------------------

ACT_IDENTITY = 0
ACT_SIGMOID = 1
ACT_TANH = 2
ACT_RELU = 3
ACT_SOFTMAX = 4
ACT_LEAKY_RELU = 5
ACT_SOFTPLUS = 6

LOSS_HALF_SSE = 0
LOSS_MSE = 1
LOSS_CROSS_ENTROPY = 2

OPT_SGD = 0
OPT_MOMENTUM = 1
OPT_NESTEROV = 2
OPT_ADAM = 3

#: Weight initialisation rules: W_l ~ U(-a, a), a = sqrt(6 / fan).
#: Glorot & Bengio (2010): fan = d_in + d_out.  He et al. (2015): fan = d_in.
INIT_GLOROT = "glorot"
INIT_HE = "he"


@dataclass(frozen=True)
class Activation:
    """One activation h = f(z), applied element by element (softmax: row by row).

    ``forward`` / ``backward`` name a kernel that exists, with the same
    signature, in :mod:`nbmlp.kernels` (literal loops), :mod:`nbmlp.reference`
    (NumPy twin) and :mod:`nbmlp.kernels_tuned` (tuned loops):
    ``forward(h, z)`` and ``backward(dz, dh, h)``.
    """

    name: str
    #: The compiled training loop's constant for it (``ACT_*``).
    code: int
    forward: str
    #: None when the backward is fused with a loss (softmax with cross-entropy).
    backward: str | None
    #: h as a function of z.
    formula: str
    #: dh/dz written from the saved output h (what ``backward`` multiplies dL/dh by).
    derivative: str
    #: Weight initialisation of a layer with this activation: INIT_GLOROT or INIT_HE.
    init: str
    #: May be the activation of a hidden layer (softmax may not).
    hidden: bool = True
    #: The only loss it may be the output activation of (None: any loss).
    only_with_loss: str | None = None
    #: z where the derivative jumps (relu, leaky_relu: 0.0); finite differences must keep away from it.
    kink: float | None = None

    def init_limit(self, d_in: int, d_out: int) -> float:
        """a of U(-a, a) for the weights of a d_in x d_out layer with this activation."""
        fan = d_in if self.init == INIT_HE else d_in + d_out
        return math.sqrt(6.0 / fan)

    @property
    def kernels(self) -> tuple:
        """The kernel names of this entry."""
        return (self.forward,) if self.backward is None else (self.forward, self.backward)


@dataclass(frozen=True)
class Loss:
    """One loss L(out, T), with out = h_L, or the logits z_L when ``fused_softmax``.

    ``loss_kernel(out, t) -> float`` and ``backward_kernel(d, out_or_p, t)`` exist in
    all three tiers, like an activation's kernels.
    """

    name: str
    #: The compiled training loop's constant for it (``LOSS_*``).
    code: int
    loss_kernel: str
    backward_kernel: str
    #: True when the loss is computed from the logits z_L and its backward
    #: writes dL/dz_L directly (softmax + cross-entropy, fused).
    fused_softmax: bool
    #: The formula and whether it sums or averages over the samples.
    scaling: str
    #: "sum" or "mean" over the samples: what a mini-batch step must rescale.
    reduction: str
    #: dL/d(out) (with p = softmax(z) when ``fused_softmax``).
    derivative: str
    #: The output activation this loss needs (None: any that allows it).
    output_activation: str | None = None
    #: The targets it expects: "real" (any numbers) or "probabilities" (rows summing to 1).
    targets: str = "real"

    @property
    def kernels(self) -> tuple:
        return (self.loss_kernel, self.backward_kernel)


@dataclass(frozen=True)
class UpdateRule:
    """One optimizer's update of a flat parameter theta (index m) from its gradient g.

    Its kernel is called ``kernel(theta, *state, g, lr, *hyperparameters)``, with the
    step number t appended when ``step_count``.
    """

    name: str
    #: The compiled training loop's constant for it (``OPT_*``).
    code: int
    #: Its loop kernel; the NumPy twin of the same name is in :mod:`nbmlp.reference`.
    kernel: str
    #: True: an engine kernel (every tier provides it, :data:`ENGINE_UPDATE_KERNELS`);
    #: False: a loop kernel of :mod:`nbmlp.optim`.
    engine_kernel: bool
    formula: str
    #: Names of the state arrays it keeps per parameter (same shape as theta).
    state: tuple = ()
    #: Names of its hyperparameters besides the learning rate (keywords of nbmlp.optim.make_optimizer).
    hyperparameters: tuple = ()
    #: True when the kernel's last argument is the step number t >= 1 (bias correction).
    step_count: bool = False


def _table(*entries):
    """A read-only name -> entry mapping; names and codes must be distinct."""
    names = [e.name for e in entries]
    codes = [e.code for e in entries]
    if len(set(names)) != len(names) or len(set(codes)) != len(codes):
        raise ValueError(f"duplicate name or code in the table of operations: {names}, {codes}")
    return MappingProxyType({e.name: e for e in entries})


#: name -> Activation.  The order is the order of choices shown to users.
ACTIVATIONS = _table(
    Activation("sigmoid", ACT_SIGMOID, "sigmoid_forward", "sigmoid_backward",
               "h = σ(z) = 1 / (1 + e^(−z))", "h(1 − h)", INIT_GLOROT),
    Activation("tanh", ACT_TANH, "tanh_forward", "tanh_backward",
               "h = tanh(z)", "1 − h²", INIT_GLOROT),
    Activation("relu", ACT_RELU, "relu_forward", "relu_backward",
               "h = max(z, 0)", "[h > 0]", INIT_HE, kink=0.0),
    # He's fan_in rule as for relu; the gain for the slope a, sqrt(2 / (1 + a²)), would change the
    # limit by a factor 1 / sqrt(1.0001) at a = 0.01, so it is left out.
    Activation("leaky_relu", ACT_LEAKY_RELU, "leaky_relu_forward", "leaky_relu_backward",
               "h = z if z > 0 else a z  (a = nbmlp.kernels.LEAKY_RELU_SLOPE = 0.01)",
               "1 if h > 0 else a", INIT_HE, kink=0.0),
    # softplus is a smooth relu: He's fan_in rule as for relu.
    Activation("softplus", ACT_SOFTPLUS, "softplus_forward", "softplus_backward",
               "h = log(1 + e^z) = max(z, 0) + log1p(e^(−|z|))", "σ(z) = 1 − e^(−h)", INIT_HE),
    Activation("identity", ACT_IDENTITY, "identity_forward", "identity_backward",
               "h = z", "1", INIT_GLOROT),
    Activation("softmax", ACT_SOFTMAX, "softmax_forward", None,
               "h_ik = e^(z_ik) / Σ_k' e^(z_ik')", "fused with cross-entropy: dL/dz = (p − t) / n",
               INIT_GLOROT, hidden=False, only_with_loss="cross_entropy"),
)

#: name -> Loss.
LOSSES = _table(
    Loss("half_sse", LOSS_HALF_SSE, "half_sse_loss", "half_sse_backward", False,
         "½ Σ_i Σ_k (t_ik - h_ik)^2: a sum over samples and outputs (the note's loss)", "sum", "h − t"),
    Loss("mse", LOSS_MSE, "mse_loss", "mse_backward", False,
         "1/(n d) Σ_i Σ_k (t_ik - h_ik)^2: a mean over samples and outputs", "mean", "2 (h − t) / (n d)"),
    Loss("cross_entropy", LOSS_CROSS_ENTROPY, "softmax_cross_entropy_loss", "softmax_cross_entropy_backward",
         True, "-1/n Σ_i Σ_k t_ik log softmax(z)_ik: a mean over samples", "mean", "(p − t) / n",
         output_activation="softmax", targets="probabilities"),
)

#: name -> UpdateRule.
OPTIMIZERS = _table(
    UpdateRule("sgd", OPT_SGD, "sgd_update", True, "θ ← θ − lr g"),
    UpdateRule("momentum", OPT_MOMENTUM, "momentum_update", False, "v ← μ v − lr g;  θ ← θ + v",
               state=("velocity",), hyperparameters=("momentum",)),
    UpdateRule("nesterov", OPT_NESTEROV, "nesterov_update", False, "v ← μ v − lr g;  θ ← θ + μ v − lr g",
               state=("velocity",), hyperparameters=("momentum",)),
    UpdateRule("adam", OPT_ADAM, "adam_update", False,
               "m ← β1 m + (1 − β1) g;  v ← β2 v + (1 − β2) g²;  θ ← θ − lr m̂ / (√v̂ + ε)",
               state=("m1", "m2"), hyperparameters=("beta1", "beta2", "epsilon"), step_count=True),
)

#: The fully connected layer's kernels (one layer kind, in every tier).
LINEAR_KERNELS = ("linear_forward", "linear_backward_weight", "linear_backward_bias", "linear_backward_input")

#: Kernels of nbmlp.optim that are not an update rule: L2 weight decay.
L2_KERNELS = ("l2_gradient", "l2_penalty")

#: Activations a hidden layer may use (every choice of ``--activation``).
HIDDEN_ACTIVATIONS = tuple(name for name, op in ACTIVATIONS.items() if op.hidden)

#: Update kernels that every engine provides.
ENGINE_UPDATE_KERNELS = tuple(op.kernel for op in OPTIMIZERS.values() if op.engine_kernel)


def kernel_names() -> tuple:
    """Every kernel an engine provides: activations, the linear layer, losses, the engine's update."""
    names = [k for op in ACTIVATIONS.values() for k in op.kernels]
    names += LINEAR_KERNELS
    names += [k for op in LOSSES.values() for k in op.kernels]
    names += ENGINE_UPDATE_KERNELS
    return tuple(names)


def update_kernel_names() -> tuple:
    """The loop kernels of :mod:`nbmlp.optim` (each with a NumPy twin in :mod:`nbmlp.reference`)."""
    return L2_KERNELS + tuple(op.kernel for op in OPTIMIZERS.values() if not op.engine_kernel)


def kernel_roles() -> dict:
    """kernel name -> (role, entry): how each engine kernel is called.

    Roles: "activation_forward" ``f(h, z)``, "activation_backward" ``f(dz, dh, h)``,
    the four linear kernels by their own names (entry None), "loss" ``f(out, t) -> float``,
    "loss_backward" ``f(d, out, t)``, "update" ``f(theta, g, lr)``.
    """
    roles = {}
    for op in ACTIVATIONS.values():
        roles[op.forward] = ("activation_forward", op)
        if op.backward is not None:
            roles[op.backward] = ("activation_backward", op)
    for name in LINEAR_KERNELS:
        roles[name] = (name, None)
    for op in LOSSES.values():
        roles[op.loss_kernel] = ("loss", op)
        roles[op.backward_kernel] = ("loss_backward", op)
    for op in OPTIMIZERS.values():
        if op.engine_kernel:
            roles[op.kernel] = ("update", op)
    return roles


def activation_help() -> str:
    """One line per activation: its formula and its derivative from the saved output (for --help, docs)."""
    return "\n".join(f"{op.name}: {op.formula};  dh/dz = {op.derivative}" for op in ACTIVATIONS.values())


__all__ = [
    "ACTIVATIONS", "Activation", "ENGINE_UPDATE_KERNELS", "HIDDEN_ACTIVATIONS", "INIT_GLOROT", "INIT_HE",
    "L2_KERNELS", "LINEAR_KERNELS", "LOSSES", "Loss", "OPTIMIZERS", "UpdateRule", "activation_help",
    "kernel_names", "kernel_roles", "update_kernel_names",
    "ACT_IDENTITY", "ACT_SIGMOID", "ACT_TANH", "ACT_RELU", "ACT_SOFTMAX", "ACT_LEAKY_RELU", "ACT_SOFTPLUS",
    "LOSS_HALF_SSE", "LOSS_MSE", "LOSS_CROSS_ENTROPY", "OPT_SGD", "OPT_MOMENTUM", "OPT_NESTEROV", "OPT_ADAM",
]
