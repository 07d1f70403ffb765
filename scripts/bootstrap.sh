#!/usr/bin/env bash
# Set up everything the project needs on a fresh Debian machine with Python 3.11:
# system packages, the virtual environment (torch from pip, as pinned), the stand-in
# checkpoints. Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
"$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' || {
  echo "bootstrap: Python 3.11 is required ($PYTHON is $("$PYTHON" --version 2>&1))" >&2
  exit 1
}

apt_install() {
  [ "$(id -u)" = 0 ] || { echo "bootstrap: not root, skipping apt-get install $*" >&2; return 0; }
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null 2>&1 || {
    apt-get update -qq >/dev/null 2>&1
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
  }
}
command -v bwrap >/dev/null || apt_install bubblewrap
[ -x /usr/bin/chromium ] || apt_install chromium  # the browser tests drive Debian's Chromium

stamp=".venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  [ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
  # torch and torchvision come from pip (the pinned releases; pip finds local files first).
  .venv/bin/pip install -q --disable-pip-version-check torch==2.14.1 torchvision==0.29.1 2>&1 | grep -v "is ignored" || true
  .venv/bin/pip install -q --disable-pip-version-check -e '.[dev]' --config-settings editable_mode=compat 2>&1 | grep -v "is ignored" || true
  .venv/bin/python -c 'import torch, torchvision, fastapi, celery, docker, safetensors' 
  rm -f .venv/.installed-*
  touch "$stamp"
fi
.venv/bin/python -m sandbox.checkpoints "${GRADER_DATA_DIR:-var}/torch_home" >/dev/null
