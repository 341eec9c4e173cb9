"""``python -m nbmlp explain --html FILE``: the note's network on one self-contained page.

:func:`render_page` turns the numbers :func:`nbmlp.explain.page_data` computed
(every forward value, every parameter's gradient with its sum term by term, the
loop kernel's value, the matrix form and the finite difference) into one HTML
file: inline CSS and JavaScript, the numbers embedded as JSON, nothing fetched,
no server.  The script only draws: it never computes a gradient.

Clicking a weight (a line of the network, or a cell of a weight table) or a
bias shows its sum written out as ``python -m nbmlp explain`` prints it.  The
elements carry ids a test can read back: ``#terms`` rows with ``data-value``
attributes holding the exact float64 values, ``#loop``, ``#matrix``, ``#fd``,
``#sum`` and ``#printed`` (the text explain prints).
"""

from __future__ import annotations

import html
import json

UI = {
    "en": {
        "title": "nbmlp explain: the note's 4-5-3 network, with numbers",
        "intro": "Click a weight (a line, or a cell of a table below) or a bias to see its gradient summed "
                 "over the samples, term by term. Every number was computed by nbmlp's loop kernels when "
                 "this page was written; the page itself computes nothing.",
        "sample": "values shown in the units for sample i =",
        "layer_in": "h⁽⁰⁾ = σ(X): j = 1..4",
        "layer_hidden": "h⁽¹⁾: k = 1..5 of layer 1, j of layer 2",
        "layer_out": "h⁽²⁾: k = 1..3",
        "pick": "Pick a weight or a bias.",
        "i": "i", "term": "term", "sum": "sum of the terms",
        "loop": "loop kernel", "matrix": "matrix form (NumPy)", "fd": "central finite difference",
        "agree": "all agree", "disagree": "DISAGREE",
        "printed": "as python -m nbmlp explain prints it",
        "weights": "weights W and biases b (click a cell)",
        "value": "value",
    },
    "zh": {
        "title": "nbmlp explain：讲义中的 4-5-3 网络（附数值）",
        "intro": "点击一个权重（网络中的连线，或下方表格中的单元格）或偏置，即可看到它的梯度按样本逐项求和的过程。"
                 "所有数值都是生成本页时由 nbmlp 的循环实现计算的；网页本身不做任何计算。",
        "sample": "神经元中显示的是样本 i =",
        "layer_in": "h⁽⁰⁾ = σ(X)：j = 1..4",
        "layer_hidden": "h⁽¹⁾：第 1 层的 k = 1..5，第 2 层的 j",
        "layer_out": "h⁽²⁾：k = 1..3",
        "pick": "请选择一个权重或偏置。",
        "i": "i", "term": "项", "sum": "各项之和",
        "loop": "循环实现", "matrix": "矩阵形式（NumPy）", "fd": "中心差分",
        "agree": "全部一致", "disagree": "不一致",
        "printed": "python -m nbmlp explain 的输出",
        "weights": "权重 W 与偏置 b（点击单元格）",
        "value": "值",
    },
}

_CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; max-width: 1100px; }
h1 { font-size: 1.3em; } h2 { font-size: 1.1em; margin-top: 0.2em; }
#layout { display: flex; flex-wrap: wrap; gap: 1.5em; align-items: flex-start; }
svg text { font-size: 12px; }
.weight { stroke-width: 2; cursor: pointer; }
.weight.selected { stroke: #d62728 !important; stroke-width: 4; }
.hit { stroke: transparent; stroke-width: 10; cursor: pointer; }
.unit { fill: #fff; stroke: #333; }
.bias { fill: #f4f4f4; stroke: #777; cursor: pointer; }
.bias.selected, td.cell.selected { background: #fdd; fill: #fdd; stroke: #d62728; }
table { border-collapse: collapse; margin: 0.3em 0 0.8em 0; }
td, th { padding: 2px 8px; text-align: right; font-family: ui-monospace, monospace; font-size: 12px; }
th { border-bottom: 1px solid #999; }
td.cell { cursor: pointer; border: 1px solid #ddd; }
td.cell:hover { background: #eef; }
#panel { min-width: 420px; }
pre { background: #f7f7f7; padding: 0.6em; font-size: 11px; overflow-x: auto; }
.ok { color: #2a7; } .bad { color: #d62728; font-weight: bold; }
"""

_JS = r"""
const D = JSON.parse(document.getElementById('nbmlp-data').textContent);
const U = D.ui;
const SVGNS = 'http://www.w3.org/2000/svg';
const fmt = x => (x >= 0 ? '+' : '') + x.toFixed(10);
const sub = s => String(s).replace(/[0-9]/g, d => '₀₁₂₃₄₅₆₇₈₉'[d]);
const layer = l => '⁽' + String(l).replace(/[0-9]/g, d => '⁰¹²³⁴⁵⁶⁷⁸⁹'[d]) + '⁾';
const X0 = 110, DX = 270, TOP = 60, DY = 64;
function unitPos(layer, index) {           // index 0-based
  const count = D.sizes[layer];
  const y0 = TOP + (5 - count) * DY / 2;
  return [X0 + layer * DX, y0 + index * DY];
}
function el(name, attrs, parent) {
  const e = document.createElementNS(SVGNS, name);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (parent) parent.appendChild(e);
  return e;
}
function drawNetwork() {
  const svg = document.getElementById('network');
  for (let l = 1; l < D.sizes.length; l++) {
    for (let j = 0; j < D.sizes[l - 1]; j++) {
      for (let k = 0; k < D.sizes[l]; k++) {
        const name = `W${l}[${j + 1},${k + 1}]`;
        const w = D.W[l - 1][j][k];
        const [x1, y1] = unitPos(l - 1, j), [x2, y2] = unitPos(l, k);
        const color = w >= 0 ? '#1f77b4' : '#ff7f0e';
        const line = el('line', {x1, y1, x2, y2, class: 'weight', stroke: color,
          'stroke-opacity': 0.35 + 0.65 * Math.min(1, Math.abs(w)),
          id: `edge-W${l}-${j + 1}-${k + 1}`, 'data-param': name}, svg);
        const hit = el('line', {x1, y1, x2, y2, class: 'hit', id: `hit-W${l}-${j + 1}-${k + 1}`,
                                'data-param': name}, svg);
        const t = el('title', {}, hit); t.textContent = `w${sub(j + 1)}${sub(k + 1)}${layer(l)} = ${w.toFixed(4)}`;
        line.addEventListener('click', () => select(name));
        hit.addEventListener('click', () => select(name));
      }
    }
  }
  const heads = [U.layer_in, U.layer_hidden, U.layer_out];
  for (let l = 0; l < D.sizes.length; l++) {
    const tx = el('text', {x: X0 + l * DX, y: 24, 'text-anchor': 'middle'}, svg);
    tx.textContent = heads[l];
    for (let u = 0; u < D.sizes[l]; u++) {
      const [x, y] = unitPos(l, u);
      el('circle', {cx: x, cy: y, r: 22, class: 'unit'}, svg);
      const v = el('text', {x, y: y + 4, 'text-anchor': 'middle', id: `unit-${l}-${u + 1}`}, svg);
      v.textContent = '';
      if (l > 0) {
        const name = `b${l}[${u + 1}]`;
        const r = el('rect', {x: x + 24, y: y - 28, width: 26, height: 16, class: 'bias',
                              id: `bias-b${l}-${u + 1}`, 'data-param': name}, svg);
        const bt = el('text', {x: x + 37, y: y - 16, 'text-anchor': 'middle', 'pointer-events': 'none'}, svg);
        bt.textContent = `b${sub(u + 1)}`;
        r.addEventListener('click', () => select(name));
      }
    }
  }
}
function showSample(i) {                    // 1-based sample
  for (let l = 0; l < D.sizes.length; l++)
    for (let u = 0; u < D.sizes[l]; u++)
      document.getElementById(`unit-${l}-${u + 1}`).textContent = D.h[l][i - 1][u].toFixed(3);
}
function drawTables() {
  const box = document.getElementById('tables');
  for (let l = 1; l < D.sizes.length; l++) {
    const t = document.createElement('table');
    let head = `<tr><th>W${layer(l)}</th>`;
    for (let k = 1; k <= D.sizes[l]; k++) head += `<th>k = ${k}</th>`;
    t.innerHTML = head + '</tr>';
    for (let j = 1; j <= D.sizes[l - 1]; j++) {
      const tr = document.createElement('tr');
      tr.innerHTML = `<th>j = ${j}</th>`;
      for (let k = 1; k <= D.sizes[l]; k++) tr.appendChild(cell(`W${l}[${j},${k}]`, D.W[l - 1][j - 1][k - 1],
                                                               `cell-W${l}-${j}-${k}`));
      t.appendChild(tr);
    }
    const tr = document.createElement('tr');
    tr.innerHTML = `<th>b${layer(l)}</th>`;
    for (let k = 1; k <= D.sizes[l]; k++) tr.appendChild(cell(`b${l}[${k}]`, D.b[l - 1][k - 1], `cell-b${l}-${k}`));
    t.appendChild(tr);
    box.appendChild(t);
  }
}
function cell(name, value, id) {
  const td = document.createElement('td');
  td.className = 'cell'; td.id = id; td.dataset.param = name; td.textContent = value.toFixed(4);
  td.addEventListener('click', () => select(name));
  return td;
}
function select(name) {
  const p = D.params[name];
  document.querySelectorAll('.selected').forEach(e => e.classList.remove('selected'));
  document.querySelectorAll(`[data-param="${name}"]`).forEach(e => {
    if (!e.classList.contains('hit')) e.classList.add('selected');
  });
  const up = layer(p.layer), prev = layer(p.layer - 1);
  document.getElementById('panel-title').textContent =
    `∂L/∂${p.symbol}   ${p.name} = ${p.array_index}   (${U.value} ${p.value.toFixed(6)})`;
  document.getElementById('formula').textContent = p.kind === 'W'
    ? `∂L/∂${p.symbol} = Σ_i=1..${D.n} ∂L/∂z_i${p.k}${up} · h_i${p.j}${prev}`
    : `∂L/∂${p.symbol} = Σ_i=1..${D.n} ∂L/∂z_i${p.k}${up}`;
  const t = document.getElementById('terms');
  let head = `<tr><th>${U.i}</th><th>∂L/∂z_i${p.k}${up}</th>`;
  if (p.kind === 'W') head += `<th></th><th>h_i${p.j}${prev}</th>`;
  t.innerHTML = head + `<th></th><th>${U.term}</th></tr>`;
  p.terms.forEach((term, i) => {
    const tr = document.createElement('tr');
    tr.className = 'term';
    const f = p.factors[i];
    let row = `<td>${i + 1}</td><td class="factor-a" data-value="${f[0]}">${fmt(f[0])}</td>`;
    if (p.kind === 'W') row += `<td>×</td><td class="factor-b" data-value="${f[1]}">${fmt(f[1])}</td>`;
    tr.innerHTML = row + `<td>=</td><td class="term-value" data-value="${term}">${fmt(term)}</td>`;
    t.appendChild(tr);
  });
  const span = p.kind === 'W' ? 5 : 3;
  const tail = document.createElement('tr');
  tail.innerHTML = `<td colspan="${span}">${U.sum}</td><td id="sum" data-value="${p.sum}">${fmt(p.sum)}</td>`;
  t.appendChild(tail);
  for (const key of ['loop', 'matrix', 'fd']) {
    const e = document.getElementById(key);
    e.dataset.value = p[key]; e.textContent = fmt(p[key]);
  }
  const v = document.getElementById('verdict');
  v.textContent = p.agree ? U.agree : U.disagree; v.className = p.agree ? 'ok' : 'bad';
  document.getElementById('printed').textContent = p.text;
  document.getElementById('panel').dataset.param = name;
}
document.getElementById('sample').addEventListener('change', e => showSample(+e.target.value));
drawNetwork(); drawTables(); showSample(1);
document.getElementById('header').textContent = D.header;
document.body.dataset.ready = '1';
"""


def render_page(data: dict) -> str:
    """The whole page as one string: ``data`` from :func:`nbmlp.explain.page_data`."""
    ui = UI[data["lang"]]
    payload = json.dumps({**data, "ui": ui}, ensure_ascii=False, allow_nan=False).replace("</", "<\\/")
    options = "".join(f'<option value="{i}">{i}</option>' for i in range(1, data["n"] + 1))
    e = html.escape
    return f"""<!DOCTYPE html>
<html lang="{'zh-CN' if data['lang'] == 'zh' else 'en'}">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy"
      content="default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'">
<title>{e(ui['title'])}</title>
<style>{_CSS}</style>
</head>
<body>
<h1>{e(ui['title'])}</h1>
<p>{e(ui['intro'])}</p>
<pre id="header"></pre>
<p>{e(ui['sample'])} <select id="sample">{options}</select></p>
<div id="layout">
  <svg id="network" width="700" height="390" viewBox="0 0 700 390" role="img" aria-label="4-5-3 network"></svg>
  <div id="panel">
    <h2 id="panel-title">{e(ui['pick'])}</h2>
    <p id="formula"></p>
    <table id="terms"></table>
    <table>
      <tr><td>{e(ui['loop'])}</td><td id="loop"></td></tr>
      <tr><td>{e(ui['matrix'])}</td><td id="matrix"></td></tr>
      <tr><td>{e(ui['fd'])}</td><td id="fd"></td></tr>
      <tr><td></td><td id="verdict"></td></tr>
    </table>
  </div>
</div>
<h2>{e(ui['weights'])}</h2>
<div id="tables"></div>
<h2>{e(ui['printed'])}</h2>
<pre id="printed"></pre>
<script type="application/json" id="nbmlp-data">{payload}</script>
<script>{_JS}</script>
</body>
</html>
"""
