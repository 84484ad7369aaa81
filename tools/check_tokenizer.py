#!/usr/bin/env python3
"""Compare the engine's tokenizer with the Hugging Face `tokenizers` package.

Builds a byte-level BPE tokenizer from the GGUF file's own vocabulary and
merges (with the SmolLM2 pre-tokenizer: individual digits, then the GPT-2
byte-level regex, special tokens as added tokens), then checks that
`heterocache-llama --tokenize --raw` gives identical ids on a set of varied
texts. Exit code 1 on any mismatch.

usage: check_tokenizer.py --engine PATH/heterocache-llama --model M.gguf
needs: pip install gguf tokenizers
"""
import argparse
import subprocess
import sys

TEXTS = [
    "Hello world",
    "The quick brown fox jumps over the lazy dog.",
    "  leading spaces and trailing spaces   ",
    "tabs\tand\nnewlines\n\n\nand\r\nCRLF",
    "numbers 1234567 and 3.14159, 1,000,000 and x2y",
    "don't I'll we've they're she'd it's O'Neil 'quoted' DON'T",
    "Ünïcödé: naïve café, Straße, Ελληνικά, русский, 日本語のテキスト, 한국어, العربية",
    "emoji 🙂👍🏽 and symbols ©®™ ∑∫√ ½ ² ⅷ",
    "<|im_start|>user\nHi there!<|im_end|>\n<|im_start|>assistant\n",
    "code: def f(x):\n    return x**2  # square\n\tif a != b: pass",
    "mixed   spaces\u00a0nbsp\u2003em-space\u3000ideographic",
    "!!!???...---___***",
    "a",
    " ",
    "\n",
]


def build_reference(model_path):
    import gguf
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    r = gguf.GGUFReader(model_path)

    def strings(key):
        f = r.fields[key]
        return [bytes(f.parts[i]).decode("utf-8") for i in f.data]

    tokens = strings("tokenizer.ggml.tokens")
    merges = [tuple(m.split(" ", 1)) for m in strings("tokenizer.ggml.merges")]
    tt = r.fields["tokenizer.ggml.token_type"]
    types = [int(tt.parts[i][0]) for i in tt.data]
    vocab = {t: i for i, t in enumerate(tokens)}
    tk = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tk.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True),
         pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    tk.decoder = decoders.ByteLevel()
    tk.add_special_tokens([AddedToken(t, special=True, normalized=False)
                           for t, ty in zip(tokens, types) if ty in (3, 4)])
    return tk


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--engine", required=True)
    ap.add_argument("--model", required=True)
    args = ap.parse_args()
    ref = build_reference(args.model)
    bad = 0
    for text in TEXTS:
        want = ref.encode(text, add_special_tokens=False).ids
        out = subprocess.run([args.engine, "--model", args.model, "--raw", "--prompt", text, "--tokenize", "--quiet"],
                             capture_output=True, text=True)
        if out.returncode != 0:
            print(f"engine failed on {text!r}: {out.stderr.strip()}")
            bad += 1
            continue
        got = [int(x) for x in out.stdout.strip().split(",") if x]
        ok = got == want
        bad += not ok
        print(f"{'ok  ' if ok else 'FAIL'} {text[:50]!r}" + ("" if ok else f"\n  engine:    {got}\n  reference: {want}"))
    print(f"{len(TEXTS) - bad}/{len(TEXTS)} texts tokenized identically")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
