#!/usr/bin/env bash
# Set up, start what the tests need (Redis, PostgreSQL, the Docker engine and the local
# sandbox image), run the whole test suite. Under CI (CI=true) a missing service fails the
# run instead of skipping its tests.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
if [ "${CI:-}" = "true" ]; then
  export GRADER_REQUIRE_SERVICES=1
fi
scripts/services.sh redis postgres || echo "test: Redis or PostgreSQL could not be started" >&2
scripts/ensure_docker.sh || echo "test: no Docker engine; Docker tests will skip (or fail under CI)" >&2
# The slowest tests are listed at the end: where the run's time goes as the suite grows.
exec .venv/bin/python -m pytest -n "${PYTEST_WORKERS:-2}" --durations=30 "$@"
