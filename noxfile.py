"""Sessions: `nox -s smoke` (offline main job), `nox -s tests`, and the paper's sweeps.

Arguments after `--` go to the command, e.g. `nox -s cifar10_all -- --profile paper --seeds 0 1 2`.
Every session installs torch through constraints.txt, so a CPU machine keeps the CPU build.
"""
from __future__ import annotations

import nox

nox.options.sessions = ["smoke", "tests"]
nox.options.reuse_existing_virtualenvs = True

PYTHON = None  # the interpreter nox runs under


def install(session: nox.Session, extras: str = "") -> None:
    session.install("-c", "constraints.txt", "-e", f".{extras}")


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """Run the test suite (fast tests; slow ones are in `tests_slow`)."""
    install(session, "[test]")
    session.run("pytest", "-q", *session.posargs)


@nox.session(python=PYTHON, default=False)
def tests_slow(session: nox.Session) -> None:
    """Run only the slow tests (learning at the cpu profile, long distributed runs)."""
    install(session, "[test]")
    session.run("pytest", "-q", "-m", "slow", *session.posargs)


@nox.session(python=PYTHON)
def smoke(session: nox.Session) -> None:
    """Offline main job: bp, dni, lct and joint with K=2..4 on the digits, then a markdown table."""
    install(session)
    session.run("python", "-m", "bench", "sweep", "smoke", "--profile", "smoke", "--no-progress",
                "--out", "results/smoke/records", "--table", "results/smoke/table.md", *session.posargs)


def _sweep(session: nox.Session, grid: str) -> None:
    install(session)
    args = list(session.posargs) or ["--profile", "cpu"]
    profile = args[args.index("--profile") + 1] if "--profile" in args else "cpu"
    session.run("python", "-m", "bench", "sweep", grid, "--out", f"results/{profile}/records",
                "--table", f"results/{profile}/{grid}.md", *args)


@nox.session(python=PYTHON, default=False)
def cifar10_all(session: nox.Session) -> None:
    """Table I/IV grid on CIFAR-10 (ResNet-50/101 x bp, dni_n1..3, lct_n1..3, joint); default --profile cpu."""
    _sweep(session, "cifar10")


@nox.session(python=PYTHON, default=False)
def cifar100_all(session: nox.Session) -> None:
    """Table I/IV grid on CIFAR-100; default --profile cpu."""
    _sweep(session, "cifar100")


@nox.session(python=PYTHON, default=False)
def resnet182(session: nox.Session) -> None:
    """Table II: ResNet-182 x bp, lct_n1..3 on CIFAR-10/100; default --profile cpu."""
    _sweep(session, "resnet182")


@nox.session(python=PYTHON, default=False)
def mlp(session: nox.Session) -> None:
    """Table III: the 300-150-10 MLP x bp, dni_n1, lct_n1 on MNIST and CIFAR-10; default --profile cpu."""
    _sweep(session, "mlp")
