"""The report: paper numbers and ours in the right cells, missing records shown as missing, byte-identical
regeneration, every figure drawn, and check-assumption1's exit codes. Synthetic records, no training."""
from __future__ import annotations

import csv
import io
import json
import random
from pathlib import Path

import pytest

from bench import report
from bench.__main__ import main
from bench.config import RunConfig
from bench.report import paper
from bench.report.frame import cells, label
from bench.train.count import count

from helpers import md_row

ROOT = Path(__file__).resolve().parent.parent




def record(data, model, method, groups, *, profile="cpu", seed=0, acc=90.0, sub=None, top5=None, sub_top5=None,
           time_s=100.0, steps=100, status="completed", distributed=False, schedule="lockstep", workers=None,
           mu=None):
    """A run record shaped like bench.records.new_record's, with made-up numbers."""
    n_eval = 4
    split_groups = []
    for k in range(groups):
        last = k == groups - 1
        split_groups.append({"units": [f"u{k}"], "layers": 3, "params": 1000 * (k + 1), "flops": 10_000 * (k + 1),
                             "head_params": 0 if last or method not in ("lct", "joint") else 500,
                             "head_flops": 0 if last or method not in ("lct", "joint") else 2_000, "aux_params": 0})
    a1 = {"step": [], "mu": [], "cos": []}
    if mu is not None:  # mu: per group list of values at 3 steps
        a1 = {"step": [25, 50, 75], "mu": [[m[i] for m in mu] for i in range(3)],
              "cos": [[0.5 * m[i] for m in mu] for i in range(3)]}
    steps_curve = [steps * (i + 1) // n_eval for i in range(n_eval)]
    rec = {
        "schema": 1, "run_id": f"{data}_{model}_{method}_k{groups}_{profile}_s{seed}", "status": status,
        "executor": "distributed" if distributed else "in-process",
        "parallel": "parallel" if distributed else "simulated",
        "config": {"method": method, "groups": groups, "model": model, "data": data, "profile": profile,
                   "seed": seed, "split_rule": "paper", "width": 0.125, "steps": steps, "batch_size": 128},
        "env": {}, "split": {"rule": "paper", "bounds": list(range(groups + 1)), "groups": split_groups},
        "curves": {"step": steps_curve, "train_loss": [2.0 / (i + 1) for i in range(n_eval)],
                   "test_acc": [acc] * n_eval, "test_loss": [1.0] * n_eval, "sub_acc": [sub or []] * n_eval,
                   "step_time_s": [time_s / steps] * n_eval,
                   "train_time_s": [time_s * (i + 1) / n_eval for i in range(n_eval)]},
        "assumption1": a1,
        "final": {"steps": steps if status == "completed" else steps // 2, "test_acc": acc, "sub_acc": sub or [],
                  "train_time_s": time_s},
        "error": None,
    }
    if top5 is not None:
        rec["final"]["test_top5"] = top5
    if sub_top5 is not None:
        rec["final"]["sub_top5"] = sub_top5
    if workers is not None:
        rec["workers"] = workers
    if distributed:
        rec["schedule"] = schedule
    return rec


def workers(k, rss=(300.0, 310.0, 320.0, 330.0), comm=0.05):
    return [{"rank": r, "step_time_s": 0.1, "comm_share": comm * (r + 1), "bytes_sent": 1000, "bytes_recv": 1000,
             "peak_rss_mb": rss[r], "gpu_mem_nvml_mb": None, "torch_cuda_peak_mb": None,
             "paper_comm_share": comm / 2} for r in range(k)]


RECORDS = {
    "c10_r50_lct4_s0": record("cifar10", "resnet50", "lct", 4, seed=0, acc=91.0, sub=[80.0, 85.0, 90.0],
                              time_s=80.0, mu=[[0.1, 0.2, 0.3], [0.05, 0.1, 0.2], [0.2, 0.2, 0.2], [1, 1, 1]]),
    "c10_r50_lct4_s1": record("cifar10", "resnet50", "lct", 4, seed=1, acc=92.0, sub=[82.0, 86.0, 91.0],
                              time_s=82.0, mu=[[0.1, 0.2, 0.3], [0.05, 0.1, 0.2], [0.2, 0.2, 0.2], [1, 1, 1]]),
    "c10_r50_bp": record("cifar10", "resnet50", "bp", 1, acc=93.0, time_s=60.0),
    "c10_r50_dni2": record("cifar10", "resnet50", "dni", 2, acc=70.0, time_s=90.0, mu=[[-0.2, 0.1, 0.3], [1, 1, 1]]),
    "c10_r50_joint4": record("cifar10", "resnet50", "joint", 4, acc=94.0, sub=[70.0, 80.0, 90.0]),
    "c10_r101_lct3_running": record("cifar10", "resnet101", "lct", 3, acc=50.0, status="running"),
    "in64_r101_lct2": record("imagenet64", "resnet101", "lct", 2, acc=40.0, top5=65.0, sub=[30.0], sub_top5=[55.0]),
    "mnist_mlp_lct2": record("mnist", "mlp", "lct", 2, acc=97.5, sub=[96.0]),
    "c100_r101_lct4_dist": record("cifar100", "resnet101", "lct", 4, acc=60.0, distributed=True, time_s=30.0,
                                  schedule="pipelined", workers=workers(4)),
    "c100_r101_lct2_dist": record("cifar100", "resnet101", "lct", 2, acc=61.0, distributed=True, time_s=40.0,
                                  schedule="pipelined", workers=workers(2)),
    "c100_r101_lct2_dist_lockstep": record("cifar100", "resnet101", "lct", 2, acc=63.0, distributed=True,
                                           time_s=55.0, workers=workers(2)),
    "c100_r101_gpipe2_dist": record("cifar100", "resnet101", "gpipe", 2, acc=70.0, distributed=True, time_s=50.0,
                                    schedule="gpipe-m4", workers=workers(2)),
    "c100_r101_bp_dist": record("cifar100", "resnet101", "bp", 1, acc=70.0, distributed=True, time_s=60.0,
                                workers=workers(1)),
    "digits_r50_lct2_smoke": record("digits", "resnet50", "lct", 2, profile="smoke", acc=88.0, sub=[85.0]),
}


@pytest.fixture(scope="module")
def counted(tmp_path_factory) -> dict:
    """A real `counted` record: the paper's CIFAR-10 ResNet-101 at full width, LCT_n3 (no training)."""
    cfg = RunConfig(method="lct", groups=4, model="resnet101", data="cifar10", profile="paper",
                    out=str(tmp_path_factory.mktemp("architecture")))
    return json.loads(count(cfg).read_text())


@pytest.fixture
def results(tmp_path, counted):
    root = tmp_path / "results"
    for name, rec in {**RECORDS, "arch_c10_r101_lct4": counted}.items():
        path = root / rec["config"]["profile"] / "records" / f"{name}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(rec))
    return root


def render(root: Path) -> dict[str, str]:
    return report.render(report.load_records([root]), base=root.parent)


def csv_rows(text: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(text)))


def find(rows, **match):
    out = [r for r in rows if all(str(r[k]) == str(v) for k, v in match.items())]
    assert out, f"no row with {match}"
    return out


def test_paper_table_is_keyed_by_cell():
    assert paper.paper_value("I", "cifar10", "resnet50", "lct", 4) == 93.32
    assert paper.paper_value("I", "imagenet", "resnet101", "bp", 1, "top5") == 91.37
    assert paper.paper_value("I", "imagenet", "resnet50", "dni", 2) is None  # '-' in the paper
    assert paper.paper_value("III", "mnist", "mlp", "admm", 2) == 82.53
    assert paper.paper_value("IV", "cifar100", "resnet101", "joint", 4) == 75.37
    assert paper.paper_value("VI", "cifar100", "resnet50", "dni", 4, "gpu3") == 4943  # model not stated: '*'
    assert paper.paper_value("VII", "imagenet", "resnet50", "lct", 4, "sub2_top5") == 75.08
    assert paper.paper_value("time", "cifar100", "resnet101", "lct", 4, "reduction") == 43.9
    assert label("lct", 4) == "LCT_n3" and label("dni", 2) == "DNI_n1" and label("bp", 1) == "BP"


def test_table_I_puts_paper_and_ours_in_the_same_row(results):
    files = render(results)
    rows = csv_rows(files["table_I_accuracy.csv"])
    lct = find(rows, data="cifar10", model="resnet50", method="lct", groups=4, metric="top1")
    assert len(lct) == 1
    r = lct[0]
    assert float(r["paper"]) == 93.32 and float(r["ours_mean"]) == 91.5 and r["n"] == "2"
    assert float(r["ours_std"]) == pytest.approx(0.707107, abs=1e-6)
    assert float(r["diff"]) == pytest.approx(91.5 - 93.32)
    assert r["profile"] == "cpu" and r["executor"] == "simulated" and r["seeds"] == "0 1"
    row = md_row(files["table_I_accuracy.md"], "cifar10", "resnet50", "LCT_n3")
    assert row[5:8] == ["paper: 93.32", "ours (cpu, 2 seeds): 91.50 ± 0.71", "-1.82"]
    # a paper cell with no record at all: missing, never filled in
    r101 = find(rows, data="cifar100", model="resnet50", method="dni", groups=3)[0]
    assert r101["status"] == "missing" and r101["ours_mean"] == "" and float(r101["paper"]) == 43.39
    # a running (incomplete) record is not a result
    run = find(rows, data="cifar10", model="resnet101", method="lct", groups=3)[0]
    assert run["ours_mean"] == "" and "running" in run["status"]
    # data the paper did not use: our row, no paper value
    dig = find(rows, data="digits", method="lct", groups=2)[0]
    assert dig["paper"] == "" and float(dig["ours_mean"]) == 88.0 and dig["profile"] == "smoke"
    # ImageNet at 64 px is matched to the paper's ImageNet cells, top-1 and top-5
    top5 = find(rows, data="imagenet64", model="resnet101", method="lct", groups=2, metric="top5")[0]
    assert float(top5["paper"]) == 90.66 and float(top5["ours_mean"]) == 65.0


def test_deleting_a_record_shows_the_cell_as_missing(results):
    before = csv_rows(render(results)["table_I_accuracy.csv"])
    assert float(find(before, data="cifar10", model="resnet50", method="bp", groups=1)[0]["ours_mean"]) == 93.0
    (results / "cpu" / "records" / "c10_r50_bp.json").unlink()
    files = render(results)
    bp = find(csv_rows(files["table_I_accuracy.csv"]), data="cifar10", model="resnet50", method="bp", groups=1)
    assert len(bp) == 1 and bp[0]["status"] == "missing" and bp[0]["ours_mean"] == "" and float(bp[0]["paper"]) == 93.79
    row = md_row(files["table_I_accuracy.md"], "cifar10", "resnet50", "BP")
    assert row[5:7] == ["paper: 93.79", "missing"]
    # without BP, the time reduction of LCT vs BP cannot be given
    t = find(csv_rows(files["fig5_training_time.csv"]), data="cifar10", model="resnet50", method="lct", groups=4)[0]
    assert t["reduction_pct"] == ""
    row = md_row(files["REPORT.md"], "cifar10", "resnet50", "ours (cpu, 1/2 seeds, simulated)")
    assert row[3:6] == ["width 0.125, batch 128, 100 steps, paper split", "missing", "70.00"]


def test_other_tables_land_in_the_right_cells(results):
    files = render(results)
    t4 = find(csv_rows(files["table_IV_joint.csv"]), data="cifar10", model="resnet50", method="joint", groups=4)[0]
    assert float(t4["paper"]) == 94.80 and float(t4["ours_mean"]) == 94.0
    t3 = csv_rows(files["table_III_mlp.csv"])
    assert float(find(t3, data="mnist", method="lct")[0]["ours_mean"]) == 97.5
    assert find(t3, data="mnist", method="admm")[0]["status"] == "missing"
    assert all(r["status"] == "missing" for r in csv_rows(files["table_II_resnet182.csv"]))
    t7 = csv_rows(files["table_VII_submodels.csv"])
    s1 = find(t7, data="cifar10", model="resnet50", method="lct", groups=4, metric="sub1")[0]
    assert float(s1["paper"]) == 86.78 and float(s1["ours_mean"]) == 81.0
    main_ = find(t7, data="cifar10", model="resnet50", method="lct", groups=4, metric="main")[0]
    assert float(main_["paper"]) == 93.32 and float(main_["ours_mean"]) == 91.5
    s1t5 = find(t7, data="imagenet64", model="resnet101", method="lct", groups=2, metric="sub1_top5")[0]
    assert float(s1t5["ours_mean"]) == 55.0
    # memory: distributed records only, per worker, the paper's CIFAR-100 figures (model not stated) beside them
    t6 = csv_rows(files["table_VI_memory.csv"])
    w3 = find(t6, data="cifar100", model="resnet101", method="lct", groups=4, worker=3)[0]
    assert float(w3["paper_mib"]) == 5463 and float(w3["ours_mean_mib"]) == 320.0 and w3["measure"] == "peak RSS"
    assert w3["executor"] == "parallel (overlapped)"
    assert find(t6, data="imagenet", model="resnet50", method="bp", worker=1)[0]["status"] == "missing"
    # FLOPs/params of the sub-models from the split, critic share in parentheses
    t8 = csv_rows(files["table_VIII_complexity.csv"])
    sub1 = find(t8, data="cifar10", model="resnet50", method="lct", groups=4, submodel="Sub_1", profile="cpu")[0]
    assert int(sub1["flops"]) == 12_000 and int(sub1["critic_flops"]) == 2_000 and int(sub1["params"]) == 1500
    assert "(16.7%)" in files["table_VIII_complexity.md"]
    arch = find(t8, data="cifar10", model="resnet101", submodel="Sub_2", profile="architecture")[0]
    assert float(arch["paper_params_m"]) == 12.03 and int(arch["params"]) == pytest.approx(12.03e6, rel=1e-3)
    # time: reduction vs BP of the same executor; the paper's beside it
    tt = csv_rows(files["fig5_training_time.csv"])
    lct = find(tt, data="cifar10", model="resnet50", method="lct", groups=4)[0]
    assert float(lct["reduction_pct"]) == pytest.approx(100 * (1 - 81.0 / 60.0))
    assert float(lct["paper_reduction_pct"]) == 33.6 and lct["executor"] == "simulated"
    share = 40_000 / (12_000 + 22_000 + 32_000 + 40_000)  # slowest group (the last) over all, critics included
    assert float(lct["est_parallel_reduction_pct"]) == pytest.approx(100 * (1 - 81.0 * share / 60.0), abs=1e-5)
    assert float(lct["median_reduction_pct"]) == pytest.approx(100 * (1 - 81.0 / 60.0), abs=1e-5)
    assert find(tt, data="cifar10", model="resnet101", method="lct", groups=2)[0]["status"] == "missing"
    par = find(tt, data="cifar100", model="resnet101", method="lct", groups=4)[0]
    assert par["executor"] == "parallel (overlapped)" and float(par["reduction_pct"]) == pytest.approx(50.0)
    # two schedules of the same run are two rows, never averaged as if they were seeds
    two = find(tt, data="cifar100", model="resnet101", method="lct", groups=2)
    assert sorted((r["executor"], r["train_time_mean_s"]) for r in two) == [
        ("parallel (lockstep)", "55.000000"), ("parallel (overlapped)", "40.000000")]
    cm = csv_rows(files["communication.csv"])
    c4 = find(cm, data="cifar100", model="resnet101", method="lct", groups=4)[0]
    assert float(c4["comm_share_mean_pct"]) == pytest.approx(12.5) and float(c4["comm_share_max_pct"]) == 20.0
    assert float(c4["paper_style_estimate_pct"]) == pytest.approx(2.5)
    assert find(cm, data="cifar10", model="resnet50", groups=2)[0]["status"] == "missing"
    f7 = find(csv_rows(files["fig7_pipelined_bp.csv"]), data="cifar100", model="resnet101", groups=2)
    assert len(f7) == 1 and float(f7[0]["lct_faster_pct"]) == pytest.approx(20.0) and float(f7[0]["paper_pct"]) == 15.7
    assert f7[0]["lct_executor"] == "parallel (overlapped)" and f7[0]["executor"] == "parallel (gpipe-m4)"
    assert find(csv_rows(files["fig7_pipelined_bp.csv"]), groups=4)[0]["status"] == "missing"
    a1 = csv_rows(files["assumption1.csv"])
    g1 = find(a1, method="dni", group=1)[0]
    assert float(g1["min_mu"]) == -0.2 and g1["holds"] == "no" and g1["min_mu_step"] == "25"
    assert find(a1, method="lct", group=2)[0]["holds"] == "yes"


def test_every_table_names_its_profiles_and_time_kind(results):
    files = render(results)
    for name, text in files.items():
        if name.endswith(".md") and name != "REPORT.md":
            title = next(line for line in text.splitlines() if line.startswith("## "))
            assert "(profiles: " in title, name
            assert "simulated" in text or "profile" in text, name
    assert "ours (cpu, 1/2 seeds, simulated)" in files["REPORT.md"]
    assert md_row(files["REPORT.md"], "cifar10", "resnet50", "paper", "Section V")[4] == "93.79"


def test_regeneration_is_byte_identical_and_order_free(results, tmp_path):
    records = report.load_records([results])
    a = report.render(records, base=results.parent)
    shuffled = records[:]
    random.Random(1).shuffle(shuffled)
    b = report.render(shuffled, base=results.parent)
    assert a == b
    out = tmp_path / "out"
    report.write_tables(records, out, base=results.parent)
    first = {p.name: p.read_bytes() for p in out.iterdir()}
    report.write_tables(records, out, base=results.parent)
    assert first == {p.name: p.read_bytes() for p in out.iterdir()}
    assert set(first) >= {"REPORT.md", "table_I_accuracy.md", "table_I_accuracy.csv", "table_VIII_complexity.csv"}


def test_every_figure_is_drawn(results, tmp_path):
    records = report.load_records([results])
    paths = report.render_plots(records, tmp_path / "plots")
    names = {p.name for p in paths}
    assert {"fig3_assumption1_cpu_cifar10_resnet50_lct.png", "fig3_assumption1_cpu_cifar10_resnet50_dni.png",
            "fig5_loss_vs_time_cpu_cifar10_resnet50_simulated.png",
            "fig5_loss_vs_time_cpu_cifar100_resnet101_parallel.png",
            "anytime_acc_vs_flops_cpu_cifar10_resnet50.png", "communication_share.png",
            "fig7_pipelined_bp.png"} <= names
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 5000, p
    assert report.figure_names(records) == [f"plots/{p.name}" for p in paths]
    # without the DNI record its Fig. 3 goes; a picture that is not ours stays
    (tmp_path / "plots" / "mine.png").write_bytes(b"x")
    report.render_plots([r for r in records if r["config"]["method"] != "dni"], tmp_path / "plots")
    assert (tmp_path / "plots" / "fig3_assumption1_cpu_cifar10_resnet50_dni.png").exists()  # kept unless pruning
    report.render_plots([r for r in records if r["config"]["method"] != "dni"], tmp_path / "plots", prune=True)
    assert not (tmp_path / "plots" / "fig3_assumption1_cpu_cifar10_resnet50_dni.png").exists()
    assert (tmp_path / "plots" / "mine.png").exists() and (tmp_path / "plots" / "fig7_pipelined_bp.png").exists()


def test_figures_without_records_are_clearly_empty(tmp_path):
    rec = record("digits", "resnet50", "bp", 1, profile="smoke")
    rec["_path"] = "x.json"
    paths = report.render_plots([rec], tmp_path)
    assert [p.name for p in paths] == ["fig5_loss_vs_time_smoke_digits_resnet50_simulated.png",
                                       "time_to_accuracy_smoke_digits_resnet50_simulated.png",
                                       "communication_share.png", "fig7_pipelined_bp.png"]


def test_check_assumption1_exit_codes(results, capsys):
    recs = results / "cpu" / "records"
    assert main(["check-assumption1", str(recs / "c10_r50_lct4_s0.json")]) == 0
    out = capsys.readouterr().out
    assert "0.0500" in out and "holds" in out  # group 2's minimum mu
    assert main(["check-assumption1", str(recs / "c10_r50_lct4_s0.json"), str(recs / "c10_r50_dni2.json")]) == 1
    out = capsys.readouterr().out
    assert "-0.2000" in out and "FAILS" in out
    assert main(["check-assumption1", "--from-step", "50", str(recs / "c10_r50_dni2.json")]) == 0
    assert main(["check-assumption1", str(recs / "c10_r50_bp.json")]) == 0  # no measurements: nothing fails
    assert main(["check-assumption1", str(recs / "nope.json")]) == 2
    assert "no such record" in capsys.readouterr().err


def test_report_cli_writes_tables_and_plots(results, tmp_path):
    out, figs = tmp_path / "tables", tmp_path / "figs"
    assert main(["report", "--records", str(results), "--results", str(out), "--plots", str(figs), "--no-plots"]) == 0
    assert (out / "REPORT.md").exists() and not figs.exists()


def test_committed_tables_regenerate_byte_for_byte():
    """`nox -s tables` on the committed records reproduces the committed tables."""
    committed = ROOT / "results"
    if not (committed / "REPORT.md").exists():
        pytest.skip("no committed result set")
    records = report.load_records([committed])
    files = report.render(records, base=ROOT, figures=report.figure_names(records))
    for name, text in files.items():
        assert (committed / name).read_text() == text, f"results/{name} is stale: run `nox -s tables`"


def test_committed_tables_keep_the_values_of_the_hand_built_report():
    """The report moved onto pandas: a few cells of the committed tables, as the earlier report rendered them."""
    committed = ROOT / "results"
    if not (committed / "REPORT.md").exists():
        pytest.skip("no committed result set")
    rows = lambda name: csv_rows((committed / name).read_text())  # noqa: E731
    t1 = rows("table_I_accuracy.csv")
    assert find(t1, data="digits", method="lct", groups=4, profile="smoke")[0]["ours_mean"] == "94.444444"
    assert find(t1, data="digits", method="bp", groups=1, profile="cpu", steps=400)[0]["ours_mean"] == "95.833333"
    assert find(t1, data="cifar10", model="resnet50", method="lct", groups=4)[0]["paper"] == "93.320000"
    arch = find(rows("table_VIII_complexity.csv"), data="cifar10", model="resnet50", submodel="Sub_3",
                profile="architecture")[0]
    assert (arch["params"], arch["critic_params"], arch["flops"]) == ("9797322", "1261706", "2218295296")
    v = find(rows("table_V_lstm_bpc.csv"), data="pytext", model="lstm2", method="lct")[0]
    assert (v["ours_mean"], v["unigram_bpc"]) == ("1.985680", "4.445617")
    rel = find(rows("related_methods.csv"), data="digits", model="resnet50", method="lct", groups=2)[0]
    assert (rel["test_acc_mean"], rel["time_over_bp"]) == ("98.333333", "1.039550")


def test_other_settings_and_repeats_are_never_averaged(tmp_path):
    """A run with `--steps` (another setting) stands apart from the profile's runs; repeats of one seed (the
    speed benchmark runs each configuration several times) count once, by their median run."""
    recs = [record("cifar10", "resnet50", "lct", 4, seed=0, acc=90.0), record("cifar10", "resnet50", "lct", 4, seed=1,
                                                                              acc=92.0),
            record("cifar10", "resnet50", "lct", 4, seed=2, acc=10.0, steps=40)]
    for i, sps in enumerate((900.0, 1300.0, 1000.0)):
        r = record("cifar10", "resnet50", "bp", 1, acc=None, distributed=True, time_s=128 * 100 / sps,
                   workers=workers(1))
        r["final"]["samples_per_s"] = sps
        r["_path"] = f"run{i}"
        recs.append(r)
    for i, r in enumerate(recs[:3]):
        r["_path"] = f"lct{i}"
    cs = cells(recs)
    lct = [g for g in cs if g.method == "lct"]
    assert sorted(len(g.runs) for g in lct) == [1, 2]
    assert {g.setting for g in lct} == {"width 0.125, batch 128, 100 steps, paper split",
                                        "width 0.125, batch 128, 40 steps, paper split"}
    assert sorted(g.values(lambda r: r["final"]["test_acc"]) for g in lct) == [[10.0], [90.0, 92.0]]
    (bp,) = [g for g in cs if g.method == "bp"]
    assert [r["final"]["samples_per_s"] for r in bp.runs] == [1000.0]
    assert bp.seeds_text == "0 (median of 3 runs)"


def test_cpu_memory_is_never_compared_with_the_papers_gpu_memory(results):
    files = render(results)
    rows = find(csv_rows(files["table_VI_memory.csv"]), data="cifar100", method="lct", groups=4, worker=1)
    assert rows[0]["measure"] == "peak RSS" and float(rows[0]["paper_mib"]) == 4659 and rows[0]["diff"] == ""


def test_fig7_has_a_row_per_pipeline_schedule_and_compares_on_as_many_workers(results):
    """A multi-stage schedule's record (4 groups on 2 workers) is its own row, beside LCT on 2 workers."""
    rec = record("cifar100", "resnet101", "gpipe", 4, acc=70.0, distributed=True, time_s=45.0,
                 schedule="interleaved1f1b-m8-v2", workers=workers(2))
    rec["config"]["distributed"] = {"world_size": 2}
    rec["config"]["extra"] = {"schedule": "interleaved1f1b", "microbatches": 8}
    path = results / "cpu" / "records" / "c100_r101_gpipe4_v2.json"
    path.write_text(json.dumps(rec))
    rows = csv_rows(render(results)["fig7_pipelined_bp.csv"])
    multi = find(rows, executor="parallel (interleaved1f1b-m8-v2)")[0]
    assert multi["groups"] == "4" and multi["lct_executor"] == "parallel (overlapped)"
    assert float(multi["gpipe_over_bp"]) == pytest.approx(45 / 60) and float(multi["lct_over_bp"]) == pytest.approx(40 / 60)
    assert find(rows, executor="parallel (gpipe-m4)")[0]["groups"] == "2"
