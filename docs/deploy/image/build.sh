#!/usr/bin/env bash
# `make image`: the edge relay as an OCI image, built without a container daemon.
#
#   docs/deploy/image/build.sh BINARY OUTDIR [TAG]
#
# Builds with buildah (Debian's package): `buildah from scratch` needs no daemon and, as nothing
# is RUN inside the image, no container runtime either; it can also write the Docker form, which
# is where a HEALTHCHECK lives (the OCI image spec has no field for one). umoci could pack the same
# root file system into an OCI layout, but has no way to record a health check at all.
#
# Writes into OUTDIR:
#   rootfs/                 the image's root file system (docs/deploy/image/rootfs.sh)
#   oci/                    the OCI image layout, its reference the tag's version (0.1.0 of nativerelay:0.1.0)
#   nativerelay-docker.tar  the same image in Docker form with its HEALTHCHECK, for `docker load` / `podman load`
#   size.txt                the image's size, uncompressed (what perf/RESULTS.md reports)
set -euo pipefail
bin=${1:?usage: build.sh BINARY OUTDIR [TAG]}
out=${2:?usage: build.sh BINARY OUTDIR [TAG]}
tag=${3:-nativerelay:latest}
here=$(cd "$(dirname "$0")" && pwd)
command -v buildah >/dev/null || { echo "build.sh: buildah is required (apt-get install buildah)" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "build.sh: run as root (buildah's storage, and files owned by the image's user)" >&2; exit 1; }

rm -rf "$out/rootfs" "$out/oci" "$out/nativerelay-docker.tar"
mkdir -p "$out"
"$here/rootfs.sh" "$bin" "$out/rootfs"
# Port 25 (and 465, 587) as the unprivileged user: the one capability, on the binary. Docker 20.10
# and later also lets any user bind low ports inside a container (net.ipv4.ip_unprivileged_port_start).
setcap cap_net_bind_service=+ep "$out/rootfs/usr/local/bin/nativerelay"

ctr=$(buildah from --format docker scratch)
trap 'buildah rm "$ctr" >/dev/null 2>&1 || true' EXIT
mnt=$(buildah mount "$ctr")
# cp -a keeps owners, modes, links and the capability (an extended attribute).
cp -a "$out/rootfs/." "$mnt/"
buildah umount "$ctr" >/dev/null

buildah config \
  --os linux --arch amd64 \
  --user 65532:65532 \
  --workingdir /var/spool/nativerelay \
  --port 25 --port 587 --port 465 --port 9464 \
  --volume /var/spool/nativerelay \
  --entrypoint '["/usr/local/bin/nativerelay"]' \
  --cmd '["serve", "--config", "/etc/nativerelay/nativerelay.json"]' \
  --stop-signal SIGTERM \
  --healthcheck 'CMD /usr/local/bin/nativerelay queue stats --config /etc/nativerelay/nativerelay.json' \
  --healthcheck-interval 30s --healthcheck-timeout 5s --healthcheck-start-period 10s --healthcheck-retries 3 \
  --label org.opencontainers.image.title=nativerelay \
  --label org.opencontainers.image.description="NativeRelay edge relay: native-AOT MTA on a scratch root" \
  "$ctr"

buildah commit --quiet --format docker "$ctr" "docker-archive:$out/nativerelay-docker.tar:$tag" >/dev/null
# The OCI form drops the HEALTHCHECK (buildah says so); the orchestrator's probe runs the same command.
buildah commit --quiet --format oci "$ctr" "oci:$out/oci:${tag##*:}" 2>&1 >/dev/null | grep -v -i 'healthcheck' >&2 || true

# Sizes: the root file system, the layer as stored (an uncompressed tar in the OCI layout) and
# that layer gzip-compressed, as a registry would hold it.
bytes=$(du -sb --apparent-size "$out/rootfs" | cut -f1)
layer=$(python3 - "$out/oci" <<'PY'
import json, sys, os
root = sys.argv[1]
index = json.load(open(os.path.join(root, "index.json")))
d = index["manifests"][0]["digest"].split(":")
manifest = json.load(open(os.path.join(root, "blobs", d[0], d[1])))
print(" ".join(os.path.join(root, "blobs", *l["digest"].split(":")) for l in manifest["layers"]))
PY
)
tarred=$(cat $layer | wc -c)
gzipped=$(cat $layer | gzip -9 | wc -c)
awk -v tag="$tag" -v b="$bytes" -v t="$tarred" -v g="$gzipped" 'BEGIN { printf "image %s: files %d bytes (%.1f MB), layer %d bytes (%.1f MB) uncompressed, %d bytes (%.1f MB) gzipped\n", tag, b, b / 1e6, t, t / 1e6, g, g / 1e6 }' | tee "$out/size.txt"
