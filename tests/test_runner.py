"""Runs end to end: every method learns on real data, records are complete, resume loses nothing,
divergence is recorded, bad inputs are one-line errors that write nothing."""
from __future__ import annotations

import json

import pytest

import bench.models.split
from bench.__main__ import main
from bench.config import RunConfig
from bench.exec.inprocess import InProcess
from bench.train.loop import run
from methods import create_method, list_methods

from helpers import dying_at, model_for


def _cfg(tmp_path, **kw):
    base = dict(method="lct", groups=2, model="resnet50", data="digits", profile="smoke", out=str(tmp_path),
                threads=1)
    base.update(kw)
    return RunConfig(**base)


SUITE_METHODS = [m for m in list_methods() if create_method(m).__module__.startswith("methods.")]  # not test plugins
# the slowest to learn on the ResNet here (12-32 s each) learn in `nox -s tests_slow`: gpipe is also bp's exact
# gradient (test_distributed), the whole-step ones have their own convergence tests
SLOW_TO_LEARN = ("blockadmm", "gpipe", "localsgd", "auxvar", "resist")


@pytest.mark.parametrize("method", [pytest.param(m, marks=pytest.mark.slow) if m in SLOW_TO_LEARN else m
                                    for m in SUITE_METHODS])
def test_every_method_learns_on_digits(method, tmp_path):
    """Smoke profile, K=2, 150 steps on scikit-learn's handwritten digits: well above the 10% chance."""
    record = json.loads(run(_cfg(tmp_path, method=method, model=model_for(method)), progress=False).read_text())
    assert record["status"] == "completed"
    assert record["final"]["test_acc"] > 40.0, record["curves"]["test_acc"]


def test_record_holds_config_env_curves_and_assumption1(tmp_path):
    record = json.loads(run(_cfg(tmp_path, groups=3, steps=40), progress=False).read_text())
    assert record["config"]["method"] == "lct" and record["config"]["milestones"] == [20, 30]
    assert record["env"]["torch"] and "commit" in record["env"]["git"]
    assert record["parallel"] == "simulated"
    c = record["curves"]
    assert c["step"] == [40] and len(c["sub_acc"][-1]) == 2
    assert record["final"]["test_acc"] == c["test_acc"][-1]
    assert [len(g["units"]) for g in record["split"]["groups"]] == [5, 5, 8]  # 17 blocks // 3, rest + fc
    # Assumption 1 every 25 steps at the smoke profile: one value per group, the last group's is 1
    a1 = record["assumption1"]
    assert a1["step"] == [25] and len(a1["mu"][0]) == 3 and a1["mu"][0][-1] == pytest.approx(1.0, abs=1e-3)
    assert len(a1["cos"][0]) == 3


def test_resume_continues_a_killed_run_exactly(tmp_path, monkeypatch):
    whole = json.loads(run(_cfg(tmp_path / "a", steps=100), progress=False).read_text())

    monkeypatch.setattr(InProcess, "phase", dying_at(70, InProcess))
    with pytest.raises(KeyboardInterrupt):
        run(_cfg(tmp_path / "b", steps=100), progress=False)
    killed = json.loads((tmp_path / "b" / f"{_cfg(tmp_path, steps=100).run_id}.json").read_text())
    assert killed["status"] == "failed" and killed["curves"]["step"] == [50]
    monkeypatch.undo()
    resumed = json.loads(run(_cfg(tmp_path / "b", steps=100, resume=True), progress=False).read_text())
    assert resumed["status"] == "completed"
    assert resumed["curves"]["step"] == whole["curves"]["step"] == [50, 100]
    assert resumed["curves"]["test_acc"] == whole["curves"]["test_acc"]
    assert resumed["curves"]["train_loss"] == pytest.approx(whole["curves"]["train_loss"], rel=1e-6)
    assert not (tmp_path / "b" / "checkpoints" / f"{_cfg(tmp_path, steps=100).run_id}.pt").exists()


def test_a_timed_split_is_measured_once_and_kept_on_resume(tmp_path, monkeypatch):
    """The timed rule's cut goes into the record's config; a resumed run takes it from there (a new
    measurement could cut elsewhere and no longer fit the checkpoint)."""
    cfg = dict(groups=3, steps=50, eval_every=25, split_rule="timed")
    monkeypatch.setattr(InProcess, "phase", dying_at(30, InProcess))
    with pytest.raises(KeyboardInterrupt):
        run(_cfg(tmp_path, **cfg), progress=False)
    path = tmp_path / f"{_cfg(tmp_path, **cfg).run_id}.json"
    killed = json.loads(path.read_text())
    bounds = killed["config"]["split_bounds"]
    assert killed["split"]["rule"] == "timed" and killed["split"]["bounds"] == bounds and len(bounds) == 4

    def no_measuring(*args, **kwargs):
        raise AssertionError("a resumed run measured its split again")

    monkeypatch.undo()
    monkeypatch.setattr(bench.models.split, "unit_seconds", no_measuring)
    resumed = json.loads(run(_cfg(tmp_path, resume=True, **cfg), progress=False).read_text())
    assert resumed["status"] == "completed" and resumed["split"]["bounds"] == bounds


def test_nan_loss_stops_the_run_as_diverged(tmp_path, capsys):
    cfg = RunConfig(method="bp", model="mlp", data="digits", profile="smoke", out=str(tmp_path), lr=1e6, steps=100)
    record = json.loads(run(cfg, progress=False).read_text())
    assert record["status"] == "diverged"
    assert "loss" in record["error"] and record["final"]["steps"] < 100
    # on the command line: said on the console, and an exit status of its own
    code = main(["run", "--method", "bp", "--model", "mlp", "--lr", "1e6", "--out", str(tmp_path / "cli"),
                 "--no-progress"])
    assert code == 3 and "diverged: loss nan at step" in capsys.readouterr().out


def test_a_crashed_run_says_why_on_one_line_and_its_record_says_failed(tmp_path, capsys, monkeypatch):
    def crash(self, start, end, on_step):
        raise RuntimeError("the device fell over")

    monkeypatch.setattr(InProcess, "phase", crash)
    assert main(["run", "--method", "bp", "--model", "mlp", "--out", str(tmp_path), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert err == "failed: RuntimeError: the device fell over\n"
    record = json.loads(next(tmp_path.glob("*.json")).read_text())
    assert record["status"] == "failed" and record["error"] == "RuntimeError: the device fell over"


@pytest.mark.parametrize("argv,needle", [
    (["--method", "backprop"], "unknown method 'backprop'; valid methods: admm, asyncbp, auxnet, auxvar, blockadmm, bp,"),
    (["--method", "lct", "--model", "mlp", "--groups", "3"], "cannot make 3 groups"),
    (["--method", "lct", "--groups", "40"], "cannot make 40 groups"),
    (["--method", "lct", "--groups", "2", "--data", "cifar10"], "cifar10 data not found"),
    (["--method", "lct"], "lct needs --groups >= 2"),
    (["--method", "lct", "--groups", "2", "--option", "nope=1"], "lct: unknown option(s) nope; valid: l2"),
    (["--method", "gpipe", "--groups", "2", "--option", "microbatches=x"], "microbatches='x' is not of type int"),
    (["--method", "lct", "--model", "vgg"], "unknown model 'vgg'"),
    (["--method", "lct", "--split", "random"], "unknown split rule"),
])
def test_bad_input_is_one_line_error_and_writes_nothing(argv, needle, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["run", *argv, "--out", str(out), "--data-root", str(tmp_path / "data"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1 and needle in err
    assert not out.exists()


def test_the_cpu_profile_scales_width_and_steps_by_input_size():
    """About 20 minutes a run on 2 cores (README: what a run costs): the 8x8 digits at width 1/8, 28x28 and
    larger inputs at 1/16, the deepest networks at 2/3 of the steps, the schedule's shape kept."""
    from bench.config import resolve

    def at(model, data):
        c = resolve(RunConfig(method="lct", groups=2, model=model, data=data, profile="cpu"))
        return c.width, c.steps, c.milestones

    assert at("resnet50", "digits") == (0.125, 1000, (500, 750))
    assert at("resnet50", "mnist") == at("resnet50", "cifar10") == (0.0625, 1500, (750, 1125))
    assert at("resnet182", "cifar100") == (0.0625, 1000, (500, 750))
    assert at("resnet110", "cifar10")[:2] == (0.5, 1000)  # the CIFAR ResNets keep their own width
