#!/usr/bin/env bash
# The real layerflow-coordinator and layerflow binaries: `tokens
# create|list|revoke` on an --auth-db file (only the secret's SHA-256 in it),
# the start-up lines saying whether authentication is on, and the CLI's
# --token / LAYERFLOW_TOKEN against a coordinator with --auth-db.
#   tokens_cli_test.sh LAYERFLOW_COORDINATOR LAYERFLOW
set -u
COORD=$1
LAYERFLOW=$2
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh" tokens

DB=$WORK/auth.db
"$COORD" tokens create --auth-db "$DB" --user alice --role user > "$WORK/token" 2> "$WORK/err"
expect_rc $? 0 "tokens create"
token=$(cat "$WORK/token")
[[ $token =~ ^lf_([0-9a-f]{16})_([0-9a-f]{64})$ ]] || fail "token format: '$token'"
id=${BASH_REMATCH[1]}
secret=${BASH_REMATCH[2]}
expect_contains "$WORK/err" "created token $id for alice (role user)" "tokens create (stderr)"

# The file keeps the SHA-256 of the secret, never the secret.
digest=$(printf '%s' "$secret" | sha256sum | cut -d' ' -f1)
cat "$DB"* > "$WORK/bytes"
grep -qF -- "$secret" "$WORK/bytes" && fail "the secret is stored in $DB"
grep -qF -- "$digest" "$WORK/bytes" || fail "the secret's SHA-256 $digest is not in $DB"

"$COORD" tokens list --auth-db "$DB" > "$WORK/list"
expect_rc $? 0 "tokens list"
expect_contains "$WORK/list" "$id alice user created " "tokens list"
expect_contains "$WORK/list" " live" "tokens list"

"$COORD" tokens create --auth-db "$DB" --user bob --role boss > /dev/null 2> "$WORK/err"
expect_rc $? 2 "tokens create --role boss"
expect_contains "$WORK/err" "INVALID_ARGUMENT: role: 'boss' is not one of user, worker, admin" "bad role"

# A coordinator with --auth-db: the CLI without a token is refused, with it served.
"$COORD" --listen 127.0.0.1:0 --db "$WORK/lf.db" --metrics "" --auth-db "$DB" \
    > "$WORK/coord.log" 2>&1 &
pid=$!
for _ in $(seq 100); do grep -q "serving on port" "$WORK/coord.log" && break; sleep 0.1; done
port=$(sed -n 's/.*serving on port \([0-9]*\).*/\1/p' "$WORK/coord.log")
expect_contains "$WORK/coord.log" "authentication on: tokens in $DB" "coordinator log (auth on)"
"$LAYERFLOW" --coordinator "127.0.0.1:$port" jobs sw-x > /dev/null 2> "$WORK/err"
expect_rc $? 1 "jobs without a token"
expect_contains "$WORK/err" "UNAUTHENTICATED" "jobs without a token"
expect_contains "$WORK/err" "ListJobs: no token" "jobs without a token"
LAYERFLOW_TOKEN=$token "$LAYERFLOW" --coordinator "127.0.0.1:$port" jobs sw-x > /dev/null 2> "$WORK/err"
expect_rc $? 1 "jobs of another's sweep"
expect_contains "$WORK/err" "PERMISSION_DENIED" "jobs sw-x with a token"
expect_contains "$WORK/err" "sweep sw-x is not a sweep of 'alice'" "jobs sw-x with a token"

# Revoked: refused at once by the running coordinator.
"$COORD" tokens revoke --auth-db "$DB" "$id" 2> "$WORK/err"
expect_rc $? 0 "tokens revoke"
"$LAYERFLOW" --coordinator "127.0.0.1:$port" --token "$token" jobs sw-x > /dev/null 2> "$WORK/err"
expect_contains "$WORK/err" "UNAUTHENTICATED" "revoked token"
expect_contains "$WORK/err" "token $id was revoked" "revoked token"
"$COORD" tokens revoke --auth-db "$DB" "$id" 2> "$WORK/err"
expect_rc $? 1 "tokens revoke twice"
expect_contains "$WORK/err" "FAILED_PRECONDITION: token $id: already revoked" "revoke twice"
"$COORD" tokens list --auth-db "$DB" > "$WORK/list"
expect_contains "$WORK/list" "$id alice user created " "tokens list after revoke"
expect_contains "$WORK/list" " revoked" "tokens list after revoke"
kill "$pid"; wait "$pid" 2>/dev/null; pid=""

# Without --auth-db, on every interface: says so, and warns.
"$COORD" --listen 0.0.0.0:0 --db "$WORK/open.db" --metrics "" > "$WORK/open.log" 2>&1 &
pid=$!
for _ in $(seq 100); do grep -q "serving on port" "$WORK/open.log" && break; sleep 0.1; done
expect_contains "$WORK/open.log" "authentication is off (no --auth-db)" "coordinator log (auth off)"
expect_contains "$WORK/open.log" \
  "WARNING: authentication is off and 0.0.0.0:" "non-loopback warning"
expect_contains "$WORK/open.log" "is not a loopback address; start with --auth-db" "non-loopback warning"

if (( failures > 0 )); then echo "$failures failure(s)" >&2; exit 1; fi
echo "tokens CLI: all checks passed"
