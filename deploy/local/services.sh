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
# elastic user's password in .services/elasticsearch-secured/elastic-password), nats,
# and two clusters of three nodes for fault injection: elasticsearch-cluster (es1..es3;
# plain HTTP, or with ES_CLUSTER_SECURITY=on Elasticsearch's security as the secured
# node has it, with TLS between the nodes too) and nats-cluster (n1..n3, JetStream
# with routes).
# Nodes asked for together start in parallel.
#
# The clusters' nodes, one at a time, for a fault injector (N is 1, 2 or 3):
#
#   services.sh node SERVICE N kill|term|stop|cont|start
#                      kill: SIGKILL, returns once it is gone; term: SIGTERM, a clean
#                      stop, returns once it is gone; stop: SIGSTOP (paused, its sockets
#                      left open, as a hung node); cont: SIGCONT; start: starts a node
#                      that is gone, returns once it has joined its cluster again
#   services.sh nodes SERVICE           one line per node: name, pid, state (running,
#                                       paused, gone), URL, and which leads the cluster
#   services.sh leader SERVICE          the number of the node that leads: the elected
#                                       master (elasticsearch-cluster), the JetStream
#                                       meta leader (nats-cluster)
#
# A service whose URL is already set (ELASTICSEARCH_URL, ELASTICSEARCH_SECURED_URL,
# NATS_URL, ELASTICSEARCH_CLUSTER_URLS, NATS_CLUSTER_URLS) and answers is used as it is.
# The URLs in use are written to .services/env for tests and other targets (a
# cluster's as a comma-separated list of all its nodes, as ELASTICSEARCH_URL and
# NATS_URL take it); for the secured node also ELASTICSEARCH_SECURED_CA_CERT and
# ELASTICSEARCH_SECURED_PASSWORD (for the secured cluster ELASTICSEARCH_CLUSTER_CA_CERT
# and ELASTICSEARCH_CLUSTER_PASSWORD), so that file is readable by its owner only.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
state=${SERVICES_STATE:-$root/.services}
es_port=${ES_PORT:-9200}
nats_port=${NATS_PORT:-4222}
nats_monitor_port=${NATS_MONITOR_PORT:-8222}
es_heap=${ES_HEAP:-512m}
es_transport_port=${ES_TRANSPORT_PORT:-9300-9399}
es_secured_port=${ES_SECURED_PORT:-9201}
es_secured_heap=${ES_SECURED_HEAP:-384m}
# Apart from the plain node's 9300-9399, so both run at once on one machine.
es_secured_transport=${ES_SECURED_TRANSPORT_PORT:-9500-9599}
# The clusters: one port per node in each list, so that their length is the number
# of nodes. Apart from the single nodes' ports, so that all run at once.
es_cluster_ports=${ES_CLUSTER_PORTS:-9210,9211,9212}
es_cluster_transport_ports=${ES_CLUSTER_TRANSPORT_PORTS:-9610,9611,9612}
es_cluster_heap=${ES_CLUSTER_HEAP:-256m}
# on: the cluster runs with Elasticsearch's security, as the secured node does (HTTPS,
# the elastic user's password), and TLS between its nodes.
es_cluster_security=${ES_CLUSTER_SECURITY:-off}
nats_cluster_ports=${NATS_CLUSTER_PORTS:-4240,4241,4242}
nats_cluster_route_ports=${NATS_CLUSTER_ROUTE_PORTS:-6240,6241,6242}
nats_cluster_monitor_ports=${NATS_CLUSTER_MONITOR_PORTS:-8240,8241,8242}

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

# pid_paused PIDFILE: the process is stopped by a signal (SIGSTOP), state T.
pid_paused() { pid_alive "$1" && [ "$(awk '{print $3}' "/proc/$(cat "$1")/stat" 2>/dev/null)" = T ]; }

# es_ready URL [CA_CERT PASSWORD [WAIT]]: the cluster health answers 200, from
# Elasticsearch itself, once the health's wait_for_* conditions WAIT (default: yellow)
# hold; a wait that times out answers 408. The elastic user's password reaches curl as
# a config on its standard input (-K -), never on a command line that ps would show.
es_ready() {
  local url=$1 ca=${2:-} password=${3:-} wait=${4:-wait_for_status=yellow} headers
  headers=$(es_curl "$url/_cluster/health?$wait&timeout=4s" "$ca" "$password" -D - -o /dev/null) || return 1
  grep -qi '^x-elastic-product: *Elasticsearch' <<<"$headers" && grep -q ' 200' <<<"$headers"
}

# es_curl URL CA_CERT PASSWORD [CURL_ARGS...]: one request to Elasticsearch, with
# the CA and the elastic user's password when they are set (the password on
# curl's standard input).
es_curl() {
  local url=$1 ca=$2 password=$3 opts=(); shift 3
  [ -n "$ca" ] && opts+=(--cacert "$ca")
  [ -n "$password" ] && opts+=(-K -)
  password=${password//\\/\\\\}; password=${password//\"/\\\"}
  printf 'user = "elastic:%s"\n' "$password" | curl -s -m 5 "${opts[@]}" "$@" "$url" 2>/dev/null
}

nats_ready() { curl -sf -m 3 "http://127.0.0.1:$1/healthz?js-enabled-only=true" >/dev/null 2>&1; }
# A node of a JetStream cluster is ready once it knows the meta leader and is current
# with it: before that, creating a stream fails.
nats_cluster_node_ready() { curl -sf -m 3 "http://127.0.0.1:$1/healthz" >/dev/null 2>&1; }

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
     [ -n "${nats_url:-}" ] && echo "NATS_URL=$nats_url"
     [ -n "${es_cluster_urls:-}" ] && echo "ELASTICSEARCH_CLUSTER_URLS=$es_cluster_urls"
     [ -n "${es_cluster_urls:-}" ] && [ -n "${es_cluster_ca:-}" ] && printf '%s\n' \
       "ELASTICSEARCH_CLUSTER_CA_CERT=$es_cluster_ca" "ELASTICSEARCH_CLUSTER_PASSWORD=$es_cluster_password"
     [ -n "${nats_cluster_urls:-}" ] && echo "NATS_CLUSTER_URLS=$nats_cluster_urls"; } >"$tmp") || true
  mv "$tmp" "$state/env"
}

# launched NAME LABEL URL SECONDS CHECK: called right after starting NAME in the
# background; records its pid and counts it as started (so a failed start is
# stopped too). await_ready then waits until CHECK (a function) passes.
launched() {
  spawned "$1"
  waiting+=("$1|$2|$3|$4|$5")
}

# spawned NAME records the pid of NAME, just started in the background, and counts
# it as started; a cluster waits for all its nodes at once, with one check.
spawned() {
  echo $! >"$state/$1.pid"
  started+=("$1")
}

# await_ready waits for what this call launched, showing the log of a service that
# never gets ready. The services were all launched first, so their start-ups overlap.
await_ready() {
  local w name label url secs check
  for w in "${waiting[@]}"; do
    IFS='|' read -r name label url secs check <<<"$w"
    if ! wait_until "$secs" "$check"; then
      # A cluster's log is its nodes' logs.
      if [ -f "$state/$name.log" ]; then tail -n 30 "$state/$name.log" >&2 || true
      else tail -n 20 "$state/$name"/*.log >&2 || true; fi
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
    -cp "$cp" pipeline.eslocal.Launcher --port "$es_port" --transport-port "$es_transport_port" --home "$state/elasticsearch" \
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

build_nats_server() {
  mkdir -p "$root/bin"
  (cd "$root" && go build -o bin/nats-server github.com/nats-io/nats-server/v2)
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
  mkdir -p "$state/nats"
  build_nats_server
  say "starting NATS JetStream on $nats_url (log $(logfile nats))"
  nohup "$root/bin/nats-server" -js -a 127.0.0.1 -p "$nats_port" -m "$nats_monitor_port" \
    -sd "$state/nats" >"$state/nats.log" 2>&1 &
  launched nats NATS "$nats_url" 30 nats_up
}
nats_up() { nats_ready "$nats_monitor_port"; }

# The clusters. Node I (1-based) of a cluster is the process named
# <service>/<node> (elasticsearch-cluster/es2, nats-cluster/n2): its pid file, log
# and home (data, or JetStream's store) are $state/<service>/<node>.pid, .log and /.
# The ports a cluster was started with are kept in $state/<service>/ports, so that
# the node commands restart a node where its peers look for it, whatever the
# environment says then.

# cluster_settings SERVICE: the ports (and heap) `up` starts SERVICE with: those it
# was started with while a node of it still runs, else those of the environment,
# which are then recorded.
cluster_settings() {
  local svc=$1 f=$state/$1/ports pidfile alive=
  for pidfile in "$state/$svc"/*.pid; do pid_alive "$pidfile" && alive=1; done
  if [ -n "$alive" ] && [ -f "$f" ]; then
    # shellcheck source=/dev/null
    . "$f"
  else
    mkdir -p "$state/$svc"
    case $svc in
      elasticsearch-cluster) printf '%s\n' "es_cluster_ports=$es_cluster_ports" \
        "es_cluster_transport_ports=$es_cluster_transport_ports" "es_cluster_heap=$es_cluster_heap" \
        "es_cluster_security=$es_cluster_security" >"$f" ;;
      nats-cluster) printf '%s\n' "nats_cluster_ports=$nats_cluster_ports" \
        "nats_cluster_route_ports=$nats_cluster_route_ports" "nats_cluster_monitor_ports=$nats_cluster_monitor_ports" >"$f" ;;
    esac
  fi
  parse_cluster_settings "$svc"
}

# recorded_settings SERVICE: the ports SERVICE was last started with, for the node
# commands, which act on the nodes where they run, whatever the environment says.
recorded_settings() {
  [ -f "$state/$1/ports" ] || die "the $1 was never started here (services.sh up $1)"
  # shellcheck source=/dev/null
  . "$state/$1/ports"
  parse_cluster_settings "$1"
}

parse_cluster_settings() {
  case $1 in
    elasticsearch-cluster)
      IFS=, read -ra es_node_http <<<"$es_cluster_ports"; IFS=, read -ra es_node_transport <<<"$es_cluster_transport_ports"
      [ ${#es_node_http[@]} -eq ${#es_node_transport[@]} ] ||
        die "ES_CLUSTER_PORTS ($es_cluster_ports) and ES_CLUSTER_TRANSPORT_PORTS ($es_cluster_transport_ports) must list one port per node each"
      cluster_size=${#es_node_http[@]}
      es_cluster_scheme=http es_cluster_ca= es_cluster_password=
      if [ "$es_cluster_security" = on ]; then
        es_cluster_scheme=https es_cluster_ca=$state/elasticsearch-cluster/config/certs/ca.crt
        es_cluster_password=$(cat "$state/elasticsearch-cluster/elastic-password" 2>/dev/null || true)
      fi ;;
    nats-cluster)
      IFS=, read -ra nats_node_client <<<"$nats_cluster_ports"; IFS=, read -ra nats_node_route <<<"$nats_cluster_route_ports"
      IFS=, read -ra nats_node_monitor <<<"$nats_cluster_monitor_ports"
      [ ${#nats_node_client[@]} -eq ${#nats_node_route[@]} ] && [ ${#nats_node_client[@]} -eq ${#nats_node_monitor[@]} ] ||
        die "NATS_CLUSTER_PORTS, NATS_CLUSTER_ROUTE_PORTS and NATS_CLUSTER_MONITOR_PORTS must list one port per node each"
      cluster_size=${#nats_node_client[@]} ;;
  esac
}

# node_name SERVICE I: es1..esN, n1..nN.
node_name() { case $1 in elasticsearch-cluster) echo "es$2" ;; nats-cluster) echo "n$2" ;; esac; }

# cluster_urls SERVICE: every node's URL, comma-separated, as ELASTICSEARCH_URL and
# NATS_URL take a cluster.
cluster_urls() {
  local urls= p
  case $1 in
    elasticsearch-cluster) for p in "${es_node_http[@]}"; do urls+=${urls:+,}$es_cluster_scheme://127.0.0.1:$p; done ;;
    nats-cluster) for p in "${nats_node_client[@]}"; do urls+=${urls:+,}nats://127.0.0.1:$p; done ;;
  esac
  printf '%s' "$urls"
}

# launch_es_node I starts node I of the Elasticsearch cluster in the background.
# Every node names every other as a seed and all of them as the first masters:
# cluster.initial_master_nodes counts only until the cluster has formed (later
# starts log a warning and ignore it), and keeping it lets an `up` that failed
# before the cluster formed bootstrap it the next time.
launch_es_node() {
  local i=$1 name; name=$(node_name elasticsearch-cluster "$1")
  local seeds= masters= j
  for j in $(seq 1 "$cluster_size"); do
    seeds+=${seeds:+,}127.0.0.1:${es_node_transport[j-1]}
    masters+=${masters:+,}es$j
  done
  port_taken "${es_node_http[i-1]}" && die "port ${es_node_http[i-1]} is taken by something that is not $name; stop it or set ES_CLUSTER_PORTS"
  port_taken "${es_node_transport[i-1]}" && die "port ${es_node_transport[i-1]} is taken by something that is not $name; stop it or set ES_CLUSTER_TRANSPORT_PORTS"
  local home=$state/elasticsearch-cluster/$name security=()
  mkdir -p "$home"
  if [ "$es_cluster_security" = on ]; then
    # Each node reads its certificates from its own config directory.
    mkdir -p "$home/config/certs"
    cp -p "$state/elasticsearch-cluster/config/certs/"{ca.crt,http.crt,http.key,transport.crt,transport.key} "$home/config/certs/"
    security=(-E xpack.security.enabled=true
      -E xpack.security.http.ssl.enabled=true -E xpack.security.http.ssl.certificate=certs/http.crt
      -E xpack.security.http.ssl.key=certs/http.key -E xpack.security.http.ssl.certificate_authorities=certs/ca.crt
      -E xpack.security.transport.ssl.enabled=true -E xpack.security.transport.ssl.verification_mode=certificate
      -E xpack.security.transport.ssl.certificate=certs/transport.crt -E xpack.security.transport.ssl.key=certs/transport.key
      -E xpack.security.transport.ssl.certificate_authorities=certs/ca.crt)
  fi
  say "starting Elasticsearch node $name on $es_cluster_scheme://127.0.0.1:${es_node_http[i-1]} (heap $es_cluster_heap, log $(logfile "elasticsearch-cluster/$name"))"
  # The password reaches the node in its environment, which ps does not show;
  # without security it is empty, and unused.
  ELASTIC_PASSWORD=$es_cluster_password nohup java "-Xms$es_cluster_heap" "-Xmx$es_cluster_heap" -Djava.awt.headless=true \
    -cp "$es_classpath" pipeline.eslocal.Launcher --port "${es_node_http[i-1]}" --transport-port "${es_node_transport[i-1]}" \
    --home "$state/elasticsearch-cluster/$name" --cluster-name pipeline-cluster \
    -E "node.name=$name" -E discovery.type=multi-node -E "discovery.seed_hosts=$seeds" \
    -E "cluster.initial_master_nodes=$masters" "${security[@]}" \
    >"$state/elasticsearch-cluster/$name.log" 2>&1 &
  spawned "elasticsearch-cluster/$name"
}

# launch_nats_node I starts node I of the NATS cluster in the background, with
# routes to every other node and its own JetStream store.
launch_nats_node() {
  local i=$1 name; name=$(node_name nats-cluster "$1")
  local routes= j
  for j in $(seq 1 "$cluster_size"); do
    [ "$j" -eq "$i" ] || routes+=${routes:+,}nats://127.0.0.1:${nats_node_route[j-1]}
  done
  local p
  for p in "${nats_node_client[i-1]}" "${nats_node_route[i-1]}" "${nats_node_monitor[i-1]}"; do
    port_taken "$p" && die "port $p is taken by something that is not $name; stop it or set NATS_CLUSTER_PORTS, NATS_CLUSTER_ROUTE_PORTS and NATS_CLUSTER_MONITOR_PORTS"
  done
  mkdir -p "$state/nats-cluster/$name"
  say "starting NATS node $name on nats://127.0.0.1:${nats_node_client[i-1]} (log $(logfile "nats-cluster/$name"))"
  nohup "$root/bin/nats-server" -js -a 127.0.0.1 -p "${nats_node_client[i-1]}" -m "${nats_node_monitor[i-1]}" \
    -n "$name" --cluster_name pipeline-cluster --cluster "nats://127.0.0.1:${nats_node_route[i-1]}" --routes "$routes" \
    -sd "$state/nats-cluster/$name" >"$state/nats-cluster/$name.log" 2>&1 &
  spawned "nats-cluster/$name"
}

# es_cluster_ready: every node has joined and every shard has all its copies,
# asked of any node that answers.
es_cluster_ready() {
  local i
  for i in $(seq 1 "$cluster_size"); do
    es_node_ready "$i" "wait_for_nodes=$cluster_size&wait_for_status=green" && return 0
  done
  return 1
}

# es_node_ready I WAIT: node I answers the cluster health once WAIT holds.
es_node_ready() { es_ready "$es_cluster_scheme://127.0.0.1:${es_node_http[$1-1]}" "$es_cluster_ca" "$es_cluster_password" "$2"; }

# make_cluster_certs makes, once, the secured cluster's CA, HTTP certificate and
# elastic password as the secured node's, and a certificate its nodes present to
# each other, for servers and clients both (transport TLS verifies either end).
make_cluster_certs() {
  local home=$state/elasticsearch-cluster certs=$state/elasticsearch-cluster/config/certs
  make_secured_files "$home"
  [ -s "$certs/transport.crt" ] && [ -s "$certs/transport.key" ] && return
  (umask 077; cd "$certs" &&
    openssl req -newkey rsa:2048 -nodes -subj "/CN=pipeline-cluster node" -keyout transport.key -out transport.csr &&
    printf '%s\n' "subjectAltName=IP:127.0.0.1,DNS:localhost" "basicConstraints=CA:FALSE" \
      "keyUsage=critical,digitalSignature,keyEncipherment" "extendedKeyUsage=serverAuth,clientAuth" >transport.ext &&
    openssl x509 -req -in transport.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 825 -extfile transport.ext -out transport.crt &&
    rm -f transport.csr transport.ext ca.srl && chmod 644 transport.crt) >"$state/openssl.log" 2>&1 ||
    { cat "$state/openssl.log" >&2; die "openssl could not make the cluster's transport certificate (log above)"; }
  rm -f "$state/openssl.log"
}

# nats_cluster_ready: every node is current with the JetStream meta leader.
nats_cluster_ready() {
  local p
  for p in "${nats_node_monitor[@]}"; do nats_cluster_node_ready "$p" || return 1; done
}

start_cluster() {
  local svc=$1 i name missing=() label url_var
  case $svc in
    elasticsearch-cluster) label="Elasticsearch cluster"; url_var=ELASTICSEARCH_CLUSTER_URLS ;;
    nats-cluster) label="NATS cluster"; url_var=NATS_CLUSTER_URLS ;;
  esac
  if [ -n "${!url_var:-}" ]; then
    case $svc in
      elasticsearch-cluster)
        es_cluster_ca=${ELASTICSEARCH_CLUSTER_CA_CERT:-} es_cluster_password=${ELASTICSEARCH_CLUSTER_PASSWORD:-}
        es_ready "${ELASTICSEARCH_CLUSTER_URLS%%,*}" "$es_cluster_ca" "$es_cluster_password" ||
          die "ELASTICSEARCH_CLUSTER_URLS=$ELASTICSEARCH_CLUSTER_URLS does not answer as Elasticsearch (with ELASTICSEARCH_CLUSTER_CA_CERT and ELASTICSEARCH_CLUSTER_PASSWORD, if set)"
        es_cluster_urls=$ELASTICSEARCH_CLUSTER_URLS ;;
      nats-cluster) nats_cluster_urls=$NATS_CLUSTER_URLS ;;
    esac
    say "using the $label at ${!url_var}"; return
  fi
  cluster_settings "$svc"
  case $svc in
    elasticsearch-cluster) es_cluster_urls=$(cluster_urls "$svc") ;;
    nats-cluster) nats_cluster_urls=$(cluster_urls "$svc") ;;
  esac
  for i in $(seq 1 "$cluster_size"); do
    name=$(node_name "$svc" "$i")
    pid_alive "$state/$svc/$name.pid" || missing+=("$i")
  done
  if [ ${#missing[@]} -eq 0 ]; then
    say "$label already running at $(cluster_urls "$svc")"; return
  fi
  case $svc in
    elasticsearch-cluster)
      es_classpath=$(launcher_classpath)
      if [ "$es_cluster_security" = on ]; then
        need openssl "makes the secured cluster's certificates"
        make_cluster_certs
        parse_cluster_settings "$svc"
      fi
      for i in "${missing[@]}"; do launch_es_node "$i"; done
      waiting+=("$svc|$label|$es_cluster_urls|240|es_cluster_ready") ;;
    nats-cluster)
      build_nats_server
      for i in "${missing[@]}"; do launch_nats_node "$i"; done
      waiting+=("$svc|$label|$nats_cluster_urls|60|nats_cluster_ready") ;;
  esac
}

# node SERVICE N ACTION: one node of a cluster, for fault injection (see the top).
node() {
  local svc=${1:-} i=${2:-} action=${3:-}
  case $svc in elasticsearch-cluster|nats-cluster) ;; *) die "node: no cluster named '$svc' (elasticsearch-cluster, nats-cluster)" ;; esac
  recorded_settings "$svc"
  [[ $i =~ ^[0-9]+$ ]] && [ "$i" -ge 1 ] && [ "$i" -le "$cluster_size" ] || die "node: no node '$i' in the $svc (1 to $cluster_size)"
  local name; name=$(node_name "$svc" "$i")
  local pidfile=$state/$svc/$name.pid pid
  pid=$(cat "$pidfile" 2>/dev/null || true)
  case $action in
    kill|stop|cont)
      pid_alive "$pidfile" || die "node: $name is not running"
      local sig; sig=$(tr a-z A-Z <<<"$action")
      kill "-$sig" "$pid"
      if [ "$action" = kill ]; then
        for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      fi
      say "$name (pid $pid): SIG$sig" ;;
    term)
      pid_alive "$pidfile" || die "node: $name is not running"
      stop_all "$svc/$name" ;;
    start)
      if pid_alive "$pidfile"; then say "$name is already running (pid $pid)"; return; fi
      case $svc in
        elasticsearch-cluster)
          es_classpath=$(launcher_classpath)
          launch_es_node "$i"
          # Back once it answers as a node of the whole cluster again.
          wait_until 240 es_node_ready "$i" "wait_for_nodes=$cluster_size" ||
            { tail -n 30 "$state/$svc/$name.log" >&2; die "$name did not rejoin its cluster within 240s (log above); it still runs, as pid $(cat "$pidfile")"; } ;;
        nats-cluster)
          build_nats_server
          launch_nats_node "$i"
          wait_until 60 nats_cluster_node_ready "${nats_node_monitor[i-1]}" ||
            { tail -n 30 "$state/$svc/$name.log" >&2; die "$name did not rejoin its cluster within 60s (log above); it still runs, as pid $(cat "$pidfile")"; } ;;
      esac
      say "$name is back" ;;
    *) die "node: unknown action '$action' (kill, term, stop, cont, start)" ;;
  esac
}

# node_state PIDFILE: running, paused or gone.
node_state() {
  if pid_paused "$1"; then echo paused; elif pid_alive "$1"; then echo running; else echo gone; fi
}

# leader SERVICE prints the number of the node that leads the cluster, asked of
# the first running node that answers.
leader() {
  local svc=${1:-} i name answer=
  case $svc in elasticsearch-cluster|nats-cluster) ;; *) die "leader: no cluster named '$svc' (elasticsearch-cluster, nats-cluster)" ;; esac
  recorded_settings "$svc"
  for i in $(seq 1 "$cluster_size"); do
    name=$(node_name "$svc" "$i")
    [ "$(node_state "$state/$svc/$name.pid")" = running ] || continue
    case $svc in
      elasticsearch-cluster) answer=$(es_curl "$es_cluster_scheme://127.0.0.1:${es_node_http[i-1]}/_cat/master?h=node" \
        "$es_cluster_ca" "$es_cluster_password" -f | tr -d '[:space:]') || answer= ;;
      nats-cluster) answer=$(curl -sf -m 5 "http://127.0.0.1:${nats_node_monitor[i-1]}/jsz" 2>/dev/null |
        sed -n 's/.*"leader": *"\([^"]*\)".*/\1/p' | head -n 1) || answer= ;;
    esac
    case $answer in es[0-9]*|n[0-9]*) echo "${answer#"${answer%%[0-9]*}"}"; return ;; esac
  done
  die "leader: no running node of the $svc names a leader (none elected yet, or none answers)"
}

# nodes SERVICE: one line per node.
nodes() {
  local svc=${1:-} i name pidfile st url lead=
  case $svc in elasticsearch-cluster|nats-cluster) ;; *) die "nodes: no cluster named '$svc' (elasticsearch-cluster, nats-cluster)" ;; esac
  recorded_settings "$svc"
  lead=$( (leader "$svc") 2>/dev/null) || lead=
  printf '%-5s %-8s %-8s %-24s %s\n' node pid state url role
  for i in $(seq 1 "$cluster_size"); do
    name=$(node_name "$svc" "$i"); pidfile=$state/$svc/$name.pid
    case $svc in elasticsearch-cluster) url=$es_cluster_scheme://127.0.0.1:${es_node_http[i-1]} ;; nats-cluster) url=nats://127.0.0.1:${nats_node_client[i-1]} ;; esac
    printf '%-5s %-8s %-8s %-24s %s\n' "$name" "$(cat "$pidfile" 2>/dev/null || echo -)" "$(node_state "$pidfile")" "$url" \
      "$([ "$lead" = "$i" ] && { [ "$svc" = nats-cluster ] && echo "meta leader" || echo master; })"
  done
}

# stop_all NAME...: SIGTERM to each at once (and SIGCONT, so that a paused node
# gets it), then waits; what has not stopped after 30s is killed.
stop_all() {
  local name pidfile pid names=() pids=()
  for name in "$@"; do
    pidfile="$state/$name.pid"
    pid_alive "$pidfile" || { rm -f "$pidfile"; continue; }
    pid=$(cat "$pidfile")
    say "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    kill -CONT "$pid" 2>/dev/null || true
    names+=("$name"); pids+=("$pid")
  done
  local i deadline=$((SECONDS + 30))
  for i in "${!pids[@]}"; do
    while kill -0 "${pids[i]}" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.5; done
    kill -0 "${pids[i]}" 2>/dev/null && { say "${names[i]} did not stop in 30s, killing it"; kill -KILL "${pids[i]}" 2>/dev/null || true; }
    rm -f "$state/${names[i]}.pid"
  done
  return 0
}

# cluster_nodes SERVICE: the names of the cluster's nodes that have a pid file.
cluster_nodes() {
  local f
  for f in "$state/$1"/*.pid; do [ -e "$f" ] && { f=${f#"$state"/}; echo "${f%.pid}"; }; done
  return 0
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
    es_cluster_urls=$(sed -n 's/^ELASTICSEARCH_CLUSTER_URLS=//p' "$state/env")
    es_cluster_ca=$(sed -n 's/^ELASTICSEARCH_CLUSTER_CA_CERT=//p' "$state/env")
    es_cluster_password=$(sed -n 's/^ELASTICSEARCH_CLUSTER_PASSWORD=//p' "$state/env")
    nats_cluster_urls=$(sed -n 's/^NATS_CLUSTER_URLS=//p' "$state/env")
  fi
  for s in "${want[@]}"; do
    case $s in
      elasticsearch|elasticsearch-secured|nats|elasticsearch-cluster|nats-cluster) ;;
      *) die "unknown service $s (elasticsearch, elasticsearch-secured, nats, elasticsearch-cluster, nats-cluster)" ;;
    esac
  done
  for s in "${want[@]}"; do
    case $s in
      elasticsearch) start_elasticsearch ;;
      elasticsearch-secured) start_elasticsearch_secured ;;
      nats) start_nats ;;
      elasticsearch-cluster|nats-cluster) start_cluster "$s" ;;
    esac
  done
  await_ready
  write_env
}

# stop_started stops what this call started and drops it from the env file.
stop_started() {
  quiet_on_broken_pipe
  [ ${#started[@]} -eq 0 ] && return
  stop_all "${started[@]}"
  for s in "${started[@]}"; do
    case $s in
      elasticsearch) es_url= ;; elasticsearch-secured) es_secured_url= ;; nats) nats_url= ;;
      elasticsearch-cluster/*) es_cluster_urls= es_cluster_ca= ;; nats-cluster/*) nats_cluster_urls= ;;
    esac
  done
  write_env
}

started=() waiting=()
cmd=${1:-up}; shift || true
case $cmd in
  up) up "$@" ;;
  down)
    quiet_on_broken_pipe
    # shellcheck disable=SC2046 # one name per line, none with spaces
    stop_all elasticsearch elasticsearch-secured nats $(cluster_nodes elasticsearch-cluster) $(cluster_nodes nats-cluster)
    rm -f "$state/env" ;;
  node|nodes|leader) "$cmd" "$@" ;;
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
  *) die "unknown command $cmd (up, down, with, node, nodes, leader)" ;;
esac
