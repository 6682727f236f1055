"""The cost model: the event simulation reproduces closed forms on toy costs (GPipe's bubble, K x for a balanced
overlapped local method and for data parallelism over a free link), a calibration measured on a real batch
records what crosses each boundary and round-trips through JSON, the cut search finds the cut the model
prefers, the check against speed records computes its errors, and bad input is refused in one line.
No timing is asserted: toy costs are exact, real measurements are only checked for their shape."""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import replace

import pytest
import torch

from bench.__main__ import main
from bench.config import RunConfig
from bench.models import build_model
from bench.errors import BenchError
from bench.exec import pp_schedules
from bench.predict.calibration import BoundaryCosts, Calibration, median_of
from bench.predict.link import FREE, LinkModel, fit, parse_link
from bench.predict.model import predict
from bench.predict.programs import Setup, simulate
from bench.predict.search import best_cut, timed_cut
from bench.predict.shares import PARTS, ShareCosts
from bench.train.build import build, calibrate
from helpers import params_of
from methods import create_method

B = 64


def toy(n: int, fwd: float = 1.0, bwd: float = 2.0, aux: dict | None = None, out_bytes: int = 400,
        model: str = "resnet182", names: list[str] | None = None) -> Calibration:
    """n units of equal cost, linear in the batch (no per-call overhead), free optimiser, boundary modules that
    cost `aux[method] = (forward, backward)` seconds (default nothing). Named resnet182 by default so that every
    method's model check passes (and the paper rule, having no authors' cut for it, cuts evenly)."""
    sizes = [B, B // 2, B // 4, B // 8, B // 16]
    methods = {m: BoundaryCosts([f] * (n - 1), [b] * (n - 1), [4 * B] * (n - 1))
               for m, (f, b) in {"bp": (0, 0), "lct": (0, 0), "dni": (0, 0), "greedy": (0, 0), **(aux or {})}.items()}
    return Calibration(setting={"model": model, "batch_size": B, "threads": 1, "device": "cpu"},
                       units=names or [f"u{i}" for i in range(n)], params=[1000] * n, out_bytes=[out_bytes] * n,
                       batches=sizes, forward_s={s: [fwd * s / B] * n for s in sizes},
                       backward_s={s: [bwd * s / B] * n for s in sizes}, optimizer_s=[0.0] * n, head_s=[0.0] * (n + 1),
                       methods=methods, backward_input_s={s: [bwd * s / B / 2] * n for s in sizes[1:]},
                       backward_weight_s={s: [bwd * s / B / 2] * n for s in sizes[1:]},
                       shares={"auxnet": ShareCosts(*([{p: 0.0 for p in PARTS} for _ in range(n - 1)] for _ in "ab"))})


def even(k: int, per: int = 2) -> list[int]:
    return list(range(0, per * k + 1, per))


def run(cal, method, k, bounds, link=FREE, steps=100, **kw):
    m = create_method(method)
    return simulate(cal, Setup(m, k, bounds, m.resolve_options(kw.pop("options", {})), steps=steps, **kw), link)


def bp_one(cal, link=FREE):
    return run(cal, "bp", 1, [0, cal.n], link)


@pytest.mark.parametrize("k", [2, 4])
@pytest.mark.parametrize("m", [2, 4, 8])
@pytest.mark.parametrize("schedule", ["gpipe", "1f1b"])
def test_gpipe_bubble_is_the_closed_form(k, m, schedule):
    """Balanced stages, a free link: every stage idles (K-1)/(m+K-1) of the step, and a step takes (m+K-1)/m
    stage-times; 1F1B has the same bubble as GPipe."""
    if schedule == "1f1b" and m < k:
        pytest.skip("1f1b needs m >= K")
    cal = toy(2 * k)
    p = run(cal, "gpipe", k, even(k), steps=10, options={"microbatches": m, "schedule": schedule})
    assert p.schedule == f"{schedule}-m{m}"
    for busy in p.busy_share:
        assert 1 - busy == pytest.approx((k - 1) / (m + k - 1))
    stage_s = 2 * 3.0  # two units of forward 1 + backward 2 on the whole batch
    assert p.phase_s / p.steps == pytest.approx((m + k - 1) / m * stage_s)


@pytest.mark.parametrize("k", [2, 3, 4, 8])
def test_a_balanced_overlapped_local_method_reaches_k_times(k):
    """No feedback (greedy), or feedback bounded loosely enough (lct, max_stale >= 2(K-1)): a phase of S steps
    that starts and ends drained takes S + K - 1 group-times, so K S / (S + K - 1) times BP on one device."""
    cal, steps = toy(2 * k), 400
    closed = k * steps / (steps + k - 1)
    bp = bp_one(cal).samples_per_s
    greedy = run(cal, "greedy", k, even(k), steps=steps, schedule="overlapped")
    lct = run(cal, "lct", k, even(k), steps=steps, schedule="overlapped", max_stale=2 * (k - 1))
    assert greedy.samples_per_s / bp == pytest.approx(closed)
    assert lct.samples_per_s / bp == pytest.approx(closed)
    lockstep = run(cal, "lct", k, even(k), steps=steps, schedule="lockstep")
    assert lockstep.samples_per_s / bp == pytest.approx(1.0)  # lockstep: one group busy at a time


def test_feedback_relayed_down_the_chain_limits_overlap():
    """The stage backend sends feedback back only from a group's backward, which waits for the next group's: at
    K = 4 the default max_stale = 2 cannot hide the round trip, even perfectly balanced."""
    cal = toy(8)
    bp = bp_one(cal).samples_per_s
    tight = run(cal, "lct", 4, even(4), steps=400, schedule="overlapped", max_stale=2).samples_per_s / bp
    assert 1.5 < tight < 2.5


@pytest.mark.parametrize("k", [2, 4, 8])
def test_ddp_over_a_free_link_is_k_times(k):
    cal = toy(16)
    bp = bp_one(cal).samples_per_s
    assert run(cal, "ddp", k, [0, 16], steps=10).samples_per_s / bp == pytest.approx(k)
    slow = run(cal, "ddp", k, [0, 16], link=LinkModel("slow", 1e3, 1e-3), steps=10)
    assert slow.samples_per_s / bp < k and min(slow.blocked_share) > 0  # the all-reduce tail shows


@pytest.mark.parametrize("k", [2, 4])
@pytest.mark.parametrize("every", [1, 4, 10 ** 6])
def test_an_exchange_step_is_parallel_and_its_serial_steps_are_backprop(k, every):
    """Balanced groups, a free link, shares that cost nothing besides their bodies: a parallel step takes one
    group-time on every worker at once (K x BP), a serial step is lockstep backprop (1 x), so with one serial
    step in `every` a step takes on average ((every - 1) / K + 1) / every of BP's."""
    cal, steps = toy(2 * k), 400
    bp = bp_one(cal).samples_per_s
    p = run(cal, "auxnet", k, even(k), steps=steps, options={"correct_every": every})
    serial = sum(create_method("auxnet").is_serial({"correct_every": every}, s) for s in range(steps))
    assert p.schedule == "exchange" and serial == steps // every
    closed = steps / ((steps - serial) / k + serial)
    assert p.samples_per_s / bp == pytest.approx(closed)


def test_an_exchange_step_sends_both_ways_at_once():
    """A parallel step's two messages cross at the same time: one transfer's time per step, not two; a serial
    step pays the activation forward and the gradient back, one after the other."""
    cal, link = toy(4, out_bytes=1000), LinkModel("toy", 1e6, 0.5)
    free = run(cal, "auxnet", 2, [0, 2, 4], options={"correct_every": 10 ** 6}).phase_s
    slow = run(cal, "auxnet", 2, [0, 2, 4], link, options={"correct_every": 10 ** 6})
    assert slow.phase_s == pytest.approx(free + slow.steps * (0.5 + 1000 * B / 1e6))
    serial = run(cal, "auxnet", 2, [0, 2, 4], link, options={"correct_every": 1})
    assert serial.phase_s == pytest.approx(bp_one(cal).phase_s + serial.steps * 2 * (0.5 + 1000 * B / 1e6))


def test_bp_in_lockstep_is_sequential_and_transfers_add_up():
    cal = toy(4, out_bytes=1000)
    link = LinkModel("toy", 1e6, 0.5)
    one = bp_one(cal, link).phase_s
    two = run(cal, "bp", 2, [0, 2, 4], link)
    per_step = 0.5 + 1000 * B / 1e6 + 0.5 + 4 * B / 1e6  # activation forward, feedback (measured bytes) back
    assert two.phase_s == pytest.approx(one + two.steps * per_step)


def test_the_cut_search_avoids_a_costly_boundary():
    """LCT's critic after unit 3 is expensive: the timed rule (units only here) cuts there, the cost model does
    not, and no other valid cut is predicted faster."""
    aux = [0.0] * 7
    aux[3] = 6.0
    cal = toy(8)
    cal.methods["lct"] = BoundaryCosts(aux, [0.0] * 7, [4 * B] * 7)
    start = timed_cut(cal, 2)
    assert start == [0, 4, 8]
    setup = Setup(create_method("lct"), 2, start, {}, "overlapped", steps=40)
    best = best_cut(cal, setup, FREE, start)
    assert best != start
    score = lambda b: simulate(cal, replace(setup, bounds=b), FREE).samples_per_s  # noqa: E731
    assert all(score(best) >= score([0, c, 8]) for c in range(1, 7))


def test_a_calibration_is_measured_and_round_trips(tmp_path):
    """Measured on a real batch: a time for every unit at every batch size, boundary costs for the stage methods,
    and the feedback each sends back as the link carries it (lct: a loss per sample; dni: a gradient as large as
    the activation); saved and loaded unchanged."""
    cfg = RunConfig(method="bp", groups=1, model="resnet50", data="digits", profile="smoke", threads=1, batch_size=32)
    cal = calibrate(cfg, [create_method(m) for m in ("bp", "lct", "dni", "gpipe", "infopro", "auxnet")], divisors=(1, 4))
    assert cal.batches == [32, 8] and len(cal.units) == 18
    assert all(t > 0 for b in cal.batches for t in cal.forward_s[b] + cal.backward_s[b])
    # gpipe's rule never runs per group on real workers; infopro's rule is given the network's input, as there
    assert set(cal.methods) == {"bp", "lct", "dni", "infopro"} and min(cal.methods["infopro"].forward_s) > 0
    # the zero-bubble halves at the micro-batch size: the first unit's stage skips the input half
    assert list(cal.backward_input_s) == [8] == list(cal.backward_weight_s)
    assert cal.backward_input_s[8][0] == 0 and min(cal.backward_input_s[8][1:] + cal.backward_weight_s[8]) > 0
    assert cal.methods["lct"].feedback_bytes == [32 * 4] * 17
    assert cal.methods["dni"].feedback_bytes == [32 * b for b in cal.out_bytes[:-1]]
    # auxnet's shares, on either side of every boundary: its AuxNet (forward, fit) only after a boundary
    shares = cal.shares["auxnet"]
    assert list(cal.shares) == ["auxnet"] and len(shares.before) == len(shares.after) == 17
    assert all(min(side[j].values()) > 0 for side in (shares.before, shares.after) for j in range(17))
    assert all(shares.after[j]["outgoing"] > shares.before[j]["outgoing"] for j in range(17))
    path = tmp_path / "cal.json"
    cal.save(path)
    back = Calibration.load(path)
    assert back == cal and back.to_dict() == json.loads(path.read_text())


def test_unit_times_between_measured_batches_are_interpolated():
    cal = toy(2)
    cal.forward_s = {64: [8.0, 8.0], 16: [2.0, 2.0]}
    cal.batches = [64, 16]
    assert cal.unit_s("forward", 0, 32) == pytest.approx(4.0)
    assert cal.unit_s("forward", 0, 4) == pytest.approx(0.5)  # below the smallest: along the nearest two


def test_the_link_fit_recovers_latency_and_bandwidth():
    link = fit([1000, 10_000, 100_000], [1e-4 + n / 2e9 for n in (1000, 10_000, 100_000)])
    assert link.bandwidth == pytest.approx(2e9) and link.latency == pytest.approx(1e-4)
    assert parse_link("pcie", bandwidth_gbps=1.0).bandwidth == 1e9


def test_predict_follows_the_real_runs_rules():
    cal = toy(8)
    with pytest.raises(Exception, match="overlapped needs a method that updates"):
        predict(cal, "bp", 2, FREE, schedule="overlapped")
    with pytest.raises(Exception, match="1f1b needs at least"):
        predict(cal, "gpipe", 4, FREE, options={"microbatches": 2, "schedule": "1f1b"})
    with pytest.raises(Exception, match="not divisible by 3"):
        predict(cal, "ddp", 3, FREE)
    with pytest.raises(Exception, match="no cost model for resist's backend"):
        predict(toy(8, model="preact_resnet50"), "resist", 2, FREE)


@pytest.fixture
def toy_file(tmp_path):
    path = tmp_path / "toy.json"
    toy(18).save(path)
    return path


def test_predict_command_writes_the_table_and_the_figure(toy_file, tmp_path, capsys):
    out, png = tmp_path / "pred", tmp_path / "pred.png"
    rc = main(["predict", "--calibration", str(toy_file), "--method", "bp", "lct", "gpipe", "ddp", "--groups", "1", "2",
               "4", "--link", "pcie", "--option", "microbatches=8", "--out", str(out), "--plot", str(png)])
    assert rc == 0 and png.stat().st_size > 0
    md = (tmp_path / "pred.md").read_text()
    assert md.startswith("# PREDICTED by the cost model (not measured)")
    assert "| LCT_n1 | 2 | overlapped |" in md and "| pipelined BP (GPipe) (K=4) | 4 | gpipe-m8 |" in md
    assert "| DDP (K=4) | 4 | allreduce | 18 |" in md and "LCT_n0" not in md  # no lct row below its min_groups
    rows = (tmp_path / "pred.csv").read_text().splitlines()
    assert rows[0].startswith("method,groups,schedule") and any(r.startswith("ddp,4,allreduce") for r in rows)


@pytest.mark.parametrize("argv,needle", [
    (["--method", "nope"], "unknown method 'nope'"),
    (["--method", "lct", "--groups", "0"], "--groups must be >= 1"),
    (["--method", "lct", "--link", "warp"], "unknown link 'warp'"),
    (["--method", "lct", "--bandwidth", "-1"], "--bandwidth must be > 0"),
    (["--method", "lct", "--option", "nope=1"], "--option: want key=value"),
])
def test_predict_refuses_bad_input_in_one_line(toy_file, capsys, argv, needle):
    assert main(["predict", "--calibration", str(toy_file), *argv]) == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1


def test_predict_refuses_what_is_not_a_calibration(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"kind": "something else"}))
    for path in (bad, tmp_path / "missing.json"):
        assert main(["predict", "--calibration", str(path), "--method", "bp"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and ("not a calibration" in err or "cannot read calibration" in err)


def _speed_record(cal, method, k, schedule, sps, comm, options=None):
    bounds = even(k, cal.n // k) if k > 1 else [0, cal.n]
    return {"status": "completed", "schedule": schedule, "split": {"bounds": bounds},
            "config": {"method": method, "groups": k, "batch_size": B, "steps": 15, "extra": options or {},
                       "distributed": {"schedule": schedule, "threads_per_worker": 1, "max_stale": 2}},
            "final": {"samples_per_s": sps, "timed_steps": 10}, "workers": [{"comm_share": comm}] * k}


def test_predict_check_prints_predicted_beside_measured(toy_file, tmp_path, capsys):
    """Records a toy calibration predicts exactly pass; one measured at half the predicted speed is named and makes
    the exit status 1; without a GPU calibration the paper check says it is skipped."""
    cal = Calibration.load(toy_file)
    link = parse_link("pcie")
    folder = tmp_path / "speed-cpu"
    exact = predict(cal, "lct", 2, link, schedule="overlapped", steps=10, bounds=even(2, 9))
    bp = predict(cal, "bp", 1, link, steps=10)
    for label, rec in {"bp_w1_t1": _speed_record(cal, "bp", 1, "lockstep", bp.samples_per_s, 0.0),
                       "lct_w2_t1_overlapped": _speed_record(cal, "lct", 2, "overlapped", exact.samples_per_s,
                                                             exact.comm_share),
                       "dni_w2_t1_lockstep": _speed_record(cal, "dni", 2, "lockstep", 1.0, 0.5)}.items():
        (folder / label / "run1").mkdir(parents=True)
        (folder / label / "run1" / "r.json").write_text(json.dumps(rec))
    argv = ["predict-check", "--speed", str(tmp_path / "speed-cpu.csv"), "--calibration", str(toy_file),
            "--link", "pcie"]
    assert main(argv) == 1
    out = capsys.readouterr().out
    assert "| lct_w2_t1_overlapped | overlapped |" in out and "+0.0% |" in out
    assert "off by more than 15%: dni_w2_t1_lockstep" in out and "Paper check skipped: no GPU calibration" in out


def test_predict_check_compares_with_the_paper_given_a_gpu_calibration(toy_file, tmp_path, capsys):
    names = build_model("resnet101", 10, (3, 32, 32), 1 / 16).unit_names  # the authors' cuts are by name
    gpu = toy(len(names), model="resnet101", names=names)
    gpu.setting.update(data="cifar10")
    path = tmp_path / "gpu.json"
    gpu.save(path)
    folder = tmp_path / "speed-cpu" / "bp_w1_t1" / "run1"
    folder.mkdir(parents=True)
    (folder / "r.json").write_text(json.dumps(_speed_record(Calibration.load(toy_file), "bp", 1, "lockstep", 1.0, 0.0)))
    main(["predict-check", "--speed", str(tmp_path / "speed-cpu.csv"), "--calibration", str(toy_file), "--link",
          "pcie", "--gpu-calibration", str(path)])
    out = capsys.readouterr().out
    assert "Paper check (Fig. 5, cifar10 resnet101" in out
    assert "| LCT_n1 | overlapped |" in out and "| 31.9% |" in out and "| 40.9% |" in out  # the paper's values beside


def test_the_throughput_objective_cuts_a_run_and_leaves_its_random_draws_alone():
    """`--split timed --split-objective throughput` measures the method's costs and keeps the cut in the config;
    the critics drawn afterwards are those the same seed gives with that cut given outright."""
    cfg = RunConfig(method="lct", groups=2, model="resnet50", data="digits", profile="smoke", threads=1,
                    split_rule="timed", split_objective="throughput")
    searched = build(cfg)
    bounds = searched.cfg.split_bounds
    assert len(bounds) == 3 and bounds[0] == 0 and 0 < bounds[1] <= 16 and bounds[2] == 18
    given = build(RunConfig(method="lct", groups=2, model="resnet50", data="digits", profile="smoke", threads=1,
                            split_rule="timed", split_bounds=bounds))
    for a, b in zip(params_of(searched.trainer, "head"), params_of(given.trainer, "head")):
        assert (a is None and b is None) or torch.equal(a, b)


def test_the_throughput_objective_is_an_option_of_the_timed_rule(capsys):
    assert main(["run", "--method", "lct", "--groups", "2", "--split-objective", "throughput"]) == 2
    assert "--split-objective throughput is an option of --split timed" in capsys.readouterr().err


MULTI = [n for n in pp_schedules.available() if pp_schedules.is_multi(n)]


@pytest.mark.parametrize("name", MULTI)
def test_torchs_action_order_passes_every_micro_batch_of_every_stage_once(name):
    """The order the cost model runs is torch's own, per worker: m forwards of each own stage, and m backwards
    (whole, or an input half then a weight half); a send for every boundary that crosses to another worker."""
    m, k = 8, 4
    order = pp_schedules.action_order(name, k, m)
    placement = pp_schedules.placement(name, k, len(order))
    assert sorted(order) == [0, 1]
    for rank, actions in order.items():
        count = Counter((kind, stage) for kind, stage, _ in actions)
        for stage in placement[rank]:
            assert count["F", stage] == m and count["B", stage] + count["I", stage] == m
            assert count["W", stage] == count["I", stage]
            crosses = stage + 1 < k and stage + 1 not in placement[rank]
            assert count["SEND_F", stage] == (m if crosses else 0)


@pytest.mark.parametrize("name", MULTI)
def test_a_multi_stage_schedule_runs_v_stages_on_each_of_k_over_v_workers(name):
    """Four stages on two workers: each worker computes exactly its two stages' micro-batches (the halves of a
    zero-bubble backward add up to the whole one), and no faster than a perfect 2x over one device."""
    cal, m = toy(8), 8
    p = run(cal, "gpipe", 4, even(4), steps=4, options={"microbatches": m, "schedule": name})
    assert p.schedule == f"{name}-m{m}-v2" and len(p.busy_s) == 2
    stage_s = 2 * 3.0  # two units of forward 1 + backward 2 on the whole batch, m micro-batches of 1/m each
    assert p.busy_s == pytest.approx([2 * stage_s * p.steps] * 2)
    assert p.samples_per_s <= 2 * bp_one(cal).samples_per_s * (1 + 1e-9)


def test_on_a_cpu_host_the_all_reduces_do_not_overlap_the_backward():
    """gloo reduces on the cores that compute: each bucket holds the worker; on a GPU it runs beside the rest of
    the backward, so the same costs give a faster step."""
    cal = toy(16)
    cal.params = [300_000] * 16  # 1.2 MB per unit: a bucket per unit or so
    link = LinkModel("slow", 1e8, 1e-4)
    cpu = run(cal, "ddp", 2, [0, 16], link=link, steps=5)
    cal.setting["device"] = "cuda"
    gpu = run(cal, "ddp", 2, [0, 16], link=link, steps=5)
    assert gpu.samples_per_s > cpu.samples_per_s
    compute = 16 * 3.0 / 2  # half the batch on each worker
    assert cpu.phase_s / cpu.steps == pytest.approx(compute + cpu.blocked_s[0] / cpu.steps)


@pytest.mark.parametrize("schedule", ["gpipe", "1f1b"])
def test_the_pipelining_runtime_adds_its_cost_to_every_micro_batch_action(schedule):
    """A link that measured the runtime's own seconds per action a: each micro-batch's forward and backward
    take a longer, so a balanced step takes (m + K - 1) (stage time per micro-batch + 2 a)."""
    cal, k, m, a = toy(4), 2, 4, 0.25
    p = run(cal, "gpipe", k, even(k), link=replace(FREE, action_s=a), steps=10,
            options={"microbatches": m, "schedule": schedule})
    assert p.phase_s / p.steps == pytest.approx((m + k - 1) * (2 * 3.0 / m + 2 * a))
    assert LinkModel.from_dict(json.loads(json.dumps(replace(FREE, action_s=a).to_dict()))).action_s == a


def test_a_schedule_measured_on_its_own_runtime_costs_its_own_seconds_per_action():
    """The probe measures every schedule's runtime: the multi-stage ones interpret their action lists and cost more
    per action than GPipe's loop. A schedule with its own measurement uses it; one without, GPipe's."""
    cal, k, m = toy(4), 2, 4
    link = replace(FREE, action_s=0.25, actions=(("1f1b", 0.5),))
    assert link.action_for("1f1b") == 0.5 and link.action_for("gpipe") == link.action_for("loopedbfs") == 0.25
    p = {s: run(cal, "gpipe", k, even(k), link=link, steps=10, options={"microbatches": m, "schedule": s})
         for s in ("gpipe", "1f1b")}
    assert p["1f1b"].phase_s / p["1f1b"].steps == pytest.approx((m + k - 1) * (2 * 3.0 / m + 2 * 0.5))
    assert p["gpipe"].phase_s / p["gpipe"].steps == pytest.approx((m + k - 1) * (2 * 3.0 / m + 2 * 0.25))
    assert LinkModel.from_dict(json.loads(json.dumps(link.to_dict()))) == link
    assert f"{0.25e6:.3g}-{0.5e6:.3g} us per micro-batch action by schedule" in link.text()


@pytest.mark.slow
def test_the_link_probe_measures_the_pipelining_runtime_on_two_workers():
    from bench.exec.pp_schedules import available
    from bench.predict.probe import measure_link
    link = measure_link("cpu")
    assert link.source == "measured" and link.ring and 0 < link.action_s < 0.05 and 0 <= link.rendezvous_s < 0.05
    assert dict(link.actions).keys() == available().keys()  # every schedule's runtime, measured on its own
    assert all(0 < a < 0.05 for _, a in link.actions) and link.action_s == link.action_for("gpipe")


def test_a_measured_all_reduce_replaces_the_ring_of_messages():
    link = LinkModel("m", 1e9, 1e-5, "measured", ring=(2e9, 1e-3))
    assert link.allreduce_s(2_000_000, 2) == pytest.approx(1e-3 + 2 * 1e-3)
    assert LinkModel.from_dict(json.loads(json.dumps(link.to_dict()))) == link
    assert replace(link, ring=None).allreduce_s(2_000_000, 2) == pytest.approx(2e-3 + 2e-5)


def test_calibrations_combine_by_their_median():
    """The speed benchmark calibrates before every round and predicts from their median: a slow spell in one
    calibration moves nothing."""
    cals = [toy(4, fwd=f) for f in (1.0, 1.1, 3.0)]
    both = median_of(cals)
    assert both.forward_s[B] == pytest.approx([1.1] * 4) and both.backward_s == cals[0].backward_s
    assert both.env["combined"] == 3
    cals[2].shares["auxnet"].before[0]["update"] = 5.0  # one calibration's share costs in a slow spell
    assert median_of(cals).shares["auxnet"].before[0]["update"] == 0.0
    other = toy(5)
    with pytest.raises(BenchError, match="different settings"):
        median_of([cals[0], other])


def _two(programs, link):
    from bench.predict.simulate import Simulation
    return Simulation(link, 2).run(programs)


@pytest.mark.parametrize("rendezvous, arrival", [(3.0, 4.5), (20.0, 10.5), (0.0, 1.5)])
def test_a_late_receive_waits_for_its_computing_senders_thread(rendezvous, arrival):
    """gloo moves a message once its receive is posted; a receive posted after the send needs the sender's
    communication thread, which a computing sender lets run when it blocks (here: when it ends, at 10) or when
    the scheduler's slice (`rendezvous_s`) runs out, whichever comes first. Latency 0.5, bandwidth infinite."""
    from bench.predict.simulate import Compute, Send, Wait

    def sender():
        yield Send("x", "c", 100)
        yield Compute(10.0)

    def receiver():
        yield Compute(1.0)
        yield Wait("x")

    t = _two([sender(), receiver()], LinkModel("toy", float("inf"), 0.5, rendezvous_s=rendezvous))
    assert t.end_s[1] == pytest.approx(arrival) and t.blocked_s[1] == pytest.approx(arrival - 1.0)


def test_a_receive_posted_ahead_or_served_by_an_idle_sender_is_not_delayed():
    from bench.predict.simulate import Compute, Post, Send, Wait
    link = LinkModel("toy", float("inf"), 0.5, rendezvous_s=3.0)

    def sender(then_compute):
        yield Compute(0.25)
        yield Send("x", "c", 100)
        if then_compute:
            yield Compute(10.0)

    def receiver(post_first):
        if post_first:
            yield Post("x")
        yield Compute(1.0)
        yield Wait("x")

    assert _two([sender(True), receiver(True)], link).blocked_s[1] == 0  # arrived at 0.75, before the wait
    assert _two([sender(False), receiver(False)], link).end_s[1] == pytest.approx(1.5)  # the sender is done: at once
    assert _two([sender(True), receiver(False)], link).end_s[1] == pytest.approx(4.5)  # the slice


def test_the_backends_post_their_receives_where_the_workers_do():
    """Lockstep stages post the feedback's receive before waiting and their activations' ahead: a late-receive cost
    changes nothing there; torch's looped BFS posts many receives after their sends (a stage's forwards run in a
    burst on a busy worker) and pays it; the link carries it through JSON and says it."""
    cal, k = toy(8, out_bytes=1000), 4
    late = replace(FREE, rendezvous_s=0.5)
    assert run(cal, "bp", 2, [0, 4, 8], late).phase_s == pytest.approx(run(cal, "bp", 2, [0, 4, 8]).phase_s)
    assert (run(cal, "auxnet", 2, [0, 4, 8], late, options={"correct_every": 1}).phase_s
            == pytest.approx(run(cal, "auxnet", 2, [0, 4, 8], options={"correct_every": 1}).phase_s))
    bfs = {"microbatches": 4, "schedule": "loopedbfs", "stages_per_rank": 2}
    assert run(cal, "gpipe", k, even(k), late, steps=5, options=bfs).phase_s > \
        run(cal, "gpipe", k, even(k), steps=5, options=bfs).phase_s
    assert LinkModel.from_dict(json.loads(json.dumps(late.to_dict()))) == late
    assert "late receive 500 ms later" in late.text()
