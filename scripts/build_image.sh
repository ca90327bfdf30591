#!/usr/bin/env bash
# Build the bids_ketamine_fc image from the Dockerfile with buildah, where Docker is absent and the
# build itself has no network, then run both levels of the demo inside it as a non-root user with
# no network. Not part of CI: it needs root, buildah and debootstrap (apt-get install buildah
# debootstrap), a Debian mirror and PyPI on the host, and about 15 GB of disk (vfs storage).
#
#   bash scripts/build_image.sh [--templateflow DIR] [--tag TAG] [--work DIR]
#
#   --templateflow DIR  a TemplateFlow home holding the files the app reads
#                       (bids_ketamine_fc-fetch-templateflow fills one); without it the build
#                       downloads them, which needs TemplateFlow's servers. It is copied into the
#                       image's /opt/templateflow.
#   --tag TAG           image name (default localhost/bids_ketamine_fc:<version>)
#   --work DIR          scratch folder: base file system, wheels, demo (default build-image/)
#
# Steps, each timed: (1) a base image with CPython 3.11 from Debian packages (debootstrap), unless
# BASE_IMAGE names one; (2) the wheels of the package and its dependencies, downloaded on the host;
# (3) buildah bud (--storage-driver vfs, --isolation chroot) in a network namespace without
# network: pip in the build reads the wheels folder only; (4) the TemplateFlow folder copied in;
# (5) the demo (24 participants, as scripts/demo.sh) generated on the host and run in the image,
# both levels, as uid 1000 with no network; (6) the image's size and the times.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VERSION=$(sed -n 's/^__version__ = "\(.*\)"/\1/p' bids_ketamine_fc/__init__.py)
TAG=localhost/bids_ketamine_fc:$VERSION
WORK=$ROOT/build-image
TEMPLATEFLOW=
BASE_IMAGE=${BASE_IMAGE:-}
while [ $# -gt 0 ]; do
    case "$1" in
        --templateflow) TEMPLATEFLOW=$(realpath "$2"); shift 2 ;;
        --tag) TAG=$2; shift 2 ;;
        --work) WORK=$(realpath -m "$2"); shift 2 ;;
        *) echo "build_image.sh: unknown argument $1 (see the header of this script)" >&2; exit 64 ;;
    esac
done
for tool in buildah debootstrap unshare python3; do
    command -v "$tool" >/dev/null || { echo "build_image.sh: $tool is not installed" >&2; exit 69; }
done
[ "$(id -u)" -eq 0 ] || { echo "build_image.sh: run as root (buildah chroot, unshare)" >&2; exit 77; }
BUILDAH=(buildah --storage-driver vfs)
mkdir -p "$WORK"
TIMES=()
step() {  # step NAME COMMAND...: run and time one step
    local name=$1 start end
    shift
    echo "== $name" >&2
    start=$(date +%s)
    "$@"
    end=$(date +%s)
    TIMES+=("$name: $((end - start)) s")
}

base_image() {
    BASE_IMAGE=localhost/debian-python:3.11-bookworm
    if "${BUILDAH[@]}" inspect --type image "$BASE_IMAGE" >/dev/null 2>&1; then
        echo "$BASE_IMAGE exists: kept" >&2
        return
    fi
    rm -rf "$WORK/rootfs"
    debootstrap --variant=minbase --include=python3,python3-venv,python-is-python3,ca-certificates \
        bookworm "$WORK/rootfs" http://deb.debian.org/debian >"$WORK/debootstrap.log"
    rm -rf "$WORK/rootfs/var/cache/apt/archives/"*.deb "$WORK/rootfs/var/lib/apt/lists/"*
    local ctr
    ctr=$("${BUILDAH[@]}" from scratch)
    cp -a "$WORK/rootfs/." "$("${BUILDAH[@]}" mount "$ctr")"/
    "${BUILDAH[@]}" config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        --cmd /bin/bash "$ctr"
    "${BUILDAH[@]}" commit -q "$ctr" "$BASE_IMAGE" >/dev/null
    "${BUILDAH[@]}" rm "$ctr" >/dev/null
}

wheels() {
    local tf_version
    tf_version=$(sed -n 's/^ARG TEMPLATEFLOW_VERSION=//p' Dockerfile)
    python3 -m venv "$WORK/venv"
    "$WORK/venv/bin/pip" install -q --upgrade pip
    "$WORK/venv/bin/pip" download -q -d "$WORK/wheels" --only-binary=:all: --no-binary=docopt \
        "$ROOT" setuptools wheel "templateflow==$tf_version" >"$WORK/pip-download.log" 2>&1 ||
        { tail -20 "$WORK/pip-download.log" >&2; exit 1; }
    printf '[global]\nno-index = true\nfind-links = /wheels\n' >"$WORK/pip.conf"
}

build() {
    local mounts=(-v "$WORK/pip.conf:/etc/pip.conf:ro" -v "$WORK/wheels:/wheels:ro")
    if [ -n "$TEMPLATEFLOW" ]; then
        mounts+=(-v "$TEMPLATEFLOW:/opt/templateflow")
    fi
    # unshare -n: a new network namespace with no interface up, so no RUN step reaches a network
    unshare -n "${BUILDAH[@]}" bud --isolation chroot --layers=false "${mounts[@]}" \
        --build-arg BASE_IMAGE="$BASE_IMAGE" --build-arg IMAGE_TAG="$TAG" \
        --build-arg BUILD_DATE="$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
        --build-arg VCS_REF="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" \
        -t "$TAG" . >"$WORK/build.log" 2>&1 || { tail -30 "$WORK/build.log" >&2; exit 1; }
}

add_templateflow() {
    # A folder mounted during the build does not enter the image: copy it in.
    local ctr
    ctr=$("${BUILDAH[@]}" from "$TAG")
    "${BUILDAH[@]}" copy "$ctr" "$TEMPLATEFLOW" /opt/templateflow >/dev/null
    unshare -n "${BUILDAH[@]}" run --isolation chroot --user 0:0 "$ctr" -- \
        chmod -R a+rX /opt/templateflow
    "${BUILDAH[@]}" commit -q "$ctr" "$TAG" >/dev/null
    "${BUILDAH[@]}" rm "$ctr" >/dev/null
    if grep -rqs "generated" "$TEMPLATEFLOW/README.md"; then
        echo "build_image.sh: warning: $TEMPLATEFLOW says its files are generated, not the real" \
            "atlases: $TAG is for testing only; do not publish it" >&2
    fi
}

demo() {
    rm -rf "$WORK/demo"
    "$WORK/venv/bin/pip" install -q "$ROOT" >"$WORK/pip-install.log" 2>&1
    "$WORK/venv/bin/python" -m bids_ketamine_fc.demo "$WORK/demo" >/dev/null
    mkdir -p "$WORK/demo/output" "$WORK/demo/work"
    chown -R 1000:1000 "$WORK/demo/output" "$WORK/demo/work"
}

run_level() {  # run_level LEVEL ARGS...: the demo's level in the image, uid 1000, no network
    local level=$1 ctr
    shift
    ctr=$("${BUILDAH[@]}" from "$TAG")
    # the demo's generated atlases go with its generated data: TEMPLATEFLOW_HOME points at them
    unshare -n "${BUILDAH[@]}" run --isolation chroot --user 1000:1000 \
        -v "$WORK/demo:/demo" "$ctr" -- env TEMPLATEFLOW_HOME=/demo/templateflow \
        bids_ketamine_fc /demo/bids /demo/output "$level" -w /demo/work --nprocs 2 "$@"
    "${BUILDAH[@]}" rm "$ctr" >/dev/null
}

if [ -z "$BASE_IMAGE" ]; then
    step "base image (debootstrap)" base_image
fi
step "wheels (pip download on the host)" wheels
step "image build (buildah bud, no network)" build
if [ -n "$TEMPLATEFLOW" ]; then
    step "TemplateFlow folder copied in" add_templateflow
fi
step "demo dataset (host)" demo
step "participant level in the image" run_level participant
step "group level in the image" run_level group --random-seed 1
test -s "$WORK/demo/output/group/group.html"
SIZE=$("${BUILDAH[@]}" images --format '{{.Size}}' "$TAG" | head -1)
echo "Image $TAG: $SIZE; base $BASE_IMAGE"
printf '%s\n' "${TIMES[@]}"
echo "Outputs: $WORK/demo/output (owned by uid 1000); load: $(cut -d' ' -f1-3 /proc/loadavg)"
