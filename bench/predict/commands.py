"""The cost model's commands (registered by bench/__main__.py):

    python -m bench calibrate --model resnet50 --data digits --profile cpu --threads 1 --out cal.json
    python -m bench predict --calibration cal.json --method bp lct dni gpipe ddp --link pcie --plot fig.png
    python -m bench predict-check --speed results/speed-cpu.csv          # = nox -s predict_check

Every prediction is labelled as one; bad input is one line (exit 2), nothing written.
"""
from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from methods import create_method, list_methods, load_plugins

from ..config import PROFILES, RunConfig
from ..errors import BenchError
from ..speed import latest_measurement, round_calibrations
from ..train.build import calibrate
from ..train.records import atomic_write_text
from .calibration import Calibration, stage_methods
from .shares import exchange_methods
from .check import TOLERANCE, check_speed, first_record, paper_check, speed_runs, speed_table, threads_of
from .link import PRESETS, LinkModel, parse_link
from .model import CUTS, Row, sweep
from .plot import draw
from .probe import measure_link

LINKS = (*PRESETS, "measured")


def _setting_args(p) -> None:
    p.add_argument("--model", default="resnet50")
    p.add_argument("--data", default="digits")
    p.add_argument("--profile", default="cpu", choices=PROFILES)
    p.add_argument("--data-root", default=None)
    p.add_argument("--width", type=float, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--threads", type=int, default=1, help="torch threads (one worker's)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--hidden", type=int, default=None)
    p.add_argument("--bptt", type=int, default=None)


def _link_args(p, default: str | None) -> None:
    p.add_argument("--link", default=default, help=f"{' | '.join(LINKS)}: nominal presets (bench/predict/link.py), "
                   "or the transfer probe on this machine")
    p.add_argument("--bandwidth", type=float, default=None, help="GB/s, one direction (replaces the link's)")
    p.add_argument("--latency", type=float, default=None, help="microseconds per message (replaces the link's)")


def add_parsers(sub, plugin) -> None:
    c = sub.add_parser("calibrate", help="measure the cost model's per-unit and per-boundary costs on this device")
    _setting_args(c)
    c.add_argument("--methods", nargs="+", default=None, help="methods whose boundary costs to measure (default: all "
                   "stage-backend group rules)")
    c.add_argument("--out", required=True, help="calibration JSON to write")
    plugin(c)
    c.set_defaults(func=_calibrate)

    p = sub.add_parser("predict", help="predicted throughput of methods on K workers (a cost model, not a measurement)")
    p.add_argument("--calibration", default=None,
                   help="a calibration JSON (default: calibrate now, in --model's setting)")
    _setting_args(p)
    p.add_argument("--method", nargs="+", required=True)
    p.add_argument("--groups", "-k", type=int, nargs="+", default=list(range(1, 17)), help="K values (default 1..16)")
    p.add_argument("--schedule", default="both", choices=("lockstep", "overlapped", "both"))
    p.add_argument("--max-stale", type=int, default=2)
    p.add_argument("--option", action="append", metavar="KEY=VALUE",
                   help="a method option, for the methods declaring it")
    p.add_argument("--steps", type=int, default=100, help="steps per simulated phase (drained at both ends)")
    p.add_argument("--split", default="paper", choices=CUTS, help="the cut for each K")
    _link_args(p, "gloo-local")
    p.add_argument("--out", default=None, help="write PREFIX.md and PREFIX.csv")
    p.add_argument("--plot", default=None, help="write the figure (Figs. 5 and 7 as predictions) here")
    plugin(p)
    p.set_defaults(func=_predict)

    k = sub.add_parser("predict-check", help="the cost model against the speed benchmark's real runs (and the paper)")
    k.add_argument("--speed", default="results/speed-cpu.csv", help="the speed CSV; its records beside it")
    k.add_argument("--calibration", default=None, help="default: the median of the calibrations the speed benchmark "
                   "took before its rounds, else calibrate now in the speed runs' setting")
    _link_args(k, "measured")
    k.add_argument("--tolerance", type=float, default=TOLERANCE, help="exit 1 if a prediction is off by more")
    k.add_argument("--gpu-calibration", default=None, help="a calibration recorded on a GPU: the paper check")
    k.add_argument("--gpu-link", default="pcie", choices=tuple(PRESETS), help="the paper check's link")
    k.add_argument("--out", default=None, help="also write the report (markdown) here")
    k.set_defaults(func=_predict_check)


def _setting(args) -> RunConfig:
    return RunConfig(method="bp", groups=1, model=args.model, data=args.data, profile=args.profile,
                     data_root=args.data_root, width=args.width, batch_size=args.batch_size, threads=args.threads,
                     device=args.device, hidden=args.hidden, bptt=args.bptt,
                     plugins=list(getattr(args, "plugin", None) or []))


def _method_classes(names: list[str] | None) -> list:
    every = [create_method(n) for n in list_methods()]
    return [create_method(n) for n in names] if names else stage_methods(every) + exchange_methods(every)


def _link(args, device: str) -> LinkModel:
    measured = measure_link(device) if args.link == "measured" else None
    return parse_link(args.link, args.bandwidth, args.latency, measured)


def _calibrate(args) -> None:
    load_plugins(args.plugin)
    if Path(args.out).is_dir():
        raise BenchError(f"--out {args.out} is a folder; give the calibration file's name")
    cal = calibrate(_setting(args), _method_classes(args.methods))
    cal.save(Path(args.out))
    b = cal.batch_size
    print(f"{args.out}: {cal.n} units, batch {b} (also {', '.join(map(str, cal.batches[1:]))}); forward "
          f"{1e3 * sum(cal.forward_s[b]):.1f} ms, backward {1e3 * sum(cal.backward_s[b]):.1f} ms, optimiser "
          f"{1e3 * sum(cal.optimizer_s):.1f} ms per step; boundary costs of {', '.join(cal.methods) or 'none'}; "
          f"share costs of {', '.join(cal.shares) or 'none'}; "
          f"load {cal.env['load_before']:.2f} -> {cal.env['load_after']:.2f}")


def _options(items: list[str] | None, methods: list[str]) -> dict[str, dict]:
    """`--option key=value` for every method that declares the key; a key none declares is one line."""
    given = dict(item.partition("=")[::2] for item in items or ())
    unknown = [k for k in given if not any(k in create_method(m).options for m in methods)]
    if unknown or any("=" not in item for item in items or ()):
        raise BenchError(f"--option: want key=value with keys the methods declare; got {', '.join(items or ())}")
    return {m: {k: v for k, v in given.items() if k in create_method(m).options} for m in methods}


def _predict(args) -> None:
    load_plugins(args.plugin)
    for name in args.method:
        create_method(name)  # unknown names: one line, before anything is measured
    if min(args.groups) < 1:
        raise BenchError(f"--groups must be >= 1, got {min(args.groups)}")
    options = _options(args.option, args.method)
    needed = [create_method(n) for n in dict.fromkeys(["bp", *args.method])]
    cal = Calibration.load(Path(args.calibration)) if args.calibration else calibrate(_setting(args), needed)
    link = _link(args, str(cal.setting.get("device", "cpu")))
    rows = sweep(cal, args.method, sorted(set(args.groups)), link, schedule=args.schedule, options=options,
                 steps=args.steps, max_stale=args.max_stale, cut=args.split)
    title = f"{_title(cal, link)}; {args.split} cut; phases of {args.steps} steps"
    md, csv_text = render_rows(rows, title)
    print(md)
    if args.out:
        atomic_write_text(Path(f"{args.out}.md"), md)
        atomic_write_text(Path(f"{args.out}.csv"), csv_text)
    if args.plot:
        draw(rows, Path(args.plot), title)
        print(args.plot)


def _title(cal: Calibration, link: LinkModel) -> str:
    s, e = cal.setting, cal.env
    return (f"calibration: {s.get('model')} on {s.get('data')}, profile {s.get('profile')}, batch {cal.batch_size}, "
            f"{e.get('gpu') or e.get('device')} with {s.get('threads') or e.get('threads')} thread(s), load "
            f"{e.get('load_before', 0):.2f} -> {e.get('load_after', 0):.2f}; link {link.text()}")


COLUMNS = ["method", "K", "schedule", "cut", "predicted samples/s", "vs BP on 1 device", "time reduction vs BP",
           "busy share per worker", "blocked share (mean/max)", "note"]
CSV_COLUMNS = ["method", "groups", "schedule", "bounds", "samples_per_s", "ratio_to_bp_1_device", "time_reduction_pct",
               "busy_share", "blocked_share", "error"]


def render_rows(rows: list[Row], title: str) -> tuple[str, str]:
    """The sweep as a markdown table (headed PREDICTED) and a CSV."""
    md = [f"# PREDICTED by the cost model (not measured)\n\n{title}\n", "| " + " | ".join(COLUMNS) + " |",
          "|" + "---|" * len(COLUMNS)]
    csv = [",".join(CSV_COLUMNS)]
    for r in rows:
        p = r.prediction
        look = create_method(r.method).look
        label = look.name(r.groups) if p is not None else f"{look.label} (K={r.groups})"
        if p is None:
            md.append(f"| {label} | {r.groups} | {r.schedule} | - | - | - | - | - | - | n/a: {r.error} |")
            csv.append(f"{r.method},{r.groups},{r.schedule},,,,,,,\"{r.error}\"")
            continue
        busy, blocked = p.busy_share, p.blocked_share
        cut = "/".join(str(b - a) for a, b in zip(p.bounds, p.bounds[1:]))
        md.append(f"| {label} | {r.groups} | {p.schedule} | {cut} | {p.samples_per_s:.1f} | {r.ratio:.3f} | "
                  f"{100 * (1 - 1 / r.ratio):.1f}% | {min(busy):.2f}-{max(busy):.2f} | "
                  f"{p.comm_share:.3f}/{max(blocked):.3f} | |")
        csv.append(f"{r.method},{r.groups},{p.schedule},{' '.join(map(str, p.bounds))},{p.samples_per_s:.3f},"
                   f"{r.ratio:.4f},{100 * (1 - 1 / r.ratio):.2f},{' '.join(f'{b:.4f}' for b in busy)},"
                   f"{' '.join(f'{b:.4f}' for b in blocked)},")
    return "\n".join(md) + "\n", "\n".join(csv) + "\n"


def _predict_check(args) -> int:
    speed = Path(args.speed)
    folder = speed.with_suffix("")
    if args.calibration:
        cal = Calibration.load(Path(args.calibration))
    elif (cal := round_calibrations(latest_measurement(folder))) is not None:
        pass  # the calibrations the benchmark took before its rounds: in the runs' own spells of the machine
    else:  # the speed runs' own setting, one worker's threads
        rec = first_record(folder)
        cfg = replace(RunConfig.from_dict(rec["config"]), method="bp", groups=1, extra={}, split_bounds=None,
                      split_rule="paper", threads=threads_of(rec), out=str(folder))
        methods = {r["config"]["method"] for rs in speed_runs(folder).values() for r in rs}
        cal = calibrate(cfg, [create_method(m) for m in sorted(methods | {"bp"})])
    link = _link(args, str(cal.setting.get("device", "cpu")))
    rows = check_speed(folder, cal, link)
    gpu = Calibration.load(Path(args.gpu_calibration)) if args.gpu_calibration else None
    text = (f"# Cost model vs measured: {folder}/ (records; its table: {speed.with_suffix('.md')})\n\n"
            f"PREDICTED from the {_title(cal, link)}; each run's own cut and timed steps. Load now: "
            f"{os.getloadavg()[0]:.2f}. Tolerance: {100 * args.tolerance:.0f}%.\n\n"
            + speed_table(rows, args.tolerance) + "\n" + paper_check(gpu, PRESETS[args.gpu_link]))
    print(text)
    if args.out:
        atomic_write_text(Path(args.out), text)
    off = [r.label for r in rows if r.error is not None and abs(r.error) > args.tolerance]
    if off:
        print(f"predict-check: {len(off)} configuration(s) off by more than {100 * args.tolerance:.0f}%: "
              f"{', '.join(off)}")
    return 1 if off else 0
