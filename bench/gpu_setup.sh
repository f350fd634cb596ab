#!/bin/bash
# On the GPU machine (no network): keep the carried pieces (.whl/g*/) in /tmp/w, put every
# wheel whose pieces are all there back together, and install what is complete into
# /tmp/site (pip --target, no deps: the image already has numpy, torch, jinja2, …).
# Run it in each of the calls bench/gpu_prepare.sh lists; it says what is still missing.
set -euo pipefail
mkdir -p /tmp/w /tmp/site
for f in .whl/g*/*; do [ -e "$f" ] && cp "$f" /tmp/w/; done
shopt -s nullglob
for manifest in /tmp/w/*.parts; do
  read -r name count < "$manifest"
  [ -f "/tmp/w/$name" ] && continue
  parts=(/tmp/w/"$name".part[0-9][0-9])
  if [ "${#parts[@]}" -eq "$count" ]; then cat "${parts[@]}" > "/tmp/w/$name"; rm -f "${parts[@]}"; fi
done
# one pip call for all of them: with --target, each call replaces the folders it writes, and
# mlx and mlx-cuda-13 share the folder mlx/
wheels=(/tmp/w/*.whl)
if [ "${#wheels[@]}" -gt 0 ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site --upgrade "${wheels[@]}"
fi
missing=$(for m in /tmp/w/*.parts; do read -r n c < "$m"; [ -f "/tmp/w/$n" ] || echo "$n"; done)
[ -n "$missing" ] && echo "still waiting for pieces of: $missing"
if [ -d /tmp/site/mlx ]; then
  PYTHONPATH=/tmp/site python3 -c "import mlx.core as mx; print('mlx', mx.__version__, mx.default_device())"
fi
