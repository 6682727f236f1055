"""Character-level LSTMs: LCT's group updates follow the critic rule, BPC is what a hand computation
gives, the hidden state carries across BPTT segments (and nothing else disturbs it), runs resume
exactly, and the profiles say what the paper says."""
from __future__ import annotations

import copy
import json
import math

import pytest
import torch

from bench.config import RunConfig, resolve
from bench.data.text import TextData, TextStream, eval_batches
from bench.errors import BenchError
from bench.exec.inprocess import GroupChain, InProcess
from bench.exec.launch import run_distributed
from bench.exec.settings import DistConfig
from bench.models import LSTMLayer, build_model, recurrent_layers
from bench.models.split import paper_split, unit_flops
from bench.train.build import build
from bench.train.evaluate import assumption1, evaluate, sequence_loss
from bench.train.loop import run
from methods import list_methods
from methods.base import Hyper

from helpers import build_trainer, dying_at, md_row, params_of, train_step

VOCAB, BPTT, B = 7, 6, 4
ADAM = Hyper(lr=0.01, optimizer="adam", weight_decay=0.0)


def lstm_stages(method: str, k: int, layers: int = 3, hidden: int = 8, hyper: Hyper = ADAM, seed: int = 0):
    trainer, m = build_trainer(method, k, model=f"lstm{layers}", seed=seed, input_shape=(BPTT,), num_classes=VOCAB,
                               hyper=hyper, hidden=hidden)
    return trainer.rules, m


def text_evaluate(rules, batches):
    return evaluate(GroupChain(rules).network(), batches, text=True)


def batch(seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    seq = torch.randint(0, VOCAB, (B, BPTT + 1), generator=g)
    return seq[:, :-1], seq[:, 1:]


def tiny_text(test: str, vocab: str = "abc", bptt: int = 4) -> TextData:
    index = {c: i for i, c in enumerate(vocab)}
    ids = lambda s: torch.tensor([index[c] for c in s], dtype=torch.uint8)  # noqa: E731
    return TextData("tiny", list(vocab), ids("abcabcabcabc"), ids("abc"), ids(test), "test", bptt=bptt)


# --- the model --------------------------------------------------------------------------------------
def test_paper_lstm4_matches_table_x():
    """4 x 600 units, vocabulary 50, batch 128 x BPTT 150: Table X's parameters and FLOPs (2 per MAC)."""
    m = build_model("lstm4", 50, (150,))
    assert m.family == "lstm" and m.unit_names == ["lstm1", "lstm2", "lstm3", "lstm4", "decoder"]
    flops, shapes = unit_flops(m, (150,))
    assert shapes[:4] == [(150, 600)] * 4 and shapes[4] == (150, 50)
    per_batch = [f * 128 / 1e9 for f in flops]
    critic = 2 * 600 * 50 * 128 * 150 / 1e9
    assert critic == pytest.approx(1.15, abs=0.01)  # Table X: each critic 1.15 B FLOPs
    assert per_batch[0] + critic == pytest.approx(68, abs=1)  # Sub_1
    assert sum(per_batch[:3]) + critic == pytest.approx(290, abs=1)  # Sub_3
    assert sum(per_batch) == pytest.approx(401, abs=1.5)  # Main
    params = sum(p.numel() for p in m.units.parameters()) / 1e6
    assert params == pytest.approx(10.43, abs=0.02)  # Main (PyTorch's LSTM has two bias vectors)
    # one LSTM layer per group at K = L, the decoder riding with the last
    assert paper_split(m, 4).bounds == [0, 1, 2, 3, 5]


# --- the critic rule ----------------------------------------------------------------------------------
def test_lct_group_update_is_its_critics_gradient():
    """Group i's forward update is -lr * d mean_t CE(c_i(h_i,t), y_t) / d theta_i; the critic is untouched."""
    x, y = batch()
    hyper = Hyper(lr=0.1, momentum=0.0, nesterov=False, weight_decay=0.0)  # plain SGD: update = -lr * grad
    stages, _ = lstm_stages("lct", 3, hyper=hyper)
    s = stages[0]
    state = recurrent_layers([s.body])[0].states[True]
    expected = [p.detach() - hyper.lr * g for p, g in zip(s.body.parameters(), s.local_grads(x, y))]
    recurrent_layers([s.body])[0].states[True] = state  # local_grads ran the group once: rewind its state
    head = params_of(stages, "head")[0]
    s.forward(0, x, y)
    for p, e in zip(s.body.parameters(), expected):
        assert torch.allclose(p, e, atol=1e-6)
    assert torch.equal(params_of(stages, "head")[0], head)
    # the critic sees every time step: its per-sample loss has one entry per character
    assert s.pending[0].shape == (B * BPTT,)


@pytest.mark.parametrize("changed", [1, 2])
def test_lct_groups_learn_only_through_their_own_critic(changed):
    """Change a later group's weights: with lct every earlier group's update is unchanged (no gradient
    crosses a group boundary); with bp it changes. (One step: from the next step on, a later group does
    reach group 1, through the critic it trained, which is LCT's intended path.)"""
    x, y = batch()
    for method, same in (("lct", True), ("bp", False)):
        a, _ = lstm_stages(method, 3)
        b, _ = lstm_stages(method, 3)
        with torch.no_grad():
            for p in b[changed].body.parameters():
                p.add_(0.5 * torch.randn_like(p))
        train_step(a, 0, x, y)
        train_step(b, 0, x, y)
        for i in range(changed):
            assert torch.equal(params_of(a)[i], params_of(b)[i]) == same, (method, i)


def test_lct_critic_regresses_the_next_per_character_loss():
    """Critic i's L1 target is the next stage's per-character loss vector; repeated updates shrink the gap."""
    x, y = batch()
    stages, _ = lstm_stages("lct", 2, layers=2, hyper=Hyper(lr=0.0, optimizer="adam", aux_lr=1e-2))
    s = stages[0]
    target = torch.full((B * BPTT,), 1.5)
    gaps = []
    for step in range(60):
        s.body[0].reset_state()  # same input, same state: the group is frozen (lr 0), so h is fixed
        s.forward(step, x, y)
        gaps.append((s.pending[step].detach() - target).abs().mean().item())
        s.backward(step, target)
    assert gaps[-1] < 0.5 * gaps[0]


def test_bp_on_groups_equals_autograd_with_carried_state():
    """K-group backprop (Adam, L2) = Adam on the whole LSTM with truncated BPTT, over 3 segments."""
    hyper = Hyper(lr=0.01, optimizer="adam", weight_decay=1e-4)
    stages, m = lstm_stages("bp", 3, hyper=hyper)
    reference = copy.deepcopy(m.units)
    opt = torch.optim.Adam(reference.parameters(), lr=hyper.lr, weight_decay=hyper.weight_decay)
    for step in range(3):
        x, y = batch(step)
        train_step(stages, step, x, y)
        opt.zero_grad()
        h = x
        for unit in reference:
            h = unit(h)
        sequence_loss(h, y).mean().backward()
        opt.step()
    ours = torch.cat([p.flatten() for p in m.units.parameters()])
    theirs = torch.cat([p.flatten() for p in reference.parameters()])
    assert torch.allclose(ours, theirs, atol=1e-6)
    for a, b in zip(recurrent_layers([m.units]), recurrent_layers([reference])):
        assert torch.allclose(a.states[True][0], b.states[True][0], atol=1e-6)


@pytest.mark.parametrize("method", [m for m in ("bp", "lct", "dni", "cdni", "joint", "ddp") if m in list_methods()])
def test_methods_step_on_lstm(method):
    x, y = batch()
    stages, m = lstm_stages(method, 3)
    before = torch.cat([p.flatten().clone() for p in m.units.parameters()])
    for step in range(2):
        train_step(stages, step, x, y)
    after = torch.cat([p.flatten() for p in m.units.parameters()])
    assert torch.isfinite(after).all() and not torch.equal(before, after)
    assert math.isfinite(stages[-1].stats["loss"].item())


# --- BPC --------------------------------------------------------------------------------------------
def _fixed_distribution(linear: torch.nn.Linear, probs: list[float]) -> None:
    with torch.no_grad():
        linear.weight.zero_()
        linear.bias.copy_(torch.tensor(probs).log())


def test_bpc_on_a_tiny_sequence_matches_hand_computation():
    """Decoder fixed to p(a, b, c) = (1/2, 1/4, 1/4), critic to (1/4, 1/4, 1/2), whatever the input.
    Text "aabacaab" as one stream scores the 7 next characters a b a c a a b:
    main 4 x 1 + 3 x 2 = 10 bits -> 10/7; critic 4 x 2 + 2 x 2 + 1 x 1 = 13 bits -> 13/7."""
    ds = tiny_text("aabacaab", bptt=3)
    trainer, m = build_trainer("lct", 2, model="lstm2", input_shape=(3,), num_classes=3, hyper=ADAM, hidden=4)
    stages = trainer.rules
    _fixed_distribution(m.units[-1], [0.5, 0.25, 0.25])
    _fixed_distribution(stages[0].head, [0.25, 0.25, 0.5])
    ev = text_evaluate(stages, eval_batches(ds, 0, "cpu", streams=1))
    assert ev["test_bpc"] == pytest.approx(10 / 7, abs=1e-6)
    assert ev["sub_bpc"] == pytest.approx([13 / 7], abs=1e-6)
    assert ev["test_loss"] == pytest.approx(10 / 7 * math.log(2), abs=1e-6)
    # the same by hand from the per-character losses
    logits = torch.tensor([0.5, 0.25, 0.25]).log().expand(1, 2, 3)
    assert sequence_loss(logits, torch.tensor([[0, 1]])).tolist() == pytest.approx([math.log(2), math.log(4)])


def test_unigram_entropy():
    ds = tiny_text("aabb")  # p = (1/2, 1/2, 0): 1 bit
    assert ds.unigram_bpc("test") == pytest.approx(1.0)
    assert tiny_text("abca").unigram_bpc("test") == pytest.approx(1.5)


# --- the carried state ------------------------------------------------------------------------------
def test_hidden_state_carries_across_segments_and_resets():
    torch.manual_seed(0)
    layer = LSTMLayer(8, 6, vocab=VOCAB)
    seg1a, seg1b, seg2 = (torch.randint(0, VOCAB, (2, 5), generator=torch.Generator().manual_seed(s)) for s in (1, 2, 3))

    def run(*segments):
        layer.reset_state()
        out = None
        for seg in segments:
            out = layer(seg)
        return out

    after_a, after_b = run(seg1a, seg2), run(seg1b, seg2)
    assert not torch.allclose(after_a, after_b)  # segment 2's output depends on segment 1's input
    fresh1, fresh2 = run(seg2), run(seg2)
    assert torch.equal(fresh1, fresh2)  # after a reset it does not
    assert not torch.allclose(fresh1, after_a)
    # truncated BPTT: the carried state holds no graph
    run(seg1a)
    assert not layer.states[True][0].requires_grad and not layer.states[True][1].requires_grad


def test_training_stream_rows_continue_across_steps():
    ds = tiny_text("abc")
    ds.train = torch.arange(200, dtype=torch.int32) % 3
    stream = TextStream(ds, batch_size=3, seed=0)
    assert stream.steps_per_epoch == (200 // 3 - 1) // 4
    x0, y0 = stream.batch(0)
    x1, _ = stream.batch(1)
    assert x0.shape == (3, 4) and x0.dtype == torch.int64
    assert torch.equal(y0[:, :-1], x0[:, 1:]) and torch.equal(y0[:, -1], x1[:, 0])
    assert torch.equal(stream.batch(stream.steps_per_epoch)[0], x0)  # next epoch starts over
    assert torch.equal(TextStream(ds, 3, seed=7).batch(5)[0], stream.batch(5)[0])  # depends on the step only


def test_evaluation_and_assumption1_leave_the_training_state_alone():
    stages, m = lstm_stages("lct", 3)
    x, y = batch()
    train_step(stages, 0, x, y)
    layers = recurrent_layers([s.body for s in stages])
    before = [tuple(t.clone() for t in layer.states[True]) for layer in layers]
    weights = copy.deepcopy(m.units.state_dict())
    ds = tiny_text("abcabcabcabcabcabcabcabc", vocab="abcdefg")
    ev = text_evaluate(stages, eval_batches(ds, 0, "cpu", streams=2))
    assert math.isfinite(ev["test_bpc"]) and len(ev["sub_bpc"]) == 2
    a1 = assumption1(GroupChain(stages), [(x, y)])
    assert a1["mu"][-1] == pytest.approx(1.0, abs=1e-4) and len(a1["cos"]) == 3
    for layer, (h, c) in zip(layers, before):
        assert torch.equal(layer.states[True][0], h) and torch.equal(layer.states[True][1], c)
    for k, v in m.units.state_dict().items():
        if not k.endswith("_extra_state"):
            assert torch.equal(v, weights[k]), k


def test_bp_assumption1_is_one_for_every_group():
    stages, _ = lstm_stages("bp", 3)
    x, y = batch()
    train_step(stages, 0, x, y)
    assert assumption1(GroupChain(stages), [batch(2)])["mu"] == pytest.approx([1.0] * 3, abs=1e-4)


def test_state_dict_carries_the_training_state():
    stages, m = lstm_stages("bp", 2, layers=2)
    train_step(stages, 0, *batch())
    sd = m.units.state_dict()
    clone = build_model("lstm2", VOCAB, (BPTT,), hidden=8)
    clone.units.load_state_dict(sd)
    for a, b in zip(recurrent_layers([m.units]), recurrent_layers([clone.units])):
        assert torch.equal(a.states[True][0], b.states[True][0]) and b.states[False] is None


# --- configuration and runs ---------------------------------------------------------------------------
def test_lstm_profiles():
    paper = resolve(RunConfig(method="lct", groups=None, model="lstm4", data="ptb", profile="paper"))
    assert (paper.groups, paper.batch_size, paper.bptt, paper.hidden, paper.optimizer) == (4, 128, 150, 600, "adam")
    assert paper.lr_decay == 0.33 and paper.milestones == tuple(paper.steps * i // 5 for i in range(1, 5))
    assert paper.steps == 100 * 261 and paper.run_id == "ptb_lstm4_lct_k4_paper_s0"
    enwik8 = resolve(RunConfig(method="bp", groups=None, model="lstm2", data="enwik8", profile="paper"))
    assert enwik8.hidden == 950 and enwik8.milestones == () and enwik8.steps == 50 * 4687
    assert resolve(RunConfig(model="lstm3", data="pytext", profile="cpu", groups=None)).hidden == 128
    # the CNN path keeps its settings
    cnn = resolve(RunConfig(method="lct", groups=None, model="resnet50", data="digits", profile="cpu"))
    assert cnn.groups == 1 and cnn.optimizer is None and cnn.weight_decay == 5e-4
    assert cnn.hyper() == Hyper(lr=0.1, milestones=cnn.milestones, weight_decay=5e-4, aux_lr=1e-4)


def _cfg(tmp_path, **kw):
    base = dict(method="lct", groups=None, model="lstm3", data="pytext", profile="smoke", out=str(tmp_path),
                threads=1, steps=40, eval_every=20)
    base.update(kw)
    return RunConfig(**base)


def test_lstm_run_records_bpc_and_resumes_exactly(tmp_path, monkeypatch):
    whole = json.loads(run(_cfg(tmp_path / "a"), progress=False).read_text())
    assert whole["status"] == "completed" and whole["config"]["groups"] == 3
    f = whole["final"]
    assert f["test_bpc"] == whole["curves"]["test_bpc"][-1] and len(f["sub_bpc"]) == 2
    assert 3.0 < f["unigram_bpc"] < 6.0 and f["epochs"] > 0
    assert [len(g["units"]) for g in whole["split"]["groups"]] == [1, 1, 2]  # lstm1 | lstm2 | lstm3 + decoder
    assert whole["split"]["groups"][0]["head_params"] > 0 and len(whole["assumption1"]["mu"][0]) == 3

    real_phase = InProcess.phase
    monkeypatch.setattr(InProcess, "phase", dying_at(30, InProcess))
    with pytest.raises(KeyboardInterrupt):
        run(_cfg(tmp_path / "b"), progress=False)
    monkeypatch.setattr(InProcess, "phase", real_phase)
    resumed = json.loads(run(_cfg(tmp_path / "b", resume=True), progress=False).read_text())
    assert resumed["status"] == "completed"
    # exact only if the carried LSTM state was checkpointed with the weights
    assert resumed["curves"]["test_bpc"] == whole["curves"]["test_bpc"]
    assert resumed["curves"]["train_loss"] == pytest.approx(whole["curves"]["train_loss"], rel=1e-6)


@pytest.mark.parametrize("kw,needle", [
    (dict(data="digits"), "does not run on digits"),
    (dict(model="resnet50", data="pytext", groups=1), "does not run on pytext"),
    (dict(data="ptb"), "ptb data not found"),
    (dict(groups=5), "cannot make 5 groups"),
])
def test_bad_lstm_input_is_one_line_error(kw, needle, tmp_path):
    with pytest.raises(BenchError, match=needle):
        build(_cfg(tmp_path, data_root=str(tmp_path / "none"), **kw))



def test_report_tables_v_ix_x(tmp_path):
    """Our rows beside the paper's, profile named; paper cells without a record say missing."""
    from bench import report
    from bench.report import lstm, plots
    from bench.report.frame import cells
    from bench.train.count import count

    paths = [run(_cfg(tmp_path, method=m, groups=k, model="lstm2"), progress=False) for m, k in (("bp", 1), ("lct", None))]
    arch = count(RunConfig(method="lct", groups=4, model="lstm4", data="ptb", profile="paper", out=str(tmp_path / "a")))
    cs, counted = cells([json.loads(p.read_text()) for p in paths]), [json.loads(arch.read_text())]
    v, ix, x = lstm.tables(cs, counted)
    assert md_row(v.markdown(), "ptb", "2 (950)", "LCT_n1")[3:6] == ["2", "1.276", "missing"]
    ours = v.md[v.md["data"] == "pytext"].values.tolist()
    assert [r[2] for r in ours] == ["BP", "LCT_n1"] and all("(smoke)" in r[5] for r in ours)
    assert md_row(ix.markdown(), "enwik8", "lstm4 (600)", "LCT_n3", "paper")[4:8] == ["1.691", "1.585", "1.551", "1.541"]
    assert any(r[0] == "pytext" and r[3] == "ours (smoke)" and r[5] == "—" for r in ix.md.values.tolist())
    arch_rows = {row[1]: row for row in x.md.values.tolist() if row[0].startswith("architecture")}
    assert arch_rows["Sub_1"][2].startswith("68 (1.15") and arch_rows["Main"][2].startswith("400")
    assert arch_rows["Sub_3"][3].startswith("7.5") and arch_rows["Main"][5] == "401"
    assert any(row[0].startswith("ours: pytext lstm2 (32 units) LCT_n1") for row in x.md.values.tolist())
    fig6 = [(name, draw) for name, draw in plots.plan(cs, counted) if name.startswith("fig6")]
    assert [name for name, _ in fig6] == ["fig6_bpc_vs_time_smoke_pytext_lstm2_simulated.png"]
    fig6[0][1](tmp_path / fig6[0][0])
    assert (tmp_path / fig6[0][0]).stat().st_size > 1000
    # the full report has them too
    files = report.render(report.load_records(paths))
    assert {"table_V_lstm_bpc.md", "table_IX_lstm_submodels.md", "table_X_lstm_complexity.md"} <= set(files)


@pytest.mark.parametrize("method", ["lct", "bp"])
def test_distributed_lockstep_matches_in_process_on_lstm(tmp_path, method):
    """One worker per LSTM layer (state local to each worker): after 4 lockstep steps the weights, critics
    and carried (h, c) states equal the in-process executor's."""
    cfg = _cfg(tmp_path, method=method, groups=2, model="lstm2", steps=4, eval_every=4, batch_size=8)
    path = run_distributed(cfg, DistConfig(dump_state="dump.pt"), log_dir=tmp_path / "logs")
    record = json.loads(path.read_text())
    assert record["status"] == "completed"
    assert math.isfinite(record["final"]["test_bpc"]) and record["curves"]["test_bpc"] == [record["final"]["test_bpc"]]
    got = torch.load(path.parent / "dump.pt", weights_only=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        r = build(RunConfig(**{**vars(cfg), "out": str(tmp_path / "inproc")}))
        for step in range(4):
            r.trainer.step(step, *r.stream.batch(step))
    finally:
        torch.set_num_threads(threads)
    assert len(got) == len(r.trainer.parts) == 2
    for i, part in enumerate(r.trainer.parts):
        for kind, module in part.items():
            for name, value in module.state_dict().items():
                torch.testing.assert_close(got[i]["modules"][kind][name], value, rtol=1e-4, atol=1e-5,
                                           msg=f"stage {i} {kind}.{name}")
    assert got[0]["modules"]["body"]["0._extra_state"].shape == (2, 1, 8, 32)  # (h, c) x layers x rows x units
