#!/usr/bin/env bash
# End-to-end tests of the real `layerflow` binary.
#   cli_e2e_test.sh LAYERFLOW input   # bad input: no server needed
#   cli_e2e_test.sh LAYERFLOW run [COORDINATOR]
#                                     # `layerflow run` with the embedded
#                                     # coordinator and worker (pythia-tiny);
#                                     # with COORDINATOR, `layerflow plot` on
#                                     # the kept store
#   cli_e2e_test.sh LAYERFLOW probe   # extract -> probe for a Transformer and
#                                     # an SSM, features through the artifact store
set -u
LAYERFLOW=$1
MODE=$2
COORDINATOR=${3:-}  # run: layerflow-coordinator, to plot from the kept store
WORK=$(mktemp -d "${TMPDIR:-/tmp}/layerflow-e2e-XXXXXX")
trap 'rm -rf "$WORK"' EXIT
failures=0

fail() { echo "FAIL: $*" >&2; failures=$((failures + 1)); }
expect_contains() {  # FILE TEXT WHAT
  grep -qF -- "$2" "$1" || { fail "$3: expected '$2' in:"; sed 's/^/  | /' "$1" >&2; }
}

if [[ $MODE == input ]]; then
  # A malformed file: non-zero exit, file:line:col and the field, and no
  # server contacted (the coordinator address points nowhere).
  printf 'name: e2e\nmodels: [pythia-tiny]\nseeds: [0, abc]\n' > "$WORK/bad.yaml"
  "$LAYERFLOW" --coordinator 127.0.0.1:1 submit "$WORK/bad.yaml" \
      > "$WORK/out" 2> "$WORK/err"
  code=$?
  [[ $code == 1 ]] || fail "submit bad.yaml: exit $code, want 1"
  expect_contains "$WORK/err" \
    "error: INVALID_ARGUMENT: $WORK/bad.yaml:3:12: field 'seeds[1]': expected a non-negative integer, got 'abc'" \
    "submit bad.yaml"
  [[ ! -s $WORK/out ]] || fail "submit bad.yaml printed to stdout"

  printf 'name: e2e\nseed: 1\n' > "$WORK/typo.yaml"
  "$LAYERFLOW" run "$WORK/typo.yaml" > "$WORK/out" 2> "$WORK/err"
  code=$?
  [[ $code == 1 ]] || fail "run typo.yaml: exit $code, want 1"
  expect_contains "$WORK/err" "$WORK/typo.yaml:2:1: unknown field 'seed' (did you mean 'seeds'?)" \
    "run typo.yaml"

  "$LAYERFLOW" submit "$WORK/missing.yaml" > "$WORK/out" 2> "$WORK/err"
  code=$?
  [[ $code == 1 ]] || fail "submit missing.yaml: exit $code, want 1"
  expect_contains "$WORK/err" "error: NOT_FOUND: sweep file not found: $WORK/missing.yaml" \
    "submit missing.yaml"

  # Nothing listens on port 1: a server error, exit 1, with the address.
  "$LAYERFLOW" --coordinator 127.0.0.1:1 jobs > "$WORK/out" 2> "$WORK/err"
  code=$?
  [[ $code == 1 ]] || fail "jobs with no coordinator: exit $code, want 1"
  expect_contains "$WORK/err" "error: UNAVAILABLE: " "jobs with no coordinator"
  expect_contains "$WORK/err" "(coordinator 127.0.0.1:1)" "jobs with no coordinator"

  "$LAYERFLOW" results > "$WORK/out" 2> "$WORK/err"
  code=$?
  [[ $code == 2 ]] || fail "results without SWEEP_ID: exit $code, want 2 (usage)"

  "$LAYERFLOW" --help > "$WORK/out" 2> "$WORK/err"
  code=$?
  [[ $code == 0 ]] || fail "--help: exit $code, want 0"
  expect_contains "$WORK/out" "LAYERFLOW_COORDINATOR" "--help"
fi

if [[ $MODE == run ]]; then
  cat > "$WORK/tiny.yaml" <<'YAML'
name: e2e-tiny
models: [pythia-tiny]
seeds: [0, 1]
num_prompts: 4
context_lengths: [1536]
YAML
  "$LAYERFLOW" run "$WORK/tiny.yaml" --no-figures > "$WORK/out" 2> "$WORK/err"
  code=$?
  [[ $code == 0 ]] || { fail "run tiny.yaml: exit $code, want 0"; sed 's/^/  | /' "$WORK/err" >&2; }
  # The summary above the tables: intertoken_cos peak, final, path_energy.
  [[ $(head -1 "$WORK/out") == "model       | init      | itc peak | at layer | final itc | path_energy" ]] \
    || fail "run tiny.yaml: no summary line first: $(head -1 "$WORK/out")"
  grep -qE '^pythia-tiny \| reference \| +0\.[0-9]{4} \| +([0-9]|final) \| +0\.[0-9]{4} \| +-$' "$WORK/out" \
    || { fail "run tiny.yaml: no summary row"; sed 's/^/  | /' "$WORK/out" >&2; }
  expect_contains "$WORK/err" "sweep " "run tiny.yaml (stderr)"
  expect_contains "$WORK/err" "succeeded: 2/2 jobs succeeded" "run tiny.yaml (stderr)"
  expect_contains "$WORK/out" "model pythia-tiny · init reference · seed 0 · dataset kvpr · context 1536" \
    "run tiny.yaml (table)"
  expect_contains "$WORK/out" "model pythia-tiny · init reference · seed 1" "run tiny.yaml (table)"
  expect_contains "$WORK/out" "adjacent_cos" "run tiny.yaml (table)"
  expect_contains "$WORK/out" "intertoken_cos" "run tiny.yaml (table)"
  # Layer rows: "    0 | 0.1234 ± 0.0012 | ...", and layer 1 too.
  grep -qE '^ +0 \| +-?[0-9]\.[0-9]{4} ± [0-9]\.[0-9]{4} \| +-?[0-9]\.[0-9]{4} ± ' "$WORK/out" \
    || { fail "run tiny.yaml: no layer-0 row with both metrics"; sed 's/^/  | /' "$WORK/out" >&2; }
  grep -qE '^ +1 \| ' "$WORK/out" || fail "run tiny.yaml: no layer-1 row"

  # CSV: the header, then rows of 15 fields over 2 jobs, each averaging the
  # 4 prompts, values that are cosines (derived rows, "v_loc(x)" etc., skipped).
  "$LAYERFLOW" run "$WORK/tiny.yaml" --format csv --db "$WORK/kept.db" \
      --figures "$WORK/figs" --figure-format both > "$WORK/csv" 2> "$WORK/err"
  code=$?
  [[ $code == 0 ]] || { fail "run --format csv: exit $code, want 0"; sed 's/^/  | /' "$WORK/err" >&2; }
  # The figures next to the results, named in the log, and read back: every
  # point of each sidecar is the seed-pooled mean and std of the CSV rows.
  expect_contains "$WORK/err" "figures: 2 figures in $WORK/figs/ (depth_adjacent_cos.png, depth_adjacent_cos.svg, depth_intertoken_cos.png, depth_intertoken_cos.svg; each with a .json of the series drawn)" \
    "run --figures (stderr)"
  python3 "$(dirname "$0")/figures_readback.py" "$WORK/csv" "$WORK/figs" > "$WORK/readback" 2>&1 \
    || { fail "run --figures: read-back"; sed 's/^/  | /' "$WORK/readback" >&2; }
  [[ $(head -1 "$WORK/csv") == "sweep_id,job_id,model,init_scheme,seed,dataset,context_length,metric,layer,value,std,count,layer_b,head,position" ]] \
    || fail "run --format csv: bad header: $(head -1 "$WORK/csv")"
  awk -F, 'NR > 1 && $8 !~ /\(/ {
      rows++; jobs[$2] = 1; metrics[$8] = 1
      if (NF != 15) bad = bad "fields " NF " on line " NR "; "
      if ($3 != "pythia-tiny" || $7 != 1536 || $12 != 4) bad = bad "line " NR ": " $0 "; "
      if ($10 < -1.000001 || $10 > 1.000001 || $11 < 0) bad = bad "value out of range on line " NR "; "
    }
    END {
      n = 0; for (j in jobs) n++
      if (rows == 0) bad = bad "no rows; "
      if (n != 2) bad = bad n " jobs, want 2; "
      if (!("adjacent_cos" in metrics) || !("intertoken_cos" in metrics)) bad = bad "metrics missing; "
      if (bad != "") { print bad; exit 1 }
    }' "$WORK/csv" > "$WORK/awk" || { fail "run --format csv: $(cat "$WORK/awk")"; }
  [[ -s $WORK/kept.db ]] || fail "run --db: store not kept at $WORK/kept.db"

  # `layerflow plot` against a real coordinator on the kept store: it reads
  # the rows as `layerflow results` does, and its sidecars read back equal
  # them; a metric the sweep lacks is an error naming the flag and sweep.
  if [[ -n $COORDINATOR ]]; then
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    "$COORDINATOR" --listen "127.0.0.1:$port" --metrics "" --db "$WORK/kept.db" \
        > "$WORK/coordinator.log" 2>&1 &
    coordinator_pid=$!
    sweep=$(awk -F, 'NR == 2 { print $1 }' "$WORK/csv")
    for _ in $(seq 100); do
      "$LAYERFLOW" --coordinator "127.0.0.1:$port" jobs "$sweep" > /dev/null 2>&1 && break
      sleep 0.1
    done
    "$LAYERFLOW" --coordinator "127.0.0.1:$port" results "$sweep" --format csv > "$WORK/stored.csv"
    "$LAYERFLOW" --coordinator "127.0.0.1:$port" plot "$sweep" --out "$WORK/plots" --format svg \
        > "$WORK/plot.out" 2> "$WORK/plot.err"
    code=$?
    [[ $code == 0 ]] || { fail "plot: exit $code, want 0"; sed 's/^/  | /' "$WORK/plot.err" >&2; }
    [[ $(cat "$WORK/plot.out") == "$WORK/plots/depth_adjacent_cos.svg
$WORK/plots/depth_adjacent_cos.json
$WORK/plots/depth_intertoken_cos.svg
$WORK/plots/depth_intertoken_cos.json" ]] || fail "plot: printed $(cat "$WORK/plot.out")"
    python3 "$(dirname "$0")/figures_readback.py" "$WORK/stored.csv" "$WORK/plots" > "$WORK/readback" 2>&1 \
      || { fail "plot: read-back against the store"; sed 's/^/  | /' "$WORK/readback" >&2; }
    "$LAYERFLOW" --coordinator "127.0.0.1:$port" plot "$sweep" --metric cka_all_unbiased \
        --out "$WORK/plots2" > /dev/null 2> "$WORK/plot.err"
    code=$?
    [[ $code == 1 ]] || fail "plot --metric cka_all_unbiased: exit $code, want 1"
    expect_contains "$WORK/plot.err" "error: INVALID_ARGUMENT: --metric cka_all_unbiased: no figure of sweep $sweep (it has no rows of that metric); its figures' metrics: adjacent_cos, intertoken_cos" \
      "plot --metric cka_all_unbiased"
    "$LAYERFLOW" --coordinator "127.0.0.1:$port" plot sw-nope > /dev/null 2> "$WORK/plot.err"
    code=$?
    [[ $code == 1 ]] || fail "plot sw-nope: exit $code, want 1"
    expect_contains "$WORK/plot.err" "error: NOT_FOUND: unknown sweep 'sw-nope'" "plot sw-nope"
    kill "$coordinator_pid"
    wait "$coordinator_pid" 2> /dev/null
  fi
fi

if [[ $MODE == probe ]]; then
  cat > "$WORK/probe.yaml" <<'YAML'
name: e2e-probe
models: [pythia-tiny, mamba-tiny]
seeds: [0]
datasets: [{name: kvpr, num_classes: 3}]
context_lengths: [600]
num_prompts: 24
prompts_per_chunk: 8
analyses: [adjacent_cos, spectrum]
probe: {task: kvpr, classes: 3, epochs: 60}
YAML
  "$LAYERFLOW" run "$WORK/probe.yaml" --db "$WORK/probe.db" --no-figures > "$WORK/out" 2> "$WORK/err"
  code=$?
  [[ $code == 0 ]] || { fail "run probe.yaml: exit $code, want 0"; sed 's/^/  | /' "$WORK/err" >&2; }
  expect_contains "$WORK/err" "succeeded: 4/4 jobs succeeded" "run probe.yaml (2 extract + 2 probe)"
  # The headline (held-out best layer, final, drop; a figure inside its
  # permutation null is marked), the example counts (24 prompts, 8 per
  # class: 5 / 1 / 2 each) and the null line.
  mark='( \[not above null\])?'
  for model in pythia-tiny mamba-tiny; do
    grep -qE "^$model: best layer [0-9]+ \(0\.[0-9]{2} ± 0\.[0-9]{2}\)$mark, final 0\.[0-9]{2}, drop -?[01]\.[0-9]{2}$mark\$" "$WORK/out" \
      || { fail "run probe.yaml: no headline for $model"; sed 's/^/  | /' "$WORK/out" >&2; }
  done
  expect_contains "$WORK/out" "· 15/3/6 train/val/test examples" "run probe.yaml (split)"
  expect_contains "$WORK/out" "  label-permutation null (20 permutations): best acc " "run probe.yaml (null)"
  # The per-layer accuracies as CSV rows (a second run: `run` prints one
  # format): every point of both models, 3 seeds each, its Wilson interval
  # around it, the validation accuracy, one choice per seed, the nulls (20
  # permutations) with p-values in [1/21, 1], and spectrum rows.
  "$LAYERFLOW" run "$WORK/probe.yaml" --db "$WORK/probe2.db" --format csv \
      --figures "$WORK/pfigs" > "$WORK/csv" 2> "$WORK/err2"
  # Probe accuracy per layer with its chance level and the spectra as
  # stacked bars (and any other figure of the sweep), read back against the
  # CSV rows.
  for f in probe_test_acc depth_adjacent_cos spectrum_pythia-tiny_reference_kvpr_600 \
           spectrum_mamba-tiny_reference_kvpr_600; do
    [[ -s $WORK/pfigs/$f.png && -s $WORK/pfigs/$f.json ]] || fail "run probe.yaml: no figure $f"
  done
  python3 "$(dirname "$0")/figures_readback.py" "$WORK/csv" "$WORK/pfigs" > "$WORK/readback" 2>&1 \
    || { fail "run probe.yaml --figures: read-back"; sed 's/^/  | /' "$WORK/readback" >&2; }
  awk -F, '$8 == "probe_test_acc" { n[$3]++; acc[$3 "," $9] = $10; if ($12 != 3 || $10 < 0 || $10 > 1) bad = bad $0 "; " }
           $8 == "probe_val_acc" { val[$3]++; if ($12 != 3 || $10 < 0 || $10 > 1) bad = bad $0 "; " }
           $8 == "probe_test_acc_lo" { lo[$3 "," $9] = $10 }
           $8 == "probe_test_acc_hi" { hi[$3 "," $9] = $10 }
           $8 == "probe_chosen" { chosen[$3] += $10 * $12 }
           $8 == "probe_null_best_acc" || $8 == "probe_null_drop" { nulls[$3]++; if ($12 != 20) bad = bad $0 "; " }
           $8 ~ /_pvalue$/ { pvalues[$3]++; if ($10 < 1 / 21 - 1e-12 || $10 > 1) bad = bad $0 "; " }
           $8 == "probe_num_test" { if ($10 != 6) bad = bad $0 "; " }
           $8 ~ /^spectrum_frac_/ { spectra[$3]++ }
           END { for (m in n) if (n[m] != 4 || val[m] != 4) bad = bad m ": " n[m] " test / " val[m] " val rows, want 4; "
                 if (n["pythia-tiny"] != 4 || n["mamba-tiny"] != 4) bad = bad "probe rows " n["pythia-tiny"] "/" n["mamba-tiny"] ", want 4/4; "
                 for (k in acc) if (!(k in lo) || !(k in hi) || lo[k] > acc[k] + 1e-9 || hi[k] < acc[k] - 1e-9 || lo[k] < 0 || hi[k] > 1) bad = bad "interval " k " [" lo[k] ", " hi[k] "] vs " acc[k] "; "
                 for (m in n) { if (chosen[m] < 3 - 1e-9 || chosen[m] > 3 + 1e-9) bad = bad m ": " chosen[m] " choices, want 3; "
                                if (nulls[m] != 2 || pvalues[m] != 2) bad = bad m ": " nulls[m] " null / " pvalues[m] " p-value rows, want 2 / 2; " }
                 if (spectra["pythia-tiny"] == 0 || spectra["mamba-tiny"] == 0) bad = bad "no spectrum rows; "
                 if (bad != "") { print bad; exit 1 } }' "$WORK/csv" > "$WORK/awk" \
    || fail "run probe.yaml --format csv: $(cat "$WORK/awk")"
fi

if (( failures > 0 )); then
  echo "$failures check(s) failed" >&2
  exit 1
fi
echo "all $MODE checks passed"
