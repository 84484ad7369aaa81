#!/usr/bin/env python3
"""Independent float64 reference forward pass for llama-architecture GGUF models.

Reads and dequantizes the GGUF file with the `gguf` Python package
(gguf.GGUFReader + gguf.quants.dequantize) and runs the forward pass in
float64 with numpy. It does not tokenize: it takes token ids.

To be independent of the engine's RoPE convention, the Q/K weights are
un-permuted back to the Hugging Face layout (GGUF llama files store them
permuted for the adjacent-pair rotation) and the "rotate half" RoPE is used.

usage:
  reference_forward.py --model M.gguf --tokens 1,2,3 [--greedy N] [--save-logits out.npy]
prints the top-5 last-token logits, and with --greedy N the N greedily
generated token ids.
"""
import argparse
import sys

import numpy as np


def load_model(path):
    import gguf  # imported lazily so --help works without it

    r = gguf.GGUFReader(path)

    def field(key, default=None):
        f = r.fields.get(key)
        if f is None:
            return default
        v = f.parts[f.data[0]]
        if f.types[0] == gguf.GGUFValueType.STRING:
            return bytes(v).decode()
        return v[0].item()

    arch = field("general.architecture")
    if arch != "llama":
        raise SystemExit(f"unsupported architecture {arch!r}")
    cfg = dict(
        n_layer=int(field(f"{arch}.block_count")),
        n_embd=int(field(f"{arch}.embedding_length")),
        n_head=int(field(f"{arch}.attention.head_count")),
        n_head_kv=int(field(f"{arch}.attention.head_count_kv")),
        theta=float(field(f"{arch}.rope.freq_base", 10000.0)),
        eps=float(field(f"{arch}.attention.layer_norm_rms_epsilon", 1e-5)),
    )
    cfg["head_dim"] = cfg["n_embd"] // cfg["n_head"]
    w = {}
    for t in r.tensors:
        a = gguf.quants.dequantize(t.data, t.tensor_type)
        # numpy shape is the reverse of the GGUF dims: [out][in] for matrices
        shape = tuple(int(d) for d in reversed(t.shape.tolist()))
        w[t.name] = np.asarray(a, dtype=np.float64).reshape(shape)
    if "output.weight" not in w:
        w["output.weight"] = w["token_embd.weight"]

    def unpermute(m, n_head):
        # inverse of the llama.cpp conversion permute:
        # hf -> gguf: reshape(n_head, 2, hd/2, in).swapaxes(1, 2)
        out, inp = m.shape
        hd = out // n_head
        return m.reshape(n_head, hd // 2, 2, inp).swapaxes(1, 2).reshape(out, inp)

    for i in range(cfg["n_layer"]):
        w[f"blk.{i}.attn_q.weight"] = unpermute(w[f"blk.{i}.attn_q.weight"], cfg["n_head"])
        w[f"blk.{i}.attn_k.weight"] = unpermute(w[f"blk.{i}.attn_k.weight"], cfg["n_head_kv"])
    return cfg, w


def rmsnorm(x, g, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * g


def rope_half(x, pos, theta):
    # x: [T, H, hd]; Hugging Face "rotate_half" convention
    hd = x.shape[-1]
    inv = theta ** (-np.arange(0, hd, 2, dtype=np.float64) / hd)
    ang = pos[:, None] * inv[None, :]
    cos = np.concatenate([np.cos(ang), np.cos(ang)], axis=-1)[:, None, :]
    sin = np.concatenate([np.sin(ang), np.sin(ang)], axis=-1)[:, None, :]
    x1, x2 = x[..., : hd // 2], x[..., hd // 2:]
    rot = np.concatenate([-x2, x1], axis=-1)
    return x * cos + rot * sin


def forward(cfg, w, tokens):
    """Logits of every position for the token ids (float64)."""
    T = len(tokens)
    H, Hkv, hd = cfg["n_head"], cfg["n_head_kv"], cfg["head_dim"]
    G = H // Hkv
    x = w["token_embd.weight"][np.asarray(tokens)]
    pos = np.arange(T, dtype=np.float64)
    mask = np.triu(np.full((T, T), -np.inf), k=1)
    for i in range(cfg["n_layer"]):
        p = f"blk.{i}."
        h = rmsnorm(x, w[p + "attn_norm.weight"], cfg["eps"])
        q = (h @ w[p + "attn_q.weight"].T).reshape(T, H, hd)
        k = (h @ w[p + "attn_k.weight"].T).reshape(T, Hkv, hd)
        v = (h @ w[p + "attn_v.weight"].T).reshape(T, Hkv, hd)
        q = rope_half(q, pos, cfg["theta"])
        k = rope_half(k, pos, cfg["theta"])
        out = np.empty((T, H, hd))
        for j in range(H):
            kj, vj = k[:, j // G], v[:, j // G]
            s = q[:, j] @ kj.T / np.sqrt(hd) + mask
            s = np.exp(s - s.max(axis=-1, keepdims=True))
            s /= s.sum(axis=-1, keepdims=True)
            out[:, j] = s @ vj
        x = x + out.reshape(T, H * hd) @ w[p + "attn_output.weight"].T
        h = rmsnorm(x, w[p + "ffn_norm.weight"], cfg["eps"])
        a = h @ w[p + "ffn_gate.weight"].T
        b = h @ w[p + "ffn_up.weight"].T
        x = x + (a / (1.0 + np.exp(-a)) * b) @ w[p + "ffn_down.weight"].T
    x = rmsnorm(x, w["output_norm.weight"], cfg["eps"])
    return x @ w["output.weight"].T


def greedy(cfg, w, tokens, n):
    toks = list(tokens)
    out = []
    for _ in range(n):
        nxt = int(np.argmax(forward(cfg, w, toks)[-1]))
        out.append(nxt)
        toks.append(nxt)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--tokens", required=True, help="comma-separated token ids")
    ap.add_argument("--greedy", type=int, default=0, help="also generate N tokens greedily")
    ap.add_argument("--save-logits", help="save the last-token logits (float64 .npy)")
    args = ap.parse_args(argv)
    tokens = [int(t) for t in args.tokens.split(",") if t.strip()]
    cfg, w = load_model(args.model)
    logits = forward(cfg, w, tokens)[-1]
    if args.save_logits:
        np.save(args.save_logits, logits)
    top = np.argsort(-logits)[:5]
    print("top5:", " ".join(f"{int(i)}:{logits[i]:.5f}" for i in top))
    if args.greedy:
        print("greedy:", ",".join(str(t) for t in greedy(cfg, w, tokens, args.greedy)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
