#!/bin/bash
# The official Elasticsearch image's entrypoint contract, for the stand-in: with no
# arguments, "eswrapper" or flags, start Elasticsearch; with anything else, run it.
# Environment variables named like settings (lower case, with a dot, such as
# discovery.type) become settings; ES_JAVA_OPTS goes to the JVM. A setting this
# stand-in cannot honour stops it at once, with the reason.
set -euo pipefail

if [ $# -gt 0 ] && [ "$1" != eswrapper ] && [ "${1#-}" = "$1" ]; then
  exec "$@"
fi
[ "${1:-}" = eswrapper ] && shift

say() { echo "elasticsearch stand-in: $*" >&2; }
refuse() {
  say "$*"
  say "this is a local stand-in (deploy/images) with only the server jars Elastic publishes on Maven Central, not x-pack; run the real image for this"
  exit 78
}

settings=()
while IFS= read -r -d '' entry; do
  name=${entry%%=*} value=${entry#*=}
  [[ $name =~ ^[a-z0-9_]+\.[a-z0-9_]+ || $name == processors ]] || continue
  case $name in
    xpack.security.enabled)
      # Without x-pack there is no security: "false" is what this node is.
      [ "$value" = false ] || refuse "xpack.security.enabled=$value: x-pack security (TLS, users, passwords) is not available"
      ;;
    *) settings+=(-E "$name=$value") ;;
  esac
done < <(env -0)

for secret in ELASTIC_PASSWORD ELASTIC_PASSWORD_FILE; do
  [ -z "${!secret:-}" ] || refuse "$secret is set: the elastic user exists only with x-pack security"
done

# The official image sizes the heap from the container's memory; this stand-in
# takes a modest fixed default.
java_opts=${ES_JAVA_OPTS:-"-Xms512m -Xmx512m"}
# shellcheck disable=SC2086 # ES_JAVA_OPTS is a list of options, split on spaces
exec java $java_opts -Djava.awt.headless=true -Djava.io.tmpdir="${TMPDIR:-/tmp}" \
  -cp "$(cat "$ES_HOME/lib/classpath")" pipeline.eslocal.Launcher \
  --home "$ES_HOME" --host 0.0.0.0 --port 9200 --cluster-name docker-cluster \
  "${settings[@]}" "$@"
