"""Time to target: every evaluation carries the training clock and the samples seen; the report finds, per
setting, when each method first reaches BP's final accuracy minus a point (or a given target), and says
`not reached` where it never does. Synthetic records for the table, one tiny real run for the curves."""
from __future__ import annotations

import json

import pytest

from bench import report
from bench.__main__ import main
from bench.config import RunConfig
from bench.report.tta import Target, parse_targets, table_time_to_target
from bench.train.loop import run
from bench.train.records import RecordWriter
from test_report import csv_rows, find, record


def curve(rec: dict, accs: list[float], total_s: float) -> dict:
    n = len(accs)
    steps = [rec["config"]["steps"] * (i + 1) // n for i in range(n)]
    rec["curves"].update(step=steps, test_acc=accs, train_time_s=[total_s * (i + 1) / n for i in range(n)],
                         samples_seen=[s * rec["config"]["batch_size"] for s in steps],
                         train_loss=[1.0] * n, step_time_s=[total_s / rec["config"]["steps"]] * n)
    rec["final"].update(test_acc=accs[-1], train_time_s=total_s)
    return rec


def records() -> list[dict]:
    recs = [curve(record("cifar10", "resnet50", "bp", 1), [50.0, 80.0, 90.0, 95.0], 100.0),
            curve(record("cifar10", "resnet50", "lct", 2), [60.0, 94.5, 95.0, 96.0], 80.0),
            curve(record("cifar10", "resnet50", "dni", 2), [40.0, 60.0, 70.0, 80.0], 70.0),
            curve(record("cifar10", "resnet50", "lct", 4, seed=0), [60.0, 94.0, 95.0, 95.0], 60.0),
            curve(record("cifar10", "resnet50", "lct", 4, seed=1), [60.0, 70.0, 80.0, 90.0], 60.0),
            # another setting (200 steps) without a BP of its own
            curve(record("cifar10", "resnet50", "lct", 2, steps=200), [90.0, 99.0], 50.0)]
    for i, r in enumerate(recs):
        r["_path"] = f"r{i}.json"
    del recs[1]["curves"]["samples_seen"]  # a record from before samples_seen: step x batch
    return recs


def rows_of(targets=None):
    return csv_rows(table_time_to_target(report.split_records(records())[0], targets).csv())


def test_time_to_target_per_setting_with_not_reached():
    rows = rows_of()
    bp = find(rows, method="bp")[0]
    assert float(bp["target"]) == 94.0 and float(bp["time_to_target_s"]) == 100.0 and bp["status"] == "reached"
    lct = find(rows, method="lct", groups=2, setting="width 0.125, batch 128, 100 steps, paper split")[0]
    assert float(lct["time_to_target_s"]) == 40.0 and float(lct["samples_to_target"]) == 50 * 128  # step x batch
    assert float(lct["time_over_bp"]) == 0.4
    dni = find(rows, method="dni")[0]
    assert dni["status"] == "not reached" and dni["time_to_target_s"] == ""
    lct4 = find(rows, method="lct", groups=4)[0]  # one seed of two reaches it
    assert lct4["status"] == "reached by 1 of 2 seeds" and float(lct4["time_to_target_s"]) == 30.0
    other = find(rows, setting="width 0.125, batch 128, 200 steps, paper split")[0]
    assert other["status"] == "no BP record of this setting" and other["target"] == ""
    md = table_time_to_target(report.split_records(records())[0]).markdown()
    assert "| not reached " in md and "acc ≥ 94.00" in md


def test_a_given_target_replaces_bp_minus_one_point():
    rows = rows_of(parse_targets(["99"]))
    assert find(rows, method="bp")[0]["status"] == "not reached"
    assert find(rows, setting="width 0.125, batch 128, 200 steps, paper split")[0]["status"] == "reached"
    easy = rows_of(parse_targets(["bp-15"]))
    assert float(find(easy, method="bp")[0]["time_to_target_s"]) == 50.0  # 80% at the second evaluation


def test_targets_parse_and_bad_ones_are_one_line(tmp_path, capsys):
    t = parse_targets(["bp-0.5", "bpc=1.4"])
    assert t["acc"] == Target("acc", -0.5, True) and t["bpc"] == Target("bpc", 1.4, False)
    assert parse_targets(None)["bpc"] == Target("bpc", 0.02, True)
    assert main(["report", "--records", str(tmp_path), "--results", str(tmp_path / "out"), "--target", "soon"]) == 2
    err = capsys.readouterr().err
    assert "--target 'soon'" in err and err.count("\n") == 1 and not (tmp_path / "out").exists()


def test_the_report_draws_accuracy_against_wall_clock(tmp_path):
    recs = records()
    names = report.figure_names(recs)
    assert "plots/time_to_accuracy_cpu_cifar10_resnet50_simulated_width0.125_batch128_100steps_papersplit.png" in names
    paths = report.render_plots(recs, tmp_path, parse_targets(["bp-2"]))
    tta = [p for p in paths if p.name.startswith("time_to_accuracy_")]
    assert len(tta) == 2 and all(p.stat().st_size > 0 for p in tta)


def test_a_run_records_the_clock_and_the_samples_at_every_evaluation(tmp_path):
    cfg = RunConfig(method="bp", model="mlp", data="digits", profile="smoke", out=str(tmp_path), steps=30,
                    eval_every=10, assumption1_every=0)
    c = json.loads(run(cfg, progress=False).read_text())["curves"]
    assert c["step"] == [10, 20, 30] and c["samples_seen"] == [640, 1280, 1920]  # batch 64 at the smoke profile
    assert len(c["test_acc"]) == len(c["train_time_s"]) == 3 and c["train_time_s"] == sorted(c["train_time_s"])


def test_a_resumed_old_record_gets_samples_for_its_earlier_points():
    w = RecordWriter("x.json", {"curves": {"step": [10, 20], "train_loss": [1, 1], "step_time_s": [1, 1],
                                            "train_time_s": [1, 2]}})
    w.add_phase(30, 1.0, 1.0, 3.0, 30 * 64)
    assert w.curves["samples_seen"] == [640, 1280, 1920]


@pytest.mark.parametrize("metric,value,reached", [("acc", 90.0, True), ("acc", 89.9, False), ("bpc", 1.3, True),
                                                  ("bpc", 1.31, False)])
def test_reaching_means_at_or_past_the_target(metric, value, reached):
    assert Target(metric, 0.0, True).reached(value, 90.0 if metric == "acc" else 1.3) == reached
