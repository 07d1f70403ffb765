#!/usr/bin/env bash
# Make a Docker engine answer and the registry-free sandbox image exist. Safe to run again.
#
# Installs docker.io when missing, starts dockerd without a bridge or iptables rules
# (sandboxes use --network none, and nothing may reach private-range addresses), waits
# for it, writes the stand-in checkpoints and builds ml-grader-sandbox:local (or
# $GRADER_DOCKER_IMAGE) by `docker import`, since no registry is reachable.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
LOG=${DOCKERD_LOG:-/var/log/dockerd.log}

if ! command -v dockerd >/dev/null || ! command -v docker >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >/dev/null
fi

if ! docker info >/dev/null 2>&1; then
    setsid dockerd --bridge=none --iptables=false >"$LOG" 2>&1 < /dev/null &
    for _ in $(seq 60); do
        docker info >/dev/null 2>&1 && break
        sleep 1
    done
    if ! docker info >/dev/null 2>&1; then
        echo "dockerd did not answer within 60 s; the end of $LOG:" >&2
        tail -n 20 "$LOG" >&2
        exit 1
    fi
fi

"$PYTHON" -c 'from core.settings import get_settings; from sandbox.checkpoints import ensure_checkpoints; ensure_checkpoints(get_settings().torch_home)'
"$PYTHON" -m sandbox.local_image
