"""nbmlp: multilayer perceptrons whose batch backpropagation is written as explicit
index-level loops, compiled with Numba, and checked against a NumPy reference.

>>> import nbmlp
>>> net = nbmlp.MLP((4, 5, 3), seed=0)      # the lecture note's network
>>> g = net.gradients(X, T)                 # g.W[0] is dL/dW1, g.dL_dz[2] is dL/dz^(2)
"""

from . import kernels, kernels_tuned, ops, reference
from .datasets import (
    load_digits,
    load_iris,
    load_mnist,
    load_wine,
    make_moons,
    make_spirals,
    make_xor,
    one_hot,
    standardize,
    train_test_split,
)
from .engines import engine_names, get_engine, register_engine
from .estimators import MLPClassifier, MLPRegressor
from .gradcheck import gradcheck
from .network import ACTIVATIONS, LOSSES, MLP, Gradients, load
from .training import Trainer, train

__version__ = "0.1.0"

#: Names accepted by ``MLP(engine=...)``.
ENGINES = engine_names()

__all__ = [
    "ACTIVATIONS",
    "ENGINES",
    "LOSSES",
    "MLP",
    "MLPClassifier",
    "MLPRegressor",
    "Gradients",
    "engine_names",
    "get_engine",
    "gradcheck",
    "kernels",
    "kernels_tuned",
    "load",
    "load_digits",
    "load_iris",
    "load_mnist",
    "load_wine",
    "make_moons",
    "make_spirals",
    "make_xor",
    "one_hot",
    "ops",
    "reference",
    "register_engine",
    "standardize",
    "train",
    "train_test_split",
    "Trainer",
]
