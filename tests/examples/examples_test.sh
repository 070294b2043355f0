#!/usr/bin/env bash
# The paper examples (examples/, docs/examples.md).
#   examples_test.sh LAYERFLOW COORDINATOR EXAMPLES_DIR
# 1. Every full example is a sweep the coordinator accepts: submitted to a
#    coordinator with no worker (so nothing runs), each must be stored.
# 2. Every small variant (examples/small/) runs through `layerflow run` on
#    the CPU, succeeds, and gives exactly the row count worked out below.
set -u
LAYERFLOW=$1
COORDINATOR=$2
EXAMPLES=$3
WORK=$(mktemp -d "${TMPDIR:-/tmp}/layerflow-examples-XXXXXX")
coordinator_pid=
cleanup() {
  [[ -n $coordinator_pid ]] && kill "$coordinator_pid" 2> /dev/null && wait "$coordinator_pid"
  rm -rf "$WORK"
}
trap cleanup EXIT
failures=0
fail() { echo "FAIL: $*" >&2; failures=$((failures + 1)); }

# Rows of each small variant, by hand. The tiny presets have L = 2 blocks,
# points 0..3: one-point metrics give 4 rows (0..L+1), pair metrics 2
# (0..L-1), all-pair CKA 3 pairs, path_energy 1, a CKA estimator 1 baseline
# row; series of fewer than 5 points get no derived rows (v_loc, ...).
declare -A EXPECTED=(
  # 8 jobs x (intertoken_cos 4 + adjacent_cos 2 + token_dispersion 4 + path_energy 1)
  [random-init-homogenisation]=88
  # 4 jobs x (adjacent_cos 2 + intertoken_cos 4 + intertoken_cos_nofirst 4
  #           + cka_unbiased 2 + cka_all_unbiased 3 + cka_baseline_unbiased 1)
  [similarity-over-depth]=64
  # 4 EXTRACT jobs x adjacent_cos 2, and 4 PROBE jobs x 58: per point (4) the
  # 7 rows test_acc, _lo, _hi, val_acc, chosen, train_acc, mae and 2
  # class_acc (6 prompts, 2 classes: each class has a test example) = 36;
  # 8 job rows (chance, num_train/val/test, best_layer, best_acc, final_acc,
  # drop) and 6 of the permutation null; example-view CKA of 3 residual
  # pairs for each of 2 estimators and their 2 baselines = 8.
  [kvpr-probing]=240
  [mdqa-probing]=240
  # 2 blocks x 13 rows (7 bins, mean log, 5 quantiles) x groups: pythia-tiny
  # 4 heads + gpt-neo-tiny 4 + mamba-tiny 1 + mamba2-tiny 8 = 17.
  [spectra]=442
  # 2 TRAIN jobs x 2 chunks (eval_every 10 of 20 steps) x 6 curve rows
  # (train_loss, train_acc, grad_norm, lr, eval_loss, eval_acc); 0.99 is not
  # reached in 20 steps, so no train_stopped row.
  [mqar-training]=24
  # docs/reproductions.md's sweeps (examples/reproductions/small/):
  # 6 jobs x (intertoken_cos 4 + intertoken_cos_nofirst 4 + adjacent_cos 2)
  [reproductions/random-init-2.8b]=60
  # 3 jobs x 2 estimators x (3 pairs + 1 baseline)
  [reproductions/cka-estimators]=24
  # 6 EXTRACT jobs x intertoken_cos 4, 6 PROBE jobs x 58 (as kvpr-probing's)
  [reproductions/kvpr-probing-random-init]=372
  # 3 TRAIN jobs x 2 chunks x 6 curve rows = 36; then the init and the
  # trained model of each, 6 EXTRACT jobs: intertoken_cos 4 + adjacent_cos 2
  # = 36 rows, and spectrum 2 blocks x 13 rows x groups (GPT-NeoX 2 heads,
  # Mamba 1, Mamba-2 4: 26 x 7 x 2 = 364).
  [reproductions/mqar-trained-vs-random]=436
  # 2 TRAIN jobs x 2 chunks x 7 curve rows (the 6 and train_penalty) = 28;
  # 4 EXTRACT jobs x (intertoken_cos 4 + adjacent_cos 2) = 24.
  [reproductions/similarity-penalty]=52
  # 4 models of 2 blocks x 62 (intertoken_cos 4 + kvpr-probing's 58) and 2
  # of 3 blocks x 78: intertoken_cos 5, 9 probe rows at each of 5 points,
  # 8 job rows, 6 of the null, example-view CKA of 6 pairs x 2 estimators
  # + 2 baselines.
  [reproductions/scaling]=404
)

# 1. The full examples, validated by a real coordinator.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$COORDINATOR" --listen "127.0.0.1:$port" --metrics "" --db "$WORK/full.db" \
    > "$WORK/coordinator.log" 2>&1 &
coordinator_pid=$!
for _ in $(seq 100); do
  "$LAYERFLOW" --coordinator "127.0.0.1:$port" jobs > /dev/null 2>&1 && break
  sleep 0.1
done
full=0
# docs/reproductions.md's sweeps (examples/reproductions/, run on a GPU by
# `bash bench/gpu.sh repro`) are checked the same way, each with its small
# variant in reproductions/small/.
for file in "$EXAMPLES"/*.yaml "$EXAMPLES"/reproductions/*.yaml; do
  if ! "$LAYERFLOW" --coordinator "127.0.0.1:$port" submit "$file" > "$WORK/out" 2> "$WORK/err"; then
    fail "submit $(basename "$file"): $(cat "$WORK/err")"
  elif ! grep -q "sw-" "$WORK/out"; then
    fail "submit $(basename "$file"): no sweep id in: $(cat "$WORK/out")"
  fi
  [[ $file == */reproductions/* ]] || full=$((full + 1))
  # Its small variant: small/<same name>.yaml beside it, or the one its
  # comment names ("# small variant: small/kvpr-probing.yaml").
  variant=$(sed -n 's/^# small variant: \(small\/[A-Za-z0-9_.-]*\.yaml\).*/\1/p' "$file")
  variant=$(dirname "$file")/${variant:-small/$(basename "$file")}
  [[ -f $variant ]] || fail "$(basename "$file"): no small variant ${variant#"$EXAMPLES"/}"
done
(( full >= 5 )) || fail "only $full full examples in $EXAMPLES"
kill "$coordinator_pid"
wait "$coordinator_pid" 2> /dev/null
coordinator_pid=

# 2. The small variants, run.
small=0
for file in "$EXAMPLES"/small/*.yaml "$EXAMPLES"/reproductions/small/*.yaml; do
  small=$((small + 1))
  name=$(basename "$file" .yaml)
  [[ $file == */reproductions/* ]] && name=reproductions/$name
  want=${EXPECTED[$name]:-}
  if [[ -z $want ]]; then
    fail "$name: no expected row count in this script"
    continue
  fi
  start=$(date +%s)
  out=$WORK/${name//\//_}
  "$LAYERFLOW" run "$file" --format csv --no-figures > "$out.csv" 2> "$out.err"
  code=$?
  if [[ $code != 0 ]]; then
    fail "run ${file#"$EXAMPLES"/}: exit $code"
    sed 's/^/  | /' "$out.err" >&2
    continue
  fi
  grep -q "succeeded: .* jobs succeeded" "$out.err" \
    || fail "run ${file#"$EXAMPLES"/}: no success line: $(tail -2 "$out.err")"
  rows=$(($(wc -l < "$out.csv") - 1))  # less the header
  [[ $rows == "$want" ]] || fail "run ${file#"$EXAMPLES"/}: $rows rows, want $want"
  echo "ok: ${file#"$EXAMPLES"/}: $rows rows in $(($(date +%s) - start)) s"
done
(( small == ${#EXPECTED[@]} )) || fail "$small small variants, ${#EXPECTED[@]} expected"

if (( failures > 0 )); then
  echo "$failures failure(s)" >&2
  exit 1
fi
echo "all examples ok"
