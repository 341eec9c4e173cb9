"""Attacks on everything a user hands in: damaged and hostile model files, killed saves, corrupted parameters.

Each attack runs in a child process (:func:`run_clean`), so a segfault, an abort or a
runaway allocation fails one test with the child's exit status instead of taking the
test run down.  The child prints one line per case; the test reads them.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import nbmlp

ROOT = Path(__file__).resolve().parents[1]
posix_only = pytest.mark.skipif(os.name != "posix", reason="uses POSIX rlimits, signals, fifos or ru_maxrss")


def run_python(code: str, *, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter that imports this checkout's nbmlp."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def run_clean(code: str, **kwargs) -> str:
    """The child's stdout, after asserting it exited normally (a negative status is the signal that killed it)."""
    proc = run_python(code, **kwargs)
    assert proc.returncode == 0, \
        f"child exited with status {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return proc.stdout


def results(stdout: str) -> dict:
    """The ``{case: outcome}`` lines a child printed as JSON."""
    return dict(json.loads(line) for line in stdout.splitlines() if line.startswith("["))


#: A small model carrying everything a file stores (format 2), built the same way in every child.
MODEL = """
import json, sys
import numpy as np
import nbmlp

def model():
    net = nbmlp.MLP((3, 4, 2), seed=0)
    net.loss_history = [0.5, 0.25]
    net.validation_loss_history = [0.6]
    net.validation_score_history = [0.75]
    net.optimizer_state = {"momentum.velocity.W1": np.full((3, 4), 0.125), "momentum.velocity.b2": np.ones(2),
                           "steps": 7, "name": "momentum", "beta": 0.9}
    net.preprocessing = {"mean": np.array([0.5, -1.0, 2.0]), "scale": np.array([1.0, 2.0, 4.0])}
    net.classes = np.array(["setosa", "versicolor"])
    return net

def same(a, b):
    assert (a.sizes, a.activations, a.loss_name, a.input_sigmoid, a.dtype) == \\
           (b.sizes, b.activations, b.loss_name, b.input_sigmoid, b.dtype)
    for p, q in zip(a.W + a.b, b.W + b.b, strict=True):
        assert p.dtype == q.dtype and p.tobytes() == q.tobytes()
    for name in ("loss_history", "validation_loss_history", "validation_score_history"):
        assert getattr(a, name) == getattr(b, name), name
    assert a.optimizer_state.keys() == b.optimizer_state.keys()
    for key, value in a.optimizer_state.items():
        other = b.optimizer_state[key]
        assert type(value) is type(other) and np.array_equal(value, other), key
    for key in ("mean", "scale"):
        assert a.preprocessing[key].tobytes() == b.preprocessing[key].tobytes()
    assert a.classes.tolist() == b.classes.tolist() and a.classes.dtype == b.classes.dtype
    return True

def report(case, outcome):
    print(json.dumps([case, outcome]), flush=True)
"""


def test_every_truncation_and_random_byte_flips_give_value_error_or_the_same_model(tmp_path):
    out = run_clean(MODEL + f"""
path, bad = {str(tmp_path / "good.npz")!r}, {str(tmp_path / "bad.npz")!r}
net = model()
net.save(path)
good = open(path, "rb").read()
cases = [("truncated at %d" % k, good[:k]) for k in range(len(good))]
rng = np.random.default_rng(13)
for _ in range(400):
    raw = bytearray(good)
    at = int(rng.integers(len(raw)))
    raw[at] ^= int(rng.integers(1, 256))
    cases.append(("byte %d changed" % at, bytes(raw)))
counts = {{"ValueError": 0, "same model": 0}}
for case, data in cases:
    with open(bad, "wb") as f:
        f.write(data)
    try:
        loaded = nbmlp.load(bad)
    except ValueError as exc:
        assert "is not a valid nbmlp model file" in str(exc), exc
        counts["ValueError"] += 1
        continue
    except Exception as exc:
        report(case, f"{{type(exc).__name__}}: {{exc}}")
        continue
    try:
        same(loaded, net)
        counts["same model"] += 1
    except AssertionError as exc:
        report(case, f"a different model: {{exc}}")
report("counts", counts)
report("size", len(good))
""")
    outcomes = results(out)
    counts, size = outcomes.pop("counts"), outcomes.pop("size")
    assert outcomes == {}, outcomes  # every case was a ValueError or the very same model
    assert counts["ValueError"] + counts["same model"] == size + 400
    assert counts["ValueError"] >= size  # every truncation is refused


def _child_builds_hostile_files(tmp_path) -> str:
    """A child that writes each hostile file, loads it, and reports the outcome, seconds and memory growth."""
    return MODEL + f"""
import resource, time, zipfile
import numpy.lib.format as npformat
folder = {str(tmp_path)!r}
net = model()
net.save(folder + "/good.npz")
with np.load(folder + "/good.npz") as f:
    good = {{k: f[k] for k in f.files}}

def npz(name, change=None, **kwargs):
    arrays = dict(good)
    if change:
        change(arrays)
    arrays.update(kwargs)
    with open(folder + "/" + name, "wb") as f:
        np.savez(f, **arrays)

def member_bytes(shape, data=b"", descr="<f8"):
    import io
    buf = io.BytesIO()
    npformat.write_array_header_1_0(buf, {{"descr": descr, "fortran_order": False, "shape": shape}})
    return buf.getvalue() + data

def zip_with(name, replace):
    with zipfile.ZipFile(folder + "/good.npz") as src, zipfile.ZipFile(folder + "/" + name, "w") as dst:
        for info in src.infolist():
            if info.filename[:-4] not in replace:
                dst.writestr(info.filename, src.read(info))
        for key, content in replace.items():
            dst.writestr(key + ".npy", content)

npz("huge_sizes.npz", lambda a: (a.update(sizes=np.array([20000, 20000]), activations=np.array(["sigmoid"])),
                                 a.pop("W2"), a.pop("b2")))
npz("sizes_1e6.npz", sizes=np.array([10**6, 10**6, 2]))
npz("sizes_1e12.npz", sizes=np.array([10**12, 10**12, 2]))
zip_with("declared_20000x20000.npz", {{"W1": member_bytes((20000, 20000), bytes(96))}})
def bomb(f):
    f.write(member_bytes((2**27,)))
    chunk = bytes(64 << 20)
    for _ in range(16):  # 1 GiB of zeros: deflated to about 1 MB
        f.write(chunk)
zinfo_bomb = zipfile.ZipInfo("loss_history.npy")
zinfo_bomb.compress_type = zipfile.ZIP_DEFLATED
with zipfile.ZipFile(folder + "/good.npz") as src, zipfile.ZipFile(folder + "/zip_bomb.npz", "w") as dst:
    for info in src.infolist():
        if info.filename != "loss_history.npy":
            dst.writestr(info.filename, src.read(info))
    with dst.open(zinfo_bomb, "w", force_zip64=True) as f:
        bomb(f)
with np.load(folder + "/good.npz") as f:
    np.savez_compressed(folder + "/compressed.npz", **{{k: f[k] for k in f.files}})
npz("object_array.npz", W1=np.array([[object()] * 4] * 3))
npz("int_weights.npz", W1=np.zeros((3, 4), dtype=np.int64))
npz("float32_weights.npz", W1=good["W1"].astype(np.float32))
npz("big_endian.npz", W1=good["W1"].astype(">f8"))
npz("nan_weights.npz", W2=np.full((4, 2), np.nan))
npz("transposed.npz", W1=good["W1"].T.copy())
npz("bias_length.npz", b1=np.zeros(7))
npz("bytes_dtype.npz", loss=np.array(b"half_sse"))
npz("negative_sizes.npz", sizes=np.array([3, -4, 2]))
npz("version_99.npz", format_version=np.array(99))
npz("unknown_entry.npz", extra=np.zeros(3))
npz("optimizer_wrong_shape.npz", **{{"optimizer_state.momentum.velocity.W1": np.zeros((4, 3))}})
npz("optimizer_too_big.npz", **{{"optimizer_state.buffer": np.zeros(10**5)}})
npz("optimizer_object.npz", **{{"optimizer_state.steps": np.array([None, 1])}})
npz("preprocessing_half.npz", lambda a: a.pop("preprocessing.scale"))
npz("preprocessing_shape.npz", **{{"preprocessing.mean": np.zeros(5)}})
npz("preprocessing_zero_scale.npz", **{{"preprocessing.scale": np.zeros(3)}})
npz("too_many_classes.npz", classes=np.arange(50))
npz("activation_unknown.npz", activations=np.array(["sigmoid", "swish"]))
with zipfile.ZipFile(folder + "/duplicate.npz", "w") as dst, zipfile.ZipFile(folder + "/good.npz") as src:
    for info in src.infolist():
        dst.writestr(info.filename, src.read(info))
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dst.writestr("W1.npy", src.read("W1.npy"))

def attempt(case, **kwargs):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    try:
        nbmlp.load(folder + "/" + case, **kwargs)
        outcome = "loaded"
    except Exception as exc:  # a ValueError subclass (ModelFileError) reports as ValueError
        outcome = f"{{'ValueError' if isinstance(exc, ValueError) else type(exc).__name__}}: {{exc}}"
    grew = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024  # MiB (Linux: KiB)
    report(case, [outcome, time.perf_counter() - start, grew])
"""


HOSTILE = {
    # refused by the stored W1's shape, or (on a machine with under 6.4 GB) by the memory cap
    "huge_sizes.npz": r"W1 has shape \(3, 4\) and dtype float64; the architecture needs shape \(20000, 20000\)"
                      r"|needs 400,020,000 parameters",
    "sizes_1e6.npz": r"sizes=\(1000000, 1000000, 2\) needs 1,000,003,000,002 parameters",
    "sizes_1e12.npz": r"needs .* parameters",
    "declared_20000x20000.npz": r"'W1' declares shape \(20000, 20000\) of float64 \(3200000000 bytes\) but holds 96",
    "zip_bomb.npz": r"'loss_history.npy' is compressed",
    "compressed.npz": r"is compressed",
    "object_array.npz": r"'W1' has dtype object",
    "int_weights.npz": r"W1 has shape \(3, 4\) and dtype int64",
    "float32_weights.npz": r"W1 has shape \(3, 4\) and dtype float32",
    "big_endian.npz": r"W1 has shape \(3, 4\) and dtype >f8",
    "nan_weights.npz": r"W2 contains NaN",
    "transposed.npz": r"W1 has shape \(4, 3\)",
    "bias_length.npz": r"b1 has shape \(7,\)",
    "bytes_dtype.npz": r"'loss' has dtype \|S8",
    "negative_sizes.npz": r"'sizes' must list at least two positive",
    "version_99.npz": r"format version 99",
    "unknown_entry.npz": r"unexpected entries \['extra'\]",
    "optimizer_wrong_shape.npz": r"optimizer_state\['momentum.velocity.W1'\] has shape \(4, 3\)",
    "optimizer_too_big.npz": r"optimizer_state\['buffer'\] holds 100000 values, more than the net's 26 parameters",
    "optimizer_object.npz": r"'optimizer_state.steps' has dtype object",
    "preprocessing_half.npz": r"needs both 'preprocessing.mean' and 'preprocessing.scale'",
    "preprocessing_shape.npz": r"preprocessing.mean has shape \(5,\); the architecture needs shape \(3,\)",
    "preprocessing_zero_scale.npz": r"preprocessing.scale must be finite \(and the scale non-zero\)",
    "too_many_classes.npz": r"'classes' holds 50 labels for 2 outputs",
    "activation_unknown.npz": r"its architecture is not valid: activation of layer 2",
    "duplicate.npz": r"the member 'W1.npy' appears twice",
}


@posix_only
def test_hostile_files_are_refused_before_anything_big_is_built(tmp_path):
    code = _child_builds_hostile_files(tmp_path) + "".join(f"attempt({case!r})\n" for case in HOSTILE)
    outcomes = results(run_clean(code))
    import re

    for case, pattern in HOSTILE.items():
        outcome, seconds, grew_mib = outcomes[case]
        assert outcome.startswith("ValueError: ") and "is not a valid nbmlp model file" in outcome, (case, outcome)
        assert case in outcome, (case, outcome)  # the message names the file
        assert re.search(pattern, outcome), (case, outcome)
        assert grew_mib < 64, (case, grew_mib)  # refused from headers: nothing the size of the declared data


def test_a_bad_engine_argument_is_blamed_not_the_file(tmp_path):
    net = nbmlp.MLP((3, 4, 2), seed=0)
    net.save(tmp_path / "m.npz")
    with pytest.raises(ValueError, match=r"^engine must be one of .* got 'bogus'$"):
        nbmlp.load(tmp_path / "m.npz", engine="bogus")


def test_version_1_files_still_load(tmp_path):
    net = nbmlp.MLP((3, 4, 2), seed=0)
    arrays = {"nbmlp_format": np.array("nbmlp.MLP"), "format_version": np.array(1), "sizes": np.array([3, 4, 2]),
              "activations": np.array(["sigmoid", "sigmoid"]), "loss": np.array("half_sse"),
              "input_sigmoid": np.array(True), "dtype": np.array("float64"), "engine": np.array("loops"),
              "loss_history": np.array([1.0, 0.5]), "W1": net.W[0], "b1": net.b[0], "W2": net.W[1], "b2": net.b[1],
              "meta.classes": np.array(["a", "b"])}
    with open(tmp_path / "v1.npz", "wb") as f:
        np.savez(f, **arrays)
    loaded, meta = nbmlp.load(tmp_path / "v1.npz", return_metadata=True)
    for p, q in zip(loaded.W + loaded.b, net.W + net.b, strict=True):
        np.testing.assert_array_equal(p, q)
    assert loaded.loss_history == [1.0, 0.5] and loaded.optimizer_state is None and loaded.classes is None
    assert list(meta["classes"]) == ["a", "b"]


def test_format_2_round_trip_is_bit_exact(tmp_path):
    out = run_clean(MODEL + f"""
net = model()
net.save({str(tmp_path / "m.npz")!r})
loaded = nbmlp.load({str(tmp_path / "m.npz")!r})
report("same", same(net, loaded) and same(loaded, net))
report("types", sorted(type(v).__name__ for v in loaded.optimizer_state.values()))
""")
    assert results(out) == {"same": True, "types": ["float", "int", "ndarray", "ndarray", "str"]}


# -- saving: a failed or killed save leaves the previous file as it was ----------------------------------------

SAVE_CHILD = MODEL + """
import os, resource, signal
path = sys.argv[1] if len(sys.argv) > 1 else None
"""


def _old_model(tmp_path):
    net = nbmlp.MLP((3, 4, 2), seed=1)
    path = tmp_path / "model.npz"
    net.save(path)
    return path, path.read_bytes()


def _leftovers(tmp_path):
    return sorted(p.name for p in tmp_path.iterdir() if p.name != "model.npz")


def test_a_save_that_fails_at_the_rename_leaves_the_old_file_and_no_temp_file(tmp_path, monkeypatch):
    path, before = _old_model(tmp_path)

    def failing_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="No space left"):
        nbmlp.MLP((3, 40, 2), seed=2).save(path)
    assert path.read_bytes() == before and _leftovers(tmp_path) == []


def test_ctrl_c_during_a_save_leaves_the_old_file_and_no_temp_file(tmp_path, monkeypatch):
    path, before = _old_model(tmp_path)

    def interrupted(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        nbmlp.MLP((3, 40, 2), seed=2).save(path)
    assert path.read_bytes() == before and _leftovers(tmp_path) == []


@posix_only
@pytest.mark.parametrize("ignore_sigxfsz", [True, False], ids=["EFBIG error", "killed by SIGXFSZ"])
def test_a_save_over_the_file_size_limit_leaves_the_old_file(tmp_path, ignore_sigxfsz):
    """Python ignores SIGXFSZ (writes fail with EFBIG); a process that does not is killed mid-write."""
    path, before = _old_model(tmp_path)
    proc = run_python(MODEL + f"""
import resource, signal
signal.signal(signal.SIGXFSZ, signal.SIG_IGN if {ignore_sigxfsz} else signal.SIG_DFL)
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))  # like a full disk, a few KB into the write
try:
    nbmlp.MLP((3, 400, 2), seed=2).save({str(path)!r})
except OSError as exc:
    report("error", f"{{type(exc).__name__}}: {{exc}}")
""")
    if ignore_sigxfsz:
        assert proc.returncode == 0, proc.stderr
        assert "File too large" in results(proc.stdout)["error"]
        assert _leftovers(tmp_path) == []  # the temporary file was removed
    else:
        assert proc.returncode == -signal.SIGXFSZ, (proc.returncode, proc.stderr)
    assert path.read_bytes() == before


def test_a_save_killed_midway_leaves_the_old_file(tmp_path):
    path, before = _old_model(tmp_path)
    code = MODEL + f"""
import os, time
real_fsync = os.fsync
def slow_fsync(fd):
    print("writing", flush=True)
    time.sleep(60)
os.fsync = slow_fsync
nbmlp.MLP((3, 400, 2), seed=2).save({str(path)!r})
"""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    child = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "writing"
        child.kill()  # SIGKILL: no cleanup of any kind runs
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
        child.stdout.close()
    assert path.read_bytes() == before
    nbmlp.load(path)


def test_a_save_into_a_missing_directory_fails_before_writing(tmp_path):
    net = nbmlp.MLP((3, 4, 2), seed=0)
    with pytest.raises(FileNotFoundError, match="the directory .*nope.* does not exist"):
        net.save(tmp_path / "nope" / "m.npz")
    with pytest.raises(IsADirectoryError, match="it is a directory"):
        net.save(tmp_path)
    assert list(tmp_path.iterdir()) == []


# -- corrupted parameters with the real kernels of every engine ------------------------------------------------

CORRUPT_CHILD = """
import json, sys
import numpy as np
import nbmlp

engine = sys.argv[1]
X = np.random.default_rng(0).normal(size=(6, 4))
T = np.random.default_rng(1).random((6, 3))
mutations = {
    "transposed": lambda n: n.W.__setitem__(0, n.W[0].T.copy()),
    "W replaced by (2, 128)": lambda n: n.W.__setitem__(0, np.zeros((2, 128))),
    "bias of length 7": lambda n: n.b.__setitem__(0, np.zeros(7)),
    "float32 W": lambda n: n.W.__setitem__(0, n.W[0].astype(np.float32)),
    "read-only": lambda n: n.W[0].setflags(write=False),
    "Fortran order": lambda n: n.W.__setitem__(1, np.asfortranarray(n.W[1])),
    "NaN": lambda n: n.W[0].__setitem__((0, 0), np.nan),
    "list": lambda n: n.W.__setitem__(0, n.W[0].tolist()),
    "sizes edited": lambda n: setattr(n, "sizes", (4, 50, 3)),
}
calls = {
    "forward": lambda n: n.forward(X),
    "gradients": lambda n: n.gradients(X, T),
    "fit": lambda n: n.fit(X, T, epochs=2, lr=0.1),
    "save": lambda n: n.save(sys.argv[2]),
}
for mutation, mutate in mutations.items():
    for call_name, call in calls.items():
        net = nbmlp.MLP((4, 5, 3), seed=0, engine=engine)
        try:
            mutate(net)
            call(net)
            outcome = "no error"
        except Exception as exc:
            outcome = f"{type(exc).__name__}: {exc}"
        print(json.dumps([f"{mutation} / {call_name}", outcome]), flush=True)
"""


@pytest.mark.parametrize("engine", ["loops", "tuned", "numpy"])
def test_corrupted_parameters_never_reach_the_kernels(engine, tmp_path):
    proc = run_python(CORRUPT_CHILD.replace("sys.argv[1]", repr(engine)).replace("sys.argv[2]",
                                                                                   repr(str(tmp_path / "m.npz"))))
    assert proc.returncode == 0, f"status {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    outcomes = results(proc.stdout)
    assert len(outcomes) == 9 * 4
    for case, outcome in outcomes.items():
        if case.startswith("sizes edited"):
            assert outcome.startswith("AttributeError: net.sizes is fixed"), (case, outcome)
        else:
            assert outcome.split(":")[0] in ("ValueError", "TypeError"), (case, outcome)
            assert "net.W[" in outcome or "net.b[" in outcome, (case, outcome)
    assert not (tmp_path / "m.npz").exists()



@posix_only
def test_a_fifo_or_device_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "model.npz"
    os.mkfifo(fifo)
    out = run_clean(MODEL + f"""
for path in ({str(fifo)!r}, "/dev/zero"):
    try:
        nbmlp.load(path)
    except ValueError as exc:
        report(path, str(exc))
""", timeout=120)
    assert all(message.endswith("it is not a regular file") for message in results(out).values())
    assert len(results(out)) == 2
