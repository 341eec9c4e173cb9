"""The main job, ``python -m nbmlp``: the note's 4-5-3 network trained on Iris.

Iris is 150 samples x 4 features x 3 classes -- the note's shapes exactly.  The
job holds out a stratified 30 %, standardizes the features with the training
statistics, trains by full-batch gradient descent on the note's loss
½ Σ_i Σ_k (t_ik - h_ik)^2 with the loop kernels, prints progress, train/test
accuracy and the final loss, and ends by cross-checking the loop kernels'
gradients against the NumPy reference.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from .datasets import IRIS_CLASSES, load_iris, one_hot, standardize, train_test_split
from .engines import engine_names
from .network import MLP


def max_relative_difference(a, b) -> float:
    """max |a - b| / max |b|: the difference measured against the reference's scale."""
    scale = float(np.max(np.abs(b)))
    return float(np.max(np.abs(a - b))) / (scale if scale > 0.0 else 1.0)


def _progress_line(epoch: int, epochs: int, loss: float, seconds: float) -> str:
    done = epoch / epochs
    bar = "#" * int(30 * done) + "." * (30 - int(30 * done))
    rate = epoch / max(seconds, 1e-9)
    return f"  [{bar}] epoch {epoch:>{len(str(epochs))}}/{epochs}  loss {loss:10.4f}  {rate:9.0f} epochs/s"


def train_with_progress(net, X, T, epochs: int, lr: float, stream, reports: int = 10) -> float:
    """``net.fit`` in ``reports`` chunks, printing a progress line after each; returns the seconds taken.

    Each chunk is one ``fit`` call with no per-epoch callback, so full-batch
    gradient descent runs its whole epoch loop compiled (:mod:`nbmlp.fused`).
    """
    interactive = stream.isatty()
    start = time.perf_counter()
    done = 0
    for chunk in range(1, reports + 1):
        target = epochs * chunk // reports
        if target == done:
            continue
        net.fit(X, T, epochs=target - done, lr=lr)
        done = target
        line = _progress_line(done, epochs, net.loss_history[-1], time.perf_counter() - start)
        stream.write(("\r" + line) if interactive else line + "\n")
        stream.flush()
    if interactive:
        stream.write("\n")
    return time.perf_counter() - start


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m nbmlp",
        description="Train the lecture note's 4-5-3 sigmoid network on the bundled Iris data "
        "and cross-check the loop kernels against the NumPy reference. "
        "Subcommands: train, predict, bench, explain (python -m nbmlp SUBCOMMAND --help).",
    )
    parser.add_argument("--epochs", type=int, default=3000, help="full-batch gradient steps (default 3000)")
    parser.add_argument("--lr", type=float, default=0.05, help="learning rate (default 0.05)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split and the weights (default 0)")
    parser.add_argument("--dtype", choices=("float64", "float32"), default="float64")
    parser.add_argument("--engine", default="loops", choices=engine_names(), help="kernel engine (default loops)")
    return parser


def run(argv=None, stream=None) -> int:
    stream = sys.stdout if stream is None else stream
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.epochs < 1:
        parser.error(f"argument --epochs: must be >= 1, got {args.epochs}")
    if not args.lr > 0.0:
        parser.error(f"argument --lr: must be > 0, got {args.lr}")
    X, y = load_iris()
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_fraction=0.3, seed=args.seed)
    X_train, X_test = standardize(X_train, X_test)
    T_train = one_hot(y_train, 3)
    net = MLP((4, 5, 3), seed=args.seed, dtype=args.dtype, engine=args.engine)
    print(f"nbmlp: the note's network {net.sizes} on Iris ({len(y_train)} train / {len(y_test)} held out), "
          f"{args.dtype}, engine={args.engine!r}", file=stream)
    print(f"  loss L = ½ Σ_i Σ_k (t_ik - h_ik)^2, full-batch gradient descent, lr={args.lr}", file=stream)
    seconds = train_with_progress(net, X_train, T_train, args.epochs, args.lr, stream)

    def accuracy(A, labels):
        return float(np.mean(net.forward(A).argmax(axis=1) == labels))

    final_loss = net.loss(X_train, T_train)
    print(f"trained in {seconds:.2f} s (includes compiling the kernels on a first run)", file=stream)
    print(f"train accuracy {accuracy(X_train, y_train):.2%}   test accuracy {accuracy(X_test, y_test):.2%}   "
          f"final loss {final_loss:.4f}", file=stream)
    confusion = np.zeros((3, 3), dtype=int)
    np.add.at(confusion, (y_test, net.forward(X_test).argmax(axis=1)), 1)
    print("held-out confusion (rows: true, columns: predicted):", file=stream)
    for name, row in zip(IRIS_CLASSES, confusion):
        print(f"  {name:>10} " + " ".join(f"{c:3d}" for c in row), file=stream)

    # Whatever engine trained the net, compare the literal loops with the reference at its parameters.
    loops = net.set_engine("loops").gradients(X_train, T_train)
    numpy_grads = net.set_engine("numpy").gradients(X_train, T_train)
    net.set_engine(args.engine)
    pairs = [(f"dL/dW{l + 1}", a, b) for l, (a, b) in enumerate(zip(loops.W, numpy_grads.W))]
    pairs += [(f"dL/db{l + 1}", a, b) for l, (a, b) in enumerate(zip(loops.b, numpy_grads.b))]
    pairs += [(f"dL/dz{l}", a, b) for l, (a, b) in enumerate(zip(loops.dL_dz, numpy_grads.dL_dz))]
    worst = max(max_relative_difference(a, b) for _, a, b in pairs)
    print(f"cross-check, loop kernels vs NumPy reference on the trained net: max relative difference "
          f"{worst:.2e} over {len(pairs)} gradient arrays", file=stream)
    if net.dtype == np.float32:
        print("  (float32: near a minimum each gradient is a small sum of larger terms that cancel, so both "
              "sides carry float32 rounding of ~1e-4 relative to it)", file=stream)
    return 0
