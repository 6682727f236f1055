"""The speed benchmark's output (never its timings): the CSV a researcher reads, the median of repeated
runs, the cost model's prediction beside each, and a failing configuration that becomes a row saying so
instead of losing the others."""
from __future__ import annotations

import csv

import pytest

import bench.speed
from bench.errors import BenchError
from bench.exec import pp_schedules
from bench.predict.calibration import Calibration
from bench.speed import REQUIRED, calibrate_like_a_worker, median_run, run_speed


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow  # every configuration on real workers (30 s); the failing-row test runs a few by default
def test_speed_writes_one_row_per_configuration_with_the_issue_columns(tmp_path):
    path = run_speed(profile="smoke", steps=2, warmup=1, out=str(tmp_path), only=["lct"], repeats=1)
    rows = _rows(path)
    assert list(rows[0])[:len(REQUIRED)] == REQUIRED
    assert [(r["method"], r["workers"], r["schedule"]) for r in rows] == [
        ("bp", "1", "sequential"), ("lct", "2", "lockstep"), ("lct", "2", "overlapped")]
    for r in rows:
        assert r["status"] == "completed" and float(r["samples_per_s"]) > 0
        assert float(r["samples_per_s"]) == float(r["samples_per_s_best"])  # one run: median = best
        assert float(r["peak_mem_mb_max_worker"]) > 0 and 0 <= float(r["comm_share"]) <= 1
    assert rows[0]["ratio_to_bp_1_worker"] == "1.0"
    assert all(float(r["predicted_samples_per_s"]) > 0 and 0 <= float(r["predicted_comm_share"]) <= 1 for r in rows)
    assert rows[2]["staleness_mean"] != ""  # overlapped really ran ahead
    assert (tmp_path / "speed-smoke.md").read_text().count("\n| lct |") == 2
    # the prediction's calibration was taken before the round, in a process of its own started like a worker's
    [path] = (tmp_path / "speed-smoke").glob("*/calibration-round1.json")
    cal = Calibration.load(path)
    assert cal.env["threads"] == 1 and set(cal.methods) == {"bp", "lct"}


def test_a_round_calibration_that_fails_in_its_own_process_is_one_line_and_writes_nothing(tmp_path):
    s = dict(model="nosuch", data="digits", profile="smoke", data_root=None, device="cpu", plugins=None)
    with pytest.raises(BenchError, match="^python -m bench calibrate failed: error: unknown model 'nosuch'"):
        calibrate_like_a_worker([bench.speed.Case("lct", 2)], s, tmp_path / "calibration-round1.json")
    assert not list(tmp_path.iterdir())


def test_a_configuration_is_its_median_run():
    runs = [{"final": {"samples_per_s": v}} for v in (1023.0, 1315.0, 979.0)]
    assert median_run(runs)["final"]["samples_per_s"] == 1023.0
    assert median_run(runs[:2])["final"]["samples_per_s"] == 1023.0  # an even count: the lower one


def test_a_failing_configuration_is_a_row_and_the_rest_go_on(tmp_path, monkeypatch):
    real = bench.speed.run_distributed

    def ddp_fails(cfg, dcfg, log_dir=None):
        if cfg.method == "ddp":
            raise BenchError("distributed run failed: rank 1 exited with code 1")
        return real(cfg, dcfg, log_dir=log_dir)

    monkeypatch.setattr(bench.speed, "run_distributed", ddp_fails)
    rows = _rows(run_speed(profile="smoke", steps=2, warmup=1, out=str(tmp_path), only=["ddp"], repeats=2,
                           predict=False))
    assert [r["status"] for r in rows] == ["completed", "failed: distributed run failed: rank 1 exited with code 1"]
    assert rows[1]["samples_per_s"] == "" and len(rows[0]["samples_per_s_runs"].split("/")) == 2


def test_every_pipeline_schedule_of_this_torch_is_a_configuration():
    gpipe = [c for c in bench.speed.cases(2) if c.method == "gpipe"]
    assert {c.options.get("schedule", "gpipe") for c in gpipe} == set(pp_schedules.available())
    multi = [c for c in gpipe if pp_schedules.is_multi(c.options.get("schedule", "gpipe"))]
    assert multi and all(c.workers == 2 and c.groups == 4 and c.options["stages_per_rank"] == 2 for c in multi)
