#!/bin/bash
# batchlaunch start task (rendered by `batchlaunch render`; do not edit by hand).
# Installs the runtime once into $AZ_BATCH_NODE_SHARED_DIR/batchlaunch, records a marker
# keyed by the spec's sha256 (a rerun after a reboot returns at once; a changed spec
# reinstalls) and writes env.sh, which every task sources before its command.
set -euo pipefail
umask 022

BL_SPEC_HASH=27fb251b42b9027ba107f675e872c7e1
BL_LANGUAGE=python
BL_POOL_KIND=marketplace
BL_ROOT="${AZ_BATCH_NODE_SHARED_DIR:?AZ_BATCH_NODE_SHARED_DIR is not set: run this as a Batch start task}/batchlaunch"
BL_ENV_FILE="$BL_ROOT/env.sh"
BL_MARKER="$BL_ROOT/installed.sha256"
BL_TRIES="${BATCHLAUNCH_DOWNLOAD_TRIES:-5}"
BL_DELAY="${BATCHLAUNCH_DOWNLOAD_DELAY:-2}"
BL_STEP="start"
BL_TMP=""

log() { printf '%s batchlaunch: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*"; }

if [ -f "$BL_MARKER" ] && [ -f "$BL_ENV_FILE" ]; then
  BL_HAVE=""
  IFS= read -r BL_HAVE < "$BL_MARKER" || true
  if [ "$BL_HAVE" = "$BL_SPEC_HASH" ]; then
    log "runtime $BL_LANGUAGE already installed (spec $BL_SPEC_HASH): nothing to do"
    exit 0
  fi
  log "runtime spec changed ($BL_HAVE -> $BL_SPEC_HASH): reinstalling"
fi

mkdir -p "$BL_ROOT"
rm -f "$BL_MARKER"
BL_TMP="$(mktemp -d "$BL_ROOT/tmp.XXXXXX")"
export BATCHLAUNCH_DETAIL_FILE="$BL_TMP/detail"

# On failure: one line naming the step and what it was working on (Batch shows it as the
# start task's failure in stderr.txt).
on_exit() {
  local rc=$?
  if [ "$rc" -ne 0 ]; then
    local what="exit $rc"
    if [ -s "$BATCHLAUNCH_DETAIL_FILE" ]; then
      what="$(head -n 1 "$BATCHLAUNCH_DETAIL_FILE"); exit $rc"
    fi
    printf "batchlaunch: step '%s' failed (%s)\n" "$BL_STEP" "$what" >&2
  fi
  if [ -n "$BL_TMP" ]; then rm -rf "$BL_TMP"; fi
}
trap on_exit EXIT

# step NAME: start a named step (its name is printed if anything in it fails).
step() { BL_STEP="$1"; : > "$BATCHLAUNCH_DETAIL_FILE"; log "step: $1"; }
# detail TEXT: what the current step is working on, named in the failure line.
detail() { printf '%s\n' "$1" > "$BATCHLAUNCH_DETAIL_FILE"; }
# fail TEXT: stop the current step with TEXT as the reason.
fail() { detail "$1"; exit 1; }

fetch_once() {
  if command -v curl > /dev/null 2>&1; then
    curl -fsSL --connect-timeout 30 -o "$2" "$1"
  elif command -v wget > /dev/null 2>&1; then
    wget -q -T 30 -O "$2" "$1"
  else
    python3 -c 'import sys, urllib.request; urllib.request.urlretrieve(sys.argv[1], sys.argv[2])' "$1" "$2"
  fi
}

# download URL DEST: retries with exponential back-off.
download() {
  local url="$1" dest="$2" attempt=1 delay="$BL_DELAY"
  while ! fetch_once "$url" "$dest.part"; do
    if [ "$attempt" -ge "$BL_TRIES" ]; then
      fail "download failed after $attempt attempts: $url"
    fi
    log "download failed (attempt $attempt of $BL_TRIES), retrying in ${delay}s: $url"
    sleep "$delay"
    attempt=$((attempt + 1))
    delay=$((delay * 2))
  done
  mv -f "$dest.part" "$dest"
}

sha256_of() {
  if command -v sha256sum > /dev/null 2>&1; then
    sha256sum "$1" | cut -d ' ' -f 1
  else
    python3 -c 'import hashlib, sys; print(hashlib.sha256(open(sys.argv[1], "rb").read()).hexdigest())' "$1"
  fi
}

# verify_sha256 FILE EXPECTED WHAT
verify_sha256() {
  local got
  got="$(sha256_of "$1")"
  if [ "$got" != "$2" ]; then
    fail "checksum mismatch for $3: expected sha256 $2, got $got"
  fi
  log "sha256 ok: $3"
}

# as_root CMD...: the start task normally runs elevated; otherwise sudo without a password.
as_root() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  elif command -v sudo > /dev/null 2>&1 && sudo -n true 2> /dev/null; then
    sudo -n "$@"
  else
    fail "needs root for: $*; run the start task elevated (admin auto-user)"
  fi
}

# The environment file tasks source: values are written with printf %q.
env_set() { printf 'export %s=%q\n' "$1" "$2" >> "$BL_TMP/env.sh"; }
env_path() {
  # shellcheck disable=SC2016 # $PATH is expanded when the task sources the file
  printf 'export PATH=%q:"$PATH"\n' "$1" >> "$BL_TMP/env.sh"
}

log "start task: runtime $BL_LANGUAGE on a $BL_POOL_KIND pool (spec $BL_SPEC_HASH)"
printf '# written by the batchlaunch start task (spec %s); sourced by every task\n' "$BL_SPEC_HASH" > "$BL_TMP/env.sh"
env_set BATCHLAUNCH_RUNTIME "$BL_LANGUAGE"
env_set BATCHLAUNCH_ROOT "$BL_ROOT"

step 'pre_install hook 1'
detail 'command: echo '"'"'before install'"'"''
echo 'before install'

# ---- python ----------------------------------------------------------------------------
BL_PY_WANT="python3"
BL_PY_VENV="$BL_ROOT/python"

step "create python environment"
BL_PY="$(command -v "$BL_PY_WANT")" || fail "$BL_PY_WANT not found on the image: use installer = \"uv\" to install Python $BL_PY_WANT"
rm -rf "$BL_PY_VENV"
"$BL_PY" -m venv "$BL_PY_VENV" || fail "$BL_PY -m venv failed: the image lacks the venv module (Debian/Ubuntu: python3-venv); add a pre_install hook [\"apt-get\", \"install\", \"-y\", \"python3-venv\"] or use installer = \"uv\""
export PIP_CACHE_DIR="$BL_ROOT/cache/pip"
# Trust the node's CA store, as curl does (pip defaults to its bundled certifi roots).
for BL_CA in /etc/ssl/certs/ca-certificates.crt /etc/pki/tls/certs/ca-bundle.crt; do
  if [ -z "${PIP_CERT:-}" ] && [ -f "$BL_CA" ]; then export PIP_CERT="$BL_CA"; fi
done
pip_install() {
  "$BL_PY_VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$@"
}

step "install python packages"
BL_PKGS=(six)
BL_PIP_ARGS=("${BL_PKGS[@]}")
if [ "${#BL_PIP_ARGS[@]}" -gt 0 ] && ! pip_install "${BL_PIP_ARGS[@]}"; then
  # Name the first package that fails on its own, so the failure line says which one.
  for BL_P in "${BL_PKGS[@]}"; do
    pip_install "$BL_P" > /dev/null 2>&1 || fail "package: $BL_P"
  done
  fail "packages: ${BL_PIP_ARGS[*]}"
fi
env_set VIRTUAL_ENV "$BL_PY_VENV"
env_path "$BL_PY_VENV/bin"
env_set BATCHLAUNCH_PYTHON "$BL_PY_VENV/bin/python"

step 'post_install hook 1'
detail 'command: touch done.txt'
touch done.txt

step "write environment file"
mv -f "$BL_TMP/env.sh" "$BL_ENV_FILE"
printf '%s\n' "$BL_SPEC_HASH" > "$BL_MARKER"
log "runtime $BL_LANGUAGE ready; tasks source $BL_ENV_FILE"
