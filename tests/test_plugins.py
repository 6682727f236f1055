"""Methods from outside the package: a group rule and a whole-step rule defined in this file run like the
built-in ones (in process, and the group rule on 2 real workers) with no change to any project file; the
README's example method runs through `--plugin path.py` on the command line."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from bench.__main__ import main
from bench.config import RunConfig
from bench.exec.launch import run_distributed
from bench.exec.settings import DistConfig
from bench.train.build import build
from methods import Backend, Feedback, GroupRule, Look, Option, WholeStepRule, register_method

ROOT = Path(__file__).resolve().parent.parent
HERE = str(Path(__file__).resolve())


@register_method("test_scaled_bp")
class ScaledBackprop(GroupRule):
    """Backprop whose gradient sent back to the previous group is scaled: `scale=1` is backprop itself."""

    description = "backprop with a scaled feedback gradient (a test's plugin)"
    feedback = Feedback.GRADIENT
    backend = Backend.STAGES
    options = {"scale": Option(1.0, "factor on the gradient sent back")}
    look = Look("scaled BP", "#17becf", 900)

    def forward(self, step, x, y):
        self.x = self._input(x)
        out = self.body(self.x)
        if self.ctx.is_last:
            self.loss = self.ctx.per_sample_loss(out, y).mean()
            self.stats["loss"] = self.loss.detach()
            return None
        self.out = out
        return out.detach()

    def backward(self, step, feedback):
        self.body_opt.zero_grad(set_to_none=True)
        (self.loss if self.ctx.is_last else self.out).backward(None if self.ctx.is_last else feedback)
        self.body_opt.step()
        return None if self.ctx.is_first else self.opts["scale"] * self.x.grad


@register_method("test_whole_backprop")
class WholeBackprop(WholeStepRule):
    """Backprop as one step over the whole network, with one optimiser per group: the bp groups' update."""

    description = "backprop as a whole-step rule (a test's plugin)"
    look = Look("whole BP", "#bcbd22", 901)

    def __init__(self, groups, options):
        super().__init__(groups, options)
        for g, opts in zip(groups, self.optims):
            opts["body"] = g.hyper.optimizer_for(g.body.parameters())

    def step(self, step, x, y):
        self.set_lr(step)
        for body in self.bodies:
            x = body(x)
        loss = torch.nn.functional.cross_entropy(x, y)
        for opts in self.optims:
            opts["body"].zero_grad(set_to_none=True)
        loss.backward()
        for opts in self.optims:
            opts["body"].step()
        return loss.detach()


def _cfg(tmp_path, method, groups=2, **kw):
    return RunConfig(method=method, groups=groups, data="digits", profile="smoke", steps=4, width=1 / 16,
                     batch_size=32, out=str(tmp_path / "runs"), threads=1, plugins=[HERE], **kw)


def _weights(cfg) -> torch.Tensor:
    r = build(cfg)
    for step in range(cfg.steps):
        r.trainer.step(step, *r.stream.batch(step))
    return torch.cat([p.detach().flatten() for body, _ in r.trainer.network() for p in body.parameters()])


def test_plugin_group_rule_runs_in_process_and_on_two_workers(tmp_path):
    ours, bp = _weights(_cfg(tmp_path, "test_scaled_bp")), _weights(_cfg(tmp_path, "bp"))
    torch.testing.assert_close(ours, bp, rtol=1e-6, atol=1e-7)  # scale 1 is backprop, through our interface
    assert not torch.equal(_weights(_cfg(tmp_path, "test_scaled_bp", extra={"scale": 0.0})), bp)
    # on 2 real workers (each loads this file as a plugin), lockstep: the in-process weights
    cfg = _cfg(tmp_path, "test_scaled_bp", extra={"scale": 0.5})
    path = run_distributed(cfg, DistConfig(dump_state="dump.pt", evaluate=False), log_dir=tmp_path / "logs")
    assert json.loads(path.read_text())["status"] == "completed"
    got = torch.load(path.parent / "dump.pt", weights_only=False)
    flat = torch.cat([v.float().flatten() for s in got for v in s["modules"]["body"].values()])
    r = build(_cfg(tmp_path, "test_scaled_bp", extra={"scale": 0.5}))
    for step in range(4):
        r.trainer.step(step, *r.stream.batch(step))
    want = torch.cat([v.float().flatten() for part in r.trainer.parts for v in part["body"].state_dict().values()])
    torch.testing.assert_close(flat, want, rtol=1e-4, atol=1e-5)


def test_plugin_whole_step_rule_runs_in_process_and_refuses_real_workers(tmp_path, capsys):
    torch.testing.assert_close(_weights(_cfg(tmp_path, "test_whole_backprop", groups=3)),
                               _weights(_cfg(tmp_path, "bp", groups=3)), rtol=1e-5, atol=1e-6)
    base = ["run", "--plugin", HERE, "--method", "test_whole_backprop", "-k", "2", "--out", str(tmp_path / "cli")]
    assert main([*base, "--steps", "20", "--no-progress"]) == 0
    record = json.loads(next((tmp_path / "cli").glob("*.json")).read_text())
    assert record["status"] == "completed" and record["config"]["plugins"] == [HERE]
    assert main([*base, "--executor", "distributed"]) == 2
    assert "test_whole_backprop has no distributed form" in capsys.readouterr().err
    assert main([*base, "--option", "scale=2"]) == 2  # a whole-step rule's options are declared too
    assert "test_whole_backprop: unknown option(s) scale; valid: none" in capsys.readouterr().err


def readme_example() -> str:
    """The example method of the README (the python block after 'Add a method')."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Add a method"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_example_method_runs_through_plugin(tmp_path, capsys):
    plugin = tmp_path / "fixed_head.py"
    plugin.write_text(readme_example())
    assert len(plugin.read_text().splitlines()) <= 45
    out = tmp_path / "runs"
    common = ["--plugin", str(plugin), "--method", "fixedhead", "-k", "2", "--out", str(out), "--no-progress"]
    assert main(["list", "--plugin", str(plugin)]) == 0
    assert "fixedhead" in capsys.readouterr().out
    assert main(["run", *common, "--steps", "150"]) == 0
    record = json.loads((out / "digits_resnet50_fixedhead_k2_smoke_s0.json").read_text())
    assert record["status"] == "completed" and record["final"]["test_acc"] > 40.0  # learns; chance is 10%
    assert record["assumption1"]["mu"]  # it declares local gradients: Assumption 1 is measured
    assert main(["run", *common, "--steps", "10", "--executor", "distributed", "--schedule", "overlapped"]) == 0
    dist = json.loads((out / "digits_resnet50_fixedhead_k2_smoke_s0_dist-overlapped.json").read_text())
    assert dist["status"] == "completed" and len(dist["workers"]) == 2
    assert dist["workers"][0]["bytes_recv"] == 0  # nothing comes back across the boundary


@pytest.mark.parametrize("bad, needle", [
    (["--plugin", "no_such_module_xyz"], "--plugin no_such_module_xyz: cannot import it"),
    (["--plugin", "missing_file.py"], "--plugin missing_file.py: no such file"),
])
def test_a_bad_plugin_is_one_line(bad, needle, tmp_path, capsys):
    assert main(["run", *bad, "--method", "bp", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and needle in err and not (tmp_path / "o").exists()
