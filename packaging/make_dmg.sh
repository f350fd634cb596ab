#!/usr/bin/env bash
# Packs a built .app into a compressed disk image with an /Applications link, so the
# user drags the app across. macOS only (hdiutil).
#   bash packaging/make_dmg.sh "dist/MLX LoRA Studio.app" dist/MLX-LoRA-Studio-0.1.0-arm64.dmg
# Sign the .app *before* this (the image only carries it); sign and notarise the .dmg
# after it: packaging/README.md has the commands.
set -euo pipefail
APP=$1
DMG=$2
[ -d "$APP" ] || { echo "error: $APP not found: build it first (make package)" >&2; exit 1; }
STAGE=$(mktemp -d)
trap 'rm -rf "$STAGE"' EXIT
cp -R "$APP" "$STAGE/"
ln -s /Applications "$STAGE/Applications"
rm -f "$DMG"
# UDZO: zlib-compressed, read-only; HFS+ keeps the image readable on every macOS ≥ 14.
hdiutil create -volname "MLX LoRA Studio" -srcfolder "$STAGE" -fs HFS+ -format UDZO -ov "$DMG"
echo "$DMG: $(du -h "$DMG" | cut -f1)"
