"""``python -m nbmlp train ...`` and ``python -m nbmlp predict ...``: train, save, and use networks from a shell.

Examples::

    python -m nbmlp train --data iris --sizes 4,5,3 --epochs 2000 --lr 0.05 --save iris.npz
    python -m nbmlp train --data digits --sizes 64,32,10 --activation tanh --loss cross_entropy \\
        --optimizer adam --lr 0.01 --batch-size 64 --epochs 40 --save digits.npz --plot loss.png
    python -m nbmlp predict iris.npz --values 5.1,3.5,1.4,0.2 --values 6.7,3.0,5.2,2.3
    python -m nbmlp predict iris.npz --data iris

``train`` holds out a stratified test part, standardizes the features with the
training rows' mean and standard deviation, trains (the note's network and
plain gradient descent unless told otherwise), prints a progress line with the
epoch, loss, training accuracy and epochs per second, and reports train and
test accuracy.  ``--save`` writes an ``.npz`` model (see :mod:`nbmlp.serialization`)
that also keeps the feature scaling and the class names, which ``predict`` uses.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import sys
import time

import numpy as np

from .datasets import DATASETS, standardize, train_test_split
from .distributed import Session
from .network import ACTIVATIONS, LOSSES, MLP, load
from .optim import OPTIMIZERS
from .training import SCHEDULES, Trainer

#: How many progress lines a non-interactive run prints.
PROGRESS_LINES = 10


def _sizes(text):
    try:
        sizes = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated layer widths like 4,5,3, got {text!r}") from None
    if len(sizes) < 2 or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"expected at least two positive widths like 4,5,3, got {text!r}")
    return sizes


def _fraction(text):
    value = float(text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a fraction in [0, 1), got {text!r}")
    return value


def _positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _positive_float(text):
    value = float(text)
    if not (value > 0.0 and np.isfinite(value)):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m nbmlp",
        description="Train multilayer perceptrons whose backpropagation runs as Numba loop kernels, "
                    "and predict with saved models.",
        epilog="Run 'python -m nbmlp train --help' or 'python -m nbmlp predict --help' for the options. "
               "Without a subcommand, 'python -m nbmlp' runs the lecture note's 4-5-3 network on Iris.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="{train,predict}")
    data_names = ", ".join(DATASETS)

    train = sub.add_parser(
        "train", help="train a network on a bundled, generated or CSV data set",
        description="Train a network and optionally save it. Defaults are the lecture note's: sigmoid "
                    "layers, sigmoid on the input, loss ½ΣΣ(t-h)², full-batch gradient descent.",
        epilog="example: python -m nbmlp train --data iris --sizes 4,5,3 --epochs 2000 --lr 0.05 "
               "--save iris.npz --plot loss.png",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g = train.add_argument_group("data")
    g.add_argument("--data", default="iris", metavar="NAME|FILE.csv",
                   help=f"a data set ({data_names}; mnist needs the 'mnist' extra) or a CSV file "
                        "whose last column is the class label")
    g.add_argument("--test-fraction", type=_fraction, default=0.2,
                   help="stratified share of rows held out for testing (0: none)")
    g.add_argument("--no-standardize", dest="standardize", action="store_false",
                   help="feed raw features instead of standardizing them with the training rows' statistics")
    g = train.add_argument_group("network")
    g.add_argument("--sizes", type=_sizes, default=None, metavar="D0,D1,...,DL",
                   help="layer widths; the first must be the number of features, the last the number of "
                        "classes (default: features,16,classes)")
    g.add_argument("--activation", default="sigmoid", choices=[a for a in ACTIVATIONS if a != "softmax"],
                   help="activation of the hidden layers (and of the output unless --output-activation)")
    g.add_argument("--output-activation", default=None, choices=[a for a in ACTIVATIONS],
                   help="activation of the output layer (cross_entropy implies softmax)")
    g.add_argument("--loss", default="half_sse", choices=list(LOSSES),
                   help="half_sse: ½ΣΣ(t-h)², the note's (a sum); mse: mean squared error; "
                        "cross_entropy: softmax + cross-entropy (a mean over samples)")
    g.add_argument("--no-input-sigmoid", dest="input_sigmoid", action="store_false",
                   help="feed h0 = X instead of the note's h0 = sigma(X)")
    g.add_argument("--dtype", default="float64", choices=("float64", "float32"))
    g.add_argument("--engine", default="loops", help="kernel engine (see nbmlp.ENGINES)")
    g = train.add_argument_group("training")
    g.add_argument("--optimizer", default="sgd", choices=OPTIMIZERS, help="update rule")
    g.add_argument("--epochs", type=_positive_int, default=1000, help="passes over the training rows")
    g.add_argument("--batch-size", type=_positive_int, default=None,
                   help="rows per step (default: all rows, full-batch)")
    g.add_argument("--lr", type=_positive_float, default=0.05, help="learning rate")
    g.add_argument("--momentum", type=float, default=0.9, help="mu for --optimizer momentum / nesterov")
    g.add_argument("--weight-decay", type=float, default=0.0, help="L2 term λ·½Σw² added to the loss")
    g.add_argument("--schedule", default="constant", choices=SCHEDULES, help="learning-rate schedule")
    g.add_argument("--seed", type=int, default=0, help="seeds the split, the weights and the shuffling")
    g = train.add_argument_group("cluster (needs the dask extra)")
    g.add_argument("--scheduler", metavar="ADDRESS", default=None,
                   help="train on the Dask cluster whose scheduler is at ADDRESS, e.g. tcp://host:8786")
    g.add_argument("--workers", type=_positive_int, default=None, metavar="N",
                   help="train on a new local Dask cluster of N worker processes")
    g = train.add_argument_group("output")
    g.add_argument("--save", metavar="MODEL.npz", default=None, help="write the trained model here")
    g.add_argument("--plot", metavar="LOSS.png", default=None,
                   help="draw the loss curve into this image (needs matplotlib: pip install 'nbmlp[plot]')")
    g.add_argument("--quiet", action="store_true", help="no progress bar")

    predict = sub.add_parser(
        "predict", help="predict classes with a saved model",
        description="Load a model written by 'train --save' (or net.save) and predict. Features are "
                    "scaled as they were in training.",
        epilog="examples: python -m nbmlp predict iris.npz --values 5.1,3.5,1.4,0.2 | "
               "python -m nbmlp predict iris.npz --data iris | "
               "python -m nbmlp predict model.npz --input rows.csv --proba")
    predict.add_argument("model", metavar="MODEL.npz", help="a saved model")
    source = predict.add_mutually_exclusive_group(required=True)
    source.add_argument("--values", action="append", metavar="X1,X2,...",
                        help="one sample's features, comma-separated (repeat for more samples)")
    source.add_argument("--input", metavar="FILE.csv",
                        help="a CSV of samples, one per row (a last label column is used to score)")
    source.add_argument("--data", metavar="NAME", help=f"a named data set ({data_names}): predict and score it")
    predict.add_argument("--proba", action="store_true", help="print every class probability")
    predict.add_argument("--limit", type=_positive_int, default=10,
                         help="print at most this many rows (accuracy always uses all)")
    parser.subcommands = {"train": train, "predict": predict}
    return parser


# ---------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------


def _read_csv(path, parser):
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = [row for row in csv.reader(f) if row]
    except OSError as exc:
        parser.error(f"cannot read {path!r}: {exc}")
    try:
        float(rows[0][0])
    except (ValueError, IndexError):
        rows = rows[1:]  # a header line
    try:
        table = np.array(rows, dtype=np.float64)
    except ValueError as exc:
        parser.error(f"{path!r} must hold numbers, one sample per row, all rows of equal length: {exc}")
    if table.ndim != 2 or table.shape[0] == 0:
        parser.error(f"{path!r} holds no samples")
    return table


def _load_training_data(name, parser):
    if name in DATASETS:
        loader, class_names = DATASETS[name]
        try:
            X, y = loader()
        except ImportError as exc:
            parser.error(str(exc))
        labels = np.unique(y)
        names = list(class_names) if class_names is not None else [str(k) for k in labels]
        return X, y, names
    if not name.lower().endswith(".csv"):
        parser.error(f"--data must be one of {', '.join(DATASETS)} or a .csv file, got {name!r}")
    table = _read_csv(name, parser)
    if table.shape[1] < 2:
        parser.error(f"{name!r} needs feature columns and a last label column")
    raw = table[:, -1]
    if not np.all(raw == np.round(raw)):
        parser.error(f"the last column of {name!r} must hold integer class labels")
    labels, y = np.unique(raw.astype(np.int64), return_inverse=True)
    return table[:, :-1], y.astype(np.int64), [str(k) for k in labels]


# ---------------------------------------------------------------------------
# train
# ---------------------------------------------------------------------------


class _Progress:
    """One line per report: [bar] epoch e/E  loss  accuracy  epochs/s (redrawn in place on a terminal)."""

    def __init__(self, epochs, stream):
        self.epochs, self.stream = epochs, stream
        self.interactive = hasattr(stream, "isatty") and stream.isatty()
        self.start = time.perf_counter()

    def __call__(self, epoch, loss, accuracy):
        done = epoch / self.epochs
        bar = "#" * int(30 * done) + "." * (30 - int(30 * done))
        rate = epoch / max(time.perf_counter() - self.start, 1e-9)
        line = (f"  [{bar}] epoch {epoch:>{len(str(self.epochs))}}/{self.epochs}  loss {loss:11.5g}  "
                f"accuracy {accuracy:7.2%}  {rate:9.0f} epochs/s")
        self.stream.write(("\r" + line) if self.interactive else line + "\n")
        if self.interactive and epoch == self.epochs:
            self.stream.write("\n")
        self.stream.flush()


def _accuracy(net, X, y):
    return float(np.mean(net.forward(X).argmax(axis=1) == y))


def _plot(history, path, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(np.arange(1, len(history) + 1), history)
    if min(history) > 0:
        ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def train_command(args, parser, stream) -> int:
    if args.scheduler is not None and args.workers is not None:
        parser.error("give --scheduler or --workers, not both")
    if args.plot and importlib.util.find_spec("matplotlib") is None:
        parser.error("--plot needs matplotlib, the optional 'plot' extra: pip install 'nbmlp[plot]'")
    X, y, class_names = _load_training_data(args.data, parser)
    n_features, n_classes = X.shape[1], len(class_names)
    sizes = args.sizes or (n_features, 16, n_classes)
    if sizes[0] != n_features or sizes[-1] != n_classes:
        parser.error(f"--sizes must start with the data's {n_features} features and end with its "
                     f"{n_classes} classes, e.g. {n_features},16,{n_classes}; got {','.join(map(str, sizes))}")
    if args.test_fraction > 0:
        X_train, X_test, y_train, y_test = train_test_split(X, y, test_fraction=args.test_fraction, seed=args.seed)
    else:
        X_train, X_test, y_train, y_test = X, X[:0], y, y[:0]
    if args.standardize:
        mean, scale = X_train.mean(axis=0), X_train.std(axis=0)
        scale[scale == 0.0] = 1.0
        X_train, X_test = standardize(X_train, X_test)
    else:
        mean, scale = np.zeros(n_features), np.ones(n_features)
    T_train = np.zeros((len(y_train), n_classes))
    T_train[np.arange(len(y_train)), y_train] = 1.0
    try:
        net = MLP(sizes, seed=args.seed, dtype=args.dtype, engine=args.engine, input_sigmoid=args.input_sigmoid,
                  activation=args.activation, output_activation=args.output_activation, loss=args.loss)
        trainer = Trainer(net, optimizer=args.optimizer, lr=args.lr, batch_size=args.batch_size, seed=args.seed,
                          momentum=args.momentum, weight_decay=args.weight_decay, lr_schedule=args.schedule)
    except (TypeError, ValueError) as exc:
        parser.error(str(exc))

    print(f"nbmlp train: {args.data} ({len(y_train)} train / {len(y_test)} test rows, {n_features} features, "
          f"{n_classes} classes), sizes {','.join(map(str, sizes))}", file=stream)
    print(f"  activations {'/'.join(net.activations)}, loss {args.loss}, optimizer {args.optimizer}, "
          f"lr {args.lr}, batch {args.batch_size or 'full'}, {args.epochs} epochs, {args.dtype}, "
          f"engine {args.engine}", file=stream)
    try:
        session = Session(args.scheduler, args.workers)
    except (ConnectionError, ImportError, ValueError, TypeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    X_fit, T_fit = session.place(X_train, T_train)
    if session.client is not None:
        print(f"  training {session}: rows sent once, then parameters and partial sums per step", file=stream)
    progress = None if args.quiet else _Progress(args.epochs, stream)
    chunk = max(1, args.epochs // PROGRESS_LINES)
    start = time.perf_counter()
    done = 0
    try:
        while done < args.epochs:
            step = min(chunk, args.epochs - done)
            session.run(trainer, X_fit, T_fit, step)
            done += step
            if progress is not None:
                progress(done, trainer.loss_history[-1], _accuracy(net, X_train, y_train))
    except FloatingPointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        session.close()
    seconds = time.perf_counter() - start
    report = f"trained in {seconds:.2f} s; train accuracy {_accuracy(net, X_train, y_train):.2%}"
    if len(y_test):
        report += f", test accuracy {_accuracy(net, X_test, y_test):.2%}"
    print(report + f", final loss {trainer.loss_history[-1]:.6g}", file=stream)
    if args.save:
        net.save(args.save, metadata={"classes": np.array(class_names), "x_mean": mean, "x_scale": scale,
                                      "data": str(args.data)})
        print(f"saved the model to {args.save}", file=stream)
    if args.plot:
        _plot(trainer.loss_history, args.plot, f"{args.data}: {','.join(map(str, sizes))}, {args.optimizer}")
        print(f"wrote the loss curve to {args.plot}", file=stream)
    return 0


# ---------------------------------------------------------------------------
# predict
# ---------------------------------------------------------------------------


def predict_command(args, parser, stream) -> int:
    try:
        net, meta = load(args.model, return_metadata=True)
    except FileNotFoundError:
        parser.error(f"no model file {args.model!r}")
    except ValueError as exc:
        parser.error(str(exc))
    d0, dL = net.sizes[0], net.sizes[-1]
    names = [str(c) for c in meta.get("classes", np.arange(dL))]
    y = None
    if args.values:
        try:
            X = np.array([[float(v) for v in row.split(",")] for row in args.values])
        except ValueError:
            parser.error("--values takes comma-separated numbers, e.g. --values 5.1,3.5,1.4,0.2")
        if X.shape[1] != d0:
            parser.error(f"the model takes {d0} features per sample; --values gave {X.shape[1]}")
    elif args.input:
        X = _read_csv(args.input, parser)
        if X.shape[1] == d0 + 1:
            X, y = X[:, :-1], X[:, -1].astype(np.int64)
        elif X.shape[1] != d0:
            parser.error(f"the model takes {d0} features per row; {args.input!r} has {X.shape[1]} columns")
    else:
        if args.data not in DATASETS:
            parser.error(f"--data must be one of {', '.join(DATASETS)}, got {args.data!r}")
        try:
            X, y = DATASETS[args.data][0]()
        except ImportError as exc:
            parser.error(str(exc))
        if X.shape[1] != d0:
            parser.error(f"the model takes {d0} features; the {args.data} data have {X.shape[1]}")
    if "x_mean" in meta:
        X = (X - meta["x_mean"]) / meta["x_scale"]
    out = net.forward(X)
    predicted = out.argmax(axis=1)
    if args.proba and net.activations[-1] != "softmax":
        print(f"(the model's outputs are {net.activations[-1]} values h_L, not probabilities: "
              "train with --loss cross_entropy for those)", file=stream)
    for i in range(min(len(X), args.limit)):
        line = f"{i:>5}  {names[predicted[i]]}"
        if args.proba:
            line += "  " + "  ".join(f"{name}={p:.4f}" for name, p in zip(names, out[i], strict=True))
        if y is not None:
            line += f"  (true: {names[y[i]] if 0 <= y[i] < len(names) else y[i]})"
        print(line, file=stream)
    if len(X) > args.limit:
        print(f"  ... {len(X) - args.limit} more rows (--limit)", file=stream)
    if y is not None:
        print(f"accuracy {np.mean(predicted == y):.2%} on {len(y)} rows", file=stream)
    return 0


def main(argv=None, stream=None) -> int:
    """Entry point: ``argv[0]`` is ``"train"`` or ``"predict"``; returns the exit status.

    Usage errors print the subcommand's usage and exit with status 2 (``SystemExit``), as argparse does.
    """
    stream = sys.stdout if stream is None else stream
    parser = build_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else list(argv))
    command = train_command if args.command == "train" else predict_command
    return command(args, parser.subcommands[args.command], stream)
