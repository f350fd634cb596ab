"""`mlx-lora doctor` says whether Qt's window can open (the system libraries its xcb plugin links)."""

import subprocess
import sys

from mlx_lora.cli import doctor


def test_doctor_names_missing_window_libraries(monkeypatch):
    ldd = "\tlibxcb-icccm.so.4 => not found\n\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6\n"
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(a, 0, ldd, ""))
    monkeypatch.setattr("ctypes.util.find_library", lambda name: None)
    report = doctor.qt_window_libraries()
    assert "libxcb-icccm.so.4" in report and "libxcb-cursor.so.0" in report
    assert "ensure_qt_libs.sh" in report


def test_doctor_reports_the_window_libraries_line():
    out = subprocess.run([sys.executable, "-m", "mlx_lora.cli.main", "doctor", "--no-measure"],
                         capture_output=True, text=True, check=True).stdout
    line = next(line for line in out.splitlines() if line.startswith("Qt window libraries"))
    # make setup installed them (packaging/ensure_qt_libs.sh): the window can open here
    assert line.split(None, 3)[-1] == "ok"
