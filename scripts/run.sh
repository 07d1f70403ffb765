#!/usr/bin/env bash
# The main job: set up, then run the grading service — a worker in the background, restarted
# whenever it exits, and the REST API in the foreground (Ctrl-C stops both). The worker runs
# one grading process per core (GRADER_WORKER_CONCURRENCY to choose) and the reaper.
# Embedded defaults: a SQLite file in var/, Redis from GRADER_REDIS_URL (a local
# redis-server is started when none answers), the Docker sandbox when an engine answers,
# else the process backend with a warning.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
if [ -z "${GRADER_REDIS_URL:-}" ]; then
  scripts/services.sh redis || echo "run: no Redis answers on 127.0.0.1:6379; set GRADER_REDIS_URL" >&2
fi
scripts/ensure_docker.sh || echo "run: no Docker engine; grading with the process backend (weaker isolation)" >&2
supervise_worker() {  # as systemd's Restart=always would: the worker's main process runs the reaper
  local child=
  trap 'kill "$child" 2>/dev/null; wait "$child" 2>/dev/null; exit 0' INT TERM
  while true; do
    .venv/bin/gradectl worker ${GRADER_WORKER_CONCURRENCY:+--concurrency "$GRADER_WORKER_CONCURRENCY"} &
    child=$!
    wait "$child" && status=0 || status=$?
    echo "run: the worker exited with $status; starting it again" >&2
    sleep 2
  done
}
mkdir -p var
supervise_worker >var/worker.log 2>&1 &
worker=$!
trap 'kill $worker 2>/dev/null; wait $worker 2>/dev/null' EXIT INT TERM
echo "run: worker started (log: var/worker.log); API on http://${GRADER_API_HOST:-127.0.0.1}:${GRADER_API_PORT:-8000} (docs at /docs)" >&2
if [ -z "${GRADER_DATABASE_URL:-}" ]; then  # the embedded default: a learner's way into the pages
  echo "run: a learner's one-time link to the demo course: $(.venv/bin/gradectl link --course demo --student demo-learner 2>/dev/null)" >&2
fi
.venv/bin/gradectl serve "$@"
