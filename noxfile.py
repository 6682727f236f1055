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


def _smoke(session: nox.Session, folder: str) -> None:
    session.run("python", "-m", "bench", "sweep", "smoke", "--profile", "smoke", "--no-progress",
                "--out", f"{folder}/records", "--table", f"{folder}/table.md", *session.posargs)


@nox.session(python=PYTHON)
def smoke(session: nox.Session) -> None:
    """Offline main job: train bp, dni, lct and joint (K=2..4) on the digits into runs/smoke/, print the table."""
    install(session)
    _smoke(session, "runs/smoke")


def _profile_args(session: nox.Session) -> tuple[str, list[str]]:
    """The profile (cpu unless `-- --profile X` is given) and the arguments with it spelled out."""
    args = list(session.posargs)
    if "--profile" not in args:
        args = ["--profile", "cpu", *args]
    return args[args.index("--profile") + 1], args


def _sweep(session: nox.Session, grid: str) -> None:
    install(session)
    profile, args = _profile_args(session)
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
    """Table III: the 300-150-10 MLP x bp, admm, dni_n1, lct_n1 on MNIST and CIFAR-10; default --profile cpu."""
    _sweep(session, "mlp")


@nox.session(python=PYTHON, default=False)
def local_learning(session: nox.Session) -> None:
    """InfoPro's Table 2 networks on CIFAR-10: ResNet-32/110 x bp, greedy (DGL's aux net), infopro, lct, dni at K=2/4/8; default --profile cpu."""
    _sweep(session, "local_learning")


@nox.session(python=PYTHON, default=False)
def imagenet(session: nox.Session) -> None:
    """Table I/IV ImageNet rows (ResNet-50/101 x bp, lct_n1..3, joint) from <data-root>/imagenet/{train,val}; default --profile cpu (64 px)."""
    _sweep(session, "imagenet")


# the digits example on real workers: (method, K, schedule), so that the parallel Fig. 5 and the time-to-target
# table have BP on one worker beside LCT, DNI, pipelined BP and DDP
DIGITS_DISTRIBUTED = [("bp", 1, "lockstep"), ("lct", 2, "overlapped"), ("dni", 2, "overlapped"), ("gpipe", 2, "lockstep"),
                      ("ddp", 2, "lockstep")]


@nox.session(python=PYTHON, default=False)
def digits(session: nox.Session) -> None:
    """The committed cpu-profile example: Table I's grid (+ joint) on the offline digits, and bp, lct, dni, gpipe, ddp on real workers."""
    _sweep(session, "digits")
    if _profile_args(session)[0] == "cpu":  # with the sweep's digits/cpu settings
        for method, k, schedule in DIGITS_DISTRIBUTED:
            session.run("python", "-m", "bench", "run", "--method", method, "--groups", str(k), "--data", "digits",
                        "--profile", "cpu", "--steps", "400", "--eval-every", "50", "--assumption1-every", "25",
                        "--executor", "distributed", "--schedule", schedule, "--out", "results/cpu/records")


@nox.session(python=PYTHON, default=False)
def example(session: nox.Session) -> None:
    """Regenerate the whole committed example (speed, smoke, digits, pytext, related, architecture, tables, plots): ~2 h on 2 cores."""
    install(session)
    _smoke(session, "results/smoke")
    for name in ("speed", "digits", "pytext_all", "related", "architecture", "tables", "plots"):
        session.notify(name)


@nox.session(python=PYTHON, default=False)
def architecture(session: nox.Session) -> None:
    """Count the paper's networks at full width (Tables VIII, X) into results/architecture/records (no data, no training)."""
    install(session)
    session.run("python", "-m", "bench", "count", "--paper", "--out", "results/architecture/records")


@nox.session(python=PYTHON, default=False)
def tables(session: nox.Session) -> None:
    """Render the paper's tables with ours beside them from results/**/records into results/*.md, *.csv (no training)."""
    install(session)
    session.run("python", "-m", "bench", "report", "--no-plots", "--prune", *session.posargs)


@nox.session(python=PYTHON, default=False)
def plots(session: nox.Session) -> None:
    """Draw the figures (Figs. 3, 5, 7, communication, accuracy vs FLOPs) from the records into plots/ (no training)."""
    install(session)
    session.run("python", "-m", "bench", "report", "--no-tables", "--prune", *session.posargs)


@nox.session(python=PYTHON, default=False)
def ptb_all(session: nox.Session) -> None:
    """Tables V/IX, Figs. 4/6: char-level PTB, 2/3/4-layer LSTMs x bp, lct (critic between every layer pair), + lct_n1 of lstm4; default --profile cpu."""
    _sweep(session, "ptb")
    _sweep(session, "ptb_fig6")


@nox.session(python=PYTHON, default=False)
def enwik8_all(session: nox.Session) -> None:
    """Table V: enwik8 (90M/5M/5M bytes), 2/3/4-layer LSTMs x bp, lct; default --profile cpu."""
    _sweep(session, "enwik8")


@nox.session(python=PYTHON, default=False)
def pytext_all(session: nox.Session) -> None:
    """The offline LSTM example: the ptb_all grid on the standard library's help text (not a paper data set)."""
    _sweep(session, "pytext")
    _sweep(session, "pytext_fig6")


@nox.session(python=PYTHON, default=False)
def speed(session: nox.Session) -> None:
    """Throughput on real workers: bp (1 worker, 1 and all threads), ddp, gpipe under every torch pipeline schedule, dni_n1, lct_n1 -> results/speed-cpu.csv."""
    install(session)
    session.run("python", "-m", "bench", "speed", *(session.posargs or ["--profile", "cpu"]))


@nox.session(python=PYTHON, default=False)
def overhead(session: nox.Session) -> None:
    """The suite's bp step against a plain PyTorch loop, interleaved (CPU by default, ~1 min) -> results/overhead-cpu.md, .csv."""
    install(session)
    session.run("python", "-m", "bench", "overhead", *session.posargs)


@nox.session(python=PYTHON, default=False)
def gpu_check(session: nox.Session) -> None:
    """The prepared check for a GPU box (<= 8 min, synthetic data): overhead fp32/bf16, five methods, 2 workers, NVML vs torch memory -> results/gpu-check-<gpu>.md."""
    install(session)
    session.run("python", "-m", "bench", "gpu-check", *session.posargs)


@nox.session(python=PYTHON, default=False)
def predict_check(session: nox.Session) -> None:
    """The cost model against the speed benchmark's real runs here (reads results/speed-cpu*, calibrates for seconds): predicted vs measured samples/s and comm share; exit 1 beyond 15%."""
    install(session)
    session.run("python", "-m", "bench", "predict-check", *(session.posargs or ["--speed", "results/speed-cpu.csv"]))


RELATED_RUNS = [  # (method, K or S workers, model, executor): the related-work comparison on the digits
    ("bp", 1, "resnet50", "inprocess"), ("lct", 2, "resnet50", "inprocess"), ("greedy", 2, "resnet50", "inprocess"),
    ("auxvar", 2, "resnet50", "inprocess"), ("lct", 4, "resnet50", "inprocess"), ("greedy", 4, "resnet50", "inprocess"),
    ("auxvar", 4, "resnet50", "inprocess"), ("bp", 1, "mlp", "inprocess"), ("lct", 2, "mlp", "inprocess"),
    ("admm", 2, "mlp", "inprocess"), ("bp", 1, "preact_resnet50", "inprocess"),
    ("localsgd", 2, "preact_resnet50", "inprocess"), ("resist", 2, "preact_resnet50", "inprocess"),
    ("localsgd", 4, "preact_resnet50", "inprocess"), ("resist", 4, "preact_resnet50", "inprocess"),
    ("localsgd", 2, "preact_resnet50", "distributed"), ("resist", 2, "preact_resnet50", "distributed"),
    # the seeds' methods of issue 11 (a fifth element: more arguments of `bench run`)
    ("asyncbp", 2, "resnet50", "inprocess"), ("asyncbp", 4, "resnet50", "inprocess"),
    ("asyncbp", 2, "resnet50", "distributed", ("--schedule", "overlapped")),
    ("blockadmm", 2, "resnet50", "inprocess"), ("blockadmm", 4, "resnet50", "inprocess"),
    ("blockadmm", 2, "mlp", "inprocess"), ("auxnet", 2, "resnet50", "inprocess"),
    ("auxnet", 4, "resnet50", "inprocess"), ("auxnet", 2, "resnet50", "distributed"),
    ("bp", 1, "resnet50", "distributed"),  # time / BP of the real-worker rows
]


@nox.session(python=PYTHON, default=False)
def related(session: nox.Session) -> None:
    """Related work on the digits (cpu profile, 300 steps): greedy/auxvar/blockadmm/auxnet/asyncbp vs bp/lct, admm and blockadmm (MLP), resist vs localsgd; asyncbp, auxnet, resist, localsgd also on real workers; then `nox -s tables`."""
    install(session)
    out = "results/related_cpu/records"
    for method, k, model, executor, *more in RELATED_RUNS:
        session.run("python", "-m", "bench", "run", "--method", method, "--groups", str(k), "--model", model,
                    "--executor", executor, "--data", "digits", "--profile", "cpu", "--steps", "300", "--threads", "1",
                    "--no-progress", "--out", out, *(more[0] if more else ()), *session.posargs)
    # their table is results/related_methods.md, rendered with the others by `nox -s tables`
