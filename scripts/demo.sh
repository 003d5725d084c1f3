#!/usr/bin/env bash
# `make run`: start the embedded stack (`weft up`) on a free port with a temporary data dir, run
# the self-contained demo workflow with live progress, show its event log and outputs, then stop
# the stack. Needs no network.
set -euo pipefail
cd "$(dirname "$0")/.."
WEFT=.venv/bin/weft
WORKFLOW=${1:-examples/demo.json}

PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
DATA=$(mktemp -d -t weft-demo.XXXXXX)
URL="http://127.0.0.1:$PORT"

"$WEFT" up --http-port "$PORT" --data-dir "$DATA" >"$DATA/weft-up.log" 2>&1 &
UP_PID=$!
cleanup() {
  kill -TERM "$UP_PID" 2>/dev/null || true
  wait "$UP_PID" 2>/dev/null || true
  rm -rf "$DATA"
}
trap cleanup EXIT

echo "== weft up on $URL (data in $DATA)"
if ! python3 - "$URL" <<'PY'
import sys, time, urllib.request
url = sys.argv[1] + "/readyz"
deadline = time.time() + 60
while time.time() < deadline:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            if r.status == 200:
                sys.exit(0)
    except OSError:
        pass
    time.sleep(0.2)
sys.exit(1)
PY
then
  echo "weft up did not become ready; its log:" >&2
  cat "$DATA/weft-up.log" >&2
  exit 1
fi

echo "== weft run $WORKFLOW"
"$WEFT" run "$WORKFLOW" --url "$URL"

EID=$(python3 - "$URL" <<'PY'
import json, sys, urllib.request
with urllib.request.urlopen(sys.argv[1] + "/v1/executions?limit=1", timeout=5) as r:
    print(json.load(r)[0]["executionId"])
PY
)
echo
echo "== its event log (weft logs $EID)"
"$WEFT" logs "$EID" --url "$URL"
echo
echo "== stopping the stack"
