#!/usr/bin/env bash
# Builds the command-issuer container image as an OCI image layout WITHOUT a Docker daemon and
# without pulling any base image, then checks it.
#
# The image is the equivalent of image/Dockerfile (distroless cc-debian12:nonroot + the binary):
# one layer holding /command-issuer (the release binary), the shared libraries it needs and the
# dynamic loader (copied from this Debian 12 machine, found with ldd), /etc/passwd and /etc/group
# with nonroot 65532:65532, /home/nonroot, /tmp (1777) and Debian's CA bundle.
# Config: User 65532:65532, Entrypoint ["/command-issuer"], Env PATH, WorkingDir /home/nonroot,
# label org.opencontainers.image.source, architecture of this machine (amd64), os linux.
#
# Tools: Debian's umoci (init/new/unpack/repack/config/gc) writes the layout, skopeo inspects it
# and writes the OCI archive. Both are installed with apt-get when missing.
#
# Output:  target/oci/command-issuer      OCI image layout, tag = workspace version
#          target/oci/command-issuer.tar  the same image as an OCI archive
# Checks:  config and manifest via skopeo, blob digests, layer content, then the layer unpacked
#          with plain tar and the entrypoint run inside it with chroot (as root and as 65532).
# Needs root (apt-get, chroot). Idempotent: every run rebuilds the layout from nothing; with an
# unchanged binary the image digest is the same (timestamps come from SOURCE_DATE_EPOCH, else
# the last commit's time).
#
# Environment: IMAGE_TAG (default: workspace version), IMAGE_SOURCE (default: chart `home`),
#              SOURCE_DATE_EPOCH.
# shellcheck disable=SC2317  # the check functions are called through `check NAME FUNCTION`
set -uo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
cd "$REPO" || exit 1

PASSED=0
FAILED=0
say() { printf '%s\n' "$*"; }
step() { printf '\n==== %s\n' "$*"; }
ok() { PASSED=$((PASSED + 1)); say "ok   - $*"; }
bad() { FAILED=$((FAILED + 1)); say "FAIL - $*"; }
check() { # check NAME CMD...: runs CMD, counts the result
    local name=$1
    shift
    if "$@"; then ok "$name"; else bad "$name"; fi
}
finish() {
    say ""
    say "$PASSED passed, $FAILED failed"
    [ "$FAILED" -eq 0 ]
    exit $?
}
die() {
    bad "$*"
    finish
}

[ "$(id -u)" -eq 0 ] || die "must run as root (apt-get for the tools, chroot for the run checks)"

# The binary links rustls-native-certs (kube's client falls back to the system roots when a
# kubeconfig carries no CA), so the image carries Debian's CA bundle as distroless does.
CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt
WORK=$(mktemp -d /tmp/command-issuer-oci.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

# ---------------------------------------------------------------------------------------------
step "tools (Debian packages umoci, skopeo, jq, ca-certificates)"
missing=()
for tool in umoci skopeo jq; do command -v "$tool" >/dev/null || missing+=("$tool"); done
[ -f "$CA_BUNDLE" ] || missing+=(ca-certificates)
if [ "${#missing[@]}" -gt 0 ]; then
    say "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null || die "apt-get update failed"
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
        || die "apt-get install ${missing[*]} failed"
fi
say "$(umoci --version); $(skopeo --version); $(jq --version)"

# ---------------------------------------------------------------------------------------------
step "cargo build --release -p command-issuer-actors"
cargo build --release -p command-issuer-actors || die "cargo build --release failed"
META=$(cargo metadata --format-version 1 --no-deps) || die "cargo metadata failed"
TARGET_DIR=$(jq -r .target_directory <<<"$META")
VERSION=$(jq -r '.packages[] | select(.name == "command-issuer-actors") | .version' <<<"$META")
BIN=$TARGET_DIR/release/command-issuer
[ -x "$BIN" ] || die "no binary at $BIN"

TAG=${IMAGE_TAG:-$VERSION}
SOURCE=${IMAGE_SOURCE:-$(awk '$1 == "home:" {print $2; exit}' chart/Chart.yaml)}
[ -n "$SOURCE" ] || die "no image source URL (set IMAGE_SOURCE or chart/Chart.yaml home)"
case "$(uname -m)" in
    x86_64) ARCH=amd64 ;;
    aarch64) ARCH=arm64 ;;
    *) die "unsupported machine $(uname -m)" ;;
esac
SDE=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}
CREATED=$(date -u -d "@$SDE" +%Y-%m-%dT%H:%M:%SZ)
OUT=$TARGET_DIR/oci
LAYOUT=$OUT/command-issuer
ARCHIVE=$OUT/command-issuer.tar
PATH_ENV=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
say "binary $BIN ($(stat -c %s "$BIN") bytes), tag $TAG, $ARCH, created $CREATED"

# Shared objects the binary loads, the dynamic loader included, as ldd resolves them here.
LIBS=$(ldd "$BIN" | awk '
    /not found/ { print "MISSING:" $1; next }
    $2 == "=>" && $3 ~ /^\// { print $3; next }
    $1 ~ /^\// { print $1 }') || die "ldd $BIN failed"
grep -q '^MISSING:' <<<"$LIBS" && die "ldd: unresolved libraries: $(grep '^MISSING:' <<<"$LIBS")"
INTERP=$(readelf -l "$BIN" 2>/dev/null | sed -n 's/.*Requesting program interpreter: \(.*\)]/\1/p')
[ -n "$INTERP" ] || INTERP=$(grep -m1 'ld-linux' <<<"$LIBS")
say "shared objects: $(tr '\n' ' ' <<<"$LIBS")"

# ---------------------------------------------------------------------------------------------
# build_layout DIR: writes the image as an OCI layout at DIR (from nothing).
build_layout() {
    local layout=$1 bundle rootfs lib
    bundle=$(mktemp -d "$WORK/bundle.XXXXXX")
    rm -rf "$layout"
    mkdir -p "$(dirname "$layout")"
    umoci init --layout "$layout" || return 1
    umoci new --image "$layout:$TAG" || return 1
    rmdir "$bundle" && umoci unpack --image "$layout:$TAG" "$bundle" >/dev/null || return 1
    rootfs=$bundle/rootfs

    install -m 0755 "$BIN" "$rootfs/command-issuer"
    for lib in $LIBS; do
        install -D -m 0755 "$(readlink -f "$lib")" "$rootfs$lib" || return 1
    done
    if [ ! -e "$rootfs$INTERP" ]; then
        install -D -m 0755 "$(readlink -f "$INTERP")" "$rootfs$INTERP" || return 1
    fi
    install -d -m 0755 "$rootfs/etc"
    cat >"$rootfs/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin
EOF
    cat >"$rootfs/etc/group" <<'EOF'
root:x:0:
nobody:x:65534:
nonroot:x:65532:
EOF
    chmod 0644 "$rootfs/etc/passwd" "$rootfs/etc/group"
    install -D -m 0644 "$(readlink -f "$CA_BUNDLE")" "$rootfs$CA_BUNDLE"
    install -d -m 0700 -o 65532 -g 65532 "$rootfs/home/nonroot"
    install -d -m 1777 "$rootfs/tmp"
    chmod 0755 "$rootfs"
    find "$rootfs" -exec touch -h -d "@$SDE" {} +

    umoci repack --image "$layout:$TAG" \
        --history.created "$CREATED" --history.author "tests/image/build-oci.sh" \
        --history.created_by "COPY command-issuer, its shared libraries, passwd, group, tmp" \
        "$bundle" || return 1
    umoci config --image "$layout:$TAG" \
        --created "$CREATED" --author "command-issuer" \
        --architecture "$ARCH" --os linux \
        --config.user 65532:65532 \
        --config.entrypoint /command-issuer \
        --config.env "PATH=$PATH_ENV" \
        --config.workingdir /home/nonroot \
        --config.label "org.opencontainers.image.source=$SOURCE" \
        --config.label "org.opencontainers.image.title=command-issuer" \
        --config.label "org.opencontainers.image.version=$VERSION" \
        --config.label "org.opencontainers.image.licenses=Apache-2.0" \
        --history.created "$CREATED" --history.author "tests/image/build-oci.sh" \
        --history.created_by "USER 65532:65532; ENTRYPOINT [\"/command-issuer\"]" || return 1
    umoci gc --layout "$layout" || return 1
    rm -rf "$bundle"
}

step "OCI layout with umoci: $LAYOUT:$TAG"
build_layout "$LAYOUT" || die "umoci could not build the layout"
rm -f "$ARCHIVE"
skopeo copy --quiet "oci:$LAYOUT:$TAG" "oci-archive:$ARCHIVE:$TAG" || die "skopeo copy to $ARCHIVE failed"
say "wrote $LAYOUT and $ARCHIVE"

# ---------------------------------------------------------------------------------------------
step "checks: manifest and config (skopeo)"
MANIFEST=$(skopeo inspect --raw "oci:$LAYOUT") || die "skopeo inspect --raw oci:$LAYOUT failed"
CONFIG=$(skopeo inspect --config "oci:$LAYOUT") || die "skopeo inspect --config oci:$LAYOUT failed"
INSPECT=$(skopeo inspect "oci:$LAYOUT") || die "skopeo inspect oci:$LAYOUT failed"
say "manifest: $(jq -c . <<<"$MANIFEST")"
say "config:   $(jq -c '{architecture, os, created, config}' <<<"$CONFIG")"
jq_is() { [ "$(jq -c "$2" <<<"$1")" = "$3" ] || { say "     $2 = $(jq -c "$2" <<<"$1"), want $3"; return 1; }; }
# (umoci leaves the optional mediaType out of the manifest itself; index.json's descriptor has it)
check "index.json names one OCI image manifest, tag $TAG; it has one gzip layer" \
    jq_is "$(jq -s '.' <<<"$(cat "$LAYOUT/index.json") $MANIFEST")" \
    '[(.[0].manifests | length), .[0].manifests[0].mediaType,
      .[0].manifests[0].annotations["org.opencontainers.image.ref.name"],
      .[1].schemaVersion, (.[1].layers | length), .[1].layers[0].mediaType]' \
    "[1,\"application/vnd.oci.image.manifest.v1+json\",\"$TAG\",2,1,\"application/vnd.oci.image.layer.v1.tar+gzip\"]"
check "config User is 65532:65532" jq_is "$CONFIG" '.config.User' '"65532:65532"'
check "config Entrypoint is [\"/command-issuer\"] and no Cmd" \
    jq_is "$CONFIG" '[.config.Entrypoint, .config.Cmd]' '[["/command-issuer"],null]'
check "config Env is [PATH=$PATH_ENV]" jq_is "$CONFIG" '.config.Env' "[\"PATH=$PATH_ENV\"]"
check "config label org.opencontainers.image.source=$SOURCE" \
    jq_is "$CONFIG" '.config.Labels["org.opencontainers.image.source"]' "\"$SOURCE\""
check "config architecture $ARCH, os linux (skopeo inspect agrees)" \
    jq_is "$(jq -s '.' <<<"$CONFIG $INSPECT")" '[.[0].architecture, .[0].os, .[1].Architecture, .[1].Os]' \
    "[\"$ARCH\",\"linux\",\"$ARCH\",\"linux\"]"

blobs_ok() {
    local f name bad=0
    for f in "$LAYOUT"/blobs/sha256/*; do
        name=$(basename "$f")
        [ "$(sha256sum "$f" | cut -d' ' -f1)" = "$name" ] || { say "     blob $name: digest mismatch"; bad=1; }
    done
    return "$bad"
}
check "every blob in the layout matches its sha256 name" blobs_ok
LAYER_DIGEST=$(jq -r '.layers[0].digest' <<<"$MANIFEST")
LAYER=$LAYOUT/blobs/sha256/${LAYER_DIGEST#sha256:}
diff_id_ok() {
    local want got
    want=$(jq -r '.rootfs.diff_ids[0]' <<<"$CONFIG")
    got=sha256:$(gzip -dc "$LAYER" | sha256sum | cut -d' ' -f1)
    [ "$want" = "$got" ] || { say "     diff_id $want, uncompressed layer $got"; return 1; }
}
check "config diff_id is the sha256 of the uncompressed layer" diff_id_ok
check "OCI archive $ARCHIVE holds the same manifest" \
    jq_is "$(skopeo inspect --raw "oci-archive:$ARCHIVE")" '.layers[0].digest' "\"$LAYER_DIGEST\""

# ---------------------------------------------------------------------------------------------
step "checks: layer content (GNU tar, independent of umoci)"
ROOTFS=$WORK/rootfs
mkdir -p "$ROOTFS"
LISTING=$(tar -tvzf "$LAYER" --numeric-owner) || die "tar cannot read the layer"
tar -xzf "$LAYER" -C "$ROOTFS" --numeric-owner --same-owner --same-permissions \
    || die "tar cannot extract the layer"
say "$LISTING"
check "/command-issuer is the release binary, byte for byte" cmp -s "$BIN" "$ROOTFS/command-issuer"
libs_present() {
    local lib absent=0
    for lib in $LIBS $INTERP; do [ -f "$ROOTFS$lib" ] || { say "     missing $lib"; absent=1; }; done
    return "$absent"
}
check "shared libraries and the loader $INTERP are in the layer" libs_present
check "/etc/passwd and /etc/group name nonroot 65532:65532" bash -c \
    "grep -qx 'nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin' '$ROOTFS/etc/passwd' &&
     grep -qx 'nonroot:x:65532:' '$ROOTFS/etc/group'"
tmp_ok() {
    [ "$(stat -c %a "$ROOTFS/tmp")" = 1777 ] && grep -Eq '^drwxrwxrwt .* (\./)?tmp/?$' <<<"$LISTING"
}
check "/tmp is a directory with mode 1777" tmp_ok
check "$CA_BUNDLE is Debian's CA bundle" cmp -s "$CA_BUNDLE" "$ROOTFS$CA_BUNDLE"
owners_ok() { # every entry root-owned except /home/nonroot (65532)
    local odd
    odd=$(awk '$2 != "0/0" && !($2 == "65532/65532" && $NF ~ /^(\.\/)?home\/nonroot\/?$/)' <<<"$LISTING")
    [ -z "$odd" ] || { say "     unexpected owner: $odd"; return 1; }
}
check "every entry is owned by 0:0, /home/nonroot by 65532:65532" owners_ok

# ---------------------------------------------------------------------------------------------
step "checks: the entrypoint runs inside the image's own filesystem (chroot, empty environment)"
run_in_image() { # run_in_image USERSPEC: /command-issuer --help inside $ROOTFS
    local out rc
    out=$(env -i "PATH=$PATH_ENV" chroot --userspec="$1" "$ROOTFS" /command-issuer --help 2>&1)
    rc=$?
    say "$(head -n 4 <<<"$out" | sed 's/^/     | /')"
    [ "$rc" -eq 0 ] || { say "     exit $rc"; return 1; }
    grep -q '^Usage: command-issuer' <<<"$out" || { say "     no usage line"; return 1; }
}
check "chroot ROOTFS /command-issuer --help as root exits 0 and prints the usage" run_in_image 0:0
check "chroot --userspec=65532:65532 ROOTFS /command-issuer --help exits 0 and prints the usage" \
    run_in_image 65532:65532
controller_starts() { # the real entrypoint, no flags: runtime and telemetry start, then it
    # stops cleanly because there is no in-cluster config (no API server here)
    local out rc
    out=$(env -i "PATH=$PATH_ENV" timeout 30 chroot --userspec=65532:65532 "$ROOTFS" \
        /command-issuer --log-format=json --cluster-resource-namespace=command-issuer-system 2>&1)
    rc=$?
    say "$(tail -n 2 <<<"$out" | cut -c1-200 | sed 's/^/     | /')"
    [ "$rc" -eq 1 ] || { say "     exit $rc, want 1"; return 1; }
    grep -q 'in-cluster config' <<<"$out" || { say "     no in-cluster config error"; return 1; }
}
check "the controller starts as 65532 and stops with the in-cluster config error (exit 1)" \
    controller_starts

# ---------------------------------------------------------------------------------------------
step "checks: image/Dockerfile and reproducibility"
dockerfile_context_ok() { # the files image/Dockerfile COPYs load as a workspace with --locked
    local ctx=$WORK/docker-context srcs dest
    mkdir -p "$ctx"
    # Exactly the build stage's COPY lines (not COPY --from), read from the Dockerfile itself.
    while read -r -a words; do
        srcs=("${words[@]:1:${#words[@]}-2}") dest=${words[-1]}
        if [[ $dest == */ ]]; then
            mkdir -p "$ctx/$dest" && cp -r "${srcs[@]}" "$ctx/$dest" || return 1
        else
            mkdir -p "$(dirname "$ctx/$dest")" && cp -r "${srcs[@]}" "$ctx/$dest" || return 1
        fi
    done < <(grep -E '^COPY ' image/Dockerfile | grep -v -- '--from')
    find "$ctx" -name target -type d -prune -exec rm -rf {} +
    (cd "$ctx" && cargo metadata --locked --format-version 1 \
        --filter-platform "$(rustc -vV | sed -n 's/^host: //p')" >"$WORK/ctx-meta.json") || return 1
    jq -e '.packages[] | select(.name == "command-issuer-actors")' "$WORK/ctx-meta.json" >/dev/null
}
check "image/Dockerfile's COPY set is a loadable workspace with an up-to-date Cargo.lock" \
    dockerfile_context_ok
reproducible() {
    build_layout "$WORK/again" >/dev/null 2>&1 || return 1
    local a b
    a=$(jq -r '.manifests[0].digest' "$LAYOUT/index.json")
    b=$(jq -r '.manifests[0].digest' "$WORK/again/index.json")
    say "     manifest $a"
    [ "$a" = "$b" ] || { say "     second build: $b"; return 1; }
}
check "a second build gives the same manifest digest" reproducible

# ---------------------------------------------------------------------------------------------
step "sizes"
LAYER_SIZE=$(jq '.layers[0].size' <<<"$MANIFEST")
LAYER_RAW=$(gzip -dc "$LAYER" | wc -c)
TOTAL=$(jq '[.config.size, (.layers[].size)] | add' <<<"$MANIFEST")
TOTAL=$((TOTAL + $(stat -c %s "$LAYOUT/blobs/sha256/$(jq -r '.manifests[0].digest' "$LAYOUT/index.json" | cut -d: -f2)")))
mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }
say "binary:                    $(stat -c %s "$BIN") bytes ($(mib "$(stat -c %s "$BIN")"))"
say "layer (gzip, pushed size): $LAYER_SIZE bytes ($(mib "$LAYER_SIZE"))"
say "layer (uncompressed):      $LAYER_RAW bytes ($(mib "$LAYER_RAW"))"
say "image total (manifest + config + layer): $TOTAL bytes ($(mib "$TOTAL"))"
say "OCI archive $ARCHIVE: $(stat -c %s "$ARCHIVE") bytes ($(mib "$(stat -c %s "$ARCHIVE")"))"
say "layout:  oci:$LAYOUT:$TAG"

finish
