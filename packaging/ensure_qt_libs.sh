#!/usr/bin/env bash
# Makes sure the system libraries Qt's X11 (xcb) platform plugin needs are present on Linux,
# so `make run` opens a window on a fresh Debian/Ubuntu machine (PySide6's wheel ships Qt but
# not these; without them Qt aborts with "Could not load the Qt platform plugin xcb").
# Finds what is missing with ldd on the plugin (libxcb-cursor0 is dlopen'ed, so it is looked
# up by name), installs the Debian packages as root with apt-get, otherwise prints the command.
# Never fails the setup: tests run offscreen without any of these. With --required (make run),
# libraries still missing after that stop here with the command that installs them, instead of
# Qt's abort ("Could not load the Qt platform plugin xcb") — unless the app will not use xcb
# (QT_QPA_PLATFORM=offscreen, or a Wayland session).
#   bash packaging/ensure_qt_libs.sh [PYTHON] [--required]
set -u
[ "$(uname -s)" = "Linux" ] || exit 0
python=${1:-python3}
required=0
if [ "${2:-}" = "--required" ] && [ -z "${WAYLAND_DISPLAY:-}" ] && \
   [ -z "${QT_QPA_PLATFORM:-}" -o "${QT_QPA_PLATFORM:-}" = "xcb" ]; then
  required=1
fi
qt=$("$python" -c 'import importlib.util, pathlib; s = importlib.util.find_spec("PySide6"); print(pathlib.Path(next(iter(s.submodule_search_locations))) / "Qt")' 2>/dev/null) || exit 0
[ -d "$qt" ] || exit 0
# library soname -> Debian/Ubuntu package
declare -A package=(
  [libxcb-cursor.so.0]=libxcb-cursor0 [libxcb-icccm.so.4]=libxcb-icccm4 [libxcb-keysyms.so.1]=libxcb-keysyms1
  [libxcb-image.so.0]=libxcb-image0 [libxcb-render-util.so.0]=libxcb-render-util0 [libxcb-shape.so.0]=libxcb-shape0
  [libxcb-randr.so.0]=libxcb-randr0 [libxcb-xfixes.so.0]=libxcb-xfixes0 [libxcb-sync.so.1]=libxcb-sync1
  [libxcb-xkb.so.1]=libxcb-xkb1 [libxcb-shm.so.0]=libxcb-shm0 [libxcb-render.so.0]=libxcb-render0
  [libxcb-util.so.1]=libxcb-util1 [libxcb-xinput.so.0]=libxcb-xinput0 [libxcb-glx.so.0]=libxcb-glx0 [libX11-xcb.so.1]=libx11-xcb1 [libxcb.so.1]=libxcb1
  [libxkbcommon-x11.so.0]=libxkbcommon-x11-0 [libxkbcommon.so.0]=libxkbcommon0 [libX11.so.6]=libx11-6
  [libfontconfig.so.1]=libfontconfig1 [libfreetype.so.6]=libfreetype6 [libdbus-1.so.3]=libdbus-1-3
  [libEGL.so.1]=libegl1 [libGL.so.1]=libgl1 [libOpenGL.so.0]=libopengl0 [libglib-2.0.so.0]=libglib2.0-0
  [libgthread-2.0.so.0]=libglib2.0-0 [libICE.so.6]=libice6 [libSM.so.6]=libsm6
)
find_missing() { {
  for lib in "$qt/plugins/platforms/libqxcb.so" "$qt/lib/libQt6XcbQpa.so.6" "$qt/lib/libQt6Gui.so.6" "$qt/lib/libQt6Widgets.so.6"; do
    [ -e "$lib" ] && ldd "$lib" 2>/dev/null | awk '/not found/ {print $1}'
  done
  ldconfig -p 2>/dev/null | grep -q 'libxcb-cursor.so.0' || echo libxcb-cursor.so.0
} | sort -u; }
missing=$(find_missing)
[ -z "$missing" ] && exit 0
packages=$(for lib in $missing; do echo "${package[$lib]:-}"; done | sort -u | tr '\n' ' ')
unknown=$(for lib in $missing; do [ -n "${package[$lib]:-}" ] || echo -n "$lib "; done)
if [ -n "${packages// /}" ] && [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "Installing the libraries Qt's window needs (apt-get install $packages)…"
  # shellcheck disable=SC2086
  (apt-get install -y -qq $packages >/dev/null 2>&1 || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq $packages >/dev/null 2>&1; }) \
    || echo "warning: could not install $packages; the app's window may not open (mlx-lora doctor checks)"
elif [ -n "${packages// /}" ]; then
  echo "note: the app's window needs these system libraries: sudo apt install $packages"
fi
[ -n "$unknown" ] && echo "note: Qt's window also needs $unknown(install the package that provides it)"
if [ "$required" = 1 ] && [ -n "$(find_missing)" ]; then
  echo "The app's window cannot open: Qt needs system libraries that are not installed." >&2
  [ -n "${packages// /}" ] && echo "Install them with:  sudo apt install $packages" >&2
  echo "then run make run again (mlx-lora doctor shows what is missing; the CLI works without them)." >&2
  exit 1
fi
exit 0
