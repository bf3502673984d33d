"""`fabric graph`: the fabric's nodes and links (each link labelled with its rate and one-way
delay, in fabric time), with the link directions each class's flows can take (every
equal-cost path) highlighted in the class's colour. Mermaid and Graphviz dot as text; PNG
drawn with matplotlib (always present), so no Graphviz install is needed. Pure but for the
PNG file it writes."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..units import format_rate, format_time
from . import Explanation

if TYPE_CHECKING:
    from ..topology.document import Topology
    from ..topology.model import Link

__all__ = ["FORMATS", "PALETTE", "class_colours", "draw_png", "layout", "link_label", "render",
           "to_dot", "to_mermaid"]

FORMATS = ("mermaid", "dot", "png")

#: class colours in class order (matplotlib's tab10, readable on white)
PALETTE = ("#d62728", "#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2",
           "#17becf", "#bcbd22", "#7f7f7f")


def class_colours(ex: Explanation) -> dict[str, str]:
    """Each class of the explanation -> its colour."""
    return {v.cls.name: PALETTE[i % len(PALETTE)] for i, v in enumerate(ex.classes)}


def link_label(link: Link) -> str:
    """`rate, delay` of a link; both directions when they differ."""
    def one(shape: Any) -> str:  # noqa: ANN401 - a Shape
        return f"{format_rate(shape.rate_bps)}, {format_time(shape.delay_ns)}"

    fwd, rev = one(link.forward), one(link.reverse)
    return fwd if fwd == rev else f"{fwd} / {rev}"


def _link_classes(ex: Explanation, link: Link) -> list[str]:
    """The classes whose flows may cross `link` (either direction), in class order."""
    names = set(ex.use.get((link.a, link.b), ())) | set(ex.use.get((link.b, link.a), ()))
    return [v.cls.name for v in ex.classes if v.cls.name in names]


def _flows_of(ex: Explanation) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for f in ex.flows:
        out.setdefault(f.cls, []).append(f.name)
    return out


def _header(ex: Explanation) -> list[str]:
    flows = _flows_of(ex)
    colours = class_colours(ex)
    lines = [f"fabric graph of {ex.topology} ({ex.source}): links labelled rate, one-way "
             "delay (fabric time); coloured links carry a class's flows (any equal-cost path)"]
    for v in ex.classes:
        name = v.cls.name
        lines.append(f"class {name} ({colours[name]}): "
                     + (", ".join(flows[name]) if name in flows else "no flows"))
    return lines


def to_mermaid(topo: Topology, ex: Explanation) -> str:
    """A Mermaid flowchart: hosts as boxes, switches as hexagons, links labelled, links that
    carry a class's flows in its colour (the first class's, with every class named)."""
    ids = {name: f"n{i}" for i, name in enumerate(topo.nodes)}
    colours = class_colours(ex)
    lines = [f"%% {line}" for line in _header(ex)]
    lines.append("graph TD")
    for name, node in topo.nodes.items():
        shape = ('{{"%s"}}' if node.kind == "switch" else '["%s"]') % name
        lines.append(f"  {ids[name]}{shape}")
    styles = []
    for i, link in enumerate(topo.links):
        classes = _link_classes(ex, link)
        label = link_label(link) + (f" [{', '.join(classes)}]" if classes else "")
        lines.append(f'  {ids[link.a]} ---|"{label}"| {ids[link.b]}')
        if classes:
            styles.append(f"  linkStyle {i} stroke:{colours[classes[0]]},stroke-width:3px")
    lines += styles
    lines.append("  classDef switch fill:#eeeeee,stroke:#555555")
    switches = [ids[n] for n, node in topo.nodes.items() if node.kind == "switch"]
    if switches:
        lines.append(f"  class {','.join(switches)} switch")
    return "\n".join(lines) + "\n"


def _q(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def to_dot(topo: Topology, ex: Explanation) -> str:
    """A Graphviz graph: links labelled, a link's colour list holding every class whose
    flows cross it (dot draws them side by side), and a legend of the classes."""
    colours = class_colours(ex)
    lines = [f"// {line}" for line in _header(ex)]
    lines.append(f"graph {_q(topo.name)} {{")
    lines.append('  graph [rankdir=BT, fontname="Helvetica", fontsize=10];')
    lines.append('  node [fontname="Helvetica", fontsize=10];')
    lines.append('  edge [fontname="Helvetica", fontsize=8, color="#999999"];')
    for name, node in topo.nodes.items():
        style = ("shape=box, style=\"rounded,filled\", fillcolor=\"#eeeeee\""
                 if node.kind == "switch" else "shape=ellipse")
        lines.append(f"  {_q(name)} [{style}];")
    for link in topo.links:
        classes = _link_classes(ex, link)
        attrs = [f"label={_q(link_label(link))}"]
        if classes:
            attrs += [f"color={_q(':'.join(colours[c] for c in classes))}", "penwidth=2",
                      f"tooltip={_q('classes: ' + ', '.join(classes))}"]
        lines.append(f"  {_q(link.a)} -- {_q(link.b)} [{', '.join(attrs)}];")
    if ex.classes:
        lines.append("  subgraph cluster_legend {")
        lines.append('    label="classes"; fontsize=9; color="#cccccc";')
        for v in ex.classes:
            name = v.cls.name
            lines.append(f"    {_q('class ' + name)} [shape=plaintext, fontcolor="
                         f"{_q(colours[name])}];")
        lines.append("  }")
    lines.append("}")
    return "\n".join(lines) + "\n"


def layout(topo: Topology) -> dict[str, tuple[float, float]]:
    """Node positions in [0, 1] x [0, 1]: hosts on the bottom row, every other node a row
    per hop from its nearest host (leaves, then spines), each row in file order; a fabric
    of hosts only (an LPU ring) on a circle."""
    from ..topology.graph import adjacency

    adj = adjacency(topo.links)
    layer = {n: 0 for n, node in topo.nodes.items() if node.kind == "host"}
    frontier = list(layer)
    while frontier:
        nxt = []
        for u in frontier:
            for v in adj.get(u, ()):
                if v not in layer:
                    layer[v] = layer[u] + 1
                    nxt.append(v)
        frontier = nxt
    for n in topo.nodes:
        layer.setdefault(n, 0)
    top = max(layer.values(), default=0)
    names = list(topo.nodes)
    if top == 0:
        k = len(names)
        return {n: (0.5 + 0.45 * math.cos(2 * math.pi * i / k),
                    0.5 + 0.45 * math.sin(2 * math.pi * i / k)) for i, n in enumerate(names)}
    rows: dict[int, list[str]] = {}
    for n in names:
        rows.setdefault(layer[n], []).append(n)
    pos = {}
    for level, row in rows.items():
        for i, n in enumerate(row):
            pos[n] = ((i + 0.5) / len(row), level / top)
    return pos


def draw_png(topo: Topology, ex: Explanation, path: str | Path) -> Path:
    """Draw the fabric to `path` with matplotlib (Agg: no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pos = layout(topo)
    colours = class_colours(ex)
    width = min(30.0, max(6.0, max(_row_widths(pos).values(), default=1.0)))
    fig, ax = plt.subplots(figsize=(width, 6))
    names = {link_label(link) for link in topo.links}
    # one figure for every link goes in the title; else each link's at a staggered point
    # along it, so the labels of links that fan out from one node do not overlap
    labels = len(topo.links) <= 40 and len(names) > 1
    for i, link in enumerate(topo.links):
        (x0, y0), (x1, y1) = pos[link.a], pos[link.b]
        ax.plot([x0, x1], [y0, y1], color="#bbbbbb", lw=1, zorder=1)
        classes = _link_classes(ex, link)
        dx, dy = x1 - x0, y1 - y0
        norm = math.hypot(dx, dy) or 1.0
        ox, oy = -dy / norm * 0.006, dx / norm * 0.006
        for j, c in enumerate(classes):
            k = j - (len(classes) - 1) / 2
            ax.plot([x0 + k * ox, x1 + k * ox], [y0 + k * oy, y1 + k * oy],
                    color=colours[c], lw=2.2, zorder=2)
        if labels:
            t = 0.3 + 0.4 * ((i * 0.618) % 1)
            ax.text(x0 + t * dx, y0 + t * dy, link_label(link), fontsize=6,
                    ha="center", va="center", color="#444444", zorder=3,
                    bbox={"boxstyle": "round,pad=0.1", "fc": "white", "ec": "none",
                          "alpha": 0.7})
    for name, node in topo.nodes.items():
        x, y = pos[name]
        switch = node.kind == "switch"
        ax.text(x, y, name, fontsize=8, ha="center", va="center", zorder=4,
                bbox={"boxstyle": "round,pad=0.3" if switch else "square,pad=0.3",
                      "fc": "#eeeeee" if switch else "white", "ec": "#555555"})
    flows = _flows_of(ex)
    handles = [plt.Line2D([], [], color=colours[v.cls.name], lw=2.2, label=f"{v.cls.name}: "
                          + (", ".join(flows.get(v.cls.name, [])) or "no flows"))
               for v in ex.classes]
    if handles:
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8,
                  title="classes (links their flows may take)", title_fontsize=8)
    ax.set_xlim(-0.05, 1.05)
    ax.set_ylim(-0.08, 1.08)
    ax.axis("off")
    scale = f", time_scale {ex.time_scale:g}" if ex.time_scale != 1 else ""
    what = (f"every link {next(iter(names))}" if len(names) == 1
            else "links labelled rate, one-way delay")
    ax.set_title(f"{ex.topology}: {what} (fabric time{scale})", fontsize=10)
    out = Path(path)
    fig.savefig(out, dpi=130, bbox_inches="tight")
    plt.close(fig)
    return out


def _row_widths(pos: Mapping[str, tuple[float, float]]) -> dict[float, float]:
    """Inches each row of node labels needs side by side (8-point text)."""
    out: dict[float, float] = {}
    for name, (_, y) in pos.items():
        out[y] = out.get(y, 0.0) + 0.085 * len(name) + 0.4
    return out


def render(topo: Topology, ex: Explanation, fmt: str) -> str:
    """The text formats (`mermaid`, `dot`)."""
    renderers: Mapping[str, Any] = {"mermaid": to_mermaid, "dot": to_dot}
    return str(renderers[fmt](topo, ex))
