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


@pytest.mark.parametrize("bad", ["-1", "x", "1.5"])
def test_bad_seed_is_an_argparse_error(bad, capsys):
    with pytest.raises(SystemExit) as exc:
        explain.main(["explain", "--seed", bad])
    assert exc.value.code == 2
    assert "argument --seed" in capsys.readouterr().err


def test_lang_zh_prints_chinese_labels():
    rc, text = run("--lang", "zh", "--param", "W1[1,1]", "--param", "b2[2]")
    assert rc == 0
    for label in ("公式", "逐项展开", "各项之和", "循环实现", "矩阵形式", "中心差分", "一致性", "全部一致", "讲义"):
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


# ---------------------------------------------------------------------------
# An independent backward pass, written out in NumPy here (not nbmlp's code)
# ---------------------------------------------------------------------------


def numpy_pass(X, T, W, b, sigma_prime="h"):
    """Forward and backward of the note's all-sigmoid network with L = ½ΣΣ(t − h)².

    ``sigma_prime="z"`` uses the note's slip z(1 − z) at every layer.
    """
    s = lambda a: 1.0 / (1.0 + np.exp(-a))  # noqa: E731
    z, h = [X], [s(X)]
    for Wl, bl in zip(W, b, strict=True):
        z.append(h[-1] @ Wl + bl)
        h.append(s(z[-1]))
    L = len(W)
    dh, dz, dW, db = [None] * (L + 1), [None] * (L + 1), [None] * L, [None] * L
    dh[L] = h[L] - T
    for l in range(L, 0, -1):
        d = h[l] * (1 - h[l]) if sigma_prime == "h" else z[l] * (1 - z[l])
        dz[l] = dh[l] * d
        dW[l - 1] = h[l - 1].T @ dz[l]
        db[l - 1] = dz[l].sum(axis=0)
        dh[l - 1] = dz[l] @ W[l - 1].T
    dz[0] = dh[0] * h[0] * (1 - h[0])
    return {"z": z, "h": h, "dh": dh, "dz": dz, "dW": dW, "db": db, "loss": 0.5 * np.sum((T - h[L]) ** 2)}


def numpy_loss(X, T, W, b):
    return numpy_pass(X, T, W, b)["loss"]


MATRIX_ROW = re.compile(r"^\s+\[((?:\s*[+-]\d+\.\d+)+)\s*\]$")


def trace_blocks(text: str) -> list:
    """(heading, note, matrix) for every table --trace printed."""
    blocks, current = [], None
    for line in text.splitlines():
        if m := MATRIX_ROW.match(line):
            current[2].append([float(x) for x in m.group(1).split()])
        elif line.startswith("  ") and not line.startswith("   ") and " [" in line and line.endswith("]"):
            head, note = line.strip().split("   [", 1)
            current = (head, note[:-1], [])
            blocks.append(current)
    return [(h, n, np.array(m)) for h, n, m in blocks]


def test_trace_prints_every_quantity_in_the_notes_order_and_they_are_right():
    n, seed = 2, 0
    rc, text = run("--trace", "--n", str(n), "--seed", str(seed))
    assert rc == 0
    assert "──" not in text  # --trace alone prints no per-parameter sections
    X, T, _ = explain.make_batch(n, seed)
    net = MLP(explain.SIZES, seed=seed)
    ref = numpy_pass(X, T, net.W, net.b)
    expected = [
        ("X = z⁽⁰⁾", X), ("h⁽⁰⁾ = σ(z⁽⁰⁾)", ref["h"][0]),
        ("z⁽¹⁾ = h⁽⁰⁾ × W⁽¹⁾ + b⁽¹⁾", ref["z"][1]), ("h⁽¹⁾ = σ(z⁽¹⁾)", ref["h"][1]),
        ("z⁽²⁾ = h⁽¹⁾ × W⁽²⁾ + b⁽²⁾", ref["z"][2]), ("h⁽²⁾ = σ(z⁽²⁾)", ref["h"][2]), ("T", T),
        ("∂L/∂h⁽²⁾ = h⁽²⁾ − T", ref["dh"][2]),
        ("∂L/∂z⁽²⁾ = ∂L/∂h⁽²⁾ ⊙ h⁽²⁾ ⊙ (1 − h⁽²⁾)", ref["dz"][2]),
        ("∂L/∂W⁽²⁾ = (h⁽¹⁾)ᵀ × ∂L/∂z⁽²⁾", ref["dW"][1]),
        ("∂L/∂b⁽²⁾ = column sums of ∂L/∂z⁽²⁾", ref["db"][1]),
        ("∂L/∂h⁽¹⁾ = ∂L/∂z⁽²⁾ × (W⁽²⁾)ᵀ", ref["dh"][1]),
        ("∂L/∂z⁽¹⁾ = ∂L/∂h⁽¹⁾ ⊙ h⁽¹⁾ ⊙ (1 − h⁽¹⁾)", ref["dz"][1]),
        ("∂L/∂W⁽¹⁾ = (h⁽⁰⁾)ᵀ × ∂L/∂z⁽¹⁾", ref["dW"][0]),
        ("∂L/∂b⁽¹⁾ = column sums of ∂L/∂z⁽¹⁾", ref["db"][0]),
        ("∂L/∂h⁽⁰⁾ = ∂L/∂z⁽¹⁾ × (W⁽¹⁾)ᵀ", ref["dh"][0]),
        ("∂L/∂X = ∂L/∂z⁽⁰⁾ = ∂L/∂h⁽⁰⁾ ⊙ h⁽⁰⁾ ⊙ (1 − h⁽⁰⁾)", ref["dz"][0]),
    ]
    blocks = trace_blocks(text)
    assert [h for h, _, _ in blocks] == [h for h, _ in expected]
    for (head, note, printed), (_, want) in zip(blocks, expected, strict=True):
        want = np.atleast_2d(want)
        assert printed.shape == want.shape, head
        np.testing.assert_allclose(printed, want, atol=5.1e-7, err_msg=head)  # 6 decimals printed
        shape = "×".join(map(str, np.shape(want))) if want.shape[0] > 1 or "b⁽" not in head else None
        if shape:
            assert note.startswith(shape), (head, note)
        if head.startswith("∂L/∂"):  # every gradient states and checks its shape
            assert "✓" in note and "✗" not in note, (head, note)
    assert "(3,): ∂L/∂b⁽²⁾ has b⁽²⁾'s shape (3,)" in text and "4×5: ∂L/∂W⁽¹⁾ has W⁽¹⁾'s shape 4×5" in text
    m = re.search(r"L = ½ Σ_i Σ_k \(t_ik − h_ik⁽²⁾\)² = (\d+\.\d+)", text)
    assert float(m.group(1)) == pytest.approx(ref["loss"], abs=1e-10)


def test_trace_shape_check_fails_when_a_gradient_has_the_wrong_shape():
    X, T, _ = explain.make_batch(2, 0)
    net = MLP(explain.SIZES, seed=0)
    g = net.gradients(X, T)
    g.W[1] = g.W[1].T.copy()  # a transposed gradient (the note's 3×1 column for a row, the same kind of slip)
    text = explain.render_trace(net, X, T, g, explain.LABELS["en"])
    assert "3×5: ∂L/∂W⁽²⁾ has W⁽²⁾'s shape 5×3 ✗ (expected 5×3)" in text


def test_trace_shortens_long_matrices():
    rc, text = run("--trace", "--n", "20")
    assert rc == 0
    assert f"… {20 - explain.TRACE_ROWS} more rows (n = 20)" in text
    assert len(trace_blocks(text)[0][2]) == explain.TRACE_ROWS


def test_note_sigma_against_an_independent_numpy_computation():
    X, T, _ = explain.make_batch(3, 0)
    net = MLP(explain.SIZES, seed=0)
    note = numpy_pass(X, T, net.W, net.b, sigma_prime="z")
    right = numpy_pass(X, T, net.W, net.b)
    dz, dW, db = explain.note_sigma_gradients(net, X, T)
    for l in (0, 1):
        np.testing.assert_allclose(dW[l], note["dW"][l], rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(db[l], note["db"][l], rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(dz[l + 1], note["dz"][l + 1], rtol=1e-12, atol=1e-15)
    # the figures at the default seed: the note's ∂L/∂w₁₁⁽²⁾ has the wrong sign
    assert note["dW"][1][0, 0] == pytest.approx(-0.2282, abs=5e-5)
    assert right["dW"][1][0, 0] == pytest.approx(0.1934, abs=5e-5)

    rc, text = run("--note-sigma", "--param", "W2[1,1]", "--param", "W1[2,3]", "--param", "b1[4]")
    assert rc == 0
    blocks = sections(text)
    assert len(blocks) == 3
    for block, (want_note, want_right) in zip(blocks, [(note["dW"][1][0, 0], right["dW"][1][0, 0]),
                                                        (note["dW"][0][1, 2], right["dW"][0][1, 2]),
                                                        (note["db"][0][3], right["db"][0][3])], strict=True):
        got_note = float(re.search(rf"the note, z\(1 − z\)\s+= {NUM}", block).group(1))
        got_right = float(re.search(rf"correct, h\(1 − h\) \(loop kernel\)\s+= {NUM}", block).group(1))
        assert got_note == pytest.approx(want_note, abs=1e-10)
        assert got_right == pytest.approx(want_right, abs=1e-10)
    assert "opposite sign" in blocks[0]


def test_step_against_an_independent_numpy_step():
    eta = 0.7
    rc, text = run("--step", str(eta), "--seed", "2", "--n", "4")
    assert rc == 0
    X, T, _ = explain.make_batch(4, 2)
    net = MLP(explain.SIZES, seed=2)
    ref = numpy_pass(X, T, net.W, net.b)
    W = [w - eta * d for w, d in zip(net.W, ref["dW"], strict=True)]
    b = [v - eta * d for v, d in zip(net.b, ref["db"], strict=True)]
    values = {key: float(re.search(rf"^  {label}\s+= ([+-]?\d+\.\d+)$", text, re.M).group(1))
              for key, label in (("before", "L before"), ("after", "L after"), ("change", "change"))}
    assert values["before"] == pytest.approx(ref["loss"], abs=1e-10)
    assert values["after"] == pytest.approx(numpy_loss(X, T, W, b), abs=1e-10)
    assert values["change"] == pytest.approx(values["after"] - values["before"], abs=2e-10)
    assert ("L went down" in text) == (values["after"] < values["before"])
    # the step works on a copy: the printed network is unchanged
    np.testing.assert_array_equal(net.W[0], MLP(explain.SIZES, seed=2).W[0])


def test_a_huge_step_is_reported_as_going_up():
    rc, text = run("--step", "30", "--n", "10")
    assert rc == 0 and "L went up" in text


@pytest.mark.parametrize("bad", ["0", "-1", "nan", "inf", "x"])
def test_bad_step_is_an_argparse_error(bad, capsys):
    with pytest.raises(SystemExit) as exc:
        explain.main(["explain", "--step", bad])
    assert exc.value.code == 2
    assert "argument --step" in capsys.readouterr().err


def test_n_is_bounded_and_says_so(capsys):
    with pytest.raises(SystemExit):
        explain.main(["explain", "--n", str(explain.MAX_N + 1)])
    err = capsys.readouterr().err
    assert f"must be 1..{explain.MAX_N}" in err and str(explain.MAX_N + 1) in err
    with pytest.raises(SystemExit):
        explain.main(["explain", "--help"])
    assert f"1..{explain.MAX_N}" in capsys.readouterr().out.replace("\n", " ")


def test_no_false_disagree_at_the_largest_n():
    """The finite-difference tolerance grows with the sum: n = 10⁴ agrees, and a wrong formula still does not."""
    n = explain.MAX_N
    rc, text = run("--n", str(n), "--param", "W2[1,1]", "--param", "b1[2]", "--param", "W1[4,5]")
    assert rc == 0 and text.count("all agree") == 3
    X, T, _ = explain.make_batch(n, 0)
    net = MLP(explain.SIZES, seed=0)
    wrong = numpy_pass(X, T, net.W, net.b, sigma_prime="z")["dW"][1][0, 0]
    e = explain.explain_param(explain.parse_param("W2[1,1]"), net, X, T)
    assert e.agree
    assert abs(wrong - e.fd) > 100 * e.tolerances["fd"]  # the tolerance is not so loose that a slip passes
    assert abs(e.loop * (1 + 1e-4) - e.fd) > e.tolerances["fd"]  # nor a gradient off by 10⁻⁴ relative


def test_display_width():
    assert explain.display_width("各项之和") == 8
    assert explain.display_width("∂L/∂z_i1⁽²⁾") == 11
    assert explain.display_width("项 h(1−h)") == 9
    assert explain.rjust("项", 4) == "  项" and explain.ljust("循环", 6) == "循环  "


def test_lang_zh_is_aligned_by_display_width_with_chinese_punctuation():
    rc, text = run("--lang", "zh", "--param", "W1[1,1]", "--param", "b2[2]", "--note-sigma", "--step", "0.5",
                   "--trace", "--n", "2")
    assert rc == 0
    rc, plain = run("--lang", "zh", "--param", "W1[1,1]", "--param", "b2[2]")
    for block in sections(plain):
        lines = block.splitlines()
        values = [ln for ln in lines if ln.startswith(("  循环实现 ", "  矩阵形式 ", "  中心差分 "))]
        assert len(values) == 3
        assert len({explain.display_width(ln[:ln.rindex(" = ")]) for ln in values}) == 1, values
        table = [ln for ln in lines if W_ROW.match(ln) or B_ROW.match(ln) or SUM_ROW.match(ln)]
        head = lines[lines.index(table[0]) - 1]
        widths = {explain.display_width(ln.rstrip()) for ln in [head, *table]}
        assert len(widths) == 1, [head, *table]  # right-aligned columns end in the same column
    # Chinese punctuation after Chinese text: no ASCII colon, comma, semicolon or parenthesis
    assert not re.search(r"[\u4e00-\u9fff][:,;(]", text), re.findall(r".{6}[\u4e00-\u9fff][:,;(].{6}", text)
    assert "（" in text and "：" in text and "，" in text
    assert "，nbmlp.kernels.sigmoid_backward" in text and ", nbmlp" not in text


@pytest.mark.parametrize("args, words", [
    (["--param", "W3[1,1]"], ["参数 --param", "层号应为 1..2", "W1[j,k]（j = 1..4，k = 1..5）"]),
    (["--param", "W1[9,1]"], ["参数 --param", "j 应为 1..4"]),
    (["--n", "0"], ["参数 --n", "应为 1..10000"]),
    (["--n", "x"], ["参数 --n", "不是整数"]),
    (["--step", "-1"], ["参数 --step", "大于 0"]),
    (["--dtype", "x"], ["参数 --dtype", "无效的选择"]),
])
def test_lang_zh_error_messages_are_chinese(args, words, capsys):
    with pytest.raises(SystemExit) as exc:
        explain.main(["explain", "--lang", "zh", *args])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    for word in words:
        assert word in err, err
    assert "用法：" in err and "error" not in err and "argument" not in err and "must be" not in err


def test_html_page_is_self_contained_and_carries_nbmlps_numbers(tmp_path):
    import json

    path = tmp_path / "page.html"
    out = io.StringIO()
    assert explain.main(["explain", "--html", str(path), "--n", "2", "--seed", "1"], stream=out) == 0
    assert str(path) in out.getvalue()
    page = path.read_text(encoding="utf-8")
    assert "<script src" not in page and "<link" not in page and "@import" not in page and "url(" not in page
    # the only URL is the SVG namespace name, which is an identifier and never fetched
    assert set(re.findall(r"https?://[^\s'\"]+", page)) == {"http://www.w3.org/2000/svg"}
    data = json.loads(re.search(r'<script type="application/json" id="nbmlp-data">(.*?)</script>', page,
                                re.S).group(1).replace("<\\/", "</"))
    X, T, _ = explain.make_batch(2, 1)
    net = MLP(explain.SIZES, seed=1)
    ref = numpy_pass(X, T, net.W, net.b)
    assert len(data["params"]) == 4 * 5 + 5 + 5 * 3 + 3
    for name, p in data["params"].items():
        q = explain.parse_param(name)
        want = ref["dW"][q.layer - 1][q.j - 1, q.k - 1] if q.kind == "W" else ref["db"][q.layer - 1][q.k - 1]
        assert p["loop"] == pytest.approx(want, abs=1e-12)
        assert sum(p["terms"]) == pytest.approx(want, abs=1e-12) and p["agree"]
        assert p["text"].startswith(f"── ∂L/∂{q.symbol}")
    assert (tmp_path / "page.html").stat().st_mode & 0o044  # readable like any file, not mkstemp's 0600
    assert [f.name for f in tmp_path.iterdir()] == ["page.html"]  # no temporary left behind


def test_html_into_a_missing_folder_is_one_line_error(tmp_path, capsys):
    target = tmp_path / "missing" / "page.html"
    with pytest.raises(SystemExit) as exc:
        explain.main(["explain", "--html", str(target), "--lang", "zh"])
    assert exc.value.code == 1
    err = capsys.readouterr().err
    assert "文件夹" in err and "不存在" in err and len(err.strip().splitlines()) == 1
    assert not target.parent.exists()


def test_html_onto_a_folder_is_one_line_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        explain.main(["explain", "--html", str(tmp_path)])
    assert exc.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("python -m nbmlp explain: cannot write") and len(err.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_html_bounds_n(tmp_path, capsys):
    target = tmp_path / "page.html"
    with pytest.raises(SystemExit) as exc:
        explain.main(["explain", "--html", str(target), "--n", str(explain.HTML_MAX_N + 1)])
    assert exc.value.code == 2
    assert f"--html takes --n 1..{explain.HTML_MAX_N}" in capsys.readouterr().err
    assert not target.exists()
