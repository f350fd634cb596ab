"""``mlx-lora doctor``: device, backend, BLAS, memory and versions."""

from __future__ import annotations

import json


def register(sub) -> None:
    p = sub.add_parser("doctor", help="show the device, backend, BLAS, memory and versions")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--no-measure", action="store_true", help="skip the matmul speed probe")
    p.set_defaults(func=run)


def qt_window_libraries() -> str:
    """Whether the system libraries Qt's X11 window needs are there (Linux; the app's window
    aborts without them). Reads the plugin's links with ldd: Qt itself is not imported."""
    import ctypes.util
    import importlib.util
    import platform
    import subprocess
    from pathlib import Path

    if platform.system() != "Linux":
        return "not needed on this system"
    spec = importlib.util.find_spec("PySide6")
    if spec is None or not spec.submodule_search_locations:
        return "PySide6 is not installed (the CLI works without it)"
    plugin = Path(next(iter(spec.submodule_search_locations))) / "Qt" / "plugins" / "platforms" / "libqxcb.so"
    if not plugin.is_file():
        return f"no xcb plugin in {plugin.parent}"
    try:
        out = subprocess.run(["ldd", str(plugin)], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        return f"could not check ({exc})"
    missing = sorted({line.split()[0] for line in out.splitlines() if "not found" in line})
    if ctypes.util.find_library("xcb-cursor") is None:
        missing.append("libxcb-cursor.so.0")
    if not missing:
        return "ok"
    return f"missing {', '.join(missing)}: run bash packaging/ensure_qt_libs.sh as root (README: Troubleshooting)"


def run(args) -> int:
    from mlx_lora.backend import doctor_report

    report = doctor_report(measure=not args.no_measure)
    report["Qt window libraries"] = qt_window_libraries()
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        width = max(map(len, report))
        for key, value in report.items():
            print(f"{key:<{width}}  {value}")
    return 0
