#!/usr/bin/env bash
# Builds the Kubeflow task image (deploy/kubeflow/Dockerfile) from the repository root.
#
#   deploy/kubeflow/build-image.sh IMAGE [WEIGHTS_FOLDER]
#
# With a reachable Docker engine: docker build. Without one: buildah (chroot
# isolation, vfs storage: no daemon, no overlay or user namespaces needed), on a
# base made once with debootstrap (Debian bookworm + its python3.11 in a venv
# at /opt/venv, first on PATH) and kept as an image and a tarball under build/.
#
# Environment: BASE_IMAGE (another base; default: the Dockerfile's with docker,
# the debootstrap one with buildah), BUILDER=docker|buildah, PYTHON (a CPython
# 3.11 for the wheelhouse; default .venv/bin/python), DEBIAN_MIRROR.
set -euo pipefail
cd "$(dirname "$0")/../.."

image=${1:?usage: build-image.sh IMAGE [WEIGHTS_FOLDER]}
weights=${2:-}
# Bump when the base recipe below changes, so cached bases are not reused.
base_tag=localhost/finetune-base:bookworm-py3.11-1
base_tar=build/base/${base_tag##*:}.tar
buildah=(buildah --storage-driver vfs)

log() { echo "build-image: $*" >&2; }
seconds() { echo "$(( $(date +%s) - $1 ))s"; }

python=${PYTHON:-.venv/bin/python}
[ -x "$python" ] || python=python3.11
start=$(date +%s)
"$python" deploy/kubeflow/wheelhouse.py --dir build/wheelhouse
log "wheelhouse ready in $(seconds "$start")"

# The Dockerfile always copies build/weights/: empty unless a folder is given.
rm -rf build/weights
mkdir -p build/weights
if [ -n "$weights" ]; then
  if [ ! -d "$weights" ]; then log "WEIGHTS=$weights is not a folder of Keras weight files"; exit 2; fi
  cp -a "$weights"/. build/weights/
  log "baking $(find build/weights -type f | wc -l) weight files from $weights into /opt/finetune/weights"
fi

builder=${BUILDER:-}
if [ -z "$builder" ]; then
  if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then builder=docker; else builder=buildah; fi
fi

if [ "$builder" = docker ]; then
  # RUN --mount needs BuildKit (the default since Docker 23).
  DOCKER_BUILDKIT=1 docker build -f deploy/kubeflow/Dockerfile \
    ${BASE_IMAGE:+--build-arg "BASE_IMAGE=$BASE_IMAGE"} -t "$image" .
  exit 0
fi

for tool in buildah debootstrap; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    log "no Docker engine and no $tool: apt-get install -y buildah debootstrap"; exit 2
  fi
done

make_base_tarball() {
  root=$(mktemp -d /var/tmp/finetune-base.XXXXXX)
  trap 'rm -rf "$root"' EXIT
  log "debootstrap bookworm (minbase + python3.11) into $root"
  debootstrap --variant=minbase --include=python3.11,python3.11-venv,python3-distutils,ca-certificates \
    bookworm "$root" "${DEBIAN_MIRROR:-http://deb.debian.org/debian}" >&2
  # Debian's pip refuses system-wide installs (PEP 668); a venv gives the image
  # `python` and `pip` as 3.11, as the official python images have them.
  chroot "$root" /usr/bin/python3.11 -m venv /opt/venv
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb
  mkdir -p "$(dirname "$base_tar")"
  tar -C "$root" --numeric-owner -cf "$base_tar.tmp" .
  mv "$base_tar.tmp" "$base_tar"
  rm -rf "$root"
}

make_base_image() {
  [ -f "$base_tar" ] || make_base_tarball
  local ctr
  ctr=$("${buildah[@]}" from scratch)
  "${buildah[@]}" add "$ctr" "$base_tar" / >/dev/null
  "${buildah[@]}" config \
    --env PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env LANG=C.UTF-8 --cmd python "$ctr"
  "${buildah[@]}" commit --quiet --rm "$ctr" "$base_tag" >/dev/null
}

base=${BASE_IMAGE:-$base_tag}
if [ -z "${BASE_IMAGE:-}" ] && ! "${buildah[@]}" inspect --type image "$base_tag" >/dev/null 2>&1; then
  start=$(date +%s)
  make_base_image
  log "base $base_tag made in $(seconds "$start")"
fi

previous=$("${buildah[@]}" inspect --type image --format '{{.FromImageID}}' "$image" 2>/dev/null || true)
start=$(date +%s)
"${buildah[@]}" bud --isolation chroot -f deploy/kubeflow/Dockerfile \
  --build-arg "BASE_IMAGE=$base" -t "$image" .
log "$image built in $(seconds "$start")"
# vfs keeps full copies: drop the image this one replaced (if no container uses it).
current=$("${buildah[@]}" inspect --type image --format '{{.FromImageID}}' "$image")
if [ -n "$previous" ] && [ "$previous" != "$current" ]; then
  "${buildah[@]}" rmi "$previous" >/dev/null 2>&1 || true
fi
