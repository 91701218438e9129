#!/usr/bin/env bash
# Install the project (editable) and its dev extras into the venv given as $1.
# uv first (fast: parallel downloads, no per-index resolver round trips), pip as the fallback.
set -euo pipefail
venv="${1:-.venv}"
py="$venv/bin/python"
links=()
for d in ${PIP_FIND_LINKS:-} /opt/wheels; do
  [ -d "$d" ] && links+=(--find-links "$d")
done
if [ "${TESSERA_STAC_NO_UV:-}" != "1" ] \
  && { [ -x "$venv/bin/uv" ] || "$py" -m pip install --quiet --disable-pip-version-check uv >/dev/null 2>&1; } \
  && "$venv/bin/uv" pip install --quiet --python "$py" "${links[@]}" -e '.[dev]'; then
  exit 0
fi
echo "install-python-deps: uv unavailable or failed; installing with pip (slower)" >&2
"$py" -m pip install --quiet --disable-pip-version-check -e '.[dev]'
