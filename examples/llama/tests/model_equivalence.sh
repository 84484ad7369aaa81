#!/usr/bin/env bash
# ctest (label model): on the real model, --policy heterocache --budget 1.0 must give the same
# greedy continuation and the same logits, bit for bit, as the full cache. Long enough a
# continuation (40 tokens) that online profiling ends and the cache compacts to its selection. Checked for
# the fp32 and the bf16 hot tier (--kv-format).
# Exits 77 (skipped) when HETEROCACHE_MODEL is unset or the file is missing.
set -euo pipefail
ENGINE="$1"
if [[ -z "${HETEROCACHE_MODEL:-}" || ! -f "${HETEROCACHE_MODEL}" ]]; then
  echo "skipped: set HETEROCACHE_MODEL to the SmolLM2-135M-Instruct Q4_1 GGUF (scripts/fetch-model.sh)"
  exit 77
fi
TMP="$(mktemp -d "${TMPDIR:-/tmp}/hcllama-eq.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT
common=(--model "$HETEROCACHE_MODEL" --passkey --context 600 --depth 0.3 --seed 7 --max-new 40 --ignore-eos --threads 2 --quiet --print-ids)
status=0
for format in fp32 bf16; do
  run=("$ENGINE" "${common[@]}" --kv-format "$format")
  "${run[@]}" --policy full --dump-logits "$TMP/full.prompt" --dump-final-logits "$TMP/full.final" > "$TMP/full.txt"
  "${run[@]}" --policy heterocache --budget 1.0 --dump-logits "$TMP/hc.prompt" --dump-final-logits "$TMP/hc.final" > "$TMP/hc.txt"
  ids_full="$(grep '^generated_ids:' "$TMP/full.txt")"
  ids_hc="$(grep '^generated_ids:' "$TMP/hc.txt")"
  echo "$format full:        $ids_full"
  echo "$format heterocache: $ids_hc"
  [[ "$ids_full" == "$ids_hc" ]] || { echo "FAIL ($format): greedy continuations differ"; status=1; }
  cmp -s "$TMP/full.prompt" "$TMP/hc.prompt" || { echo "FAIL ($format): prompt last-token logits differ"; status=1; }
  cmp -s "$TMP/full.final" "$TMP/hc.final" || { echo "FAIL ($format): last-token logits after the continuation differ"; status=1; }
  n_ids="$(echo "$ids_full" | tr ',' '\n' | wc -l)"
  if (( n_ids < 12 )); then echo "FAIL ($format): continuation too short ($n_ids tokens) to pass online profiling"; status=1; fi
done
(( status == 0 )) && echo "OK: $n_ids tokens and logits identical bit for bit (fp32 and bf16)"
exit $status
