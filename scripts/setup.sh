#!/usr/bin/env bash
# One-time set-up on Debian 12: system packages, the venv, and a hermetic QGIS profile with the
# plugin linked in. Idempotent: every step checks first and does only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PROFILE=${URBAN_FUNCTIONS_PROFILE:-$ROOT/.profile}
APT_PACKAGES="qgis python3-qgis qgis-providers gdal-bin python3-gdal python3-venv xvfb python3-h5py"

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }

missing=""
for p in $APT_PACKAGES; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    say "Installing system packages:$missing"
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q $missing
fi

# The venv sits on Debian's Python, the one QGIS embeds, so its packages load inside QGIS too.
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c "import osgeo.gdal" 2>/dev/null; then
    say "Creating .venv on /usr/bin/python3 (with system site packages for QGIS and GDAL)"
    rm -rf .venv
    /usr/bin/python3 -m venv --system-site-packages .venv
fi
REQ=${URBAN_FUNCTIONS_REQUIREMENTS:-requirements-dev.txt}
stamp=.venv/.installed-$(cat constraints.txt requirements.txt "$REQ" | sha256sum | cut -c1-16)
if [ ! -e "$stamp" ]; then
    say "Installing Python packages from $REQ into .venv"
    .venv/bin/python -m pip install -q --disable-pip-version-check -c constraints.txt -r "$REQ"
    touch "$stamp"
fi

# Hermetic QGIS profile for qgis_process and tests: the plugin is linked, not copied.
PLUGINS="$PROFILE/profiles/default/python/plugins"
mkdir -p "$PLUGINS"
if [ "$(readlink -f "$PLUGINS/urban_functions" 2>/dev/null)" != "$ROOT" ]; then
    rm -rf "$PLUGINS/urban_functions"
    ln -s "$ROOT" "$PLUGINS/urban_functions"
fi
if ! grep -qs "urban_functions=true" "$PROFILE/profiles/default/QGIS/QGIS3.ini"; then
    say "Enabling the plugin in the profile $PROFILE"
    QT_QPA_PLATFORM=offscreen QGIS_CUSTOM_CONFIG_PATH="$PROFILE" \
        qgis_process.bin plugins enable urban_functions >/dev/null
fi
say "Set-up complete"
