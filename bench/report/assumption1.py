"""Assumption 1 (Figs. 3, 4): mu_k = <G_k, g_k>/||G_k||^2 > 0 throughout training, per group; the table and
`python -m bench check-assumption1`."""
from __future__ import annotations

import sys
from pathlib import Path

from ..errors import BenchError
from .frame import Cell, fmt, label, load_records, mean_std, profiles_text, table


def assumption1_minima(rec: dict) -> list[dict]:
    """Per group: the lowest mu_k over training (each point the mean over the batches it measured), its
    spread (std over those batches) and step, the lowest single batch, the lowest cosine, the last values.
    Records from before points had several batches have no spread (None)."""
    a1 = rec.get("assumption1") or {}
    steps, mus, coss = a1.get("step") or [], a1.get("mu") or [], a1.get("cos") or []
    if not mus:
        return []
    stds, lows = a1.get("mu_std"), a1.get("mu_min")
    out = []
    for j in range(len(mus[0])):
        mu = [m[j] for m in mus]
        cs = [c[j] for c in coss] if coss else []
        i = min(range(len(mu)), key=lambda t: mu[t])
        out.append({"group": j + 1, "min_mu": mu[i], "min_mu_step": steps[i] if i < len(steps) else None,
                    "min_mu_std": stds[i][j] if stds else None,
                    "lowest_batch": min(m[j] for m in lows) if lows else None,
                    "min_cos": min(cs) if cs else None, "last_mu": mu[-1], "last_cos": cs[-1] if cs else None,
                    "n": len(mu), "batches": (a1.get("batches") or [1])[-1]})
    return out


def table_assumption1(cells: list[Cell]):
    md_cols = ["data", "model", "method", "K", "profile", "setting", "time", "seeds", "group", "min mu_k (step)",
               "its spread", "lowest batch", "min cos", "last mu_k", "last cos", "mu_k > 0 throughout"]
    csv_cols = ["table", "data", "model", "method", "groups", "profile", "executor", "seeds", "group", "min_mu",
                "min_mu_step", "min_cos", "last_mu", "last_cos", "holds", "setting", "min_mu_std", "lowest_batch_mu"]
    rows = []
    for g in cells:
        per_seed = [(r["config"]["seed"], assumption1_minima(r)) for r in g.runs]
        per_seed = [(s, m) for s, m in per_seed if m]
        if not per_seed:
            continue
        for j in range(len(per_seed[0][1])):
            ms = [m[j] for _, m in per_seed if j < len(m)]
            worst = min(ms, key=lambda x: x["min_mu"])
            lowest = min((x["lowest_batch"] for x in ms if x["lowest_batch"] is not None), default=None)
            min_cos = min((x["min_cos"] for x in ms if x["min_cos"] is not None), default=None)
            last_mu = mean_std([x["last_mu"] for x in ms])[0]
            last_cos = mean_std([x["last_cos"] for x in ms if x["last_cos"] is not None])[0]
            holds = worst["min_mu"] > 0
            seeds = ",".join(str(s) for s, _ in per_seed)
            rows.append(([g.data, g.model, label(g.method, g.groups), str(g.groups), g.profile, g.setting, g.executor,
                          seeds,
                          str(j + 1) + (" (backprop)" if j + 1 == g.groups else ""),
                          f"{worst['min_mu']:.4f} ({worst['min_mu_step']})", fmt(worst["min_mu_std"], 4),
                          fmt(lowest, 4), fmt(min_cos, 4), fmt(last_mu, 4), fmt(last_cos, 4),
                          "yes" if holds else "**no**"],
                         ["assumption1", g.data, g.model, g.method, g.groups, g.profile, g.executor,
                          seeds.replace(",", " "), j + 1, worst["min_mu"], worst["min_mu_step"], min_cos, last_mu,
                          last_cos, "yes" if holds else "no", g.setting, worst["min_mu_std"], lowest]))
    return table("assumption1",
                 f"Assumption 1 (Figs. 3, 4) — mu_k = <G_k, g_k>/||G_k||² and cos(G_k, g_k) over training "
                 f"(profiles: {profiles_text(g for g in cells if any(assumption1_minima(r) for r in g.runs))})",
                 ["G_k: true gradient of the main loss w.r.t. group k's weights; g_k: the gradient the method "
                  "applies. Each point is the mean over the last batches trained on (`assumption1_batches`, "
                  "4 by default; 1 in records made before); `its spread` is the std over them at the lowest "
                  "point, `lowest batch` the lowest single batch anywhere (a noisy batch alone does not fail "
                  "the condition, which the mean decides). "
                  "The paper's condition is mu_k > 0 throughout training (it plots, not tabulates, mu_k). "
                  "Minima are over all measurements and seeds; `last` is the mean over seeds of the final value. "
                  "The last group is trained by backprop (mu = 1)."], md_cols, csv_cols, rows)


def _measured_from(rec: dict, from_step: int) -> dict:
    """The record's Assumption-1 points from `from_step` on."""
    a1 = rec.get("assumption1") or {}
    steps = a1.get("step") or []
    keep = [i for i, s in enumerate(steps) if s >= from_step]
    return {"assumption1": {k: [v[i] for i in keep] for k, v in a1.items() if isinstance(v, list) and len(v) == len(steps)}}


def check_assumption1(paths: list[Path], from_step: int = 0, out=None) -> int:
    """Print per group the lowest mean mu_k over training with its spread, the lowest single batch and cosine;
    1 if any group's mean mu_k fell to 0 or below, else 0 (a single negative batch inside a positive mean
    does not fail it: the spread says how noisy the estimate was)."""
    out = out or sys.stdout
    missing = [p for p in paths if not Path(p).exists()]
    if missing:
        raise BenchError(f"no such record: {', '.join(map(str, missing))}")
    records = [r for p in paths for r in load_records([p])]  # in the order given
    if not records:
        raise BenchError(f"no run records in {', '.join(map(str, paths))}")
    failed = 0
    for r in records:
        ms = assumption1_minima(_measured_from(r, from_step))
        print(f"{r.get('run_id') or Path(r['_path']).stem} ({r['_path']}; status {r['status']})", file=out)
        if not ms:
            print("  no Assumption-1 measurements (the method applies the true gradient, or none were taken)",
                  file=out)
            continue
        print(f"  {'group':>5}  {'min mu_k':>10}  {'spread':>8}  {'at step':>7}  {'lowest batch':>12}  "
              f"{'min cos':>8}  {'last mu_k':>10}  condition (the mean of {ms[0]['batches']} batch(es))", file=out)
        for m in ms:
            ok = m["min_mu"] > 0
            failed += not ok
            print(f"  {m['group']:>5}  {m['min_mu']:>10.4f}  {fmt(m['min_mu_std'], 4):>8}  {m['min_mu_step']!s:>7}  "
                  f"{fmt(m['lowest_batch'], 4):>12}  {fmt(m['min_cos'], 4):>8}  {m['last_mu']:>10.4f}  "
                  f"{'mu_k > 0: ok' if ok else 'FAILS (mu_k <= 0)'}", file=out)
    if failed:
        print(f"Assumption 1 fails for {failed} group(s) (mean mu_k <= 0 at some measurement"
              f"{f' from step {from_step}' if from_step else ''}).", file=out)
        return 1
    print("Assumption 1 holds (mean mu_k > 0) for every measured group.", file=out)
    return 0
