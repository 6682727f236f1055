"""The distributed executor (one worker process per layer group) against the in-process reference.

- lockstep lct / dni: the same weights as the in-process executor after several steps;
- gpipe (torch.distributed.pipelining) under every schedule this torch has (three multi-stage ones with the
  slow tests): the same gradients as unsplit backprop;
- overlapped lct / dni: runs with bounded staleness, records per-worker measurements;
- a killed worker: every other worker exits with a one-line error, well within 60 s, record failed;
- slow: overlapped lct at the cpu profile learns as well as the in-process run (within 2 points).
Each launch starts K fresh Python processes (a few seconds each on 2 cores).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from bench.__main__ import main as cli
from bench.config import RunConfig
from bench.errors import BenchError
from bench.exec import pp_schedules
from bench.exec.launch import LocalJob, mark_failed, record_path, run_distributed, validate, watch
from bench.exec.settings import DistConfig
from bench.train.build import build
from bench.train.loop import run as run_inprocess
from bench.train.records import read_record


def smoke(tmp_path, method: str, groups: int, steps: int = 4, **kw) -> RunConfig:
    kw = {"model": "resnet50", "width": 1 / 16, "batch_size": 32, **kw}
    return RunConfig(method=method, groups=groups, data="digits", profile="smoke", steps=steps,
                     out=str(tmp_path / "runs"), **kw)


def inprocess_state(cfg: RunConfig) -> list[dict]:
    """What the in-process executor holds after cfg.steps lockstep steps, shaped like a worker dump.

    One thread, like each worker: then the two executors agree to the last bit (with more threads the
    reductions change order, and BatchNorm over 1x1 maps of 32 samples amplifies that within steps)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        r = build(RunConfig(**vars(cfg)))
        for step in range(r.cfg.steps):
            x, y = r.stream.batch(step)
            r.trainer.step(step, x, y)
    finally:
        torch.set_num_threads(threads)
    return [{"modules": {k: m.state_dict() for k, m in part.items()},
             "grads": [p.grad for p in part["body"].parameters()]} for part in r.trainer.parts]


def distributed_state(tmp_path, cfg: RunConfig, **dist) -> list[dict]:
    dcfg = DistConfig(dump_state="dump.pt", evaluate=False, **dist)
    path = run_distributed(cfg, dcfg, log_dir=tmp_path / "logs")
    assert read_record(path)["status"] == "completed"
    return torch.load(path.parent / "dump.pt", weights_only=False)


def flat(states: list[dict], what: str) -> torch.Tensor:
    """Every group's tensors of one kind, concatenated in network order (so splits compare)."""
    if what == "grads":
        return torch.cat([g.flatten() for s in states for g in s["grads"]])
    return torch.cat([v.float().flatten() for s in states for v in s["modules"]["body"].values()])


@pytest.mark.parametrize("method, groups", [("lct", 3), ("dni", 2)])
def test_lockstep_gives_the_in_process_weights(tmp_path, method, groups):
    cfg = smoke(tmp_path, method, groups, steps=4)
    got, want = distributed_state(tmp_path, cfg), inprocess_state(cfg)
    assert len(got) == len(want) == groups
    for i, (g, w) in enumerate(zip(got, want)):
        assert g["modules"].keys() == w["modules"].keys()
        for kind in w["modules"]:  # body, and the critic / synthesizer
            for name, value in w["modules"][kind].items():
                torch.testing.assert_close(g["modules"][kind][name], value, rtol=1e-4, atol=1e-5,
                                           msg=f"stage {i} {kind}.{name}")
    # and the weights really moved (a run that silently did nothing would also "match")
    init = build(RunConfig(**vars(cfg))).trainer.parts[0]["body"].state_dict()
    moved = [n for n, v in init.items() if v.is_floating_point() and not torch.equal(v, got[0]["modules"]["body"][n])]
    assert moved


# every schedule of the installed torch.distributed.pipelining on two workers: the single-stage ones with one
# group each, the multi-stage ones (looped or V-shaped) with two groups each (a tiny ResNet-32). One looped and
# one V schedule run by default; the other multi-stage ones (the same placements) with the slow tests.
FAST_MULTI = ("interleaved1f1b", "dualpipev")
SCHEDULE_CASES = [pytest.param("resnet50", "gpipe", "gpipe", 2), pytest.param("mlp", "1f1b", "bp", 2)] + [
    pytest.param("resnet32", name, "gpipe", 4, marks=() if name in FAST_MULTI else pytest.mark.slow)
    for name in pp_schedules.available() if pp_schedules.is_multi(name)]


def test_every_schedule_of_this_torch_is_tested():
    assert {case.values[1] for case in SCHEDULE_CASES} == set(pp_schedules.available())


@pytest.mark.parametrize("model, pp_schedule, reference, groups", SCHEDULE_CASES)
def test_gpipe_gives_the_gradients_of_unsplit_backprop(tmp_path, model, pp_schedule, reference, groups):
    """BatchNorm: the unsplit reference cuts the same micro-batches (gpipe, one group); the MLP has none, so
    micro-batching changes nothing and the reference is plain backprop."""
    cfg = smoke(tmp_path, "gpipe", groups, steps=2, model=model, **({"width": 1 / 4} if model == "resnet32" else {}))
    cfg.extra = {"microbatches": 4, "schedule": pp_schedule}
    got = distributed_state(tmp_path, cfg)
    assert read_record(record_path(cfg, DistConfig()))["config"]["distributed"]["world_size"] == 2
    ref = RunConfig(**{**vars(cfg), "method": reference, "groups": 1,
                       "extra": {"microbatches": 4} if reference == "gpipe" else {}})
    want = inprocess_state(ref)
    torch.testing.assert_close(flat(got, "grads"), flat(want, "grads"), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(flat(got, "body"), flat(want, "body"), rtol=1e-4, atol=1e-5)
    assert flat(got, "grads").abs().sum() > 0


@pytest.mark.parametrize("method, groups", [("lct", 3), ("dni", 2)])
def test_overlapped_run_records_staleness_and_measurements(tmp_path, method, groups):
    cfg = smoke(tmp_path, method, groups, steps=12)
    path = run_distributed(cfg, DistConfig(schedule="overlapped", max_stale=2), log_dir=tmp_path / "logs")
    record = read_record(path)
    assert record["status"] == "completed" and record["executor"] == "distributed"
    assert record["parallel"] == "parallel" and record["schedule"] == "overlapped"
    heads = groups - 1 if method == "lct" else 0  # critics give sub-models, synthesizers do not
    assert record["curves"]["step"] == [12] and len(record["curves"]["sub_acc"][0]) == heads
    assert 0 <= record["final"]["test_acc"] <= 100
    workers = record["workers"]
    assert [w["rank"] for w in workers] == list(range(groups))
    for w in workers[:-1]:  # every group but the last waits for feedback, at most max_stale steps late
        assert 0 <= w["staleness_mean"] <= w["staleness_max"] <= 2
    for w in workers:
        assert w["threads"] == 1 and w["peak_rss_mb"] > 0 and 0 <= w["comm_share"] < 1
        assert w["comm_wait_s"] <= w["step_time_s"] * w["steps"] + 1e-3
        assert w["paper_comm_estimate_s"] > 0
    # bytes: group 0 sends 12 activations and receives a shape header + 12 feedbacks (lct: a loss per sample)
    act = _activation_numel(cfg)
    feedback = 32 if method == "lct" else act
    assert workers[0]["bytes_sent"] == 12 * act * 4
    assert workers[0]["bytes_recv"] == 8 * 8 + 12 * feedback * 4
    assert workers[1]["bytes_recv"] >= 12 * act * 4


def _activation_numel(cfg: RunConfig) -> int:
    """Elements of one batch's activation after group 0."""
    n = cfg.batch_size
    for size in build(RunConfig(**vars(cfg))).trainer.rules[0].ctx.out_shape:
        n *= size
    return n


def _signal_mid_run(tmp_path, cfg, dcfg, sig: int, wait):
    """Start the job, signal rank 1 once training is under way, and time `wait(job)`: (its result, the
    seconds it took, the job, the record's path). Every process is stopped afterwards."""
    job = LocalJob(cfg, dcfg, log_dir=tmp_path / "logs")
    path = record_path(cfg, dcfg)
    try:
        _wait_for_training(path, job.procs)
        os.kill(job.procs[1].pid, sig)
        t0 = time.monotonic()
        result = wait(job)
        return result, time.monotonic() - t0, job, path
    finally:
        job.stop()


def test_a_killed_worker_fails_the_run_within_60_s(tmp_path):
    cfg = validate(smoke(tmp_path, "lct", 3, steps=100_000), DistConfig())
    dcfg = DistConfig(schedule="overlapped", timeout_s=300)
    codes, elapsed, job, path = _signal_mid_run(tmp_path, cfg, dcfg, signal.SIGKILL, lambda job: job.wait())
    assert elapsed < 60
    assert codes[1] == -signal.SIGKILL
    assert codes[0] > 0 and codes[2] > 0  # they noticed and exited themselves, not stopped by the launcher
    for rank in (0, 2):
        errors = [ln for ln in job.logs[rank].read_text().splitlines() if ln.startswith("error:")]
        assert len(errors) == 1 and errors[0].startswith(f"error: rank {rank}:"), errors
    record = read_record(path)
    assert record["status"] == "failed" and record["error"]


def _wait_for_training(path, procs, deadline_s=120):
    deadline = time.monotonic() + deadline_s
    while not (path.exists() and read_record(path)["curves"]["step"]):  # training is under way
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs), "run did not start"
        time.sleep(0.2)


@pytest.mark.parametrize("method", ["lct", pytest.param("gpipe", marks=pytest.mark.slow)])
def test_a_stopped_worker_ends_every_process_within_the_timeout(tmp_path, method):
    """SIGSTOP (not kill) rank 1: the others' waits time out after --comm-timeout (plus --eval-timeout where
    they were waiting for rank 0's evaluation), name the silent rank, and every process is gone within
    those plus 30 s, the record failed."""
    dcfg = DistConfig(timeout_s=10, eval_timeout_s=5, grace_s=5)
    cfg = validate(smoke(tmp_path, method, 2, steps=100_000, eval_every=20), dcfg)

    def fails(job):
        with pytest.raises(BenchError, match="distributed run failed"):
            watch(job, lambda error: mark_failed(cfg, dcfg, error))

    _, elapsed, job, path = _signal_mid_run(tmp_path, cfg, dcfg, signal.SIGSTOP, fails)
    assert elapsed < dcfg.timeout_s + dcfg.eval_timeout_s + 30 and all(p.poll() is not None for p in job.procs)
    record = read_record(path)
    assert record["status"] == "failed" and "rank 1" in record["error"] and "imed out" in record["error"]


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def test_a_killed_launcher_takes_its_workers_down(tmp_path):
    """SIGKILL the launching command: its workers notice within seconds, mark the record failed and exit; no
    process and no temporary file is left."""
    temp, out = tmp_path / "tmp", tmp_path / "runs"  # the job's own temporary folder: nothing may stay in it
    temp.mkdir()
    launcher = subprocess.Popen([sys.executable, "-m", "bench", "run", "--method", "lct", "--groups", "2",
                                 "--steps", "100000", "--eval-every", "20", "--width", "0.0625", "--batch-size", "32",
                                 "--executor", "distributed", "--out", str(out), "--no-progress"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=dict(os.environ, TMPDIR=str(temp)))
    path = out / "digits_resnet50_lct_k2_smoke_s0_dist-lockstep.json"
    try:
        _wait_for_training(path, [launcher])
        workers = _children(launcher.pid)
        assert len(workers) == 2
        launcher.kill()
        launcher.wait()
        deadline = time.monotonic() + 30
        while any(Path(f"/proc/{w}").exists() and "Z" not in Path(f"/proc/{w}/stat").read_text().split()[2]
                  for w in workers):
            assert time.monotonic() < deadline, "workers outlived their launcher"
            time.sleep(0.2)
    finally:
        launcher.kill()
    record = read_record(path)
    assert record["status"] == "failed" and "launcher" in record["error"]
    assert not list(temp.iterdir())


def test_cli_rejects_bad_distributed_settings_in_one_line(tmp_path, capsys):
    base = ["run", "--executor", "distributed", "--out", str(tmp_path), "-k", "2"]
    assert cli([*base, "--method", "bp", "--schedule", "pipelined"]) == 2
    assert cli([*base, "--method", "gpipe", "--microbatches", "5"]) == 2
    assert cli([*base, "--method", "lct", "--threads-per-worker", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("error: ") for line in err)
    assert "gpipe" in err[0] and "micro-batches" in err[1]
    assert not list(tmp_path.iterdir())  # nothing written


@pytest.mark.parametrize("args, needle", [
    (["-k", "2", "--pp-schedule", "nosuch"], "unknown pipeline schedule 'nosuch'; torch 2"),
    (["-k", "2", "--option", "stages_per_rank=2"], "gpipe runs one stage per worker"),
    (["-k", "6", "--pp-schedule", "zbvzerobubble", "--option", "stages_per_rank=3"], "exactly 2 stages"),
    (["-k", "3", "--pp-schedule", "interleaved1f1b"], "a multiple of 2 on at least 2 workers"),
    (["-k", "4", "--pp-schedule", "dualpipev", "--microbatches", "2"], "at least as many micro-batches as stages"),
])
def test_pipeline_shapes_torch_cannot_run_are_one_line_errors(tmp_path, capsys, args, needle):
    assert cli(["run", "--executor", "distributed", "--out", str(tmp_path), "--method", "gpipe", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and needle in err[0], err
    if "nosuch" in args:
        assert all(name in err[0] for name in pp_schedules.available())
    assert not list(tmp_path.iterdir())  # nothing written


@pytest.mark.parametrize("method", ["gpipe", "ddp"])
def test_in_process_gpipe_and_ddp_are_backprop_without_batchnorm(tmp_path, method):
    """The in-process rules: on the MLP (no BatchNorm), m micro-batches or K shards change nothing."""
    def weights(m, k):
        r = build(smoke(tmp_path, m, k, model="mlp", extra={"microbatches": 4} if m == "gpipe" else {}))
        for step in range(3):
            x, y = r.stream.batch(step)
            r.trainer.step(step, x, y)
        return torch.cat([p.detach().flatten() for body in (b for b, _ in r.trainer.network())
                          for p in body.parameters()])

    torch.testing.assert_close(weights(method, 2), weights("bp", 1), rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_overlapped_lct_learns_like_in_process_at_the_cpu_profile(tmp_path):
    """Staleness must not break learning: cpu profile, lct_n1, overlapped vs in-process."""
    cfg = RunConfig(method="lct", groups=2, profile="cpu", data="digits", out=str(tmp_path / "runs"),
                    threads=1)  # the in-process reference on one thread too: fast and steady on a shared box
    dist_record = read_record(run_distributed(cfg, DistConfig(schedule="overlapped"), log_dir=tmp_path / "logs"))
    ref_record = read_record(run_inprocess(RunConfig(**vars(cfg)), progress=False))
    assert dist_record["status"] == ref_record["status"] == "completed"
    assert max(w.get("staleness_mean", 0) for w in dist_record["workers"]) > 0  # it really overlapped
    assert abs(dist_record["final"]["test_acc"] - ref_record["final"]["test_acc"]) <= 2.0
