#!/bin/bash
# The official Elasticsearch image's entrypoint contract, for the stand-in: with no
# arguments, "eswrapper" or flags, start Elasticsearch; with anything else, run it.
# Environment variables named like settings (lower case, with a dot, such as
# discovery.type or xpack.security.enabled) become settings (-E); ES_JAVA_OPTS goes
# to the JVM. The elastic user's first password comes from ELASTIC_PASSWORD, or from
# the file ELASTIC_PASSWORD_FILE names (a compose secret); the launcher reads it from
# its environment, so it is never on a command line nor in a log.
set -euo pipefail

if [ $# -gt 0 ] && [ "$1" != eswrapper ] && [ "${1#-}" = "$1" ]; then
  exec "$@"
fi
[ "${1:-}" = eswrapper ] && shift

say() { echo "elasticsearch stand-in: $*" >&2; }

if [ -n "${ELASTIC_PASSWORD_FILE:-}" ]; then
  # As the official image: one or the other.
  [ -z "${ELASTIC_PASSWORD:-}" ] || { say "both ELASTIC_PASSWORD and ELASTIC_PASSWORD_FILE are set; set one"; exit 78; }
  [ -r "$ELASTIC_PASSWORD_FILE" ] || { say "ELASTIC_PASSWORD_FILE=$ELASTIC_PASSWORD_FILE cannot be read by uid $(id -u)"; exit 78; }
  ELASTIC_PASSWORD=$(<"$ELASTIC_PASSWORD_FILE")
  [ -n "$ELASTIC_PASSWORD" ] || { say "ELASTIC_PASSWORD_FILE=$ELASTIC_PASSWORD_FILE is empty"; exit 78; }
  export ELASTIC_PASSWORD
  unset ELASTIC_PASSWORD_FILE
fi

settings=()
while IFS= read -r -d '' entry; do
  name=${entry%%=*} value=${entry#*=}
  [[ $name =~ ^[a-z0-9_]+\.[a-z0-9_]+ || $name == processors ]] || continue
  settings+=(-E "$name=$value")
done < <(env -0)

# The official image sizes the heap from the container's memory; this stand-in
# takes a modest fixed default.
java_opts=${ES_JAVA_OPTS:-"-Xms512m -Xmx512m"}
# shellcheck disable=SC2086 # ES_JAVA_OPTS is a list of options, split on spaces
exec java $java_opts -Djava.awt.headless=true -Djava.io.tmpdir="${TMPDIR:-/tmp}" \
  -cp "$(cat "$ES_HOME/lib/classpath")" pipeline.eslocal.Launcher \
  --home "$ES_HOME" --host 0.0.0.0 --port 9200 --cluster-name docker-cluster \
  "${settings[@]}" "$@"
