r"""``python -m nbmlp explain``: watch the note's gradients being computed.

On a tiny seeded batch of the lecture note's 4-5-3 sigmoid network (loss
L = ½ Σ_i Σ_k (t_ik - h_ik^(2))^2), for each chosen parameter this prints

1. the formula in index form, e.g. ∂L/∂w_jk^(2) = Σ_i ∂L/∂z_ik^(2) · h_ij^(1);
2. the sum written out term by term, one row per sample i, with the numbers
   read from the arrays the loop kernels produced (``g.dL_dz``, ``g.h``);
3. where the first ∂L/∂z factor itself comes from (one step down the chain);
4. the value the loop kernel wrote (``nbmlp.kernels.linear_backward_weight``
   or ``nbmlp.kernels.linear_backward_bias``), the same entry from the matrix
   form (engine ``"numpy"``, :mod:`nbmlp.reference`), and a central finite
   difference (L(θ + ε) - L(θ - ε)) / 2ε from two calls of :meth:`MLP.loss`;
5. whether they agree, and within which tolerance (see :func:`tolerances`).

Other views of the same batch:

* ``--trace``: every matrix of one forward and backward pass, in the note's
  order, each with its shape checked (a gradient has the shape of what it
  differentiates), down to ∂L/∂X;
* ``--note-sigma``: each gradient computed with the note's σ′ = z(1 - z)
  beside the correct h(1 - h);
* ``--step ETA``: the loss before and after one gradient-descent step;
* ``--html FILE``: one self-contained page (:mod:`nbmlp.explain_html`).

Parameters are named as in the note, 1-based: ``W1[j,k]``, ``b1[k]``,
``W2[j,k]``, ``b2[k]``; the 0-based array index (``net.W[0][j-1, k-1]``) is
shown beside.  ``--lang zh`` prints labels and error messages in Chinese,
aligned by display width (CJK characters take two columns).
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
import tempfile
import unicodedata
from dataclasses import dataclass

import numpy as np

from .datasets import one_hot
from .engines import get_engine
from .explain_html import render_page
from .network import MLP

#: The note's network.
SIZES = (4, 5, 3)

#: Parameters explained when no ``--param`` is given: ∂L/∂w₁₁ and ∂L/∂b₁ of each layer.
DEFAULT_PARAMS = ("W1[1,1]", "b1[1]", "W2[1,1]", "b2[1]")

#: The largest batch ``--n`` accepts.  explain prints one row per sample and is
#: meant to be read; 10⁴ rows is far past readable and costs a few MB.
MAX_N = 10_000

#: The largest batch ``--html`` accepts: the page embeds every term of all 43 sums
#: (about 7 kB per sample: n = 100 gives a 0.7 MB page).
HTML_MAX_N = 100

#: ``--trace`` prints at most this many rows of each n-row matrix.
TRACE_ROWS = 8

_PARAM_RE = re.compile(r"^\s*([WwBb])\s*(\d+)\s*\[\s*(\d+)\s*(?:,\s*(\d+)\s*)?\]\s*$")

LABELS = {
    "en": {
        "title": "nbmlp explain: the note's {sizes} sigmoid network, one gradient at a time",
        "loss": "loss L = ½ Σ_i Σ_k (t_ik − h_ik^(2))²  (a sum over the n samples and the 3 outputs)",
        "batch": "batch: n = {n} samples, X = z^(0) ~ N(0, 1) (seed {seed}), "
                 "T one-hot with t_ik = 1 at k = {labels} (i = 1..n); "
                 "weights MLP({sizes}, seed={seed}), {dtype}",
        "value_L": "L = {L}",
        "param": "parameter",
        "one_based": "1-based as in the note",
        "array": "0-based array entry",
        "formula": "formula",
        "with": "with",
        "written_out": "written out, one term per sample i",
        "term": "term",
        "sum": "sum of the terms",
        "where": "where",
        "for_i1": "for i = 1",
        "kernel": "loop kernel",
        "matrix": "matrix form",
        "fd": "finite difference",
        "agreement": "agreement",
        "loop_vs_terms": "loop − terms",
        "loop_vs_matrix": "loop − matrix",
        "loop_vs_fd": "loop − finite difference",
        "tol": "tolerance",
        "agree": "all agree",
        "disagree": "DISAGREE",
        "engine": "engine",
        "colsum": "column sums of {x}",
        "colon": ": ",
        "comma": ", ",
        "semicolon": "; ",
        "lp": " (",
        "rp": ")",
        # --trace
        "forward": "forward pass",
        "backward": "backward pass, in the note's order",
        "input": "the input batch",
        "targets": "the targets, one-hot",
        "more_rows": "… {m} more rows (n = {n})",
        "shape_of": "{shape}, the shape of {x}",
        "grad_shape": "{shape}: ∂L/∂{x} has {x}'s shape {want}",
        "ok": "✓",
        "bad": "✗ (expected {want})",
        "colsum_formula": "column sums of {x}",
        "input_grad": "the gradient with respect to the input batch X",
        # --note-sigma
        "ns_head": "with the note's σ′ = z(1 − z) beside the correct σ′ = h(1 − h)",
        "ns_rule": "the note's rule, carried to every layer: ∂L/∂z_ik = ∂L/∂h_ik · z_ik (1 − z_ik) "
                   "(nbmlp.kernels.sigmoid_backward handed z where it expects h)",
        "ns_correct": "correct, h(1 − h)",
        "ns_note": "the note, z(1 − z)",
        "ns_sign": "the note's formula gives the opposite sign: a descent step along it climbs",
        "ns_off": "the note's formula is off by {d:.1e}",
        "ns_same": "here the two agree",
        # --step
        "step_head": "one gradient-descent step, η = {eta}: θ ← θ − η ∂L/∂θ for every weight and bias "
                     "(nbmlp.kernels.sgd_update)",
        "before": "L before",
        "after": "L after",
        "change": "change",
        "predicted": "first-order estimate −η Σ_θ (∂L/∂θ)²",
        "down": "L went down",
        "up": "L went up: η is too large for this batch",
        # --html
        "wrote": "wrote {path} (one self-contained page: open it in a browser)",
    },
    "zh": {
        "title": "nbmlp explain：讲义中的 {sizes} sigmoid 网络，一次看一个梯度",
        "loss": "损失 L = ½ Σ_i Σ_k (t_ik − h_ik^(2))²（对 n 个样本和 3 个输出求和）",
        "batch": "批数据：n = {n} 个样本，X = z^(0) ~ N(0, 1)（种子 {seed}），"
                 "T 为独热编码，t_ik = 1 处的 k 依次为 {labels}；"
                 "权重 MLP({sizes}, seed={seed})，{dtype}",
        "value_L": "L = {L}",
        "param": "参数",
        "one_based": "下标从 1 开始，与讲义相同",
        "array": "数组元素，下标从 0 开始",
        "formula": "公式",
        "with": "其中",
        "written_out": "逐项展开，每个样本 i 一项",
        "term": "项",
        "sum": "各项之和",
        "where": "其中",
        "for_i1": "取 i = 1",
        "kernel": "循环实现",
        "matrix": "矩阵形式",
        "fd": "中心差分",
        "agreement": "一致性",
        "loop_vs_terms": "循环 − 逐项和",
        "loop_vs_matrix": "循环 − 矩阵形式",
        "loop_vs_fd": "循环 − 中心差分",
        "tol": "容差",
        "agree": "全部一致",
        "disagree": "不一致",
        "engine": "引擎",
        "colsum": "{x} 的各列之和",
        "colon": "：",
        "comma": "，",
        "semicolon": "；",
        "lp": "（",
        "rp": "）",
        "forward": "前向传播",
        "backward": "反向传播（按讲义的顺序）",
        "input": "输入批数据",
        "targets": "目标值（独热编码）",
        "more_rows": "… 另有 {m} 行（n = {n}）",
        "shape_of": "{shape}，与 {x} 的形状相同",
        "grad_shape": "{shape}：∂L/∂{x} 与 {x} 的形状相同，为 {want}",
        "ok": "✓",
        "bad": "✗（应为 {want}）",
        "colsum_formula": "{x} 的各列之和",
        "input_grad": "损失对输入批数据 X 的梯度",
        "ns_head": "讲义的 σ′ = z(1 − z) 与正确的 σ′ = h(1 − h) 并列",
        "ns_rule": "按讲义的写法推广到每一层：∂L/∂z_ik = ∂L/∂h_ik · z_ik (1 − z_ik)"
                   "（相当于把 z 当作 h 传给 nbmlp.kernels.sigmoid_backward）",
        "ns_correct": "正确，h(1 − h)",
        "ns_note": "讲义，z(1 − z)",
        "ns_sign": "讲义的公式给出相反的符号：沿它“下降”反而使损失上升",
        "ns_off": "讲义的公式偏差为 {d:.1e}",
        "ns_same": "此处两者一致",
        "step_head": "一步梯度下降，η = {eta}：对每个权重和偏置 θ ← θ − η ∂L/∂θ"
                     "（nbmlp.kernels.sgd_update）",
        "before": "更新前 L",
        "after": "更新后 L",
        "change": "变化量",
        "predicted": "一阶估计 −η Σ_θ (∂L/∂θ)²",
        "down": "L 下降了",
        "up": "L 上升了：对这批数据 η 太大",
        "wrote": "已写入 {path}（一个自包含的网页，用浏览器打开即可）",
    },
}

#: Error messages, in both languages (``--lang`` also sets the language of errors).
ERRORS = {
    "en": {
        "cannot_read": "cannot read {text!r}; write one of {allowed}",
        "layer": "{text!r}: layer must be 1..{L}; allowed: {allowed}",
        "two_indices": "{text!r}: a weight needs two indices, W{l}[j,k] with j = 1..{d_in}, k = 1..{d_out}",
        "j_range": "{text!r}: j must be 1..{d_in} (W{l} is {d_in}×{d_out}, indices are 1-based as in the note)",
        "k_range_W": "{text!r}: k must be 1..{d_out} (W{l} is {d_in}×{d_out}, indices are 1-based as in the note)",
        "one_index": "{text!r}: a bias has one index, b{l}[k] with k = 1..{d_out}",
        "k_range_b": "{text!r}: k must be 1..{d_out} (b{l} has {d_out} entries, indices are 1-based as in the note)",
        "allowed_W": "W{l}[j,k] (j = 1..{d_in}, k = 1..{d_out}), b{l}[k] (k = 1..{d_out})",
        "not_int": "{text!r} is not an integer",
        "n_range": "must be 1..{max_n} (explain prints one row per sample), got {value}",
        "seed_range": "must be an integer >= 0, got {text}",
        "not_number": "{text!r} is not a number",
        "eta_range": "must be a finite number > 0, got {text}",
        "html_dir": "cannot write {path}: the folder {folder} does not exist",
        "html_n": "--html takes --n 1..{max_n} (the page holds every term of every sum), got {n}",
        "html_write": "cannot write {path}: {reason}",
    },
    "zh": {
        "cannot_read": "无法识别 “{text}”；请写成以下之一：{allowed}",
        "layer": "“{text}”：层号应为 1..{L}；可用的参数：{allowed}",
        "two_indices": "“{text}”：权重需要两个下标，W{l}[j,k]，j = 1..{d_in}，k = 1..{d_out}",
        "j_range": "“{text}”：j 应为 1..{d_in}（W{l} 是 {d_in}×{d_out} 矩阵，下标与讲义一样从 1 开始）",
        "k_range_W": "“{text}”：k 应为 1..{d_out}（W{l} 是 {d_in}×{d_out} 矩阵，下标与讲义一样从 1 开始）",
        "one_index": "“{text}”：偏置只有一个下标，b{l}[k]，k = 1..{d_out}",
        "k_range_b": "“{text}”：k 应为 1..{d_out}（b{l} 有 {d_out} 个元素，下标与讲义一样从 1 开始）",
        "allowed_W": "W{l}[j,k]（j = 1..{d_in}，k = 1..{d_out}）、b{l}[k]（k = 1..{d_out}）",
        "not_int": "“{text}” 不是整数",
        "n_range": "应为 1..{max_n}（explain 每个样本打印一行），实际为 {value}",
        "seed_range": "应为不小于 0 的整数，实际为 {text}",
        "not_number": "“{text}” 不是数",
        "eta_range": "应为大于 0 的有限数，实际为 {text}",
        "html_dir": "无法写入 {path}：文件夹 {folder} 不存在",
        "html_n": "--html 要求 --n 为 1..{max_n}（网页包含每个求和的每一项），实际为 {n}",
        "html_write": "无法写入 {path}：{reason}",
    },
}

_SUB = str.maketrans("0123456789", "₀₁₂₃₄₅₆₇₈₉")
_SUP = str.maketrans("0123456789()", "⁰¹²³⁴⁵⁶⁷⁸⁹⁽⁾")


def _sub(*indices) -> str:
    """Subscript digits: (1, 1) -> '₁₁'; with a comma when an index has two digits."""
    parts = [str(i).translate(_SUB) for i in indices]
    return ("," if any(i >= 10 for i in indices) else "").join(parts)


def _sup(layer) -> str:
    return f"({layer})".translate(_SUP)


def _num(x) -> str:
    """A number in the term tables: fixed point, sign always shown, 10 decimals."""
    return f"{float(x):+.10f}"


# ---------------------------------------------------------------------------
# Display width: CJK characters take two terminal columns
# ---------------------------------------------------------------------------


def display_width(text: str) -> int:
    """Terminal columns of ``text``: East Asian wide/full-width characters count 2, combining marks 0."""
    width = 0
    for ch in text:
        if unicodedata.combining(ch):
            continue
        width += 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1
    return width


def rjust(text: str, width: int) -> str:
    return " " * max(width - display_width(text), 0) + text


def ljust(text: str, width: int) -> str:
    return text + " " * max(width - display_width(text), 0)


# ---------------------------------------------------------------------------
# Parsing --param
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Param:
    """One parameter of the network, 1-based as in the note."""

    kind: str  # "W" or "b"
    layer: int  # l = 1..L
    j: int | None  # input unit (W only), 1-based
    k: int  # output unit, 1-based

    @property
    def name(self) -> str:
        return f"W{self.layer}[{self.j},{self.k}]" if self.kind == "W" else f"b{self.layer}[{self.k}]"

    @property
    def array_index(self) -> str:
        """Where the entry lives in the Python lists, 0-based."""
        if self.kind == "W":
            return f"net.W[{self.layer - 1}][{self.j - 1}, {self.k - 1}]"
        return f"net.b[{self.layer - 1}][{self.k - 1}]"

    @property
    def index(self) -> tuple:
        """(list index, array index), both 0-based."""
        if self.kind == "W":
            return self.layer - 1, (self.j - 1, self.k - 1)
        return self.layer - 1, (self.k - 1,)

    @property
    def symbol(self) -> str:
        """The note's symbol, e.g. w₁₁⁽²⁾ or b₁⁽¹⁾."""
        if self.kind == "W":
            return f"w{_sub(self.j, self.k)}{_sup(self.layer)}"
        return f"b{_sub(self.k)}{_sup(self.layer)}"


def all_params(sizes=SIZES) -> list:
    """Every parameter of the network, layer by layer, W before b, row-major."""
    out = []
    for l in range(1, len(sizes)):
        out += [Param("W", l, j, k) for j in range(1, sizes[l - 1] + 1) for k in range(1, sizes[l] + 1)]
        out += [Param("b", l, None, k) for k in range(1, sizes[l] + 1)]
    return out


def parse_param(text: str, sizes=SIZES, lang: str = "en") -> Param:
    """Parse ``W2[1,1]`` / ``b1[3]`` (1-based) and check it against ``sizes``.

    Raises :class:`argparse.ArgumentTypeError` naming the allowed ranges, in ``lang``.
    """
    err = ERRORS[lang]
    L = len(sizes) - 1
    sep = "、" if lang == "zh" else ", "
    allowed = sep.join(err["allowed_W"].format(l=l, d_in=sizes[l - 1], d_out=sizes[l]) for l in range(1, L + 1))
    m = _PARAM_RE.match(str(text))
    if m is None:
        raise argparse.ArgumentTypeError(err["cannot_read"].format(text=text, allowed=allowed))
    letter, layer, first, second = m.groups()
    kind = "W" if letter in "Ww" else "b"
    layer = int(layer)
    if not 1 <= layer <= L:
        raise argparse.ArgumentTypeError(err["layer"].format(text=text, L=L, allowed=allowed))
    fmt = {"text": text, "l": layer, "d_in": sizes[layer - 1], "d_out": sizes[layer]}
    if kind == "W":
        if second is None:
            raise argparse.ArgumentTypeError(err["two_indices"].format(**fmt))
        j, k = int(first), int(second)
        if not 1 <= j <= fmt["d_in"]:
            raise argparse.ArgumentTypeError(err["j_range"].format(**fmt))
        if not 1 <= k <= fmt["d_out"]:
            raise argparse.ArgumentTypeError(err["k_range_W"].format(**fmt))
        return Param("W", layer, j, k)
    if second is not None:
        raise argparse.ArgumentTypeError(err["one_index"].format(**fmt))
    k = int(first)
    if not 1 <= k <= fmt["d_out"]:
        raise argparse.ArgumentTypeError(err["k_range_b"].format(**fmt))
    return Param("b", layer, None, k)


# ---------------------------------------------------------------------------
# The numbers
# ---------------------------------------------------------------------------


@dataclass
class Explanation:
    """Everything printed for one parameter (float64 Python numbers)."""

    param: Param
    factors: list  # per sample i: (dL/dz_ik, h_ij) for W, (dL/dz_ik,) for b
    terms: list  # per sample i: the product (W) or dL/dz_ik itself (b)
    term_sum: float  # Σ of ``terms`` in sample order
    loop: float  # what the loop kernel wrote
    matrix: float  # the same entry from engine "numpy"
    fd: float  # central finite difference
    eps: float
    chain: str  # one line: where dL/dz_1k comes from, with numbers
    tolerances: dict
    differences: dict

    @property
    def agree(self) -> bool:
        return all(abs(self.differences[key]) <= self.tolerances[key] for key in self.differences)


def make_batch(n: int = 3, seed: int = 0, dtype="float64"):
    """The seeded tiny batch: X ~ N(0, 1) of shape (n, 4), one-hot targets of 3 classes."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, SIZES[0]))
    labels = rng.integers(0, SIZES[-1], size=n)
    return X.astype(dtype), one_hot(labels, SIZES[-1], dtype=dtype), labels


def tolerances(dtype, n: int, loss: float, abs_sum: float) -> tuple:
    r"""(exact tolerance, finite-difference tolerance, ε) for one gradient entry.

    ``abs_sum`` is Σ_i |term_i| of the gradient's sum over the n samples and
    ``loss`` the value of L (itself a sum over n samples).

    * loop vs the printed terms vs the matrix form: the same n products summed
      in different orders and precisions; each sum is off by at most
      ≈ n·u·Σ|term| (u the unit roundoff), so the tolerance is 2·n·u·Σ|term|,
      never below 10⁻¹² (float64) or 10⁻⁶ (float32).
    * loop vs the central difference: the truncation error is O(ε²) times a
      third derivative, which is a sum over the samples like the gradient, so
      it scales with Σ|term| (10⁻⁷·max(1, Σ|term|) in float64); the rounding
      error of the two losses, each ≈ u·|L|·√(3n) (3n rounded squares summed),
      is divided by 2ε.  Both grow with n: without the second, an n of 10⁴
      would report a false DISAGREE.
    """
    dtype = np.dtype(dtype)
    u = float(np.finfo(dtype).eps)
    if dtype == np.float64:
        eps, trunc, floor = 1e-6, 1e-7, 1e-12
    else:
        eps, trunc, floor = 1e-2, 1e-4, 1e-6
    exact = max(floor, 2.0 * n * u * abs_sum)
    rounding = 8.0 * u * max(abs(loss), 1.0) * math.sqrt(SIZES[-1] * n) / eps
    return exact, trunc * max(1.0, abs_sum) + rounding, eps


def _finite_difference(net: MLP, X, T, p: Param, eps: float) -> float:
    """(L(θ + ε) − L(θ − ε)) / (θ₊ − θ₋): the step actually stored in the net's dtype."""
    li, idx = p.index
    arr = net.W[li] if p.kind == "W" else net.b[li]
    saved = arr[idx]
    try:
        arr[idx] = saved + eps
        plus, L_plus = float(arr[idx]), net.loss(X, T)
        arr[idx] = saved - eps
        minus, L_minus = float(arr[idx]), net.loss(X, T)
    finally:
        arr[idx] = saved
    return (L_plus - L_minus) / (plus - minus)


def _chain_line(p: Param, g, net: MLP, T, lab) -> str:
    """Where the first factor ∂L/∂z_1k^(l) comes from, with the numbers of sample i = 1."""
    l, k = p.layer, p.k - 1
    L = net.n_layers
    h = g.h[l][0, k]
    dz = g.dL_dz[l][0, k]
    sym = f"∂L/∂z{_sub(1, p.k)}{_sup(l)}"
    c, sc = lab["colon"], lab["semicolon"]
    if l == L:
        t = T[0, k]
        return (f"{lab['where']} ∂L/∂z_ik{_sup(l)} = (h_ik{_sup(l)} − t_ik) · h_ik{_sup(l)} (1 − h_ik{_sup(l)}){sc}"
                f"{lab['for_i1']}{c}{sym} = ({h:.6f} − {t:g}) · {h:.6f} · (1 − {h:.6f}) = {dz:.6f}")
    nxt = g.dL_dz[l + 1][0]
    w = net.W[l][k]
    terms = " + ".join(f"({nxt[m]:.6f})({w[m]:.6f})" for m in range(nxt.shape[0]))
    dh = g.dL_dh[l][0, k]
    return (f"{lab['where']} ∂L/∂z_ik{_sup(l)} = ∂L/∂h_ik{_sup(l)} · h_ik{_sup(l)} (1 − h_ik{_sup(l)}){lab['comma']}"
            f"∂L/∂h_ik{_sup(l)} = Σ_q ∂L/∂z_iq{_sup(l + 1)} w_kq{_sup(l + 1)}{sc}{lab['for_i1']}{c.rstrip()}\n"
            f"      ∂L/∂h{_sub(1, p.k)}{_sup(l)} = {terms} = {dh:.6f},  "
            f"{sym} = {dh:.6f} · {h:.6f} · (1 − {h:.6f}) = {dz:.6f}")


def _reference_gradients(net: MLP, X, T):
    """The same gradients from the matrix forms: a copy of ``net`` on engine ``"numpy"``."""
    ref = MLP(net.sizes, dtype=net.dtype, engine="numpy", input_sigmoid=net.input_sigmoid,
              activation=list(net.activations), loss=net.loss_name)
    ref.W = [w.copy() for w in net.W]
    ref.b = [b.copy() for b in net.b]
    return ref.gradients(X, T)


def explain_param(p: Param, net: MLP, X, T, lab=None, g=None, g_ref=None) -> Explanation:
    """Compute every number printed for ``p`` on the batch (X, T).

    ``net`` must run a loop engine; the matrix form is recomputed with a copy of
    its weights on engine ``"numpy"``.  ``g`` / ``g_ref`` (the loop and NumPy
    gradients of this batch) may be passed to avoid recomputing them.
    """
    lab = LABELS["en"] if lab is None else lab
    g = net.gradients(X, T) if g is None else g  # the loop kernels
    g_ref = _reference_gradients(net, X, T) if g_ref is None else g_ref
    l, k = p.layer, p.k - 1
    dz = g.dL_dz[l]
    li, idx = p.index
    if p.kind == "W":
        j = p.j - 1
        h_prev = g.h[l - 1]
        factors = [(float(dz[i, k]), float(h_prev[i, j])) for i in range(dz.shape[0])]
        terms = [a * b for a, b in factors]
        loop = float(g.W[li][idx])
        matrix = float(g_ref.W[li][idx])
    else:
        factors = [(float(dz[i, k]),) for i in range(dz.shape[0])]
        terms = [a for (a,) in factors]
        loop = float(g.b[li][idx])
        matrix = float(g_ref.b[li][idx])
    term_sum = 0.0
    for term in terms:  # in sample order, as the loop sums
        term_sum += term

    abs_sum = sum(abs(t) for t in terms)
    exact_tol, fd_tol, eps = tolerances(net.dtype, len(terms), g.loss, abs_sum)
    fd = _finite_difference(net, X, T, p, eps)
    return Explanation(
        param=p, factors=factors, terms=terms, term_sum=term_sum, loop=loop, matrix=matrix, fd=fd, eps=eps,
        chain=_chain_line(p, g, net, T, lab),
        tolerances={"terms": exact_tol, "matrix": exact_tol, "fd": fd_tol},
        differences={"terms": loop - term_sum, "matrix": loop - matrix, "fd": loop - fd},
    )


def note_sigma_gradients(net: MLP, X, T):
    r"""The note's backward pass: σ′ taken as z(1 − z) instead of h(1 − h), at every layer.

    Runs the same kernels as :meth:`MLP.gradients` (those of ``net``'s engine), except
    that ``sigmoid_backward(dz, dh, h)`` is handed z in place of h, which is exactly
    the note's slip.  Returns ``(dL_dz, dW, db)``: lists indexed like
    ``Gradients.dL_dz``, ``Gradients.W`` and ``Gradients.b``.  Only for the
    note's all-sigmoid network with the half-sse loss.
    """
    g = net.gradients(X, T)
    ops = get_engine(net.engine)
    L = net.n_layers
    dL_dz = [None] * (L + 1)
    dW = [np.empty_like(w) for w in net.W]
    db = [np.empty_like(b) for b in net.b]
    dh = np.empty_like(g.h[L])
    ops.half_sse_backward(dh, g.h[L], T)
    for l in range(L, 0, -1):
        dL_dz[l] = np.empty_like(g.z[l])
        ops.sigmoid_backward(dL_dz[l], dh, g.z[l])  # z where h belongs: the note's z(1 - z)
        ops.linear_backward_weight(dW[l - 1], dL_dz[l], g.h[l - 1])
        ops.linear_backward_bias(db[l - 1], dL_dz[l])
        dh = np.empty_like(g.h[l - 1])
        ops.linear_backward_input(dh, dL_dz[l], net.W[l - 1])
    return dL_dz, dW, db


def descent_step(net: MLP, X, T, eta: float) -> dict:
    """L before and after one step θ ← θ − η ∂L/∂θ on a copy of ``net`` (``net`` is left unchanged)."""
    g = net.gradients(X, T)
    stepped = MLP(net.sizes, dtype=net.dtype, engine=net.engine, input_sigmoid=net.input_sigmoid,
                  activation=list(net.activations), loss=net.loss_name)
    stepped.W = [w.copy() for w in net.W]
    stepped.b = [b.copy() for b in net.b]
    lr = np.dtype(net.dtype).type(eta)
    ops = get_engine(net.engine)
    for param, grad in zip([*stepped.W, *stepped.b], [*g.W, *g.b], strict=True):
        ops.sgd_update(param.reshape(-1), grad.reshape(-1), lr)
    squared = sum(float(np.sum(np.square(gr, dtype=np.float64))) for gr in [*g.W, *g.b])
    after = stepped.loss(X, T)
    return {"before": g.loss, "after": after, "change": after - g.loss, "predicted": -eta * squared,
            "W": stepped.W, "b": stepped.b}


# ---------------------------------------------------------------------------
# Printing
# ---------------------------------------------------------------------------


def _value_line(label: str, value: str, width: int = 54) -> str:
    """``label`` padded by display width, then ``= value``: the '=' signs line up in either language."""
    return f"  {ljust(label, width)} = {value}"


def render(e: Explanation, n: int, lab) -> str:
    p = e.param
    l = p.layer
    up, prev = _sup(l), _sup(l - 1)
    c, lp, rp = lab["colon"], lab["lp"], lab["rp"]
    out = []
    out.append(f"── ∂L/∂{p.symbol}   {lab['param']} {p.name}{lp}{lab['one_based']}{rp}  =  "
               f"{p.array_index}{lp}{lab['array']}{rp}")
    W = 14
    if p.kind == "W":
        out.append(f"  {lab['formula']}   ∂L/∂w_jk{up} = Σ_i ∂L/∂z_ik{up} · h_ij{prev}{lab['comma']}  "
                   f"{lab['with']} j = {p.j}, k = {p.k}{c.rstrip()}")
        out.append(f"              ∂L/∂{p.symbol} = Σ_i=1..{n} ∂L/∂z_i{p.k}{up} · h_i{p.j}{prev}")
        out.append(f"  {lab['written_out']}{c.rstrip()}")
        a, b = f"∂L/∂z_i{p.k}{up}", f"h_i{p.j}{prev}"
        out.append(f"    {'i':>3}  {rjust(a, W)}     {rjust(b, W)}     {rjust(lab['term'], W)}")
        for i, ((x, y), t) in enumerate(zip(e.factors, e.terms, strict=True), start=1):
            out.append(f"    {i:>3}  {_num(x):>14}  ×  {_num(y):>14}  =  {_num(t):>14}")
        kernel, matrix = "nbmlp.kernels.linear_backward_weight", f"((h{prev})ᵀ × ∂L/∂z{up})[{p.j - 1}, {p.k - 1}]"
    else:
        out.append(f"  {lab['formula']}   ∂L/∂b_k{up} = Σ_i ∂L/∂z_ik{up}{lab['comma']}  "
                   f"{lab['with']} k = {p.k}{c.rstrip()}")
        out.append(f"              ∂L/∂{p.symbol} = Σ_i=1..{n} ∂L/∂z_i{p.k}{up}")
        out.append(f"  {lab['written_out']}{c.rstrip()}")
        a = f"∂L/∂z_i{p.k}{up}"
        out.append(f"    {'i':>3}  {'':>14}     {'':>14}     {rjust(a, W)}")
        for i, t in enumerate(e.terms, start=1):
            out.append(f"    {i:>3}  {'':>14}     {'':>14}     {_num(t):>14}")
        kernel = "nbmlp.kernels.linear_backward_bias"
        matrix = "(" + lab["colsum"].format(x=f"∂L/∂z{up}") + f")[{p.k - 1}]"
    out.append(f"    {'':>3}  {'':>14}     {rjust(lab['sum'], W)}  =  {_num(e.term_sum):>14}")
    out.append(f"  {e.chain}")
    out.append(_value_line(f"{lab['kernel']} {kernel}", _num(e.loop)))
    out.append(_value_line(f"{lab['matrix']} {matrix}{lab['comma']}{lab['engine']} numpy", _num(e.matrix)))
    sym = p.symbol
    out.append(_value_line(f"{lab['fd']} (L({sym}+ε) − L({sym}−ε))/2ε, ε = {e.eps:g}", _num(e.fd)))
    d, tol = e.differences, e.tolerances
    verdict = lab["agree"] if e.agree else lab["disagree"]
    out.append(f"  {lab['agreement']}{c}{lab['loop_vs_terms']} = {d['terms']:.1e}{lab['comma']}"
               f"{lab['loop_vs_matrix']} = {d['matrix']:.1e}{lp}{lab['tol']} {tol['terms']:.0e}{rp}{lab['semicolon']}"
               f"{lab['loop_vs_fd']} = {d['fd']:.1e}{lp}{lab['tol']} {tol['fd']:.0e}{rp}  →  {verdict}")
    return "\n".join(out)


def _shape(a) -> str:
    return "×".join(map(str, np.shape(a))) if np.ndim(a) > 1 else f"({np.shape(a)[0]},)"


def _matrix_lines(a, indent: str = "      ") -> list:
    """Rows of ``a`` (a vector prints as one row), 6 decimals; at most TRACE_ROWS rows, then a count."""
    rows = np.atleast_2d(np.asarray(a, dtype=np.float64))
    lines = [indent + "[ " + "  ".join(f"{x:+.6f}" for x in row) + " ]" for row in rows[:TRACE_ROWS]]
    return lines


def render_trace(net: MLP, X, T, g, lab) -> str:
    """Every matrix of one forward and backward pass, in the note's order, each shape checked."""
    L = net.n_layers
    n = X.shape[0]
    c, lp, rp = lab["colon"], lab["lp"], lab["rp"]
    out = []

    def show(head: str, value, note: str) -> None:
        out.append(f"  {head}   [{note}]")
        out.extend(_matrix_lines(value))
        rows = np.atleast_2d(value).shape[0]
        if rows > TRACE_ROWS:
            out.append("      " + lab["more_rows"].format(m=rows - TRACE_ROWS, n=n))

    def check(got, want) -> str:
        return lab["ok"] if np.shape(got) == np.shape(want) else lab["bad"].format(want=_shape(want))

    out.append(f"{lab['forward']}{c.rstrip()}")
    show("X = z⁽⁰⁾", g.z[0], f"{_shape(g.z[0])}{lab['comma']}{lab['input']}")
    sig0 = "σ(z⁽⁰⁾)" if net.input_sigmoid else "z⁽⁰⁾"
    show(f"h⁽⁰⁾ = {sig0}", g.h[0], f"{_shape(g.h[0])}{lab['comma']}nbmlp.kernels.sigmoid_forward")
    for l in range(1, L + 1):
        up, prev = _sup(l), _sup(l - 1)
        show(f"z{up} = h{prev} × W{up} + b{up}", g.z[l], f"{_shape(g.z[l])}{lab['comma']}nbmlp.kernels.linear_forward")
        show(f"h{up} = σ(z{up})", g.h[l], f"{_shape(g.h[l])}{lab['comma']}nbmlp.kernels.sigmoid_forward")
    show("T", T, f"{_shape(T)}{lab['comma']}{lab['targets']}")
    out.append(f"  L = ½ Σ_i Σ_k (t_ik − h_ik{_sup(L)})² = {g.loss:.10f}{lp}nbmlp.kernels.half_sse_loss{rp}")
    out.append("")
    out.append(f"{lab['backward']}{c.rstrip()}")
    up = _sup(L)
    show(f"∂L/∂h{up} = h{up} − T", g.dL_dh[L],
         f"{lab['shape_of'].format(shape=_shape(g.dL_dh[L]), x=f'h{up}')} {check(g.dL_dh[L], g.h[L])}{lab['comma']}"
         "nbmlp.kernels.half_sse_backward")
    for l in range(L, 0, -1):
        up, prev = _sup(l), _sup(l - 1)
        show(f"∂L/∂z{up} = ∂L/∂h{up} ⊙ h{up} ⊙ (1 − h{up})", g.dL_dz[l],
             f"{lab['shape_of'].format(shape=_shape(g.dL_dz[l]), x=f'z{up}')} {check(g.dL_dz[l], g.z[l])}"
             f"{lab['comma']}nbmlp.kernels.sigmoid_backward")
        show(f"∂L/∂W{up} = (h{prev})ᵀ × ∂L/∂z{up}", g.W[l - 1],
             f"{lab['grad_shape'].format(shape=_shape(g.W[l - 1]), x=f'W{up}', want=_shape(net.W[l - 1]))} "
             f"{check(g.W[l - 1], net.W[l - 1])}{lab['comma']}nbmlp.kernels.linear_backward_weight")
        show(f"∂L/∂b{up} = {lab['colsum_formula'].format(x=f'∂L/∂z{up}')}", g.b[l - 1],
             f"{lab['grad_shape'].format(shape=_shape(g.b[l - 1]), x=f'b{up}', want=_shape(net.b[l - 1]))} "
             f"{check(g.b[l - 1], net.b[l - 1])}{lab['comma']}nbmlp.kernels.linear_backward_bias")
        show(f"∂L/∂h{prev} = ∂L/∂z{up} × (W{up})ᵀ", g.dL_dh[l - 1],
             f"{lab['shape_of'].format(shape=_shape(g.dL_dh[l - 1]), x=f'h{prev}')} "
             f"{check(g.dL_dh[l - 1], g.h[l - 1])}{lab['comma']}nbmlp.kernels.linear_backward_input")
    formula = "∂L/∂h⁽⁰⁾ ⊙ h⁽⁰⁾ ⊙ (1 − h⁽⁰⁾)" if net.input_sigmoid else "∂L/∂h⁽⁰⁾"
    show(f"∂L/∂X = ∂L/∂z⁽⁰⁾ = {formula}", g.dL_dz[0],
         f"{lab['grad_shape'].format(shape=_shape(g.dL_dz[0]), x='X', want=_shape(X))} {check(g.dL_dz[0], X)}"
         f"{lab['comma']}{lab['input_grad']}")
    return "\n".join(out)


def render_note_sigma(p: Param, e: Explanation, note, lab) -> str:
    """One parameter's gradient with the note's z(1 − z) beside the correct h(1 − h)."""
    dL_dz_note, dW_note, db_note = note
    l, k = p.layer, p.k - 1
    up, prev = _sup(l), _sup(l - 1)
    lp, rp = lab["lp"], lab["rp"]
    li, idx = p.index
    note_value = float((dW_note if p.kind == "W" else db_note)[li][idx])
    out = [f"── ∂L/∂{p.symbol}   {p.name}{lp}{lab['ns_head']}{rp}"]
    W = 16
    a, b = f"∂L/∂z_i{p.k}{up} h(1−h)", f"∂L/∂z_i{p.k}{up} z(1−z)"
    head = f"    {'i':>3}  {rjust(a, W)}  {rjust(b, W)}"
    if p.kind == "W":
        terms = (f"h_i{p.j}{prev}", lab["term"] + " h(1−h)", lab["term"] + " z(1−z)")
        head += "".join(f"  {rjust(t, W)}" for t in terms)
    out.append(head)
    for i, factors in enumerate(e.factors):
        dz_note = float(dL_dz_note[l][i, k])
        row = f"    {i + 1:>3}  {_num(factors[0]):>16}  {_num(dz_note):>16}"
        if p.kind == "W":
            row += f"  {_num(factors[1]):>16}  {_num(e.terms[i]):>16}  {_num(dz_note * factors[1]):>16}"
        out.append(row)
    out.append(_value_line(f"{lab['ns_correct']}{lp}{lab['kernel']}{rp}", _num(e.loop), 40))
    out.append(_value_line(lab["ns_note"], _num(note_value), 40))
    out.append(_value_line(f"{lab['fd']}{lab['comma']}ε = {e.eps:g}", _num(e.fd), 40))
    diff = note_value - e.loop
    if np.sign(note_value) != np.sign(e.loop) and abs(e.loop) > e.tolerances["fd"]:
        verdict = lab["ns_sign"]
    elif abs(diff) > e.tolerances["fd"]:
        verdict = lab["ns_off"].format(d=abs(diff))
    else:
        verdict = lab["ns_same"]
    out.append(f"  →  {verdict}")
    return "\n".join(out)


def render_step(step: dict, eta: float, lab) -> str:
    out = [f"── {lab['step_head'].format(eta=f'{eta:g}')}"]
    out.append(_value_line(lab["before"], f"{step['before']:.10f}", 40))
    out.append(_value_line(lab["after"], f"{step['after']:.10f}", 40))
    out.append(_value_line(lab["change"], f"{step['change']:+.10f}", 40))
    out.append(_value_line(lab["predicted"], f"{step['predicted']:+.10f}", 40))
    out.append("  →  " + (lab["down"] if step["after"] < step["before"] else lab["up"]))
    return "\n".join(out)


# ---------------------------------------------------------------------------
# The page (--html): every number precomputed here, drawn by nbmlp.explain_html
# ---------------------------------------------------------------------------


def header(n: int, seed: int, dtype, labels, loss: float, lab) -> str:
    """The four lines that open every run: the network, the loss, the batch, L."""
    return "\n".join([
        lab["title"].format(sizes="-".join(map(str, SIZES))),
        "  " + lab["loss"],
        "  " + lab["batch"].format(n=n, seed=seed, labels=[int(c) + 1 for c in labels], sizes=SIZES, dtype=dtype),
        "  " + lab["value_L"].format(L=f"{loss:.10f}"),
    ])


def page_data(n: int = 3, seed: int = 0, dtype="float64", lang: str = "en") -> dict:
    """Everything the HTML page shows, as JSON-ready Python values."""
    lab = LABELS[lang]
    X, T, labels = make_batch(n, seed, dtype)
    net = MLP(SIZES, seed=seed, dtype=dtype, engine="loops")
    g = net.gradients(X, T)
    g_ref = _reference_gradients(net, X, T)
    params = {}
    for p in all_params():
        e = explain_param(p, net, X, T, lab, g=g, g_ref=g_ref)
        li, idx = p.index
        params[p.name] = {
            "name": p.name, "symbol": p.symbol, "kind": p.kind, "layer": p.layer, "j": p.j, "k": p.k,
            "array_index": p.array_index,
            "value": float((net.W if p.kind == "W" else net.b)[li][idx]),
            "factors": e.factors, "terms": e.terms, "sum": e.term_sum, "loop": e.loop, "matrix": e.matrix,
            "fd": e.fd, "agree": e.agree, "text": render(e, n, lab),
        }
    return {
        "sizes": list(SIZES), "n": n, "seed": seed, "dtype": str(np.dtype(dtype)), "lang": lang,
        "labels": [int(c) + 1 for c in labels], "loss": g.loss,
        "X": X.tolist(), "T": T.tolist(), "z": [a.tolist() for a in g.z], "h": [a.tolist() for a in g.h],
        "W": [w.tolist() for w in net.W], "b": [b.tolist() for b in net.b],
        "params": params, "order": [p.name for p in all_params()],
        "header": header(n, seed, dtype, labels, g.loss, lab),
    }


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------

_ARGPARSE_ZH = [
    (re.compile(r"^argument (\S+): "), r"参数 \1："),
    (re.compile(r"invalid choice: (.*) \(choose from (.*)\)"), r"无效的选择 \1（可选：\2）"),
    (re.compile(r"expected one argument"), "需要一个值"),
    (re.compile(r"^unrecognized arguments: "), "无法识别的参数："),
]


class _Parser(argparse.ArgumentParser):
    """argparse, with its own messages in Chinese when ``--lang zh`` is on the command line."""

    def __init__(self, *args, lang: str = "en", **kwargs):
        super().__init__(*args, **kwargs)
        self.lang = lang

    def error(self, message):
        if self.lang != "zh":
            super().error(message)
        for pattern, replacement in _ARGPARSE_ZH:
            message = pattern.sub(replacement, message)
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}：错误：{message}\n")

    def format_usage(self):
        usage = super().format_usage()
        return usage.replace("usage: ", "用法：", 1) if self.lang == "zh" else usage


def _lang_of(argv) -> str:
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--lang", default="en")
    known, _ = pre.parse_known_args(argv)
    return known.lang if known.lang in LABELS else "en"


def build_parser(lang: str = "en") -> argparse.ArgumentParser:
    err = ERRORS[lang]

    def batch_size(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(err["not_int"].format(text=text)) from None
        if not 1 <= value <= MAX_N:
            raise argparse.ArgumentTypeError(err["n_range"].format(max_n=MAX_N, value=value))
        return value

    def seed(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(err["not_int"].format(text=text)) from None
        if value < 0:
            raise argparse.ArgumentTypeError(err["seed_range"].format(text=text))
        return value

    def learning_rate(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(err["not_number"].format(text=text)) from None
        if not (math.isfinite(value) and value > 0):
            raise argparse.ArgumentTypeError(err["eta_range"].format(text=text))
        return value

    parser = _Parser(
        prog="python -m nbmlp explain", lang=lang,
        description="On a tiny seeded batch of the lecture note's 4-5-3 sigmoid network, print for each "
        "chosen parameter the formula, its sum written out term by term with the actual numbers, the "
        "loop kernel's value, the matrix form (NumPy reference) and a central finite difference.",
    )
    parser.add_argument("--n", type=batch_size, default=3,
                        help=f"samples in the batch, 1..{MAX_N} (default 3; --trace is easiest to follow at 2)")
    parser.add_argument("--seed", type=seed, default=0, help="seed of the batch and the weights (default 0)")
    parser.add_argument("--param", action="append", type=lambda text: parse_param(text, lang=lang),
                        metavar="PARAM",
                        help="W1[j,k], b1[k], W2[j,k] or b2[k], 1-based as in the note (j = 1..4 / 1..5, "
                        "k = 1..5 / 1..3); repeatable; default: " + " ".join(DEFAULT_PARAMS))
    parser.add_argument("--trace", action="store_true",
                        help="print every matrix of the forward and backward pass, in the note's order, with "
                        "shape checks, down to dL/dX")
    parser.add_argument("--note-sigma", action="store_true",
                        help="show each gradient with the note's sigma' = z(1-z) beside the correct h(1-h)")
    parser.add_argument("--step", type=learning_rate, metavar="ETA",
                        help="take one gradient-descent step with learning rate ETA and print L before and after")
    parser.add_argument("--html", metavar="FILE",
                        help="write one self-contained HTML page (no server, nothing fetched): the network with "
                        "numbers; click a weight to see its sum term by term (--n up to " + str(HTML_MAX_N) + ")")
    parser.add_argument("--lang", choices=("en", "zh"), default="en",
                        help="language of the labels and error messages (default en)")
    parser.add_argument("--dtype", choices=("float64", "float32"), default="float64")
    return parser


def html_target_error(path: str, lang: str = "en") -> str | None:
    """Why ``path`` cannot receive the page (in ``lang``), or None when it can."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        return ERRORS[lang]["html_dir"].format(path=path, folder=folder)
    if os.path.isdir(path):
        return ERRORS[lang]["html_write"].format(path=path, reason=os.strerror(21))  # EISDIR
    return None


def write_html(path: str, data: dict) -> None:
    """Write the page to ``path`` through a temporary file in the same folder, then rename (never half a file)."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".nbmlp-explain-", suffix=".html", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(render_page(data))
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; a page is for reading
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def main(argv=None, stream=None) -> int:
    """Entry point; ``argv[0]`` is the subcommand name ``"explain"`` (as dispatched by ``python -m nbmlp``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "explain":
        argv = argv[1:]
    stream = sys.stdout if stream is None else stream
    lang = _lang_of(argv)
    parser = build_parser(lang)
    args = parser.parse_args(argv)
    lab = LABELS[args.lang]

    if args.html:
        if args.n > HTML_MAX_N:
            parser.error(ERRORS[args.lang]["html_n"].format(max_n=HTML_MAX_N, n=args.n))
        problem = html_target_error(args.html, args.lang)
        if problem is None:
            data = page_data(args.n, args.seed, args.dtype, args.lang)
            try:
                write_html(args.html, data)
            except OSError as exc:
                problem = ERRORS[args.lang]["html_write"].format(path=args.html, reason=exc.strerror or exc)
        if problem is not None:
            parser.exit(1, f"{parser.prog}{lab['colon']}{problem}\n")
        print(lab["wrote"].format(path=args.html), file=stream)
        agree = all(p["agree"] for p in data["params"].values())
        return 0 if agree else 1

    X, T, labels = make_batch(args.n, args.seed, args.dtype)
    net = MLP(SIZES, seed=args.seed, dtype=args.dtype, engine="loops")
    g = net.gradients(X, T)
    print(header(args.n, args.seed, args.dtype, labels, g.loss, lab), file=stream)
    g_ref = _reference_gradients(net, X, T)
    if args.trace:
        print("", file=stream)
        print(render_trace(net, X, T, g, lab), file=stream)
    show_params = args.param is not None or not (args.trace or args.step is not None)
    params = args.param or [parse_param(text) for text in DEFAULT_PARAMS]
    all_agree = True
    if args.note_sigma:
        print("", file=stream)
        print("  " + lab["ns_rule"], file=stream)
        note = note_sigma_gradients(net, X, T)
        for p in params:
            e = explain_param(p, net, X, T, lab, g=g, g_ref=g_ref)
            all_agree &= e.agree
            print("", file=stream)
            print(render_note_sigma(p, e, note, lab), file=stream)
    elif show_params:
        for p in params:
            e = explain_param(p, net, X, T, lab, g=g, g_ref=g_ref)
            all_agree &= e.agree
            print("", file=stream)
            print(render(e, args.n, lab), file=stream)
    if args.step is not None:
        print("", file=stream)
        print(render_step(descent_step(net, X, T, args.step), args.step, lab), file=stream)
    return 0 if all_agree else 1
