#!/usr/bin/env bash
# Make sure Debian's headless-capable Chromium is installed for the browser test (apt-get when
# missing and we may). Never downloads a browser build of its own: Playwright only drives it.
set -euo pipefail
CHROMIUM="${TESSERA_STAC_CHROMIUM:-/usr/bin/chromium}"
[ -x "$CHROMIUM" ] && exit 0
need=(chromium fonts-dejavu-core)
echo "installing system packages: ${need[*]}" >&2
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if sudo -n true 2>/dev/null; then SUDO="sudo -n"; else
    echo "error: missing chromium: run \`sudo apt-get install ${need[*]}\`" >&2; exit 3
  fi
fi
if ! command -v apt-get >/dev/null; then
  echo "error: missing chromium and no apt-get here: install Chromium and set TESSERA_STAC_CHROMIUM" >&2
  exit 3
fi
export DEBIAN_FRONTEND=noninteractive
# other jobs may hold the dpkg lock for a while: wait for it instead of failing
$SUDO apt-get -o DPkg::Lock::Timeout=600 update -qq
$SUDO apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${need[@]}" >/dev/null
