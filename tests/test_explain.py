"""``python -m nbmlp explain``: the printed sum, the printed value, the checks, the options."""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pytest

from nbmlp import explain
from nbmlp.__main__ import main as nbmlp_main
from nbmlp.network import MLP

NUM = r"([+-]\d+\.\d+)"
W_ROW = re.compile(rf"^\s+(\d+)\s+{NUM}\s+×\s+{NUM}\s+=\s+{NUM}\s*$")
B_ROW = re.compile(rf"^\s+(\d+)\s+{NUM}\s*$")
SUM_ROW = re.compile(rf"^\s+(?:sum of the terms|各项之和)\s+=\s+{NUM}\s*$")


def run(*args) -> tuple[int, str]:
    out = io.StringIO()
    rc = explain.main(["explain", *args], stream=out)
    return rc, out.getvalue()


def sections(text: str) -> list[str]:
    """One block of output per parameter."""
    return [block for block in text.split("\n\n")[1:] if block.startswith("── ")]


def parse_section(block: str) -> dict:
    rows, products, total, values = [], [], None, {}
    for line in block.splitlines():
        if m := W_ROW.match(line):
            rows.append(int(m.group(1)))
            a, b, t = (float(m.group(g)) for g in (2, 3, 4))
            products.append((a, b, t))
        elif m := B_ROW.match(line):
            rows.append(int(m.group(1)))
            products.append((None, None, float(m.group(2))))
        elif m := SUM_ROW.match(line):
            total = float(m.group(1))
        else:
            for key, label in (("loop", "nbmlp.kernels.linear_backward_"), ("matrix", "numpy"),
                               ("fd", "ε = ")):
                if label in line and "=" in line and key not in values and not line.lstrip().startswith(
                        ("agreement", "一致性")):
                    values[key] = float(line.rsplit("=", 1)[1])
    return {"rows": rows, "terms": products, "sum": total, **values}


def test_default_run_explains_w11_and_b1_of_each_layer():
    rc, text = run()
    assert rc == 0
    blocks = sections(text)
    heads = [b.splitlines()[0] for b in blocks]
    assert len(heads) == 4
    for head, name, index in zip(heads, explain.DEFAULT_PARAMS,
                                 ("net.W[0][0, 0]", "net.b[0][0]", "net.W[1][0, 0]", "net.b[1][0]"), strict=True):
        assert name in head and index in head
    assert "∂L/∂w₁₁⁽¹⁾" in heads[0] and "∂L/∂b₁⁽²⁾" in heads[3]
    assert text.count("all agree") == 4


@pytest.mark.parametrize("n", [1, 3, 7])
def test_printed_terms_sum_to_printed_value_and_checks_agree(n):
    rc, text = run("--n", str(n), "--seed", "3")
    assert rc == 0
    for block in sections(text):
        s = parse_section(block)
        assert s["rows"] == list(range(1, n + 1))
        for a, b, t in s["terms"]:
            if a is not None:  # a weight: the printed factors multiply to the printed term
                assert a * b == pytest.approx(t, abs=2e-10)
        printed_sum = sum(t for _, _, t in s["terms"])
        assert printed_sum == pytest.approx(s["sum"], abs=n * 1e-10)
        assert s["loop"] == pytest.approx(s["sum"], abs=1e-10)
        assert s["matrix"] == pytest.approx(s["loop"], abs=1e-10)
        assert s["fd"] == pytest.approx(s["loop"], abs=1e-8)


def test_numbers_come_from_the_loop_kernels_and_their_arrays():
    X, T, _ = explain.make_batch(3, 0)
    net = MLP(explain.SIZES, seed=0, engine="loops")
    g = net.gradients(X, T)
    p = explain.parse_param("W1[2,4]")
    e = explain.explain_param(p, net, X, T)
    assert e.loop == g.W[0][1, 3]
    np.testing.assert_array_equal([a for a, _ in e.factors], g.dL_dz[1][:, 3])
    np.testing.assert_array_equal([b for _, b in e.factors], g.h[0][:, 1])
    assert e.term_sum == pytest.approx(e.loop, abs=1e-15)
    ref = MLP(explain.SIZES, seed=0, engine="numpy").gradients(X, T)
    assert e.matrix == pytest.approx(ref.W[0][1, 3], abs=1e-15)
    # the finite difference perturbs the net and puts the parameter back
    np.testing.assert_array_equal(net.W[0], MLP(explain.SIZES, seed=0).W[0])
    assert e.agree


def test_selected_params_and_the_1_based_to_0_based_map():
    rc, text = run("--param", "W2[5,3]", "--param", "b1[4]")
    assert rc == 0
    blocks = sections(text)
    assert len(blocks) == 2
    assert "W2[5,3]" in blocks[0] and "net.W[1][4, 2]" in blocks[0] and "∂L/∂w₅₃⁽²⁾" in blocks[0]
    assert "b1[4]" in blocks[1] and "net.b[0][3]" in blocks[1] and "∂L/∂b₄⁽¹⁾" in blocks[1]


@pytest.mark.parametrize("text, expected", [
    ("W1[1,1]", ("W", 1, 1, 1)),
    ("w2[5, 3]", ("W", 2, 5, 3)),
    (" b1[5] ", ("b", 1, None, 5)),
    ("B2[3]", ("b", 2, None, 3)),
])
def test_parse_param(text, expected):
    p = explain.parse_param(text)
    assert (p.kind, p.layer, p.j, p.k) == expected


@pytest.mark.parametrize("bad, message", [
    ("W2[6,1]", "j must be 1..5"),
    ("W2[1,4]", "k must be 1..3"),
    ("W1[0,1]", "j must be 1..4"),
    ("b1[6]", "k must be 1..5"),
    ("b2[0]", "k must be 1..3"),
    ("W3[1,1]", "layer must be 1..2"),
    ("W1[1]", "needs two indices"),
    ("b1[1,1]", "has one index"),
    ("z1[1,1]", "cannot read"),
    ("W1[a,b]", "cannot read"),
])
def test_bad_param_is_a_clear_argparse_error(bad, message, capsys):
    with pytest.raises(SystemExit) as exc:
        explain.main(["explain", "--param", bad])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "argument --param" in err and message in err
    if "cannot read" in message or "layer" in message:  # the allowed ranges are listed
        assert "W1[j,k] (j = 1..4, k = 1..5)" in err and "b2[k] (k = 1..3)" in err


@pytest.mark.parametrize("bad", ["0", "-2", "x"])
def test_bad_n_is_an_argparse_error(bad, capsys):
    with pytest.raises(SystemExit) as exc:
        explain.main(["explain", "--n", bad])
    assert exc.value.code == 2
    assert "argument --n" in capsys.readouterr().err


def test_lang_zh_prints_chinese_labels():
    rc, text = run("--lang", "zh", "--param", "W1[1,1]", "--param", "b2[2]")
    assert rc == 0
    for label in ("公式", "逐项展开", "各项之和", "循环核", "矩阵形式", "中心差分", "一致性", "全部一致", "讲义"):
        assert label in text
    assert "formula" not in text and "all agree" not in text
    for block in sections(text):
        s = parse_section(block)
        assert sum(t for _, _, t in s["terms"]) == pytest.approx(s["sum"], abs=1e-9)
        assert s["fd"] == pytest.approx(s["loop"], abs=1e-8)


def test_float32_agrees_within_its_tolerance():
    rc, text = run("--dtype", "float32", "--param", "W1[3,2]", "--param", "b2[1]")
    assert rc == 0
    assert text.count("all agree") == 2 and "float32" in text


def test_python_m_nbmlp_dispatches_to_explain(capsys):
    assert nbmlp_main(["explain", "--param", "b2[1]"]) == 0
    out = capsys.readouterr().out
    assert "nbmlp.kernels.linear_backward_bias" in out and "all agree" in out


def test_the_readme_shows_a_real_run():
    """The output printed in README.md is what the command prints (numbers to 1e-8)."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    m = re.search(r"^\$ python -m nbmlp explain --param \"W2\[1,1\]\"\n(.*?)^```", readme, flags=re.S | re.M)
    assert m, "README.md shows no output of python -m nbmlp explain --param \"W2[1,1]\""
    rc, text = run("--param", "W2[1,1]")
    assert rc == 0
    number = re.compile(r"[+-]?\d+\.\d+(?:e[+-]\d+)?")
    shown, actual = m.group(1).strip().splitlines(), text.strip().splitlines()
    assert [number.sub("#", line).rstrip() for line in shown] == [number.sub("#", line).rstrip() for line in actual]
    for a, b in zip(number.findall(m.group(1)), number.findall(text), strict=True):
        assert float(a) == pytest.approx(float(b), abs=1e-8)
