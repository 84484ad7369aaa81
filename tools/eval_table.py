#!/usr/bin/env python3
"""Markdown tables of heterocache-eval results (docs/eval/results.csv -> docs/eval/results.md).

usage: tools/eval_table.py [--csv docs/eval/results.csv ...] [--out docs/eval/results.md] [--split test]
                           [--policies LIST] [--samples-of CSV] [--title TEXT]

The overview has one row per policy x budget (the full cache first) and one column per task metric, each with
its 95 % confidence interval over the samples: accuracies (`correct`: passkey, multikey, niah-*) with the Wilson
score interval, fractional scores (multineedle, multivalue, multiquery, vartrack, cwe), the teacher-forced
KL(full || policy) and the top-1 agreement with a percentile bootstrap over the samples (2000 resamples, fixed
seed). Then one table per task with a column per prompt length, and a KL table per text. `hot` is the mean
fraction of the prompt KV resident in the hot tier; `KV MiB/step` the hot-tier bytes each decode step's attention
reads (resident keys and values, `decode_cache::resident_bytes()` averaged over the steps), `cold->hot KiB/step`
the bytes moved from the cold tier per decode step (`decode_cache::counters().retrieved`); both are means over the
rows (all tasks in the overview). Rows of other splits (`--split`) are left out; files without a split column are
test. Only the standard library is used.
"""
import argparse
import csv
import math
import os
import random
import re
from collections import defaultdict

POLICIES = ["full", "heterocache", "heterocache-floor0.5", "heterocache-floor1", "heterocache-static", "streamingllm",
            "h2o", "snapkv", "pyramidkv", "adakv", "tova", "quest", "duo", "h2o-oracle"]
# references, not compression methods (they read the whole prompt's keys every step): listed last, never bold
ORACLES = {"h2o-oracle"}
TASKS = ["passkey", "multikey", "multineedle", "niah-words", "niah-numbers", "niah-uuids", "multivalue", "multiquery",
         "vartrack", "cwe", "kl"]
# the metric of each generation task: "correct" (accuracy, Wilson) or "score" (fraction, bootstrap)
TASK_FIELD = {"passkey": "correct", "multikey": "correct", "niah-words": "correct", "niah-numbers": "correct",
              "niah-uuids": "correct", "multineedle": "score", "multivalue": "score", "multiquery": "score",
              "vartrack": "score", "cwe": "score"}
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 20240601
Z95 = 1.959963984540054


def budget_key(b):
    if b == "full":
        return (0, 0)
    if b.startswith("r"):
        return (1, -float(b[1:]))
    if b.startswith("t"):
        return (2, -float(b[1:]))
    return (3, b)


def budget_name(b):
    if b == "full":
        return "-"
    if b.startswith("r"):
        return "r = " + b[1:]
    return b[1:] + " tok/head"


def fnum(x):
    try:
        v = float(x)
    except (TypeError, ValueError):
        return float("nan")
    return v


def mean(xs):
    xs = [x for x in xs if not math.isnan(x)]
    return sum(xs) / len(xs) if xs else float("nan")


def wilson(k, n, z=Z95):
    """Wilson score interval of k successes in n trials."""
    if n == 0:
        return (float("nan"), float("nan"))
    p = k / n
    den = 1 + z * z / n
    c = (p + z * z / (2 * n)) / den
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return (max(0.0, c - h), min(1.0, c + h))


_boot_memo = {}


def bootstrap(xs, resamples=BOOTSTRAP_RESAMPLES, seed=BOOTSTRAP_SEED, level=0.95):
    """Percentile bootstrap interval of the mean of xs (deterministic: fixed seed, xs taken sorted)."""
    xs = tuple(sorted(x for x in xs if not math.isnan(x)))
    if len(xs) < 2:  # one sample: no interval
        return (float("nan"), float("nan"))
    if xs[0] == xs[-1]:
        return (xs[0], xs[0])
    key = (xs, resamples, seed, level)
    if key in _boot_memo:
        return _boot_memo[key]
    rnd = random.Random(seed)
    n = len(xs)
    means = sorted(sum(rnd.choices(xs, k=n)) / n for _ in range(resamples))
    lo = means[int(math.floor((1 - level) / 2 * resamples))]
    hi = means[min(resamples - 1, int(math.ceil((1 + level) / 2 * resamples)) - 1)]
    _boot_memo[key] = (lo, hi)
    return lo, hi


def estimate(rows, field):
    """(mean, lo, hi, n) of `field` over the ok rows: Wilson for `correct`, bootstrap otherwise."""
    xs = [fnum(r[field]) for r in rows if r["status"] == "ok"]
    xs = [x for x in xs if not math.isnan(x)]
    if not xs:
        return (float("nan"), float("nan"), float("nan"), 0)
    m = sum(xs) / len(xs)
    lo, hi = wilson(sum(1 for x in xs if x >= 1.0), len(xs)) if field == "correct" else bootstrap(xs)
    return (m, lo, hi, len(xs))


def pct(x):
    return "-" if math.isnan(x) else f"{100 * x:.0f}%"


def fmt(field, m, lo, hi):
    if math.isnan(m):
        return "-"
    if math.isnan(lo):
        return (f"{m:.3g}" if field == "kl" else f"{100 * m:.0f}%") + " (n = 1)"
    if field == "kl":
        return f"{m:.3g} [{lo:.3g}, {hi:.3g}]"
    return f"{100 * m:.0f}% [{100 * lo:.0f}, {100 * hi:.0f}]"


def load(path):
    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        if not r.get("split"):
            r["split"] = "test"
    return rows


def target_length(sample):
    """The requested prompt length in a sample id (pk-1024-d050, niah-words-2048-s0, kl-4096-x256-GPL-3)."""
    m = re.search(r"-(\d+)(?:-|$)", sample)
    return int(m.group(1)) if m else 0


def length_name(n):
    return f"{n // 1024}K" if n and n % 1024 == 0 else str(n)


def cost(rows, field, scale):
    v = mean([fnum(r.get(field, "")) for r in rows if r["status"] == "ok"])
    return "-" if math.isnan(v) else f"{v / scale:.3g}"


SINGLE_NEEDLE = ["passkey", "niah-words", "niah-numbers", "niah-uuids"]


def bytes_per_step(rows):
    """Mean KV bytes a decode step touches: hot-tier bytes its attention reads plus bytes moved from the cold tier."""
    return mean([fnum(r.get("kv_read_bytes", "")) for r in rows if r["status"] == "ok"]) + \
        mean([fnum(r.get("cold_to_hot_bytes", "")) for r in rows if r["status"] == "ok"])


def goal_check(cell, policies, budgets, tasks, method="heterocache", max_ratio=0.5, kl_ratio=0.25, needle_gap=0.05):
    """Markdown lines that check the evaluation's goal cell by cell (DESIGN.md section 6, issue "Fidelity"):

    - at every budget r <= max_ratio and every task metric, `method` is first among the compressed policies (oracles
      and the full cache excluded) or its point estimate lies inside the 95 % interval of the first;
    - at r <= kl_ratio its KL is the lowest among the policies whose decode step touches no more KV bytes
      (hot reads + cold-to-hot moves) than its own, or inside the interval of that lowest;
    - at r = kl_ratio its single-needle accuracies are within needle_gap of the full cache's.
    Each line names the winner and the gap where the goal is missed."""
    def ratio(b):
        return float(b[1:]) if b.startswith("r") else None

    def est(p, b, t, field):
        return estimate(cell.get((p, b, t), []), field)

    out = ["", f"## Goal check: {method} against the first compressed policy at every budget r <= {max_ratio}", "",
           f"`first`: the best compressed policy's point estimate (the full cache, {', '.join(sorted(ORACLES))} "
           f"and {method}'s own variants `{method}:...` excluded); `within`: {method}'s point estimate lies inside the first's 95 % interval; `behind`: "
           "it does not (the gap in points, or in nats for KL). KL compares only the policies whose decode step "
           f"touches no more KV bytes (hot-tier reads + cold-to-hot moves) than {method}'s, at r <= {kl_ratio}.", "",
           f"| task | budget | first | its value | {method} | verdict |", "|---|---|---|---:|---:|---|"]
    tally = defaultdict(int)
    for b in budgets:
        r = ratio(b)
        if r is None or r > max_ratio + 1e-9:
            continue
        for t in tasks:
            fields = [("kl", True)] if t == "kl" else [(TASK_FIELD.get(t, "score"), False)]
            if t == "kl" and r > kl_ratio + 1e-9:
                continue
            for field, low in fields:
                mine = est(method, b, t, field)
                if mine[3] == 0:
                    continue
                limit = bytes_per_step(cell.get((method, b, t), [])) * 1.01 if t == "kl" else math.inf
                cands = []
                for p in policies:
                    if p == "full" or p in ORACLES or p.startswith(method + ":"):
                        continue  # the method's own variants (options, former defaults) are not its rivals
                    e = est(p, b, t, field)
                    if e[3] == 0 or math.isnan(e[0]):
                        continue
                    if t == "kl" and not bytes_per_step(cell.get((p, b, t), [])) <= limit:
                        continue
                    cands.append((e[0] if low else -e[0], p, e))
                if not cands:
                    continue
                cands.sort(key=lambda x: (x[0], x[1] != method))
                _, first, fe = cands[0]
                if first == method:
                    tied = len(cands) > 1 and cands[1][0] == cands[0][0]
                    verdict = "first (tied with " + cands[1][1] + ")" if tied else "first"
                elif (mine[0] <= fe[2]) if low else (mine[0] >= fe[1]):
                    verdict = "within"
                else:
                    gap = abs(mine[0] - fe[0])
                    verdict = f"behind by {gap:.3g}" if t == "kl" else f"behind by {100 * gap:.0f} points"
                tally[verdict.split(" ")[0]] += 1
                out.append(f"| {t} | {budget_name(b)} | {first} | {fmt(field, *fe[:3])} | {fmt(field, *mine[:3])} | "
                           f"{verdict} |")
    out += ["", "Cells: " + ", ".join(f"{k} {tally[k]}" for k in ("first", "within", "behind")) + "."]
    near = [b for b in budgets if ratio(b) is not None and abs(ratio(b) - kl_ratio) < 1e-9]
    if near:
        b = near[0]
        out += ["", f"Single-needle accuracy at {budget_name(b)} against the full cache (goal: within "
                f"{100 * needle_gap:.0f} points):", "", f"| task | full | {method} | gap | verdict |",
                "|---|---:|---:|---:|---|"]
        for t in SINGLE_NEEDLE:
            full, mine = est("full", "full", t, "correct"), est(method, b, t, "correct")
            if full[3] == 0 or mine[3] == 0:
                continue
            gap = full[0] - mine[0]
            out.append(f"| {t} | {fmt('correct', *full[:3])} | {fmt('correct', *mine[:3])} | {100 * gap:+.0f} | "
                       f"{'met' if gap <= needle_gap + 1e-9 else 'missed'} |")
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--csv", nargs="+", default=["docs/eval/results.csv"])
    ap.add_argument("--out", default="docs/eval/results.md")
    ap.add_argument("--split", default="test", help="only rows of this split (test or dev; default test)")
    ap.add_argument("--policies", default="", help="comma-separated: only these policies")
    ap.add_argument("--samples-of", default="", help="only the samples present in this CSV")
    ap.add_argument("--title", default="HeteroCache evaluation: every policy side by side on SmolLM2-135M-Instruct")
    a = ap.parse_args()
    rows = [r for path in a.csv for r in load(path)]
    rows = [r for r in rows if r["split"] == a.split]
    if a.policies:
        keep = set(a.policies.split(","))
        rows = [r for r in rows if r["policy"] in keep]
    if a.samples_of:
        keep = {(r["task"], r["split"], r["sample"]) for r in load(a.samples_of)}
        rows = [r for r in rows if (r["task"], r["split"], r["sample"]) in keep]
    if not rows:
        raise SystemExit(f"no rows of split {a.split} in {a.csv}")
    cell = defaultdict(list)  # (policy, budget, task) -> rows
    for r in rows:
        cell[(r["policy"], r["budget"], r["task"])].append(r)
    policies = [p for p in POLICIES if any(k[0] == p for k in cell)] + sorted({k[0] for k in cell} - set(POLICIES))
    budgets = sorted({k[1] for k in cell}, key=budget_key)
    tasks = [t for t in TASKS if any(k[2] == t for k in cell)] + sorted({k[2] for k in cell} - set(TASKS))
    samples = {t: len({r["sample"] for r in rows if r["task"] == t}) for t in tasks}
    has_cost = any(r.get("kv_read_bytes", "") not in ("", None) for r in rows)

    def configs():
        for b in budgets:
            for p in policies:
                if (p == "full") != (b == "full"):
                    continue
                yield p, b

    cols = []  # (task, field, lower is better, header)
    for t in tasks:
        if t == "kl":
            cols += [("kl", "kl", True, "KL(full‖policy)"), ("kl", "top1", False, "top-1")]
        else:
            cols += [(t, TASK_FIELD.get(t, "score"), False, t)]

    def best(b, t, field, low, sel=lambda r: True):
        vals = []
        for p in policies:
            if p == "full" or p in ORACLES:
                continue
            v = estimate([r for r in cell.get((p, b, t), []) if sel(r)], field)[0]
            if not math.isnan(v):
                vals.append(v)
        if not vals:
            return None
        return min(vals) if low else max(vals)

    def entry(p, b, t, field, low, sel=lambda r: True):
        rs = [r for r in cell.get((p, b, t), []) if sel(r)]
        if not rs:
            return ""
        ok = sum(1 for r in rs if r["status"] == "ok")
        if ok == 0:
            return "error"
        m, lo, hi, _ = estimate(rs, field)
        s = fmt(field, m, lo, hi)
        if p != "full" and p not in ORACLES and not math.isnan(m):
            bv = best(b, t, field, low, sel)
            if bv is not None and abs(m - bv) <= 1e-12 * max(1.0, abs(bv)):
                s = f"**{s}**"
        if ok < len(rs):
            s += f" ({len(rs) - ok} err)"
        return s

    cost_head = ["KV MiB/step", "cold→hot KiB/step"] if has_cost else []

    def cost_cells(rs):
        if not has_cost:
            return []
        return [cost(rs, "kv_read_bytes", 1048576.0), cost(rs, "cold_to_hot_bytes", 1024.0)]

    head = ["policy", "budget", "hot"] + cost_head + [c[3] for c in cols]
    lines = ["# " + a.title, ""]
    srcs = ", ".join(f"`{os.path.relpath(c, os.path.dirname(a.out) or '.')}`" for c in a.csv)
    lines.append(f"Generated by `tools/eval_table.py` from {srcs} ({len(rows)} rows of the {a.split} split). "
                 "Samples per task: " + ", ".join(f"{t} {samples[t]}" for t in tasks) + ".")
    lines.append("")
    lines.append("`hot`: mean fraction of the prompt KV resident in the hot tier (`kv_cache::resident_tokens()` over all "
                 "KV heads, pivots' and volatile heads' full KV included) — the one accounting every policy shares. "
                 + ("`KV MiB/step`: hot-tier key and value bytes resident during a decode step (what its attention "
                    "reads), `cold→hot KiB/step`: bytes moved from the cold tier per decode step, means over the rows. "
                    if has_cost else "") +
                 "Budgets: `r` = kept fraction; `N tok/head` = N prompt tokens per KV head on average (r = N / T). "
                 "passkey, multikey, niah-*: accuracy; multineedle: fraction of the four values recalled in order; "
                 "multivalue, multiquery, vartrack, cwe: fraction of the asked values in the answer; KL: mean "
                 "teacher-forced KL(full ‖ policy) in nats per position, top-1: agreement with the full cache's "
                 "argmax. `[lo, hi]`: 95 % confidence interval over the samples (Wilson for accuracies, bootstrap "
                 f"with {BOOTSTRAP_RESAMPLES} resamples otherwise). **Bold**: best compressed policy at that budget (h2o-oracle, which reads the whole prompt every step, excluded) "
                 "(point estimate).")
    lines.append("")
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "|".join(["---"] * 2 + ["---:"] * (len(head) - 2)) + "|")
    for p, b in configs():
        if not any((p, b, t) in cell for t in tasks):
            continue
        all_rows = [r for t in tasks for r in cell.get((p, b, t), [])]
        hot = mean([fnum(r["hot_fraction"]) for r in all_rows])
        vals = [entry(p, b, t, field, low) for t, field, low, _ in cols]
        lines.append(f"| {p} | {budget_name(b)} | {pct(hot)} | " + " | ".join(cost_cells(all_rows) + vals) + " |")

    # per task, by prompt length
    for t in tasks:
        trows = [r for r in rows if r["task"] == t]
        lens = sorted({target_length(r["sample"]) for r in trows})
        fields = [("kl", True), ("top1", False)] if t == "kl" else [(TASK_FIELD.get(t, "score"), False)]
        for field, low in fields:
            what = {"correct": "accuracy", "score": "score", "kl": "KL(full‖policy)", "top1": "top-1 agreement"}[field]
            n = len({r["sample"] for r in trows})
            lines += ["", f"## {t}: {what} by prompt length ({n} samples)", ""]
            lines.append("| policy | budget | " + " | ".join(length_name(x) for x in lens) +
                         (" | " + " | ".join(cost_head) if cost_head else "") + " |")
            lines.append("|---|---|" + "---:|" * (len(lens) + len(cost_head)))
            for p, b in configs():
                rs = cell.get((p, b, t), [])
                if not rs:
                    continue
                vals = [entry(p, b, t, field, low, lambda r, x=x: target_length(r["sample"]) == x) for x in lens]
                lines.append(f"| {p} | {budget_name(b)} | " + " | ".join(vals + cost_cells(rs)) + " |")

    if "heterocache" in policies:
        lines += goal_check(cell, policies, budgets, tasks)

    # KL per text
    kl = [r for r in rows if r["task"] == "kl"]
    texts = sorted({r["sample"] for r in kl})
    if len(texts) > 1:
        lines += ["", "## kl: mean KL(full‖policy) per text (nats per position; top-1 agreement in parentheses)", ""]
        names = [re.sub(r"^kl-\d+-x\d+-", "", s) for s in texts]
        lines.append("| policy | budget | " + " | ".join(names) + " |")
        lines.append("|---|---|" + "---:|" * len(texts))
        for p, b in configs():
            rs = cell.get((p, b, "kl"), [])
            if not rs:
                continue
            vals = []
            for s in texts:
                x = [r for r in rs if r["sample"] == s and r["status"] == "ok"]
                vals.append(f"{fnum(x[0]['kl']):.3g} ({pct(fnum(x[0]['top1']))})" if x else "")
            lines.append(f"| {p} | {budget_name(b)} | " + " | ".join(vals) + " |")
    errors = sorted({(r["policy"], r["budget"], r["status"]) for r in rows if r["status"] != "ok"})
    if errors:
        lines += ["", "## Errors", ""]
        for p, b, s in errors:
            lines.append(f"- {p} {budget_name(b)}: {s}")
    os.makedirs(os.path.dirname(a.out) or ".", exist_ok=True)
    with open(a.out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
