#!/usr/bin/env bash
# Builds Ferry's container images without a container engine: a release build (profile
# `image`), then per image a root filesystem (images/rootfs.sh) packed by umoci into an OCI
# image whose user, entrypoint, ports, environment and labels come from the final stage of
# images/<image>/Containerfile. Writes one OCI archive per image to images/ in cargo's target
# directory (target/images/ unless CARGO_TARGET_DIR says otherwise), which `docker load`,
# `podman load`, `kind load image-archive` and `skopeo copy oci-archive:...` take, and prints
# each image's size. See docs/images.md.
#
#   scripts/build-images.sh             FERRY_REGISTRY (default ferrymesh) names the images
#   FERRY_IMAGES_SKIP_BUILD=1 ...       reuse the binaries already in target/image
set -euo pipefail
cd "$(dirname "$0")/.."

registry=${FERRY_REGISTRY:-ferrymesh}
registry=${registry%/}
# Cargo's own idea of the target directory (CARGO_TARGET_DIR, build.target-dir or target/).
target_dir=$(cargo metadata --format-version 1 --no-deps |
  sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
[ -n "$target_dir" ] || { echo "build-images: cargo metadata named no target directory" >&2; exit 1; }
bindir=$target_dir/image
out=$target_dir/images
images=(proxy control demo)

for tool in umoci ldd tar; do
  command -v "$tool" >/dev/null || {
    echo "build-images: $tool is missing (Debian: apt-get install umoci; .ci/setup installs it)" >&2
    exit 1
  }
done
[ -x /usr/sbin/xtables-nft-multi ] && [ -x /usr/sbin/xtables-legacy-multi ] || {
  echo "build-images: the proxy image needs this machine's iptables (apt-get install iptables)" >&2
  exit 1
}

if [ -z "${FERRY_IMAGES_SKIP_BUILD:-}" ]; then
  start=$SECONDS
  # The proxy is built on its own: built with the control plane, cargo would unify their
  # dependencies' features, and the control plane's (kube, axum) turn on `tracing`'s `log`
  # bridge, which costs the proxy a few percent of its CPU per request (bench/README.md).
  cargo build --locked --profile image -p ferry-proxy
  cargo build --locked --profile image -p ferry-control -p ferry-demo
  echo "build-images: release build (profile image) took $((SECONDS - start)) s"
fi

# Files in the layers are dated at the commit built, so a rebuild of it yields the same layers.
epoch=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}

# `ferry-proxy 0.1.0 (git 0123456789ab)`
read -r _ version _ revision < <("$bindir/ferry-proxy" --version)
revision=${revision%)}

# The fully qualified name a runtime gives `registry/name:tag` (ferry_api::images::normalize).
normalize() {
  local ref=$1 first=${1%%/*}
  if [[ $ref == */* ]] && { [[ $first == *.* || $first == *:* ]] || [ "$first" = localhost ]; }; then
    echo "$ref"
  elif [[ $ref == */* ]]; then
    echo "docker.io/$ref"
  else
    echo "docker.io/library/$ref"
  fi
}

# Prints umoci config flags for the final stage of a Containerfile.
config_flags() {
  local file=$1 stage=0 line key value
  local -a flags=()
  while IFS= read -r line; do
    [[ $line == FROM\ * ]] && { stage=$((stage + 1)); flags=(); continue; }
    line=${line//\$\{VERSION\}/$version}
    line=${line//\$\{FERRY_GIT_SHA\}/$revision}
    case "$line" in
      "USER "*) flags+=(--config.user "${line#USER }") ;;
      "ENV "*) flags+=(--config.env "${line#ENV }") ;;
      "EXPOSE "*) for port in ${line#EXPOSE }; do flags+=(--config.exposedports "$port"); done ;;
      "ENTRYPOINT "*)
        value=${line#ENTRYPOINT \[\"}
        flags+=(--config.entrypoint "${value%\"\]}") ;;
      "LABEL "*)
        key=${line#LABEL }
        value=${key#*=}
        value=${value#\"}
        flags+=(--config.label "${key%%=*}=${value%\"}") ;;
    esac
  done < "$file"
  printf '%s\0' "${flags[@]}"
}

mkdir -p "$out"
work=$(mktemp -d "$target_dir/images-work.XXXXXX")
trap 'rm -rf "$work"' EXIT

printf '%-8s %-46s %12s %14s\n' image name compressed uncompressed
for image in "${images[@]}"; do
  case "$image" in
    proxy) name=ferry-proxy ;;
    control) name=ferry-control ;;
    demo) name=ferry-demo ;;
  esac
  ref=$registry/$name:$version
  full=$(normalize "$ref")
  layout=$work/$image-layout
  rootfs=$work/$image-rootfs
  images/rootfs.sh "$image" "$rootfs" "$bindir"
  umoci init --layout "$layout"
  umoci new --image "$layout:build"
  # One layer, as a tar made here: owned by root, sorted, paths relative (./usr/...).
  tar --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$epoch" \
    -C "$rootfs" -cf "$work/$image-layer.tar" .
  umoci raw add-layer --image "$layout:build" \
    --history.created_by "scripts/build-images.sh ($image rootfs)" "$work/$image-layer.tar"
  mapfile -d '' flags < <(config_flags "images/$image/Containerfile")
  umoci config --image "$layout:build" --os linux --architecture amd64 \
    --author "Ferry" --history.created_by "scripts/build-images.sh ($image config)" "${flags[@]}"
  umoci gc --layout "$layout"

  # One manifest, named with the full reference (containerd and Docker read
  # io.containerd.image.name, podman the OCI ref name), plus Docker's manifest.json so
  # Docker before 25 loads the same archive.
  index=$(cat "$layout/index.json")
  manifest_digest=$(grep -o '"digest":"sha256:[0-9a-f]*"' <<<"$index" | head -1 | cut -d'"' -f4)
  manifest_size=$(grep -o '"size":[0-9]*' <<<"$index" | head -1 | cut -d: -f2)
  manifest=$(cat "$layout/blobs/sha256/${manifest_digest#sha256:}")
  digests=($(grep -o '"digest":"sha256:[0-9a-f]*"' <<<"$manifest" | cut -d'"' -f4))
  config_digest=${digests[0]}
  layers=()
  compressed=0
  for d in "${digests[@]:1}"; do
    layers+=("\"blobs/sha256/${d#sha256:}\"")
    compressed=$((compressed + $(stat -c %s "$layout/blobs/sha256/${d#sha256:}")))
  done
  printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"%s","size":%s,"annotations":{"io.containerd.image.name":"%s","org.opencontainers.image.ref.name":"%s"}}]}\n' \
    "$manifest_digest" "$manifest_size" "$full" "$full" > "$layout/index.json"
  printf '[{"Config":"blobs/sha256/%s","RepoTags":["%s"],"Layers":[%s]}]\n' \
    "${config_digest#sha256:}" "$ref" "$(IFS=,; echo "${layers[*]}")" > "$layout/manifest.json"
  tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 \
    -C "$layout" -cf "$out/$name.oci.tar" oci-layout index.json manifest.json blobs
  uncompressed=$(stat -c %s "$work/$image-layer.tar")
  awk -v i="$image" -v n="$full" -v c="$compressed" -v u="$uncompressed" \
    'BEGIN { printf "%-8s %-46s %9.1f MB %11.1f MB\n", i, n, c / 1e6, u / 1e6 }'
done
echo "build-images: archives in $out (version $version, git $revision)"
