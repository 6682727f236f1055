"""Figures from run records (matplotlib, Agg): the paper's Figs. 3/4, 5, 6, 7, communication share,
accuracy vs training wall-clock with the time to target (tta.py), and accuracy vs FLOPs of the
sub-models. Nothing is trained; `plan()` says which files the records give (REPORT.md lists them
without drawing), `render()` draws them. Colours and labels are the
methods' own (their declared look).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from methods import create_method

from ..errors import BenchError
from . import paper as P
from .assumption1 import assumption1_minima
from .frame import DATA_NAMES, Cell, label, mean_std, paper_data, sort_key
from .lstm import is_lstm
from .resources import counted_split, submodels
from .timing import bp_of, critical_path_share, fig7_ratios, train_time, workers_of
from .tta import DEFAULT_TARGETS, Target, bp_reference, final_value, time_to

GROUP_COLORS = ["#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d", "#666666"]
K_STYLES = {1: "-", 2: "-", 3: "--", 4: "-.", 5: ":"}


def color(method: str) -> str:
    try:
        return create_method(method).look.color
    except BenchError:  # a plugin's method whose module is not loaded
        return "#999999"


def base_label(method: str) -> str:
    try:
        return create_method(method).look.label
    except BenchError:
        return method


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"figure.dpi": 110, "axes.grid": True, "grid.alpha": 0.3, "axes.spines.top": False,
                         "axes.spines.right": False, "font.size": 9, "legend.fontsize": 8,
                         "axes.titlesize": 10, "svg.hashsalt": "lct"})
    return plt


def _save(fig, path: Path) -> None:
    """Save through a temporary file and rename, so a killed report never leaves half a picture."""
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fig.savefig(tmp, format="png", bbox_inches="tight", metadata={"Software": None})
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
        plt.close(fig)


def _subtitle(profile: str, data: str, model: str, executor: str | None = None) -> str:
    ex = ""
    if executor == "simulated":
        ex = "in-process executor: time simulated (groups run one after another)"
    elif executor and executor.startswith("parallel"):
        sched = executor[len("parallel"):].strip(" ()")
        ex = "distributed executor, one worker per group: parallel time" + (f"; {sched}" if sched else "")
    return (f"profile: {profile} · data: {DATA_NAMES.get(data, data)} · model: {model}"
            + (f"\n{ex}" if ex else "") + ("" if profile == "paper" else " · scaled down: not a reproduction"))


def _time_kind(executor: str) -> str:
    """The subtitle's kind of time for a figure of runs like this one: its parallel runs may have several schedules
    (the legend gives each run's in [ ])."""
    return "simulated" if executor == "simulated" else "parallel (schedule in [ ])"


def _empty(path: Path, title: str, message: str) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 3.2))
    ax.set_axis_off()
    ax.set_title(title)
    ax.text(0.5, 0.5, message, ha="center", va="center", fontsize=11, color="#777777", wrap=True,
            transform=ax.transAxes, bbox=dict(boxstyle="round", fc="#f4f4f4", ec="#cccccc"))
    _save(fig, path)


# ---------------------------------------------------------------------------------------------------
# Fig. 3: Assumption 1 per group over training


FIG3_ROWS = (("mu", "μ_k = ⟨G_k, g_k⟩ / ‖G_k‖²"), ("cos", "cos(G_k, g_k)"),
             ("ratio", "‖g_k‖ / ‖G_k‖ (applied vs true)"))


def _fig3_panel(ax, g: Cell, field: str) -> None:
    """One quantity per group over training: the mean over each point's batches, its spread as a band."""
    runs = g.runs or g.records
    for r in runs:
        a1 = r.get("assumption1") or {}
        steps, vals, spread = a1.get("step") or [], a1.get(field) or [], a1.get(f"{field}_std")
        for k in range(len(vals[0]) - 1 if vals else 0):  # the last group is backprop: 1 by construction
            color = GROUP_COLORS[k % len(GROUP_COLORS)]
            mean = [v[k] for v in vals]
            ax.plot(steps, mean, color=color, lw=1.4, marker="o", ms=2.5,
                    label=f"group {k + 1}" if r is runs[0] else None)
            if spread:
                sd = [s_[k] for s_ in spread]
                ax.fill_between(steps, [m - d for m, d in zip(mean, sd)], [m + d for m, d in zip(mean, sd)],
                                color=color, alpha=0.18, lw=0)
    if field == "ratio":
        ax.set_yscale("log")


def fig3(groups: list[Cell], path: Path) -> None:
    """mu_k, cos and the norm ratio per group vs step, one column per K; each point the mean over the batches
    it measured, the band its spread (std)."""
    plt = _plt()
    gs = sorted(groups, key=lambda g: g.groups)
    rows = [(f, n) for f, n in FIG3_ROWS if f != "ratio" or any((r.get("assumption1") or {}).get("ratio")
                                                                for g in gs for r in g.records)]
    fig, axes = plt.subplots(len(rows), len(gs), figsize=(3.6 * len(gs) + 0.6, 2.8 * len(rows)), squeeze=False,
                             sharex="col")
    for col, g in enumerate(gs):
        for row, (field, name) in enumerate(rows):
            ax = axes[row][col]
            if field == "mu":
                ax.axhline(0, color="#aa0000", lw=1, ls="--", zorder=1, label="0 (condition: μ_k > 0)")
            _fig3_panel(ax, g, field)
            if row == 0:
                ax.set_title(f"{label(g.method, g.groups)} (K={g.groups})")
            if col == 0:
                ax.set_ylabel(name)
            if row == len(rows) - 1:
                ax.set_xlabel("training step")
            ax.legend(loc="best")
    paper_fig = "Fig. 4" if gs[0].model.startswith("lstm") else "Fig. 3"
    fig.suptitle(f"Assumption 1 over training (paper {paper_fig}) — {base_label(gs[0].method)}\n"
                 f"{_subtitle(gs[0].profile, gs[0].data, gs[0].model)}; last group (backprop, μ=1) not drawn; "
                 f"bands: spread over each point's batches", fontsize=9)
    fig.tight_layout()
    _save(fig, path)


# ---------------------------------------------------------------------------------------------------
# Fig. 5: train loss vs training wall-clock


def _reduction(g: Cell, bp: Cell | None, scale: Callable[[dict], float | None] | None = None) -> float | None:
    if bp is None or not bp.values(train_time) or not g.values(train_time):
        return None
    t = g.mean(train_time)
    if scale is not None:
        s = g.mean(scale)
        if s is None:
            return None
        t *= s
    return 100 * (1 - t / bp.mean(train_time))


def fig5(groups: list[Cell], path: Path) -> None:
    """Train loss vs training time per method; in-process: measured (serial) and FLOPs-estimated parallel."""
    plt = _plt()
    from matplotlib.ticker import FuncFormatter, NullFormatter

    gs = sorted(groups, key=sort_key)
    simulated = gs[0].executor == "simulated"
    panels = [("measured", None)] + ([("estimated", critical_path_share)] if simulated else [])
    fig, axes = plt.subplots(1, len(panels), figsize=(6.2 * len(panels), 4.4), squeeze=False)
    for ax, (kind, scale) in zip(axes[0], panels):
        for g in gs:
            if scale is not None and g.mean(scale) is None:
                continue
            red = _reduction(g, bp_of(gs, g), scale)
            pv = P.paper_value("time", paper_data(g.data), g.model, g.method, g.groups, "reduction")
            lab = label(g.method, g.groups) + ("" if simulated else f" [{g.executor[len('parallel '):].strip('()')}]")
            if g.method != "bp":
                lab += f": time {-red:+.1f}% vs BP" if red is not None else ": no BP record"
                lab += f" (paper −{pv:.1f}%)" if pv is not None else ""
            for i, r in enumerate(g.runs):
                c = r["curves"]
                s = (scale(r) or 1.0) if scale else 1.0
                ax.plot([t * s for t in c["train_time_s"]], c["train_loss"], color=color(g.method),
                        ls=K_STYLES.get(g.groups, "-"), lw=1.6 if g.method in ("bp", "lct") else 1.1,
                        alpha=0.95 if g.method in ("bp", "lct") else 0.7, label=lab if i == 0 else None)
        ax.set_xlabel("training wall-clock (s)" + (", serial in-process" if kind == "measured" and simulated else "")
                      + (" × slowest group's FLOPs share" if kind == "estimated" else ""))
        ax.set_ylabel("train loss (mean over eval interval)")
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))  # 0.01, 0.1, 1: decades only
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_title("measured" + (" (in-process: all groups on one device, no overlap)" if simulated else " (parallel)")
                     if kind == "measured" else "estimated parallel time (no communication, time ∝ FLOPs)")
        ax.legend(loc="upper right")
    g0 = gs[0]
    fig.suptitle(f"Loss vs training time (paper Fig. 5)\n"
                 f"{_subtitle(g0.profile, g0.data, g0.model, _time_kind(g0.executor))}", fontsize=9)
    fig.tight_layout()
    _save(fig, path)


# ---------------------------------------------------------------------------------------------------
# Time to accuracy: test accuracy vs training wall-clock, the target and where each run reaches it


def fig_tta(groups: list[Cell], path: Path, target: Target) -> None:
    plt = _plt()
    gs = sorted(groups, key=sort_key)
    bp = bp_reference(gs, gs[0])
    value = target.resolve(None if bp is None else bp.mean(lambda r: final_value(r, "acc")))
    fig, ax = plt.subplots(figsize=(7.0, 4.6))
    for g in gs:
        lab = label(g.method, g.groups) + ("" if g.executor == "simulated" else f" [{_schedule(g.executor)}]")
        for i, r in enumerate(g.runs):
            c = r["curves"]
            ax.plot(c["train_time_s"], c["test_acc"], color=color(g.method), ls=K_STYLES.get(g.groups, "-"),
                    marker="o", ms=2.5, lw=1.3, label=lab if i == 0 else None)
            hit = None if value is None else time_to(r, target, value)
            if hit is not None:
                ax.plot([hit[0]], [value], marker="*", ms=11, color=color(g.method), zorder=5)
    if value is not None:
        ax.axhline(value, color="#aa0000", lw=1, ls="--", label=f"target: {target.text()} = {value:.2f}% (★ reached)")
    ax.set_xlabel("training wall-clock (s; evaluation excluded)")
    ax.set_ylabel("test accuracy (%)")
    ax.legend(loc="lower right")
    g0 = gs[0]
    no_target = "" if value is not None else " (no BP record of this setting: no target)"
    fig.suptitle(f"Time to accuracy: test accuracy vs training time{no_target}\n"
                 f"{_subtitle(g0.profile, g0.data, g0.model, _time_kind(g0.executor))}", fontsize=9)
    fig.tight_layout()
    _save(fig, path)


# ---------------------------------------------------------------------------------------------------
# Communication share and Fig. 7 (distributed records)


def _short(g: Cell) -> str:
    """A method's name short enough for an axis label: LCT_n1, BP, GPipe K=2, DDP K=2, resist S=2."""
    try:
        look = create_method(g.method).look
    except BenchError:
        return label(g.method, g.groups)
    if look.suffix == "n" or g.groups == 1 or not (look.short or look.suffix == "K" or look.count == "S"):
        return look.name(g.groups)
    return f"{look.short or look.label} {look.count}={g.groups}"


def _schedule(executor: str) -> str:
    return executor[len("parallel "):].strip("()") or "-"


def fig_comm(groups: list[Cell], path: Path) -> None:
    plt = _plt()
    from matplotlib.patches import Patch

    gs = [g for g in sorted(groups, key=sort_key)
          if any(w.get("comm_share") is not None for r in g.runs for w in r.get("workers") or [])]
    if not gs:
        _empty(path, "Communication share of training time", "no distributed records with per-worker\n"
               "communication yet (run the distributed executor; see `python -m bench speed`)")
        return
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(gs) + 3), 4.4))
    labels, most, paper_drawn = [], 1, False
    for i, g in enumerate(gs):
        per_rank: dict[int, list[float]] = {}
        for r in g.runs:
            for rank, w in enumerate(sorted(r.get("workers") or [], key=lambda x: x.get("rank", 0))):
                if w.get("comm_share") is not None:
                    per_rank.setdefault(rank, []).append(100 * w["comm_share"])
        ranks = max(per_rank) + 1
        most = max(most, ranks)
        width = 0.8 / ranks
        for rank, vals in sorted(per_rank.items()):
            m, sd = mean_std(vals)
            ax.bar(i - 0.4 + width * (rank + 0.5), m, width * 0.9, yerr=sd if len(vals) > 1 else None,
                   color=GROUP_COLORS[rank % len(GROUP_COLORS)])
        pv = P.paper_value("comm", paper_data(g.data), g.model, g.method, g.groups, "comm_share")
        if pv is not None:
            ax.plot([i - 0.45, i + 0.45], [pv, pv], color="#aa0000", lw=2)
            paper_drawn = True
        threads = (g.runs[0]["config"].get("distributed") or {}).get("threads_per_worker")
        labels.append(f"{_short(g)}\n{_schedule(g.executor)}" + (f", {threads} thr/worker" if threads else "")
                      + f"\n{g.data}\n{g.model}\n{g.profile}, {g.steps} steps")
    ax.set_xticks(range(len(gs)), labels, fontsize=7)
    ax.set_ylabel("time blocked on communication / training time (%)")
    ax.set_title("Communication share per worker (distributed executor, measured)")
    handles = [Patch(color=GROUP_COLORS[r % len(GROUP_COLORS)], label=f"worker {r + 1}") for r in range(most)]
    if paper_drawn:
        handles.append(plt.Line2D([], [], color="#aa0000", lw=2, label="paper (estimated from transfer times)"))
    ax.legend(handles=handles, loc="upper left")
    fig.tight_layout()
    _save(fig, path)


def _workers(g: Cell) -> str:
    """K, and the workers where a multi-stage pipeline schedule put several groups on each."""
    w = workers_of(g)
    return f"K={g.groups}" if w == g.groups else f"K={g.groups} on {w} workers"


def fig7(cells: list[Cell], path: Path) -> None:
    plt = _plt()
    rows = []
    for g in cells:
        if g.method != "gpipe" or not g.values(train_time):
            continue
        gb, lb, _, _, lct = fig7_ratios(cells, g)
        if gb is None:
            continue
        rows.append((g, gb, lb, _schedule(lct.executor) if lct else "-"))
    if not rows:
        _empty(path, "Pipelined BP vs LCT, time normalised by BP (paper Fig. 7)",
               "no records: needs distributed gpipe, lct and bp runs\n"
               "(paper, CIFAR-100 ResNet-101: LCT 15.7% faster than\npipelined BP on 2 GPUs, 3.5% on 4 GPUs)")
        return
    fig, ax = plt.subplots(figsize=(max(5.5, 2.2 * len(rows) + 2), 4.6))
    top = 1.0
    for i, (g, tg, tl, _) in enumerate(rows):
        ax.bar(i - 0.17, tg, 0.32, color=color("gpipe"), label="pipelined BP (GPipe)" if i == 0 else None)
        if tl is not None:
            ax.bar(i + 0.17, tl, 0.32, color=color("lct"), label="LCT" if i == 0 else None)
        pv = P.paper_value("fig7", paper_data(g.data), g.model, "lct", workers_of(g), "faster_than_gpipe")
        if tl is None:
            note = "no LCT record"
        else:
            faster = 100 * (1 - tl / tg)
            note = f"LCT {abs(faster):.1f}% {'faster' if faster >= 0 else 'slower'} than GPipe"
        if pv is not None:
            note += f"\n(paper: LCT {pv:.1f}% faster)"
        top = max(top, tg, tl or 0)
        ax.text(i, max(tg, tl or 0, 1.0) * 1.03, note, ha="center", va="bottom", fontsize=8)
    ax.set_ylim(0, top * 1.35)
    ax.axhline(1, color="#222222", lw=1, ls="--", label="BP = 1")
    # short lines per bar: the setting, the workers, each schedule (one line overran its neighbours)
    ax.set_xticks(range(len(rows)), [f"{g.data} {g.model} ({g.profile})\n{_workers(g)}\n{_schedule(g.executor)}\nvs LCT "
                                     f"{lct_sched}" for g, _, _, lct_sched in rows], fontsize=8)
    ax.set_ylabel("training time / BP training time")
    ax.set_title("Pipelined BP vs LCT, normalised by BP (paper Fig. 7), distributed executor")
    ax.legend(loc="upper left")
    fig.tight_layout()
    _save(fig, path)


# ---------------------------------------------------------------------------------------------------
# Anytime prediction / structural optimisation: accuracy vs FLOPs of the sub-models

def fig_anytime(groups: list[Cell], counted: list[dict], path: Path) -> None:
    plt = _plt()
    gs = sorted(groups, key=sort_key)
    fig, (ax, axp) = plt.subplots(1, 2, figsize=(11.5, 4.4), gridspec_kw={"width_ratios": [3, 2]})
    for g in gs:
        rec = next((r for r in g.records if r.get("split", {}).get("groups")), None)
        if rec is None:
            continue
        cx = submodels(rec["split"])
        accs = []
        for j, s in enumerate(cx):
            if s["name"] == "Main":
                vals = g.values(lambda r: r["final"].get("test_acc"))
            else:
                vals = g.values(lambda r, j=j: (r["final"].get("sub_acc") or [None] * 9)[j])
            accs.append(mean_std(vals)[0])
        pts = [(s["flops"] / 1e6, a, s["name"]) for s, a in zip(cx, accs) if a is not None]
        if not pts:
            continue
        ax.plot([p[0] for p in pts], [p[1] for p in pts], color=color(g.method),
                ls=K_STYLES.get(g.groups, "-"), marker="o", label=f"{label(g.method, g.groups)} (n={len(g.runs)})")
        for x, y, name in pts:
            ax.annotate(name.replace("Sub_", "S"), (x, y), textcoords="offset points", xytext=(3, -9), fontsize=7,
                        color=color(g.method))
    ax.set_xlabel("forward FLOPs of one sample (M, torch.utils.flop_counter)")
    ax.set_ylabel("test accuracy (%)")
    g0 = gs[0]
    ax.set_title(f"ours — {g0.data}, {g0.model}, width {g0.width}, profile {g0.profile}")
    ax.legend(loc="lower right")
    for (data, model), tint in (
            (("cifar10", "resnet50"), "#1b9e77"), (("cifar10", "resnet101"), "#7570b3"),
            (("cifar100", "resnet50"), "#66a61e"), (("cifar100", "resnet101"), "#e7298a")):
        split = counted_split(counted, data, model, "lct", 4)
        if split is None:  # the paper's network not counted yet (`nox -s architecture`)
            continue
        cx = submodels(split)
        accs = [P.paper_value("VII", data, model, "lct", 4, f"sub{i}" if i < 4 else "main") for i in range(1, 5)]
        axp.plot([c["flops"] / 1e9 for c in cx], accs, marker="s", color=tint,
                 ls="-" if data == "cifar10" else "--", label=f"{DATA_NAMES[data]} {model}")
        for c, a in zip(cx, accs):
            axp.annotate(c["name"].replace("Sub_", "S"), (c["flops"] / 1e9, a), textcoords="offset points",
                         xytext=(3, -9), fontsize=7, color=tint)
    axp.set_xlabel("FLOPs of the sub-model at full width (G, counted by us)")
    axp.set_ylabel("test accuracy (%), paper Table VII")
    axp.set_title("paper LCT_n3: Table VII accuracy vs sub-model FLOPs")
    axp.legend(loc="lower right")
    fig.suptitle(f"Anytime prediction / structural optimisation: sub-model accuracy vs FLOPs\n"
                 f"{_subtitle(g0.profile, g0.data, g0.model)}", fontsize=9)
    fig.tight_layout()
    _save(fig, path)


# ---------------------------------------------------------------------------------------------------


def _suffix(executor: str, always: bool = False) -> str:
    """File-name part for an executor: '' / '_simulated', '_parallel-overlapped', ..."""
    if executor == "simulated":
        return "_simulated" if always else ""
    return "_" + executor.replace(" (", "-").replace(")", "").replace(" ", "-")


def _curve(g: Cell) -> bool:
    """Whether g's runs have a training curve (two evaluations or more; the speed benchmark's have one point)."""
    return any(len(r["curves"].get("train_time_s") or []) > 1 for r in g.runs)


def _slug(setting: str) -> str:
    return "".join(ch for ch in setting.replace(", ", "_").replace(" ", "") if ch.isalnum() or ch in "._-")


def _kind(executor: str) -> str:
    return "simulated" if executor == "simulated" else "parallel"  # all schedules in one figure


def _figure_keys(cells: list[Cell]) -> dict[tuple, list[Cell]]:
    """The cells each figure draws, by (figure kind, profile, data, model, ..., setting)."""
    by: dict[tuple, list[Cell]] = {}
    for g in cells:
        if any(assumption1_minima(r) for r in g.runs):
            by.setdefault(("fig3", g.profile, g.data, g.model, g.method, g.executor, g.setting), []).append(g)
        if _curve(g):
            by.setdefault(("fig5", g.profile, g.data, g.model, _kind(g.executor), g.setting), []).append(g)
            if not is_lstm(g) and any(r["curves"].get("test_acc") for r in g.runs):
                by.setdefault(("tta", g.profile, g.data, g.model, _kind(g.executor), g.setting), []).append(g)
        if g.method in ("lct", "joint") and g.groups > 1 and not is_lstm(g) and g.has_accuracy:
            by.setdefault(("anytime", g.profile, g.data, g.model, g.training_setting), []).append(g)
        if is_lstm(g) and any(r["curves"].get("test_bpc") for r in g.runs):
            by.setdefault(("fig6", g.profile, g.data, g.model, _kind(g.executor), g.setting), []).append(g)
    return by


def _name(key: tuple) -> str:
    kind, profile, data, model, *rest = key
    if kind == "fig3":
        return f"fig3_assumption1_{profile}_{data}_{model}_{rest[0]}" + _suffix(rest[1])
    if kind == "fig5":
        return f"fig5_loss_vs_time_{profile}_{data}_{model}{_suffix(rest[0], True)}"
    if kind == "fig6":
        return f"fig6_bpc_vs_time_{profile}_{data}_{model}_{rest[0]}"
    if kind == "tta":
        return f"time_to_accuracy_{profile}_{data}_{model}{_suffix(rest[0], True)}"
    return f"anytime_acc_vs_flops_{profile}_{data}_{model}"


def _drawer(kind: str, gs: list[Cell], counted: list[dict], target: Target) -> Callable[[Path], None]:
    if kind == "tta":
        return lambda p: fig_tta(gs, p, target)
    if kind == "anytime":
        first: dict[tuple, Cell] = {}  # one curve per (method, K): in-process records first
        for g in sorted(gs, key=sort_key):
            first.setdefault((g.method, g.groups), g)
        return lambda p: fig_anytime(list(first.values()), counted, p)
    return lambda p: {"fig3": fig3, "fig5": fig5, "fig6": fig6}[kind](gs, p)


def plan(cells: list[Cell], counted: list[dict],
         targets: dict[str, Target] | None = None) -> list[tuple[str, Callable[[Path], None]]]:
    """(file name under plots/, drawer) for every figure the records give; deterministic order. Runs of
    another setting (steps, width, ...) never share a figure; where two settings would give one file name,
    the setting is added to it. `targets`: the time-to-accuracy figures' (default BP - 1 point)."""
    target = (targets or DEFAULT_TARGETS)["acc"]
    by = _figure_keys(cells)
    names: dict[str, list[tuple]] = {}
    for key in sorted(by, key=lambda k: tuple(str(x) for x in k)):
        names.setdefault(_name(key), []).append(key)
    out = [((name if len(keys) == 1 else f"{name}_{_slug(key[-1])}") + ".png",
            _drawer(key[0], by[key], counted, target)) for name, keys in names.items() for key in keys]
    out.append(("communication_share.png", lambda p: fig_comm(cells, p)))
    out.append(("fig7_pipelined_bp.png", lambda p: fig7(cells, p)))
    return out


# ---------------------------------------------------------------------------------------------------
# Fig. 6: BPC vs wall-clock


def fig6(gs: list[Cell], path: Path) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    bp_time = [g.mean(lambda r: r["final"].get("train_time_s")) for g in gs if g.method == "bp"]
    for g in sorted(gs, key=sort_key):
        for j, r in enumerate(g.runs):
            c = r["curves"]
            if not c.get("test_bpc"):
                continue
            t = r["final"].get("train_time_s")
            lab = label(g.method, g.groups)
            if g.method != "bp" and bp_time and bp_time[0] and t:
                lab += f": time {100 * (t / bp_time[0] - 1):+.1f}% vs BP"
            ax.plot(c["train_time_s"], c["test_bpc"], color=color(g.method), ls=K_STYLES.get(g.groups, "-"),
                    marker="o", ms=2.5, lw=1.4, label=(lab + f" [{g.executor}]") if j == 0 else None)
    ax.set_xlabel("training wall-clock (s; evaluation excluded)")
    ax.set_ylabel("test BPC")
    ax.legend(loc="best")
    g0 = gs[0]
    paper = ("paper Fig. 6, the same depth: PTB, 4-layer LSTM; LCT_n1 -16.7%, LCT_n3 -35.8% vs BP"
             if g0.model == "lstm4" else f"the paper's Fig. 6 shows the 4-layer LSTM only, not {g0.model}")
    fig.suptitle(f"BPC vs training time ({paper})\n{_subtitle(g0.profile, g0.data, g0.model, g0.executor)}",
                 fontsize=9)
    fig.tight_layout()
    _save(fig, path)


def render(cells: list[Cell], counted: list[dict], out: Path, targets: dict[str, Target] | None = None) -> list[Path]:
    """Draw every figure the records give into `out` (each saved atomically)."""
    out = Path(out)
    paths = []
    for name, draw in plan(cells, counted, targets):
        draw(out / name)
        paths.append(out / name)
    return paths
