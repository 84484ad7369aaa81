#!/usr/bin/env python3
"""Markdown tables and the issue's three ratios from heterocache-bench JSON output.

usage: tools/bench_table.py RUN.json [RUN.json ...]

Run the benchmarks with repetitions and JSON output, for example
  build/bench/heterocache-bench --benchmark_filter='^(memory/|attention(_fp16|_bf16|_split|_vs_read)?/.*/(8K|32K|128K)/)' \\
      --benchmark_repetitions=5 --benchmark_report_aggregates_only=true \\
      --benchmark_out=attention.json --benchmark_out_format=json
and pass every file: medians of the repetitions are used (single runs when there are no aggregates).
`step_overhead` rows (the v2 layer step against the v1 CSR rebuild) give a table of their counters.
Ratios are only formed between rows of the same file, that is of one run.
Only the standard library is used.
"""
import json
import sys
from collections import defaultdict

MODELS = ["SmolLM2-135M", "Llama-3.1-8B"]
CONTEXTS = ["8K", "32K", "128K"]
RATIOS = ["r0.50", "r0.25", "r0.10"]
PIVOT_STATES = ("drifting", "stable")


def load(path):
    """{benchmark run name: (real time in us, bytes per second, overhead counter, every field)} of one file,
    medians when present."""
    with open(path) as f:
        data = json.load(f)
    rows = {}
    medians = {}
    for b in data["benchmarks"]:
        name = b["run_name"].removesuffix("/real_time")
        unit = {"ns": 1e-3, "us": 1.0, "ms": 1e3, "s": 1e6}[b.get("time_unit", "ns")]
        value = (b["real_time"] * unit, b.get("bytes_per_second"), b.get("overhead"), b)
        if b.get("run_type") == "aggregate":
            if b.get("aggregate_name") == "median":
                medians[name] = value
        else:
            rows.setdefault(name, value)
    rows.update(medians)
    return rows


def ms(rows, name):
    return rows[name][0] / 1e3 if name in rows else None


def gbs(rows, name):
    return rows[name][1] / 1e9 if name in rows and rows[name][1] else None


def fmt(x, digits=2):
    return "" if x is None else f"{x:.{digits}f}"


def ratio_value(r):
    return float(r[1:])


def attention_tables(rows):
    out = []
    read = {t: gbs(rows, f"memory/read/256MiB/threads:{t}") for t in (1, 2)}
    copy = gbs(rows, "memory/copy/256MiB")
    if read[1]:
        out.append(f"Bandwidth ceiling (same run): memory read {fmt(read[1], 1)} GB/s (1 thread), "
                   f"{fmt(read[2], 1)} GB/s (2 threads); memcpy {fmt(copy, 1)} GB/s.\n")
    if any(n.startswith("attention/") for n in rows):
        out.append("| model | context | threads | full ms | r0.5 | r0.25 | r0.1 | full GB/s | full / read | "
                   "speedup / (N/resident) r0.5, r0.25, r0.1 | bf16 full | fp16 full |")
        out.append("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for m in MODELS:
        for c in CONTEXTS:
            for t in (1, 2):
                base = f"attention/{m}/{c}/full/threads:{t}"
                full = ms(rows, base)
                if full is None:
                    continue
                times = [ms(rows, f"attention/{m}/{c}/{r}/threads:{t}") for r in RATIOS]
                speedups = [fmt(full / x * ratio_value(r)) if x else "" for x, r in zip(times, RATIOS)]
                bw = gbs(rows, base)
                bf16 = ms(rows, f"attention_bf16/{m}/{c}/full/threads:1") if t == 1 else None
                fp16 = ms(rows, f"attention_fp16/{m}/{c}/full/threads:1") if t == 1 else None
                out.append(f"| {m} | {c} | {t} | {fmt(full)} | " + " | ".join(fmt(x) for x in times) +
                           f" | {fmt(bw)} | {fmt(bw / read[t] if bw and read[t] else None)} | {', '.join(speedups)} | "
                           f"{fmt(bf16)} | {fmt(fp16)} |")
    split = [(m, c) for m in MODELS for c in CONTEXTS if f"attention_split/{m}/{c}/full/threads:2" in rows]
    if split:
        out += ["", "Two threads, long rows split into chunks of 4096 tokens (`attention_split`) against rows only:", "",
                "| model | context | rows only: full ms | split: full ms | split full GB/s | split full / read | "
                "split r0.25 ms | split speedup / (N/resident) r0.25 |",
                "|---|---|---|---|---|---|---|---|"]
        for m, c in split:
            base = f"attention_split/{m}/{c}/full/threads:2"
            full, bw = ms(rows, base), gbs(rows, base)
            quarter = ms(rows, f"attention_split/{m}/{c}/r0.25/threads:2")
            out.append(f"| {m} | {c} | {fmt(ms(rows, f'attention/{m}/{c}/full/threads:2'))} | {fmt(full)} | {fmt(bw)} | "
                       f"{fmt(bw / read[2] if bw and read[2] else None)} | {fmt(quarter)} | "
                       f"{fmt(full / quarter * 0.25 if quarter else None)} |")
    alternated = [(m, c, how) for m in MODELS for c in CONTEXTS for how in ("threads:1", "threads:2/split")
                  if f"attention_vs_read/{m}/{c}/{how}" in rows]
    if alternated:
        out += ["", "Full attention and a plain read of the same K/V bytes on the same threads, alternated in one "
                "loop (`attention_vs_read`):", "",
                "| model | context | threads | step GB/s | read GB/s | step / read |",
                "|---|---|---|---|---|---|"]
        for m, c, how in alternated:
            counters = rows[f"attention_vs_read/{m}/{c}/{how}"][3]
            out.append(f"| {m} | {c} | {how.removeprefix('threads:').replace('/', ', ')} | "
                       f"{fmt(counters.get('step_GBps'))} | {fmt(counters.get('read_GBps'))} | "
                       f"{fmt(counters.get('of_read'))} |")
    return out


def monitor_tables(rows):
    out = ["| model | context | kept | step ms (no monitor) | recompute | captured | overhead recompute | "
           "overhead captured | overhead, alternated: drifting | stable | pivot_rank ms: drifting | stable | "
           "pivot_rank / step | top_k ms |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for m in MODELS:
        for c in CONTEXTS:
            for r in RATIOS:
                none = ms(rows, f"monitored_step/{m}/{c}/{r}/none")
                if none is None:
                    continue
                rec = ms(rows, f"monitored_step/{m}/{c}/{r}/recompute")
                cap = ms(rows, f"monitored_step/{m}/{c}/{r}/captured")
                rank = {p: ms(rows, f"pivot_rank/{m}/{c}/{r}/{p}") for p in PIVOT_STATES}
                top = ms(rows, f"top_k/{m}/{c}/{r}")
                alternated = {p: rows.get(f"monitor_overhead/{m}/{c}/{r}/{p}", (None, None, None))[2] for p in PIVOT_STATES}
                pct = lambda x: f"{100 * (x / none - 1):+.0f}%" if x else ""
                share = lambda x: "" if x is None else f"{100 * x:+.0f}%"
                drifting = rank["drifting"]
                out.append(f"| {m} | {c} | {r} | {fmt(none)} | {fmt(rec)} | {fmt(cap)} | {pct(rec)} | {pct(cap)} | "
                           f"{share(alternated['drifting'])} | {share(alternated['stable'])} | "
                           f"{fmt(drifting, 3)} | {fmt(rank['stable'], 3)} | "
                           f"{fmt(100 * drifting / none if drifting else None, 1)}% | {fmt(top, 3)} |")
    refill = [(n, v) for n, v in rows.items() if n.startswith("refill/")]
    if refill:
        out += ["", "| refill | ms | GB/s |", "|---|---|---|"]
        for n, (t, b, *_) in sorted(refill):
            out.append(f"| {n.removeprefix('refill/')} | {fmt(t / 1e3, 3)} | {fmt(b / 1e9 if b else None)} |")
    return out


def step_overhead_table(rows):
    """The v2 layer step against the v1 CSR rebuild, per layer step (counters of `step_overhead`)."""
    out = ["| context | batch | page | series | new us/step (median step) | baseline us/step (median step) | "
           "baseline / new: means (median steps) | steps with a new page | new us, median: those steps | "
           "other steps | page ids rewritten | tokens per layer |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    cases = []
    for name, (_, _, _, b) in rows.items():
        if not name.startswith("step_overhead/"):
            continue
        parts = name.split("/")
        arguments = dict(p.split(":", 1) for p in parts if ":" in p)
        series = ", ".join(["staggered" if "staggered" in parts else "equal"] + (["warm"] if "warm" in parts else []))
        key = (int(arguments["page"]) != 16, int(arguments["batch"]), "staggered" in parts, int(parts[2][:-1]),
               "warm" in parts)
        cases.append((key, parts[2], arguments, series, b))
    for _, context, arguments, series, b in sorted(cases):
        page = b.get("new_page_step_median_us")
        flat = b.get("new_flat_step_median_us")
        alternated = "baseline_us" in b
        baseline = f"{fmt(b['baseline_us'], 1)} ({fmt(b['baseline_median_us'], 1)})" if alternated else ""
        ratio = f"{fmt(b['ratio'], 1)} ({fmt(b['baseline_median_us'] / b['new_median_us'], 1)})" if alternated else ""
        tokens = f"{b['tokens']:.0f}" if alternated else ""
        out.append(f"| {context} | {arguments['batch']} | {arguments['page']} | {series} | "
                   f"{fmt(b['new_us'], 1)} ({fmt(b['new_median_us'], 1)}) | {baseline} | {ratio} | "
                   f"{100 * b['page_steps']:.0f}% | {fmt(page, 1)} | {fmt(flat, 1)} | "
                   f"{b['pages_rewritten']:.0f} | {tokens} |")
    return out


def main(paths):
    if not paths:
        print(__doc__, file=sys.stderr)
        return 2
    for path in paths:
        rows = load(path)
        print(f"## {path}\n")
        if any(n.startswith("attention") for n in rows):
            print("\n".join(attention_tables(rows)) + "\n")
        if any(n.startswith(("monitored_step", "refill")) for n in rows):
            print("\n".join(monitor_tables(rows)) + "\n")
        if any(n.startswith("step_overhead/") for n in rows):
            print("\n".join(step_overhead_table(rows)) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
