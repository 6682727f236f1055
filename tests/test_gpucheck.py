"""`python -m bench gpu-check`: its CPU dry run, its budgets, its refusals, and what it may import on a GPU box."""

import ast
import sys
import time
from pathlib import Path

import pytest
import torch

from bench import gpucheck
from bench.__main__ import main
from bench.data.synthetic import SOURCE
from helpers import md_rows

ROOT = Path(__file__).resolve().parent.parent
# what the GPU box's python3 has (README: the GPU check); PIL comes with matplotlib, torchvision only for `download`
GPU_BOX = {"torch", "numpy", "pandas", "matplotlib", "pynvml", "tqdm", "sklearn", "tabulate", "pytest", "PIL",
           "torchvision"}


def section(text: str, title: str) -> str:
    """The markdown between `## title...` and the next `## `."""
    start = text.index(f"## {title}")
    end = text.find("\n## ", start + 1)
    return text[start:end if end != -1 else len(text)]


def numbers(rows: list[list[str]], column: int) -> list[float]:
    return [float(r[column]) for r in rows[1:]]  # rows[0] is the header


def test_dry_run_on_the_cpu_writes_every_section_with_real_numbers(tmp_path, threads, capsys):
    out = tmp_path / "results"
    assert main(["gpu-check", "--device", "cpu", "--out", str(out)]) == 0, capsys.readouterr()
    assert [p.name for p in out.iterdir()] == ["gpu-check-cpu.md"]  # records and logs went to a temporary folder
    text = (out / "gpu-check-cpu.md").read_text()
    assert text.startswith(gpucheck.TITLE) and SOURCE in text and "a dry run on the CPU" in text
    assert f"torch {torch.__version__}" in text and "python3 -m bench gpu-check --device cpu" in text
    parts = md_rows(section(text, "Parts"))
    assert len(parts) == 1 + 2 + len(gpucheck.METHODS) + 2 and all(r[3] == "ok" for r in parts[1:]), parts
    a = md_rows(section(text, "(a)"))
    assert [r[0] for r in a[1:]] == ["fp32", "bf16"] and min(numbers(a, 1) + numbers(a, 2) + numbers(a, 3)) > 0
    assert all(r[4] in ("PASS", "FAIL") and r[6] in ("PASS", "FAIL") for r in a[1:])
    assert "bf16 speed-up over fp32: plain loop" in section(text, "(a)")
    b = md_rows(section(text, "(b)"))
    assert [r[0] for r in b[1:]] == [m for m, _ in gpucheck.METHODS]
    assert min(numbers(b, 2) + numbers(b, 3) + numbers(b, 4)) > 0
    c = md_rows(section(text, "(c)"))
    assert len(c) == 2 and c[1][-1] == "completed" and float(c[1][2]) > 0
    d = md_rows(section(text, "(d)"))
    assert [r[0] for r in d[1:]] == ["0", "1"] and min(numbers(d, 6)) > 0  # peak RSS of each worker
    assert all(r[2] == "n/a" for r in d[1:])  # no NVML reading on the CPU, and none made up


def test_cuda_on_a_machine_without_it_is_one_line_exit_2(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert main(["gpu-check", "--out", str(tmp_path / "results")]) == 2  # --device cuda is the default
    err = capsys.readouterr().err
    assert "no CUDA device" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("argv, needle", [
    (["--rounds", "0"], "--rounds must be"), (["--steps", "0"], "--steps must be"), (["--width", "0"], "--width must be"),
    (["--batch-size", "0"], "--batch-size must be"), (["--device", "gpu"], "unknown device")])
def test_bad_sizes_are_refused_before_anything_runs(tmp_path, argv, needle, capsys):
    assert main(["gpu-check", "--device", "cpu", *argv, "--out", str(tmp_path / "r")]) == 2
    assert needle in capsys.readouterr().err and not (tmp_path / "r").exists()


def test_a_failing_part_is_a_row_and_the_check_goes_on():
    parts = gpucheck.Parts(torch.device("cpu"))
    assert parts.run("broken", 10, lambda: 1 / 0) is None
    assert parts.run("fine", 10, lambda: 42) == 42
    parts.deadline = time.monotonic()  # the check's total spent
    assert parts.run("late", 10, lambda: 42) is None
    (name, _, _, broken), fine, late = parts.rows
    assert broken == "failed: ZeroDivisionError: division by zero" and fine[3] == "ok" and late[3].startswith("skipped")
    assert parts.failed == 2


def test_a_part_past_its_budget_is_stopped():
    t0 = time.monotonic()
    with pytest.raises(gpucheck.OverBudget, match="budget of 0 s"):
        with gpucheck.budget(0.2):
            time.sleep(5)
    assert time.monotonic() - t0 < 2
    assert isinstance(gpucheck.OverBudget(), KeyboardInterrupt)  # so a distributed run stops its workers


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_python_m_bench_imports_only_what_the_gpu_box_has():
    """The GPU box runs `python3 -m bench gpu-check` from a plain working tree with no install: nothing in bench/
    or methods/ may import beyond its packages and the standard library."""
    used = set().union(*(_imports(p) for folder in ("bench", "methods") for p in (ROOT / folder).rglob("*.py")))
    foreign = used - GPU_BOX - set(sys.stdlib_module_names) - {"bench", "methods", "__future__"}
    assert not foreign, f"imports the GPU box lacks: {sorted(foreign)}"
