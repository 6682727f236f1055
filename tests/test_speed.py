"""The speed benchmark's output (never its timings): the CSV a researcher reads, and a failing
configuration that becomes a row saying so instead of losing the others."""
from __future__ import annotations

import csv

import bench.speed
from bench.errors import BenchError
from bench.speed import REQUIRED, run_speed


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_speed_writes_one_row_per_configuration_with_the_issue_columns(tmp_path):
    path = run_speed(profile="smoke", steps=2, warmup=1, out=str(tmp_path), only=["lct"], repeats=2)
    rows = _rows(path)
    assert list(rows[0])[:len(REQUIRED)] == REQUIRED
    assert [(r["method"], r["workers"], r["schedule"]) for r in rows] == [
        ("bp", "1", "sequential"), ("lct", "2", "lockstep"), ("lct", "2", "pipelined")]
    for r in rows:
        assert r["status"] == "completed" and float(r["samples_per_s"]) > 0
        runs = [float(v) for v in r["samples_per_s_runs"].split("/")]
        assert len(runs) == 2 and abs(float(r["samples_per_s"]) - min(runs)) <= 0.5  # the median (lower) of two
        assert abs(float(r["samples_per_s_best"]) - max(runs)) <= 0.5
        assert float(r["peak_mem_mb_max_worker"]) > 0 and 0 <= float(r["comm_share"]) <= 1
    assert rows[0]["ratio_to_bp_1_worker"] == "1.0"
    assert rows[2]["staleness_mean"] != ""  # pipelined really ran ahead
    assert (tmp_path / "speed-smoke.md").read_text().count("\n| lct |") == 2


def test_a_failing_configuration_is_a_row_and_the_rest_go_on(tmp_path, monkeypatch):
    real = bench.speed.run_distributed

    def fails_for_pipelined(cfg, dcfg, log_dir=None):
        if dcfg.schedule == "pipelined":
            raise BenchError("distributed run failed: rank 1 exited with code 1")
        return real(cfg, dcfg, log_dir=log_dir)

    monkeypatch.setattr(bench.speed, "run_distributed", fails_for_pipelined)
    rows = _rows(run_speed(profile="smoke", steps=2, warmup=1, out=str(tmp_path), only=["lct"], repeats=1))
    assert [r["status"] for r in rows] == ["completed", "completed",
                                           "failed: distributed run failed: rank 1 exited with code 1"]
    assert rows[2]["samples_per_s"] == ""
