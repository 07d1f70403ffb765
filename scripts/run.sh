#!/usr/bin/env bash
# The main job: set up, then grade every bundled example answer of every task and print
# the table of scores. Uses the Docker sandbox when an engine answers, else the process
# backend (with a warning).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
scripts/ensure_docker.sh || echo "run: no Docker engine; grading with the process backend" >&2
exec .venv/bin/gradectl examples "$@"
