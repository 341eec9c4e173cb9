"""What the boundary checks cost and how fast hostile model files are refused: ``python bench/safety.py``.

1. ``check_parameters`` (run by every forward / loss / gradients / fit / save) beside the
   forward pass it guards, for one sample and for a batch: medians of repeats.
2. Seconds and memory growth to refuse (a) a 3.7 KB-class file whose ``sizes`` declare a
   20000 x 20000 layer, (b) a file whose member is a 1 GiB deflated zip bomb, (c) a
   file whose W1 header declares 20000 x 20000 with 96 bytes of data; against the time
   to load the good file.
"""

from __future__ import annotations

import io
import resource
import sys
import tempfile
import time
import timeit
import zipfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

import nbmlp  # noqa: E402
from nbmlp.validation import check_parameters  # noqa: E402


def median_seconds(fn, repeat=7, budget=0.05):
    """Median seconds per call over ``repeat`` runs of about ``budget`` seconds each."""
    start = time.perf_counter()
    fn()
    number = max(1, int(budget / max(time.perf_counter() - start, 1e-7)))
    return float(np.median(timeit.repeat(fn, repeat=repeat, number=number))) / number


def check_cost():
    print("check_parameters beside the forward pass it guards (medians of 7 repeats)")
    for sizes, n in (((4, 5, 3), 1), ((64, 256, 10), 1), ((64, 256, 10), 256), ((784, 256, 10), 64)):
        net = nbmlp.MLP(sizes, seed=0)
        X = np.random.default_rng(0).normal(size=(n, sizes[0]))
        net.forward(X)  # compile outside the timing
        check = median_seconds(lambda net=net: check_parameters(net))
        forward = median_seconds(lambda net=net, X=X: net.forward(X))
        print(f"  sizes={sizes!s:16} n={n:4}: check {check * 1e6:8.1f} µs, forward (check included) "
              f"{forward * 1e6:8.1f} µs, share {check / forward:5.1%}")


def npy(shape, data=b"", descr="<f8"):
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": shape})
    return buf.getvalue() + data


def hostile_files(folder: Path) -> dict:
    good = folder / "good.npz"
    nbmlp.MLP((4, 5, 3), seed=0).save(good)
    with np.load(good) as f:
        arrays = {k: f[k] for k in f.files}
    files = {"good (4-5-3)": good}

    huge = dict(arrays, sizes=np.array([20000, 20000]), activations=np.array(["sigmoid"]))
    del huge["W2"], huge["b2"]
    files["sizes declare 20000x20000"] = folder / "huge.npz"
    with open(files["sizes declare 20000x20000"], "wb") as f:
        np.savez(f, **huge)

    def rewrite(name, key, write):
        with zipfile.ZipFile(good) as src, zipfile.ZipFile(folder / name, "w") as dst:
            for info in src.infolist():
                if info.filename != key:
                    dst.writestr(info.filename, src.read(info))
            write(dst)
        return folder / name

    def bomb(dst):
        info = zipfile.ZipInfo("loss_history.npy")
        info.compress_type = zipfile.ZIP_DEFLATED
        with dst.open(info, "w", force_zip64=True) as f:
            f.write(npy((2**27,)))
            for _ in range(16):
                f.write(bytes(64 << 20))

    files["1 GiB zip bomb member"] = rewrite("bomb.npz", "loss_history.npy", bomb)
    files["W1 header declares 20000x20000"] = rewrite(
        "header.npz", "W1.npy", lambda dst: dst.writestr("W1.npy", npy((20000, 20000), bytes(96))))
    return files


def refusals():
    print("refusing hostile files (one process; memory = growth of peak RSS)")
    with tempfile.TemporaryDirectory() as tmp:
        for name, path in hostile_files(Path(tmp)).items():
            before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            start = time.perf_counter()
            try:
                nbmlp.load(path)
                outcome = "loaded"
            except ValueError as exc:
                outcome = "ValueError: " + str(exc).split("model file: ")[-1][:70]
            seconds = time.perf_counter() - start
            grew = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
            print(f"  {name:32} {path.stat().st_size:>9,} bytes  {seconds * 1e3:7.2f} ms  +{grew:5.1f} MiB  {outcome}")


if __name__ == "__main__":
    check_cost()
    refusals()
