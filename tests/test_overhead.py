"""`python -m bench overhead` on tiny sizes: the files, the figures in them, and one-line refusals."""

import csv

import pytest
import torch

from bench import overhead
from bench.__main__ import main

TINY = ["--width", "0.0625", "--batch-size", "16", "--steps", "2", "--rounds", "3"]


def test_overhead_writes_markdown_and_csv_with_ratio_and_instrumentation(tmp_path, threads, capsys):
    out = tmp_path / "results"
    assert main(["overhead", *TINY, "--out", str(out)]) == 0
    md, rows = (out / "overhead-cpu.md").read_text(), list(csv.DictReader(open(out / "overhead-cpu.csv")))
    assert sorted(p.name for p in out.iterdir()) == ["overhead-cpu.csv", "overhead-cpu.md"]  # nothing else
    (row,) = rows
    assert list(row) == overhead.COLUMNS
    suite, plain = float(row["suite_step_s"]), float(row["plain_step_s"])
    assert suite > 0 and plain > 0 and float(row["ratio"]) > 0 and float(row["noise_ratio"]) > 0
    assert abs(float(row["suite_samples_per_s"]) - 16 / suite) < 1e-6 * 16 / suite
    share = float(row["instrumentation_share"])
    assert 0 < share < 1 and float(row["timer_us"]) > 0 and float(row["memory_sample_us"]) > 0
    assert row["ratio_verdict"] == ("PASS" if float(row["ratio"]) <= 1.05 else "FAIL")
    assert row["instrumentation_verdict"] == ("PASS" if share < 0.02 else "FAIL")
    assert len(row["suite_step_s_rounds"].split("/")) == len(row["plain_step_s_rounds"].split("/")) == 3
    assert row["data"] == "digits" and row["threads"] == "1" and row["torch"] == torch.__version__
    for needle in (overhead.TITLE, "python -m bench overhead --device cpu --model resnet50 --data digits",
                   "Load average (1 min):", f"torch {torch.__version__}", "1 threads", "suite / plain step time",
                   "instrumentation / suite step time", f"{float(row['ratio']):.3f}", row["ratio_verdict"]):
        assert needle in md, needle
    assert md in capsys.readouterr().out  # and printed


def test_the_plain_loop_trains_the_suites_network_from_the_same_weights(threads):
    s = overhead.Setting(width=1 / 16, batch_size=8, steps=1, rounds=1, out="unused")
    run = overhead.build(overhead.check(s))
    plain = overhead.PlainLoop(run)
    suite_params = list(run.trainer.rules[0].body.parameters())
    assert all(torch.equal(a, b) for a, b in zip(suite_params, plain.model.parameters()))
    assert all(a.data_ptr() != b.data_ptr() for a, b in zip(suite_params, plain.model.parameters()))  # a copy
    group = plain.opt.param_groups[0]
    assert (group["lr"], group["momentum"], group["nesterov"], group["weight_decay"]) == (0.1, 0.9, True, 5e-4)
    # one step of each from the same weights on the same batch: the same update (bp on one group is plain SGD)
    overhead.InProcess(run).phase(0, 1, lambda: None)
    plain.phase(0, 1)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(suite_params, plain.model.parameters()))


@pytest.mark.parametrize("argv, needle", [
    (["--rounds", "0"], "--rounds must be an integer >= 1"),
    (["--steps", "0"], "--steps must be an integer >= 1"),
    (["--width", "-1"], "--width must be a number > 0"),
    (["--batch-size", "0"], "--batch-size must be an integer >= 1"),
    (["--threads", "0"], "--threads must be an integer >= 1"),
    (["--device", "cuda"], "no CUDA device"),
    (["--device", "tpu"], "unknown device 'tpu'"),
    (["--model", "vgg"], "unknown model 'vgg'"),
    (["--model", "lstm2"], "does not run on digits"),
    (["--data", "ptb"], "is a text data set"),
    (["--data", "svhn"], "unknown dataset 'svhn'"),
    (["--data", "cifar10", "--data-root", "/nonexistent"], "cifar10 data not found"),
    (["--precision", "fp8"], "invalid choice: 'fp8'"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, argv, needle, capsys):
    out = tmp_path / "results"
    assert main(["overhead", *TINY, *argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()


def test_a_file_this_command_did_not_write_is_left_alone(tmp_path, capsys):
    (tmp_path / "overhead-cpu.md").write_text("# my notes\n")
    assert main(["overhead", *TINY, "--out", str(tmp_path)]) == 2
    assert "was not written by this command" in capsys.readouterr().err
    assert (tmp_path / "overhead-cpu.md").read_text() == "# my notes\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["overhead-cpu.md"]
    (tmp_path / "a-file").write_text("")
    assert main(["overhead", *TINY, "--out", str(tmp_path / "a-file")]) == 2
