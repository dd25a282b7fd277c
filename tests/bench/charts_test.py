"""bench/charts.py on a fixed results file (fixtures/compare.jsonl): which SVGs
it writes, that they are well-formed, and that the bars and curves carry the
medians and ratios of the runs. Run: python3 -m unittest -v charts_test"""

import contextlib
import io
import os
import sys
import tempfile
import unittest
import xml.etree.ElementTree as ET

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "bench"))
import charts  # noqa: E402

FIXTURE = os.path.join(HERE, "fixtures", "compare.jsonl")
SVG = "{http://www.w3.org/2000/svg}"


def run_main(*args):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = charts.main(list(args))
    return code, out.getvalue(), err.getvalue()


class ChartsTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()
        self.addCleanup(self.dir.cleanup)

    def render(self, *extra):
        code, out, err = run_main(FIXTURE, "--out-dir", self.dir.name, *extra)
        self.assertEqual(code, 0, err)
        return {os.path.basename(p) for p in out.split()}

    def parse(self, name):
        root = ET.parse(os.path.join(self.dir.name, name)).getroot()
        self.assertEqual(root.tag, SVG + "svg")
        self.assertTrue(root.find(SVG + "title").text)
        return root

    def bars(self, name):
        return {(b.get("data-metric"), b.get("data-peer")): float(b.get("data-ratio"))
                for b in self.parse(name).iter(SVG + "rect") if b.get("class") == "bar"}

    def curves(self, name):
        return {c.get("data-target"): [float(v) for v in c.get("data-values").split()]
                for c in self.parse(name).iter(SVG + "polyline") if c.get("class") == "curve"}

    def test_writes_one_well_formed_svg_per_chart_named_after_the_results(self):
        files = self.render()
        expected = {f"compare-{s}.svg" for s in ("ratio-fanout", "ratio-latency", "ratio-dm", "ratio-sio-fanout",
                                                 "ratios", "percentiles-latency", "percentiles-dm")}
        self.assertEqual(files, expected)
        self.assertEqual(set(os.listdir(self.dir.name)), expected, "no temporary files left behind")
        for name in files:
            self.parse(name)

    def test_docs_mode_uses_fixed_names_and_drops_charts_of_cases_the_run_lacks(self):
        for name in ("ratio-growth-19000.svg", "percentiles-latency.svg", "notes.svg", "README.md"):
            with open(os.path.join(self.dir.name, name), "w") as f:
                f.write("<svg/>")
        files = self.render("--docs")
        self.assertIn("ratios.svg", files)
        self.assertIn("percentiles-latency.svg", files)
        left = set(os.listdir(self.dir.name))
        self.assertNotIn("ratio-growth-19000.svg", left, "a chart of an earlier run's case is gone")
        self.assertEqual(left - files, {"notes.svg", "README.md"}, "other files are kept")
        self.parse("percentiles-latency.svg")

    def test_ratio_bars_are_parley_over_each_peer_for_every_metric(self):
        self.render()
        bars = self.bars("compare-ratio-fanout.svg")
        self.assertEqual(len(bars), 6, "three metrics, two peers")
        self.assertAlmostEqual(bars[("deliveries/s", "bun")], 0.8)
        self.assertAlmostEqual(bars[("deliveries/s", "node")], 20.0)
        self.assertAlmostEqual(bars[("delivery p99 ms", "bun")], 2.0)
        self.assertAlmostEqual(bars[("deliveries per server CPU-s", "bun")], 0.5)

    def test_medians_over_repetitions_and_failed_runs_that_measured_nothing_are_left_out(self):
        self.render()
        bars = self.bars("compare-ratio-latency.svg")
        self.assertAlmostEqual(bars[("delivery p50 ms", "bun")], 2.0 / 0.5)
        self.assertAlmostEqual(bars[("deliveries per server CPU-s", "node")], 200000 / 150000, places=4)
        curves = self.curves("compare-percentiles-latency.svg")
        self.assertEqual(list(curves), ["parley", "bun", "node"])
        self.assertEqual(curves["parley"], [2.0, 2.0, 4.0, 8.0, 10.0])
        self.assertEqual(curves["node"], [500.0, 800.0, 900.0, 950.0, 990.0])
        runs = [p for p in self.parse("compare-percentiles-latency.svg").iter(SVG + "polyline") if p.get("class") == "run"]
        self.assertEqual(len(runs), 6, "each repetition drawn faintly under the median")

    def test_a_missing_peer_has_no_bar(self):
        self.render()
        bars = self.bars("compare-ratio-dm.svg")
        self.assertEqual({peer for _, peer in bars}, {"node"})
        self.assertAlmostEqual(bars[("acked msgs/s", "node")], 0.75)
        self.assertEqual(list(self.curves("compare-percentiles-dm.svg")), ["parley", "node"])

    def test_socketio_cases_compare_parley_sio_with_node_sio_and_parley(self):
        self.render()
        bars = self.bars("compare-ratio-sio-fanout.svg")
        self.assertEqual({peer for _, peer in bars}, {"node-sio", "parley"})
        self.assertAlmostEqual(bars[("deliveries/s", "node-sio")], 5.0)
        self.assertNotIn(("deliveries/s", "node-sio"), self.bars("compare-ratios.svg"),
                         "the WebSocket overview holds only the WebSocket cases")

    def test_the_overview_holds_every_websocket_case(self):
        self.render()
        cases = {b.get("data-case") for b in self.parse("compare-ratios.svg").iter(SVG + "rect") if b.get("class") == "bar"}
        self.assertEqual(cases, {"fanout", "latency", "dm"})

    def test_bad_input_is_a_clear_error_and_writes_nothing(self):
        cases = {
            "empty.jsonl": ("", "no runs"),
            "garbled.jsonl": ('{"label":"dm","target":"parley"}\n{not json\n', "garbled.jsonl:2: not JSON"),
            "unlabelled.jsonl": ('{"target":"parley"}\n', 'needs "label"'),
            "alone.jsonl": ('{"label":"dm","target":"parley","ok":true,"connections":1,"acked_per_s":5}\n',
                            "no case with a base and a peer"),
        }
        for name, (text, message) in cases.items():
            path = os.path.join(self.dir.name, name)
            with open(path, "w") as f:
                f.write(text)
            out_dir = os.path.join(self.dir.name, "out-" + name)
            code, _, err = run_main(path, "--out-dir", out_dir)
            self.assertEqual(code, 1, name)
            self.assertIn(message, err, name)
            self.assertFalse(os.path.exists(out_dir), f"{name}: nothing written")
        code, _, err = run_main(os.path.join(self.dir.name, "missing.jsonl"))
        self.assertEqual(code, 1)
        self.assertIn("No such file", err)


if __name__ == "__main__":
    unittest.main()
