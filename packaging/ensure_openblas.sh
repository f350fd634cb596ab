#!/usr/bin/env bash
# Makes sure an OpenBLAS that MLX can use is present on Linux (see mlx_lora/backend.py:
# MLX's CPU wheel links a reference BLAS that is ~30x slower). Debian/Ubuntu's
# libopenblas0-pthread brings libopenblas.so.0 and libgfortran.so.5 (which the
# cmeel-openblas wheel also needs). Installs it when running as root with apt-get;
# otherwise prints the command. Never fails the setup: the app works without it, slowly.
set -u
[ "$(uname -s)" = "Linux" ] || exit 0
if ldconfig -p 2>/dev/null | grep -q 'libopenblas.so.0' && ldconfig -p 2>/dev/null | grep -q 'libgfortran.so.5'; then
  exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "Installing OpenBLAS for fast CPU matmuls (apt-get install libopenblas0-pthread)…"
  (apt-get install -y -qq libopenblas0-pthread >/dev/null 2>&1 || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq libopenblas0-pthread >/dev/null 2>&1; }) \
    || echo "warning: could not install libopenblas0-pthread; training on the CPU will be slow"
else
  echo "note: for ~30x faster CPU training install OpenBLAS: sudo apt install libopenblas0-pthread"
fi
exit 0
