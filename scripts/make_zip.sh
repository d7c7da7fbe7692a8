#!/usr/bin/env bash
# Plugin zip for the QGIS plugin repository: committed runtime files only, the training code
# included (users train on their own labels); no tests or build output. Under the folder name
# QGIS installs it as.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p dist
version=$(sed -n 's/^version=//p' metadata.txt)
out="dist/urban_functions-$version.zip"
git archive --format=zip --prefix=urban_functions/ -o "$out" HEAD \
    metadata.txt __init__.py LICENSE README.md plugin/__init__.py plugin/qgis_plugin.py \
    plugin/core plugin/samplecity plugin/gui plugin/qgis_common plugin/processing_provider plugin/validation plugin/lcz plugin/learning \
    models resources
echo "$out ($(du -h "$out" | cut -f1))"
