#!/usr/bin/env bash
# Build STAC Browser (@radiantearth/stac-browser, pinned in package-lock.json) for the
# tessera-stac API, which serves it under /browser/ (api/browser.py).
#
#   browser/build.sh [OUT]     (default OUT: browser/dist)
#
# * built with pathPrefix=/browser/ and history-mode routing;
# * the catalog URL is NOT baked in: the runtime configuration script <pathPrefix>config.js is
#   enabled, and the API generates it per request with its own root URL, so one build works on
#   any host and port (a static fallback config.js in the build uses the page's origin);
# * cached: when OUT holds a build made from the same lock file and script, nothing runs.
# Exit codes: 0 built or up to date, 3 Node.js/npm missing, other: npm/build failure (see log).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
OUT="$(realpath -m "${1:-$HERE/dist}")"
PREFIX="${TESSERA_STAC_BROWSER_PREFIX:-/browser/}"

for tool in node npm; do
  if ! command -v "$tool" >/dev/null; then
    echo "error: $tool is missing: install Node.js >= 18 with npm (e.g. apt-get install nodejs npm)" >&2
    exit 3
  fi
done

# one build at a time (the demo and the tests may start it together)
exec 9>"$HERE/.build.lock"
flock 9

KEY="$(cat "$HERE/package-lock.json" "$HERE/build.sh" | sha256sum | cut -c1-16)-${PREFIX}"
if [ -f "$OUT/index.html" ] && [ "$(cat "$OUT/.build-key" 2>/dev/null)" = "$KEY" ]; then
  echo "STAC Browser: up to date in $OUT"
  exit 0
fi

cd "$HERE"
# npm ci only when node_modules does not match the lock file (it wipes node_modules).
if ! cmp -s package-lock.json node_modules/.tessera-lock 2>/dev/null; then
  echo "STAC Browser: installing npm packages (a few minutes the first time)..." >&2
  npm ci --no-audit --no-fund --loglevel=error
  cp package-lock.json node_modules/.tessera-lock
fi

# Build from a copy of the package so node_modules stays pristine; modules resolve upwards
# to browser/node_modules.
WORK="$HERE/.build"
SRC="$WORK/stac-browser"
rm -rf "$WORK"
mkdir -p "$WORK"
cp -r node_modules/@radiantearth/stac-browser "$SRC"
# its sources import some files by relative path (../../node_modules/ol/ol.css)
ln -s "$HERE/node_modules" "$SRC/node_modules"
# 1. enable the runtime config script (commented out upstream), relative to the path prefix
sed -i 's#<!-- <script defer="defer" src="/config.js"></script> -->#<script src="<%= BASE_URL %>config.js"></script>#' \
  "$SRC/public/index.html"
grep -q 'BASE_URL %>config.js' "$SRC/public/index.html" || {
  echo "error: could not enable config.js in STAC Browser's index.html (upstream changed?)" >&2
  exit 1
}
# 2. the fallback runtime config: this page's origin hosts the API
cat > "$SRC/public/config.js" <<'JS'
// Overridden by the tessera-stac API, which generates this file with its own root URL.
window.STAC_BROWSER_CONFIG = { catalogUrl: window.location.origin + "/" };
JS
# 3. lint plugins are not installed (not needed to build): drop them from the copy
node -e '
  const fs = require("fs"); const f = process.argv[1];
  const p = JSON.parse(fs.readFileSync(f, "utf8"));
  for (const k of Object.keys(p.devDependencies || {})) if (/eslint/.test(k)) delete p.devDependencies[k];
  fs.writeFileSync(f, JSON.stringify(p, null, 2));
' "$SRC/package.json"

echo "STAC Browser: building into $OUT (a few minutes on 2 cores)..." >&2
cd "$SRC"
rm -rf "$OUT.tmp"
LOG="$HERE/build.log"
if ! SB_pathPrefix="$PREFIX" SB_historyMode=history SB_noSourceMaps=true \
  SB_catalogTitle="TESSERA embeddings" \
  NODE_OPTIONS="${NODE_OPTIONS:---max-old-space-size=4096}" \
  "$HERE/node_modules/.bin/vue-cli-service" build --dest "$OUT.tmp" >"$LOG" 2>&1; then
  grep -v '^\s*at ' "$LOG" | tail -30 >&2
  echo "error: the STAC Browser build failed (full log: $LOG)" >&2
  exit 1
fi
test -f "$OUT.tmp/index.html"
echo "$KEY" > "$OUT.tmp/.build-key"
rm -rf "$OUT"
mv "$OUT.tmp" "$OUT"
rm -rf "$WORK"
echo "STAC Browser: built in $OUT"
