#!/usr/bin/env bash
# Benchmark bucketfs against the raw S3 server and the peer tools (s3fs,
# rclone mount, mountpoint-s3), all in the same run, and print one table.
# Run by hand as root; not part of the tests. See bench/README.md.
#
#   bench/run.sh [--runs N] [--tools bucketfs,s3fs,rclone,mountpoint-s3] [--quick]
#   bench/run.sh bill [--tools ...] [--strict] [--scale] [--only 1,6]
#   bench/run.sh scale [--tools bucketfs,bucketfs-trust,...] [--limit SECONDS] [--tag NAME]
#   bench/run.sh cache [--runs N]   (the disk cache: re-reads after a remount)
#
# Installs what it lacks (Debian fio, s3fs, rclone, and cmake/clang for
# mountpoint-s3's C libraries; Garage 2.5.0 with cargo install, ~12 min once
# per machine; mountpoint-s3 from ../shared/peers/mount-s3-wrapper, ~7 min
# once), then runs bench/bench.py inside a private network namespace whose
# loopback route has `quickack 1`: without it Garage, which leaves Nagle on,
# stalls ~40 ms on every small response, and every tool looks slow.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

if [ "$(id -u)" -ne 0 ]; then
  echo "bench/run.sh needs root (network namespace, drop_caches, mounts)" >&2
  exit 1
fi

scripts/bootstrap
need=()
for pkg in fio s3fs rclone cmake clang libclang-dev iproute2; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "bench: installing ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

export PATH="$HOME/.cargo/bin:$PATH"
if ! garage --version 2>/dev/null | grep -q "2\.5\.0"; then
  echo "bench: building Garage 2.5.0 (about 12 minutes, once)"
  cargo install garage@2.5.0 --locked --no-default-features --features bundled-libs,lmdb
fi

tools_dir="$repo/target/bench-tools"
mkdir -p "$tools_dir"
wrapper="$repo/../shared/peers/mount-s3-wrapper"
if [ ! -x "$tools_dir/mount-s3" ] && [ -d "$wrapper" ]; then
  echo "bench: building mountpoint-s3 from $wrapper (about 7 minutes, once)"
  rm -rf "$tools_dir/mount-s3-wrapper"
  cp -r "$wrapper" "$tools_dir/mount-s3-wrapper"
  (cd "$tools_dir/mount-s3-wrapper" && cargo build --release --locked)
  cp "$tools_dir/mount-s3-wrapper/target/release/mount-s3" "$tools_dir/mount-s3"
fi

cargo build --release --locked
export BUCKETFS_BIN="$repo/target/release/bucketfs"
export MOUNT_S3_BIN="$tools_dir/mount-s3"

ns="bucketfs-bench-$$"
ip netns add "$ns"
trap 'ip netns delete "$ns" 2>/dev/null || true' EXIT
ip netns exec "$ns" ip link set lo up
# Both local routes: 127.0.0.1 has a /32 route of its own, which wins.
ip netns exec "$ns" ip route change local 127.0.0.0/8 dev lo table local \
  proto kernel scope host src 127.0.0.1 quickack 1
ip netns exec "$ns" ip route change local 127.0.0.1 dev lo table local \
  proto kernel scope host src 127.0.0.1 quickack 1
# Everything from here on (server, mounts, curl) lives in the namespace;
# `ip netns exec` also gives it a mount namespace of its own, so the
# benchmark's mounts are invisible outside and vanish with it.
# `bench/run.sh bill ...` runs the request-bill benchmark instead,
# `bench/run.sh scale ...` the million-object one, and `bench/run.sh
# cache ...` the disk cache's.
script=bench.py
case "${1:-}" in
  bill) script=bill.py; shift ;;
  scale) script=scale.py; shift ;;
  cache) script=cache.py; shift ;;
esac
ip netns exec "$ns" "$repo/.venv/bin/python" "$repo/bench/$script" "$@"
