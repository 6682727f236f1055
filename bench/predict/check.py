"""Validated, not asserted: the cost model against real runs (`python -m bench predict-check`,
`nox -s predict_check`).

1. Against the speed benchmark's real workers on this machine: every configuration's median run
   (results/speed-<profile>/<configuration>/run*/; the same median the CSV reports) is predicted from a
   calibration of this device in the runs' setting (measured now, a few seconds, unless one is given)
   over the measured link (the transfer probe) or a given one, with the run's own cut and timed steps;
   predicted and measured samples/s and communication share are printed with the relative error. A
   configuration off by more than `tolerance` makes the exit status 1. Runs with another number of
   threads per worker than the calibration's are listed, not predicted.
2. Against the paper: with a calibration recorded on a GPU (`python -m bench calibrate --device cuda
   --profile paper --data cifar10 --model resnet101 ...`), LCT_n1 and LCT_n3's time reductions beside
   the paper's Fig. 5 values. The paper's GTX 1080 Ti per-layer timings are not published and none are
   made up here: without a GPU calibration this part is skipped, saying so.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import BenchError
from ..exec.settings import SCHEDULE_ALIASES
from ..report import paper as P
from ..speed import latest_measurement, median_run
from ..train.records import read_record
from .calibration import Calibration
from .link import LinkModel
from .model import predict, predict_record

TOLERANCE = 0.15  # the acceptance: every 2-worker configuration within 15%


def speed_runs(folder: Path) -> dict[str, list[dict]]:
    """Completed records per configuration folder of the newest measurement
    (results/speed-<profile>/<start time>/<label>/run<i>/*.json)."""
    runs: dict[str, list[dict]] = {}
    for path in sorted(latest_measurement(folder).glob("*/run*/*.json")):
        rec = read_record(path)
        if rec.get("status") == "completed" and rec.get("workers"):
            runs.setdefault(path.parent.parent.name, []).append(rec)
    if not runs:
        raise BenchError(f"no completed speed records under {folder} (run `nox -s speed` first)")
    return runs


def threads_of(rec: dict) -> int:
    return int((rec["config"].get("distributed") or {}).get("threads_per_worker") or rec["config"].get("threads") or 1)


def measured_comm(rec: dict) -> float:
    shares = [w["comm_share"] or 0.0 for w in rec["workers"]]
    return sum(shares) / len(shares)


@dataclass
class Checked:
    label: str
    schedule: str
    measured_sps: float
    measured_comm: float
    predicted_sps: float | None = None
    predicted_comm: float | None = None
    note: str = ""
    runs: tuple[float, float] = (0.0, 0.0)  # the slowest and the fastest run's samples/s: the measurement's own spread

    @property
    def error(self) -> float | None:
        return None if self.predicted_sps is None else self.predicted_sps / self.measured_sps - 1


def check_speed(folder: Path, cal: Calibration, link: LinkModel) -> list[Checked]:
    out = []
    for label, runs in sorted(speed_runs(folder).items()):
        rec = median_run(runs)
        schedule = SCHEDULE_ALIASES.get(rec.get("schedule", ""), rec.get("schedule", ""))
        every = sorted(r["final"]["samples_per_s"] for r in runs)
        row = Checked(label, schedule, rec["final"]["samples_per_s"], measured_comm(rec), runs=(every[0], every[-1]))
        if threads_of(rec) != int(cal.setting.get("threads") or 1):
            row.note = f"{threads_of(rec)} threads per worker; the calibration has {cal.setting.get('threads')}"
        else:
            try:
                p = predict_record(cal, rec, link)
                row.predicted_sps, row.predicted_comm = p.samples_per_s, p.comm_share
            except BenchError as e:  # a backend the model does not cover yet: a row that says so
                row.note = f"not modelled: {e}"
        out.append(row)
    return out


def speed_table(rows: list[Checked], tolerance: float) -> str:
    lines = ["| configuration | schedule | measured samples/s | its runs (slowest-fastest) | predicted | error | measured "
             "comm share | predicted comm share | within tolerance |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        pred = "-" if r.predicted_sps is None else f"{r.predicted_sps:.1f}"
        err = "-" if r.error is None else f"{100 * r.error:+.1f}%"
        comm = "-" if r.predicted_comm is None else f"{r.predicted_comm:.3f}"
        ok = r.note or ("yes" if abs(r.error) <= tolerance else "NO")
        lines.append(f"| {r.label} | {r.schedule} | {r.measured_sps:.1f} | {r.runs[0]:.0f}-{r.runs[1]:.0f} | {pred} | "
                     f"{err} | {r.measured_comm:.3f} | {comm} | {ok} |")
    return "\n".join(lines) + "\n"


def first_record(folder: Path) -> dict:
    """A one-thread, one-worker record of the speed runs: the setting a calibration must match."""
    runs = speed_runs(folder)
    recs = [r for rs in runs.values() for r in rs]
    ones = [r for r in recs if threads_of(r) == 1]
    return (ones or recs)[0]


def paper_check(cal: Calibration | None, link: LinkModel) -> str:
    """LCT_n1 / LCT_n3 predicted time reductions vs BP beside the paper's Fig. 5, from a GPU calibration."""
    if cal is None:
        return ("Paper check skipped: no GPU calibration. This machine has no GPU, and the paper's per-layer "
                "timings on its GTX 1080 Ti machines are not published; none are made up. Record one on a GPU with "
                "`python -m bench calibrate --device cuda --profile paper --data cifar10 --model resnet101 "
                "--methods bp lct --out calibration-gpu.json` and pass `--gpu-calibration calibration-gpu.json`.\n")
    data, model = cal.setting.get("data"), cal.setting.get("model")
    bp = predict(cal, "bp", 1, link).samples_per_s
    lines = [f"Paper check (Fig. 5, {data} {model}; calibration on {cal.env.get('gpu') or cal.env.get('device')}, "
             f"link {link.text()}; predicted, LCT with the paper's cut):", "",
             "| method | schedule | predicted reduction vs BP | paper |", "|---|---|---|---|"]
    for k, name in ((2, "LCT_n1"), (4, "LCT_n3")):
        pv = P.paper_value("time", data, model, "lct", k, "reduction")
        for schedule in ("lockstep", "overlapped"):
            p = predict(cal, "lct", k, link, schedule=schedule)
            lines.append(f"| {name} | {schedule} | {100 * (1 - bp / p.samples_per_s):.1f}% | "
                         f"{'—' if pv is None else f'{pv:.1f}%'} |")
    return "\n".join(lines) + "\n"
