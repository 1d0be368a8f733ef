#!/usr/bin/env bash
# Starts and stops the local Elasticsearch and NATS JetStream that tests and `make run`
# use. No Docker: Elasticsearch runs from Elastic's jars on Maven Central through the
# launcher in deploy/elasticsearch-local, NATS is built from the Go module in go.mod.
#
#   services.sh up [elasticsearch] [nats]     start what is not already running (default: both)
#   services.sh down                          stop what `up` started
#   services.sh with [elasticsearch] [nats] -- CMD...
#                                             run CMD with the services, stop afterwards
#                                             whatever this call started, even on failure
#
# A service whose URL is already set (ELASTICSEARCH_URL, NATS_URL) and answers is used
# as it is. The URLs in use are written to .services/env for tests and other targets.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
state=${SERVICES_STATE:-$root/.services}
es_port=${ES_PORT:-9200}
nats_port=${NATS_PORT:-4222}
nats_monitor_port=${NATS_MONITOR_PORT:-8222}
es_heap=${ES_HEAP:-512m}

# A message that cannot be written (stderr a pipe whose reader is gone, as after
# Ctrl-C on `make run | tee log`) is dropped, never fatal: see quiet_on_broken_pipe.
say() { printf 'services: %s\n' "$*" >&2 2>/dev/null || true; }

# quiet_on_broken_pipe makes this shell ignore SIGPIPE, so that cleanup goes on to
# stop the servers when its messages can no longer be written; say drops them.
quiet_on_broken_pipe() { trap '' PIPE; }
die() { say "$*"; exit 1; }

need() { command -v "$1" >/dev/null 2>&1 || die "$1 is required but not installed ($2)"; }

# logfile NAME is where NAME's log goes, as a person would type it: relative to the
# repository when the state directory is inside it (.services/nats.log).
logfile() { local p="$state/$1.log"; printf '%s' "${p#"$root"/}"; }

pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

es_ready() {
  local headers
  headers=$(curl -s -m 5 -D - -o /dev/null "$1/_cluster/health?wait_for_status=yellow&timeout=4s" 2>/dev/null) || return 1
  grep -qi '^x-elastic-product: *Elasticsearch' <<<"$headers" && grep -q ' 200' <<<"$headers"
}

nats_ready() { curl -sf -m 3 "http://127.0.0.1:$1/healthz?js-enabled-only=true" >/dev/null 2>&1; }

port_taken() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_until() { # wait_until SECONDS CMD...
  local deadline=$((SECONDS + $1)); shift
  until "$@"; do
    [ $SECONDS -lt $deadline ] || return 1
    sleep 1
  done
}

write_env() {
  mkdir -p "$state"
  local tmp="$state/env.tmp"
  { [ -n "${es_url:-}" ] && echo "ELASTICSEARCH_URL=$es_url"
    [ -n "${nats_url:-}" ] && echo "NATS_URL=$nats_url"; } >"$tmp" || true
  mv "$tmp" "$state/env"
}

# launched NAME LABEL URL SECONDS CHECK...: called right after starting NAME in the
# background; records its pid, counts it as started (so a failed start is stopped
# too), and waits until CHECK passes, showing its log if it never does.
launched() {
  local name=$1 label=$2 url=$3 secs=$4; shift 4
  echo $! >"$state/$name.pid"
  started+=("$name")
  if ! wait_until "$secs" "$@"; then
    tail -n 30 "$state/$name.log" >&2 || true
    die "$label did not become ready within ${secs}s (log above)"
  fi
  say "$label ready at $url"
}

start_elasticsearch() {
  if [ -n "${ELASTICSEARCH_URL:-}" ]; then
    es_ready "${ELASTICSEARCH_URL%%,*}" || die "ELASTICSEARCH_URL=$ELASTICSEARCH_URL does not answer as Elasticsearch"
    es_url=$ELASTICSEARCH_URL; say "using Elasticsearch at $es_url"; return
  fi
  es_url="http://127.0.0.1:$es_port"
  if pid_alive "$state/elasticsearch.pid" && es_ready "$es_url"; then
    say "Elasticsearch already running at $es_url"; return
  fi
  port_taken "$es_port" && die "port $es_port is taken by something that is not our Elasticsearch; stop it or set ES_PORT"
  need java "a JDK 17 or newer"; need mvn "Apache Maven"
  "$root/deploy/elasticsearch-local/build.sh"
  mkdir -p "$state/elasticsearch"
  say "starting Elasticsearch on $es_url (heap $es_heap, log $(logfile elasticsearch))"
  local cp; cp="$root/deploy/elasticsearch-local/target/classes:$(cat "$root/deploy/elasticsearch-local/target/classpath.txt")"
  nohup java "-Xms$es_heap" "-Xmx$es_heap" -Djava.awt.headless=true \
    -cp "$cp" pipeline.eslocal.Launcher --port "$es_port" --home "$state/elasticsearch" \
    >"$state/elasticsearch.log" 2>&1 &
  launched elasticsearch Elasticsearch "$es_url" 180 es_ready "$es_url"
}

start_nats() {
  if [ -n "${NATS_URL:-}" ]; then
    nats_url=$NATS_URL; say "using NATS at $nats_url"; return
  fi
  nats_url="nats://127.0.0.1:$nats_port"
  if pid_alive "$state/nats.pid" && nats_ready "$nats_monitor_port"; then
    say "NATS already running at $nats_url"; return
  fi
  port_taken "$nats_port" && die "port $nats_port is taken by something that is not our NATS; stop it or set NATS_PORT"
  mkdir -p "$state/nats" "$root/bin"
  (cd "$root" && go build -o bin/nats-server github.com/nats-io/nats-server/v2)
  say "starting NATS JetStream on $nats_url (log $(logfile nats))"
  nohup "$root/bin/nats-server" -js -a 127.0.0.1 -p "$nats_port" -m "$nats_monitor_port" \
    -sd "$state/nats" >"$state/nats.log" 2>&1 &
  launched nats NATS "$nats_url" 30 nats_ready "$nats_monitor_port"
}

stop_one() {
  local pidfile="$state/$1.pid"
  pid_alive "$pidfile" || { rm -f "$pidfile"; return 0; }
  local pid; pid=$(cat "$pidfile")
  say "stopping $1 (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  kill -0 "$pid" 2>/dev/null && { say "$1 did not stop in 30s, killing it"; kill -KILL "$pid" 2>/dev/null || true; }
  rm -f "$pidfile"
}

up() {
  local want=("$@"); [ ${#want[@]} -gt 0 ] || want=(elasticsearch nats)
  need curl "used to wait for readiness"
  # Keep what the env file already records for services not asked for this time.
  [ -f "$state/env" ] && { es_url=$(sed -n 's/^ELASTICSEARCH_URL=//p' "$state/env"); nats_url=$(sed -n 's/^NATS_URL=//p' "$state/env"); }
  for s in "${want[@]}"; do
    case $s in
      elasticsearch) start_elasticsearch ;;
      nats) start_nats ;;
      *) die "unknown service $s (elasticsearch, nats)" ;;
    esac
  done
  write_env
}

# stop_started stops what this call started and drops it from the env file.
stop_started() {
  quiet_on_broken_pipe
  for s in "${started[@]}"; do
    stop_one "$s"
    case $s in elasticsearch) es_url= ;; nats) nats_url= ;; esac
  done
  [ ${#started[@]} -eq 0 ] || write_env
}

started=()
cmd=${1:-up}; shift || true
case $cmd in
  up) up "$@" ;;
  down) quiet_on_broken_pipe; stop_one elasticsearch; stop_one nats; rm -f "$state/env" ;;
  with)
    want=()
    while [ $# -gt 0 ] && [ "$1" != "--" ]; do want+=("$1"); shift; done
    [ "${1:-}" = "--" ] && shift
    [ $# -gt 0 ] || die "with: no command given after --"
    trap stop_started EXIT
    trap 'exit 130' INT TERM
    up "${want[@]}"
    set -a; . "$state/env"; set +a
    "$@"
    ;;
  *) die "unknown command $cmd (up, down, with)" ;;
esac
