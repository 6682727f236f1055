"""What real workers on GPUs rely on, tested on CPU: links carry their dtype (bf16 activations, a feedback
header that names the dtype, channels_last sent contiguous), the compute stopwatch's CUDA-event bookkeeping
(with fake events: no host sync inside a step), bf16 runs of the stage and pipelining backends under
autocast, and --share-gpu's one-line refusals and its records kept out of every timing table."""
from __future__ import annotations

import csv
from collections import deque

import pytest
import torch

import bench.speed
from bench.__main__ import main as cli
from bench.config import RunConfig
from bench.errors import BenchError
from bench.exec import meter
from bench.exec.launch import record_path, run_distributed
from bench.exec.meter import Link, Meter, PeerError, Stopwatch
from bench.exec.pipelining import PipelineWorkers
from bench.exec.settings import DistConfig
from bench.report import timing
from bench.report.frame import cells
from bench.train.records import read_record
from methods import create_method

from test_distributed import _activation_numel, flat, inprocess_state, smoke

CPU = torch.device("cpu")


# --- links, without processes: an in-memory transport that checks what a receiver allocated --------------
class _Done:
    def is_completed(self):
        return True

    def wait(self, timeout=None):
        return True


@pytest.fixture
def wire(monkeypatch):
    sent: deque = deque()

    def isend(t, dst, group=None):
        sent.append(t.clone())
        return _Done()

    def irecv(buf, src, group=None):
        t = sent.popleft()
        assert (buf.dtype, buf.shape) == (t.dtype, t.shape), "the receiver allocated another tensor than was sent"
        buf.copy_(t)
        return _Done()

    monkeypatch.setattr(meter.dist, "isend", isend)
    monkeypatch.setattr(meter.dist, "irecv", irecv)
    return sent


def _pair(**kw) -> tuple[Link, Link]:
    return (Link(Meter(10, 0), 1, None, "feedback", CPU, **kw), Link(Meter(10, 1), 0, None, "feedback", CPU, **kw))


def test_a_feedback_header_carries_the_dtype(wire):
    out, into = _pair()
    grads = [torch.randn(32, 8, 2, 2).to(torch.bfloat16), torch.randn(32, 8, 2, 2)]  # the second: fp32
    for step, g in enumerate(grads):
        out.send(g, step)
    got = [into.get(0), into.get(1)]
    assert into.shape == (32, 8, 2, 2) and into.dtype == torch.bfloat16
    assert all(g.dtype == torch.bfloat16 for g in got)  # the link is bf16: the sender cast the second
    torch.testing.assert_close(got[0], grads[0], rtol=0, atol=0)
    torch.testing.assert_close(got[1], grads[1].to(torch.bfloat16), rtol=0, atol=0)
    assert into.meter.bytes_recv == 8 * 8 + 2 * grads[0].numel() * 2  # the header, then two bf16 messages
    loss_out, loss_in = _pair()
    loss_out.send(torch.rand(32), 0)  # lct's per-sample losses stay float32
    assert loss_in.get(0).dtype == torch.float32 and loss_in.shape == (32,)


@pytest.mark.parametrize("sent, link", [(torch.float32, torch.bfloat16), (torch.bfloat16, torch.float32),
                                        (torch.float16, torch.float32)])
def test_an_activation_is_cast_to_its_links_dtype(wire, sent, link):
    out, into = _pair(shape=(4, 3, 2, 2), dtype=link)
    x = torch.randn(4, 3, 2, 2).to(sent)
    out.send(x, 0)
    got = into.get(0)
    assert got.dtype == link
    torch.testing.assert_close(got, x.to(link), rtol=0, atol=0)


def test_a_channels_last_activation_arrives_contiguous_with_its_values(wire):
    out, into = _pair(shape=(4, 3, 5, 5), dtype=torch.float32)
    x = torch.randn(4, 3, 5, 5).to(memory_format=torch.channels_last)
    out.send(x, 0)
    assert wire[0].is_contiguous()  # what went on the wire: a plain contiguous tensor
    torch.testing.assert_close(into.get(0), x, rtol=0, atol=0)


def test_a_message_of_another_shape_is_a_one_line_error(wire):
    out, _ = _pair(shape=(4, 3), dtype=torch.float32)
    with pytest.raises(PeerError, match=r"^rank 0: feedback of step 2 has shape \(4, 4\), the link to rank 1 "
                                        r"carries \(4, 3\)$"):
        out.send(torch.zeros(4, 4), 2)


# --- the stopwatch's CUDA branch with fake events ---------------------------------------------------------
class _FakeEvent:
    clock = 0.0  # ms on the fake GPU timeline
    done = True  # whether recorded events have happened (query)

    def __init__(self, enable_timing=False):
        assert enable_timing

    def record(self, stream=None):
        self.at = _FakeEvent.clock

    def query(self):
        return _FakeEvent.done

    def synchronize(self):
        pass

    def elapsed_time(self, end):
        return end.at - self.at


def test_cuda_regions_are_timed_by_events_and_read_without_a_sync_per_step(monkeypatch):
    monkeypatch.setattr(torch.cuda, "Event", _FakeEvent)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a: pytest.fail("a host sync inside a step"))
    clock = Stopwatch(torch.device("cuda", 0))
    _FakeEvent.done = False  # the GPU is behind: nothing can be read yet
    for kind, ms in (("forward", 3.0), ("backward", 5.0), ("forward", 4.0)):
        with clock.region(kind):
            _FakeEvent.clock += ms
        _FakeEvent.clock += 100.0  # between regions: not compute
    assert clock.seconds == {"forward": 0.0, "backward": 0.0} and len(clock._events) == 3
    _FakeEvent.done = True
    clock.settle()  # the phase's end, after its synchronise
    assert clock.seconds == pytest.approx({"forward": 0.007, "backward": 0.005})
    with clock.region("forward"):  # events already done are read on the way, without waiting
        _FakeEvent.clock += 1.0
    assert not clock._events and clock.seconds["forward"] == pytest.approx(0.008)
    clock.reset()
    assert clock.seconds == {"forward": 0.0, "backward": 0.0}


# --- bf16 on real workers (CPU autocast) ------------------------------------------------------------------
def _amp_run(tmp_path, cfg: RunConfig, dcfg: DistConfig) -> dict:
    record = read_record(run_distributed(cfg, dcfg))
    assert record["status"] == "completed", record.get("error")
    return record


def test_bf16_lct_on_two_workers_sends_bf16_activations(tmp_path):
    cfg = smoke(tmp_path, "lct", 2, steps=3, precision="bf16", eval_limit=32, final_eval_limit=32)
    workers = _amp_run(tmp_path, cfg, DistConfig())["workers"]
    act = _activation_numel(cfg)
    assert workers[0]["bytes_sent"] == 3 * act * 2  # bf16: 2 bytes an element
    assert workers[1]["bytes_recv"] == 3 * act * 2
    assert workers[0]["bytes_recv"] == 8 * 8 + 3 * 32 * 4  # the header, then lct's float32 losses


def test_bf16_gpipe_gives_the_gradients_of_backprop_under_autocast(tmp_path):
    """The MLP (no BatchNorm: micro-batches change nothing but the order of sums): torch's schedule under
    autocast, every boundary in bf16, against in-process backprop under the same autocast, and far from fp32."""
    cfg = smoke(tmp_path, "gpipe", 2, steps=2, model="mlp", precision="bf16", extra={"microbatches": 4})
    dcfg = DistConfig(dump_state="dump.pt", evaluate=False)
    _amp_run(tmp_path, cfg, dcfg)
    got = flat(torch.load(record_path(cfg, dcfg).parent / "dump.pt", weights_only=False), "grads")
    bp = RunConfig(**{**vars(cfg), "method": "bp", "groups": 1, "extra": {}})
    with torch.autocast("cpu", dtype=torch.bfloat16, cache_enabled=False):  # as the loop runs it (Run.autocast)
        want = flat(inprocess_state(bp), "grads")
    fp32 = flat(inprocess_state(RunConfig(**{**vars(bp), "precision": "fp32"})), "grads")
    error = lambda a, b: float((a - b).norm() / b.norm())  # noqa: E731
    assert got.abs().sum() > 0 and error(got, want) < 0.02
    assert error(got, fp32) > 2 * error(got, want)  # bf16 really ran (measured: 3.2% from fp32, 1.1% from bp)


def test_the_pipelining_backend_refuses_fp16_in_one_line(tmp_path):
    method = create_method("gpipe")
    cfg = smoke(tmp_path, "gpipe", 2, precision="fp16")
    with pytest.raises(BenchError, match="^gpipe on real workers .* fp16 loss scaling cannot go in: use "
                                        "--precision bf16$"):
        PipelineWorkers.validate(cfg, DistConfig(), method, method.resolve_options({}))


# --- --share-gpu ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("args, needle", [
    (["--method", "lct"], "--share-gpu lets workers share GPUs, for --device cuda; this run is on cpu"),
    (["--method", "gpipe"], "--share-gpu runs group rules on the stage backend"),
    (["--method", "ddp"], "--share-gpu runs group rules on the stage backend"),
])
def test_share_gpu_refusals_are_one_line(tmp_path, capsys, args, needle):
    assert cli(["run", "--executor", "distributed", "--out", str(tmp_path), "-k", "2", "--share-gpu", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and needle in err[0], err
    assert not list(tmp_path.iterdir())  # nothing written


def _record(method: str, groups: int, seconds: float, share_gpu: bool, seed: int = 0) -> dict:
    """A completed distributed record as the report reads it (only the fields the timing tables use)."""
    config = {"data": "digits", "model": "resnet50", "method": method, "groups": groups, "profile": "smoke",
              "seed": seed, "width": 0.0625, "batch_size": 32, "steps": 10, "split_rule": "paper",
              "distributed": {"world_size": groups, "threads_per_worker": 1, "share_gpu": share_gpu}}
    workers = [{"rank": r, "comm_share": 0.25, "bytes_sent": 1000, "paper_comm_share": 0.1} for r in range(groups)]
    return {"config": config, "status": "completed", "executor": "distributed", "parallel": "parallel",
            "schedule": "lockstep", "final": {"train_time_s": seconds, "steps": 10, "test_acc": 50.0},
            "curves": {"step": [10], "step_time_s": [seconds / 10], "train_time_s": [seconds]}, "workers": workers}


def test_a_shared_gpu_record_is_in_no_timing_table():
    shared = _record("lct", 2, 1.0, True, seed=1)
    (lct,) = [c for c in cells([_record("bp", 1, 10.0, False), _record("lct", 2, 6.0, False), shared])
              if c.method == "lct"]
    assert len(lct.runs) == 2  # the shared-GPU record is one of the cell's runs (its accuracy counts) ...
    assert lct.values(timing.train_time) == [6.0]  # ... but none of its times
    assert lct.values(timing.comm_mean) == [25.0] and lct.values(timing.median_step_s) == [0.6]
    alone = cells([_record("bp", 1, 10.0, False), shared])
    for table in (timing.table_time(alone), timing.table_comm(alone)):
        ours = table.md[table.md["data"] == "digits"]
        assert list(ours["method"]) == ["BP"], ours  # the real record's row, and no LCT row


def test_the_speed_benchmark_never_tabulates_a_shared_gpu_run(tmp_path, monkeypatch):
    def shared(cfg, dcfg, log_dir=None):
        path = tmp_path / f"{cfg.method}.json"
        path.write_text(__import__("json").dumps(_record(cfg.method, cfg.groups, 1.0, True)))
        return path

    monkeypatch.setattr(bench.speed, "run_distributed", shared)
    path = bench.speed.run_speed(profile="smoke", steps=2, warmup=1, out=str(tmp_path), only=["lct"], repeats=1,
                                 predict=False)
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows and all(r["status"] == "failed: a functional (shared-GPU) run is not a speed measurement"
                        and r["samples_per_s"] == "" for r in rows)


def test_the_report_reads_a_shared_gpu_record_as_a_cell_of_its_own_without_times(tmp_path):
    import json

    from bench.report.frame import load_records

    for name, rec in (("timed", _record("lct", 2, 6.0, False)), ("shared", _record("lct", 2, 1.0, True, seed=1))):
        (tmp_path / f"{name}.json").write_text(json.dumps(rec))
    by_executor = {c.executor: c for c in cells(load_records([tmp_path]))}
    assert sorted(by_executor) == ["parallel (lockstep)", "parallel (lockstep, shared GPU)"]
    shared = by_executor["parallel (lockstep, shared GPU)"].runs[0]
    assert shared["final"]["train_time_s"] is None and shared["curves"]["train_time_s"] == []
    assert json.loads((tmp_path / "shared.json").read_text())["final"]["train_time_s"] == 1.0  # the file keeps them
