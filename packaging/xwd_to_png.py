"""Converts an X window dump (XWD, as Xvfb's ``-fbdir`` keeps its screen) to a PNG, and says
how much of the screen is not background. Standard library only, so it runs on a bare
Debian's ``python3`` (packaging/fresh_debian_check.sh uses it to prove the window appeared
without installing any X tools that would also bring in the libraries Qt needs).

    python3 packaging/xwd_to_png.py /tmp/fb/Xvfb_screen0 out.png   # prints the drawn share
"""

from __future__ import annotations

import struct
import sys
import zlib


def read_xwd(path: str) -> tuple[int, int, list[bytes]]:
    """(width, height, rows of RGB bytes) of a 24/32-bit ZPixmap dump (what Xvfb writes)."""
    with open(path, "rb") as f:
        data = f.read()
    # XWDFileHeader: 25 CARD32, big-endian (X11/XWDFile.h)
    header = struct.unpack(">25I", data[:100])
    header_size, _version, pixmap_format, depth, width, height = header[:6]
    byte_order, bits_per_pixel, bytes_per_line, ncolors = header[7], header[11], header[12], header[19]
    if pixmap_format != 2 or bits_per_pixel != 32 or depth < 24:
        raise SystemExit(f"{path}: unsupported XWD (format {pixmap_format}, depth {depth}, {bits_per_pixel} bpp)")
    offset = header_size + ncolors * 12
    rows = []
    for y in range(height):
        line = data[offset + y * bytes_per_line: offset + y * bytes_per_line + width * 4]
        if byte_order == 0:  # LSBFirst: B G R x
            rgb = bytearray(width * 3)
            rgb[0::3], rgb[1::3], rgb[2::3] = line[2::4], line[1::4], line[0::4]
        else:  # MSBFirst: x R G B
            rgb = bytearray(width * 3)
            rgb[0::3], rgb[1::3], rgb[2::3] = line[1::4], line[2::4], line[3::4]
        rows.append(bytes(rgb))
    return width, height, rows


def write_png(path: str, width: int, height: int, rows: list[bytes]) -> None:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    raw = b"".join(b"\x00" + row for row in rows)
    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b""))
    with open(path + ".tmp", "wb") as f:
        f.write(png)
    import os
    os.replace(path + ".tmp", path)


def drawn_share(rows: list[bytes]) -> float:
    """Share of pixels that differ from the top-left one (Xvfb's background is uniform)."""
    background = rows[0][:3]
    total = drawn = 0
    for row in rows[::4]:
        for x in range(0, len(row), 12):
            total += 1
            drawn += row[x:x + 3] != background
    return drawn / max(total, 1)


if __name__ == "__main__":
    width, height, rows = read_xwd(sys.argv[1])
    if len(sys.argv) > 2:
        write_png(sys.argv[2], width, height, rows)
    print(f"{drawn_share(rows):.3f}")
