#!/usr/bin/env bash
# Builds the launcher and records its classpath, unless both are newer than the
# sources. Maven keeps Elastic's jars in ~/.m2, so only the first build downloads.
set -euo pipefail
dir=$(cd "$(dirname "$0")" && pwd)
stamp="$dir/target/classpath.txt"
if [ -f "$stamp" ] && [ -z "$(find "$dir/pom.xml" "$dir/src" -newer "$stamp" -print -quit)" ]; then
  exit 0
fi
echo "services: building the Elasticsearch launcher (the first build downloads Elasticsearch's jars from Maven Central)" >&2
# Debian's Maven writes colour resets even when quiet and not on a terminal.
mvn -q -B --no-transfer-progress -f "$dir/pom.xml" package 2>&1 | sed 's/\x1b\[[0-9;]*m//g'

# Maven leaves classpath.txt alone when the classpath did not change, so mark the
# build as done here; otherwise every later call would build again (and, with two
# nodes starting at once, rewrite classes a running JVM is loading).
touch "$stamp"
