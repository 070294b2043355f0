#!/usr/bin/env bash
# `layers:` end to end through the real binary: `layerflow run` of a sweep
# with layers: [0, 2, -1] gives exactly the full sweep's rows at those points
# (same values, as printed in CSV) and no others, and a point the model lacks
# is refused at submission naming the field.
#   layers_e2e_test.sh LAYERFLOW
set -u
LAYERFLOW=$1
WORK=$(mktemp -d "${TMPDIR:-/tmp}/layerflow-layers-XXXXXX")
trap 'rm -rf "$WORK"' EXIT
failures=0
fail() { echo "FAIL: $*" >&2; failures=$((failures + 1)); }

sweep() {  # NAME [LAYERS]
  cat <<YAML
name: $1
models: [pythia-tiny, mamba-tiny]
datasets: [{name: kvpr, num_classes: 2}]
context_lengths: [400]
analyses: [adjacent_cos, intertoken_cos, step_energy, path_energy, cka_unbiased,
           cka_all_unbiased, spectrum]
num_prompts: 3
prompts_per_chunk: 2
${2:+layers: $2}
YAML
}
sweep full > "$WORK/full.yaml"
sweep listed "[0, 2, -1]" > "$WORK/listed.yaml"
for name in full listed; do
  "$LAYERFLOW" run "$WORK/$name.yaml" --format csv --no-figures > "$WORK/$name.csv" \
      2> "$WORK/$name.err" || { fail "run $name.yaml"; sed 's/^/  | /' "$WORK/$name.err" >&2; }
done

# The tiny models have 2 blocks, points 0..3: [0, 2, -1] keeps 0, 2, 3. A
# row of one point is kept when its point is, a pair row (l, l + 1) when l
# is, an all-pair row when both points are; path_energy and the CKA baseline
# always (docs/metrics.md, "Selected points").
python3 - "$WORK/full.csv" "$WORK/listed.csv" > "$WORK/compare" 2>&1 <<'PY' || { fail "rows differ"; sed 's/^/  | /' "$WORK/compare" >&2; }
import csv, sys
def rows(path):
    with open(path) as f:
        return [{k: v for k, v in r.items() if k not in ("sweep_id", "job_id")}
                for r in csv.DictReader(f)]
full, listed = rows(sys.argv[1]), rows(sys.argv[2])
kept = {"0", "2", "3"}
def expected(r):
    if r["metric"] in ("path_energy", "cka_baseline_unbiased"):
        return True
    return r["layer"] in kept and (r["layer_b"] == "" or r["layer_b"] in kept)
key = lambda r: tuple(sorted(r.items()))
want = sorted((r for r in full if expected(r)), key=key)
got = sorted(listed, key=key)
assert len(want) < len(full), "the selection dropped nothing"
if want != got:
    print(f"{len(got)} rows, want {len(want)}")
    for r in [r for r in got if r not in want][:5]: print("extra:", r)
    for r in [r for r in want if r not in got][:5]: print("missing:", r)
    sys.exit(1)
print(f"{len(got)} of {len(full)} rows, equal")
PY
cat "$WORK/compare"

printf 'name: bad\nmodels: [pythia-tiny]\nlayers: [0, 4]\n' > "$WORK/bad.yaml"
"$LAYERFLOW" run "$WORK/bad.yaml" > /dev/null 2> "$WORK/bad.err"
code=$?
[[ $code == 1 ]] || fail "run bad.yaml: exit $code, want 1"
grep -qF "INVALID_ARGUMENT: spec.layers[1]: 4 is out of range for spec.models[0] 'pythia-tiny' (2 blocks: points 0..3, or -4..-1 counting from the end)" "$WORK/bad.err" \
  || { fail "run bad.yaml: message"; sed 's/^/  | /' "$WORK/bad.err" >&2; }

if (( failures > 0 )); then echo "$failures failure(s)" >&2; exit 1; fi
echo "layers e2e ok"
