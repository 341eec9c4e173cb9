"""``python -m nbmlp [COMMAND] ...``: the command line.

Commands (each a subparser; ``python -m nbmlp COMMAND --help`` lists its options)::

    note      the lecture note's 4-5-3 network on Iris (the default: ``python -m nbmlp``)
    train     train a network on a bundled, generated or CSV data set, and save it
    predict   predict with a saved model
    explain   one gradient of the note's network, summed term by term
    bench     time nbmlp against NumPy, PyTorch and JAX

Examples::

    python -m nbmlp train --data iris --sizes 4,5,3 --epochs 2000 --lr 0.05 --save iris.npz
    python -m nbmlp train --data flowers.csv --label species --loss cross_entropy --optimizer adam
    python -m nbmlp predict iris.npz --values 5.1,3.5,1.4,0.2 --values 6.7,3.0,5.2,2.3
    python -m nbmlp predict iris.npz --input rows.csv --proba

``train`` holds out a stratified test part, standardizes the features with the training rows' mean
and standard deviation, trains (the note's network and plain gradient descent unless told
otherwise) with a progress line, and reports train and test accuracy.  ``--save`` writes an
``.npz`` model whose ``net.preprocessing`` (the feature scaling) and ``net.classes`` (the class
names) travel with it, so ``nbmlp.load(path).predict(raw_rows)`` needs nothing else.

Every user error -- a flag, a file, a cell of a CSV -- ends with one line ``python -m nbmlp
COMMAND: error: ...`` and exit status 2.  A run that fails after training (a full disk) keeps the
model in a temporary file and says where (status 1); Ctrl-C during training saves the epochs done
so far if ``--save`` was given, and exits with status 130.

The progress line is written here (about thirty lines) rather than with tqdm: nbmlp's run-time
dependencies are numba and numpy only, and an optional tqdm would mean two code paths to keep; the
line needs its own columns (loss, accuracy) and a rate measured from the first finished epoch, so
that compiling does not count.
"""

from __future__ import annotations

import argparse
import csv
import difflib
import importlib.util
import math
import os
import sys
import tempfile
import time

import numpy as np

from . import __version__
from .datasets import DATASETS, train_test_split
from .distributed import Session
from .engines import engine_names
from .network import ACTIVATIONS, LOSSES, MLP, load
from .ops import HIDDEN_ACTIVATIONS
from .optim import OPTIMIZERS
from .training import SCHEDULES, Trainer

PROG = "python -m nbmlp"

#: The command ``python -m nbmlp`` runs when none is named.
DEFAULT_COMMAND = "note"

#: How many progress lines a non-interactive run prints at most (a terminal gets one line redrawn).
PROGRESS_LINES = 10

#: Seconds between redraws of the progress line on a terminal.
REDRAW_SECONDS = 0.2

#: A non-interactive run prints a progress line at least this often, between the PROGRESS_LINES milestones.
QUIET_SECONDS = 30.0

#: ``train`` refuses a network whose estimated memory exceeds this share of the machine's memory.
MAX_MEMORY_SHARE = 0.5

#: Exit statuses: a user error (as argparse), a failure while running, Ctrl-C (128 + SIGINT).
EXIT_USAGE, EXIT_FAILURE, EXIT_INTERRUPTED = 2, 1, 130


class UserError(Exception):
    """A mistake in what the user typed or handed in: reported in one line, exit status 2."""


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``prog: error: message (see prog --help)``, exit status 2."""

    def error(self, message):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# ---------------------------------------------------------------------------
# Flag values
# ---------------------------------------------------------------------------


def _int(text):
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def _float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def _positive_int(text):
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _seed(text):
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def _positive_float(text):
    value = _float(text)
    if value <= 0.0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _nonnegative_float(text):
    value = _float(text)
    if value < 0.0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


def _momentum(text):
    value = _float(text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"momentum must be in [0, 1), got {text!r}")
    return value


def _fraction(text):
    value = _float(text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a fraction in [0, 1), got {text!r}")
    return value


def _sizes(text):
    try:
        sizes = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated layer widths like 4,5,3, got {text!r}") from None
    if len(sizes) < 2 or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"expected at least two positive widths like 4,5,3, got {text!r}")
    return sizes


# ---------------------------------------------------------------------------
# The parser: one subparser per command
# ---------------------------------------------------------------------------

#: command -> one-line summary (the order of the usage line).
COMMANDS = {
    "note": "the lecture note's 4-5-3 network trained on Iris (the default)",
    "train": "train a network on a bundled, generated or CSV data set",
    "predict": "predict with a saved model",
    "explain": "one gradient of the note's network, summed term by term with the numbers",
    "bench": "time nbmlp against NumPy, PyTorch and JAX",
}


def _add_train(sub):
    data_names = ", ".join(DATASETS)
    p = sub.add_parser(
        "train", help=COMMANDS["train"],
        description="Train a network and optionally save it. Defaults are the lecture note's: sigmoid "
                    "layers, sigmoid on the input, loss ½ΣΣ(t-h)², full-batch gradient descent.",
        epilog="examples: python -m nbmlp train --data iris --sizes 4,5,3 --epochs 2000 --lr 0.05 "
               "--save iris.npz --plot loss.png | python -m nbmlp train --data rows.csv --label species")
    g = p.add_argument_group("data")
    g.add_argument("--data", default="iris", metavar="NAME|FILE.csv",
                   help=f"a data set ({data_names}; mnist needs the 'mnist' extra) or a CSV file: one sample "
                        "per row, an optional header row, delimiter ',', ';' or tab (default: %(default)s)")
    g.add_argument("--label", default=None, metavar="NAME|POSITION",
                   help="the CSV's class-label column: a header name or a 1-based position, negative from the "
                        "end (default: the last column); labels may be numbers or words")
    g.add_argument("--test-fraction", type=_fraction, default=0.2,
                   help="stratified share of rows held out for testing, 0 for none (default: %(default)s)")
    g.add_argument("--no-standardize", dest="standardize", action="store_false",
                   help="feed raw features (default: standardize with the training rows' mean and std)")
    g = p.add_argument_group("network")
    g.add_argument("--sizes", type=_sizes, default=None, metavar="D0,D1,...,DL",
                   help="layer widths; the first is the number of features, the last the number of classes "
                        "(default: FEATURES,16,CLASSES)")
    g.add_argument("--activation", default="sigmoid", choices=HIDDEN_ACTIVATIONS,
                   help="activation of the hidden layers and of the output unless --output-activation "
                        "(default: %(default)s)")
    g.add_argument("--output-activation", default=None, choices=list(ACTIVATIONS),
                   help="activation of the output layer (default: --activation's; cross_entropy implies softmax)")
    g.add_argument("--loss", default="half_sse", choices=list(LOSSES),
                   help="half_sse: ½ΣΣ(t-h)², the note's (a sum); mse: mean squared error; "
                        "cross_entropy: softmax + cross-entropy, a mean (default: %(default)s)")
    g.add_argument("--no-input-sigmoid", dest="input_sigmoid", action="store_false",
                   help="feed h0 = X (default: the note's h0 = sigma(X))")
    g.add_argument("--dtype", default="float64", choices=("float64", "float32"), help="(default: %(default)s)")
    g.add_argument("--engine", default="loops", choices=engine_names(), help="kernel engine (default: %(default)s)")
    g = p.add_argument_group("training")
    g.add_argument("--optimizer", default="sgd", choices=OPTIMIZERS, help="update rule (default: %(default)s)")
    g.add_argument("--epochs", type=_positive_int, default=1000,
                   help="passes over the training rows (default: %(default)s)")
    g.add_argument("--batch-size", type=_positive_int, default=None,
                   help="rows per step (default: all rows, full-batch)")
    g.add_argument("--lr", type=_positive_float, default=0.05, help="learning rate (default: %(default)s)")
    g.add_argument("--momentum", type=_momentum, default=0.9,
                   help="mu for --optimizer momentum / nesterov (default: %(default)s)")
    g.add_argument("--weight-decay", type=_nonnegative_float, default=0.0,
                   help="L2 term λ·½Σw² added to the loss (default: %(default)s)")
    g.add_argument("--schedule", default="constant", choices=SCHEDULES,
                   help="learning-rate schedule (default: %(default)s)")
    g.add_argument("--seed", type=_seed, default=0,
                   help="seeds the split, the weights and the shuffling (default: %(default)s)")
    g = p.add_argument_group("cluster (needs the dask extra)")
    g.add_argument("--scheduler", metavar="ADDRESS", default=None,
                   help="train on the Dask cluster whose scheduler is at ADDRESS, e.g. tcp://host:8786")
    g.add_argument("--workers", type=_positive_int, default=None, metavar="N",
                   help="train on a new local Dask cluster of N worker processes")
    g = p.add_argument_group("output")
    g.add_argument("--save", metavar="MODEL.npz", default=None, help="write the trained model here")
    g.add_argument("--plot", metavar="LOSS.png", default=None,
                   help="draw the loss curve into this image (needs matplotlib: pip install 'nbmlp[plot]')")
    g.add_argument("--quiet", action="store_true", help="no progress line")
    return p


def _add_predict(sub):
    p = sub.add_parser(
        "predict", help=COMMANDS["predict"],
        description="Load a model written by 'train --save' (or net.save) and predict. The model's own "
                    "feature scaling (net.preprocessing) is applied to the raw values.",
        epilog="examples: python -m nbmlp predict iris.npz --values 5.1,3.5,1.4,0.2 | "
               "python -m nbmlp predict iris.npz --data iris | "
               "python -m nbmlp predict model.npz --input rows.csv --proba")
    p.add_argument("model", metavar="MODEL.npz", help="a saved model")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--values", action="append", metavar="X1,X2,...",
                        help="one sample's features, comma-separated (repeat for more samples)")
    source.add_argument("--input", metavar="FILE.csv",
                        help="a CSV of samples, one per row; a label column (--label, or one column more than "
                             "the model's features) is used to score")
    source.add_argument("--data", metavar="NAME", help=f"a named data set ({', '.join(DATASETS)}): predict and "
                                                      "score it")
    p.add_argument("--label", default=None, metavar="NAME|POSITION",
                   help="the label column of --input: a header name or a 1-based position, negative from the end")
    p.add_argument("--proba", action="store_true", help="print every class probability")
    p.add_argument("--limit", type=_positive_int, default=10,
                   help="print at most this many rows; accuracy always uses all (default: %(default)s)")
    return p


def _add_delegated(sub, name, module_parser):
    """A command whose options and work live in another module: its parser is the parent of ours."""
    return sub.add_parser(name, parents=[module_parser], add_help=False, help=COMMANDS[name],
                          description=module_parser.description, epilog=module_parser.epilog)


def build_parser() -> Parser:
    from . import benchmark, explain, main_job

    parser = Parser(
        prog=PROG,
        description="Multilayer perceptrons whose backpropagation runs as Numba loop kernels. Without a "
                    f"command, '{PROG}' runs '{DEFAULT_COMMAND}'.",
        epilog=f"Run '{PROG} COMMAND --help' for a command's options.")
    parser.add_argument("--version", action="version", version=f"nbmlp {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="{" + ",".join(COMMANDS) + "}", parser_class=Parser,
                                title="commands")
    parsers = {
        "note": _add_delegated(sub, "note", main_job.build_parser()),
        "train": _add_train(sub),
        "predict": _add_predict(sub),
        "explain": _add_delegated(sub, "explain", explain.build_parser()),
        "bench": _add_delegated(sub, "bench", benchmark.build_parser()),
    }
    for name, p in parsers.items():
        p.prog = f"{PROG} {name}"
    parser.subcommands = parsers
    return parser


def _suggest(word, choices) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def parse(argv):
    """Parsed arguments for ``argv`` (the command first; none or an option: the default command)."""
    parser = build_parser()
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help", "--version")):
        argv = [DEFAULT_COMMAND, *argv]
    if not argv[0].startswith("-") and argv[0] not in COMMANDS:
        parser.error(f"unknown command {argv[0]!r}{_suggest(argv[0], COMMANDS)} "
                     f"(commands: {', '.join(COMMANDS)})")
    args, extras = parser.parse_known_args(argv)
    if extras:
        sub = parser.subcommands[args.command]
        options = [o for action in sub._actions for o in action.option_strings]
        word = extras[0].split("=", 1)[0]
        hint = _suggest(word, options) if word.startswith("-") else ""
        sub.error(f"unrecognized arguments: {' '.join(extras)}{hint}")
    args.parser = parser.subcommands[args.command]
    args.argv = argv
    return args


# ---------------------------------------------------------------------------
# CSV files
# ---------------------------------------------------------------------------


def _is_number(cell) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def label_text(cell: str) -> str:
    """A label as text; numbers are written one way ("1", "1.0" and "1e0" are all "1")."""
    cell = cell.strip()
    try:
        value = float(cell)
    except ValueError:
        return cell
    if math.isfinite(value) and value == int(value) and abs(value) < 2**53:
        return str(int(value))
    return cell


def _is_header(first, others) -> bool:
    """The first row is a header when it has words in every column that holds numbers in all other rows."""
    if not others:
        return not all(map(_is_number, first))
    numeric = [j for j in range(len(first)) if all(j < len(row) and _is_number(row[j]) for row in others)]
    return bool(numeric) and not any(_is_number(first[j]) for j in numeric)


def _decode(path, data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise UserError(f"{path}: not UTF-8 text (byte 0x{data[exc.start]:02x} on line {line}); "
                        "save the file as UTF-8") from None


def _delimiter(lines) -> str:
    sample = "\n".join(lines[:20])
    try:
        return csv.Sniffer().sniff(sample, delimiters=",;\t").delimiter
    except csv.Error:  # one column, or nothing to tell
        first = lines[0]
        return max(",;\t", key=first.count) if any(d in first for d in ",;\t") else ","


def _column_index(spec, names, n_columns, path) -> int:
    """The 0-based index of the column ``spec`` (a header name or a 1-based position, negative from the end)."""
    if names is not None and spec in names:
        return names.index(spec)
    try:
        position = int(spec)
    except ValueError:
        known = f"its columns are {', '.join(names)}" if names else "it has no header row"
        raise UserError(f"{path} has no column {spec!r} ({known}); give a name or a position 1..{n_columns}") \
            from None
    if not (1 <= position <= n_columns or -n_columns <= position <= -1):
        raise UserError(f"label column {position} is out of range: {path} has {n_columns} columns")
    return position - 1 if position > 0 else n_columns + position


def read_csv(path, *, label=None, n_features=None):
    """Features, labels and column names of a CSV file.

    ``label``: the label column (see :func:`_column_index`); None: the last column when ``n_features``
    is None (training) or the file has n_features + 1 columns, else no label.  Returns
    (X float64 (n, d), labels list of str or None, feature names or None).
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror or exc}") from None
    text = _decode(path, data)
    numbered = [(i, line) for i, line in enumerate(text.splitlines(), start=1) if line.strip()]
    if not numbered:
        raise UserError(f"{path} is empty")
    delimiter = _delimiter([line for _, line in numbered])
    rows = [(i, [cell.strip() for cell in row]) for (i, _), row in
            zip(numbered, csv.reader([line for _, line in numbered], delimiter=delimiter), strict=True)]
    first = rows[0][1]
    names = first if _is_header(first, [row for _, row in rows[1:]]) else None
    width = len(first)
    body = rows[1:] if names is not None else rows
    if not body:
        raise UserError(f"{path} holds no samples (only a header row)")
    for line, row in body:
        if len(row) != width:
            raise UserError(f"{path}, line {line}: {len(row)} fields where line {rows[0][0]} has {width} "
                            f"(delimiter {delimiter!r})")
    if label is not None:
        y_col = _column_index(label, names, width, path)
    elif n_features is None or width == n_features + 1:
        y_col = width - 1
    else:
        y_col = None
    if y_col is not None and width < 2:
        raise UserError(f"{path} needs feature columns and a label column; it has {width} column")
    features = [j for j in range(width) if j != y_col]
    X = np.empty((len(body), len(features)))
    for r, (line, row) in enumerate(body):
        for c, j in enumerate(features):
            cell = row[j]
            where = f"{path}, line {line}, column {j + 1}" + (f" ({names[j]!r})" if names else "")
            try:
                value = float(cell)
            except ValueError:
                hint = " (write decimals with a point: 5.1, not 5,1)" if "," in cell and delimiter != "," else ""
                raise UserError(f"{where}: {cell!r} is not a number{hint}") from None
            if not math.isfinite(value):
                raise UserError(f"{where}: {cell!r} is not a finite number (missing values are not supported)")
            X[r, c] = value
    labels = None
    if y_col is not None:
        labels = [label_text(row[y_col]) for _, row in body]
        for (line, _), text in zip(body, labels, strict=True):
            if not text:
                raise UserError(f"{path}, line {line}, column {y_col + 1}: the label is empty")
    feature_names = [names[j] for j in features] if names else None
    return X, labels, feature_names


def _sorted_classes(labels):
    """The distinct labels, in numeric order when they are all numbers."""
    distinct = set(labels)
    if all(_is_number(t) for t in distinct):
        return sorted(distinct, key=float)
    return sorted(distinct)


def _load_training_data(args):
    name = args.data
    if name in DATASETS:
        if args.label is not None:
            raise UserError("--label is for CSV files; the bundled data sets have their labels")
        loader, class_names = DATASETS[name]
        try:
            X, y = loader()
        except ImportError as exc:
            raise UserError(str(exc)) from None
        names = list(class_names) if class_names is not None else [str(k) for k in np.unique(y)]
        return X, np.asarray(y, dtype=np.intp), names
    if not name.lower().endswith((".csv", ".tsv", ".txt")):
        raise UserError(f"--data must be one of {', '.join(DATASETS)} or a .csv file, got {name!r}")
    X, labels, _ = read_csv(name, label=args.label)
    names = _sorted_classes(labels)
    index = {text: k for k, text in enumerate(names)}
    return X, np.array([index[t] for t in labels], dtype=np.intp), names


# ---------------------------------------------------------------------------
# train
# ---------------------------------------------------------------------------


def _memory_bytes() -> int | None:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def check_memory(sizes, n_rows, dtype) -> None:
    """Refuse a network whose parameters, gradients, optimizer state and activations would not fit."""
    total = _memory_bytes()
    if total is None:
        return
    params = sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))
    need = (4 * params + 4 * n_rows * sum(sizes)) * np.dtype(dtype).itemsize
    if need > MAX_MEMORY_SHARE * total:
        raise UserError(f"--sizes {','.join(map(str, sizes))} would need about {need / 1e9:.3g} GB (weights, "
                        f"gradients, optimizer state, activations of {n_rows} rows); this machine has "
                        f"{total / 1e9:.3g} GB")


def check_output_path(path, flag) -> None:
    """Fail before training if ``path`` cannot be written: no directory, not writable, a directory."""
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise UserError(f"{flag} {path}: that is a directory; give a file name")
    if not os.path.isdir(directory):
        raise UserError(f"{flag} {path}: the directory {directory} does not exist")
    try:
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".nbmlp-check-"):
            pass
    except OSError as exc:
        raise UserError(f"{flag} {path}: cannot write in {directory} ({exc.strerror or exc})") from None


def save_model(net, path, data_name, err) -> int:
    """Save ``net``; if that fails (a full disk), save it to a temporary file instead and say where."""
    try:
        net.save(path, metadata={"data": str(data_name)})
        return 0
    except OSError as exc:
        reason = exc.strerror or str(exc)
    fd, fallback = tempfile.mkstemp(prefix="nbmlp-model-", suffix=".npz")
    os.close(fd)
    try:
        net.save(fallback, metadata={"data": str(data_name)})
    except OSError as exc:
        print(f"{PROG} train: error: could not write {path} ({reason}) nor {fallback} ({exc.strerror or exc}); "
              "the model was not saved", file=err)
        return EXIT_FAILURE
    print(f"{PROG} train: error: could not write {path} ({reason}); the model was saved to {fallback} instead",
          file=err)
    return EXIT_FAILURE


def _duration(seconds) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60}:{seconds % 60:02d} min"
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d} h"


class Progress:
    """The progress line: [bar] epoch e/E  loss  accuracy  epochs/s  ETA.

    Called as ``progress(epoch, loss)`` (a training callback).  The rate and the ETA are measured
    from the first call, i.e. after the first epoch, so the time spent compiling does not count.
    A terminal gets one line redrawn at most every REDRAW_SECONDS; other streams get a line at each
    of PROGRESS_LINES milestones (the last at the final epoch) and at least every QUIET_SECONDS.
    """

    def __init__(self, epochs, stream, accuracy):
        self.epochs, self.stream, self.accuracy = epochs, stream, accuracy
        self.interactive = hasattr(stream, "isatty") and stream.isatty()
        self.start = None
        self.last_draw = time.perf_counter()
        self.next_line = 1
        self.drawn = False
        self.width = 0

    def __call__(self, epoch, loss):
        now = time.perf_counter()
        if self.start is None:
            self.start = (now, epoch)
        if self.interactive:
            due = now - self.last_draw >= REDRAW_SECONDS or epoch >= self.epochs
        else:
            due = epoch >= self.epochs * self.next_line // PROGRESS_LINES or epoch >= self.epochs \
                or now - self.last_draw >= QUIET_SECONDS
        if not due:
            return
        while self.epochs * self.next_line // PROGRESS_LINES <= epoch and self.next_line <= PROGRESS_LINES:
            self.next_line += 1
        self.last_draw = now
        t0, e0 = self.start
        rate = (epoch - e0) / (now - t0) if epoch > e0 and now > t0 else None
        done = epoch / self.epochs
        bar = "#" * int(30 * done) + "." * (30 - int(30 * done))
        speed = f"{rate:9.0f} epochs/s  ETA {_duration((self.epochs - epoch) / rate):>8}" if rate else \
            "  (measuring the rate)"
        line = (f"  [{bar}] epoch {epoch:>{len(str(self.epochs))}}/{self.epochs}  loss {loss:11.5g}  "
                f"accuracy {self.accuracy():7.2%}  {speed}")
        if self.interactive:
            self.width = max(self.width, len(line))
            self.stream.write("\r" + line.ljust(self.width))  # covers a longer line drawn before
        else:
            self.stream.write(line + "\n")
        self.stream.flush()
        self.drawn = True

    def close(self):
        if self.interactive and self.drawn:
            self.stream.write("\n")
            self.stream.flush()


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


def train_command(args, stream, err) -> int:
    if args.scheduler is not None and args.workers is not None:
        raise UserError("give --scheduler or --workers, not both")
    if args.plot and importlib.util.find_spec("matplotlib") is None:
        raise UserError("--plot needs matplotlib, the optional 'plot' extra: pip install 'nbmlp[plot]'")
    for path, flag in ((args.save, "--save"), (args.plot, "--plot")):
        if path:
            check_output_path(path, flag)
    X, y, class_names = _load_training_data(args)
    n_features, n_classes = X.shape[1], len(class_names)
    if n_classes < 2:
        raise UserError(f"{args.data} has {n_classes} class ({class_names[0]}); training needs at least 2")
    sizes = args.sizes or (n_features, 16, n_classes)
    if sizes[0] != n_features or sizes[-1] != n_classes:
        raise UserError(f"--sizes must start with the data's {n_features} features and end with its {n_classes} "
                        f"classes, e.g. {n_features},16,{n_classes}; got {','.join(map(str, sizes))}")
    if args.test_fraction > 0:
        try:
            X_train, X_test, y_train, y_test = train_test_split(X, y, test_fraction=args.test_fraction,
                                                                seed=args.seed)
        except ValueError as exc:
            raise UserError(f"--test-fraction {args.test_fraction}: {exc}") from None
    else:
        X_train, X_test, y_train, y_test = X, X[:0], y, y[:0]
    if len(y_train) == 0 or len(np.unique(y_train)) < 2:
        raise UserError(f"--test-fraction {args.test_fraction} leaves {len(y_train)} training rows of {len(y)} "
                        f"({len(np.unique(y_train))} classes); use a smaller fraction")
    check_memory(sizes, len(y_train), args.dtype)
    try:
        net = MLP(sizes, seed=args.seed, dtype=args.dtype, engine=args.engine, input_sigmoid=args.input_sigmoid,
                  activation=args.activation, output_activation=args.output_activation, loss=args.loss)
        options = dict(optimizer=args.optimizer, batch_size=args.batch_size, seed=args.seed,
                       momentum=args.momentum, weight_decay=args.weight_decay, lr_schedule=args.schedule)
        Trainer(net, lr=args.lr, **options)  # checks the options before any data is touched
    except (TypeError, ValueError) as exc:
        raise UserError(str(exc)) from None
    except MemoryError:
        raise UserError(f"--sizes {','.join(map(str, sizes))}: not enough memory for the weights") from None
    if args.standardize:
        mean, scale = X_train.mean(axis=0), X_train.std(axis=0)
        scale[scale == 0.0] = 1.0
        net.preprocessing = {"mean": mean, "scale": scale}
        X_fit = (X_train - mean) / scale
    else:
        X_fit = X_train
    net.classes = np.array(class_names)
    T_train = np.zeros((len(y_train), n_classes))
    T_train[np.arange(len(y_train)), y_train] = 1.0

    def accuracy(A, labels):
        return float(np.mean(net.predict(A) == net.classes[labels]))

    print(f"nbmlp train: {args.data} ({len(y_train)} train / {len(y_test)} test rows, {n_features} features, "
          f"{n_classes} classes), sizes {','.join(map(str, sizes))}", file=stream)
    print(f"  activations {'/'.join(net.activations)}, loss {args.loss}, optimizer {args.optimizer}, "
          f"lr {args.lr}, batch {args.batch_size or 'full'}, {args.epochs} epochs, {args.dtype}, "
          f"engine {args.engine}", file=stream, flush=True)
    progress = None if args.quiet else Progress(args.epochs, stream, lambda: accuracy(X_train, y_train))
    try:
        session = Session(args.scheduler, args.workers)
    except (ConnectionError, ImportError, ValueError, TypeError) as exc:
        raise UserError(str(exc)) from None
    X_fit, T_fit = session.place(X_fit, T_train)
    if session.client is not None:
        print(f"  training {session}: rows sent once, then parameters and partial sums per step", file=stream)
    start = time.perf_counter()
    try:
        net.fit(X_fit, T_fit, epochs=args.epochs, lr=args.lr, callback=progress, **options)
    except KeyboardInterrupt:
        if progress is not None:
            progress.close()
        done = len(net.loss_history)
        message = f"{PROG} train: interrupted at epoch {done} of {args.epochs}"
        if args.save and done:
            status = save_model(net, args.save, args.data, err)
            message += f"; saved the model ({done} epochs) to {args.save}" if status == 0 else ""
        print(message, file=err)
        return EXIT_INTERRUPTED
    except FloatingPointError as exc:
        if progress is not None:
            progress.close()
        print(f"{PROG} train: error: {exc}", file=err)
        return EXIT_FAILURE
    finally:
        session.close()
    if progress is not None:
        progress.close()
    seconds = time.perf_counter() - start
    report = f"trained in {seconds:.2f} s; train accuracy {accuracy(X_train, y_train):.2%}"
    if len(y_test):
        report += f", test accuracy {accuracy(X_test, y_test):.2%}"
    print(report + f", final loss {net.loss_history[-1]:.6g}", file=stream)
    status = 0
    if args.save:
        status = save_model(net, args.save, args.data, err)
        if status == 0:
            print(f"saved the model to {args.save}", file=stream)
    if args.plot:
        try:
            _plot(net.loss_history, args.plot, f"{args.data}: {','.join(map(str, sizes))}, {args.optimizer}")
            print(f"wrote the loss curve to {args.plot}", file=stream)
        except OSError as exc:
            print(f"{PROG} train: error: could not write {args.plot} ({exc.strerror or exc})", file=err)
            status = EXIT_FAILURE
    return status


# ---------------------------------------------------------------------------
# predict
# ---------------------------------------------------------------------------


def _load_model(path):
    """The saved net, with the preprocessing and class names of files written before they lived on the net."""
    try:
        net, meta = load(path, return_metadata=True)
    except FileNotFoundError:
        raise UserError(f"no model file {path!r}") from None
    except (ValueError, OSError) as exc:
        raise UserError(str(exc).splitlines()[0] if str(exc) else f"cannot read {path}") from None
    except Exception as exc:  # whatever a damaged file provokes, it is the file's fault, not a crash
        raise UserError(f"{path} is not a valid nbmlp model file ({type(exc).__name__}: {exc})") from None
    if getattr(net, "preprocessing", None) is None and "x_mean" in meta and "x_scale" in meta:
        net.preprocessing = {"mean": meta["x_mean"], "scale": meta["x_scale"]}
    if getattr(net, "classes", None) is None and "classes" in meta:
        net.classes = np.asarray(meta["classes"])
    return net


def _parse_values(rows, d0):
    X = []
    for text in rows:
        cells = text.split(",")
        if len(cells) != d0:
            raise UserError(f"the model takes {d0} features per sample; --values {text} gave {len(cells)}")
        row = []
        for j, cell in enumerate(cells, start=1):
            try:
                value = float(cell)
            except ValueError:
                raise UserError(f"--values {text}: value {j} ({cell!r}) is not a number") from None
            if not math.isfinite(value):
                raise UserError(f"--values {text}: value {j} ({cell!r}) is not a finite number")
            row.append(value)
        X.append(row)
    return np.array(X)


def predict_command(args, stream, err) -> int:
    net = _load_model(args.model)
    d0 = net.sizes[0]
    regression = not net.predicts_classes
    n_labels = 2 if net.sizes[-1] == 1 else net.sizes[-1]
    names = [str(c) for c in (net.classes if net.classes is not None else range(n_labels))]
    if args.label is not None and not args.input:
        raise UserError("--label is for --input files")
    truth = None
    if args.values:
        X = _parse_values(args.values, d0)
    elif args.input:
        X, labels, _ = read_csv(args.input, label=args.label, n_features=d0)
        if X.shape[1] != d0:
            raise UserError(f"the model takes {d0} features per row; {args.input} has {X.shape[1]} feature columns")
        if labels is not None and not regression:
            known = set(names)
            for row, text in enumerate(labels, start=1):
                if text not in known:
                    raise UserError(f"{args.input}, sample {row}: the label {text!r} is not one of the model's "
                                    f"classes ({', '.join(names)})")
            truth = np.array(labels)
    else:
        if args.data not in DATASETS:
            raise UserError(f"--data must be one of {', '.join(DATASETS)}, got {args.data!r}")
        try:
            X, y = DATASETS[args.data][0]()
        except ImportError as exc:
            raise UserError(str(exc)) from None
        if X.shape[1] != d0:
            raise UserError(f"the model takes {d0} features; the {args.data} data have {X.shape[1]}")
        if not regression:
            if np.max(y) >= len(names):
                raise UserError(f"the {args.data} data have {np.max(y) + 1} classes; the model has {len(names)}")
            truth = np.array(names)[y]
    try:
        predicted = net.predict(X)
        proba = net.predict_proba(X) if args.proba else None
    except ValueError as exc:
        raise UserError(str(exc)) from None
    shown = np.asarray(predicted).astype(str) if not regression else predicted
    for i in range(min(len(X), args.limit)):
        line = f"{i:>5}  {shown[i]}"
        if proba is not None:
            line += "  " + "  ".join(f"{name}={p:.4f}" for name, p in zip(names, proba[i], strict=True))
        if truth is not None:
            line += f"  (true: {truth[i]})"
        print(line, file=stream)
    if len(X) > args.limit:
        print(f"  ... {len(X) - args.limit} more rows (--limit)", file=stream)
    if truth is not None:
        print(f"accuracy {np.mean(shown == truth):.2%} on {len(truth)} rows", file=stream)
    return 0


# ---------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------


def _delegate(args, stream) -> int:
    rest = args.argv[1:]
    if args.command == "note":
        from .main_job import run

        return run(rest, stream)
    if args.command == "explain":
        from .explain import main as explain_main

        return explain_main(["explain", *rest], stream)
    from .benchmark import main as bench_main

    return bench_main(["bench", *rest])


def main(argv=None, stream=None, err=None) -> int:
    """Run ``python -m nbmlp`` with ``argv`` (without the program name); returns the exit status.

    A user error prints one line on ``err`` and raises ``SystemExit(2)``, as argparse does.
    """
    stream = sys.stdout if stream is None else stream
    err = sys.stderr if err is None else err
    args = parse(list(sys.argv[1:] if argv is None else argv))
    try:
        if args.command == "train":
            return train_command(args, stream, err)
        if args.command == "predict":
            return predict_command(args, stream, err)
        return _delegate(args, stream)
    except UserError as exc:
        args.parser.error(str(exc))
    except KeyboardInterrupt:
        print(f"{args.parser.prog}: interrupted", file=err)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # the reader went away (| head): stop quietly, as other command-line tools do
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_FAILURE
