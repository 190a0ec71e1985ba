"""bench/compare.py's table: medians and spreads, the ratio's direction, and "not measured"
for figures our benchmark does not produce (no benchmark is run here)."""

import argparse
import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("bench_compare", ROOT / "bench" / "compare.py")
assert spec and spec.loader
compare = importlib.util.module_from_spec(spec)
spec.loader.exec_module(compare)


def row(text: str, label_start: str) -> list[str]:
    line = next(line for line in text.splitlines() if line.startswith(f"| {label_start}"))
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_table_medians_ratios_and_not_measured() -> None:
    args = argparse.Namespace(repeat=3, runners=100, tasks=300, lines=20000, chunk_mib=4,
                              burst=500, submitters=4, per_submitter=500, process_tasks=200)
    ours = [{"start_p50": v, "start_p99": 10.0} for v in (2.0, 1.0, 3.0)]
    peer = [{"start_p50": 4.0, "start_p99": 5.0, "process_p50": 6.0, "process_p99": 7.0,
             "process_rate": r, "trivial_rate": 300.0} for r in (100.0, 300.0, 200.0)]
    text = compare.render(args, {"CPU": "x"}, {"celery": "5"}, [("ours 1", "0.10")],
                          {"ours": ours, "peer": peer}, "2026-01-01 00:00")
    p50 = row(text, "submit -> task in the worker/runner, p50")
    assert p50[1:] == ["2.00 (1.00-3.00)", "4.00 (4.00-4.00)", "2.00x"]  # peer / ours
    assert row(text, "submit -> task in the worker/runner, p99")[3] == "0.50x"
    rate = row(text, "real-process tasks/s")
    assert rate[1:] == ["not measured", "200 (100-300)", "-"]
    assert row(text, "submit -> real `date` process started, p50")[1] == "not measured"
    assert "- load average (1 / 5 / 15 min) before each run: ours 1 0.10" in text


def test_real_process_rows_compare_with_the_peers_one_figure() -> None:
    args = argparse.Namespace(repeat=1, runners=100, tasks=300, lines=20000, chunk_mib=4,
                              burst=500, submitters=4, per_submitter=500, process_tasks=200)
    ours = [{"process_p50": 8.0, "process_git_p50": 60.0, "line_p50": 12.0,
             "process_rate": 200.0, "process_rate_4x2": 150.0}]
    peer = [{"process_p50": 6.0, "process_rate": 300.0}]
    text = compare.render(args, {"CPU": "x"}, {"celery": "5"}, [("ours 1", "0.10")],
                          {"ours": ours, "peer": peer}, "2026-01-01 00:00")
    assert row(text, "submit -> real `date` process started, p50")[3] == "0.75x"
    git = row(text, "submit -> real `date` process started, git repository, p50")
    assert git[1:] == ["60.00 (60.00-60.00)", "6.00 (6.00-6.00)", "0.10x"]
    assert row(text, "submit -> `date`'s line seen")[2:] == ["not measured", "-"]
    assert row(text, "real-process tasks/s (`true`, 4 runners")[3] == "0.50x"
    assert "bench/bench_process.py --tasks 200 --burst 500" in text


def test_nearest_rank_percentile() -> None:
    values = [float(v) for v in range(1, 101)]
    assert compare.pct(values, 50) == 50.0
    assert compare.pct(values, 99) == 99.0
    assert compare.pct([7.0], 99) == 7.0
