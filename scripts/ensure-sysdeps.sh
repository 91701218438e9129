#!/usr/bin/env bash
# Make sure the PostgreSQL server binaries and PostGIS are installed; install them with
# apt-get when missing and we are allowed to (root, or passwordless sudo).
set -euo pipefail
PGVER="${TESSERA_STAC_PG_VERSION:-15}"
need=()
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=("postgresql-${PGVER}")
have_postgis=no
for d in /usr/share/postgresql/*/extension; do
  [ -f "$d/postgis.control" ] && have_postgis=yes
done
[ "$have_postgis" = yes ] || need+=("postgresql-${PGVER}-postgis-3")
[ ${#need[@]} -eq 0 ] && exit 0
echo "installing system packages: ${need[*]}" >&2
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if sudo -n true 2>/dev/null; then SUDO="sudo -n"; else
    echo "error: missing ${need[*]}: run \`sudo apt-get install ${need[*]}\`" >&2; exit 3
  fi
fi
if ! command -v apt-get >/dev/null; then
  echo "error: missing ${need[*]} and no apt-get here: install PostgreSQL ${PGVER} with PostGIS 3" >&2
  exit 3
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
