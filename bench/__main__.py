"""Command line: `python -m bench {run,sweep,speed,report,count,check-assumption1,list,calibrate,predict,predict-check,
download,overhead,gpu-check} ...`.

Exit status: 0 done; 2 a user error (bad input, missing data, a record or run in the way), printed on one
line, nothing written; 1 a run that failed (why, on one line; the record says `failed`); 3 a run whose loss
diverged (the record says `diverged`).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from methods import GroupRule, create_method, list_methods, load_plugins

from . import data, gpucheck, overhead
from .config import PRECISIONS, PROFILES, SPLIT_OBJECTIVES, RunConfig, check_out
from .errors import BenchError
from .exec.launch import run_distributed
from .exec.settings import DistConfig
from .predict import commands as predict_commands
from .speed import run_speed
from .sweep import run_sweep, summary_table
from .train.count import count, count_paper
from .train.loop import DIVERGED_EXIT, run
from .train.records import atomic_write_text, read_record


def run_config(args) -> RunConfig:
    """The RunConfig of `bench run`'s options (also what torchrun hands each worker)."""
    extra = _options(args.option)
    for flag, key in (("microbatches", "microbatches"), ("pp_schedule", "schedule")):  # aliases of gpipe's options
        if getattr(args, flag, None) is not None:
            extra[key] = getattr(args, flag)
    return RunConfig(method=args.method, groups=args.groups, model=args.model, data=args.data,
                     profile=args.profile, seed=args.seed, split_rule=args.split,
                     split_objective=args.split_objective, data_root=args.data_root,
                     out=args.out, resume=args.resume, device=args.device, threads=args.threads,
                     steps=args.steps, batch_size=args.batch_size, width=args.width, lr=args.lr,
                     eval_every=args.eval_every, assumption1_every=args.assumption1_every,
                     assumption1_batches=args.assumption1_batches, eval_limit=args.eval_limit,
                     final_eval_limit=args.final_eval_limit, classifier=args.classifier,
                     group_projection=args.group_projection, bn_momentum=args.bn_momentum, eval_bn=args.eval_bn,
                     hidden=args.hidden, bptt=args.bptt, precision=args.precision, channels_last=args.channels_last,
                     cudnn_benchmark=args.cudnn_benchmark, compile=args.compile, extra=extra,
                     plugins=list(args.plugin or []))


def _run(args) -> int:
    cfg = run_config(args)
    if args.executor == "distributed":
        path = run_distributed(cfg, DistConfig.from_dict(vars(args)))
    else:
        path = run(cfg, progress=not args.no_progress)
    print(path)
    return DIVERGED_EXIT if read_record(path)["status"] == "diverged" else 0


def _options(items: list[str] | None) -> dict:
    """`--option key=value` (repeatable): a method's options, typed by the method's declaration."""
    out = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise BenchError(f"--option wants key=value, got {item!r}")
        out[key] = value
    return out


def _sweep(args) -> None:
    base = RunConfig(data_root=args.data_root, out=args.out, threads=args.threads, device=args.device,
                     plugins=list(args.plugin or []))
    paths = run_sweep(args.grid, args.profile, args.seeds, base, progress=not args.no_progress, steps=args.steps)
    table = summary_table(paths)
    print(table)
    if args.table:
        atomic_write_text(Path(args.table), f"# Sweep `{args.grid}`, profile `{args.profile}`\n\n"
                          f"Records: `{args.out}/`. In-process executor (parallel time simulated).\n\n" + table)


def _speed(args) -> None:
    run_speed(args.profile, args.model, args.data, args.steps, args.warmup, args.split, args.device, args.out,
              args.data_root, args.only, repeats=args.repeats, plugins=list(args.plugin or []),
              predict=not args.no_predict)


def _report(args) -> None:
    from . import report  # pandas and matplotlib: only for the commands that draw

    load_plugins(args.plugin)  # a plugin's methods show with their own labels and colours
    for folder, flag, used in ((args.results, "--results", not args.no_tables), (args.plots, "--plots", not args.no_plots)):
        if used:
            check_out(folder, flag)
    targets = report.parse_targets(args.target)
    records = report.load_records(args.records or [args.results], required=True)
    figures = report.figure_names(records)
    if not args.no_tables:
        for path in report.write_tables(records, Path(args.results), figures=figures, prune=args.prune,
                                        targets=targets):
            print(path)
    if not args.no_plots:
        for path in report.render_plots(records, Path(args.plots), prune=args.prune, targets=targets):
            print(path)


def _count(args) -> None:
    if args.paper:
        paths = count_paper(args.out)
    else:
        paths = [count(RunConfig(method=args.method, groups=args.groups, model=args.model, data=args.data,
                                 profile=args.profile, width=args.width, out=args.out, hidden=args.hidden,
                                 bptt=args.bptt, plugins=list(args.plugin or [])))]
    for path in paths:
        print(path)


def _check_assumption1(args) -> int:
    from .report import check_assumption1  # pandas: only for the commands that read records

    return check_assumption1([Path(p) for p in args.records], from_step=args.from_step)


def _list(args) -> None:
    """Every registered method with what it declares: kind, feedback, backend, options."""
    load_plugins(args.plugin)
    for name in list_methods():
        m = create_method(name)
        kind = "group rule" if issubclass(m, GroupRule) else "whole-step rule"
        print(f"{name:10s} {m.description}")
        precision = "fp32, bf16, fp16" if m.autocast and m.loss_scaling else "fp32, bf16" if m.autocast else "fp32"
        print(f"{'':10s} {kind}; sends back: {m.feedback.value}; distributed backend: {m.backend.value}; "
              f"precision: {precision}")
        for key, o in m.options.items():
            print(f"{'':10s}   --option {key}={o.default!r}  {o.doc}")


def _download(args) -> None:
    data.download(args.dataset, data.resolve_data_root(args.data_root))


def _overhead(args) -> None:
    overhead.run_overhead(overhead.Setting(
        device=args.device, model=args.model, data=args.data, width=args.width, batch_size=args.batch_size,
        precision=args.precision, steps=args.steps, rounds=args.rounds, threads=args.threads,
        data_root=args.data_root, out=args.out))


def _gpu_check(args) -> int:
    sizes = gpucheck.Sizes.for_device(args.device, width=args.width, batch_size=args.batch_size, steps=args.steps,
                                      rounds=args.rounds)
    return gpucheck.run_gpu_check(sizes, args.out)


def _plugin(p: argparse.ArgumentParser) -> None:
    p.add_argument("--plugin", action="append", metavar="MODULE",
                   help="import a module or .py file whose @register_method classes join the registry (repeatable)")


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m bench", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="train one method, write one run record")
    r.add_argument("--method", required=True, help="registered method (see `python -m bench list`)")
    r.add_argument("--groups", "-k", type=int, default=None,
                   help="number of layer groups K (K-1 critics); default 1, one per layer for lstm2/3/4")
    r.add_argument("--model", default="resnet50", help="resnet50 | resnet101 | resnet182 | mlp | lstm2 | lstm3 | lstm4")
    r.add_argument("--data", default="digits",
                   help="digits | mnist | fashion_mnist | cifar10 | cifar100 (images); ptb | enwik8 | pytext (text)")
    r.add_argument("--profile", default="smoke", choices=PROFILES)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--split", default="paper",
                   help="paper (even blocks, the authors' cut) | balanced (FLOPs) | timed (measured seconds)")
    r.add_argument("--split-objective", default="slowest", choices=SPLIT_OBJECTIVES,
                   help="timed split: minimise the slowest group (default), or throughput: the cut the cost model "
                        "predicts fastest for the method, its critics and transfers included")
    r.add_argument("--data-root", default=None, help="data folder (default: $LCTBENCH_DATA or ./data)")
    r.add_argument("--out", default="runs", help="folder for records and checkpoints")
    r.add_argument("--resume", action="store_true", help="continue from the run's checkpoint")
    r.add_argument("--device", default="cpu")
    r.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    r.add_argument("--steps", type=int, default=None, help="override the profile's iterations")
    r.add_argument("--batch-size", type=int, default=None, help="override the profile's batch size")
    r.add_argument("--width", type=float, default=None, help="override the profile's width multiplier")
    r.add_argument("--lr", type=float, default=None, help="override the profile's initial SGD lr")
    r.add_argument("--eval-every", type=int, default=None, help="steps between evaluations and checkpoints")
    r.add_argument("--assumption1-every", type=int, default=None,
                   help="steps between Assumption-1 measurements (lct, dni); 0 = never")
    r.add_argument("--assumption1-batches", type=int, default=4,
                   help="batches each Assumption-1 point averages (the last ones trained on)")
    r.add_argument("--eval-limit", type=int, default=None,
                   help="test samples of the intermediate evaluations (default: the profile's cap)")
    r.add_argument("--final-eval-limit", type=int, default=None, help="test samples of the final evaluation (default: all)")
    fid = r.add_argument_group("the authors' choices where their code differs from the paper (README: notes on fidelity)")
    fid.add_argument("--classifier", default="pool", help="pool (global average pooling, He et al.) | flatten "
                     "(the authors: the last feature map flattened into the FC layer)")
    fid.add_argument("--group-projection", action="store_true",
                     help="a projection shortcut on the first block of every group (the authors' code)")
    fid.add_argument("--bn-momentum", type=float, default=None,
                     help="BatchNorm momentum, torch's convention (profile: paper 0.003 = TF decay 0.997, else 0.1)")
    fid.add_argument("--eval-bn", default="running",
                     help="running (BN's running statistics) | batch (each test batch's own, as LC(3).py)")
    r.add_argument("--hidden", type=int, default=None, help="LSTMs: override the profile's units per layer")
    r.add_argument("--bptt", type=int, default=None, help="LSTMs: override the profile's truncated-BPTT length")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")
    fast = r.add_argument_group("speed (recorded in the run's config; README: speed features)")
    fast.add_argument("--precision", default="fp32", choices=PRECISIONS,
                      help="fp32 | bf16 | fp16: torch.autocast (fp16 with a GradScaler per optimiser)")
    fast.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                      help="conv models in channels_last memory format (default: on for CUDA conv models)")
    fast.add_argument("--cudnn-benchmark", action=argparse.BooleanOptionalAction, default=None,
                      help="let cudnn time and pick its kernels (default: on for CUDA)")
    fast.add_argument("--compile", action="store_true",
                      help="torch.compile every group's body (eager, with a one-line warning, where it fails)")
    r.add_argument("--executor", default="inprocess", choices=("inprocess", "distributed"),
                   help="inprocess: all groups in this process; distributed: one worker process per group")
    r.add_argument("--schedule", default="lockstep", choices=("lockstep", "overlapped", "pipelined"),
                   help="distributed group rules: wait for each batch's feedback (lockstep), or go on with the "
                        "next batch (overlapped; `pipelined` is its old name)")
    r.add_argument("--threads-per-worker", type=int, default=1, help="distributed: torch threads per worker")
    r.add_argument("--option", action="append", metavar="KEY=VALUE",
                   help="a method option, repeatable (e.g. resist: local_iters=10; `python -m bench list` shows them)")
    _plugin(r)
    r.add_argument("--microbatches", type=int, default=None, help="gpipe: --option microbatches=M (default 4)")
    r.add_argument("--pp-schedule", default=None, help="gpipe: --option schedule=NAME, a torch.distributed.pipelining "
                   "schedule in lower case (gpipe, 1f1b, interleaved1f1b, loopedbfs, interleavedzerobubble, "
                   "zbvzerobubble, dualpipev: as this torch has them)")
    r.add_argument("--max-stale", type=int, default=2, help="overlapped: most forwards a feedback may lag")
    r.add_argument("--comm-timeout", dest="timeout_s", type=float, default=300.0,
                   help="distributed: seconds a worker waits on a peer (message, collective, barrier) before the run fails")
    r.add_argument("--eval-timeout", dest="eval_timeout_s", type=float, default=900.0,
                   help="distributed: seconds the others may wait on top of --comm-timeout while rank 0 evaluates")
    r.add_argument("--share-gpu", action="store_true",
                   help="distributed, --device cuda: workers share the visible GPUs (gloo, messages staged through "
                        "host memory): a functional run, never a speed measurement")
    r.set_defaults(func=_run)

    sp = sub.add_parser("speed", help="throughput of bp, ddp, gpipe, dni, lct on real workers (table + CSV)")
    sp.add_argument("--profile", default="cpu", choices=PROFILES)
    sp.add_argument("--model", default="resnet50")
    sp.add_argument("--data", default="digits", help="data set whose samples are used (default: offline digits)")
    sp.add_argument("--data-root", default=None)
    sp.add_argument("--split", default="paper",
                    help="paper | balanced | timed (measured once per K, the same cut for every method)")
    sp.add_argument("--steps", type=int, default=100, help="timed steps per configuration")
    sp.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    sp.add_argument("--repeats", type=int, default=3, help="runs per configuration (round after round); the median counts")
    sp.add_argument("--device", default="cpu", help="cpu (gloo, 1 thread per worker) or cuda (nccl, 1 GPU each)")
    sp.add_argument("--only", nargs="+", default=None, help="only these methods (bp-1-worker always runs)")
    sp.add_argument("--out", default="results", help="folder for speed-<profile>.csv/.md and the records")
    sp.add_argument("--no-predict", action="store_true", help="no cost-model prediction beside the measurements")
    _plugin(sp)
    sp.set_defaults(func=_speed)

    sw = sub.add_parser("sweep", help="run a named grid of runs (resumable), print a table")
    sw.add_argument("grid", help="smoke | digits | cifar10 | cifar100 | resnet182 | mlp | imagenet")
    sw.add_argument("--profile", default="smoke", choices=PROFILES)
    sw.add_argument("--seeds", type=int, nargs="+", default=[0])
    sw.add_argument("--data-root", default=None)
    sw.add_argument("--out", default="runs")
    sw.add_argument("--device", default="cpu")
    sw.add_argument("--threads", type=int, default=None)
    sw.add_argument("--table", default=None, help="also write the markdown table here")
    sw.add_argument("--steps", type=int, default=None, help="override the iterations (lr milestones follow)")
    sw.add_argument("--no-progress", action="store_true")
    _plugin(sw)
    sw.set_defaults(func=_sweep)

    rp = sub.add_parser("report", help="render the paper's tables (results/) and figures (plots/) from run records")
    rp.add_argument("--results", default="results", help="where the records are found and the tables go")
    rp.add_argument("--plots", default="plots", help="where the figures go")
    rp.add_argument("--records", nargs="+", default=None, help="record files or folders (default: --results)")
    rp.add_argument("--no-tables", action="store_true", help="figures only")
    rp.add_argument("--no-plots", action="store_true", help="tables only")
    rp.add_argument("--prune", action="store_true",
                    help="regenerating the whole set: also delete tables/figures this report wrote earlier that the "
                         "records no longer give (never a file it did not write)")
    rp.add_argument("--target", nargs="+", default=None, metavar="SPEC",
                    help="time-to-target: bp-1 (BP's final accuracy minus 1 point; the default), 85 (an accuracy), "
                         "bpc=bp+0.02 (BP's final BPC plus 0.02; the default), bpc=1.4")
    _plugin(rp)
    rp.set_defaults(func=_report)

    co = sub.add_parser("count", help="parameters and FLOPs per group and head of a network, no data, no training")
    co.add_argument("--paper", action="store_true", help="every network of the paper's Tables VIII and X")
    co.add_argument("--method", default="lct")
    co.add_argument("--groups", "-k", type=int, default=4)
    co.add_argument("--model", default="resnet50")
    co.add_argument("--data", default="cifar10", help="its declared input shape and classes are used")
    co.add_argument("--profile", default="paper", choices=PROFILES)
    co.add_argument("--width", type=float, default=None)
    co.add_argument("--hidden", type=int, default=None)
    co.add_argument("--bptt", type=int, default=None)
    co.add_argument("--out", default="runs")
    _plugin(co)
    co.set_defaults(func=_count)

    ca = sub.add_parser("check-assumption1", help="minimum mu_k and cosine per group; exit 1 where mu_k <= 0")
    ca.add_argument("records", nargs="+", help="record files (or folders of records)")
    ca.add_argument("--from-step", type=int, default=0, help="ignore measurements before this step")
    ca.set_defaults(func=_check_assumption1)

    ls = sub.add_parser("list", help="list the registered methods and what each declares")
    _plugin(ls)
    ls.set_defaults(func=_list)

    predict_commands.add_parsers(sub, _plugin)  # calibrate, predict, predict-check (the cost model)

    d = sub.add_parser("download", help="download a data set through torchvision (needs internet)")
    d.add_argument("dataset")
    d.add_argument("--data-root", default=None)
    d.set_defaults(func=_download)

    o = sub.add_parser("overhead", help="the suite's bp step against a plain PyTorch loop, interleaved (md + CSV)")
    od = overhead.Setting()  # its defaults
    o.add_argument("--device", default=od.device, help="cpu, cuda or cuda:N")
    o.add_argument("--model", default=od.model)
    o.add_argument("--data", default=None,
                   help="an image data set (default: digits on the CPU, synthetic_cifar, paper-shaped, on a GPU)")
    o.add_argument("--data-root", default=None)
    o.add_argument("--width", type=float, default=od.width, help="width multiplier of the ResNet")
    o.add_argument("--batch-size", type=int, default=od.batch_size)
    o.add_argument("--precision", default=od.precision, choices=PRECISIONS)
    o.add_argument("--steps", type=int, default=od.steps, help="steps per timed phase")
    o.add_argument("--rounds", type=int, default=od.rounds,
                   help="timed phases of each loop (suite, plain, plain again), who goes first rotating")
    o.add_argument("--threads", type=int, default=None,
                   help="torch intra-op threads (default: 1 on the CPU, where a shared core scatters timings; torch's "
                        "default on a GPU)")
    o.add_argument("--out", default=od.out, help="folder for overhead-<device>[-<precision>].md and .csv")
    o.set_defaults(func=_overhead)

    g = sub.add_parser("gpu-check", help="the prepared check for a GPU box: overhead, methods, 2 workers, memory "
                                         "(synthetic data, <= 8 min); --device cpu: a dry run at tiny sizes")
    g.add_argument("--device", default="cuda", help="cuda or cuda:N; cpu: a dry run at tiny sizes")
    g.add_argument("--width", type=float, default=None, help="override the width (default: 1, the paper's; "
                   "dry: 1/16)")
    g.add_argument("--batch-size", type=int, default=None, help="override the batch (default: 128; dry: 16)")
    g.add_argument("--steps", type=int, default=None, help="override the steps per phase (default: 10; dry: 2)")
    g.add_argument("--rounds", type=int, default=None, help="override the overhead's rounds (default: 5; dry: 2)")
    g.add_argument("--out", default="results", help="folder for gpu-check-<gpu>.md")
    g.set_defaults(func=_gpu_check)
    return p


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        """A bad option is one line too (argparse would print its usage first)."""
        print(f"error: {self.prog}: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


def main(argv: list[str] | None = None) -> int:
    try:
        args = parser().parse_args(argv)
    except SystemExit as e:  # --help, or a bad option (already said on one line)
        return e.code if isinstance(e.code, int) else 2
    try:
        rc = args.func(args)
    except BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # a run that crashed: its record says failed; say why in one line
        if os.environ.get("LCTBENCH_DEBUG"):
            raise
        print(f"failed: {type(e).__name__}: {' '.join(str(e).split())}", file=sys.stderr)
        return 1
    return rc or 0


if __name__ == "__main__":
    sys.exit(main())
