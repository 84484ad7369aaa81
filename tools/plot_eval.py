#!/usr/bin/env python3
"""PNG plots of heterocache-eval results (matplotlib: pip install matplotlib).

usage: tools/plot_eval.py [--csv docs/eval/results.csv] [--profile examples/llama/profiles/smollm2-135m-instruct.hcprofile]
                          [--outdir docs/eval]

Writes
  accuracy.png   accuracy (passkey, multikey, niah-*) and scores (multineedle, multivalue, multiquery, vartrack,
                 cwe) against the budget, one line per policy, one panel per task present
  kl.png         teacher-forced KL(full || policy) (log scale) and top-1 agreement against the budget
Error bars: the 95 % confidence intervals of tools/eval_table.py (Wilson for accuracies, bootstrap over the
samples for scores, KL and top-1); the full cache's interval is a grey band. Only rows of --split (default test).
  profile.png    per-head stability of the model (layers x KV heads) with each head's role (P pivot,
                 S satellite, A anchor, V volatile), read from the saved HeteroCache profile
"""
import argparse
import csv
import math
import os
import sys
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from eval_table import TASK_FIELD, estimate  # noqa: E402

POLICIES = ["heterocache", "streamingllm", "h2o", "snapkv", "pyramidkv", "adakv", "tova", "quest", "duo", "h2o-oracle"]
STYLE = {
    "heterocache": dict(color="#d62728", lw=2.6, marker="o", zorder=5),
    "streamingllm": dict(color="#7f7f7f", marker="s"),
    "h2o": dict(color="#1f77b4", marker="^"),
    "snapkv": dict(color="#2ca02c", marker="v"),
    "pyramidkv": dict(color="#17becf", marker="<"),
    "adakv": dict(color="#bcbd22", marker=">"),
    "quest": dict(color="#9467bd", marker="D"),
    "duo": dict(color="#ff7f0e", marker="P"),
    "tova": dict(color="#8c564b", marker="X"),
    "h2o-oracle": dict(color="#e377c2", marker="*", ls=":"),
}


def budget_key(b):
    if b.startswith("r"):
        return (0, -float(b[1:]))
    if b.startswith("t"):
        return (1, -float(b[1:]))
    return (2, b)


def budget_name(b):
    return ("r=" + b[1:]) if b.startswith("r") else (b[1:] + " tok")


def f(x):
    try:
        return float(x)
    except (TypeError, ValueError):
        return float("nan")


def mean(xs):
    xs = [x for x in xs if not math.isnan(x)]
    return sum(xs) / len(xs) if xs else float("nan")


def load(path, split="test"):
    with open(path, newline="", encoding="utf-8", errors="replace") as fh:
        rows = list(csv.DictReader(fh))
    return [r for r in rows if (r.get("split") or "test") == split]


def series(rows, task, field):
    cell = defaultdict(list)
    for r in rows:
        if r["task"] == task and r["status"] == "ok":
            cell[(r["policy"], r["budget"])].append(f(r[field]))
    return {k: mean(v) for k, v in cell.items()}


def intervals(rows, task, field):
    """(policy, budget) -> (mean, lo, hi) with eval_table's 95 % intervals."""
    cell = defaultdict(list)
    for r in rows:
        if r["task"] == task:
            cell[(r["policy"], r["budget"])].append(r)
    return {k: estimate(v, field)[:3] for k, v in cell.items()}


def budget_axis(rows, task):
    """The task's budgets, most hot tokens first (a token budget's kept fraction depends on the prompt length)."""
    hot = defaultdict(list)
    for r in rows:
        if r["task"] == task and r["budget"] != "full":
            hot[r["budget"]].append(f(r["hot_fraction"]))
    return sorted(hot, key=lambda b: (-mean(hot[b]), budget_key(b)))


def policy_lines(ax, rows, task, field, budgets, logy=False):
    s = intervals(rows, task, field)
    x = list(range(len(budgets)))
    hot = series(rows, task, "hot_fraction")
    names = [p for p in POLICIES + sorted({k[0] for k in s} - set(POLICIES) - {"full"})
             if any((p, b) in s for b in budgets)]
    for i, p in enumerate(names):
        nan = (float("nan"),) * 3
        m, lo, hi = zip(*[s.get((p, b), nan) for b in budgets])
        if all(math.isnan(y) for y in m):
            continue
        floor = 1e-4 if logy else -math.inf
        m = [max(y, floor) if not math.isnan(y) else y for y in m]
        lo = [max(y, floor) if not math.isnan(y) else y for y in lo]
        hi = [max(y, floor) if not math.isnan(y) else y for y in hi]
        # a small offset per policy so the bars do not hide each other
        xs = [v + (i - (len(names) - 1) / 2) * 0.035 for v in x]
        err = [[0 if math.isnan(a) else max(0.0, c - a) for a, c in zip(lo, m)],
               [0 if math.isnan(b) else max(0.0, b - c) for b, c in zip(hi, m)]]
        style = dict(STYLE.get(p, {}))
        if not style and p.startswith("heterocache:"):  # a variant or former default: HeteroCache's colour, thin, dashed
            style = dict(color="#d62728", lw=1.2, ls="--", marker=".", alpha=0.7)
        ax.errorbar(xs, m, yerr=err, label=p, capsize=2, elinewidth=0.8, **style)
    if ("full", "full") in s and not logy:
        m, lo, hi = s[("full", "full")]
        ax.axhline(m, color="black", ls="--", lw=1.2, label="full cache")
        if not math.isnan(lo):
            ax.axhspan(lo, hi, color="black", alpha=0.08, lw=0)
    labels = []
    for b in budgets:
        hs = [v for (p, bb), v in hot.items() if bb == b and p != "full"]
        labels.append(budget_name(b) + (f"\n(hot {100 * mean(hs):.0f}%)" if b.startswith("t") and hs else ""))
    ax.set_xticks(x)
    ax.set_xticklabels(labels, fontsize=8)
    ax.grid(alpha=0.3)
    if logy:
        ax.set_yscale("log")


def plot_accuracy(rows, out):
    titles = {
        "passkey": "passkey retrieval (5-digit key, depth 0-100 %)",
        "multikey": "multi-key needle",
        "multineedle": "sequential multi-needle (values recalled in order)",
        "niah-words": "NIAH, word value",
        "niah-numbers": "NIAH, 7-digit number",
        "niah-uuids": "NIAH, UUID",
        "multivalue": "multi-value NIAH (4 values of one key)",
        "multiquery": "multi-query NIAH (2 of 4 keys)",
        "vartrack": "variable tracking (5-variable chain)",
        "cwe": "common-words extraction (10 words)",
    }
    tasks = [(t, TASK_FIELD[t], titles[t]) for t in titles if any(r["task"] == t for r in rows)]
    if not tasks:
        return None
    ncol = min(3, len(tasks))
    nrow = (len(tasks) + ncol - 1) // ncol
    fig, axes = plt.subplots(nrow, ncol, figsize=(5.2 * ncol, 4.0 * nrow + 0.5), squeeze=False)
    for ax in axes.flat[len(tasks):]:
        ax.set_visible(False)
    for ax, (t, fld, title) in zip(axes.flat, tasks):
        policy_lines(ax, rows, t, fld, budget_axis(rows, t))
        ax.set_title(title, fontsize=10)
        ax.set_ylim(-0.03, 1.03)
        ax.set_ylabel("accuracy" if fld == "correct" else "score")
        ax.set_xlabel("budget (more compression to the right)")
    h, l = axes[0][0].get_legend_handles_labels()
    fig.legend(h, l, loc="lower center", ncol=len(l), fontsize=8, frameon=False)
    fig.suptitle("SmolLM2-135M-Instruct: accuracy against the KV budget", fontsize=11)
    fig.tight_layout(rect=(0, 0.07 / nrow, 1, 1))
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_kl(rows, out):
    if not any(r["task"] == "kl" for r in rows):
        return None
    budgets = budget_axis(rows, "kl")
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.3))
    policy_lines(axes[0], rows, "kl", "kl", budgets, logy=True)
    axes[0].set_title("teacher-forced KL(full || policy), nats/position (lower is better)", fontsize=10)
    axes[0].set_ylabel("mean KL")
    policy_lines(axes[1], rows, "kl", "top1", budgets)
    axes[1].set_title("top-1 agreement with the full cache", fontsize=10)
    lo = min([f(r["top1"]) for r in rows if r["task"] == "kl" and r["status"] == "ok"] + [1.0])
    axes[1].set_ylim(max(0.0, math.floor(lo * 10) / 10 - 0.05), 1.01)
    for ax in axes:
        ax.set_xlabel("budget (more compression to the right)")
    sample = sorted({r["sample"] for r in rows if r["task"] == "kl"})
    h, l = axes[0].get_legend_handles_labels()
    fig.legend(h, l, loc="lower center", ncol=len(l), fontsize=8, frameon=False)
    fig.suptitle(f"Fidelity on {len(sample)} Debian texts (licences, copyright files)", fontsize=11)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def read_profile(path):
    heads, meta = [], {}
    with open(path) as fh:
        for line in fh:
            p = line.split()
            if not p or p[0].startswith("#"):
                continue
            if p[0] == "head":
                heads.append((int(p[1]), int(p[2]), p[3], float(p[4]), int(p[5])))
            elif len(p) == 2:
                meta[p[0]] = p[1]
    return meta, heads


def plot_profile(path, out):
    if not os.path.exists(path):
        return None
    meta, heads = read_profile(path)
    layers = int(meta.get("layers", max(h[0] for h in heads) + 1))
    kvh = int(meta.get("kv_heads", max(h[1] for h in heads) + 1))
    grid = [[float("nan")] * layers for _ in range(kvh)]
    role = [[""] * layers for _ in range(kvh)]
    letter = {"pivot": "P", "satellite": "S", "anchor": "A", "volatile": "V"}
    for l, h, r, s, _ in heads:
        grid[h][l] = s
        role[h][l] = letter.get(r, "?")
    fig, ax = plt.subplots(figsize=(13, 2.9))
    im = ax.imshow(grid, aspect="auto", cmap="viridis", vmin=0, vmax=1)
    for h in range(kvh):
        for l in range(layers):
            s = grid[h][l]
            ax.text(l, h, role[h][l], ha="center", va="center", fontsize=9, fontweight="bold",
                    color="black" if s > 0.55 else "white")
    ax.set_xticks(range(layers))
    ax.set_xticklabels([str(l) for l in range(layers)], fontsize=7)
    ax.set_yticks(range(kvh))
    ax.set_yticklabels([f"KV head {h}" for h in range(kvh)], fontsize=8)
    ax.set_xlabel("layer")
    counts = {k: sum(1 for x in heads if x[2] == k) for k in ["pivot", "satellite", "anchor", "volatile"]}
    ax.set_title(f"SmolLM2-135M-Instruct head profile: stability S(h) (colour, tau_stable = {meta.get('tau_stable', '?')}) "
                 f"and role — P pivot {counts['pivot']}, S satellite {counts['satellite']}, A anchor {counts['anchor']}, "
                 f"V volatile {counts['volatile']}", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.025, pad=0.01, label="stability")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--csv", default="docs/eval/results.csv")
    ap.add_argument("--profile", default="examples/llama/profiles/smollm2-135m-instruct.hcprofile")
    ap.add_argument("--outdir", default="docs/eval")
    ap.add_argument("--split", default="test", help="only rows of this split (default test)")
    a = ap.parse_args()
    os.makedirs(a.outdir, exist_ok=True)
    rows = load(a.csv, a.split) if os.path.exists(a.csv) else []
    for made in [plot_accuracy(rows, os.path.join(a.outdir, "accuracy.png")),
                 plot_kl(rows, os.path.join(a.outdir, "kl.png")),
                 plot_profile(a.profile, os.path.join(a.outdir, "profile.png"))]:
        if made:
            print("wrote", made)


if __name__ == "__main__":
    main()
