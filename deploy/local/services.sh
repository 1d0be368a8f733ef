#!/usr/bin/env bash
# Starts and stops the local Elasticsearch and NATS JetStream that tests and `make run`
# use. No Docker: Elasticsearch runs from Elastic's jars on Maven Central through the
# launcher in deploy/elasticsearch-local, NATS is built from the Go module in go.mod.
#
#   services.sh up [SERVICE...]               start what is not already running
#                                             (default: elasticsearch nats)
#   services.sh down                          stop what `up` started
#   services.sh with [SERVICE...] -- CMD...   run CMD with the services, stop afterwards
#                                             whatever this call started, even on failure
#
# Services: elasticsearch (plain HTTP, no security), elasticsearch-secured (a second
# node with Elasticsearch's own security: HTTPS with a CA made here by openssl, the
# elastic user's password in .services/elasticsearch-secured/elastic-password), nats.
# Nodes asked for together start in parallel.
#
# A service whose URL is already set (ELASTICSEARCH_URL, ELASTICSEARCH_SECURED_URL,
# NATS_URL) and answers is used as it is. The URLs in use are written to .services/env
# for tests and other targets; for the secured node also ELASTICSEARCH_SECURED_CA_CERT
# and ELASTICSEARCH_SECURED_PASSWORD, so that file is readable by its owner only.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
state=${SERVICES_STATE:-$root/.services}
es_port=${ES_PORT:-9200}
nats_port=${NATS_PORT:-4222}
nats_monitor_port=${NATS_MONITOR_PORT:-8222}
es_heap=${ES_HEAP:-512m}
es_secured_port=${ES_SECURED_PORT:-9201}
es_secured_heap=${ES_SECURED_HEAP:-384m}
# Apart from the plain node's 9300-9399, so both run at once on one machine.
es_secured_transport=${ES_SECURED_TRANSPORT_PORT:-9500-9599}

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

# es_ready URL [CA_CERT PASSWORD]: the cluster health answers 200, from Elasticsearch
# itself. The elastic user's password reaches curl as a config on its standard input
# (-K -), never on a command line that ps would show.
es_ready() {
  local url=$1 ca=${2:-} password=${3:-} headers opts=()
  [ -n "$ca" ] && opts+=(--cacert "$ca")
  [ -n "$password" ] && opts+=(-K -)
  password=${password//\\/\\\\}; password=${password//\"/\\\"}
  headers=$(printf 'user = "elastic:%s"\n' "$password" |
    curl -s -m 5 "${opts[@]}" -D - -o /dev/null "$url/_cluster/health?wait_for_status=yellow&timeout=4s" 2>/dev/null) || return 1
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

# write_env writes the env file readable by its owner only: it may hold the secured
# node's password.
write_env() {
  mkdir -p "$state"
  local tmp="$state/env.tmp"
  (umask 077
   { [ -n "${es_url:-}" ] && echo "ELASTICSEARCH_URL=$es_url"
     [ -n "${es_secured_url:-}" ] && printf '%s\n' "ELASTICSEARCH_SECURED_URL=$es_secured_url" \
       "ELASTICSEARCH_SECURED_CA_CERT=$es_secured_ca" "ELASTICSEARCH_SECURED_PASSWORD=$es_secured_password"
     [ -n "${nats_url:-}" ] && echo "NATS_URL=$nats_url"; } >"$tmp") || true
  mv "$tmp" "$state/env"
}

# launched NAME LABEL URL SECONDS CHECK: called right after starting NAME in the
# background; records its pid and counts it as started (so a failed start is
# stopped too). await_ready then waits until CHECK (a function) passes.
launched() {
  echo $! >"$state/$1.pid"
  started+=("$1")
  waiting+=("$1|$2|$3|$4|$5")
}

# await_ready waits for what this call launched, showing the log of a service that
# never gets ready. The services were all launched first, so their start-ups overlap.
await_ready() {
  local w name label url secs check
  for w in "${waiting[@]}"; do
    IFS='|' read -r name label url secs check <<<"$w"
    if ! wait_until "$secs" "$check"; then
      tail -n 30 "$state/$name.log" >&2 || true
      die "$label did not become ready within ${secs}s (log above)"
    fi
    say "$label ready at $url"
  done
  waiting=()
}

# launcher_classpath builds the Elasticsearch launcher if needed and prints its
# classpath; Maven's output goes to stderr, so that it stays out of the classpath.
launcher_classpath() {
  need java "a JDK 17 or newer"; need mvn "Apache Maven"
  "$root/deploy/elasticsearch-local/build.sh" >&2
  printf '%s' "$root/deploy/elasticsearch-local/target/classes:$(cat "$root/deploy/elasticsearch-local/target/classpath.txt")"
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
  local cp; cp=$(launcher_classpath)
  mkdir -p "$state/elasticsearch"
  say "starting Elasticsearch on $es_url (heap $es_heap, log $(logfile elasticsearch))"
  nohup java "-Xms$es_heap" "-Xmx$es_heap" -Djava.awt.headless=true \
    -cp "$cp" pipeline.eslocal.Launcher --port "$es_port" --home "$state/elasticsearch" \
    >"$state/elasticsearch.log" 2>&1 &
  launched elasticsearch Elasticsearch "$es_url" 180 plain_es_ready
}
plain_es_ready() { es_ready "$es_url"; }

# make_secured_files makes, once, what the secured node needs in HOME: a CA and a
# certificate for 127.0.0.1 and localhost signed by it (config/certs; the node
# sends the CA after it, as Elasticsearch's own set-up does, so that clients can
# trust the CA by its fingerprint), and a random
# password for the elastic user (elastic-password). Both are kept, so a restart
# keeps the users, roles and API keys, and clients keep trusting the CA.
make_secured_files() {
  local home=$1 certs=$1/config/certs
  if [ ! -s "$certs/ca.crt" ] || [ ! -s "$certs/http.crt" ] || [ ! -s "$certs/http.key" ]; then
    mkdir -p "$certs"
    (umask 077; cd "$certs" &&
      openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=pipeline local CA" \
        -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign \
        -keyout ca.key -out ca.crt &&
      openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" -keyout http.key -out http.csr &&
      printf '%s\n' "subjectAltName=IP:127.0.0.1,DNS:localhost" "basicConstraints=CA:FALSE" \
        "keyUsage=critical,digitalSignature,keyEncipherment" "extendedKeyUsage=serverAuth" >http.ext &&
      openssl x509 -req -in http.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 825 -extfile http.ext -out http.crt &&
      cat ca.crt >>http.crt &&
      rm -f http.csr http.ext ca.srl && chmod 644 ca.crt http.crt) >"$state/openssl.log" 2>&1 ||
      { cat "$state/openssl.log" >&2; die "openssl could not make the secured node's certificates (log above)"; }
    rm -f "$state/openssl.log"
  fi
  [ -s "$home/elastic-password" ] || (umask 077; openssl rand -hex 16 >"$home/elastic-password")
}

start_elasticsearch_secured() {
  if [ -n "${ELASTICSEARCH_SECURED_URL:-}" ]; then
    es_secured_ca=${ELASTICSEARCH_SECURED_CA_CERT:-}; es_secured_password=${ELASTICSEARCH_SECURED_PASSWORD:-}
    secured_es_ready "${ELASTICSEARCH_SECURED_URL%%,*}" ||
      die "ELASTICSEARCH_SECURED_URL=$ELASTICSEARCH_SECURED_URL does not answer as Elasticsearch with ELASTICSEARCH_SECURED_CA_CERT and ELASTICSEARCH_SECURED_PASSWORD"
    es_secured_url=$ELASTICSEARCH_SECURED_URL; say "using the secured Elasticsearch at $es_secured_url"; return
  fi
  local home=$state/elasticsearch-secured
  es_secured_url="https://127.0.0.1:$es_secured_port"
  es_secured_ca=$home/config/certs/ca.crt
  es_secured_password=$(cat "$home/elastic-password" 2>/dev/null || true)
  if pid_alive "$state/elasticsearch-secured.pid" && secured_es_ready "$es_secured_url"; then
    say "secured Elasticsearch already running at $es_secured_url"; return
  fi
  port_taken "$es_secured_port" && die "port $es_secured_port is taken by something that is not our secured Elasticsearch; stop it or set ES_SECURED_PORT"
  need openssl "makes the secured node's certificates"
  local cp; cp=$(launcher_classpath)
  mkdir -p "$home"
  make_secured_files "$home"
  es_secured_password=$(cat "$home/elastic-password")
  say "starting the secured Elasticsearch on $es_secured_url (heap $es_secured_heap, log $(logfile elasticsearch-secured))"
  # The password reaches the node in its environment, which ps does not show.
  ELASTIC_PASSWORD=$es_secured_password nohup java "-Xms$es_secured_heap" "-Xmx$es_secured_heap" -Djava.awt.headless=true \
    -cp "$cp" pipeline.eslocal.Launcher --port "$es_secured_port" --transport-port "$es_secured_transport" \
    --home "$home" --cluster-name pipeline-secured \
    -E xpack.security.enabled=true -E xpack.security.http.ssl.enabled=true \
    -E xpack.security.http.ssl.certificate=certs/http.crt -E xpack.security.http.ssl.key=certs/http.key \
    -E xpack.security.http.ssl.certificate_authorities=certs/ca.crt \
    >"$state/elasticsearch-secured.log" 2>&1 &
  launched elasticsearch-secured "Secured Elasticsearch" "$es_secured_url" 240 secured_es_ready
}
secured_es_ready() { es_ready "${1:-$es_secured_url}" "$es_secured_ca" "$es_secured_password"; }

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
  launched nats NATS "$nats_url" 30 nats_up
}
nats_up() { nats_ready "$nats_monitor_port"; }

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
  if [ -f "$state/env" ]; then
    es_url=$(sed -n 's/^ELASTICSEARCH_URL=//p' "$state/env"); nats_url=$(sed -n 's/^NATS_URL=//p' "$state/env")
    es_secured_url=$(sed -n 's/^ELASTICSEARCH_SECURED_URL=//p' "$state/env")
    es_secured_ca=$(sed -n 's/^ELASTICSEARCH_SECURED_CA_CERT=//p' "$state/env")
    es_secured_password=$(sed -n 's/^ELASTICSEARCH_SECURED_PASSWORD=//p' "$state/env")
  fi
  for s in "${want[@]}"; do
    case $s in
      elasticsearch|elasticsearch-secured|nats) ;;
      *) die "unknown service $s (elasticsearch, elasticsearch-secured, nats)" ;;
    esac
  done
  for s in "${want[@]}"; do
    case $s in
      elasticsearch) start_elasticsearch ;;
      elasticsearch-secured) start_elasticsearch_secured ;;
      nats) start_nats ;;
    esac
  done
  await_ready
  write_env
}

# stop_started stops what this call started and drops it from the env file.
stop_started() {
  quiet_on_broken_pipe
  for s in "${started[@]}"; do
    stop_one "$s"
    case $s in elasticsearch) es_url= ;; elasticsearch-secured) es_secured_url= ;; nats) nats_url= ;; esac
  done
  [ ${#started[@]} -eq 0 ] || write_env
}

started=() waiting=()
cmd=${1:-up}; shift || true
case $cmd in
  up) up "$@" ;;
  down) quiet_on_broken_pipe; stop_one elasticsearch; stop_one elasticsearch-secured; stop_one nats; rm -f "$state/env" ;;
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
