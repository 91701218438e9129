#!/usr/bin/env bash
# Make sure Node.js (>= 18) and npm are installed to build STAC Browser: apt-get when missing
# and we may (root, or passwordless sudo).
set -euo pipefail
if command -v node >/dev/null && command -v npm >/dev/null; then
  major="$(node -p 'process.versions.node.split(".")[0]')"
  [ "$major" -ge 18 ] && exit 0
  echo "error: Node.js $(node --version) is too old to build STAC Browser: install Node.js >= 18" >&2
  exit 3
fi
need=(nodejs npm)
echo "installing system packages: ${need[*]}" >&2
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if sudo -n true 2>/dev/null; then SUDO="sudo -n"; else
    echo "error: missing Node.js/npm: run \`sudo apt-get install ${need[*]}\`" >&2; exit 3
  fi
fi
if ! command -v apt-get >/dev/null; then
  echo "error: missing Node.js/npm and no apt-get here: install Node.js >= 18 with npm" >&2
  exit 3
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get -o DPkg::Lock::Timeout=600 update -qq
$SUDO apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${need[@]}" >/dev/null
