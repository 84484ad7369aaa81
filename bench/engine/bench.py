#!/usr/bin/env python3
"""Side-by-side speed of examples/llama (heterocache-llama) and llama.cpp on one GGUF file.

Run it through bench/engine/run.sh (which uses the private venv holding llama-cpp-python); see
bench/engine/README.md. Every measurement is one process: a prompt of (context - max_new - 1) tokens,
the same token ids for both engines (the engine's passkey prompt, `heterocache-llama --passkey
--tokenize`), prefilled, then max_new tokens generated greedily past any end of turn (max_new - 1
decode steps, timed apart from the prefill). Configurations are alternated round-robin, each round in
a rotated order; the tables report medians over the rounds and ratios against the peer (the faster
llama.cpp configuration at that context).

Standard library only, except the llama.cpp worker (`_llama_cpp_worker`), which imports llama_cpp.
"""
from __future__ import annotations

import argparse
import csv
import datetime as _dt
import json
import math
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEFAULT_ENGINE = REPO / "build/examples/llama/heterocache-llama"
DEFAULT_READ_BENCH = REPO / "build/bench/heterocache-bench"  # its memory/read: the plain read of 256 MiB
MAX_ROPE_SCALE = 64.0  # the largest heterocache-llama --rope-scale (llama_model::kMaxRopeScale)
DEFAULT_MODEL = Path.home() / ".cache/heterocache/models/SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_PROFILE = REPO / "examples/llama/profiles/smollm2-135m-instruct.hcprofile"
PASSKEY_SEED = 42
PASSKEY_DEPTH = 0.5
LOAD_TAU_S = 60.0  # the kernel's 1-minute load average: exponential with a 60 s time constant


def die(msg: str) -> None:
    print(f"bench/engine: error: {msg}", file=sys.stderr)
    sys.exit(1)


def ctx_label(n: int) -> str:
    return f"{n // 1024}K" if n % 1024 == 0 else str(n)


# ----------------------------------------------------------------------------------------------
# llama.cpp worker: runs in its own process (one per measurement), prints one JSON line.
# ----------------------------------------------------------------------------------------------
def llama_cpp_worker(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="bench.py _llama_cpp_worker")
    ap.add_argument("--model", required=True)
    ap.add_argument("--ids", help="file with the prompt's comma-separated token ids")
    ap.add_argument("--n-ctx", type=int, default=0)
    ap.add_argument("--flash-attn", choices=["auto", "off", "on"], default="auto")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-new", type=int, default=64)
    ap.add_argument("--rope-scale", type=float, default=1.0, help="linear RoPE scaling factor (1: none)")
    ap.add_argument("--probe", action="store_true", help="load the model, print its facts, exit")
    a = ap.parse_args(argv)

    import ctypes

    import llama_cpp as L

    L.llama_backend_init()
    mp = L.llama_model_default_params()
    model = L.llama_model_load_from_file(a.model.encode(), mp)
    if not model:
        print(json.dumps({"error": f"llama.cpp could not load {a.model}"}))
        return 1
    info = {
        "llama_cpp_python": L.__version__,
        "n_ctx_train": int(L.llama_model_n_ctx_train(model)),
        "system_info": (L.llama_print_system_info() or b"").decode(errors="replace").strip(),
    }
    if a.probe:
        print(json.dumps(info))
        return 0

    ids = [int(t) for t in Path(a.ids).read_text().strip().split(",") if t]
    cp = L.llama_context_default_params()  # llama.cpp's own defaults: f16 KV, n_batch 2048, n_ubatch 512
    cp.n_ctx = a.n_ctx
    cp.n_threads = a.threads
    cp.n_threads_batch = a.threads
    if a.rope_scale != 1.0:  # linear position interpolation, as heterocache-llama --rope-scale
        cp.rope_scaling_type = L.LLAMA_ROPE_SCALING_TYPE_LINEAR
        cp.rope_freq_scale = 1.0 / a.rope_scale
    if a.flash_attn == "off":
        cp.flash_attn_type = L.LLAMA_FLASH_ATTN_TYPE_DISABLED
    elif a.flash_attn == "on":
        cp.flash_attn_type = L.LLAMA_FLASH_ATTN_TYPE_ENABLED
    info.update(n_batch=int(cp.n_batch), n_ubatch=int(cp.n_ubatch), type_k=int(cp.type_k), type_v=int(cp.type_v))
    ctx = L.llama_init_from_model(model, cp)
    if not ctx:
        print(json.dumps({"error": "llama_init_from_model failed"}))
        return 1
    vocab = L.llama_model_get_vocab(model)
    smpl = L.llama_sampler_init_greedy()
    one = (L.llama_token * 1)()

    def decode(arr, n: int) -> None:
        rc = L.llama_decode(ctx, L.llama_batch_get_one(arr, n))
        if rc != 0:
            raise RuntimeError(f"llama_decode returned {rc}")

    def piece(tok: int) -> str:
        buf = ctypes.create_string_buffer(256)
        n = L.llama_token_to_piece(vocab, tok, buf, len(buf), 0, False)
        return buf.raw[: max(n, 0)].decode("utf-8", errors="replace")

    # Warm-up (as llama-cli and llama-bench do): one token, then an empty KV; pages the mmapped
    # weights in and allocates the compute buffers outside the timers.
    one[0] = ids[0]
    decode(one, 1)
    L.llama_memory_clear(L.llama_get_memory(ctx), True)

    t0 = time.perf_counter()
    step = max(1, int(cp.n_batch))
    for i in range(0, len(ids), step):
        chunk = ids[i : i + step]
        decode((L.llama_token * len(chunk))(*chunk), len(chunk))
    prefill_s = time.perf_counter() - t0

    gen = []
    t0 = time.perf_counter()
    tok = L.llama_sampler_sample(smpl, ctx, -1)
    gen.append(tok)
    for _ in range(a.max_new - 1):  # no end-of-turn check: the decode never stops early
        one[0] = tok
        decode(one, 1)
        tok = L.llama_sampler_sample(smpl, ctx, -1)
        gen.append(tok)
    decode_s = time.perf_counter() - t0

    prompt_text = "".join(piece(t) for t in ids)
    m = re.search(r"The pass key is (\d+)", prompt_text)
    text = "".join(piece(t) for t in gen)
    info.update(
        prompt_tokens=len(ids),
        prefill_s=prefill_s,
        decode_steps=a.max_new - 1,
        decode_s=decode_s,
        answer=text,
        key=m.group(1) if m else None,
        found=(m.group(1) in text) if m else None,
    )
    print(json.dumps(info))
    L.llama_sampler_free(smpl)
    L.llama_free(ctx)
    L.llama_model_free(model)
    return 0


# ----------------------------------------------------------------------------------------------
# measurement of one child process: wall time, rusage, the machine's load
# ----------------------------------------------------------------------------------------------
def busy_seconds() -> float:
    """Non-idle CPU time of the whole machine (all cores), steal included, in seconds."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    user, nice, system, idle, iowait, irq, softirq = v[:7]
    steal = v[7] if len(v) > 7 else 0
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


class LoadTracker:
    """Estimates how much of the 1-minute load average is this benchmark's own children.

    The kernel's load1 is an exponential average (60 s) of the runnable threads; ours are the child's
    CPU time over its wall time while it runs and none between runs. load1 minus that estimate is
    what the other users of the machine add."""

    def __init__(self) -> None:
        self.own = 0.0
        self.t = time.monotonic()

    def idle_until(self, t: float) -> None:
        self.own *= math.exp(-(t - self.t) / LOAD_TAU_S)
        self.t = t

    def ran(self, t_start: float, t_end: float, threads: float) -> None:
        self.idle_until(t_start)
        a = math.exp(-(t_end - t_start) / LOAD_TAU_S)
        self.own = self.own * a + threads * (1 - a)
        self.t = t_end


def others_now(sample_s: float = 1.0) -> float:
    """Cores the machine is busy with while this benchmark runs nothing (all of it is the others')."""
    b0, t0 = busy_seconds(), time.monotonic()
    time.sleep(sample_s)
    return max(0.0, (busy_seconds() - b0) / (time.monotonic() - t0))


def wait_quiet(limit_s: float, threshold: float) -> tuple[float, float]:
    """Samples the others' CPU use for 1 s; with limit_s > 0, keeps waiting (up to limit_s) while it is
    above threshold. Returns (others' cores in the last sample, seconds waited)."""
    t0 = time.monotonic()
    busy = others_now()
    announced = False
    while busy > threshold and time.monotonic() - t0 < limit_s:
        if not announced:
            print(f"(waiting for a quiet machine: others use {busy:.2f} cores) ", end="", flush=True)
            announced = True
        time.sleep(4)
        busy = others_now()
    return busy, time.monotonic() - t0


def child_priority(nice: int):
    """preexec_fn giving the child `nice`. The kernel's autogroups (sched_autogroup_enabled) share the CPU
    between sessions first and apply a process's nice only within its session, so the child also becomes
    a session of its own, and that session's autogroup gets the same nice (it ends with the child)."""
    def setup() -> None:
        os.setsid()
        try:
            with open("/proc/self/autogroup", "w") as f:
                f.write(str(nice))
        except OSError:
            pass
        os.setpriority(os.PRIO_PROCESS, 0, nice)
    return setup


def run_measured(cmd: list[str], timeout_s: float, tracker: LoadTracker, nice: int = 0) -> dict:
    la_start = os.getloadavg()
    t_start = time.monotonic()
    tracker.idle_until(t_start)
    own_start = tracker.own
    busy0 = busy_seconds()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        p = subprocess.Popen(cmd, stdout=out, stderr=err, cwd=REPO, preexec_fn=child_priority(nice) if nice else None)
        while True:
            try:
                pid, status, ru = os.wait4(p.pid, os.WNOHANG)
            except BaseException:  # interrupted: the child may be in its own session (--nice)
                p.kill()
                raise
            if pid:
                break
            if time.monotonic() - t_start > timeout_s:
                p.kill()
                pid, status, ru = os.wait4(p.pid, 0)
                p.returncode = -9
                out.seek(0), err.seek(0)
                raise RuntimeError(f"timed out after {timeout_s:.0f} s: {' '.join(cmd)}\n"
                                   + err.read().decode(errors="replace")[-3000:])
            time.sleep(0.05)
        p.returncode = os.waitstatus_to_exitcode(status)
        t_end = time.monotonic()
        busy1 = busy_seconds()
        out.seek(0), err.seek(0)
        stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    wall = t_end - t_start
    cpu = ru.ru_utime + ru.ru_stime
    tracker.ran(t_start, t_end, cpu / wall if wall > 0 else 0.0)
    others = max(0.0, (busy1 - busy0 - cpu) / wall) if wall > 0 else 0.0
    return dict(
        rc=p.returncode, stdout=stdout, stderr=stderr, wall_s=wall, cpu_s=cpu,
        peak_rss_mib=ru.ru_maxrss / 1024.0,  # KiB on Linux
        load1=la_start[0], load5=la_start[1], load15=la_start[2], load1_end=os.getloadavg()[0],
        load1_others=max(0.0, la_start[0] - own_start),
        others_cores=others,
    )


# ----------------------------------------------------------------------------------------------
# the configurations
# ----------------------------------------------------------------------------------------------
def make_configs(args) -> list[dict]:
    cfgs = [
        dict(key="llama.cpp", label="llama.cpp, defaults (flash attn auto)", kind="llama.cpp", fa="auto"),
        dict(key="llama.cpp-fa-off", label="llama.cpp, flash attn off", kind="llama.cpp", fa="off"),
        dict(key="full", label="heterocache-llama, full cache", kind="engine", args=["--policy", "full"]),
    ]
    for r in args.budgets:
        cfgs.append(dict(key=f"hc-{r:g}", label=f"heterocache-llama, HeteroCache r = {r:g}", kind="engine",
                         args=["--policy", "heterocache", "--budget", f"{r:g}", "--profile", str(args.profile)]))
    if args.configs:
        want = args.configs.split(",")
        unknown = [w for w in want if w not in {c["key"] for c in cfgs}]
        if unknown:
            die(f"unknown --configs {unknown}; known: {[c['key'] for c in cfgs]}")
        cfgs = [c for c in cfgs if c["key"] in want]
    return cfgs


def rope_args(rope_scale: float) -> list[str]:
    return ["--rope-scale", f"{rope_scale:g}"] if rope_scale != 1.0 else []


def engine_cmd(args, cfg: dict, target: int, rope_scale: float = 1.0) -> list[str]:
    return [str(args.engine), "--model", str(args.model), "--passkey", "--context", str(target),
            "--seed", str(PASSKEY_SEED), "--depth", str(PASSKEY_DEPTH), "--max-new", str(args.max_new),
            "--ignore-eos", "--threads", str(args.threads), "--quiet", *rope_args(rope_scale), *cfg["args"],
            *args.engine_arg]


def llama_cmd(args, cfg: dict, n_ctx: int, ids_file: Path, rope_scale: float = 1.0) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), "_llama_cpp_worker", "--model", str(args.model),
            "--ids", str(ids_file), "--n-ctx", str(n_ctx), "--flash-attn", cfg["fa"],
            "--threads", str(args.threads), "--max-new", str(args.max_new), *rope_args(rope_scale)]


def parse_engine(stdout: str) -> dict:
    def grab(pattern, conv=float):
        m = re.search(pattern, stdout)
        if not m:
            raise ValueError(f"no '{pattern}' in the engine's output")
        return conv(m.group(1))

    prompt = grab(r"prompt (\d+) tokens", int)
    pre_s = grab(r"prefill [\d.]+ tok/s \(([\d.]+) s\)")
    steps = grab(r"decode (\d+) tokens", int)
    dec_tps = grab(r"decode \d+ tokens, ([\d.]+) tok/s")
    m = re.search(r"after profiling", stdout)
    out = dict(prompt_tokens=prompt, prefill_s=pre_s, prefill_tps=prompt / pre_s if pre_s > 0 else 0.0,
               decode_steps=steps, decode_tps=dec_tps, profiling_in_decode=bool(m))
    m = re.search(r"hot KV ([\d.]+) MiB, (\d+) tokens", stdout)
    if m:
        out.update(hot_kv_mib=float(m.group(1)), hot_kv_tokens=int(m.group(2)))
    m = re.search(r"weights read ([\d.]+) MiB per step", stdout)
    if m:
        out["weights_mib"] = float(m.group(1))
    m = re.search(r"peak RSS (\d+) MiB", stdout)
    if m:
        out["engine_vmhwm_mib"] = float(m.group(1))
    m = re.search(r"^match: (yes|no)", stdout, re.M)
    out["found"] = (m.group(1) == "yes") if m else None
    m = re.search(r"^passkey: (\d+)", stdout, re.M)
    out["key"] = m.group(1) if m else None
    m = re.search(r"^answer: (.*)$", stdout, re.M)
    out["answer"] = m.group(1) if m else None
    return out


def measure(args, cfg: dict, n_ctx: int, prompt: dict, tracker: LoadTracker) -> dict:
    if cfg["kind"] == "engine":
        cmd = engine_cmd(args, cfg, prompt["target"], prompt["rope_scale"])
    else:
        cmd = llama_cmd(args, cfg, n_ctx, prompt["ids_file"], prompt["rope_scale"])
    before, waited = wait_quiet(args.wait_quiet, args.quiet_threshold)
    r = run_measured(cmd, args.timeout, tracker, args.nice)
    r.update(others_before=before, waited_s=waited)
    if r["rc"] != 0:
        raise RuntimeError(f"{cfg['key']} at {ctx_label(n_ctx)} exited with {r['rc']}: {' '.join(cmd)}\n"
                           f"{r['stdout'][-2000:]}\n{r['stderr'][-3000:]}")
    if cfg["kind"] == "engine":
        res = parse_engine(r["stdout"])
        if res["prompt_tokens"] != prompt["tokens"]:
            raise RuntimeError(f"the engine prefilled {res['prompt_tokens']} tokens, --tokenize gave {prompt['tokens']}")
    else:
        line = r["stdout"].strip().splitlines()[-1] if r["stdout"].strip() else "{}"
        res = json.loads(line)
        if "error" in res:
            raise RuntimeError(res["error"] + "\n" + r["stderr"][-3000:])
        res["prefill_tps"] = res["prompt_tokens"] / res["prefill_s"]
        res["decode_tps"] = res["decode_steps"] / res["decode_s"]
        fa = [ln.strip() for ln in r["stderr"].splitlines() if re.search(r"flash_attn\s+=|Flash Attention", ln)]
        res["flash_attn_log"] = fa[-3:]
        res.pop("system_info", None)
    if res.get("decode_steps") != args.max_new - 1:
        raise RuntimeError(f"{cfg['key']}: {res.get('decode_steps')} decode steps, expected {args.max_new - 1}")
    for k in ("stdout", "stderr", "rc"):
        r.pop(k)
    res.update(r)
    return res


def measure_read(args) -> float:
    """The machine's plain read bandwidth now, in GB/s (10^9 bytes): the median of 3 repetitions of
    heterocache-bench's sum over 256 MiB on --threads threads, at the measured processes' nice."""
    cmd = [str(args.read_bench), f"--benchmark_filter=^memory/read/256MiB/threads:{args.threads}(/|$)",
           "--benchmark_repetitions=3", "--benchmark_format=json"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                       preexec_fn=child_priority(args.nice) if args.nice else None)
    if r.returncode != 0:
        raise RuntimeError(f"the plain read failed ({r.returncode}): {' '.join(cmd)}\n{r.stderr[-2000:]}")
    medians = [b["bytes_per_second"] for b in json.loads(r.stdout)["benchmarks"] if b.get("aggregate_name") == "median"]
    if not medians:
        raise RuntimeError(f"no median in the output of {' '.join(cmd)} (is --threads {args.threads} one of its 1, 2?)")
    return medians[0] / 1e9


# ----------------------------------------------------------------------------------------------
# tables
# ----------------------------------------------------------------------------------------------
def med(rows, key):
    v = [r[key] for r in rows if r.get(key) is not None]
    return statistics.median(v) if v else None


def summarize(rows: list[dict], cfgs: list[dict], contexts: list[int]) -> dict:
    S: dict = {}
    for c in cfgs:
        for n in contexts:
            rr = [r for r in rows if r["config"] == c["key"] and r["context"] == n]
            if not rr:
                continue
            S[(c["key"], n)] = dict(
                n=len(rr), decode_tps=med(rr, "decode_tps"), prefill_tps=med(rr, "prefill_tps"),
                peak_rss_mib=med(rr, "peak_rss_mib"),
                decode_min=min(r["decode_tps"] for r in rr), decode_max=max(r["decode_tps"] for r in rr),
                found=sum(1 for r in rr if r.get("found")), load1=med(rr, "load1"),
                load1_others_max=max(r["load1_others"] for r in rr),
                others_max=max(r["others_cores"] for r in rr),
                others_before_max=max(r.get("others_before", 0.0) for r in rr), warnings=sum(1 for r in rr if r.get("warning")))
    peers = {}
    for n in contexts:
        ll = [(S[(c["key"], n)], c["key"]) for c in cfgs if c["kind"] == "llama.cpp" and (c["key"], n) in S]
        if ll:
            peers[n] = dict(decode=max(ll, key=lambda x: x[0]["decode_tps"])[1],
                            prefill=max(ll, key=lambda x: x[0]["prefill_tps"])[1])
    return dict(cells=S, peers=peers)


def fmt_ratio(v, peer):
    if v is None:
        return "–"
    if peer is None or peer == 0:
        return f"{v:.1f}"
    return f"{v:.1f} ({v / peer:.2f}x)"


def tables_md(summary: dict, cfgs: list[dict], contexts: list[int], rounds: int, meta: dict) -> str:
    S, P = summary["cells"], summary["peers"]
    head = "| configuration | " + " | ".join(ctx_label(n) for n in contexts) + " |\n"
    sep = "|---|" + "---:|" * len(contexts) + "\n"

    def table(metric, peer_kind, peer_metric):
        s = head + sep
        for c in cfgs:
            cells = []
            for n in contexts:
                cell = S.get((c["key"], n))
                peer_key = P.get(n, {}).get(peer_kind)
                peer = S.get((peer_key, n), {}).get(peer_metric) if peer_key else None
                txt = fmt_ratio(cell[metric], peer) if cell else "–"
                if peer_key == c["key"]:
                    txt = f"**{txt}**"
                cells.append(txt)
            s += f"| {c['label']} | " + " | ".join(cells) + " |\n"
        return s

    out = []
    def rope_note(n: int) -> str:
        f = meta["prompts"][str(n)].get("rope_scale", 1.0)
        return f" (linear RoPE scaling x{f:g} on both engines)" if f != 1.0 else ""
    prompt_tok = ", ".join(f"{ctx_label(n)}: {meta['prompts'][str(n)]['tokens']}{rope_note(n)}" for n in contexts)
    out.append(f"Medians of {rounds} alternated round(s); ratios against the peer (**bold**: the faster llama.cpp "
               f"configuration at that context). {meta['threads']} threads, {meta['max_new']} tokens generated "
               f"({meta['max_new'] - 1} decode steps) after a prompt of context − {meta['max_new'] + 1} tokens "
               f"(prompt tokens {prompt_tok}).\n")
    out.append("**Decode tok/s** (higher is better)\n\n" + table("decode_tps", "decode", "decode_tps"))
    out.append("**Prefill tok/s** (higher is better; peer: the faster llama.cpp prefill)\n\n"
               + table("prefill_tps", "prefill", "prefill_tps"))
    base = meta.get("llama_cpp_python_baseline_rss_mib")
    out.append("**Peak RSS MiB** (lower is better; ratio against the decode peer's"
               + (f"; the llama.cpp rows include {base:.0f} MiB of Python interpreter and imports, measured "
                  f"without a model" if base else "") + ")\n\n"
               + table("peak_rss_mib", "decode", "peak_rss_mib"))
    s = head + sep
    for c in cfgs:
        s += f"| {c['label']} | " + " | ".join(
            f"{S[(c['key'], n)]['found']}/{S[(c['key'], n)]['n']}" if (c["key"], n) in S else "–" for n in contexts) + " |\n"
    out.append("**Passkey found** (rounds; the answer is read from the 64 generated tokens)\n\n" + s)
    s = ("| context | load1 at start, median [min–max] | others' load1, max | others' cores just before, max | "
         "others' cores during, max | decode spread, max/min − 1 (worst config) | runs warned |\n"
         "|---|---|---:|---:|---:|---:|---:|\n")
    for n in contexts:
        rr = [S[(c["key"], n)] for c in cfgs if (c["key"], n) in S]
        raw = [r for r in meta["rows"] if r["context"] == n]
        if not rr:
            continue
        l1 = [r["load1"] for r in raw]
        spread = max((x["decode_max"] / x["decode_min"] - 1) for x in rr if x["decode_min"] > 0)
        s += (f"| {ctx_label(n)} | {statistics.median(l1):.2f} [{min(l1):.2f}–{max(l1):.2f}] | "
              f"{max(x['load1_others_max'] for x in rr):.2f} | {max(x['others_before_max'] for x in rr):.2f} | "
              f"{max(x['others_max'] for x in rr):.2f} | "
              f"{spread * 100:.0f} % | {sum(x['warnings'] for x in rr)} |\n")
    out.append("**Machine load** (load1 includes this benchmark's own threads; \"others'\" subtracts them, see "
               "bench/engine/README.md)\n\n" + s)
    return "\n".join(out)


def goal_lines(summary: dict, contexts: list[int], budgets: list[float]) -> list[str]:
    """Issue 15's goal, as ratios against the peer."""
    S, P = summary["cells"], summary["peers"]

    def ratio(key, n, metric, peer_kind):
        peer = P.get(n, {}).get(peer_kind)
        a, b = S.get((key, n)), S.get((peer, n)) if peer else None
        if not a or not b or not b[metric]:
            return None
        return a[metric] / b[metric]

    lines = []

    def check(text, r, ok):
        if r is not None:
            lines.append(f"- {text}: {r:.2f}x — {'met' if ok(r) else 'not met'}")

    for n in contexts:
        check(f"full-cache decode at {ctx_label(n)} >= 1.0x", ratio("full", n, "decode_tps", "decode"), lambda r: r >= 1.0)
    hc = "hc-0.25" if 0.25 in budgets else None
    if hc:
        for n, want in ((8192, 3.0), (4096, 1.5)):
            r = ratio(hc, n, "decode_tps", "decode")
            if r is not None:
                cell = S[(hc, n)]
                found = f", passkey {cell['found']}/{cell['n']}"
                lines.append(f"- HeteroCache r = 0.25 decode at {ctx_label(n)} >= {want:g}x: {r:.2f}x{found} — "
                             f"{'met' if r >= want and cell['found'] == cell['n'] else 'not met'}")
    if 4096 in contexts:
        check("full-cache prefill at 4K >= 0.5x", ratio("full", 4096, "prefill_tps", "prefill"), lambda r: r >= 0.5)
    if 8192 in contexts:
        r = ratio("full", 8192, "peak_rss_mib", "decode")
        check("full-cache peak RSS at 8K <= 1.5x", r, lambda r: r <= 1.5)
    return lines


def bandwidth(meta: dict, cfgs: list[dict], contexts: list[int]) -> dict:
    """Per engine configuration and context: the bytes one decode step reads (the weights it reads plus the
    hot KV it attends, both as the engine reports them), the GB/s that makes at its decode speed, and that
    over the plain read measured in the same round at the same context (medians over the rounds)."""
    reads = {(r["round"], r["context"]): r["gbps"] for r in meta.get("reads", [])}
    out = {}
    for c in cfgs:
        for n in contexts:
            rr = [r for r in meta["rows"] if r["config"] == c["key"] and r["context"] == n
                  and r.get("weights_mib") is not None and r.get("hot_kv_mib") is not None]
            if not rr:
                continue
            mb = [(r["weights_mib"] + r["hot_kv_mib"]) * 2**20 / 1e6 for r in rr]
            gbps = [m * r["decode_tps"] / 1e3 for m, r in zip(mb, rr)]
            same_round = [(g, reads[(r["round"], n)]) for g, r in zip(gbps, rr) if reads.get((r["round"], n))]
            out[(c["key"], n)] = dict(
                mb=statistics.median(mb), gbps=statistics.median(gbps),
                read=statistics.median(read for _, read in same_round) if same_round else None,
                of_read=statistics.median(g / read for g, read in same_round) if same_round else None)
    return out


def bandwidth_md(bw: dict, cfgs: list[dict], contexts: list[int]) -> str:
    head = ("| configuration | " + " | ".join(f"{ctx_label(n)}: MB/step, GB/s (of the read)" for n in contexts) + " |\n"
            + "|---|" + "---:|" * len(contexts) + "\n")
    s = head
    for c in cfgs:
        if not any((c["key"], n) in bw for n in contexts):
            continue
        cells = []
        for n in contexts:
            b = bw.get((c["key"], n))
            cells.append("–" if not b else f"{b['mb']:.0f}, {b['gbps']:.1f}"
                         + (f" ({b['of_read']:.2f})" if b["of_read"] is not None else ""))
        s += f"| {c['label']} | " + " | ".join(cells) + " |\n"
    reads = [f"{ctx_label(n)} {b['read']:.1f}" for n in contexts
             if (b := next((x for (key, m), x in bw.items() if m == n and x["read"]), None))]
    if reads:
        s += "\nThe plain read (heterocache-bench memory/read, 256 MiB, same threads, measured after each context's runs in every round), median GB/s: " + ", ".join(reads) + ".\n"
    return s


# ----------------------------------------------------------------------------------------------
# main
# ----------------------------------------------------------------------------------------------
def git_describe() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True).stdout.strip()
        return head + ("+dirty" if dirty else "")
    except OSError:
        return "unknown"


def cpu_model() -> str:
    try:
        for ln in open("/proc/cpuinfo"):
            if ln.startswith("model name"):
                return ln.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "_llama_cpp_worker":
        return llama_cpp_worker(sys.argv[2:])
    try:
        return bench_main()
    finally:
        if _IDS_DIR:
            shutil.rmtree(_IDS_DIR, ignore_errors=True)


_IDS_DIR: Path | None = None


def _terminated(signum, frame):
    raise KeyboardInterrupt


def bench_main() -> int:
    global _IDS_DIR
    signal.signal(signal.SIGTERM, _terminated)  # kill: keep what was measured, remove the temporary files

    ap = argparse.ArgumentParser(
        prog="bench/engine/run.sh",
        description="Alternated side-by-side decode/prefill speed: llama.cpp against heterocache-llama.")
    ap.add_argument("--quick", action="store_true", help="1K and 4K context, 1 round (a few minutes)")
    ap.add_argument("--contexts", default="1024,4096,8192",
                    help="comma-separated context sizes in tokens (default 1024,4096,8192; beyond the model's "
                         "training context, 8192 for SmolLM2-135M, both engines run with linear RoPE scaling by "
                         "context / training context)")
    ap.add_argument("--rounds", type=int, default=3, help="alternated rounds (default 3; medians over them)")
    ap.add_argument("--max-new", type=int, default=64, help="tokens generated per measurement (default 64, >= 64 for a report)")
    ap.add_argument("--threads", type=int, default=2, help="threads for both engines (default 2)")
    ap.add_argument("--budgets", default="0.5,0.25", help="HeteroCache kept fractions r (default 0.5,0.25)")
    ap.add_argument("--configs", default="", help="only these configuration keys (llama.cpp, llama.cpp-fa-off, full, hc-R)")
    ap.add_argument("--engine", default=str(DEFAULT_ENGINE), help="heterocache-llama binary (default build/examples/llama/)")
    ap.add_argument("--engine-rev", default="",
                    help="what the engine was built from, for the report (default: this checkout's git HEAD, +dirty)")
    ap.add_argument("--engine-arg", action="append", default=[],
                    help="extra argument for every heterocache-llama run (repeat; e.g. --engine-arg=--kv-format --engine-arg=bf16)")
    ap.add_argument("--read-bench", default=str(DEFAULT_READ_BENCH),
                    help="heterocache-bench, whose plain read is measured after each context's runs in every round "
                         "(default build/bench/heterocache-bench; missing: no bandwidth table)")
    ap.add_argument("--model", default=os.environ.get("HETEROCACHE_MODEL") or str(DEFAULT_MODEL),
                    help="the GGUF file (default $HETEROCACHE_MODEL or ~/.cache/heterocache/models/SmolLM2-135M-Instruct.Q4_1.gguf)")
    ap.add_argument("--profile", default=str(DEFAULT_PROFILE), help="HeteroCache head profile")
    ap.add_argument("--out-dir", default=str(REPO / "build/engine-bench"), help="where the JSON/CSV/markdown go (default build/engine-bench)")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per measurement before it is killed (default 1800)")
    ap.add_argument("--warn-load", type=float, default=1.5, help="warn when the others' load1 exceeds this (default 1.5)")
    ap.add_argument("--warn-others", type=float, default=0.5,
                    help="warn when other processes took more than this many cores during a measurement (default 0.5)")
    ap.add_argument("--wait-quiet", type=float, default=0, metavar="S",
                    help="before each measurement, wait up to S seconds while other processes use more than "
                         "--quiet-threshold cores (default 0: only sample them for 1 s)")
    ap.add_argument("--nice", type=int, default=0, metavar="N",
                    help="run every measured process at this nice value (negative needs root: the measured "
                         "engines then take the CPU from the machine's other users while they run; default 0)")
    ap.add_argument("--retry-noisy", type=int, default=0, metavar="N",
                    help="measure again, up to N times, when other processes used more than --warn-others cores "
                         "during a measurement; the quietest try is kept (default 0)")
    ap.add_argument("--quiet-threshold", type=float, default=0.3, help="cores (default 0.3), see --wait-quiet")
    ap.add_argument("--report", metavar="JSON", help="print the tables of an earlier (or interrupted) run from its JSON, run nothing")
    ap.add_argument("--llama-cpp-python-pin", default="", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.report:
        try:
            meta = json.loads(Path(args.report).read_text())
        except (OSError, ValueError) as e:
            die(f"cannot read {args.report}: {e}")
        return report(meta, Path(args.report))

    if args.quick:
        args.contexts, args.rounds = "1024,4096", 1
    try:
        contexts = [int(x) for x in args.contexts.split(",") if x]
        args.budgets = [float(x) for x in args.budgets.split(",") if x]
    except ValueError as e:
        die(f"bad --contexts/--budgets: {e}")
    if args.rounds < 1:
        die("--rounds must be >= 1")
    if args.max_new < 2:
        die("--max-new must be >= 2")
    if any(not 0 < r <= 1 for r in args.budgets):
        die("--budgets must be in (0, 1]")
    args.engine, args.model, args.profile = Path(args.engine), Path(args.model), Path(args.profile)
    args.read_bench = Path(args.read_bench)
    if not (args.read_bench.is_file() and os.access(args.read_bench, os.X_OK)):
        print(f"bench/engine: no {args.read_bench} (cmake --build build --target heterocache-bench): the plain read "
              f"is not measured, no bandwidth table", file=sys.stderr)
        args.read_bench = None
    cfgs = make_configs(args)

    # ---- preflight: everything checked before the first measurement ----
    if not (args.engine.is_file() and os.access(args.engine, os.X_OK)):
        die(f"no engine at {args.engine}: build it first\n"
            "    cmake -S . -B build -DCMAKE_BUILD_TYPE=Release && cmake --build build --target heterocache-llama\n"
            "  (or pass --engine PATH)")
    if not args.model.is_file():
        die(f"no model file {args.model} (scripts/fetch-model.sh downloads it; or set HETEROCACHE_MODEL / --model)")
    if any(c["kind"] == "engine" and c["key"].startswith("hc-") for c in cfgs) and not args.profile.is_file():
        die(f"no head profile {args.profile}")
    try:
        import llama_cpp  # noqa: F401  (imported here only to fail early; the workers import it again)
    except ImportError:
        die("llama_cpp is not importable by this Python: run bench/engine/run.sh --install, then bench/engine/run.sh")
    help_text = subprocess.run([str(args.engine), "--help"], capture_output=True, text=True).stdout
    missing = [f for f in ("--passkey", "--tokenize", "--ignore-eos", "--threads", "--max-new", "--policy", "--budget",
                           "--profile", "--quiet") if f not in help_text]
    if missing:
        die(f"{args.engine} lacks the flags {missing}")
    probe = subprocess.run([sys.executable, str(Path(__file__).resolve()), "_llama_cpp_worker", "--model",
                            str(args.model), "--probe"], capture_output=True, text=True)
    if probe.returncode != 0:
        die(f"llama.cpp could not load the model:\n{probe.stdout}\n{probe.stderr[-3000:]}")
    probe = json.loads(probe.stdout.strip().splitlines()[-1])
    n_train = probe["n_ctx_train"]
    # A context beyond the training context runs both engines with linear RoPE scaling (position
    # interpolation) by n / n_train, so neither is measured on positions the model was not trained for.
    rope_scales = {n: (n / n_train if n > n_train else 1.0) for n in contexts}
    if any(f > MAX_ROPE_SCALE for f in rope_scales.values()):
        die(f"contexts {contexts} need a RoPE scale above {MAX_ROPE_SCALE:g} for the training context {n_train}")
    if any(f != 1.0 for f in rope_scales.values()) and "--rope-scale" not in help_text:
        die(f"{args.engine} lacks --rope-scale, needed beyond the training context {n_train}")
    if any(n <= args.max_new + 64 for n in contexts):
        die(f"every context must exceed --max-new + 64 ({args.max_new + 64})")

    # what the Python worker costs by itself (interpreter, numpy, llama_cpp loaded, no model)
    base = subprocess.Popen([sys.executable, "-c", "import llama_cpp; llama_cpp.llama_backend_init()"])
    _, _, ru = os.wait4(base.pid, 0)
    base.returncode = 0
    python_base_mib = ru.ru_maxrss / 1024.0

    if args.nice:
        try:
            subprocess.run(["true"], preexec_fn=child_priority(args.nice), check=True)
        except (subprocess.SubprocessError, OSError) as e:
            die(f"cannot run at nice {args.nice} (a negative value needs root): {e}")

    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    ids_dir = _IDS_DIR = Path(tempfile.mkdtemp(prefix="engine-bench-ids-"))
    prompts = {}
    for n in contexts:
        target = n - args.max_new - 1  # prompt + generated tokens + 1 fit in the context
        r = subprocess.run([str(args.engine), "--model", str(args.model), "--passkey", "--context", str(target),
                            "--seed", str(PASSKEY_SEED), "--depth", str(PASSKEY_DEPTH), "--tokenize", "--quiet"],
                           capture_output=True, text=True)
        if r.returncode != 0:
            die(f"{args.engine} --passkey --tokenize failed:\n{r.stderr[-2000:]}")
        ids = r.stdout.strip().splitlines()[-1]
        f = ids_dir / f"prompt-{n}.ids"
        f.write_text(ids)
        prompts[n] = dict(target=target, tokens=len(ids.split(",")), ids_file=f, rope_scale=rope_scales[n])

    la0 = os.getloadavg()
    meta = dict(
        date=_dt.datetime.now().astimezone().isoformat(timespec="seconds"), host=platform.node(), cpu=cpu_model(),
        cores=os.cpu_count(), engine=str(args.engine), engine_git=args.engine_rev or git_describe(), engine_args=args.engine_arg,
        model=str(args.model), model_bytes=args.model.stat().st_size, n_ctx_train=n_train,
        llama_cpp_python=probe["llama_cpp_python"], llama_cpp_python_pin=args.llama_cpp_python_pin,
        llama_cpp_system_info=probe["system_info"], nice=args.nice, threads=args.threads, max_new=args.max_new, rounds=args.rounds,
        contexts=contexts, configs=[{k: v for k, v in c.items()} for c in cfgs],
        passkey=dict(seed=PASSKEY_SEED, depth=PASSKEY_DEPTH),
        prompts={str(n): dict(target=p["target"], tokens=p["tokens"], rope_scale=p["rope_scale"]) for n, p in prompts.items()},
        load_at_start=la0, llama_cpp_python_baseline_rss_mib=python_base_mib, rows=[], reads=[])
    json_path, csv_path, md_path = (out_dir / f"engine-bench-{stamp}.{e}" for e in ("json", "csv", "md"))

    total = args.rounds * len(contexts) * len(cfgs)
    print(f"engine bench: {len(cfgs)} configurations x {len(contexts)} contexts x {args.rounds} rounds = {total} runs, "
          f"{args.threads} threads, {args.max_new} tokens generated per run"
          + (f", measured processes at nice {args.nice}" if args.nice else ""), flush=True)
    print(f"  model {args.model} (training context {n_train}); engine {args.engine} ({meta['engine_git']}); "
          f"llama-cpp-python {probe['llama_cpp_python']}", flush=True)
    print(f"  load average before the run: {la0[0]:.2f} {la0[1]:.2f} {la0[2]:.2f}", flush=True)
    if la0[0] > args.warn_load:
        print(f"  WARNING: load average {la0[0]:.2f} > {args.warn_load} before the first run: the machine is busy, "
              f"the numbers will be noisy", flush=True)
    print(f"  results: {json_path}", flush=True)

    tracker = LoadTracker()
    rows = meta["rows"]
    t_begin = time.monotonic()
    first_round_s = None
    k = 0
    try:
        for rnd in range(args.rounds):
            t_round = time.monotonic()
            for n in contexts:
                order = cfgs[rnd % len(cfgs):] + cfgs[: rnd % len(cfgs)]  # round-robin, rotated each round
                for c in order:
                    k += 1
                    print(f"[{k:>3}/{total}] round {rnd + 1} {ctx_label(n):>3} {c['key']:<16} ... ", end="", flush=True)
                    tries = []
                    while True:
                        res = measure(args, c, n, prompts[n], tracker)
                        warn = []
                        if res["load1_others"] > args.warn_load:
                            warn.append(f"others' load1 {res['load1_others']:.2f} > {args.warn_load}")
                        if res["others_before"] > args.warn_others:
                            warn.append(f"other processes used {res['others_before']:.2f} cores just before")
                        if res["others_cores"] > args.warn_others:
                            warn.append(f"other processes used {res['others_cores']:.2f} cores")
                        res.update(round=rnd + 1, context=n, config=c["key"], warning="; ".join(warn) or None)
                        tries.append(res)
                        print(f"prefill {res['prefill_tps']:7.1f} tok/s  decode {res['decode_tps']:6.1f} tok/s  "
                              f"RSS {res['peak_rss_mib']:6.0f} MiB  found {'yes' if res.get('found') else 'no '}  "
                              f"| load {res['load1']:.2f} (others {res['load1_others']:.2f}; cores {res['others_before']:.2f} "
                              f"before, {res['others_cores']:.2f} during)  "
                              f"{res['wall_s']:5.0f} s" + (f"  WARNING: {res['warning']}" if warn else ""), flush=True)
                        if res["others_cores"] <= args.warn_others or len(tries) > args.retry_noisy:
                            break
                        print(f"          noisy (others used {res['others_cores']:.2f} cores during it): measuring "
                              f"again ({len(tries)}/{args.retry_noisy}) ... ", end="", flush=True)
                    # keep the quietest try; the others stay in the JSON
                    res = min(tries, key=lambda r: r["others_cores"])
                    res["discarded_tries"] = [{k_: t[k_] for k_ in ("prefill_tps", "decode_tps", "peak_rss_mib",
                                                                    "others_cores", "load1")}
                                              for t in tries if t is not res]
                    rows.append(res)
                    json_path.write_text(json.dumps(meta, indent=1, default=str))  # kept up to date
                if args.read_bench:
                    gbps = measure_read(args)
                    meta["reads"].append(dict(round=rnd + 1, context=n, gbps=gbps))
                    print(f"          round {rnd + 1} {ctx_label(n):>3} plain read {gbps:6.1f} GB/s", flush=True)
                    json_path.write_text(json.dumps(meta, indent=1, default=str))
            if first_round_s is None and args.rounds > 1:
                first_round_s = time.monotonic() - t_round
                print(f"  round 1 took {first_round_s / 60:.1f} min; about {first_round_s * (args.rounds - 1) / 60:.0f} "
                      f"min to go", flush=True)
    except KeyboardInterrupt:
        print(f"\ninterrupted: {len(rows)} runs kept in {json_path}", file=sys.stderr)
        return 130
    except (RuntimeError, ValueError) as e:
        print(f"\nbench/engine: error: {e}\n{len(rows)} runs kept in {json_path}", file=sys.stderr)
        return 1

    meta["elapsed_s"] = time.monotonic() - t_begin
    meta["load_at_end"] = os.getloadavg()
    return report(meta, json_path)


def report(meta: dict, json_path: Path) -> int:
    """The tables of a run (also of an interrupted one, from its JSON: --report)."""
    rows, cfgs, contexts, rounds = meta["rows"], meta["configs"], meta["contexts"], meta["rounds"]
    budgets = [float(c["key"][3:]) for c in cfgs if c["key"].startswith("hc-")]
    done = {(r["config"], r["context"]) for r in rows}
    contexts = [n for n in contexts if any((c["key"], n) in done for c in cfgs)]
    rounds_done = max((r["round"] for r in rows), default=0)
    summary = summarize(rows, cfgs, contexts)
    meta["summary"] = {f"{k_[0]}@{k_[1]}": v for k_, v in summary["cells"].items()}
    meta["peers"] = {str(n): v for n, v in summary["peers"].items()}
    fa_logs = sorted({ln for r in rows for ln in r.get("flash_attn_log", []) if r["config"] == "llama.cpp"})
    meta["llama_cpp_default_flash_attn_log"] = fa_logs
    json_path.write_text(json.dumps(meta, indent=1, default=str))
    csv_path, md_path = json_path.with_suffix(".csv"), json_path.with_suffix(".md")
    fields = ["round", "context", "config", "prompt_tokens", "prefill_s", "prefill_tps", "decode_steps", "decode_tps",
              "peak_rss_mib", "found", "load1", "load5", "load15", "load1_end", "load1_others", "others_before",
              "others_cores", "waited_s", "wall_s", "cpu_s", "hot_kv_mib", "hot_kv_tokens", "weights_mib", "warning"]
    with open(csv_path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)

    la0, la1 = meta["load_at_start"], meta.get("load_at_end")
    md = [f"### {meta['date'][:10]}: {meta['cpu']}, {meta['cores']} cores, engine {meta['engine_git']}"
          + (f" {' '.join(meta['engine_args'])}" if meta.get("engine_args") else "")
          + f", llama-cpp-python {meta['llama_cpp_python']}\n"]
    if la1 is None:
        md.append(f"**Incomplete run** (interrupted or still running): {len(rows)} of {rounds * len(meta['contexts']) * len(cfgs)} measurements, "
                  f"{rounds_done} round(s) begun; medians over what was measured.\n")
    md.append(tables_md(summary, cfgs, contexts, rounds if la1 is not None else rounds_done, meta))
    goals = goal_lines(summary, contexts, budgets)
    bw = bandwidth(meta, cfgs, contexts)
    if bw:
        md.append("**Bytes per decode step and bandwidth** (weights read plus hot KV attended, as the engine reports "
                  "them; GB/s = 10^9 bytes/s at the median decode speed; of the read: over the plain read of the "
                  "same round and context)\n\n" + bandwidth_md(bw, cfgs, contexts))
        full = [(n, bw[("full", n)]["of_read"]) for n in contexts if bw.get(("full", n), {}).get("of_read") is not None]
        if full:
            goals.append("- full-cache decode reads weights and KV at >= 0.6 of the plain read: "
                         + ", ".join(f"{ctx_label(n)} {f:.2f}" for n, f in full)
                         + f" — {'met' if all(f >= 0.6 for _, f in full) else 'not met'}")
    if goals:
        md.append("**Issue 15's goal** (ratios against the peer)\n\n" + "\n".join(goals) + "\n")
    line = (f"Measured processes at nice {meta['nice']}. " if meta.get("nice") else "")
    line += f"Load average before the run: {la0[0]:.2f} {la0[1]:.2f} {la0[2]:.2f}"
    if la1 is not None:
        line += f", after: {la1[0]:.2f} {la1[1]:.2f} {la1[2]:.2f}"
    line += f"; {sum(1 for r in rows if r['warning'])} of {len(rows)} runs warned"
    if meta.get("elapsed_s"):
        line += f"; {meta['elapsed_s'] / 60:.0f} min"
    md.append(line + ".\n")
    if fa_logs:
        md.append("llama.cpp's default flash attention resolved as: " + " / ".join(f"`{x}`" for x in fa_logs) + "\n")
    text = "\n".join(md)
    md_path.write_text(text)
    print("\n" + text)
    print(f"raw numbers: {json_path}\n             {csv_path}\ntables:      {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
