#!/usr/bin/env bash
# The real layerflow-worker against a coordinator with --auth-db: without a
# token it is refused (UNAUTHENTICATED), with a user token too
# (PERMISSION_DENIED); with a worker token (LAYERFLOW_TOKEN) it registers and
# runs a user's sweep to the end, every worker RPC carrying the token. Then a
# TLS coordinator that asks for client certificates: the worker with
# --tls-ca and no certificate is refused, with --tls-cert/--tls-key it
# registers.
#   worker_token_test.sh LAYERFLOW_COORDINATOR LAYERFLOW_WORKER LAYERFLOW
set -u
COORD=$1
WORKER=$2
LAYERFLOW=$3
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh" worker-token
start_coordinator() {  # LOG ARGS...: starts it, sets pid and port
  local log=$1
  shift
  "$COORD" --listen 127.0.0.1:0 --metrics "" --heartbeat-interval-ms 200 "$@" > "$log" 2>&1 &
  pid=$!
  for _ in $(seq 100); do grep -q "serving on port" "$log" && break; sleep 0.1; done
  port=$(sed -n 's/.*serving on port \([0-9]*\).*/\1/p' "$log")
  [[ -n $port ]] || { fail "coordinator did not start:"; sed 's/^/  | /' "$log" >&2; exit 1; }
}
stop_coordinator() { kill "$pid"; wait "$pid" 2>/dev/null; pid=""; }
# The worker, bounded: refusals end it at once, an idle queue after 1.5 s.
worker() { timeout 60 "$WORKER" --device cpu --idle-poll-ms 100 --exit-after-idle-ms 1500 "$@"; }

DB=$WORK/auth.db
"$COORD" tokens create --auth-db "$DB" --user gpu-host-1 --role worker > "$WORK/worker.token" 2> /dev/null
expect_rc $? 0 "tokens create (worker)"
"$COORD" tokens create --auth-db "$DB" --user alice --role user > "$WORK/user.token" 2> /dev/null
expect_rc $? 0 "tokens create (user)"
worker_token=$(cat "$WORK/worker.token")
user_token=$(cat "$WORK/user.token")
[[ $worker_token =~ ^lf_([0-9a-f]{16})_[0-9a-f]{64}$ ]] || fail "worker token format: '$worker_token'"
worker_id=${BASH_REMATCH[1]}
[[ $user_token =~ ^lf_([0-9a-f]{16})_[0-9a-f]{64}$ ]] || fail "user token format: '$user_token'"
user_id=${BASH_REMATCH[1]}

start_coordinator "$WORK/coord.log" --db "$WORK/lf.db" --auth-db "$DB"
address=127.0.0.1:$port

# No token: the first RPC (RegisterWorker) is refused, and that is final.
LAYERFLOW_TOKEN= worker --coordinator "$address" > "$WORK/w0.log" 2>&1
expect_rc $? 1 "worker without a token"
expect_contains "$WORK/w0.log" "token=none" "worker without a token (config line)"
expect_contains "$WORK/w0.log" "UNAUTHENTICATED" "worker without a token"
expect_contains "$WORK/w0.log" "RegisterWorker: no token" "worker without a token"

# A user's token: authenticated, but not allowed to be a worker.
LAYERFLOW_TOKEN= worker --coordinator "$address" --token "$user_token" > "$WORK/w1.log" 2>&1
expect_rc $? 1 "worker with a user token"
expect_contains "$WORK/w1.log" "PERMISSION_DENIED" "worker with a user token"
expect_contains "$WORK/w1.log" \
  "RegisterWorker needs role worker or admin; token $user_id of 'alice' has role user" \
  "worker with a user token"

# A wrong secret under the worker token's id.
LAYERFLOW_TOKEN="lf_${worker_id}_$(printf '0%.0s' $(seq 64))" worker --coordinator "$address" \
  > "$WORK/w2.log" 2>&1
expect_rc $? 1 "worker with a wrong secret"
expect_contains "$WORK/w2.log" "UNAUTHENTICATED" "worker with a wrong secret"
expect_contains "$WORK/w2.log" "wrong secret" "worker with a wrong secret"

# alice submits a sweep; a worker with the worker token (LAYERFLOW_TOKEN)
# leases, heartbeats, streams and completes both jobs.
cat > "$WORK/sweep.yaml" <<YAML
name: worker-token
models: [pythia-tiny]
seeds: [0, 1]
datasets: [{name: kvpr, num_classes: 2}]
context_lengths: [512]
num_prompts: 2
prompts_per_chunk: 1
YAML
export LAYERFLOW_TOKEN=$user_token
sweep=$("$LAYERFLOW" --coordinator "$address" submit -q "$WORK/sweep.yaml" 2> "$WORK/submit.err")
expect_rc $? 0 "submit with alice's token"
[[ $sweep =~ ^sw- ]] || { fail "submit printed '$sweep'"; sed 's/^/  | /' "$WORK/submit.err" >&2; }
LAYERFLOW_TOKEN=$worker_token worker --coordinator "$address" --name gpu-host-1-w \
  > "$WORK/w3.log" 2>&1
expect_rc $? 0 "worker with a worker token"
expect_contains "$WORK/w3.log" "token=set" "worker with a worker token (config line)"
expect_contains "$WORK/w3.log" "registered as gpu-host-1-w (cpu)" "worker with a worker token"
expect_contains "$WORK/w3.log" "queue empty; exiting as asked" "worker with a worker token"
grep -qF -- "${worker_token#lf_*_}" "$WORK/w3.log" && fail "the worker logs its token's secret"
grep -E "UNAUTHENTICATED|PERMISSION_DENIED|failed" "$WORK/w3.log" \
  && fail "worker with a worker token: refusals or failures in its log"
"$LAYERFLOW" --coordinator "$address" jobs "$sweep" > "$WORK/jobs" 2> "$WORK/jobs.err"
expect_rc $? 0 "jobs of alice's sweep"
[[ $(grep -c "succeeded" "$WORK/jobs") == 2 ]] \
  || { fail "expected 2 succeeded jobs:"; sed 's/^/  | /' "$WORK/jobs" "$WORK/jobs.err" >&2; }
"$LAYERFLOW" --coordinator "$address" results "$sweep" --format csv > "$WORK/rows.csv" 2> /dev/null
expect_rc $? 0 "results of alice's sweep"
[[ $(wc -l < "$WORK/rows.csv") -gt 2 ]] || fail "results: expected rows, got $(wc -l < "$WORK/rows.csv") lines"
unset LAYERFLOW_TOKEN
stop_coordinator

# TLS with client certificates (one self-signed certificate serves as the
# server's, the CA and the worker's).
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost \
  -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
  -keyout "$WORK/key.pem" -out "$WORK/cert.pem" > /dev/null 2>&1 || fail "openssl req"
start_coordinator "$WORK/tls.log" --db "$WORK/tls.db" --auth-db "$DB" \
  --tls-cert "$WORK/cert.pem" --tls-key "$WORK/key.pem" --tls-client-ca "$WORK/cert.pem"
address=127.0.0.1:$port
LAYERFLOW_TOKEN=$worker_token worker --coordinator "$address" --tls-ca "$WORK/cert.pem" \
  > "$WORK/t0.log" 2>&1
expect_rc $? 1 "TLS worker without a client certificate"
expect_contains "$WORK/t0.log" "UNAUTHENTICATED" "TLS worker without a client certificate"
expect_contains "$WORK/t0.log" "worker calls need a TLS client certificate" \
  "TLS worker without a client certificate"
LAYERFLOW_TOKEN=$worker_token worker --coordinator "$address" --tls-ca "$WORK/cert.pem" \
  --tls-cert "$WORK/cert.pem" > "$WORK/t1.log" 2>&1
expect_rc $? 2 "TLS worker with --tls-cert and no --tls-key"
expect_contains "$WORK/t1.log" "give both" "TLS worker with --tls-cert and no --tls-key"
LAYERFLOW_TOKEN=$worker_token LAYERFLOW_TLS_CA=$WORK/cert.pem worker --coordinator "$address" \
  --tls-cert "$WORK/cert.pem" --tls-key "$WORK/key.pem" > "$WORK/t2.log" 2>&1
expect_rc $? 0 "TLS worker with a client certificate"
expect_contains "$WORK/t2.log" "tls=$WORK/cert.pem" "TLS worker (config line)"
expect_contains "$WORK/t2.log" "registered as" "TLS worker with a client certificate"
expect_contains "$WORK/t2.log" "queue empty; exiting as asked" "TLS worker with a client certificate"
stop_coordinator

if (( failures > 0 )); then echo "$failures failure(s)" >&2; exit 1; fi
echo "worker tokens and TLS: all checks passed"
