#!/usr/bin/env bash
# Record vcrpy cassettes against the embedded local model (SmolLM2-135M on llama.cpp).
#   scripts/record_cassettes.sh [pytest arguments...]     default: tests/test_llm_http.py
#   e.g. scripts/record_cassettes.sh tests/langchain/test_http.py -k plain
# Starts `python -m opto_core.llm.local` on 127.0.0.1:8765 (OPTO_RECORD_PORT to change), waits until it
# answers, runs pytest with OPTO_RECORD=1, then stops the server it started. A server already
# answering on that address is reused and left running. Runs are serialized with a lock file, so
# several people (or helpers) can record at once without stopping each other's server.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -n "${PYTHON:-}" ]; then PY="$PYTHON"
elif [ -n "${VIRTUAL_ENV:-}" ]; then PY=python
elif [ -x .venv/bin/python ]; then PY=.venv/bin/python
else PY=python3; fi
HOST=127.0.0.1
PORT="${OPTO_RECORD_PORT:-8765}"
URL="http://$HOST:$PORT/v1"
LOCK="${TMPDIR:-/tmp}/opto-record-cassettes.$PORT.lock"

exec 9>"$LOCK"
if ! flock -n 9; then
  echo "another recording is running on $URL; waiting for it to finish..." >&2
  flock 9
fi

up() { "$PY" -c "import urllib.request; urllib.request.urlopen('$URL/models', timeout=2)" >/dev/null 2>&1; }

server=""
log=""
stop_server() {
  if [ -n "$server" ]; then
    kill "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
  fi
  [ -z "$log" ] || rm -f "$log"
}
trap stop_server EXIT

if up; then
  echo "reusing the model server already answering at $URL" >&2
else
  log="$(mktemp "${TMPDIR:-/tmp}/opto-record-server.XXXXXX")"
  "$PY" -m opto_core.llm.local --host "$HOST" --port "$PORT" >"$log" 2>&1 9>&- &
  server=$!
  started=$(date +%s)
  until up; do
    if ! kill -0 "$server" 2>/dev/null; then
      echo "the model server failed to start:" >&2; cat "$log" >&2; server=""; exit 1
    fi
    if [ $(( $(date +%s) - started )) -gt 60 ]; then
      echo "the model server did not answer within 60 s:" >&2; cat "$log" >&2; exit 1
    fi
    sleep 0.3
  done
  echo "$(head -n 1 "$log")" >&2
fi

[ $# -gt 0 ] || set -- tests/test_llm_http.py
OPTO_RECORD=1 OPTO_RECORD_BASE_URL="$URL" "$PY" -m pytest "$@"
