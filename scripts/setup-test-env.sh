#!/usr/bin/env bash
# Installs everything the test suite needs from the project's own files:
#   - a virtual environment .venv with batchlaunch and its [test] extras (pip/uv, PyPI)
#   - Azurite under tools/azurite/node_modules (npm)
#   - OpenSSH server, R with jsonlite, tmux, npm (apt, when root and missing)
# Idempotent: a second run checks and returns quickly.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[setup %s] %s\n' "$(date +%H:%M:%S)" "$*"; }

if [ ! -x .venv/bin/python ]; then
    log "creating .venv"
    python3 -m venv .venv
fi
if [ ! -x .venv/bin/uv ]; then
    .venv/bin/pip install -q --upgrade pip uv
fi
log "installing batchlaunch[test] into .venv"
.venv/bin/uv pip install -q --python .venv/bin/python -e '.[test]'

need_apt=()
command -v sshd >/dev/null 2>&1 || [ -x /usr/sbin/sshd ] || need_apt+=(openssh-server)
command -v ssh-keygen >/dev/null 2>&1 || need_apt+=(openssh-client)
command -v Rscript >/dev/null 2>&1 || need_apt+=(r-base-core)
[ -d /usr/lib/R/site-library/jsonlite ] || [ -d /usr/lib/R/library/jsonlite ] || need_apt+=(r-cran-jsonlite)
command -v tmux >/dev/null 2>&1 || need_apt+=(tmux)
command -v npm >/dev/null 2>&1 || need_apt+=(npm)  # for Azurite (pulls in nodejs)
if [ "${#need_apt[@]}" -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then
        log "apt-get install ${need_apt[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
    else
        log "not root: cannot install ${need_apt[*]}; the tiers that need them will fail"
    fi
fi

if [ ! -x tools/azurite/node_modules/.bin/azurite-blob ]; then
    log "npm install azurite"
    (cd tools/azurite && npm install --no-audit --no-fund --loglevel=error >/dev/null)
fi
log "ready"
