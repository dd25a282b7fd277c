#!/usr/bin/env python3
"""Draws bench/compare.sh's raw results as SVG charts.

    bench/charts.py bench/results/<date>.jsonl            # next to it: <date>-*.svg
    bench/charts.py bench/results/<date>.jsonl --docs     # docs/benchmarks/*.svg (for committing)
    bench/charts.py RESULTS.jsonl --out-dir DIR [--prefix NAME]

For each case (the jsonl's `label`), a bar chart of Parley's ratio to each
peer for the metrics of compare.sh's table (ratio-<label>.svg), and one of
every case together (ratios.svg); for the cases that measure latency, the
percentile curves p50, p90, p99, p99.9 and max with one line per server
(percentiles-<label>.svg). Medians over repetitions, as in the table; the
runs of the Socket.IO cases (sio-*) are compared with parley-sio as the base.

Python's standard library only (CI machines and the bench host have no
plotting package), so the SVG is written by hand here. The charts have a
transparent background and switch their text and axis colours with the
reader's light or dark scheme; the series colours read on both.
"""

import argparse
import json
import math
import os
import statistics
import sys
from xml.sax.saxutils import escape, quoteattr

# The metrics of compare.sh's table (keep the two in step): per case family,
# [metric path in the run's JSON, shown name, higher is better].
METRICS = {
    "fanout": [("deliveries_per_s", "deliveries/s", True), ("delivery_latency_ms.p99", "delivery p99", False),
               ("deliveries_per_cpu_s", "deliveries per server CPU-s", True)],
    "latency": [("delivery_latency_ms.p50", "delivery p50", False), ("delivery_latency_ms.p99", "delivery p99", False),
                ("delivery_latency_ms.p999", "delivery p99.9", False),
                ("deliveries_per_cpu_s", "deliveries per server CPU-s", True)],
    "dm": [("acked_per_s", "acked msgs/s", True), ("ack_latency_ms.p99", "ack p99", False),
           ("acked_per_cpu_s", "acked per server CPU-s", True)],
    "idle": [("rss_per_connection_kb", "RSS per connection", False)],
    "connect": [("connects_per_s", "connections/s", True), ("connects_per_cpu_s", "connections per server CPU-s", True)],
    "growth": [("deliveries_per_cpu_s", "deliveries per server CPU-s", True), ("deliveries_per_s", "deliveries/s", True)],
}

# Which histogram each case's percentile curves show.
CURVES = {"latency": ("delivery_latency_ms", "delivery latency"), "dm": ("ack_latency_ms", "ack latency"),
          "fanout": ("delivery_latency_ms", "delivery latency")}
CURVE_CASES = ("latency", "dm")  # the cases drawn by default (fanout's tail is a backlog, not a latency)
PERCENTILES = [("p50", "p50"), ("p90", "p90"), ("p99", "p99"), ("p999", "p99.9"), ("max", "max")]

# Case families, as compare.sh's table: the base target, its peers in column order.
FAMILIES = [
    {"match": lambda label: not label.startswith("sio-"), "base": "parley", "order": ["parley", "bun", "node"]},
    {"match": lambda label: label.startswith("sio-"), "base": "parley-sio", "order": ["parley-sio", "node-sio", "parley"]},
]

# Mid-tone colours that keep their contrast on white and on a dark page
# (Okabe–Ito hues, which colour-blind readers can also tell apart).
COLOURS = {"parley": "#0a84d6", "bun": "#e69f00", "node": "#009e73", "parley-sio": "#cc79a7", "node-sio": "#d55e00"}
FALLBACK_COLOURS = ["#7f7f7f", "#b8860b", "#8a63d2"]

STYLE = """
text { fill: #24292f; font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; font-size: 12px; }
.title { font-size: 15px; font-weight: 600; }
.muted { fill: #57606a; font-size: 11px; }
.axis { stroke: #57606a; stroke-width: 1; }
.grid { stroke: #d0d7de; stroke-width: 1; }
.even { stroke: #24292f; stroke-width: 1.5; }
.band { fill: #8c959f; fill-opacity: 0.08; }
@media (prefers-color-scheme: dark) {
  text { fill: #e6edf3; }
  .muted { fill: #8b949e; }
  .axis { stroke: #8b949e; }
  .grid { stroke: #30363d; }
  .even { stroke: #e6edf3; }
}
"""


class ChartError(Exception):
    """A results file the charts cannot be drawn from (the message says why)."""


def load_runs(path):
    runs = []
    try:
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                line = line.strip()
                if not line:
                    continue
                try:
                    run = json.loads(line)
                except json.JSONDecodeError as e:
                    raise ChartError(f"{path}:{number}: not JSON ({e.msg})") from None
                if not isinstance(run, dict) or "label" not in run or "target" not in run:
                    raise ChartError(f"{path}:{number}: a run needs \"label\" and \"target\"")
                runs.append(run)
    except OSError as e:
        raise ChartError(f"{path}: {e.strerror}") from None
    if not runs:
        raise ChartError(f"{path}: no runs")
    return runs


def get(run, path):
    value = run
    for key in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return value


def measured(runs):
    # As compare.sh's table: a run that connected nobody measured nothing.
    return [r for r in runs if r.get("ok") or (r.get("connections") or 0) > 0]


def median_of(runs, path):
    values = [v for v in (get(r, path) for r in measured(runs)) if v is not None]
    return statistics.median(values) if values else None


def family_of(label):
    for family in FAMILIES:
        if family["match"](label):
            return family
    return FAMILIES[0]


def metrics_of(label):
    return METRICS.get(label.removeprefix("sio-").split("-")[0], [])


def colour_of(target, targets):
    if target in COLOURS:
        return COLOURS[target]
    return FALLBACK_COLOURS[sorted(targets).index(target) % len(FALLBACK_COLOURS)]


def fmt_ratio(r):
    if r >= 100:
        return f"{r:.0f}×"
    if r >= 10:
        return f"{r:.1f}×"
    if r >= 0.01:
        return f"{r:.2f}×"
    return f"{r:.1g}×"


def fmt_ms(v):
    if v >= 100:
        return f"{v:.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.2g}" if v < 1 else f"{v:.2f}".rstrip("0").rstrip(".")


class Svg:
    def __init__(self, width, height, title):
        self.width, self.height = width, height
        self.parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
                      f'viewBox="0 0 {width} {height}" role="img" aria-label={quoteattr(title)}>',
                      f"<title>{escape(title)}</title>", f"<style>{STYLE}</style>"]

    def add(self, element):
        self.parts.append(element)

    def text(self, x, y, content, cls=None, anchor="start", extra=""):
        c = f' class="{cls}"' if cls else ""
        self.add(f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}"{c}{extra}>{escape(content)}</text>')

    def line(self, x1, y1, x2, y2, cls):
        self.add(f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" class="{cls}"/>')

    def legend(self, x, y, entries):
        for name, colour in entries:
            self.add(f'<rect x="{x:.1f}" y="{y - 9:.1f}" width="12" height="12" rx="2" fill="{colour}"/>')
            self.text(x + 17, y + 1, name)
            x += 30 + 7 * len(name)

    def render(self):
        return "\n".join(self.parts + ["</svg>"]) + "\n"


# ------------------------------------------------------------------ ratio bars

def ratio_rows(runs, labels):
    """[(label, metric name, higher is better, {peer: ratio}, base, peers)] for the given cases."""
    rows = []
    for label in labels:
        family = family_of(label)
        case_runs = [r for r in runs if r["label"] == label]
        targets = [t for t in family["order"] if any(r["target"] == t for r in case_runs)]
        base = family["base"]
        if base not in targets:
            continue
        peers = [t for t in targets if t != base]
        for path, name, higher in metrics_of(label):
            of = {t: median_of([r for r in case_runs if r["target"] == t], path) for t in targets}
            ratios = {}
            for p in peers:
                if of[base] is not None and of[p]:
                    ratios[p] = of[base] / of[p]
            if ratios:
                unit = " ms" if path.endswith(("p50", "p90", "p99", "p999", "max")) else ""
                shown = name + unit if unit and not name.endswith("ms") else name
                rows.append((label, shown, higher, ratios, base, peers))
    return rows


def ratio_chart(rows, title, subtitle):
    """Horizontal bars from 1× to each ratio on a log scale, one group per metric."""
    peers = []
    for row in rows:
        for p in row[5]:
            if p not in peers:
                peers.append(p)
    base = rows[0][4]
    all_ratios = [r for row in rows for r in row[3].values() if r > 0]
    # A log scale symmetric about 1×, wide enough for the largest ratio (at most 10^3 either way).
    span = max(abs(math.log10(r)) for r in all_ratios) if all_ratios else 1
    decades = min(3.0, max(0.5, math.ceil(span * 2 + 0.15) / 2))
    left, right = 300, 780
    width = right + 60
    bar_h, gap = 14, 4
    group_h = len(peers) * (bar_h + gap) + 14
    labels = []
    for row in rows:
        if row[0] not in labels:
            labels.append(row[0])
    several_cases = len(labels) > 1
    top = 86
    height = top + len(rows) * group_h + (len(labels) * 22 if several_cases else 0) + 52
    svg = Svg(width, height, title)
    svg.text(16, 24, title, "title")
    svg.text(16, 42, subtitle, "muted")
    svg.legend(16, 64, [(f"{base} / {p}", colour_of(p, peers + [base])) for p in peers])

    def x_of(ratio):
        v = max(-decades, min(decades, math.log10(ratio)))
        return left + (v + decades) / (2 * decades) * (right - left)

    plot_bottom = height - 44
    # Grid and ticks: 1-2-5 steps inside the domain.
    ticks = []
    for e in range(-3, 4):
        for m in (1, 2, 5):
            t = m * 10 ** e
            if -decades - 1e-9 <= math.log10(t) <= decades + 1e-9:
                ticks.append(t)
    if decades > 1.5:
        ticks = [t for t in ticks if math.log10(t) == round(math.log10(t))]
    for t in ticks:
        x = x_of(t)
        svg.line(x, top - 6, x, plot_bottom, "grid")
        svg.text(x, plot_bottom + 16, f"{t:g}×", "muted", "middle")
    svg.add(f'<rect class="band" x="{left}" y="{top - 6}" width="{x_of(1) - left:.1f}" height="{plot_bottom - top + 6}"/>')
    svg.text(left, plot_bottom + 32, f"← {base} lower", "muted")
    svg.text(right, plot_bottom + 32, f"{base} higher →", "muted", "end")
    y = top
    current = None
    for label, name, higher, ratios, _, row_peers in rows:
        if several_cases and label != current:
            current = label
            svg.text(16, y + 12, label, extra=' font-weight="600"')
            y += 22
        svg.text(28 if several_cases else 16, y + 12, name)
        svg.text(28 if several_cases else 16, y + 26, "higher is better" if higher else "lower is better", "muted")
        for i, p in enumerate(peers):
            by = y + i * (bar_h + gap)
            if p not in ratios:
                continue
            r = ratios[p]
            x0, x1 = x_of(1), x_of(r)
            lo, w = min(x0, x1), max(abs(x1 - x0), 1.5)
            svg.add(f'<rect class="bar" x="{lo:.1f}" y="{by:.1f}" width="{w:.1f}" height="{bar_h}" rx="2" '
                    f'fill="{colour_of(p, peers + [base])}" data-case={quoteattr(label)} data-metric={quoteattr(name)} '
                    f'data-peer={quoteattr(p)} data-ratio="{r:.6g}"><title>{escape(f"{label} {name}: {base}/{p} = {fmt_ratio(r)}")}</title></rect>')
            clipped = abs(math.log10(r)) > decades
            tag = fmt_ratio(r) + (" (off scale)" if clipped else "")
            if x1 >= x0:
                svg.text(x1 + 5, by + bar_h - 3, tag)
            else:
                svg.text(x1 - 5, by + bar_h - 3, tag, anchor="end")
        y += group_h
    x1 = x_of(1)
    svg.line(x1, top - 6, x1, plot_bottom, "even")
    svg.line(left, plot_bottom, right, plot_bottom, "axis")
    return svg.render()


# ------------------------------------------------------------ percentile curves

def percentile_chart(runs, label, histogram, what, title, subtitle):
    family = family_of(label)
    case_runs = [r for r in runs if r["label"] == label]
    targets = [t for t in family["order"] if any(r["target"] == t for r in case_runs)]
    targets += sorted({r["target"] for r in case_runs} - set(targets))
    series = {}   # target -> [median per percentile]
    singles = {}  # target -> [[value per percentile] per run], when there are several runs
    for t in targets:
        mine = [r for r in measured(case_runs) if r["target"] == t]
        medians = [median_of(mine, f"{histogram}.{key}") for key, _ in PERCENTILES]
        if all(v is not None and v > 0 for v in medians):
            series[t] = medians
            if len(mine) > 1:
                singles[t] = [[get(r, f"{histogram}.{key}") for key, _ in PERCENTILES] for r in mine]
    if not series:
        return None
    values = [v for vs in series.values() for v in vs]
    values += [v for runs_ in singles.values() for vs in runs_ for v in vs if v and v > 0]
    lo = 10 ** math.floor(math.log10(min(values)))
    hi = 10 ** math.ceil(math.log10(max(values)))
    if hi / lo < 10:
        hi = lo * 10
    left, right, top = 76, 700, 86
    bottom = top + 300
    width, height = right + 170, bottom + 56
    svg = Svg(width, height, title)
    svg.text(16, 24, title, "title")
    svg.text(16, 42, subtitle, "muted")
    svg.legend(16, 64, [(t, colour_of(t, targets)) for t in series])

    def x_of(i):
        return left + i * (right - left) / (len(PERCENTILES) - 1)

    def y_of(v):
        return bottom - (math.log10(v) - math.log10(lo)) / (math.log10(hi) - math.log10(lo)) * (bottom - top)

    for e in range(round(math.log10(lo)), round(math.log10(hi)) + 1):
        for m in (1, 2, 5):
            v = m * 10.0 ** e
            if lo <= v <= hi and (m == 1 or math.log10(hi / lo) <= 3):
                y = y_of(v)
                svg.line(left, y, right, y, "grid")
                svg.text(left - 8, y + 4, f"{v:g}", "muted", "end")
    for i, (_, name) in enumerate(PERCENTILES):
        svg.line(x_of(i), top, x_of(i), bottom, "grid")
        svg.text(x_of(i), bottom + 18, name, anchor="middle")
    svg.line(left, bottom, right, bottom, "axis")
    svg.line(left, top, left, bottom, "axis")
    svg.text(left + (right - left) / 2, bottom + 40, "percentile", "muted", "middle")
    svg.add(f'<text x="18" y="{(top + bottom) / 2:.1f}" class="muted" text-anchor="middle" '
            f'transform="rotate(-90 18 {(top + bottom) / 2:.1f})">{escape(what)}, ms (log scale)</text>')
    for t, runs_ in singles.items():
        for vs in runs_:
            if all(v and v > 0 for v in vs):
                points = " ".join(f"{x_of(i):.1f},{y_of(v):.1f}" for i, v in enumerate(vs))
                svg.add(f'<polyline class="run" points="{points}" fill="none" stroke="{colour_of(t, targets)}" '
                        f'stroke-width="1" stroke-opacity="0.35" data-target={quoteattr(t)}/>')
    # The end labels, moved apart where the curves end close together.
    ends = sorted(((y_of(vs[-1]), t) for t, vs in series.items()), reverse=True)
    label_y = {}
    floor = bottom + 4
    for y, t in ends:
        label_y[t] = min(y + 4, floor)
        floor = label_y[t] - 14
    for t, vs in series.items():
        colour = colour_of(t, targets)
        points = " ".join(f"{x_of(i):.1f},{y_of(v):.1f}" for i, v in enumerate(vs))
        values_attr = " ".join(f"{v:.6g}" for v in vs)
        svg.add(f'<polyline class="curve" points="{points}" fill="none" stroke="{colour}" stroke-width="2.5" '
                f'data-target={quoteattr(t)} data-values="{values_attr}"/>')
        for i, v in enumerate(vs):
            svg.add(f'<circle cx="{x_of(i):.1f}" cy="{y_of(v):.1f}" r="3.5" fill="{colour}">'
                    f'<title>{escape(f"{t} {PERCENTILES[i][1]}: {fmt_ms(v)} ms")}</title></circle>')
        svg.text(right + 10, label_y[t], f"{t} {fmt_ms(vs[-1])} ms", extra=f' style="fill: {colour}"')
    return svg.render()


# ------------------------------------------------------------------ the files

def describe(runs, source):
    reps = max((r.get("rep") or 1) for r in runs)
    quick = any((get(r, "params.duration_s") or 99) < 5 for r in runs if r.get("scenario") != "idle")
    bits = [f"median of {reps} run{'s' if reps > 1 else ''} per server" if reps > 1 else "one run per server"]
    if quick:
        bits.append("--quick (short runs)")
    bits.append(os.path.basename(source))
    return " · ".join(bits)


def charts(runs, source, curve_cases=CURVE_CASES):
    """{file suffix: svg text} for every chart these runs allow."""
    out = {}
    note = describe(runs, source)
    labels = []
    for r in runs:
        if r["label"] not in labels:
            labels.append(r["label"])
    for label in labels:
        rows = ratio_rows(runs, [label])
        if rows:
            base, peers = rows[0][4], rows[0][5]
            title = f"{label}: {base}'s ratio to {' and '.join(peers)}"
            out[f"ratio-{label}"] = ratio_chart(rows, title, f"{base} / peer, log scale, 1× = even · {note}")
    for family in FAMILIES:
        fam_labels = [label for label in labels if family["match"](label)]
        rows = ratio_rows(runs, fam_labels)
        if len(fam_labels) > 1 and rows:
            name = "ratios" if family["base"] == "parley" else "ratios-sio"
            title = f"{family['base']}'s ratio to {' and '.join(rows[0][5])}, every case"
            out[name] = ratio_chart(rows, title, f"{family['base']} / peer, log scale, 1× = even · {note}")
    for label in labels:
        kind = label.removeprefix("sio-").split("-")[0]
        if kind in curve_cases:
            histogram, what = CURVES[kind]
            svg = percentile_chart(runs, label, histogram, what, f"{label}: {what} percentiles",
                                   f"lower is better · {note}")
            if svg:
                out[f"percentiles-{label}"] = svg
    return out


def main(argv=None):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    parser = argparse.ArgumentParser(description="Draws bench/compare.sh results (.jsonl) as SVG charts.")
    parser.add_argument("results", help="a bench/results/<date>.jsonl file")
    parser.add_argument("--out-dir", help="where to write (default: next to the results)")
    parser.add_argument("--prefix", help="file name prefix (default: the results' name; none with --docs)")
    parser.add_argument("--docs", action="store_true",
                        help="write to docs/benchmarks/ under fixed names, for committing")
    args = parser.parse_args(argv)
    try:
        runs = load_runs(args.results)
    except ChartError as e:
        print(f"charts.py: {e}", file=sys.stderr)
        return 1
    if args.docs:
        out_dir = args.out_dir or os.path.join(root, "docs", "benchmarks")
        prefix = args.prefix or ""
    else:
        out_dir = args.out_dir or os.path.dirname(os.path.abspath(args.results))
        prefix = args.prefix if args.prefix is not None else os.path.basename(args.results).removesuffix(".jsonl")
    files = charts(runs, args.results)
    if not files:
        print(f"charts.py: {args.results}: no case with a base and a peer to compare", file=sys.stderr)
        return 1
    os.makedirs(out_dir, exist_ok=True)
    if args.docs and not prefix:
        # docs/benchmarks/ shows one run: charts of cases this run lacks would be stale.
        for name in os.listdir(out_dir):
            if name.endswith(".svg") and name[:-4] not in files and name.startswith(("ratio-", "ratios", "percentiles-")):
                os.remove(os.path.join(out_dir, name))
    for suffix, text in files.items():
        path = os.path.join(out_dir, f"{prefix}-{suffix}.svg" if prefix else f"{suffix}.svg")
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(path + ".tmp", path)
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
