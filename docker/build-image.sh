#!/usr/bin/env bash
# Builds the image sc_backup:<major> (default 17) with podman or docker, whichever is installed.
# The Rust parts are built here on the host (no rust image is needed), then staged with the
# Dockerfile as the build context:
#   target/docker/<major>/rootfs/   the extension and archive module (cargo pgrx package),
#                                   sc-backup, and for 16-18 the server tree itself
# The base image is debian:bookworm-slim; where no registry is reachable, BASE_IMAGE=local
# makes one with debootstrap (kept, and remade only when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
major=${1:-17}
pg_config=$(bash scripts/pg-config-for.sh "$major")
if command -v podman >/dev/null; then
  # runc: podman's default crun fails on this machine kind's cgroups (hybrid mode).
  engine=(podman --runtime runc)
  build_flags=(--ulimit nofile=1024:1024 --ulimit nproc=4096:4096)
elif command -v docker >/dev/null; then
  engine=(docker)
  build_flags=()
else
  echo "build-image: neither podman nor docker is installed" >&2
  exit 1
fi

base=${BASE_IMAGE:-debian:bookworm-slim}
if [ "$base" = local ]; then
  base=localhost/sc_backup-base:bookworm
  if ! "${engine[@]}" image exists "$base" 2>/dev/null; then
    echo "build-image: making $base with debootstrap (no registry needed)"
    rootfs=$(mktemp -d)
    trap 'rm -rf "$rootfs"' EXIT
    debootstrap --variant=minbase bookworm "$rootfs" http://deb.debian.org/debian >/dev/null
    tar -C "$rootfs" -c . | "${engine[@]}" import - "$base" >/dev/null
    rm -rf "$rootfs"
    trap - EXIT
  fi
fi

SC_BACKUP_PG_MAJORS=$major bash scripts/install-deps.sh
context=target/docker/$major
rm -rf "$context"
mkdir -p "$context/rootfs/usr/local/bin"
echo "build-image: building sc_backup for PostgreSQL $major (release)"
(cd extension && cargo pgrx package --pg-config "$pg_config" --out-dir "../$context/package" >/dev/null)
cargo build --quiet --release -p sc-backup-cli --bin sc-backup
if [ "$major" != 15 ]; then
  # The relocatable server, at the same path as here (its RUNPATHs point into it).
  mkdir -p "$context/rootfs/opt/sc_backup/postgresql"
  cp -a "/opt/sc_backup/postgresql/$major" "$context/rootfs/opt/sc_backup/postgresql/"
fi
cp -a "$context/package/." "$context/rootfs/"
rm -rf "$context/package"
install -m 0755 target/release/sc-backup "$context/rootfs/usr/local/bin/sc-backup"
cp docker/Dockerfile docker/entrypoint.sh docker/healthcheck.sh "$context/"
"${engine[@]}" build "${build_flags[@]}" --build-arg PG_MAJOR="$major" --build-arg BASE_IMAGE="$base" \
  -t "sc_backup:$major" "$context"
echo "build-image: sc_backup:$major is ready"
