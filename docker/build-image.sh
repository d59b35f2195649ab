#!/usr/bin/env bash
# Builds the image sc_backup:<major> (default 17) with podman or docker, whichever is installed.
# The Rust parts are built here on the host (no rust image is needed), then staged with the
# Dockerfile as the build context:
#   target/docker/<major>/rootfs/   the extension and archive module (cargo pgrx package),
#                                   sc-backup, and for 16-18 the server tree itself
# The base image is debian:bookworm-slim; where no registry is reachable, BASE_IMAGE=local
# makes one with debootstrap (kept, and remade only when missing). SC_BACKUP_BUILD=debug
# packages the debug build the tests already made (minutes faster; not for production).
# The image is labelled with the SHA-256 of the sc-backup it holds, which the tests compare
# with the binary they run, so they never test a stale image.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
major=${1:-17}
case "${SC_BACKUP_BUILD:-release}" in
  release) pgrx_profile=() cargo_profile=(--release) built=target/release ;;
  debug) pgrx_profile=(--debug) cargo_profile=() built=target/debug ;;
  *)
    echo "build-image: SC_BACKUP_BUILD is release (default) or debug" >&2
    exit 1
    ;;
esac
pg_config=$(bash scripts/pg-config-for.sh "$major")
if command -v podman >/dev/null; then
  # runc: podman's default crun fails on this machine kind's cgroups (hybrid mode).
  engine=(podman --runtime runc)
  # docker format: OCI images drop HEALTHCHECK.
  build_flags=(--format docker --ulimit nofile=1024:1024 --ulimit nproc=4096:4096)
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
echo "build-image: building sc_backup for PostgreSQL $major (${SC_BACKUP_BUILD:-release})"
(cd extension && cargo pgrx package --pg-config "$pg_config" "${pgrx_profile[@]}" --out-dir "../$context/package" >/dev/null)
cargo build --quiet "${cargo_profile[@]}" -p sc-backup-cli --bin sc-backup
if [ "$major" != 15 ]; then
  # The relocatable server, at the same path as here (its RUNPATHs point into it).
  mkdir -p "$context/rootfs/opt/sc_backup/postgresql"
  cp -a "/opt/sc_backup/postgresql/$major" "$context/rootfs/opt/sc_backup/postgresql/"
fi
cp -a "$context/package/." "$context/rootfs/"
rm -rf "$context/package"
install -m 0755 "$built/sc-backup" "$context/rootfs/usr/local/bin/sc-backup"
cp docker/Dockerfile docker/entrypoint.sh docker/healthcheck.sh "$context/"
"${engine[@]}" build "${build_flags[@]}" --build-arg PG_MAJOR="$major" --build-arg BASE_IMAGE="$base" \
  --label "sc_backup.cli_sha256=$(sha256sum "$built/sc-backup" | cut -d' ' -f1)" \
  -t "sc_backup:$major" "$context"
echo "build-image: sc_backup:$major is ready"
