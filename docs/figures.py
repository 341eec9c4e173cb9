"""Draw the pictures of docs/: ``python docs/figures.py [OUTDIR]`` (default: docs/img).

* ``network.svg``: the note's 4-5-3 network, units numbered j (input side) and
  k (output side) as in the derivation, with the fan-in of the first unit of each
  layer labelled w_jk and the layout of W, b, z, h (row i = sample i).
* ``circuit.svg``: one sample (n = 1, seed 0: ``python -m nbmlp explain --n 1``)
  through the path to the first output, drawn as a circuit in the style of
  CS231n's backpropagation notes: forward values above each wire (green), the
  gradient ∂L/∂(wire) below it (red), all computed by nbmlp's loop kernels.

Needs matplotlib (``pip install ".[plot]"``).  Text stays text in the SVG
(``svg.fonttype = none``) and the files carry no date, so rerunning the script on
the same matplotlib gives the same files.
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import Circle, FancyArrowPatch  # noqa: E402

from nbmlp import explain  # noqa: E402
from nbmlp.network import MLP  # noqa: E402

SUB = str.maketrans("0123456789", "₀₁₂₃₄₅₆₇₈₉")
SUP = str.maketrans("0123456789()", "⁰¹²³⁴⁵⁶⁷⁸⁹⁽⁾")
FORWARD, BACKWARD = "#1a7f37", "#c62828"


def sub(*indices) -> str:
    return "".join(str(i).translate(SUB) for i in indices)


def sup(layer) -> str:
    return f"({layer})".translate(SUP)


def _setup():
    plt.rcParams.update({"svg.fonttype": "none", "svg.hashsalt": "nbmlp", "font.family": "DejaVu Sans",
                         "font.size": 10})


def _save(fig, path: Path) -> None:
    fig.savefig(path, format="svg", metadata={"Date": None, "Creator": "docs/figures.py"}, bbox_inches="tight")
    plt.close(fig)


def draw_network(path: Path) -> None:
    sizes = explain.SIZES
    xs = [0.0, 4.0, 8.0]
    fig, ax = plt.subplots(figsize=(9.5, 6.2))
    ax.set_xlim(-2.2, 10.2)
    ax.set_ylim(-3.6, 3.6)
    ax.axis("off")

    def y(layer, unit):  # unit is 1-based
        count = sizes[layer]
        return (count + 1) / 2 - unit

    for layer in (1, 2):
        for j in range(1, sizes[layer - 1] + 1):
            for k in range(1, sizes[layer] + 1):
                first = k == 1
                ax.plot([xs[layer - 1], xs[layer]], [y(layer - 1, j), y(layer, k)], lw=1.6 if first else 0.6,
                        color="#1f77b4" if first else "#bbbbbb", zorder=1)
                if first:
                    t = 0.62
                    px = xs[layer - 1] + t * (xs[layer] - xs[layer - 1])
                    py = y(layer - 1, j) + t * (y(layer, k) - y(layer - 1, j))
                    ax.text(px, py + 0.13, f"w{sub(j, k)}{sup(layer)}", color="#1f77b4", ha="center", fontsize=9,
                            bbox={"fc": "white", "ec": "none", "pad": 0.5}, zorder=3)
    names = ["h⁽⁰⁾ = σ(z⁽⁰⁾)", "h⁽¹⁾ = σ(z⁽¹⁾)", "h⁽²⁾ = σ(z⁽²⁾)"]
    index = ["j = 1..4\n(input of layer 1)", "k = 1..5 of layer 1\n= j = 1..5 of layer 2", "k = 1..3\n(output)"]
    for layer, x in enumerate(xs):
        for unit in range(1, sizes[layer] + 1):
            ax.add_patch(Circle((x, y(layer, unit)), 0.3, fc="white", ec="#333333", zorder=2))
            ax.text(x, y(layer, unit), f"{'jkk'[layer]}={unit}", ha="center", va="center", fontsize=8, zorder=3)
        ax.text(x, 3.25, names[layer], ha="center", fontsize=11)
        ax.text(x, -3.1, index[layer], ha="center", va="top", fontsize=9)
    for layer in (1, 2):
        x = xs[layer]
        ax.text(x + 0.45, y(layer, 1) + 0.3, f"+ b{sub(1)}{sup(layer)}", color="#555555", fontsize=9)
    ax.text(-2.1, 0.0, "sample i\n(row i of\nX, z, h)\n\nz⁽⁰⁾ = X\nn × 4", ha="left", va="center", fontsize=9)
    ax.text(2.0, -2.55, "W⁽¹⁾: 4 × 5, b⁽¹⁾: 1 × 5\nz⁽¹⁾ = h⁽⁰⁾W⁽¹⁾ + b⁽¹⁾: n × 5", ha="center", fontsize=9)
    ax.text(6.0, -2.55, "W⁽²⁾: 5 × 3, b⁽²⁾: 1 × 3\nz⁽²⁾ = h⁽¹⁾W⁽²⁾ + b⁽²⁾: n × 3", ha="center", fontsize=9)
    ax.text(9.5, 0.0, "L = ½ Σᵢ Σₖ\n(tᵢₖ − hᵢₖ⁽²⁾)²", ha="left", va="center", fontsize=9)
    ax.set_title("The note's 4-5-3 network: w_jk⁽ˡ⁾ joins unit j of layer l−1 to unit k of layer l "
                 "(row j, column k of W⁽ˡ⁾)", fontsize=10)
    _save(fig, path)


def circuit_values(seed: int = 0) -> dict:
    """The numbers on the circuit: one sample (n = 1), output unit k = 1, from nbmlp's loop kernels."""
    X, T, _ = explain.make_batch(1, seed)
    net = MLP(explain.SIZES, seed=seed, engine="loops")
    g = net.gradients(X, T)
    h1, z2, h2, t = g.h[1][0], g.z[2][0, 0], g.h[2][0, 0], T[0, 0]
    w = net.W[1][:, 0]
    return {
        "h1": h1, "w": w, "b": net.b[1][0], "z": z2, "h": h2, "t": t,
        "diff": h2 - t, "sq": (h2 - t) ** 2, "L1": 0.5 * (h2 - t) ** 2,
        # gradients: ∂L/∂(wire), read from the backward pass
        "d_diff": g.dL_dh[2][0, 0], "d_h": g.dL_dh[2][0, 0], "d_z": g.dL_dz[2][0, 0],
        "d_w": g.W[1][:, 0], "d_b": g.b[1][0], "d_sq": 0.5,
        "d_prod": g.dL_dz[2][0, 0], "d_h1_part": g.dL_dz[2][0, 0] * w,
    }


def draw_circuit(path: Path, seed: int = 0) -> None:
    v = circuit_values(seed)
    fig, ax = plt.subplots(figsize=(13.5, 7.0))
    ax.set_xlim(-0.6, 14.4)
    ax.set_ylim(-0.9, 11.6)
    ax.axis("off")

    def wire(x0, y0, x1, y1, fwd, grad, at=0.5):
        ax.add_patch(FancyArrowPatch((x0, y0), (x1, y1), arrowstyle="-|>", mutation_scale=9, lw=1.0, color="#444444",
                                     shrinkA=14, shrinkB=14))
        mx, my = x0 + at * (x1 - x0), y0 + at * (y1 - y0)
        ax.text(mx, my + 0.12, f"{fwd:.4f}", color=FORWARD, ha="center", va="bottom", fontsize=8)
        if grad is not None:
            ax.text(mx, my - 0.12, f"{grad:.4f}", color=BACKWARD, ha="center", va="top", fontsize=8)

    def gate(x, y, label):
        ax.add_patch(Circle((x, y), 0.34, fc="#f5f5f5", ec="#333333", zorder=2))
        ax.text(x, y, label, ha="center", va="center", fontsize=11, zorder=3)

    def source(x, y, label):
        ax.text(x, y, label, ha="right", va="center", fontsize=10)

    ys = [10.6 - 2.0 * j for j in range(5)]
    x_mul, x_add, x_sig, x_sub, x_sq, x_half, x_out = 3.0, 5.6, 7.4, 9.0, 10.6, 12.2, 13.8
    for j, yj in enumerate(ys):
        source(0.6, yj + 0.7, f"w{sub(j + 1, 1)}⁽²⁾")
        source(0.6, yj - 0.7, f"h{sub(1, j + 1)}⁽¹⁾")
        wire(0.7, yj + 0.7, x_mul, yj, v["w"][j], v["d_w"][j], at=0.4)
        wire(0.7, yj - 0.7, x_mul, yj, v["h1"][j], v["d_h1_part"][j], at=0.4)
        gate(x_mul, yj, "×")
        wire(x_mul, yj, x_add, 5.0, v["w"][j] * v["h1"][j], v["d_prod"], at=0.3)
    source(4.7, 1.6, f"b{sub(1)}⁽²⁾")
    wire(4.8, 1.6, x_add, 5.0, v["b"], v["d_b"], at=0.45)
    gate(x_add, 5.0, "+")
    wire(x_add, 5.0, x_sig, 5.0, v["z"], v["d_z"])
    gate(x_sig, 5.0, "σ")
    wire(x_sig, 5.0, x_sub, 5.0, v["h"], v["d_h"])
    source(8.5, 2.6, f"t{sub(1, 1)}")
    wire(8.6, 2.6, x_sub, 5.0, v["t"], -v["d_diff"])
    gate(x_sub, 5.0, "−")
    wire(x_sub, 5.0, x_sq, 5.0, v["diff"], v["d_diff"])
    gate(x_sq, 5.0, "x²")
    wire(x_sq, 5.0, x_half, 5.0, v["sq"], v["d_sq"])
    gate(x_half, 5.0, "×½")
    wire(x_half, 5.0, x_out, 5.0, v["L1"], 1.0)
    ax.text(x_out + 0.05, 5.0, "L", ha="left", va="center", fontsize=12)
    ax.text(x_add, 3.9, f"z{sub(1, 1)}⁽²⁾", ha="center", fontsize=9)
    ax.text(x_sig, 3.9, f"h{sub(1, 1)}⁽²⁾", ha="center", fontsize=9)
    ax.text(7.0, 0.4,
            "one sample (n = 1, seed 0), output unit k = 1: L = ½ Σₖ (t₁ₖ − h₁ₖ⁽²⁾)², this path is its k = 1 term\n"
            "green, above a wire: its forward value;  red, below: ∂L/∂(that value), from nbmlp's loop kernels\n"
            "× gate: each input's gradient is the output's gradient times the other input;  "
            "+ gate: passes the gradient on unchanged;\n"
            "σ gate: multiplies by σ′ = h(1 − h);  the red number on w_j1⁽²⁾ is ∂L/∂w_j1⁽²⁾ = ∂L/∂z₁₁⁽²⁾ · h₁ⱼ⁽¹⁾;\n"
            "on h₁ⱼ⁽¹⁾ it is this path's share only: the full ∂L/∂h₁ⱼ⁽¹⁾ adds the paths to k = 2 and 3",
            ha="center", va="top", fontsize=9)
    _save(fig, path)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    out = Path(argv[0]) if argv else Path(__file__).resolve().parent / "img"
    out.mkdir(parents=True, exist_ok=True)
    _setup()
    draw_network(out / "network.svg")
    draw_circuit(out / "circuit.svg")
    print(f"wrote {out / 'network.svg'} and {out / 'circuit.svg'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
