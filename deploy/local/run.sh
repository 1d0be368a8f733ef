#!/usr/bin/env bash
# `make run`: the whole pipeline on this machine with demo data. Starts Elasticsearch
# and NATS unless ELASTICSEARCH_URL / NATS_URL point at running ones, then the
# webserver and the backend, publishes demo frames, prints the URL to open, and
# follows the logs until Ctrl-C, which stops everything it started.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"

if [ -z "${PIPELINE_SERVICES_UP:-}" ]; then
  exec deploy/local/services.sh with elasticsearch nats -- env PIPELINE_SERVICES_UP=1 "$0" "$@"
fi

logs=.services/logs
mkdir -p "$logs"
: "${LISTEN_ADDR:=127.0.0.1:5000}" "${ADMIN_ADDR:=127.0.0.1:8081}"
# One local node cannot hold replicas; none keeps the indices green.
: "${ES_INDEX_REPLICAS:=0}"
# The demo frames are of 2023-03-09, far older than the window of event times the
# webserver accepts by default (30 days before their publish time).
: "${TIMESTAMP_MAX_PAST:=off}"
export LISTEN_ADDR ADMIN_ADDR ES_INDEX_REPLICAS TIMESTAMP_MAX_PAST
api="http://${LISTEN_ADDR/#:/localhost:}"
admin="http://${ADMIN_ADDR/#:/localhost:}"

pids=()
stop() {
  [ ${#pids[@]} -eq 0 ] && return
  # After Ctrl-C on `make run | tee log` nobody reads stderr any more: a message
  # that cannot be written must not end the cleanup (SIGPIPE, or set -e).
  trap '' PIPE
  echo "run: stopping webserver and backend" >&2 2>/dev/null || true
  kill -TERM "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
  pids=()
}
trap stop EXIT
trap 'exit 130' INT TERM

bin/webserver >"$logs/webserver.log" 2>&1 & pids+=($!)
bin/backend >"$logs/backend.log" 2>&1 & pids+=($!)

ready() { curl -sf -m 2 "$1" >/dev/null 2>&1; }
for what in "$admin/readyz" "$api/readyz"; do
  for _ in $(seq 1 60); do ready "$what" && break; sleep 0.5; done
  ready "$what" || { tail -n 20 "$logs"/*.log >&2; echo "run: $what is not ready (logs above)" >&2; exit 1; }
done

# Five minutes of frames from four cameras, one frame per camera every 10 s, on the
# date of the original system's example URL. Republishing them is harmless: the
# message ids make both NATS and Elasticsearch keep one copy.
bin/publisher --count 120 --cameras 4 --start 2023-03-09T19:40:00Z --interval 10s

url="$api/getJsonStream?start_date=2023-03-09T19:40:00&end_date=2023-03-09T19:45:00"
for _ in $(seq 1 60); do
  n=$(curl -sf -m 5 "$url" | grep -o '"camera_id"' | wc -l || true)
  [ "${n:-0}" -ge 120 ] && break
  sleep 0.5
done

cat <<MSG

  The pipeline is running with ${n:-0} demo documents. Open:

    $url

  or see them per minute in a browser, and follow new ones as they arrive:

    $api/?start=2023-03-09T19:40:00Z&follow=true

  or stream them as NDJSON:  curl -N '$api/getStream?start_date=2023-03-09T19:40:00&end_date=2023-03-09T19:45:00'
  or follow the range as frames arrive:
    curl -N -H 'Accept: text/event-stream' '$api/getStream?start_date=2023-03-09T19:40:00&follow=true'
  and, in another terminal, publish 80 more frames (121 to 200), 20 a second:  bin/publisher --count 200 --rate 20
  Health: $admin/readyz (webserver)  $api/readyz (backend)
  Logs follow below; Ctrl-C stops everything this command started.

MSG
tail -n +1 -F "$logs/webserver.log" "$logs/backend.log" &
pids+=($!)
wait
