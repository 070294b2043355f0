#!/usr/bin/env bash
# Every GPU run of the project, one entry point: on a GPU machine through the
# device tool, with .deps carried (scripts/fetch_gpu_debs.sh makes it):
#   bash bench/gpu.sh COMMAND [ARGS]
# Each command builds what it needs into build-gpu (bench/gpu_prelude.sh:
# incremental on a warm machine), writes its logs and JSON under $OUT, and is
# recorded in bench/RESULTS.md with the date, the GPU and the commit.
#
#   conformance [FLAGS]  the GPU tests of the kernels, then the conformance
#                        suite: 4 architectures at >= 1.3B x every analysis x
#                        fp32/bf16/fp16 x batch 1 and 8 x 2048 (and Mamba-2 at
#                        2000 tokens) against float64 (bench/gpu_conformance.cc;
#                        FLAGS go to it). Run whenever worker/model,
#                        worker/analysis or worker/runtime change.
#                        LAYERFLOW_COMMIT names the commit. -> gpu_conformance.json
#   ssm                  the SSM benchmark: pythia-1.4b, mamba-1.4b, mamba2-1.3b
#                        8 x 2048 bf16 (forward, + 3 metrics, + all 8, tok/s,
#                        MFU, peak GiB), mamba-2.8b / mamba2-2.7b forward, and
#                        the transformers peer of each (LF_PEER=0 skips it,
#                        LF_SSM_ATEN=1 also times the ATen path, LF_COMMIT
#                        names the commit). -> ssm_gpu.json
#   overhead             metric overhead of pythia-1.4b bf16 / fp16 at 8 x 2048,
#                        each analysis alone, the half path against float64,
#                        the transformers peer; spectra cost per architecture;
#                        the probe trainer.
#   parity               a small sweep on CUDA and on the CPU (rows compared),
#                        then a pythia-1.4b bf16 sweep at 8 x 2048.
#   checkpoints          transformers-made checkpoints (GPT-NeoX; the model zoo
#                        of GPT-Neo, Mamba, Mamba-2) loaded onto the GPU against
#                        transformers, mid-size layerflow-inspect parity, the
#                        2.8B-size forwards.
#   profile [MODELS]     Nsight Compute over exactly one 8 x 2048 bf16 forward
#                        of each model (default mamba-1.4b,mamba2-1.3b): every
#                        kernel's time, summed per kernel (bench/ncu_summary.py),
#                        next to the forward's wall time without the profiler.
#                        LF_METRICS=1: also the three metrics' kernels (a
#                        forward with them less the forward alone).
#   sweep                issue 13's sweep benchmark: bench/sweeps/sweep_gpu_24.yaml
#                        (24 pythia-1.4b jobs, 8 x 2048 bf16) through
#                        `layerflow run`, GPU utilisation sampled, phase times
#                        from the store (bench/sweep_bench.py). -> sweep_gpu.json
#   load                 issue 13's checkpoint loading: the pinned-slot GPU test,
#                        then 2.8B presets written as safetensors and loaded
#                        onto the GPU from the page cache (GB/s: end to end,
#                        the copy through pinned slots, pageable copy_, the
#                        PCIe ceiling) and the peers (safetensors load_file,
#                        transformers from_pretrained). -> checkpoint_load.json
#   mqar                 issue 16's training runs, side by side: bench/sweeps/
#                        mqar_gpu{,_lr,_state,_state256,_attention,_mamba}.yaml
#                        (2-layer Mamba-2 at lr 3e-3 and 1e-2, at state 64, 128
#                        and 256, GPT-NeoX, Mamba on MQAR to 0.99,
#                        Zoology's curriculum; LF_MQAR_SWEEPS picks) through
#                        `layerflow run`, for at most LF_MQAR_SECONDS (240); the
#                        eval curve read from the kept store. -> mqar_gpu.csv;
#                        NAME@SEED runs NAME at that seed alone (store NAME_sSEED),
#                        NAME@SEED:MODEL that model alone; NAME with a / is a
#                        sweep file's path without .yaml (examples/...);
#                        LF_MQAR_KEEP=1 also each store with its trained models,
#                        LF_MQAR_KEEP=db each store alone
#   repro                docs/reproductions.md's GPU sweeps (examples/
#                        reproductions/), each store -> repro_NAME.tar.xz
#   multi                (2 GPUs) one GPU against two with NCCL, rows compared.
#   sharded [SWEEP]      (2 GPUs) every analysis of all four architectures on
#                        one GPU and on two: rows must agree to 1e-6.
set -uo pipefail
cmd="${1:-}"
shift || true
case "$cmd" in
  conformance)
    # The kernels written without a GPU (worker/kernels/kernel_switch.h) are
    # what this suite must check: on unless the caller says otherwise.
    export LAYERFLOW_SSM_KERNELS="${LAYERFLOW_SSM_KERNELS:-1}"
    export LF_TARGETS="${LF_TARGETS:-bench_gpu_conformance worker_ssm_kernels_gpu_test worker_half_state_ops_gpu_test}" ;;
  ssm)
    export LAYERFLOW_SSM_KERNELS="${LAYERFLOW_SSM_KERNELS:-1}"
    export LF_TARGETS="${LF_TARGETS:-bench_ssm_gpu worker_ssm_kernels_gpu_test}" ;;
  overhead)
    export LF_TARGETS="${LF_TARGETS:-bench_metrics_overhead bench_probe worker_half_state_ops_gpu_test}" ;;
  profile)
    export LAYERFLOW_SSM_KERNELS="${LAYERFLOW_SSM_KERNELS:-1}"
    export LF_TARGETS="${LF_TARGETS:-bench_ssm_gpu}" ;;
  load)
    export LF_TARGETS="${LF_TARGETS:-bench_checkpoint_load worker_staged_upload_gpu_test}" ;;
  sweep|mqar|repro)
    export LF_TARGETS="${LF_TARGETS:-layerflow layerflow-worker}" ;;
  parity|checkpoints|multi|sharded) ;;
  *) sed -n '2,/^set -uo/p' "$0" | sed '$d' >&2; exit 2 ;;
esac
source "$(dirname "$0")/gpu_prelude.sh"
LF=build-gpu/client/layerflow
B=build-gpu/bench

conformance() {
  echo "== GPU kernel tests (SSM kernels; fused analysis passes)"
  build-gpu/tests/worker/kernels/worker_ssm_kernels_gpu_test 2>&1 | tail -25 | tee "$OUT/ssm_kernels_gpu_test.log"
  build-gpu/tests/worker/analysis/worker_half_state_ops_gpu_test 2>&1 | tail -25 | tee "$OUT/half_state_ops_gpu_test.log"
  commit="${LAYERFLOW_COMMIT:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}"
  gpu="$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)"
  echo "== GPU conformance (commit $commit, $gpu)"
  t0=$(date +%s)
  build-gpu/bench/bench_gpu_conformance --device cuda --json "$OUT/gpu_conformance.json" \
    --commit "$commit" --gpu-name "$gpu" --date "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$@" \
    2>&1 | tee "$OUT/gpu_conformance.log"
  rc=${PIPESTATUS[0]}
  echo "conformance: $(( $(date +%s) - t0 )) s (rc=$rc)"
  return "$rc"
}

ssm() {
  echo "== 1. SSM kernels vs the ATen path and float64"
  build-gpu/tests/worker/kernels/worker_ssm_kernels_gpu_test 2>&1 | tail -30
  echo "== 2. bench_ssm_gpu"
  build-gpu/bench/bench_ssm_gpu --models "${LF_MODELS:-pythia-1.4b,mamba-1.4b,mamba2-1.3b}" \
    --forward-only-models "${LF_FORWARD_ONLY:-mamba-2.8b,mamba2-2.7b}" \
    --aten "${LF_SSM_ATEN:-0}" --reps "${LF_REPS:-5}" --json "$OUT/layerflow.json"
  echo "== 3. the transformers peer"
  : > "$OUT/peer.jsonl"
  if [ "${LF_PEER:-1}" = 1 ]; then
    python3 bench/peer_hf_ssm.py --arch gpt_neox --name pythia-1.4b --layers 24 --heads 16 --reps 3 >> "$OUT/peer.jsonl"
    python3 bench/peer_hf_ssm.py --arch mamba --name mamba-1.4b --layers 48 --reps 1 >> "$OUT/peer.jsonl"
    python3 bench/peer_hf_ssm.py --arch mamba2 --name mamba2-1.3b --layers 48 --reps 1 >> "$OUT/peer.jsonl"
    python3 bench/peer_hf_ssm.py --arch mamba2 --name mamba2-1.3b --layers 48 --prompts 2 --reps 1 >> "$OUT/peer.jsonl"
    cat "$OUT/peer.jsonl"
  fi
  python3 bench/ssm_gpu_report.py "$OUT"
}

overhead() {
  echo "== fused analysis kernels against their ATen reference"
  build-gpu/tests/worker/analysis/worker_half_state_ops_gpu_test 2>&1 | tail -25
  echo "== metric overhead, pythia-1.4b bf16 / fp16 8 x 2048"
  $B/bench_metrics_overhead --model pythia-1.4b --dtype bf16 --prompts 8 --tokens 2048 --reps 5 --each 1 --check-half 1
  $B/bench_metrics_overhead --model pythia-1.4b --dtype fp16 --prompts 8 --tokens 2048 --reps 5 --check-half 1
  echo "== peer (transformers), same shape"
  python3 bench/peer_hf_forward.py --hidden 2048 --layers 24 --heads 16 --prompts 8 --tokens 2048 --reps 5
  echo "== spectra, 1 x 2048, bf16"
  for m in pythia-1.4b gpt-neo-1.3b mamba-1.4b mamba2-1.3b; do
    $B/bench_metrics_overhead --model "$m" --dtype bf16 --prompts 1 --tokens 2048 --reps 3 --spectra 1
  done
  echo "== probing 2000 x 33 x 2560, 150 epochs x 3 seeds"
  $B/bench_probe --examples 2000 --points 33 --dim 2560 --epochs 150 --seeds 3 --device cuda
}

parity() {
  grep -E "CUDA \+ NCCL" "$OUT/build.log"
  echo "== CUDA vs CPU parity"
  timed "cuda run" $LF run bench/sweeps/parity_small.yaml --format csv > "$OUT/cuda.csv" 2> "$OUT/cuda.log"; grep -m1 "registered" "$OUT/cuda.log"
  CUDA_VISIBLE_DEVICES="" timed "cpu run" $LF run bench/sweeps/parity_small.yaml --format csv > "$OUT/cpu.csv" 2> "$OUT/cpu.log"; grep -m1 "registered" "$OUT/cpu.log"
  python3 bench/compare_csv.py "$OUT/cpu.csv" "$OUT/cuda.csv" 1e-4
  echo "== pythia-1.4b bf16, 8 prompts x 2048 tokens"
  timed "pythia-1.4b run" $LF run bench/sweeps/gpu_1p4b.yaml > "$OUT/1p4b.txt" 2> "$OUT/1p4b.log"; grep -E "registered|leased|done|error" "$OUT/1p4b.log" | head; head -30 "$OUT/1p4b.txt"
}

checkpoints() {
  echo "== checkpoints of every architecture made by transformers, on CUDA"
  python3 tests/worker/checkpoint/make_parity_fixture.py --out /tmp/parity_fixture > /dev/null
  LAYERFLOW_PARITY_FIXTURE_DIR=/tmp/parity_fixture build-gpu/tests/worker/checkpoint/worker_checkpoint_parity_test \
    | grep -E "cuda|OK|FAILED|Failure|error"
  echo "== mid-size shapes, GPU, layerflow-inspect vs transformers"
  python3 bench/gpu_zoo_parity.py --inspect build-gpu/worker/layerflow-inspect
  echo "== 2.8B-size presets, bf16, 1 x 2048 tokens"
  for m in pythia-2.8b gpt-neo-2.7b mamba-2.8b mamba2-2.7b; do
    $B/bench_metrics_overhead --model "$m" --dtype bf16 --prompts 1 --tokens 2048 --reps 5 --forward-only 1
  done
}

load() {
  echo "== pinned-slot uploads against copy_"
  build-gpu/tests/worker/model/worker_staged_upload_gpu_test 2>&1 | tail -8
  local models="${LF_MODELS:-pythia-2.8b,mamba-2.8b}" dir=/tmp/lf_checkpoint_load
  echo "== bench_checkpoint_load ($models, bf16, page cache warm)"
  $B/bench_checkpoint_load --models "$models" --dtype bf16 --dir "$dir" --reps "${LF_REPS:-3}" \
    --json "$OUT/checkpoint_load.json"
  local rc=$?
  echo "== peers"
  python3 bench/peer_checkpoint_load.py --dir "$dir" --models "$models" --reps "${LF_PEER_REPS:-2}" \
    | tee "$OUT/checkpoint_load_peer.jsonl"
  rm -rf "$dir"
  return "$rc"
}

sweep() {
  python3 bench/sweep_bench.py --layerflow "$LF" --sweep bench/sweeps/sweep_gpu_24.yaml \
    --gpu 1 --out "$OUT/sweep_gpu.json"
}

# `layerflow run FILE` into a folder of its own (the store and, beside it,
# its artifacts/) under DIR, for at most SECONDS; stderr to DIR/NAME.log.
run_kept() {
  local file="$1" dir="$2" seconds="$3" name
  name="$(basename "$file" .yaml)"
  rm -rf "${dir:?}/$name"; mkdir -p "$dir/$name"
  timeout "$seconds" $LF run "$file" --db "$dir/$name/$name.db" \
    --format csv --no-figures > /dev/null 2> "$dir/$name.log"
}

mqar() {
  # The sweeps side by side on the one GPU (each small model leaves it
  # mostly idle), each with its store, for at most LF_MQAR_SECONDS.
  local s file sweeps=""
  mkdir -p /tmp/mqar_seeds
  for s in ${LF_MQAR_SWEEPS:-mqar_gpu mqar_gpu_lr mqar_gpu_attention mqar_gpu_mamba}; do
    # NAME[@SEED[:MODEL]]: NAME is bench/sweeps/NAME.yaml, or a sweep file's
    # path without .yaml (examples/reproductions/...); @SEED runs it at that
    # one seed, :MODEL with that one model, as a sweep (and store) of its own.
    local base="${s%%@*}" seed="" model=""
    case "$base" in */*) file="$base.yaml" ;; *) file="bench/sweeps/$base.yaml" ;; esac
    if [ "$s" != "$base" ]; then
      seed="${s#*@}"; model=""
      [ "$seed" != "${seed%%:*}" ] && { model="${seed#*:}"; seed="${seed%%:*}"; }
      s="$(basename "$base")_s$seed${model:+_$model}"
      sed -e "s/^seeds: .*/seeds: [$seed]/" -e "s/^name: \(.*\)/name: \1-s$seed${model:+-${model//_/-}}/" \
        ${model:+-e "s/^models: .*/models: [$model]/"} "$file" > "/tmp/mqar_seeds/$s.yaml"
      file="/tmp/mqar_seeds/$s.yaml"
    fi
    sweeps="$sweeps $s"
    run_kept "$file" /tmp/mqar "${LF_MQAR_SECONDS:-240}" &
  done
  wait
  for s in $sweeps; do grep -iE "error|fail" "/tmp/mqar/$s.log" | head -3; done
  # The curves from the stores, whether or not the runs finished: one row a
  # chunk (the step it ends at) and metric, mean over the chunk.
  python3 - "$OUT" $sweeps <<'PY'
import csv, os, sqlite3, sys
out = csv.writer(open(os.path.join(sys.argv[1], "mqar_gpu.csv"), "w", newline=""))
out.writerow(["sweep", "model", "metric", "step", "value"])
for sweep in sys.argv[2:]:
    path = os.path.join("/tmp/mqar", sweep, sweep + ".db")
    if not os.path.exists(path):
        print(sweep, "no store"); continue
    rows = sqlite3.connect(path).execute(
        "SELECT j.model, s.metric, s.position, s.sum / s.count FROM chunk_stats s "
        "JOIN jobs j ON j.job_id = s.job_id WHERE s.metric IN "
        "('eval_acc', 'eval_loss', 'train_loss', 'train_acc', 'train_stopped') "
        "ORDER BY j.model, s.metric, s.position").fetchall()
    out.writerows([(sweep,) + tuple(r) for r in rows])
    acc = [(step, v) for m, metric, step, v in rows if metric == "eval_acc"]
    stop = [step for m, metric, step, v in rows if metric == "train_stopped"]
    print(f"{sweep:24s} eval_acc " + " ".join(f"{st}:{v:.3f}" for st, v in acc[::2] + acc[-1:]))
    if stop: print(f"{sweep:24s} stopped at step {stop[0]}")
PY
  if [ "${LF_MQAR_KEEP:-0}" != 0 ]; then
    # Each store with its trained models (not the resume states nor the
    # init models: those the CPU makes bit for bit from the seed,
    # docs/models.md), one file a sweep, for docs/reproductions.md;
    # LF_MQAR_KEEP=db: the store alone (a sweep that analysed its models).
    local models="artifacts/*/model"
    [ "$LF_MQAR_KEEP" = db ] && models=""
    for s in $sweeps; do
      # shellcheck disable=SC2086  # $models is a glob or nothing
      (cd "/tmp/mqar/$s" && shopt -s nullglob && tar cJf "$OUT/${s}_store.tar.xz" ./*.db $models)
    done
  fi
}

repro() {
  # docs/reproductions.md's GPU sweeps (examples/reproductions/), one after
  # another, each store returned as one archive for `layerflow plot` on a
  # machine with cairo (this one has none).
  local files="${LF_REPRO:-random-init-2.8b cka-estimators kvpr-probing-random-init}" s t0
  for s in $files; do
    t0=$(date +%s)
    run_kept "examples/reproductions/$s.yaml" /tmp/repro "${LF_REPRO_SECONDS:-200}"
    echo "$s: rc=$? $(( $(date +%s) - t0 )) s; $(tail -1 "/tmp/repro/$s.log")"
    tar cJf "$OUT/repro_$s.tar.xz" -C "/tmp/repro/$s" "$s.db"
  done
}

profile() {
  local models="${1:-mamba-1.4b,mamba2-1.3b}" m
  $B/bench_ssm_gpu --models "" --forward-only-models "$models" --reps 3
  for m in ${models//,/ }; do
    echo "== ncu, one forward of $m"
    ncu --clock-control none --metrics gpu__time_duration.sum --csv \
      $B/bench_ssm_gpu --models "" --forward-only-models "$m" --reps 1 --warmups 0 \
      > "$OUT/ncu_$m.csv" 2> "$OUT/ncu_$m.err"
    python3 bench/ncu_summary.py "$OUT/ncu_$m.csv" --top "${LF_TOP:-30}"
    if [ "${LF_METRICS:-0}" = 1 ]; then
      # The forward with the three metrics, less the forward: the metrics'
      # kernels (the profiler on only around each; --profile-range).
      echo "== ncu, the three metrics of $m (forward + metrics less the forward)"
      ncu --clock-control none --metrics gpu__time_duration.sum --csv --profile-from-start off \
        $B/bench_ssm_gpu --models "" --forward-only-models "$m" --reps 1 --warmups 0 \
        --profile-range 1 > "$OUT/ncu_fwd_$m.csv" 2> "$OUT/ncu_fwd_$m.err"
      ncu --clock-control none --metrics gpu__time_duration.sum --csv --profile-from-start off \
        $B/bench_ssm_gpu --models "$m" --sets three --reps 1 --warmups 0 --profile-range 1 \
        > "$OUT/ncu_three_$m.csv" 2> "$OUT/ncu_three_$m.err"
      python3 bench/ncu_summary.py "$OUT/ncu_three_$m.csv" --minus "$OUT/ncu_fwd_$m.csv" \
        --top "${LF_TOP:-30}"
    fi
  done
}

multi() {
  echo "== 1 GPU vs 2 GPUs (NCCL), fp32"
  CUDA_VISIBLE_DEVICES=0 timed "1 gpu" $LF run bench/sweeps/parity_small.yaml --format csv > "$OUT/gpu1.csv" 2> "$OUT/gpu1.log"; grep -m1 registered "$OUT/gpu1.log"
  timed "2 gpus" $LF run bench/sweeps/parity_small.yaml --format csv > "$OUT/gpu2.csv" 2> "$OUT/gpu2.log"; grep -m1 registered "$OUT/gpu2.log"; grep -iE "error|fail" "$OUT/gpu2.log" | head -5
  python3 bench/compare_csv.py "$OUT/gpu1.csv" "$OUT/gpu2.csv" 1e-6
  echo "== pythia-1.4b bf16, 8 prompts x 2048 tokens"
  CUDA_VISIBLE_DEVICES=0 timed "1 gpu" $LF run bench/sweeps/gpu_1p4b.yaml --format csv > "$OUT/1p4b_gpu1.csv" 2> "$OUT/1p4b_gpu1.log"
  timed "2 gpus" $LF run bench/sweeps/gpu_1p4b.yaml --format csv > "$OUT/1p4b_gpu2.csv" 2> "$OUT/1p4b_gpu2.log"
  grep -iE "error|fail" "$OUT/1p4b_gpu2.log" | head -5
  python3 bench/compare_csv.py "$OUT/1p4b_gpu1.csv" "$OUT/1p4b_gpu2.csv" 1e-2
}

sharded() {
  local sweep="${1:-bench/sweeps/sharded_all.yaml}"
  CUDA_VISIBLE_DEVICES=0 $LF run "$sweep" --format csv > "$OUT/one.csv" 2> "$OUT/one.log"
  grep -m1 registered "$OUT/one.log"; tail -1 "$OUT/one.log"
  $LF run "$sweep" --format csv > "$OUT/two.csv" 2> "$OUT/two.log"
  grep -m1 registered "$OUT/two.log"; tail -1 "$OUT/two.log"
  wc -l "$OUT/one.csv" "$OUT/two.csv"
  python3 bench/compare_csv.py "$OUT/one.csv" "$OUT/two.csv" 1e-6
}

"$cmd" "$@"
