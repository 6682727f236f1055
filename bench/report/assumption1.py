"""Assumption 1 (Figs. 3, 4): mu_k = <G_k, g_k>/||G_k||^2 > 0 throughout training, per group; the table and
`python -m bench check-assumption1`."""
from __future__ import annotations

import sys
from pathlib import Path

from ..errors import BenchError
from .frame import Cell, fmt, label, load_records, mean_std, profiles_text, table


def assumption1_minima(rec: dict) -> list[dict]:
    """Per group: minimum mu_k and cosine over training, the last values, and where the minimum fell."""
    a1 = rec.get("assumption1") or {}
    steps, mus, coss = a1.get("step") or [], a1.get("mu") or [], a1.get("cos") or []
    if not mus:
        return []
    k = len(mus[0])
    out = []
    for j in range(k):
        mu = [m[j] for m in mus]
        cs = [c[j] for c in coss] if coss else []
        i = min(range(len(mu)), key=lambda t: mu[t])
        out.append({"group": j + 1, "min_mu": mu[i], "min_mu_step": steps[i] if i < len(steps) else None,
                    "min_cos": min(cs) if cs else None, "last_mu": mu[-1], "last_cos": cs[-1] if cs else None,
                    "n": len(mu)})
    return out


def table_assumption1(cells: list[Cell]):
    md_cols = ["data", "model", "method", "K", "profile", "setting", "time", "seeds", "group", "min mu_k (step)",
               "min cos", "last mu_k", "last cos", "mu_k > 0 throughout"]
    csv_cols = ["table", "data", "model", "method", "groups", "profile", "executor", "seeds", "group", "min_mu",
                "min_mu_step", "min_cos", "last_mu", "last_cos", "holds", "setting"]
    rows = []
    for g in cells:
        per_seed = [(r["config"]["seed"], assumption1_minima(r)) for r in g.runs]
        per_seed = [(s, m) for s, m in per_seed if m]
        if not per_seed:
            continue
        for j in range(len(per_seed[0][1])):
            ms = [m[j] for _, m in per_seed if j < len(m)]
            worst = min(ms, key=lambda x: x["min_mu"])
            min_cos = min((x["min_cos"] for x in ms if x["min_cos"] is not None), default=None)
            last_mu = mean_std([x["last_mu"] for x in ms])[0]
            last_cos = mean_std([x["last_cos"] for x in ms if x["last_cos"] is not None])[0]
            holds = worst["min_mu"] > 0
            seeds = ",".join(str(s) for s, _ in per_seed)
            rows.append(([g.data, g.model, label(g.method, g.groups), str(g.groups), g.profile, g.setting, g.executor,
                          seeds,
                          str(j + 1) + (" (backprop)" if j + 1 == g.groups else ""),
                          f"{worst['min_mu']:.4f} ({worst['min_mu_step']})", fmt(min_cos, 4), fmt(last_mu, 4),
                          fmt(last_cos, 4), "yes" if holds else "**no**"],
                         ["assumption1", g.data, g.model, g.method, g.groups, g.profile, g.executor,
                          seeds.replace(",", " "), j + 1, worst["min_mu"], worst["min_mu_step"], min_cos, last_mu,
                          last_cos, "yes" if holds else "no", g.setting]))
    return table("assumption1",
                 f"Assumption 1 (Figs. 3, 4) — mu_k = <G_k, g_k>/||G_k||² and cos(G_k, g_k) over training "
                 f"(profiles: {profiles_text(g for g in cells if any(assumption1_minima(r) for r in g.runs))})",
                 ["G_k: true gradient of the main loss w.r.t. group k's weights; g_k: the gradient the method "
                  "applies. The paper's condition is mu_k > 0 throughout training (it plots, not tabulates, mu_k). "
                  "Minima are over all measurements and seeds; `last` is the mean over seeds of the final value. "
                  "The last group is trained by backprop (mu = 1)."], md_cols, csv_cols, rows)


def check_assumption1(paths: list[Path], from_step: int = 0, out=None) -> int:
    """Print per group the minimum mu_k and cosine over training; 1 if any mu_k <= 0, else 0."""
    out = out or sys.stdout
    missing = [p for p in paths if not Path(p).exists()]
    if missing:
        raise BenchError(f"no such record: {', '.join(map(str, missing))}")
    records = [r for p in paths for r in load_records([p])]  # in the order given
    if not records:
        raise BenchError(f"no run records in {', '.join(map(str, paths))}")
    failed = 0
    for r in records:
        a1 = r.get("assumption1") or {}
        steps = a1.get("step") or []
        keep = [i for i, s in enumerate(steps) if s >= from_step]
        sub = {"step": [steps[i] for i in keep], "mu": [a1["mu"][i] for i in keep],
               "cos": [a1["cos"][i] for i in keep] if a1.get("cos") else []}
        ms = assumption1_minima({"assumption1": sub})
        print(f"{r.get('run_id') or Path(r['_path']).stem} ({r['_path']}; status {r['status']})", file=out)
        if not ms:
            print("  no Assumption-1 measurements (the method applies the true gradient, or none were taken)",
                  file=out)
            continue
        print(f"  {'group':>5}  {'min mu_k':>10}  {'at step':>7}  {'min cos':>8}  {'last mu_k':>10}  condition", file=out)
        for m in ms:
            ok = m["min_mu"] > 0
            failed += not ok
            print(f"  {m['group']:>5}  {m['min_mu']:>10.4f}  {m['min_mu_step']!s:>7}  "
                  f"{fmt(m['min_cos'], 4):>8}  {m['last_mu']:>10.4f}  {'mu_k > 0: ok' if ok else 'FAILS (mu_k <= 0)'}",
                  file=out)
    if failed:
        print(f"Assumption 1 fails for {failed} group(s) (mu_k <= 0 at some measurement"
              f"{f' from step {from_step}' if from_step else ''}).", file=out)
        return 1
    print("Assumption 1 holds (mu_k > 0) for every measured group.", file=out)
    return 0
