"""Named grids of runs (the paper's tables), run one after another, resumable.

`python -m bench sweep smoke` runs bp, dni, lct and joint with K=2..4 on the digits and prints a
markdown table; `python -m bench sweep cifar10 --profile cpu` runs Table I's CIFAR-10 grid.
A rerun skips completed records and resumes unfinished ones from their checkpoints.
Tables and figures are rendered from the records afterwards by `python -m bench report`.
"""
from __future__ import annotations

import itertools
from dataclasses import replace
from pathlib import Path

from .config import RunConfig, differing_settings, prepare
from .errors import BenchError
from .train.loop import run
from .train.records import read_record

# Table I's columns (bp, dni_n1..3, lct_n1..3; K = n + 1 groups) plus Table IV's joint (LCT_n3 structure).
TABLE1_METHODS = [("bp", 1)] + [(m, k) for m in ("dni", "lct") for k in (2, 3, 4)] + [("joint", 4)]

# The local-learning peers on their own networks (InfoPro's Table 2): E2E, DGL (greedy with DGL's auxiliary
# net), InfoPro, and LCT and DNI beside them, K = 2, 4, 8 (an entry may carry the method's options).
LOCAL_METHODS = [("bp", 1)] + [(m, k, o) for m, o in (("greedy", {"head": "dgl"}), ("infopro", {}), ("lct", {}),
                                                      ("dni", {})) for k in (2, 4, 8)]

LSTM_MODELS = ("lstm2", "lstm3", "lstm4")
LSTM_METHODS = [("bp", 1), ("lct", None)]

# name -> (data sets, models, (method, K) pairs or (method, K, options) triples)
GRIDS = {
    "smoke": (("digits",), ("resnet50",),
              [("bp", 1)] + [(m, k) for m in ("dni", "lct", "joint") for k in (2, 3, 4)]),
    # The committed cpu-profile example: Table I's grid on the only real data offline (sklearn digits).
    "digits": (("digits",), ("resnet50",), TABLE1_METHODS),
    "cifar10": (("cifar10",), ("resnet50", "resnet101"), TABLE1_METHODS),
    "cifar100": (("cifar100",), ("resnet50", "resnet101"), TABLE1_METHODS),
    "resnet182": (("cifar10", "cifar100"), ("resnet182",), [("bp", 1)] + [("lct", k) for k in (2, 3, 4)]),
    "mlp": (("mnist", "cifar10"), ("mlp",), [("bp", 1), ("admm", 2), ("dni", 2), ("lct", 2)]),
    # Table I/IV ImageNet rows (Table I has no DNI on ImageNet; Table II's ResNet-182 is not in this grid).
    "imagenet": (("imagenet",), ("resnet50", "resnet101"),
                 [("bp", 1)] + [("lct", k) for k in (2, 3, 4)] + [("joint", 4)]),
    # Tables V and IX (LSTMs): bp, and lct with a critic between every pair of layers (K None: one group per
    # layer, LCT_n(L-1)); *_fig6 adds LCT_n1 of the 4-layer LSTM (Figs. 4 and 6). pytext: offline stand-in.
    "ptb": (("ptb",), LSTM_MODELS, LSTM_METHODS),
    "ptb_fig6": (("ptb",), ("lstm4",), [("lct", 2)]),
    "enwik8": (("enwik8",), LSTM_MODELS, LSTM_METHODS),
    "pytext": (("pytext",), LSTM_MODELS, LSTM_METHODS),
    "pytext_fig6": (("pytext",), ("lstm4",), [("lct", 2)]),
    "local_learning": (("cifar10",), ("resnet32", "resnet110"), LOCAL_METHODS),
}

# Per (grid, profile): other data sets than the grid's (ImageNet at 64 px below the paper profile).
GRID_DATA: dict[tuple[str, str], tuple[str, ...]] = {
    ("imagenet", "cpu"): ("imagenet64",),
    ("imagenet", "smoke"): ("imagenet64",),
}

# Per (grid, profile) settings that differ from the profile's defaults, so that a grid fits its machine.
# digits at cpu: 8 runs of ResNet-50/8 on a shared 2-core box in ~20 minutes (the profile's 1000 steps
# would take over an hour); the digits reach ~98% test accuracy within 100 steps anyway.
GRID_OVERRIDES: dict[tuple[str, str], dict] = {
    ("digits", "cpu"): dict(steps=400, eval_every=50, assumption1_every=25),
    # InfoPro's own CIFAR-10 training (train.py): 160 epochs of 49 batches of 1024, SGD Nesterov lr 0.8, L2 1e-4;
    # the lr x0.1 at epochs 80 and 120 (their step schedule; their Table 2 runs used --cos_lr, a cosine we lack)
    ("local_learning", "paper"): dict(batch_size=1024, steps=160 * 49, lr=0.8, weight_decay=1e-4,
                                      milestones=(80 * 49, 120 * 49), eval_every=49 * 10, assumption1_every=49 * 10),
}


def grid_configs(name: str, profile: str, seeds: list[int], base: RunConfig,
                 steps: int | None = None) -> list[RunConfig]:
    """Every run of a grid (data x model x (method, K) x seed), with the grid's overrides and `steps`."""
    if name not in GRIDS:
        raise BenchError(f"unknown sweep {name!r}; valid sweeps: {', '.join(GRIDS)}")
    data_sets, models, methods = GRIDS[name]
    data_sets = GRID_DATA.get((name, profile), data_sets)
    overrides = dict(GRID_OVERRIDES.get((name, profile), {}))
    if steps is not None:
        if steps < 1:
            raise BenchError(f"--steps must be positive, got {steps}")
        overrides["steps"] = steps
        if overrides.get("eval_every"):
            overrides["eval_every"] = min(overrides["eval_every"], steps)
    if steps is not None:
        overrides.pop("milestones", None)
    # lr milestones are left to the config (1/2 and 3/4 of the steps actually run) unless the grid gives them
    return [replace(base, data=d, model=m, method=entry[0], groups=entry[1], profile=profile, seed=s, resume=True,
                    extra={**base.extra, **(entry[2] if len(entry) > 2 else {})}, **overrides)
            for d, m, entry, s in itertools.product(data_sets, models, methods, seeds)]


def _place(cfg: RunConfig, tell) -> RunConfig:
    """cfg, or cfg tagged with its settings where a record of other settings holds its run id (that record is
    left alone and this entry runs into its own)."""
    path = Path(cfg.out) / f"{cfg.run_id}.json"
    if not path.exists():
        return cfg
    previous = read_record(path)
    probe = replace(cfg, split_bounds=cfg.split_bounds or previous["config"].get("split_bounds"))
    diff = differing_settings(previous["config"], probe.to_dict())
    if not diff:
        return cfg
    tagged = replace(cfg, tag=cfg.settings_hash())
    tell(f"{path.name} has other settings (differs in: {', '.join(diff)}); this entry runs into "
         f"{tagged.run_id}.json")
    return tagged


def run_sweep(name: str, profile: str, seeds: list[int], base: RunConfig, progress: bool = True,
              steps: int | None = None) -> list[Path]:
    """Run every configuration of a grid; a failed run is recorded and the sweep goes on.

    Resumable: a completed (or diverged) record of the entry's settings is skipped, an unfinished one
    resumes from its checkpoint, so rerunning the same command finishes the rest. A record of other settings
    under the same run id is left alone; the entry runs into a record of its own. An unreadable record is
    reported and the sweep goes on with the other entries."""
    configs = [prepare(c) for c in grid_configs(name, profile, seeds, base, steps)]  # all checked before any run
    paths = []
    for i, cfg in enumerate(configs, 1):
        head = f"[{i}/{len(configs)}] {cfg.run_id}"
        try:
            cfg = _place(cfg, lambda text: print(f"{head}: {text}", flush=True))
            path = Path(cfg.out) / f"{cfg.run_id}.json"
            if path.exists() and read_record(path)["status"] in ("completed", "diverged"):
                print(f"{head}: done, skipped", flush=True)
                paths.append(path)
                continue
            print(head, flush=True)
            paths.append(run(cfg, progress=progress))
        except BenchError as e:  # an unreadable record or checkpoint, a run already going: this entry only
            print(f"{head}: error: {e}", flush=True)
        except Exception as e:  # recorded as failed by the runner; keep going
            print(f"{head}: failed: {type(e).__name__}: {e}", flush=True)
            paths.append(Path(cfg.out) / f"{cfg.run_id}.json")
    return paths


def summary_table(paths: list[Path]) -> str:
    """Markdown: one row per record, with the profile and data named (never passed off as the paper's). Text
    runs (the LSTMs) show bits per character, image runs test accuracy."""
    records = [read_record(p) for p in paths if Path(p).exists()]
    text = any(r["final"].get("test_bpc") is not None for r in records)
    metric, sub = ("test BPC", "sub-model BPC") if text else ("test acc (%)", "sub-model acc (%)")
    rows = [f"| data | model | method | K | profile | seed | status | {metric} | {sub} | train time (s) | steps |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        c, f = r["config"], r["final"]
        value, subs, digits = (f.get("test_bpc"), f.get("sub_bpc"), 3) if text else (f.get("test_acc"), f.get("sub_acc"), 2)
        main = f"{value:.{digits}f}" if value is not None else "-"
        subs = " / ".join(f"{a:.{digits}f}" for a in subs or []) or "-"
        t = f"{f['train_time_s']:.1f}" if f.get("train_time_s") is not None else "-"
        rows.append(f"| {c['data']} | {c['model']} | {c['method']} | {c['groups']} | {c['profile']} | {c['seed']} "
                    f"| {r['status']} | {main} | {subs} | {t} | {f.get('steps', '-')} |")
    return "\n".join(rows) + "\n"
