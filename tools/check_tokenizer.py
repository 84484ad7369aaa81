#!/usr/bin/env python3
"""Compare the engine's tokenizer with the model's reference tokenizer (Hugging Face `tokenizers`).

The reference is built from the GGUF file's own vocabulary and merges the way SmolLM2's tokenizer.json
is configured: a byte-level BPE model without an unknown token and without byte fallback, the
pre-tokenizer Sequence[Digits(individual_digits), ByteLevel(add_prefix_space=False, use_regex=True)],
the control tokens as special added tokens. A byte whose GPT-2 symbol is not in the vocabulary (SmolLM2
lacks 21: 0x04 0x06 0x13 0x14 0x16 0x1D 0xC0 0xC1 0xF1 0xF2 0xF5..0xFF) is dropped by that BPE before it
merges, so its neighbours may merge across it; the engine does the same.

Two uses:

  check_tokenizer.py --model M.gguf --engine PATH/heterocache-llama
      runs `heterocache-llama --tokenize --raw` on fixed, adversarial, random and long texts and
      compares the ids with the reference (exit 1 on any mismatch);

  check_tokenizer.py --model M.gguf --write-fixture examples/llama/tests/tokenizer_reference.tsv
      writes the reference's ids for the same texts (and some with a NUL byte, which a command line
      cannot carry) to the file that examples/llama/tests/test_tokenizer.cpp checks offline.

Texts that are not valid UTF-8 (bytes 0xC0, 0xC1, 0xF5..0xFF, truncated sequences) have no reference:
Python strings cannot hold them. The engine drops their bytes without symbols by the same rule.

needs: pip install gguf tokenizers (a private venv: python3 -m venv V && V/bin/pip install gguf tokenizers)
"""
import argparse
import random
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

# The bytes without a byte token that valid UTF-8 can hold: six control characters, and 0xF1/0xF2 as the
# lead bytes of U+40000..U+BFFFF (their continuation bytes have tokens and stay).
DROPPED = [
    "\x04", "\x06", "\x13", "\x14", "\x16", "\x1d",
    "!\x04!", "a\x04b", "!\x13\x14!", "  \x06  ", "x\x1dy\x16z", "\x04\x06\x13\x14\x16\x1d",
    "Hello\x04 world", "1\x042", "<|im_start|>\x04<|im_end|>", "\x04<|im_end|>\x06",
    "x\U00040000y", "\U0004ffff\U0008abcd", "..\U00040000..", "a\U000bfffdb",
]


def adversarial_texts(longest=301):
    out = []
    for unit in ["a", "ab", "aab", "abc", "aaab", "ĠĠ", " ", "  a", "the", "ing", "!", "!?", "\n", "\t ", "-", "=",
                 "é", "日", "🙂", "1", "x1", "'s", "'", "\u00a0", "\x04a"]:
        for n in (1, 2, 3, 7, 64, longest):
            out.append(unit * n)
    return out


# Characters the random texts are drawn from (well-established Unicode blocks, so that the two sides'
# Unicode tables agree), grouped so that runs of one kind (long words, long whitespace) occur.
POOLS = [
    "abcdefghijklmnopqrstuvwxyz",
    "ABCDEFGHIJKLMNOPQRSTUVWXYZ",
    "0123456789",
    " ",
    "  \t\n\r\u00a0\u2003\u3000\u2028\x0b\x0c",
    "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~",
    "\x01\x02\x03\x04\x05\x06\x07\x08\x0e\x0f\x10\x11\x12\x13\x14\x15\x16\x17\x18\x19\x1a\x1b\x1c\x1d\x1e\x1f\x7f",
    "àáâãäåæçèéêëìíîïñòóôõöøùúûüýþÿßÀÉÑÖ€£¥©®°±²³µ¶·¹º¼½¾¿«»",
    "αβγδεζηθικλμνξοπρστυφχψωΑΒΓΔΩабвгдежзийклмнопрстуфхцчшщъыьэюяАБВЯ",
    "日本語中文字漢字テキストひらがなカタカナ한국어조선말",
    "العربيةעבריתहिन्दीไทย",
    "\U0001f642\U0001f44d\U0001f3fd\U0001f1e9\U0001f1ea\u2211\u222b\u221a\u2603\u2764\ufe0f\u200d",
    "\u0301\u0308\u0327",  # combining marks
    "\U00040000\U00050123\U0008abcd\U000bfffd",  # 0xF1 / 0xF2 lead bytes
    "\u2153\u2167\u0663\u0967\u00b2",  # other numbers
]
WORDS = ["the", " the", "and", " pass", " key", "ing", "tion", "'s", "'ll", "'RE", "'ve", "'d", "'M", "<|im_start|>",
         "<|im_end|>", "<|endoftext|>", "<repo_name>", "<|im_start", "|>", "http://x.org/a?b=c", "    ", "\n\n"]


def random_texts(n, seed, nul=False):
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        parts = []
        for _ in range(rng.randint(1, 12)):
            if rng.random() < 0.25:
                parts.append(rng.choice(WORDS))
            else:
                pool = rng.choice(POOLS)
                parts.append("".join(rng.choice(pool) for _ in range(rng.choice([1, 1, 2, 3, 5, 8, 20]))))
        text = "".join(parts)
        if nul:
            i = rng.randint(0, len(text))
            text = text[:i] + "\x00" + text[i:]
        out.append(text)
    return out


def long_texts(seed):
    rng = random.Random(seed)
    return ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(40000)),
            "".join(rng.choice("!#$%&()*+-./:;<=>?@[]^_{|}~") for _ in range(20000)),
            "".join(chr(rng.randrange(0x4E00, 0x9FA5)) for _ in range(20000)),
            "".join(rng.choice("ab\x04") for _ in range(20000))]


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
    # unk_token=None, byte_fallback=False: a character without a token is skipped (as in SmolLM2's tokenizer.json)
    tk = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token=None, byte_fallback=False))
    tk.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True),
         pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    tk.decoder = decoders.ByteLevel()
    tk.add_special_tokens([AddedToken(t, special=True, normalized=False)
                           for t, ty in zip(tokens, types) if ty in (3, 4)])
    return tk


def all_texts(args, longest=301):
    return TEXTS + DROPPED + adversarial_texts(longest) + random_texts(args.random, args.seed)


def write_fixture(ref, args):
    texts = all_texts(args, longest=16) + random_texts(20, args.seed + 1, nul=True)
    with open(args.write_fixture, "w", encoding="ascii", newline="\n") as f:
        f.write("# Reference ids of the Hugging Face tokenizers package for SmolLM2-135M-Instruct's GGUF vocabulary\n"
                "# (tools/check_tokenizer.py --write-fixture; checked by tests/test_tokenizer.cpp).\n"
                "# Each line: the text's UTF-8 bytes in hex, a tab, its token ids (special tokens recognised).\n")
        for text in texts:
            ids = ref.encode(text, add_special_tokens=False).ids
            f.write(text.encode("utf-8").hex() + "\t" + ",".join(map(str, ids)) + "\n")
    print(f"wrote {len(texts)} texts to {args.write_fixture}")
    return 0


def check_engine(ref, args):
    texts = all_texts(args) + long_texts(args.seed)
    bad = 0
    for text in texts:
        want = ref.encode(text, add_special_tokens=False).ids
        out = subprocess.run([args.engine, "--model", args.model, "--raw", "--prompt", text, "--tokenize", "--quiet"],
                             capture_output=True, text=True)
        if out.returncode != 0:
            print(f"engine failed on {text[:50]!r}: {out.stderr.strip()}")
            bad += 1
            continue
        got = [int(x) for x in out.stdout.strip().split(",") if x]
        ok = got == want
        bad += not ok
        if not ok or args.verbose:
            print(f"{'ok  ' if ok else 'FAIL'} {text[:50]!r}" + ("" if ok else f"\n  engine:    {got[:40]}\n  reference: {want[:40]}"))
    print(f"{len(texts) - bad}/{len(texts)} texts tokenized identically")
    return 1 if bad else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--engine", help="heterocache-llama to compare with the reference")
    ap.add_argument("--write-fixture", metavar="FILE", help="write the reference's ids for the test texts to FILE")
    ap.add_argument("--random", type=int, default=200, help="random texts (default 200)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args()
    if not args.engine and not args.write_fixture:
        ap.error("give --engine, --write-fixture or both")
    ref = build_reference(args.model)
    rc = 0
    if args.write_fixture:
        rc |= write_fixture(ref, args)
    if args.engine:
        rc |= check_engine(ref, args)
    return rc


if __name__ == "__main__":
    sys.exit(main())
