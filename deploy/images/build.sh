#!/usr/bin/env bash
# Builds local stand-ins for the upstream images that docker-compose.yml and the
# Dockerfiles name, under exactly those tags, for a machine that cannot pull images.
# Only the tags that are missing or out of date are built: where the real images can
# be pulled (or were pulled), they are used as they are.
#
#   deploy/images/build.sh            build the missing and out-of-date stand-ins
#   deploy/images/build.sh --force    rebuild them all
#
# A stand-in is out of date when the files it is built from changed: each carries a
# hash of them (the label pipeline.standin.inputs), compared with the files here
# before anything is built. Changing this script itself is not seen: use --force.
#
# Each stand-in is labelled as such (org.opencontainers.image.description), and
# what it holds is built here from the sources the project already trusts: a Debian
# bookworm root file system (debootstrap, from the machine's Debian mirror), the Go
# toolchain and nats-server from the Go module proxy, Elasticsearch's jars from
# Maven Central (the launcher in deploy/elasticsearch-local), the host's CA bundle.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
images="$root/deploy/images"
cd "$root"

GOLANG=golang:1.26-bookworm
DISTROLESS=gcr.io/distroless/static-debian12:nonroot
NATS=nats:2.15.2-alpine
ELASTICSEARCH=docker.elastic.co/elasticsearch/elasticsearch:8.19.21
# The Debian root file system both Debian-based stand-ins start from; a local tag
# that names no upstream image.
DEBIAN=pipeline-standin/debian:bookworm
STANDIN="Local stand-in built by deploy/images/build.sh, not the upstream image"
INPUTS_LABEL=pipeline.standin.inputs

say() { printf 'images: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

force=false
[ "${1:-}" = "--force" ] && force=true

docker info >/dev/null 2>&1 || die "no Docker engine answers (docker info failed); start dockerd, or see .ci/run"

have() { ! $force && docker image inspect "$1" >/dev/null 2>&1; }

# inputs PATH... [-- WORD...]: a hash of the files under each PATH (relative to the
# repository, names and contents) and of the WORDs, such as a version.
inputs() {
  local paths=() words=()
  while [ $# -gt 0 ] && [ "$1" != -- ]; do paths+=("$1"); shift; done
  [ $# -gt 0 ] && shift && words=("$@")
  { find "${paths[@]}" -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum; printf '%s\n' "${words[@]}"; } \
    | sha256sum | cut -c1-16
}

# current TAG HASH: TAG is there and needs no build: an upstream image (kept as it
# is), or a stand-in built from inputs with this hash.
current() {
  local tag=$1 want=$2 labels
  $force && return 1
  labels=$(docker image inspect -f "{{index .Config.Labels \"org.opencontainers.image.description\"}}|{{index .Config.Labels \"$INPUTS_LABEL\"}}" "$tag" 2>/dev/null) || return 1
  case ${labels%%|*} in
    *stand-in*) [ "${labels#*|}" = "$want" ] && return 0; say "$tag: a stand-in built from other inputs than these"; return 1 ;;
    *) return 0 ;;
  esac
}

work=$(mktemp -d "${TMPDIR:-/var/tmp}/standin.XXXXXX")
trap 'rm -rf "$work"' EXIT

# The host's CA bundle: it holds the CA that this machine's TLS to the package
# registries needs, which a plain Debian image lacks.
ca_bundle=/etc/ssl/certs/ca-certificates.crt
[ -f "$ca_bundle" ] || die "$ca_bundle is missing (Debian package ca-certificates)"

build() { # build TAG HASH DIR [docker build args...]
  local tag=$1 hash=$2 dir=$3; shift 3
  say "building $tag"
  # The classic builder: the docker CLI may lack buildx, and these Dockerfiles need
  # nothing newer. Its deprecation notice goes to the log with the rest.
  DOCKER_BUILDKIT=0 docker build --label "org.opencontainers.image.description=$STANDIN" \
    --label "$INPUTS_LABEL=$hash" -t "$tag" "$@" "$dir" >"$work/build.log" 2>&1 || { tail -n 30 "$work/build.log" >&2; die "building $tag failed (log above)"; }
}

debian_base() {
  have "$DEBIAN" && return
  command -v debootstrap >/dev/null || die "debootstrap is required (Debian package debootstrap)"
  # The mirror this machine's apt uses, so that the image reaches the same one.
  local mirror
  mirror=$(grep -hsoE '^(URIs:|deb) +https?://[^ ]+/debian/?( |$)' /etc/apt/sources.list /etc/apt/sources.list.d/* \
    | grep -oE 'https?://[^ ]+' | head -n 1 || true)
  mirror=${mirror:-http://deb.debian.org/debian}
  say "debootstrap bookworm from $mirror (a few minutes, once)"
  debootstrap --variant=minbase bookworm "$work/rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 \
    || { tail -n 20 "$work/debootstrap.log" >&2; die "debootstrap failed (log above)"; }
  rm -rf "$work"/rootfs/var/cache/apt/archives/*.deb "$work"/rootfs/var/lib/apt/lists/*
  tar -C "$work/rootfs" -c . | docker import \
    -c 'CMD ["bash"]' -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    -c "LABEL org.opencontainers.image.description=\"$STANDIN\"" - "$DEBIAN" >/dev/null
  rm -rf "$work/rootfs"
}

golang() {
  # The toolchain of this machine's go command (go.mod's go line is its minimum),
  # as the module proxy serves it.
  local version dir ctx="$work/golang" hash
  version=$(go env GOVERSION)
  hash=$(inputs deploy/images/golang -- "$version")
  current "$GOLANG" "$hash" && return
  debian_base
  dir=$(cd "$work" && GOFLAGS=-mod=mod go mod download -json "golang.org/toolchain@v0.0.1-$version.linux-amd64" \
    | sed -n 's/.*"Dir": "\(.*\)",*/\1/p')
  [ -d "$dir" ] || die "could not download the Go toolchain $version from the module proxy"
  mkdir -p "$ctx"
  cp -a "$dir" "$ctx/go"
  # Module zips keep no file modes: the go command marks these executable when it
  # switches toolchains itself, so do the same.
  chmod -R u+w "$ctx/go"
  find "$ctx/go/bin" "$ctx/go/pkg/tool" -type f -exec chmod 755 {} +
  cp "$ca_bundle" "$ctx/ca-certificates.crt"
  cp "$images/golang/Dockerfile" "$ctx/"
  build "$GOLANG" "$hash" "$ctx" --build-arg "BASE=$DEBIAN" --build-arg "GOLANG_VERSION=${version#go}"
}

distroless() {
  local ctx="$work/distroless" hash
  hash=$(inputs deploy/images/distroless)
  current "$DISTROLESS" "$hash" && return
  mkdir -p "$ctx/rootfs/etc/ssl/certs" "$ctx/rootfs/usr/share" "$ctx/rootfs/tmp" "$ctx/home/nonroot"
  chmod 1777 "$ctx/rootfs/tmp"; chmod 700 "$ctx/home/nonroot"
  cp "$images/distroless/Dockerfile" "$ctx/"
  cp "$images/distroless/passwd" "$images/distroless/group" "$ctx/rootfs/etc/"
  cp "$ca_bundle" "$ctx/rootfs/etc/ssl/certs/ca-certificates.crt"
  [ -d /usr/share/zoneinfo ] || die "/usr/share/zoneinfo is missing (Debian package tzdata)"
  cp -a /usr/share/zoneinfo "$ctx/rootfs/usr/share/"
  build "$DISTROLESS" "$hash" "$ctx"
}

nats() {
  local ctx="$work/nats" hash
  hash=$(inputs deploy/images/nats -- "$(grep -F github.com/nats-io/nats-server/v2 go.mod)")
  current "$NATS" "$hash" && return
  mkdir -p "$ctx"
  # Static, so it needs no libraries in the image (ldd fails on a static binary).
  [ -x /bin/busybox ] && ! ldd /bin/busybox >/dev/null 2>&1 \
    || die "/bin/busybox is missing or not static (Debian package busybox-static)"
  cp /bin/busybox "$ctx/busybox"
  # nats-server at the version go.mod pins, static.
  CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$ctx/nats-server" github.com/nats-io/nats-server/v2
  local want=${NATS#nats:}; want=${want%-alpine}
  "$ctx/nats-server" --version | grep -q "v$want\$" || die "go.mod's nats-server is not v$want (the compose file's tag); update one of them"
  cp "$images"/nats/{Dockerfile,docker-entrypoint.sh,nats-server.conf} "$ctx/"
  build "$NATS" "$hash" "$ctx"
}

elasticsearch() {
  # The launcher's sources stand for the jars it puts on the classpath: its pom
  # pins every version.
  local ctx="$work/elasticsearch" version hash
  hash=$(inputs deploy/images/elasticsearch deploy/elasticsearch-local/pom.xml deploy/elasticsearch-local/src)
  current "$ELASTICSEARCH" "$hash" && return
  debian_base
  version=$(sed -n 's:.*<elasticsearch.version>\(.*\)</elasticsearch.version>.*:\1:p' deploy/elasticsearch-local/pom.xml)
  [ "$version" = "${ELASTICSEARCH##*:}" ] || die "deploy/elasticsearch-local runs Elasticsearch $version, the compose file's tag is ${ELASTICSEARCH##*:}"
  deploy/elasticsearch-local/build.sh
  mkdir -p "$ctx/lib"
  # The launcher first, then Maven's order: the classpath the tests run with.
  local jar cp=()
  for jar in deploy/elasticsearch-local/target/elasticsearch-local-*.jar $(tr ':' ' ' <deploy/elasticsearch-local/target/classpath.txt); do
    [ ! -e "$ctx/lib/$(basename "$jar")" ] || die "two jars named $(basename "$jar") on the launcher's classpath"
    cp "$jar" "$ctx/lib/"
    cp+=("/usr/share/elasticsearch/lib/$(basename "$jar")")
  done
  (IFS=:; echo "${cp[*]}") >"$ctx/lib/classpath"
  cp "$images"/elasticsearch/{Dockerfile,docker-entrypoint.sh,elasticsearch-certutil} "$ctx/"
  build "$ELASTICSEARCH" "$hash" "$ctx" --build-arg "BASE=$DEBIAN"
}

golang
distroless
nats
elasticsearch
for tag in "$GOLANG" "$DISTROLESS" "$NATS" "$ELASTICSEARCH"; do
  docker image inspect -f "{{.Size}} {{index .Config.Labels \"org.opencontainers.image.description\"}}" "$tag" \
    | awk -v t="$tag" '{ s=$1; $1=""; printf "images: %-56s %4d MB %s\n", t, s/1e6, ($0 ~ /stand-in/ ? "(stand-in)" : "(upstream)") }' >&2
done
