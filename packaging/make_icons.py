"""Renders the app icon ``packaging/icon/mlx_lora_studio.svg`` into the files the
bundlers want, next to it: a 1024 px PNG (Linux, and the source for everything
else), an ``.icns`` (macOS) and an ``.ico`` (Windows, should it ever be built).

    .venv/bin/python packaging/make_icons.py

Qt's SVG renderer draws the PNGs, so this runs anywhere PySide6 does (no Inkscape,
no Pillow). ICNS and ICO are written by hand: both are a small header plus PNG
payloads. On a Mac the ``.icns`` can instead be made with Apple's tool, which
gives the same entries::

    mkdir icon.iconset
    for s in 16 32 128 256 512; do
      sips -z $s $s mlx_lora_studio.png --out icon.iconset/icon_${s}x${s}.png
      sips -z $((s*2)) $((s*2)) mlx_lora_studio.png --out icon.iconset/icon_${s}x${s}@2x.png
    done
    iconutil -c icns icon.iconset -o mlx_lora_studio.icns

The outputs are committed, so a build does not need to run this.
"""

from __future__ import annotations

import os
import struct
import sys
from pathlib import Path

ICON_DIR = Path(__file__).resolve().parent / "icon"
SVG = ICON_DIR / "mlx_lora_studio.svg"

# ICNS entry types that hold PNG data, and their pixel sizes (what iconutil writes).
ICNS_TYPES = {
    b"icp4": 16, b"icp5": 32, b"ic11": 32, b"ic12": 64, b"ic07": 128,
    b"ic13": 256, b"ic08": 256, b"ic14": 512, b"ic09": 512, b"ic10": 1024,
}
ICO_SIZES = (16, 24, 32, 48, 64, 128, 256)


def render_png(size: int) -> bytes:
    """The SVG drawn at ``size`` x ``size`` px, as PNG bytes (transparent corners)."""
    from PySide6.QtCore import QBuffer, QByteArray, QIODevice, Qt
    from PySide6.QtGui import QGuiApplication, QImage, QPainter
    from PySide6.QtSvg import QSvgRenderer

    _ = QGuiApplication.instance() or QGuiApplication([])
    image = QImage(size, size, QImage.Format.Format_ARGB32_Premultiplied)
    image.fill(Qt.GlobalColor.transparent)
    painter = QPainter(image)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    QSvgRenderer(str(SVG)).render(painter)
    painter.end()
    data = QByteArray()
    buffer = QBuffer(data)
    buffer.open(QIODevice.OpenModeFlag.WriteOnly)
    image.save(buffer, "PNG")
    return bytes(data.data())


def icns_bytes(pngs: dict[int, bytes]) -> bytes:
    """An ICNS file: b'icns', total length, then (type, length, PNG) entries; big-endian."""
    body = b"".join(t + struct.pack(">I", 8 + len(pngs[s])) + pngs[s] for t, s in ICNS_TYPES.items())
    return b"icns" + struct.pack(">I", 8 + len(body)) + body


def ico_bytes(pngs: dict[int, bytes]) -> bytes:
    """An ICO file with PNG entries (Windows Vista and later read these)."""
    header = struct.pack("<HHH", 0, 1, len(ICO_SIZES))
    offset = len(header) + 16 * len(ICO_SIZES)
    entries, payload = b"", b""
    for size in ICO_SIZES:
        png = pngs[size]
        side = 0 if size >= 256 else size  # 0 means 256 in an ICO directory
        entries += struct.pack("<BBBBHHII", side, side, 0, 0, 1, 32, len(png), offset + len(payload))
        payload += png
    return header + entries + payload


def main() -> int:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    sizes = sorted(set(ICNS_TYPES.values()) | set(ICO_SIZES))
    pngs = {size: render_png(size) for size in sizes}
    (ICON_DIR / "mlx_lora_studio.png").write_bytes(pngs[1024])
    (ICON_DIR / "mlx_lora_studio.icns").write_bytes(icns_bytes(pngs))
    (ICON_DIR / "mlx_lora_studio.ico").write_bytes(ico_bytes(pngs))
    for name in ("png", "icns", "ico"):
        path = ICON_DIR / f"mlx_lora_studio.{name}"
        print(f"{path.relative_to(ICON_DIR.parent.parent)}  {path.stat().st_size / 1024:.0f} KiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
