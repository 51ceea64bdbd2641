#!/usr/bin/env bash
# Installs the peers perf/compare.sh measures NativeRelay against, beside the Postfix that
# ../shared/perf/mta-bench.sh installs (smtp-source, smtp-sink and the Postfix peer). Idempotent;
# run as root. perf/compare.sh installs nothing itself: it uses what this script put in place.
#
#   bash perf/peers/install.sh
#
# Exim 4 and OpenSMTPD come from Debian, but not through `apt-get install`: both packages
# conflict with Postfix (each Provides and Conflicts with mail-transport-agent), so installing
# either removes Postfix, and with it smtp-source and smtp-sink, the load every perf script and
# every other engineer's run on this machine uses; they also exclude each other. So their .debs
# are fetched with `apt-get download` and unpacked (dpkg-deb -x) into perf/peers/root/, which
# the compare script runs from; the one library they need that the base system lacks, libidn12,
# is installed normally (it conflicts with nothing). No maintainer script runs, so no service is started and nothing listens on port 25.
# What the packages' scripts would have made and the binaries need is made here: the system users
# Debian-exim (exim_user, compiled in), opensmtpd and opensmtpq (OpenSMTPD's privilege-separation
# users, compiled in), OpenSMTPD's chroot /var/lib/opensmtpd/empty, and its queue directory
# /var/spool/smtpd (compiled in too; nothing else uses it here since no system OpenSMTPD runs).
#
# Haraka comes from npm, pinned in perf/peers/haraka/package.json, into
# perf/peers/haraka/node_modules (not committed).
set -euo pipefail
cd "$(dirname "$0")"
PEERS_DIR=$PWD
ROOT=$PEERS_DIR/root
DEBS=$PEERS_DIR/debs

[ "$(id -u)" = 0 ] || { echo "install.sh: run as root (users, /var/spool/smtpd)" >&2; exit 2; }

# --- Exim 4 and OpenSMTPD: unpacked Debian packages ---
PKGS=(exim4-daemon-light exim4-base opensmtpd)
if [ ! -x "$ROOT/usr/sbin/exim4" ] || [ ! -x "$ROOT/usr/sbin/smtpd" ]; then
  mkdir -p "$DEBS"
  chmod 777 "$DEBS"   # apt-get download fetches as the _apt user
  if ! (cd "$DEBS" && apt-get download "${PKGS[@]}"); then
    apt-get update -qq
    (cd "$DEBS" && apt-get download "${PKGS[@]}")
  fi
  rm -rf "$ROOT"; mkdir -p "$ROOT"
  for deb in "$DEBS"/*.deb; do dpkg-deb -x "$deb" "$ROOT"; done
fi
dpkg -s libidn12 >/dev/null 2>&1 || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libidn12
# Their other libraries (libevent, gnutls, libdb, pcre2, ...) are the base system's; say so if not.
missing=$(ldd "$ROOT/usr/sbin/exim4" "$ROOT/usr/sbin/smtpd" | awk '/not found/ { print $1 }' | sort -u)
if [ -n "$missing" ]; then
  echo "install.sh: libraries missing for exim4/smtpd: $missing" >&2
  echo "install.sh: apt-get install them (they do not conflict with Postfix)" >&2
  exit 1
fi

for user in Debian-exim opensmtpd opensmtpq; do
  id "$user" >/dev/null 2>&1 || useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "$user"
done
mkdir -p /var/lib/opensmtpd/empty
chmod 755 /var/lib/opensmtpd /var/lib/opensmtpd/empty

# --- Haraka: npm, version pinned ---
command -v node >/dev/null && command -v npm >/dev/null || { echo "install.sh: needs node and npm (apt-get install nodejs npm)" >&2; exit 1; }
if [ ! -x "$PEERS_DIR/haraka/node_modules/.bin/haraka" ]; then
  (cd "$PEERS_DIR/haraka" && npm install --no-audit --no-fund --loglevel=error)
fi

echo "exim: $("$ROOT/usr/sbin/exim4" -C /dev/null -bV 2>/dev/null | sed -n 's/^Exim version \([^ ]*\).*/\1/p' | head -1)"
echo "opensmtpd: $(dpkg-deb -f "$DEBS"/opensmtpd_*.deb Version 2>/dev/null || echo unknown)"
echo "haraka: $(node -p 'require("'"$PEERS_DIR"'/haraka/node_modules/Haraka/package.json").version')"
