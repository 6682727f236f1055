"""The speed settings: mixed precision (bf16 autocast, fp16 with a GradScaler per optimiser), channels_last,
torch.compile with its fallback; they change speed, not what is learned, and their errors are one line."""
from __future__ import annotations

import json

import pytest
import torch

from bench.__main__ import main
from bench.config import RunConfig
from bench.exec.inprocess import InProcess
from bench.train.build import build
from bench.train.loop import run
from methods.amp import LossScaling

from helpers import dying_at


def _cfg(tmp_path, **kw):
    base = dict(method="lct", groups=2, model="resnet50", data="digits", profile="smoke", out=str(tmp_path),
                threads=1)
    return RunConfig(**{**base, **kw})


def _acc(tmp_path, **kw) -> dict:
    return json.loads(run(_cfg(tmp_path, **kw), progress=False).read_text())


@pytest.mark.slow  # three whole runs (~32 s); every method's bf16 step is checked in the default run below
def test_bf16_and_channels_last_learn_as_fp32_on_the_digits(tmp_path):
    """Smoke profile, lct K=2 on the digits: bf16 autocast and channels_last reach fp32's accuracy (within the
    noise of 360 test images and 150 steps) and are recorded as such."""
    fp32 = _acc(tmp_path)
    bf16 = _acc(tmp_path, precision="bf16")
    last = _acc(tmp_path / "cl", channels_last=True)
    assert bf16["config"]["precision"] == "bf16" and last["config"]["channels_last"] is True
    assert fp32["config"]["precision"] == "fp32" and fp32["config"]["channels_last"] is False
    for other in (bf16, last):
        assert other["status"] == "completed"
        assert abs(other["final"]["test_acc"] - fp32["final"]["test_acc"]) <= 5.0, (other["final"], fp32["final"])
    assert fp32["final"]["test_acc"] > 85


def test_fp16_scales_every_optimiser_and_learns(tmp_path):
    """fp16 on the MLP (CPU fp16 kernels are slow): every optimiser of the rules gets its own GradScaler, the
    run learns, and the scalers' state is in the checkpoint."""
    cfg = _cfg(tmp_path, model="mlp", precision="fp16", steps=100)
    r = build(cfg)
    assert all(rule.scaling.enabled for rule in r.trainer.rules)
    record = _acc(tmp_path, model="mlp", precision="fp16", steps=100)
    assert record["config"]["precision"] == "fp16"
    assert record["status"] == "completed" and record["final"]["test_acc"] > 60, record["curves"]["test_acc"]


def test_an_fp16_run_resumes_with_its_scalers(tmp_path, monkeypatch):
    cfg = dict(model="mlp", precision="fp16", steps=100)
    whole = _acc(tmp_path / "a", **cfg)
    monkeypatch.setattr(InProcess, "phase", dying_at(70, InProcess))
    with pytest.raises(KeyboardInterrupt):
        run(_cfg(tmp_path / "b", **cfg), progress=False)
    ckpt = torch.load(tmp_path / "b" / "checkpoints" / f"{_cfg(tmp_path, **cfg).run_id}.pt", weights_only=False)
    assert [set(s) for s in ckpt["scalers"]] == [{"body", "head"}, {"body"}]  # group 1: body and critic
    monkeypatch.undo()
    resumed = _acc(tmp_path / "b", resume=True, **cfg)
    assert resumed["curves"]["train_loss"] == pytest.approx(whole["curves"]["train_loss"], rel=1e-6)


def test_loss_scaling_gives_the_true_gradient_and_skips_an_overflow():
    w = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    opt = torch.optim.SGD([w], lr=0.1)
    scaling = LossScaling("cpu")
    loss = (w * torch.tensor([3.0, -1.0])).sum()
    scaling.scale(loss, opt).backward()
    assert w.grad.tolist() == [3.0 * 65536, -65536.0]  # GradScaler's initial scale
    assert scaling.unscaled(w.grad, opt).tolist() == [3.0, -1.0]
    scaling.step(opt)
    assert w.detach().tolist() == pytest.approx([0.7, 2.1])
    opt.zero_grad()
    scaling.scale((w * float("inf")).sum(), opt).backward()
    scaling.step(opt)  # an overflow: no step, a smaller scale
    assert w.detach().tolist() == pytest.approx([0.7, 2.1])
    assert scaling.scalers[id(opt)].get_scale() == 32768.0
    plain = LossScaling(None)
    assert plain.scale(loss, opt) is loss and plain.unscaled(w.grad, opt) is w.grad


def test_fp16_is_refused_for_a_method_without_loss_scaling(tmp_path, capsys):
    code = main(["run", "--method", "auxvar", "--model", "mlp", "--groups", "2", "--precision", "fp16",
                 "--out", str(tmp_path), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "use --precision bf16" in err and len(err.splitlines()) == 1
    assert not any(tmp_path.iterdir())


def test_a_mixed_precision_lstm_on_the_cpu_is_refused(tmp_path, capsys):
    code = main(["run", "--method", "lct", "--model", "lstm2", "--data", "pytext", "--precision", "bf16",
                 "--out", str(tmp_path), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "CUDA only" in err and len(err.splitlines()) == 1 and not any(tmp_path.iterdir())


def test_a_mixed_precision_run_never_takes_an_fp32_runs_place(tmp_path):
    assert _cfg(tmp_path, precision="bf16").run_id.endswith("_bf16")
    assert _cfg(tmp_path).run_id.endswith("_s0")


def test_channels_last_and_cudnn_benchmark_default_on_for_cuda_conv_models_only(tmp_path):
    from bench.config import resolve

    assert resolve(_cfg(tmp_path, device="cuda")).channels_last is True
    assert resolve(_cfg(tmp_path, device="cuda", model="mlp")).channels_last is False
    assert resolve(_cfg(tmp_path, device="cuda")).cudnn_benchmark is True
    cpu = resolve(_cfg(tmp_path))
    assert cpu.channels_last is False and cpu.cudnn_benchmark is False
    r = build(_cfg(tmp_path, channels_last=True))
    conv = next(m for m in r.trainer.parts[0]["body"].modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    x, _ = r.stream.batch(0)
    assert x.is_contiguous(memory_format=torch.channels_last) and r.stream.steps_per_epoch > 0


def test_compile_falls_back_to_eager_with_one_warning(tmp_path, monkeypatch, capsys):
    def broken(fn, *a, **k):
        def fails(*args, **kwargs):
            raise RuntimeError("no backend for this op\n(a long explanation)")
        return fails

    monkeypatch.setattr(torch, "compile", broken)
    record = _acc(tmp_path, model="mlp", compile=True, steps=50)
    assert record["status"] == "completed" and record["config"]["compile"] is True
    warnings = [line for line in capsys.readouterr().err.splitlines() if "--compile" in line]
    assert warnings == [f"warning: --compile: torch.compile failed on group {i} (RuntimeError: no backend for this "
                        f"op (a long explanation)); running it eagerly" for i in (1, 2)]


@pytest.mark.slow
def test_compiled_groups_compute_what_eager_ones_do(tmp_path, capsys):
    """torch.compile of the MLP's groups (this machine has a C++ compiler): same state_dict keys, and the
    same outputs as the eager network to float tolerance."""
    eager = build(_cfg(tmp_path, model="mlp"))
    compiled = build(_cfg(tmp_path, model="mlp", compile=True))
    x, _ = eager.stream.batch(0)
    for a, b in zip(eager.trainer.parts, compiled.trainer.parts):
        assert list(a["body"].state_dict()) == list(b["body"].state_dict())
        a["body"].eval(), b["body"].eval()
        with torch.no_grad():
            assert torch.allclose(a["body"](x), b["body"](x), atol=1e-5)
            x = a["body"](x)
    assert "--compile" not in capsys.readouterr().err  # compiled, not the eager fallback


def test_every_method_that_allows_autocast_trains_in_bf16(tmp_path):
    """bf16 through every suite method's rule (MLP, 20 steps): completed with a finite loss; fp16 too for the
    methods that declare loss scaling."""
    from methods import create_method, list_methods

    from helpers import model_for

    for name in list_methods():
        method = create_method(name)
        if not method.__module__.startswith("methods.") or not method.autocast:
            continue
        for precision in ("bf16", "fp16") if method.loss_scaling else ("bf16",):
            rec = _acc(tmp_path / name, method=name, model=model_for(name, "mlp"), precision=precision, steps=20,
                       eval_every=20, final_eval_limit=200)
            assert rec["status"] == "completed" and rec["curves"]["train_loss"][-1] < 10, (name, precision)
