#!/usr/bin/env bash
# Lays out the edge relay's root file system: the binary and exactly the files it needs
# (docs/deploy/FOOTPRINT.md), nothing else: no shell, no package manager.
#
#   docs/deploy/image/rootfs.sh BINARY DEST
#
# DEST must not exist or be empty. The libraries are copied from this machine (Debian 12: glibc
# 2.36, OpenSSL 3.0), found the way the dynamic loader finds them: ldd of the binary (libc, libm,
# the loader) and of libssl.so.3 (libcrypto.so.3), which .NET opens with dlopen at run time and so
# ldd of the binary does not show. `make image` packs DEST as an OCI image; the footprint tests
# (tests/.../EndToEnd/FootprintTests.cs) run the relay in it with chroot.
set -euo pipefail
bin=${1:?usage: rootfs.sh BINARY DEST}
dest=${2:?usage: rootfs.sh BINARY DEST}
here=$(cd "$(dirname "$0")" && pwd)
uid=65532   # the relay's user and group in the image (distroless calls this id "nonroot")

[ -x "$bin" ] || { echo "rootfs.sh: $bin is not an executable" >&2; exit 1; }
if [ -e "$dest" ] && [ -n "$(ls -A "$dest")" ]; then echo "rootfs.sh: $dest is not empty" >&2; exit 1; fi
mkdir -p "$dest"

# Copies a file to the same path under DEST; a symbolic link is kept as a link and its target
# copied too (the loader and the sonames are links on Debian).
copy() {
  local path=$1
  [ -e "$dest$path" ] && return 0
  mkdir -p "$dest$(dirname "$path")"
  if [ -L "$path" ]; then
    local target; target=$(readlink "$path")
    ln -s "$target" "$dest$path"
    case $target in /*) copy "$target" ;; *) copy "$(cd "$(dirname "$path")" && realpath -s "$target")" ;; esac
  else
    cp -p "$path" "$dest$path"
  fi
}

# The libraries of a binary, as ldd resolves them ("name => /path (addr)" or "/path (addr)").
libs() { ldd "$1" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }'; }

install -D -m 0755 "$bin" "$dest/usr/local/bin/nativerelay"
libssl=$(ldconfig -p | awk '$1 == "libssl.so.3" && /x86-64/ { print $NF; exit }')
[ -n "$libssl" ] || { echo "rootfs.sh: libssl.so.3 not found on this machine (apt-get install libssl3)" >&2; exit 1; }
for lib in $(libs "$bin") "$libssl" $(libs "$libssl"); do copy "$lib"; done

# A CA bundle where OpenSSL (so .NET) looks by default on Debian: /usr/lib/ssl/cert.pem and the
# directory /usr/lib/ssl/certs, both links to /etc/ssl/certs as Debian has them.
bundle=/etc/ssl/certs/ca-certificates.crt
[ -f "$bundle" ] || { echo "rootfs.sh: $bundle not found (apt-get install ca-certificates)" >&2; exit 1; }
install -D -m 0644 "$bundle" "$dest$bundle"
mkdir -p "$dest/usr/lib/ssl"
ln -s /etc/ssl/certs/ca-certificates.crt "$dest/usr/lib/ssl/cert.pem"
ln -s /etc/ssl/certs "$dest/usr/lib/ssl/certs"

# The user (names only for tools that show them: the image runs as the numeric id), the
# configuration and the spool, which the image declares a volume.
printf 'root:x:0:0:root:/root:/sbin/nologin\nnativerelay:x:%d:%d:nativerelay:/var/spool/nativerelay:/sbin/nologin\n' $uid $uid > "$dest/etc/passwd"
printf 'root:x:0:\nnativerelay:x:%d:\n' $uid > "$dest/etc/group"
chmod 0644 "$dest/etc/passwd" "$dest/etc/group"
install -D -m 0644 "$here/nativerelay.json" "$dest/etc/nativerelay/nativerelay.json"
install -d -m 0700 "$dest/var/spool/nativerelay"
chown -R $uid:$uid "$dest/var/spool/nativerelay" 2>/dev/null || echo "rootfs.sh: not root: /var/spool/nativerelay left owned by $(id -u)" >&2
