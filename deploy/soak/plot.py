#!/usr/bin/env python3
"""Plots the CSV of `berth-bench soak` as an SVG: one panel per metric over
time, each from zero (so that a flat curve looks flat), with the end of
warm-up marked.

    python3 deploy/soak/plot.py soak.csv soak.svg [--warmup 5m] [--title TEXT]

Only the Python standard library: the SVG is written by hand.
"""

import argparse
import csv
import math
from xml.sax.saxutils import escape

MIB = 1024 * 1024

# (title, unit, [(column, scale, label)]): every series of a panel shares
# its unit.
PANELS = [
    ("Server RSS", "MiB", [("rss_bytes", 1 / MIB, "VmRSS")]),
    ("Open file descriptors", "", [("fds", 1, "fds")]),
    ("Threads", "", [("threads", 1, "threads")]),
    ("Server CPU", "% of a core", [("cpu_pct", 1, "cpu")]),
    ("uploads/ directory", "files", [("uploads_files", 1, "files"),
                                     ("upload_sessions", 1, "sessions (metrics)")]),
    ("uploads/ directory", "MiB", [("uploads_bytes", 1 / MIB, "bytes")]),
    ("quarantine/ and trash/", "files", [("quarantine_files", 1, "files")]),
    ("Index file (index.redb)", "MiB", [("index_bytes", 1 / MIB, "size")]),
    ("Blobs", "MiB", [("blobs_bytes", 1 / MIB, "blobs/ on disk"),
                      ("stored_bytes", 1 / MIB, "stored (index)"),
                      ("reclaimable_bytes", 1 / MIB, "reclaimable")]),
    ("Blobs", "files", [("blobs_files", 1, "blobs/ files")]),
    ("Pushes", "images/s", [("pushes_per_s", 1, "pushes/s")]),
    ("Machine load (1 min)", "", [("load1", 1, "load1")]),
]
COLOURS = ["#1f77b4", "#d62728", "#2ca02c"]
COLUMNS = 3
PANEL_W, PANEL_H = 420, 210
LEFT, RIGHT, TOP, BOTTOM = 62, 14, 44, 36


def seconds(text):
    """`300`, `300s`, `5m` or `1h` as seconds."""
    units = {"s": 1, "m": 60, "h": 3600}
    if text and text[-1] in units:
        return float(text[:-1]) * units[text[-1]]
    return float(text)


def read(path):
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise SystemExit(f"{path}: no samples")
    return rows


def series(rows, column, scale):
    points = []
    for row in rows:
        value = row.get(column, "")
        if value != "":
            points.append((float(row["t_s"]) / 60, float(value) * scale))
    return points


def nice_step(span, ticks=4):
    """A round step (1, 2 or 5 times a power of ten) giving about `ticks` ticks."""
    raw = span / ticks if span > 0 else 1
    power = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 5, 10):
        if raw <= m * power:
            return m * power
    return 10 * power


def label(v):
    if v == 0:
        return "0"
    if abs(v) >= 100 or float(v).is_integer():
        return f"{v:.0f}"
    return f"{v:.2g}" if abs(v) < 1 else f"{v:.1f}"


def panel(out, x0, y0, title, unit, lines, t_max, warmup_min):
    w, h = PANEL_W - LEFT - RIGHT, PANEL_H - TOP - BOTTOM
    px, py = x0 + LEFT, y0 + TOP
    y_max = max([v for _, pts, _ in lines for _, v in pts] + [0])
    step = nice_step(y_max * 1.05 or 1)
    top = step * math.ceil((y_max * 1.05 or 1) / step)
    x_of = lambda t: px + w * t / t_max
    y_of = lambda v: py + h - h * v / top
    heading = f"{title} ({unit})" if unit else title
    out.append(f'<text x="{px}" y="{y0 + 18}" class="title">{escape(heading)}</text>')
    out.append(f'<rect x="{px}" y="{py}" width="{w}" height="{h}" class="frame"/>')
    v = 0.0
    while v <= top + 1e-9:
        y = y_of(v)
        out.append(f'<line x1="{px}" y1="{y:.1f}" x2="{px + w}" y2="{y:.1f}" class="grid"/>')
        out.append(f'<text x="{px - 6}" y="{y + 4:.1f}" class="ytick">{label(v)}</text>')
        v += step
    t_step = nice_step(t_max, 6)
    t = 0.0
    while t <= t_max + 1e-9:
        x = x_of(t)
        out.append(f'<text x="{x:.1f}" y="{py + h + 16}" class="xtick">{label(t)}</text>')
        t += t_step
    out.append(f'<text x="{px + w}" y="{py + h + 30}" class="xlabel">minutes</text>')
    if 0 < warmup_min < t_max:
        x = x_of(warmup_min)
        out.append(f'<line x1="{x:.1f}" y1="{py}" x2="{x:.1f}" y2="{py + h}" class="warmup"/>')
    legend = []
    for name, points, colour in lines:
        if not points:
            continue
        path = " ".join(f"{x_of(t):.1f},{y_of(v):.1f}" for t, v in points)
        out.append(f'<polyline points="{path}" stroke="{colour}" class="curve"/>')
        text = escape(f"{name} {label(points[-1][1])}")
        legend.append(f'<tspan fill="{colour}">{text}</tspan>')
    out.append(f'<text x="{px}" y="{y0 + 33}" class="legend">{"   ".join(legend)}</text>')


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("csv")
    parser.add_argument("svg")
    parser.add_argument("--warmup", type=seconds, default=300,
                        help="warm-up: seconds, or a duration such as 5m")
    parser.add_argument("--title", default="Berth soak: mixed load with GC in a loop")
    args = parser.parse_args()
    rows = read(args.csv)
    t_max = max(float(r["t_s"]) for r in rows) / 60 or 1
    panels = []
    for title, unit, columns in PANELS:
        lines = [(lbl, series(rows, col, scale), COLOURS[i % len(COLOURS)])
                 for i, (col, scale, lbl) in enumerate(columns)]
        if any(pts for _, pts, _ in lines):
            panels.append((title, unit, lines))
    rows_of_panels = math.ceil(len(panels) / COLUMNS)
    width, height = COLUMNS * PANEL_W, rows_of_panels * PANEL_H + 40
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif">',
        "<style>"
        ".title{font-size:13px;font-weight:bold}.frame{fill:none;stroke:#888}"
        ".grid{stroke:#e4e4e4}.ytick{font-size:10px;text-anchor:end}"
        ".xtick{font-size:10px;text-anchor:middle}.xlabel{font-size:10px;text-anchor:end}"
        ".warmup{stroke:#999;stroke-dasharray:4 3}.curve{fill:none;stroke-width:1.5}"
        ".legend{font-size:10px}"
        "</style>",
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="12" y="24" font-size="16" font-weight="bold">{escape(args.title)}</text>',
        f'<text x="{width - 12}" y="24" font-size="11" text-anchor="end">'
        f"dashed: end of warm-up ({args.warmup / 60:g} min); legends: value at the end</text>",
    ]
    for i, (title, unit, lines) in enumerate(panels):
        x0, y0 = (i % COLUMNS) * PANEL_W, 40 + (i // COLUMNS) * PANEL_H
        panel(out, x0, y0, title, unit, lines, t_max, args.warmup / 60)
    out.append("</svg>")
    with open(args.svg, "w") as f:
        f.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
