#!/usr/bin/env bash
# Builds the release binary and installs ckptfs for systemd:
#   PREFIX/bin/ckptfs                  (PREFIX defaults to /usr/local)
#   /etc/systemd/system/ckptfs@.service
#   /etc/ckptfs/example.toml           (kept if it exists)
# then prints how to enable a mount. Options:
#   --prefix DIR     install the binary under DIR/bin (the unit points there)
#   --binary FILE    install FILE instead of building (e.g. a binary built
#                    elsewhere; the tests use this)
# DESTDIR=/some/root stages everything under that root and touches nothing
# else (no daemon-reload).
set -euo pipefail
cd "$(dirname "$0")/.."

prefix=/usr/local
binary=
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) prefix=${2:?--prefix needs a directory}; shift 2 ;;
    --prefix=*) prefix=${1#--prefix=}; shift ;;
    --binary) binary=${2:?--binary needs a file}; shift 2 ;;
    --binary=*) binary=${1#--binary=}; shift ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
  esac
done
case "$prefix" in
  *'#'*|*'&'*|*'\'*) echo "install.sh: --prefix must not contain #, & or \\" >&2; exit 2 ;;
  /*) ;;
  *) echo "install.sh: --prefix must be an absolute path" >&2; exit 2 ;;
esac
prefix=${prefix%/}
destdir=${DESTDIR:-}
destdir=${destdir%/}

if [ -z "$binary" ]; then
  cargo build --release
  binary=target/release/ckptfs
fi
[ -x "$binary" ] || { echo "install.sh: $binary is not an executable" >&2; exit 1; }

bin="$prefix/bin/ckptfs"
install -d -m 0755 "$destdir$prefix/bin" "$destdir/etc/systemd/system" "$destdir/etc/ckptfs"
install -m 0755 "$binary" "$destdir$bin.new"
mv -f "$destdir$bin.new" "$destdir$bin"   # atomic: a running daemon keeps its copy
sed "s#/usr/local/bin/ckptfs#$bin#g" systemd/ckptfs@.service >"$destdir/etc/systemd/system/ckptfs@.service.new"
chmod 0644 "$destdir/etc/systemd/system/ckptfs@.service.new"
mv -f "$destdir/etc/systemd/system/ckptfs@.service.new" "$destdir/etc/systemd/system/ckptfs@.service"
if [ -e "$destdir/etc/ckptfs/example.toml" ] && ! cmp -s systemd/ckptfs.example.toml "$destdir/etc/ckptfs/example.toml"; then
  echo "keeping $destdir/etc/ckptfs/example.toml (it was changed); the new one is example.toml.new"
  install -m 0644 systemd/ckptfs.example.toml "$destdir/etc/ckptfs/example.toml.new"
else
  install -m 0644 systemd/ckptfs.example.toml "$destdir/etc/ckptfs/example.toml"
fi
echo "installed $destdir$bin"
echo "installed $destdir/etc/systemd/system/ckptfs@.service"
echo "installed $destdir/etc/ckptfs/example.toml"

if [ -z "$destdir" ] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then
  systemctl daemon-reload
fi
cat <<MSG

To serve a store on /srv/runs:
  mkdir -p /srv/runs
  cp /etc/ckptfs/example.toml /etc/ckptfs/\$(systemd-escape --path /srv/runs).toml
  \$EDITOR /etc/ckptfs/\$(systemd-escape --path /srv/runs).toml    # set store = "..."
  systemctl enable --now ckptfs@\$(systemd-escape --path /srv/runs)
  systemctl status ckptfs@\$(systemd-escape --path /srv/runs)      # READY, logical/stored bytes
MSG
