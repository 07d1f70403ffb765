#!/usr/bin/env bash
# The main job: set up, then run the grading service — a worker in the background and the
# REST API in the foreground (Ctrl-C stops both). Embedded defaults: a SQLite file in var/,
# Redis from GRADER_REDIS_URL (a local redis-server is started when none answers), the
# Docker sandbox when an engine answers, else the process backend with a warning.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
if [ -z "${GRADER_REDIS_URL:-}" ]; then
  scripts/services.sh redis || echo "run: no Redis answers on 127.0.0.1:6379; set GRADER_REDIS_URL" >&2
fi
scripts/ensure_docker.sh || echo "run: no Docker engine; grading with the process backend (weaker isolation)" >&2
.venv/bin/gradectl worker --beat --concurrency "${GRADER_WORKER_CONCURRENCY:-1}" >var/worker.log 2>&1 &
worker=$!
trap 'kill $worker 2>/dev/null; wait $worker 2>/dev/null' EXIT INT TERM
echo "run: worker started (log: var/worker.log); API on http://${GRADER_API_HOST:-127.0.0.1}:${GRADER_API_PORT:-8000} (docs at /docs)" >&2
.venv/bin/gradectl serve "$@"
