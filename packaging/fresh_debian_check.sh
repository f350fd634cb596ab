#!/usr/bin/env bash
# Does `make run` reach the window on a fresh Debian with the README's commands alone?
# Builds a bare Debian bookworm (debootstrap minbase + what the README says a user needs:
# python3, python3-venv, python3-pip, make, git, ca-certificates — plus xvfb as the "screen"),
# clones this repository's committed state into it, runs `make run` there under Xvfb with a
# timeout, and proves the window appeared with a screenshot of Xvfb's screen
# (packaging/xwd_to_png.py; no X tools are installed in the chroot, since they would bring in
# the very libraries Qt's xcb plugin needs). Setup goes to plain PyPI, as a user's would.
# Slow (the first run: ~700 MB from PyPI and ~40 MB of Debian packages); not part of make test.
#
#   sudo bash packaging/fresh_debian_check.sh            # root: debootstrap and chroot need it
#   FRESH_ROOT=/tmp/fresh-debian OUT=/tmp/fresh-debian-out TIMEOUT=3600 sudo -E bash packaging/fresh_debian_check.sh
#
# On a network that re-signs HTTPS (a proxy with its own CA), pass that CA to the chroot:
#   EXTRA_CA_CERTS="/usr/local/share/ca-certificates/proxy.crt" sudo -E bash packaging/fresh_debian_check.sh
# Writes $OUT/window.png, $OUT/make-run.log, $OUT/summary.txt; exit status 0 when the window appeared.
# Re-running reuses the debootstrapped folder (delete $FRESH_ROOT for a truly fresh one) but
# always clones anew and starts from an empty pip cache.
set -euo pipefail
root=${FRESH_ROOT:-/tmp/fresh-debian}
out=${OUT:-/tmp/fresh-debian-out}
timeout_s=${TIMEOUT:-3600}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
repo=$(cd "$(dirname "$0")/.." && pwd)
here=$(date +%s)
[ "$(id -u)" = 0 ] || { echo "run as root (debootstrap and chroot need it)" >&2; exit 2; }
command -v debootstrap >/dev/null || { echo "needs debootstrap: apt install debootstrap" >&2; exit 2; }
mkdir -p "$out"
log() { echo "[$(( $(date +%s) - here ))s] $*" | tee -a "$out/summary.txt"; }
: > "$out/summary.txt"

if [ ! -x "$root/usr/bin/python3" ]; then
  log "debootstrap bookworm into $root"
  debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,make,git,ca-certificates,xvfb \
    bookworm "$root" "$mirror" > "$out/debootstrap.log" 2>&1
  log "debootstrap done ($(du -sm "$root" | cut -f1) MB)"
fi

mounted=()
cleanup() {
  [ -n "${xvfb_pid:-}" ] && kill "$xvfb_pid" 2>/dev/null || true
  for ((i=${#mounted[@]}-1; i>=0; i--)); do umount -l "${mounted[i]}" 2>/dev/null || true; done
}
trap cleanup EXIT
for m in proc sys dev dev/pts; do
  mountpoint -q "$root/$m" && continue
  case $m in
    proc) mount -t proc proc "$root/proc" ;;
    sys) mount -t sysfs sys "$root/sys" ;;
    dev) mount --bind /dev "$root/dev" ;;
    dev/pts) mount --bind /dev/pts "$root/dev/pts" ;;
  esac
  mounted+=("$root/$m")
done
mkdir -p "$root/dev/shm"
cp -L /etc/resolv.conf "$root/etc/resolv.conf"
pip_env=()
if [ -n "${EXTRA_CA_CERTS:-}" ]; then
  # the network's CA, not the user's: a plain machine talks to PyPI directly
  for ca in $EXTRA_CA_CERTS; do cp "$ca" "$root/usr/local/share/ca-certificates/"; done
  chroot "$root" update-ca-certificates > /dev/null 2>&1
  # upstream pip (after `pip install --upgrade pip`) trusts its own certifi bundle, not the system's
  pip_env=(PIP_CERT=/etc/ssl/certs/ca-certificates.crt SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt)
fi

work=/root/mlx-lora-studio
rm -rf "$root$work" "$root/root/.cache/pip" "$root/tmp/fb"   # ours: made by the previous run of this script
git clone -q "$repo" "$root$work"
log "cloned $(git -C "$repo" rev-parse --short HEAD) into $root$work"

mkdir -p "$root/tmp/fb"
chroot "$root" Xvfb :99 -screen 0 1400x900x24 -fbdir /tmp/fb -nolisten tcp > "$out/xvfb.log" 2>&1 &
xvfb_pid=$!
log "make run (timeout ${timeout_s}s) under Xvfb :99"
setsid chroot "$root" /usr/bin/env -i HOME=/root PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  LANG=C.UTF-8 DISPLAY=:99 "${pip_env[@]}" \
  bash -c "cd $work && timeout $timeout_s make run" > "$out/make-run.log" 2>&1 &
make_pid=$!

# The app's process runs inside the chroot (its /proc/PID/root is $root).
app_pid() {
  local pid
  for pid in $(pgrep -f 'mlx-lora-studio --demo' || true); do
    [ "$(readlink "/proc/$pid/root" 2>/dev/null)" = "$root" ] && { echo "$pid"; return; }
  done
}
shown=""
setup_done=""
while kill -0 "$make_pid" 2>/dev/null; do
  if [ -z "$setup_done" ] && [ -n "$(app_pid)" ]; then
    setup_done=1
    log "make setup done, the app started (.venv: $(du -sm "$root$work/.venv" | cut -f1) MB installed from PyPI)"
  fi
  if [ -n "$setup_done" ] && [ -e "$root/tmp/fb/Xvfb_screen0" ]; then
    share=$(python3 "$repo/packaging/xwd_to_png.py" "$root/tmp/fb/Xvfb_screen0" "$out/window.png")
    if awk "BEGIN {exit !($share > 0.2)}"; then
      # give the pages a moment to paint, then the picture that counts
      for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$make_pid" 2>/dev/null && sleep 1; done
      share=$(python3 "$repo/packaging/xwd_to_png.py" "$root/tmp/fb/Xvfb_screen0" "$out/window.png")
      if [ -n "$(app_pid)" ]; then shown=$share; fi
      break
    fi
  fi
  sleep 5
done

if [ -n "$shown" ]; then
  log "the window appeared: $(awk "BEGIN {printf \"%d\", $shown * 100}")% of the screen drawn, $out/window.png"
  chroot "$root" /usr/bin/env -i HOME=/root PATH=/usr/bin:/bin LANG=C.UTF-8 "$work/.venv/bin/mlx-lora" doctor \
    > "$out/doctor.txt" 2>&1 || true
  pkill -TERM -s "$(ps -o sid= -p "$make_pid" | tr -d ' ')" 2>/dev/null || true
  wait "$make_pid" 2>/dev/null || true
  exit 0
fi
wait "$make_pid" 2>/dev/null; status=$?
log "no window: make run ended with status $status; the end of $out/make-run.log:"
tail -n 30 "$out/make-run.log" | tee -a "$out/summary.txt"
exit 1
