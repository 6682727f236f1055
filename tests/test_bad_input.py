"""Bad input of every kind is one clear line on stderr, exit status 2, no traceback, and the output folder
exactly as it was (nothing written, nothing touched): the table below, across the command line's commands.
Records and checkpoints that cannot be trusted are refused without running what they hold."""
from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch

from bench.__main__ import main
from bench.config import RunConfig
from bench.data import load_dataset
from bench.errors import BenchError
from bench.train.loop import run

RUN = ["run", "--no-progress"]
LCT = [*RUN, "--method", "lct", "--groups", "2"]
DIST = [*LCT, "--executor", "distributed"]

# (argv after the command; {out} is the run's output folder, {file} a regular file), a piece of the message
CASES = [
    # run: names
    ([*RUN, "--method", "backprop"], "unknown method 'backprop'"),
    ([*LCT, "--model", "vgg"], "unknown model 'vgg'"),
    ([*LCT, "--data", "svhn"], "unknown dataset 'svhn'"),
    ([*LCT, "--profile", "huge"], "invalid choice: 'huge'"),
    ([*LCT, "--split", "random"], "unknown split rule 'random'"),
    ([*LCT, "--executor", "cluster"], "invalid choice: 'cluster'"),
    ([*LCT, "--model", "lstm2"], "does not run on digits"),
    ([*RUN, "--method", "bp", "--model", "resnet50", "--data", "pytext"], "does not run on pytext"),
    ([*RUN, "--method", "admm", "--groups", "2"], "admm runs on mlp only"),
    ([*LCT, "--data", "cifar10"], "cifar10 data not found"),
    ([*LCT, "--plugin", "missing_plugin.py"], "no such file"),
    # run: groups and numbers
    ([*RUN, "--method", "bp", "--groups", "0"], "--groups must be an integer >= 1"),
    ([*LCT, "--groups", "40"], "cannot make 40 groups"),
    ([*RUN, "--method", "lct", "--groups", "1"], "lct needs --groups >= 2"),
    ([*RUN, "--method", "dni"], "dni needs --groups >= 2"),
    ([*LCT, "--groups", "abc"], "invalid int value: 'abc'"),
    ([*LCT, "--width", "0"], "--width must be a number > 0"),
    ([*LCT, "--width", "-1"], "--width must be a number > 0"),
    ([*LCT, "--batch-size", "0"], "--batch-size must be an integer >= 1"),
    ([*LCT, "--steps", "0"], "--steps must be an integer >= 1"),
    ([*LCT, "--lr", "-0.1"], "--lr must be a number > 0"),
    ([*LCT, "--lr", "nan"], "--lr must be a number > 0"),
    ([*LCT, "--eval-every", "0"], "--eval-every must be an integer >= 1"),
    ([*LCT, "--eval-every", "-1"], "--eval-every must be an integer >= 1"),
    ([*LCT, "--assumption1-every", "-1"], "--assumption1-every must be an integer >= 0"),
    ([*LCT, "--threads", "-3"], "--threads must be an integer >= 1"),
    ([*LCT, "--threads", "0"], "--threads must be an integer >= 1"),
    ([*LCT, "--seed", "-1"], "--seed must be an integer >= 0"),
    ([*RUN, "--method", "lct", "--model", "lstm2", "--data", "pytext", "--hidden", "0"], "--hidden must be"),
    ([*RUN, "--method", "lct", "--model", "lstm2", "--data", "pytext", "--bptt", "0"], "--bptt must be"),
    ([*LCT, "--eval-limit", "0"], "--eval-limit must be an integer >= 1"),
    ([*LCT, "--final-eval-limit", "0"], "--final-eval-limit must be an integer >= 1"),
    ([*LCT, "--assumption1-batches", "0"], "--assumption1-batches must be an integer >= 1"),
    ([*LCT, "--bn-momentum", "2"], "--bn-momentum must be in [0, 1]"),
    ([*LCT, "--classifier", "attention"], "unknown classifier 'attention'"),
    ([*LCT, "--eval-bn", "frozen"], "unknown eval_bn 'frozen'"),
    ([*LCT, "--option", "l2=both"], "option l2='both'"),
    # run: device and output folder
    ([*LCT, "--device", "tpu9"], "unknown device 'tpu9'"),
    ([*LCT, "--device", "cuda"], "this machine has no CUDA device"),
    (["run", "--method", "lct", "--groups", "2", "--out", "{file}/runs"], "is a file, not a folder"),
    # run: speed settings
    ([*LCT, "--precision", "fp8"], "invalid choice: 'fp8'"),
    ([*RUN, "--method", "auxvar", "--model", "mlp", "--groups", "2", "--precision", "fp16"], "use --precision bf16"),
    ([*LCT, "--model", "lstm2", "--data", "pytext", "--precision", "bf16"], "LSTMs run on CUDA only"),
    ([*RUN, "--method", "admm", "--model", "mlp", "--groups", "2", "--precision", "bf16"], "runs in fp32 only"),
    # run: method options
    ([*LCT, "--option", "critic"], "--option wants key=value"),
    ([*LCT, "--option", "nope=1"], "lct: unknown option(s) nope"),
    ([*RUN, "--method", "gpipe", "--groups", "2", "--option", "microbatches=x"], "is not of type int"),
    ([*RUN, "--method", "gpipe", "--groups", "2", "--microbatches", "0"], "microbatches=0 must be >= 1"),
    ([*RUN, "--method", "gpipe", "--groups", "2", "--microbatches", "5"], "not divisible into 5 micro-batches"),
    ([*RUN, "--method", "gpipe", "--groups", "2", "--pp-schedule", "zigzag"], "unknown pipeline schedule 'zigzag'; torch"),
    ([*RUN, "--method", "resist", "--model", "preact_resnet50", "--groups", "2", "--option", "min_blocks=0"],
     "min_blocks=0 must be >= 1"),
    ([*RUN, "--method", "localsgd", "--groups", "2", "--option", "local_iters=2.5"], "is not of type int"),
    # distributed
    ([*DIST, "--comm-timeout", "-1"], "--comm-timeout must be a number of seconds >= 1"),
    ([*DIST, "--comm-timeout", "0"], "--comm-timeout must be a number of seconds >= 1"),
    ([*DIST, "--eval-timeout", "-5"], "--eval-timeout must be"),
    ([*DIST, "--threads-per-worker", "0"], "--threads-per-worker must be an integer >= 1"),
    ([*DIST, "--max-stale", "0"], "--max-stale must be an integer >= 1"),
    ([*RUN, "--method", "bp", "--groups", "2", "--executor", "distributed", "--schedule", "overlapped"],
     "--schedule overlapped needs a method that updates each group without waiting"),
    ([*RUN, "--method", "admm", "--model", "mlp", "--groups", "2", "--executor", "distributed"],
     "admm has no distributed form"),
    ([*RUN, "--method", "ddp", "--groups", "3", "--executor", "distributed", "--batch-size", "32"],
     "not divisible by 3 workers"),
    ([*RUN, "--method", "gpipe", "--groups", "2", "--executor", "distributed", "--schedule", "overlapped"],
     "has its own schedule"),
    ([*RUN, "--method", "gpipe", "--groups", "4", "--executor", "distributed", "--pp-schedule", "1f1b",
      "--microbatches", "2"], "1f1b needs at least as many micro-batches as stages (4)"),
    # other commands
    (["sweep", "cifar11", "--out", "{out}"], "unknown sweep 'cifar11'"),
    (["sweep", "smoke", "--steps", "0", "--out", "{out}"], "--steps must be positive"),
    (["report", "--records", "{out}/mistyped", "--results", "{out}/r", "--plots", "{out}/p"], "no such file or folder"),
    (["report", "--records", "{out}/empty", "--results", "{out}/r", "--plots", "{out}/p"], "no run records in"),
    (["report", "--records", "{out}/empty", "--results", "{file}/r", "--plots", "{out}/p"], "is a file, not a folder"),
    (["check-assumption1", "{out}/nope.json"], "no such record"),
    (["check-assumption1", "{out}/bad.json"], "cannot read record"),
    (["count", "--model", "vgg", "--out", "{out}"], "unknown model 'vgg'"),
    (["count", "--model", "lstm2", "--data", "enwik8", "--groups", "2", "--out", "{out}"],
     "known only from its files"),
    (["speed", "--repeats", "0", "--out", "{out}"], "--repeats must be >= 1"),
    (["speed", "--only", "nosuchmethod", "--out", "{out}"], "no configuration for nosuchmethod"),
    (["download", "svhn", "--data-root", "{out}/data"], "unknown dataset 'svhn'"),
    (["list", "--plugin", "no_such_module_xyz"], "cannot import it"),
]


def _tree(root: Path) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() if p.is_file() else None for p in sorted(root.rglob("*"))}


@pytest.fixture
def place(tmp_path):
    """An output folder with a few files already in it (a record, a corrupt record, an empty folder), and a
    regular file to put paths under."""
    out = tmp_path / "out"
    (out / "empty").mkdir(parents=True)
    (out / "bad.json").write_text("{not json")
    (out / "keep.json").write_text(json.dumps({"config": {}, "status": "completed", "final": {}}))
    (tmp_path / "afile").write_text("x")
    return tmp_path, out


@pytest.mark.parametrize("argv, needle", CASES, ids=[" ".join(a[:6]) for a, _ in CASES])
def test_bad_input_is_one_line_exit_2_and_touches_nothing(argv, needle, place, capsys):
    tmp_path, out = place
    argv = [a.format(out=out, file=tmp_path / "afile") for a in argv]
    if argv[0] == "run" and "--out" not in argv:
        argv += ["--out", str(out / "runs")]
    argv += ["--data-root", str(tmp_path / "data")] if argv[0] in ("run", "sweep", "speed") else []
    before = _tree(tmp_path)
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert needle in err, err
    assert _tree(tmp_path) == before


def test_there_are_at_least_forty_kinds():
    assert len(CASES) >= 40


# --- resume, sweeps, concurrent runs ---------------------------------------------------------------------
def _cfg(out, **kw):
    return RunConfig(**{"method": "lct", "groups": 2, "model": "mlp", "data": "digits", "profile": "smoke",
                        "steps": 20, "eval_every": 10, "threads": 1, "out": str(out), **kw})


def test_resume_with_other_settings_is_refused_naming_them(tmp_path, capsys):
    path = run(_cfg(tmp_path), progress=False)
    before = path.read_bytes()
    for kw, keys in (({"lr": 0.5}, "lr"), ({"steps": 30}, "milestones, steps"), ({"width": 0.5}, "width"),
                     ({"extra": {}, "method": "lct", "batch_size": 32}, "batch_size")):
        with pytest.raises(BenchError, match=f"differs in: {keys}"):
            run(_cfg(tmp_path, resume=True, **kw), progress=False)
    assert path.read_bytes() == before
    with pytest.raises(BenchError, match="exists \\(completed\\); --resume"):
        run(_cfg(tmp_path), progress=False)  # without --resume a record is never overwritten
    assert run(_cfg(tmp_path, resume=True), progress=False) == path and path.read_bytes() == before


def test_a_corrupt_record_or_checkpoint_is_named_in_one_line(tmp_path):
    cfg = _cfg(tmp_path, resume=True)
    record = tmp_path / f"{cfg.run_id}.json"
    record.write_text("{broken")
    with pytest.raises(BenchError, match=f"cannot read record {record}"):
        run(cfg, progress=False)
    record.unlink()
    ckpt = tmp_path / "checkpoints" / f"{cfg.run_id}.pt"
    ckpt.parent.mkdir()
    ckpt.write_bytes(b"\x80\x04not a checkpoint")
    with pytest.raises(BenchError, match=f"cannot load checkpoint {ckpt}"):
        run(cfg, progress=False)


class _Payload:
    """What a crafted file would do if it were unpickled: leave a file behind."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "ran"))


def test_a_crafted_checkpoint_is_refused_without_running_its_payload(tmp_path):
    cfg = _cfg(tmp_path, resume=True)
    marker = tmp_path / "pwned"
    ckpt = tmp_path / "checkpoints" / f"{cfg.run_id}.pt"
    ckpt.parent.mkdir()
    torch.save({"step": 10, "record": _Payload(marker), "modules": [], "optimizers": []}, ckpt)
    with pytest.raises(BenchError, match="cannot load checkpoint"):
        run(cfg, progress=False)
    assert not marker.exists()


def test_a_crafted_cifar_pickle_is_refused_without_running_its_payload(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    marker = tmp_path / "pwned"
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (folder / name).write_bytes(pickle.dumps({b"data": _Payload(marker), b"labels": [0]}))
    with pytest.raises(BenchError, match="refusing to load .*only numpy arrays"):
        load_dataset("cifar10", tmp_path)
    assert not marker.exists()


def test_a_sweep_reruns_a_record_of_other_settings_into_its_own(tmp_path, capsys):
    """The smoke grid's bp record, made with other steps, is left alone; the sweep's own goes beside it."""
    from bench.sweep import run_sweep

    other = run(RunConfig(method="bp", groups=1, data="digits", profile="smoke", steps=5, out=str(tmp_path),
                          threads=1), progress=False)
    before = other.read_bytes()
    broken = tmp_path / "digits_resnet50_joint_k4_smoke_s0.json"
    broken.write_text("{half a record")
    base = RunConfig(out=str(tmp_path), threads=1)
    paths = run_sweep("smoke", "smoke", [0], base, progress=False, steps=6)
    out = capsys.readouterr().out
    assert "has other settings (differs in: milestones, steps" in out
    assert f"error: cannot read record {broken}" in out and broken.read_text() == "{half a record"  # and it went on
    assert other.read_bytes() == before and other not in paths and len(paths) == 9
    mine = [p for p in paths if "_bp_" in p.name]
    assert len(mine) == 1 and json.loads(mine[0].read_text())["config"]["steps"] == 6
    again = run_sweep("smoke", "smoke", [0], base, progress=False, steps=6)  # resumable: all done, all skipped
    assert again == paths and capsys.readouterr().out.count("done, skipped") == len(paths)


def test_two_concurrent_runs_of_one_id_lose_nothing(tmp_path):
    """The second of two runs of one run id into one folder is refused in one line while the first goes on."""
    import subprocess
    import sys
    import time

    cmd = [sys.executable, "-m", "bench", "run", "--method", "lct", "--groups", "2", "--steps", "200",
           "--eval-every", "100", "--threads", "1", "--no-progress", "--out", str(tmp_path)]
    first = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    record = tmp_path / "digits_resnet50_lct_k2_smoke_s0.json"
    deadline = time.monotonic() + 60
    while not record.exists():  # the first run has started training
        assert time.monotonic() < deadline and first.poll() is None
        time.sleep(0.1)
    second = subprocess.run([*cmd, "--lr", "0.5"], capture_output=True, text=True)
    assert first.poll() is None, "the first run ended before the second tried: nothing was tested"
    assert second.returncode == 2 and second.stderr.count("\n") == 1 and "is already running" in second.stderr
    assert first.wait(timeout=300) == 0, first.stderr.read()
    done = json.loads(record.read_text())
    assert done["status"] == "completed" and done["config"]["lr"] == 0.05


def test_report_on_an_empty_folder_changes_nothing(tmp_path, capsys):
    results, plots = tmp_path / "results", tmp_path / "plots"
    (results / "records").mkdir(parents=True)
    plots.mkdir()
    (results / "table_I_accuracy.md").write_text("earlier table")
    (plots / "fig7_pipelined_bp.png").write_bytes(b"earlier figure")
    before = _tree(tmp_path)
    assert main(["report", "--results", str(results), "--plots", str(plots), "--prune"]) == 2
    assert "no run records" in capsys.readouterr().err
    assert _tree(tmp_path) == before
