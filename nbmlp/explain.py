r"""``python -m nbmlp explain``: watch one gradient of the note being summed.

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
5. whether they agree, and within which tolerance.

Parameters are named as in the note, 1-based: ``W1[j,k]``, ``b1[k]``,
``W2[j,k]``, ``b2[k]``; the 0-based array index (``net.W[0][j-1, k-1]``) is
shown beside.  ``--lang zh`` prints the labels in Chinese.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass

import numpy as np

from .datasets import one_hot
from .network import MLP

#: The note's network.
SIZES = (4, 5, 3)

#: Parameters explained when no ``--param`` is given: ∂L/∂w₁₁ and ∂L/∂b₁ of each layer.
DEFAULT_PARAMS = ("W1[1,1]", "b1[1]", "W2[1,1]", "b2[1]")

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
        "kernel": "循环核",
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
    def symbol(self) -> str:
        """The note's symbol, e.g. w₁₁⁽²⁾ or b₁⁽¹⁾."""
        if self.kind == "W":
            return f"w{_sub(self.j, self.k)}{_sup(self.layer)}"
        return f"b{_sub(self.k)}{_sup(self.layer)}"


def parse_param(text: str, sizes=SIZES) -> Param:
    """Parse ``W2[1,1]`` / ``b1[3]`` (1-based) and check it against ``sizes``.

    Raises :class:`argparse.ArgumentTypeError` naming the allowed ranges.
    """
    L = len(sizes) - 1
    allowed = ", ".join(
        f"W{l}[j,k] (j = 1..{sizes[l - 1]}, k = 1..{sizes[l]}), b{l}[k] (k = 1..{sizes[l]})" for l in range(1, L + 1)
    )
    m = _PARAM_RE.match(str(text))
    if m is None:
        raise argparse.ArgumentTypeError(f"cannot read {text!r}; write one of {allowed}")
    letter, layer, first, second = m.groups()
    kind = "W" if letter in "Ww" else "b"
    layer = int(layer)
    if not 1 <= layer <= L:
        raise argparse.ArgumentTypeError(f"{text!r}: layer must be 1..{L}; allowed: {allowed}")
    d_in, d_out = sizes[layer - 1], sizes[layer]
    if kind == "W":
        if second is None:
            raise argparse.ArgumentTypeError(f"{text!r}: a weight needs two indices, W{layer}[j,k] "
                                             f"with j = 1..{d_in}, k = 1..{d_out}")
        j, k = int(first), int(second)
        if not 1 <= j <= d_in:
            raise argparse.ArgumentTypeError(f"{text!r}: j must be 1..{d_in} (W{layer} is {d_in}×{d_out}, "
                                             f"indices are 1-based as in the note)")
        if not 1 <= k <= d_out:
            raise argparse.ArgumentTypeError(f"{text!r}: k must be 1..{d_out} (W{layer} is {d_in}×{d_out}, "
                                             f"indices are 1-based as in the note)")
        return Param("W", layer, j, k)
    if second is not None:
        raise argparse.ArgumentTypeError(f"{text!r}: a bias has one index, b{layer}[k] with k = 1..{d_out}")
    k = int(first)
    if not 1 <= k <= d_out:
        raise argparse.ArgumentTypeError(f"{text!r}: k must be 1..{d_out} (b{layer} has {d_out} entries, "
                                         f"indices are 1-based as in the note)")
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


def _tolerances(dtype: np.dtype, scale: float) -> tuple:
    """(exact-arithmetic tolerance, finite-difference tolerance, ε) for the dtype."""
    if dtype == np.float64:
        return 1e-12 * max(scale, 1.0), 1e-7 * max(scale, 1.0), 1e-6
    return 1e-6 * max(scale, 1.0), 1e-4 * max(scale, 1.0), 1e-2


def _finite_difference(net: MLP, X, T, p: Param, eps: float) -> float:
    """(L(θ + ε) − L(θ − ε)) / (θ₊ − θ₋): the step actually stored in the net's dtype."""
    arr = net.W[p.layer - 1] if p.kind == "W" else net.b[p.layer - 1]
    idx = (p.j - 1, p.k - 1) if p.kind == "W" else (p.k - 1,)
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
    if l == L:
        t = T[0, k]
        return (f"{lab['where']} ∂L/∂z_ik{_sup(l)} = (h_ik{_sup(l)} − t_ik) · h_ik{_sup(l)} (1 − h_ik{_sup(l)}); "
                f"{lab['for_i1']}: {sym} = ({h:.6f} − {t:g}) · {h:.6f} · (1 − {h:.6f}) = {dz:.6f}")
    nxt = g.dL_dz[l + 1][0]
    w = net.W[l][k]
    terms = " + ".join(f"({nxt[m]:.6f})({w[m]:.6f})" for m in range(nxt.shape[0]))
    dh = g.dL_dh[l][0, k]
    return (f"{lab['where']} ∂L/∂z_ik{_sup(l)} = ∂L/∂h_ik{_sup(l)} · h_ik{_sup(l)} (1 − h_ik{_sup(l)}), "
            f"∂L/∂h_ik{_sup(l)} = Σ_m ∂L/∂z_im{_sup(l + 1)} w_km{_sup(l + 1)}; {lab['for_i1']}:\n"
            f"      ∂L/∂h{_sub(1, p.k)}{_sup(l)} = {terms} = {dh:.6f},  "
            f"{sym} = {dh:.6f} · {h:.6f} · (1 − {h:.6f}) = {dz:.6f}")


def explain_param(p: Param, net: MLP, X, T, lab=None) -> Explanation:
    """Compute every number printed for ``p`` on the batch (X, T).

    ``net`` must run a loop engine; the matrix form is recomputed with a copy of
    its weights on engine ``"numpy"``.
    """
    lab = LABELS["en"] if lab is None else lab
    g = net.gradients(X, T)  # the loop kernels
    l, k = p.layer, p.k - 1
    dz = g.dL_dz[l]
    if p.kind == "W":
        j = p.j - 1
        h_prev = g.h[l - 1]
        factors = [(float(dz[i, k]), float(h_prev[i, j])) for i in range(dz.shape[0])]
        terms = [a * b for a, b in factors]
        loop = float(g.W[l - 1][j, k])
    else:
        factors = [(float(dz[i, k]),) for i in range(dz.shape[0])]
        terms = [a for (a,) in factors]
        loop = float(g.b[l - 1][k])
    term_sum = 0.0
    for term in terms:  # in sample order, as the loop sums
        term_sum += term

    ref = MLP(net.sizes, dtype=net.dtype, engine="numpy", input_sigmoid=net.input_sigmoid,
              activation=list(net.activations), loss=net.loss_name)
    ref.W = [w.copy() for w in net.W]
    ref.b = [b.copy() for b in net.b]
    g_ref = ref.gradients(X, T)
    matrix = float(g_ref.W[l - 1][p.j - 1, k] if p.kind == "W" else g_ref.b[l - 1][k])

    scale = max(abs(loop), max(abs(t) for t in terms))
    exact_tol, fd_tol, eps = _tolerances(net.dtype, scale)
    fd = _finite_difference(net, X, T, p, eps)
    return Explanation(
        param=p, factors=factors, terms=terms, term_sum=term_sum, loop=loop, matrix=matrix, fd=fd, eps=eps,
        chain=_chain_line(p, g, net, T, lab),
        tolerances={"terms": exact_tol, "matrix": exact_tol, "fd": fd_tol},
        differences={"terms": loop - term_sum, "matrix": loop - matrix, "fd": loop - fd},
    )


# ---------------------------------------------------------------------------
# Printing
# ---------------------------------------------------------------------------


def render(e: Explanation, n: int, lab) -> str:
    p = e.param
    l = p.layer
    up, prev = _sup(l), _sup(l - 1)
    out = []
    out.append(f"── ∂L/∂{p.symbol}   {lab['param']} {p.name} ({lab['one_based']})  =  "
               f"{p.array_index} ({lab['array']})")
    if p.kind == "W":
        out.append(f"  {lab['formula']}   ∂L/∂w_jk{up} = Σ_i ∂L/∂z_ik{up} · h_ij{prev},   "
                   f"{lab['with']} j = {p.j}, k = {p.k}:")
        out.append(f"              ∂L/∂{p.symbol} = Σ_i=1..{n} ∂L/∂z_i{p.k}{up} · h_i{p.j}{prev}")
        out.append(f"  {lab['written_out']}:")
        a, b = f"∂L/∂z_i{p.k}{up}", f"h_i{p.j}{prev}"
        out.append(f"    {'i':>3}  {a:>14}     {b:>14}     {lab['term']:>14}")
        for i, ((x, y), t) in enumerate(zip(e.factors, e.terms, strict=True), start=1):
            out.append(f"    {i:>3}  {_num(x):>14}  ×  {_num(y):>14}  =  {_num(t):>14}")
        kernel, matrix = "nbmlp.kernels.linear_backward_weight", f"((h{prev})ᵀ × ∂L/∂z{up})[{p.j - 1}, {p.k - 1}]"
        fd_sym = p.symbol
    else:
        out.append(f"  {lab['formula']}   ∂L/∂b_k{up} = Σ_i ∂L/∂z_ik{up},   {lab['with']} k = {p.k}:")
        out.append(f"              ∂L/∂{p.symbol} = Σ_i=1..{n} ∂L/∂z_i{p.k}{up}")
        out.append(f"  {lab['written_out']}:")
        a = f"∂L/∂z_i{p.k}{up}"
        out.append(f"    {'i':>3}  {'':>14}     {'':>14}     {a:>14}")
        for i, t in enumerate(e.terms, start=1):
            out.append(f"    {i:>3}  {'':>14}     {'':>14}     {_num(t):>14}")
        kernel = "nbmlp.kernels.linear_backward_bias"
        matrix = "(" + lab["colsum"].format(x=f"∂L/∂z{up}") + f")[{p.k - 1}]"
        fd_sym = p.symbol
    out.append(f"    {'':>3}  {'':>14}     {lab['sum']:>14}  =  {_num(e.term_sum):>14}")
    out.append(f"  {e.chain}")
    width = 36
    out.append(f"  {lab['kernel'] + ' ' + kernel:<{width + 18}} = {_num(e.loop)}")
    out.append(f"  {lab['matrix'] + ' ' + matrix + ', ' + lab['engine'] + ' numpy':<{width + 18}} = {_num(e.matrix)}")
    fd_text = f"{lab['fd']} (L({fd_sym}+ε) − L({fd_sym}−ε))/2ε, ε = {e.eps:g}"
    out.append(f"  {fd_text:<{width + 18}} = {_num(e.fd)}")
    d, tol = e.differences, e.tolerances
    verdict = lab["agree"] if e.agree else lab["disagree"]
    out.append(f"  {lab['agreement']}: {lab['loop_vs_terms']} = {d['terms']:.1e}, "
               f"{lab['loop_vs_matrix']} = {d['matrix']:.1e} ({lab['tol']} {tol['terms']:.0e}); "
               f"{lab['loop_vs_fd']} = {d['fd']:.1e} ({lab['tol']} {tol['fd']:.0e})  →  {verdict}")
    return "\n".join(out)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m nbmlp explain",
        description="On a tiny seeded batch of the lecture note's 4-5-3 sigmoid network, print for each "
        "chosen parameter the formula, its sum written out term by term with the actual numbers, the "
        "loop kernel's value, the matrix form (NumPy reference) and a central finite difference.",
    )
    parser.add_argument("--n", type=_positive_int, default=3, help="samples in the batch (default 3)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the batch and the weights (default 0)")
    parser.add_argument("--param", action="append", type=parse_param, metavar="PARAM",
                        help="W1[j,k], b1[k], W2[j,k] or b2[k], 1-based as in the note (j = 1..4 / 1..5, "
                        "k = 1..5 / 1..3); repeatable; default: " + " ".join(DEFAULT_PARAMS))
    parser.add_argument("--lang", choices=("en", "zh"), default="en", help="language of the labels (default en)")
    parser.add_argument("--dtype", choices=("float64", "float32"), default="float64")
    return parser


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def main(argv=None, stream=None) -> int:
    """Entry point; ``argv[0]`` is the subcommand name ``"explain"`` (as dispatched by ``python -m nbmlp``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "explain":
        argv = argv[1:]
    stream = sys.stdout if stream is None else stream
    args = build_parser().parse_args(argv)
    params = args.param or [parse_param(text) for text in DEFAULT_PARAMS]
    lab = LABELS[args.lang]

    X, T, labels = make_batch(args.n, args.seed, args.dtype)
    net = MLP(SIZES, seed=args.seed, dtype=args.dtype, engine="loops")
    sizes = "-".join(map(str, SIZES))
    print(lab["title"].format(sizes=sizes), file=stream)
    print("  " + lab["loss"], file=stream)
    print("  " + lab["batch"].format(n=args.n, seed=args.seed, labels=[int(c) + 1 for c in labels],
                                     sizes=SIZES, dtype=args.dtype), file=stream)
    print("  " + lab["value_L"].format(L=f"{net.loss(X, T):.10f}"), file=stream)
    all_agree = True
    for p in params:
        e = explain_param(p, net, X, T, lab)
        all_agree &= e.agree
        print("", file=stream)
        print(render(e, args.n, lab), file=stream)
    return 0 if all_agree else 1
