#!/usr/bin/env bash
# The results web page end to end: a real coordinator (--http) and worker on
# loopback run a small sweep; headless Chromium (Debian's `chromium`, started
# here) loads the pages. Checked: the sweeps list names the sweep; the sweep
# page shows its jobs and the figure, which the browser decodes
# (data-decoded set by the page's script) and which is served as image/png;
# the CSV download is the bytes of `layerflow results --format csv`; errors
# are 404 / 400 with the message; a screenshot matches the stored one
# (testdata/results_page.png) within png_diff's tolerance.
#   results_page_e2e_test.sh COORDINATOR_BIN WORKER_BIN CLI_BIN PNG_DIFF_BIN
# LAYERFLOW_UPDATE_SCREENSHOT=1 writes the screenshot as the new reference.
set -uo pipefail
coordinator_bin=$1 worker_bin=$2 cli_bin=$3 png_diff=$4
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
reference="$here/testdata/results_page.png"
# The screenshot may differ from the reference in at most 2% of its pixels
# by more than 48 of 255 in a channel: the sweep and job ids differ from run
# to run (about 0.5% of the page); a missing figure or table is far more.
channel_tolerance=48 max_fraction=0.02
command -v chromium >/dev/null || { echo "FAIL: chromium not installed (scripts/bootstrap.sh installs it)"; exit 1; }
command -v curl >/dev/null || { echo "FAIL: curl not installed"; exit 1; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/layerflow-web-XXXXXX")
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT
failures=0 passed=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }
ok() { echo "ok: $*"; passed=$((passed + 1)); }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
grpc_port=$(free_port) http_port=$(free_port)
url="http://127.0.0.1:$http_port"

# Chromium on loopback only (no background traffic, and no name resolves
# but 127.0.0.1), with its own profile, no sandbox (root in CI) and a virtual
# time budget so that the page's script and images finish.
browser() {
  chromium --headless --disable-gpu --no-sandbox --no-first-run --disable-extensions \
    --disable-background-networking --disable-component-update --disable-sync \
    --disable-domain-reliability --no-pings --host-resolver-rules="MAP * ~NOTFOUND, EXCLUDE 127.0.0.1" \
    --disable-dev-shm-usage --user-data-dir="$tmp/chromium" --hide-scrollbars \
    --force-device-scale-factor=1 --virtual-time-budget=5000 "$@" 2>>"$tmp/chromium.log"
}

"$coordinator_bin" --listen "127.0.0.1:$grpc_port" --metrics "" --http "127.0.0.1:$http_port" \
  --db "$tmp/store.db" --heartbeat-interval-ms 200 >"$tmp/coordinator.log" 2>&1 &
pids+=($!)
"$worker_bin" --coordinator "127.0.0.1:$grpc_port" --device cpu --idle-poll-ms 100 \
  >"$tmp/worker.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do curl -sf "$url/" >/dev/null && break; sleep 0.1; done
grep -q "results page on port $http_port" "$tmp/coordinator.log" \
  || fail "coordinator log does not name the results page port: $(cat "$tmp/coordinator.log")"

cat >"$tmp/sweep.yaml" <<YAML
name: web-e2e
models: [pythia-tiny, mamba-tiny]
datasets: [{name: kvpr, num_classes: 2}]
context_lengths: [512]
num_prompts: 2
prompts_per_chunk: 1
YAML
sweep=$("$cli_bin" --coordinator "127.0.0.1:$grpc_port" submit -q "$tmp/sweep.yaml") \
  || { fail "submit"; echo "0 passed, 1 failed"; exit 1; }
"$cli_bin" --coordinator "127.0.0.1:$grpc_port" watch "$sweep" >/dev/null 2>"$tmp/watch.err" \
  || { fail "sweep $sweep did not succeed: $(cat "$tmp/watch.err")"; tail -20 "$tmp/worker.log"; }
"$cli_bin" --coordinator "127.0.0.1:$grpc_port" results "$sweep" --format csv >"$tmp/results.csv"

# The sweeps list, as the browser sees it after the script ran.
browser --dump-dom "$url/" >"$tmp/list.html"
if grep -qF "<a href=\"/sweeps/$sweep\">$sweep</a>" "$tmp/list.html" &&
   grep -qF "<td>web-e2e</td>" "$tmp/list.html"; then
  ok "the sweeps list links $sweep (web-e2e)"
else
  fail "the sweeps list lacks $sweep:"; sed 's/^/  | /' "$tmp/list.html" | head -40
fi

# The sweep page: jobs, the figure (decoded by the browser), the downloads.
browser --dump-dom "$url/sweeps/$sweep" >"$tmp/sweep.html"
jobs_ok=$(grep -c 'class="state state-succeeded" data-field="state">succeeded' "$tmp/sweep.html")
[ "$jobs_ok" -ge 3 ] && ok "the sweep and its 2 jobs show as succeeded" \
  || fail "succeeded states on the sweep page: $jobs_ok, want 3 (the sweep and 2 jobs)"
img=$(grep -o '<img class="figure-image" src="[^"]*depth_intertoken_cos.png"[^>]*>' "$tmp/sweep.html")
decoded=$(printf '%s' "$img" | sed -n 's/.*data-decoded="\([^"]*\)".*/\1/p')
src=$(printf '%s' "$img" | sed -n 's/.*src="\([^"]*\)".*/\1/p')
if [[ $decoded =~ ^[0-9]+x[0-9]+$ ]]; then
  ok "the browser decoded the figure $src ($decoded)"
else
  fail "figure element: '${img:-none}' (data-decoded '${decoded}')"
fi
if [ -n "$src" ]; then
  type=$(curl -s -o "$tmp/figure.png" -w '%{content_type}' "$url$src")
  size=$("$png_diff" --info "$tmp/figure.png")
  [ "$type" = image/png ] && [ "$size" = "$decoded" ] \
    && ok "the figure is served as image/png and decodes ($size)" \
    || fail "figure: content type '$type', size '$size' vs the browser's '$decoded'"
fi

csv_href=$(sed -n 's/.*<a id="download-csv" href="\([^"]*\)".*/\1/p' "$tmp/sweep.html" | sed 's/&amp;/\&/g')
csv_type=$(curl -s -o "$tmp/download.csv" -w '%{content_type}' "$url$csv_href")
if [ -n "$csv_href" ] && [ -s "$tmp/results.csv" ] && cmp -s "$tmp/download.csv" "$tmp/results.csv" &&
   [ "$csv_type" = "text/csv; charset=utf-8" ]; then
  ok "the CSV download ($csv_href) is the bytes of layerflow results --format csv ($(wc -l <"$tmp/results.csv") lines)"
else
  fail "CSV download '$csv_href' ($csv_type) differs from layerflow results --format csv:"
  diff "$tmp/download.csv" "$tmp/results.csv" | head -10
fi
"$cli_bin" --coordinator "127.0.0.1:$grpc_port" results "$sweep" --format json >"$tmp/results.json"
curl -s "$url/sweeps/$sweep/results?format=json" | cmp -s - "$tmp/results.json" \
  && ok "the JSON download is the bytes of layerflow results --format json" \
  || fail "the JSON download differs from layerflow results --format json"

# Errors.
expect_status() {  # PATH STATUS TEXT
  local code body
  code=$(curl -s -o "$tmp/error.txt" -w '%{http_code}' "$url$1")
  body=$(cat "$tmp/error.txt")
  [ "$code" = "$2" ] && [[ $body == *"$3"* ]] && ok "$1 -> $2 ($body)" \
    || fail "$1: $code '$body', want $2 with '$3'"
}
expect_status /sweeps/sw-nope 404 "unknown sweep 'sw-nope'"
expect_status "/sweeps/$sweep/results?format=xml" 400 "query parameter 'format': 'xml' is not csv or json"
expect_status "/sweeps/$sweep/figures/nope.png" 404 "has no figure 'nope'"

# The screenshot against the stored one.
browser --window-size=1280,1400 --screenshot="$tmp/page.png" "$url/sweeps/$sweep" >/dev/null
if [ "${LAYERFLOW_UPDATE_SCREENSHOT:-0}" = 1 ]; then
  cp "$tmp/page.png" "$reference" && echo "wrote $reference"
fi
if [ ! -s "$tmp/page.png" ]; then
  fail "no screenshot: $(tail -5 "$tmp/chromium.log")"
elif diff_line=$("$png_diff" "$tmp/page.png" "$reference" "$channel_tolerance" "$max_fraction"); then
  ok "screenshot matches $reference: $diff_line"
else
  mkdir -p "${LAYERFLOW_TEST_ARTIFACTS:-/tmp}" && cp "$tmp/page.png" "${LAYERFLOW_TEST_ARTIFACTS:-/tmp}/results_page.actual.png"
  fail "screenshot differs from $reference: $diff_line (kept as ${LAYERFLOW_TEST_ARTIFACTS:-/tmp}/results_page.actual.png)"
fi

echo "$passed passed, $failures failed"
[ "$failures" -eq 0 ]
