# shellcheck shell=bash
# Sourced by the auth shell tests: a work folder ($WORK, removed at exit
# with the coordinator of $pid), failures counted in $failures, and the two
# checks every test makes.
#   source "$(dirname "$0")/lib.sh" NAME
WORK=$(mktemp -d "${TMPDIR:-/tmp}/layerflow-$1-XXXXXX")
pid=""
cleanup() { [[ -n $pid ]] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT
failures=0
fail() { echo "FAIL: $*" >&2; failures=$((failures + 1)); }
expect_contains() {  # FILE TEXT WHAT
  grep -qF -- "$2" "$1" || { fail "$3: expected '$2' in:"; sed 's/^/  | /' "$1" >&2; }
}
expect_rc() {  # GOT WANT WHAT
  [[ $1 == "$2" ]] || fail "$3: exit code $1, expected $2"
}
