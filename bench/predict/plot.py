"""The cost model's figure: the paper's Fig. 5 and Fig. 7 as predictions, labelled as such.

Left: predicted throughput over BP on one device against K, for every method and schedule (the ideal K x
dashed). Right: training time normalised by BP's at K = 2 and 4, Fig. 7's comparison (pipelined BP
against LCT, and every other method predicted). Nothing in it is measured but the calibration's costs.
"""
from __future__ import annotations

from pathlib import Path

from methods import create_method

from .model import Row

STYLES = {"lockstep": "--", "overlapped": "-", "sequential": "-"}


def _look(method: str):
    return create_method(method).look


def _key(r: Row) -> str:
    look = _look(r.method)
    return f"{look.short or look.label} [{r.schedule}]"


def draw(rows: list[Row], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [r for r in rows if r.ratio is not None]
    series: dict[str, list[Row]] = {}
    for r in done:
        series.setdefault(_key(r), []).append(r)
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12.5, 4.8), gridspec_kw={"width_ratios": [3, 2]})
    ks = sorted({r.groups for r in done}) or [1]
    ax.plot(ks, ks, color="#bbbbbb", ls=":", lw=1, label="ideal K x")
    for name, rs in series.items():
        rs = sorted(rs, key=lambda r: r.groups)
        ax.plot([r.groups for r in rs], [r.ratio for r in rs], marker="o", ms=3, color=_look(rs[0].method).color,
                ls=STYLES.get(rs[0].schedule.split("-")[0], "-."), label=name)
    top = max((r.ratio for r in done), default=1.0)
    ax.set_ylim(0, 1.25 * top)  # the ideal line runs off the top rather than flatten the predictions
    ax.set_xscale("log", base=2)
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.set_xlabel("K (workers)")
    ax.set_ylabel("predicted samples/s over BP on one device")
    ax.set_title("Fig. 5 as a prediction: throughput vs K")
    ax.legend(fontsize=7, loc="upper left")
    pairs = [(name, k, next((r for r in rs if r.groups == k), None)) for name, rs in series.items() for k in (2, 4)]
    pairs = [(name, k, r) for name, k, r in pairs if r is not None]
    for i, (name, k, r) in enumerate(pairs):
        bx.bar(i, 1 / r.ratio, color=_look(r.method).color, alpha=0.9 if k == 2 else 0.6)
        bx.text(i, 1 / r.ratio, f"{1 / r.ratio:.2f}", ha="center", va="bottom", fontsize=7)
    bx.axhline(1, color="#222222", lw=1, ls="--")
    bx.set_xticks(range(len(pairs)), [f"{name}\nK={k}" for name, k, _ in pairs], fontsize=6, rotation=60)
    bx.set_ylabel("predicted training time / BP's")
    bx.set_title("Fig. 7 as a prediction: time normalised by BP")
    fig.suptitle(f"PREDICTED by the cost model, not measured — {title}", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
