#!/usr/bin/env bash
# Builds the desktop app with PyInstaller (`make package` runs this):
#   Linux: dist/MLX-LoRA-Studio/          a onedir bundle (+ the `mlx-lora` CLI link)
#   macOS: dist/MLX LoRA Studio.app and dist/MLX-LoRA-Studio-<version>-arm64.dmg
# Signing and notarising the macOS app are separate steps: packaging/README.md.
# PYTHON (default .venv/bin/python) must have the project and PyInstaller installed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
NAME=MLX-LoRA-Studio
VERSION=$("$PY" -c 'import sys; sys.path.insert(0, "packaging"); import bundle_config; print(bundle_config.version())')

start=$(date +%s)
# --clean: no stale modules from an older build's cache
"$PY" -m PyInstaller packaging/mlx_lora_studio.spec --noconfirm --clean --log-level WARN \
  --distpath dist --workpath build/pyinstaller

case "$(uname -s)" in
  Linux)
    # The same executable is the CLI when called as `mlx-lora` (packaging/entry.py).
    ln -sfn "$NAME" "dist/$NAME/mlx-lora"
    # For a desktop entry (Icon=<bundle>/mlx-lora-studio.png): see packaging/README.md.
    cp packaging/icon/mlx_lora_studio.png "dist/$NAME/mlx-lora-studio.png"
    echo "built dist/$NAME/ (version $VERSION): $(du -sh "dist/$NAME" | cut -f1) in $(( $(date +%s) - start )) s"
    ;;
  Darwin)
    bash packaging/make_dmg.sh "dist/MLX LoRA Studio.app" "dist/$NAME-$VERSION-arm64.dmg"
    echo "built dist/MLX LoRA Studio.app and dist/$NAME-$VERSION-arm64.dmg in $(( $(date +%s) - start )) s"
    ;;
esac
