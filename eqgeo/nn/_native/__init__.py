"""Loader of eqgeo's native CPU tensor-product kernel (``tp.c``), compiled at first use.

The kernel is plain C without Python or torch headers, so the system C compiler builds it in
about a second: ``$CC`` if set, else ``cc``, ``gcc`` or ``clang``, with ``-O3 -march=native``
(retried without ``-march=native`` if that fails) and ``-pthread``. The shared library is
cached under ``$EQGEO_CACHE/native`` (default ``~/.cache/eqgeo/native``) in a file whose name
hashes the source, the compiler, the flags and the CPU, written to a temporary file and
renamed into place so concurrent processes never load a half-written library. It is loaded
with :mod:`ctypes`, which releases the GIL during a call.

If no compiler is found or compilation fails, one warning is issued and the tensor product
uses its PyTorch path. Setting the environment variable ``EQGEO_NATIVE=0`` disables the
native kernel (checked at every call).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import warnings
from pathlib import Path

__all__ = ["enabled", "library", "cache_dir"]

_SOURCE = Path(__file__).with_name("tp.c")
_ABI = 3
_lock = threading.Lock()
_BASE_FLAGS = ["-O3", "-std=gnu11", "-fPIC", "-shared", "-pthread"]
_FLAG_SETS = (_BASE_FLAGS + ["-march=native"], _BASE_FLAGS)  # tried in this order
_lib: ctypes.CDLL | None = None
_lib_flags: list[str] | None = None  # the flags the loaded library was built with
_failed = False


def enabled() -> bool:
    """Whether the native kernel may be used (``EQGEO_NATIVE`` is not ``0``) and loads."""
    if os.environ.get("EQGEO_NATIVE", "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    return library() is not None


def cache_dir() -> Path:
    """``$EQGEO_CACHE/native``, else ``$XDG_CACHE_HOME/eqgeo/native``, else ``~/.cache/eqgeo/native``."""
    if os.environ.get("EQGEO_CACHE"):
        root = Path(os.environ["EQGEO_CACHE"]).expanduser()
    else:
        root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "eqgeo"
    return root / "native"


def _cpu_signature() -> str:
    """The CPU model and feature flags (``-march=native`` code must not move to another CPU)."""
    sig = [platform.machine(), platform.processor()]
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("model name", "flags", "Features", "CPU part")):
                    sig.append(line.strip())
                if line.strip() == "":
                    break  # the first processor is enough
    except OSError:
        pass
    return "\n".join(sig)


def _compiler() -> str | None:
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _compile(cc: str, flags: list[str], source: bytes) -> Path:
    version = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=60).stdout
    key = hashlib.sha256(b"\0".join([source, cc.encode(), version.encode(), " ".join(flags).encode(),
                                     _cpu_signature().encode(), str(_ABI).encode()])).hexdigest()[:20]
    folder = cache_dir()
    target = folder / f"tp_{key}.so"
    if target.exists():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tp_", suffix=".so", dir=folder)
    os.close(fd)
    try:
        proc = subprocess.run([cc, *flags, "-o", tmp, str(_SOURCE.resolve())], capture_output=True, text=True, timeout=300)
        if proc.returncode != 0:
            raise RuntimeError(f"{cc} {' '.join(flags)} failed:\n{proc.stderr.strip()[-2000:]}")
        os.replace(tmp, target)  # atomic: other processes see no file or the whole library
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def _bind(lib: ctypes.CDLL) -> ctypes.CDLL:
    if lib.eqgeo_tp_abi_version() != _ABI:
        raise RuntimeError("stale native library (ABI version mismatch)")
    p, i = ctypes.c_void_p, ctypes.c_int
    for suffix in ("f32", "f64"):
        fwd = getattr(lib, f"eqgeo_tp_forward_{suffix}")
        fwd.argtypes = [p] * 9 + [i]
        fwd.restype = i
        bwd = getattr(lib, f"eqgeo_tp_backward_{suffix}")
        bwd.argtypes = [p] * 11 + [i]
        bwd.restype = i
    lib.eqgeo_advise_hugepages.argtypes = [p, ctypes.c_int64]
    lib.eqgeo_advise_hugepages.restype = i
    lib.eqgeo_pool_threads.restype = i
    lib.eqgeo_tp_header_size.restype = i
    lib.eqgeo_tp_path_fields.restype = i
    return lib


def library() -> ctypes.CDLL | None:
    """The loaded kernel library, compiling it on first use; ``None`` if that is impossible."""
    global _lib, _lib_flags, _failed
    if _lib is not None or _failed:
        return _lib
    with _lock:
        if _lib is not None or _failed:
            return _lib
        try:
            cc = _compiler()
            if cc is None:
                raise RuntimeError("no C compiler found (set CC, or install cc/gcc/clang)")
            source = _SOURCE.read_bytes()
            errors = []
            for flags in _FLAG_SETS:
                try:
                    _lib = _bind(ctypes.CDLL(str(_compile(cc, flags, source))))
                    _lib_flags = flags
                    break
                except (OSError, RuntimeError, subprocess.SubprocessError, AttributeError) as exc:
                    errors.append(str(exc))
            if _lib is None:
                raise RuntimeError("; ".join(errors))
        except Exception as exc:  # noqa: BLE001 - any failure means: use the PyTorch path
            _failed = True
            warnings.warn(
                f"eqgeo: native tensor-product kernel unavailable ({exc}); using the PyTorch path "
                "(set EQGEO_NATIVE=0 to silence this)",
                RuntimeWarning,
                stacklevel=2,
            )
    return _lib
