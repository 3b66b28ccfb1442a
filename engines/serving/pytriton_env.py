"""Make PyTriton's server run from this project's environment (two fixes, both automatic).

PyTriton 0.7.0 runs the model in this process and forwards Triton's requests to it
through a Python-backend stub: a separate program, started by the bundled tritonserver,
that embeds Python and runs PyTriton's proxy code. Two things go wrong in our setup:

1. The stub for 3.11 links the first ``libpython3.11.so.1.0`` the loader finds. With a
   pyenv 3.11.7 interpreter that was Debian's 3.11.2 library, and binding a model failed
   (``'_thread.RLock' object has no attribute '_recursion_count'``). Fix: put the running
   interpreter's own library folder (sysconfig LIBDIR) first on LD_LIBRARY_PATH before the
   server starts (``fix_libpython``). An interpreter built without a shared libpython
   cannot be fixed this way: a warning says which interpreter to use instead.
2. The stub was compiled against numpy 1.x (its pybind11 predates numpy 2) and PyTriton
   pins numpy<2, while this project needs numpy 2 (opencv-contrib 5). Under numpy 2 the
   stub reads array descriptors with the old layout and every output arrives empty
   ("output tensor shape does not match size of output"). The stub runs in isolated mode
   and finds its packages through the ``python3`` first on PATH, which PyTriton points at
   this environment. Fix (``prepare_stub_env``): a small side environment made from the
   same base interpreter (``python -m venv --without-pip``), with numpy 1.26.4 installed
   into it by pip (once, from PyPI) and a .pth file that adds this environment's
   site-packages after it; ``use_stub_env`` points PyTriton at it. Only the stub uses it:
   the model keeps running here, with numpy 2.
"""
from __future__ import annotations

import hashlib
import logging
import os
import shutil
import site
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np

from engines.runners import EngineUnavailableError, user_cache_dir
from engines.serving import INSTALL_HINT

log = logging.getLogger(__name__)

STUB_NUMPY = "numpy==1.26.4"  # the last numpy 1.x; wheels for CPython 3.9-3.12


def require_pytriton() -> None:
    """EngineUnavailableError with the install command when PyTriton is missing."""
    try:
        import pytriton.triton  # noqa: F401  optional heavy dependency: only the server needs it
    except ImportError as e:
        raise EngineUnavailableError(f"the inference server needs PyTriton ({e}); install it with "
                                     f"{INSTALL_HINT}") from None


def libpython_dir() -> Path | None:
    """The folder holding this interpreter's shared libpython, or None if it has none."""
    libdir, soname = sysconfig.get_config_var("LIBDIR"), sysconfig.get_config_var("INSTSONAME")
    if not libdir or not soname:
        return None
    return Path(libdir) if (Path(libdir) / soname).is_file() else None


def fix_libpython(environ=os.environ) -> Path | None:
    """Put this interpreter's libpython folder first on LD_LIBRARY_PATH (for the server
    processes started after this call) and return it. An interpreter without a shared
    libpython beside it gets a warning that says what to use instead (the stub then
    loads whichever one the system has, which works only if it is the same build)."""
    libdir = libpython_dir()
    if libdir is None:
        ver = f"{sys.version_info.major}.{sys.version_info.minor}"
        log.warning(
            "%s has no shared libpython%s.so beside it (built without --enable-shared), so Triton's Python backend "
            "stub will load the system's Python %s library; if binding the model then fails (e.g. \"'_thread.RLock' "
            "object has no attribute '_recursion_count'\"), make the virtual environment from a Python built with "
            "--enable-shared: Debian's /usr/bin/python%s, or pyenv with PYTHON_CONFIGURE_OPTS=--enable-shared",
            sys.executable, ver, ver, ver)
        return None
    parts = [p for p in environ.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p and p != str(libdir)]
    environ["LD_LIBRARY_PATH"] = os.pathsep.join([str(libdir), *parts])
    return libdir


def needs_stub_env() -> bool:
    """True where this environment's numpy is 2.x (the stub needs 1.x)."""
    return int(np.__version__.split(".")[0]) >= 2


def default_stub_env() -> Path:
    """Where the side environment lives: the project's cache dir, one per interpreter and environment."""
    key = hashlib.sha1(f"{sys._base_executable}|{sys.prefix}|{STUB_NUMPY}".encode()).hexdigest()[:12]
    return user_cache_dir("triton") / f"stub-env-py{sys.version_info.major}{sys.version_info.minor}-{key}"


def _stub_site(env: Path) -> Path:
    return env / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"


def stub_env_ready(env: Path) -> bool:
    return (env / "bin" / "python3").exists() and (_stub_site(env) / "numpy" / "__init__.py").is_file()


def prepare_stub_env(env: Path | None = None) -> Path:
    """The side environment for the stub (made once: a venv and pip install numpy 1.x)."""
    env = Path(env) if env else default_stub_env()
    if stub_env_ready(env):
        _write_pth(env)
        return env
    tmp = env.with_name(f"{env.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    log.info("preparing the Triton stub environment %s (once: %s from PyPI)", env, STUB_NUMPY)
    base = getattr(sys, "_base_executable", sys.executable)
    steps = [[base, "-m", "venv", "--without-pip", str(tmp)],
             [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps",
              "--target", str(_stub_site(tmp)), STUB_NUMPY]]
    for cmd in steps:
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            shutil.rmtree(tmp, ignore_errors=True)
            tail = (r.stderr or r.stdout).strip().splitlines()[-3:]
            raise EngineUnavailableError(
                f"could not prepare the Triton stub environment {env}: {' '.join(cmd)} failed ({' | '.join(tail)}). "
                f"It needs pip and PyPI once; run python -m engines.serve --prepare where PyPI is reachable, or "
                f"make a Python {sys.version_info.major}.{sys.version_info.minor} virtual environment with numpy<2 "
                "and pass it as --stub-env")
    _write_pth(tmp)
    try:
        tmp.rename(env)
    except OSError:  # another server prepared it meanwhile
        shutil.rmtree(tmp, ignore_errors=True)
        if not stub_env_ready(env):
            raise
    return env


def _write_pth(env: Path) -> None:
    """After the side environment's own numpy: this environment's packages (PyTriton, pyzmq)."""
    dirs = [d for d in site.getsitepackages() if Path(d).is_dir() and Path(d) != _stub_site(env)]
    lines = "".join(f"import site; site.addsitedir({d!r})\n" for d in dirs)
    pth = _stub_site(env) / "zz_moext_parent_env.pth"
    if not pth.is_file() or pth.read_text() != lines:
        pth.write_text(lines)


def use_stub_env(env: Path) -> None:
    """Point PyTriton's server at ``env`` for its Python backend (PATH of the server process)."""
    from pytriton.server import triton_server  # optional heavy dependency, only the server imports it

    if not hasattr(triton_server, "get_triton_python_backend_python_env"):
        raise EngineUnavailableError("this PyTriton has no get_triton_python_backend_python_env; the server is "
                                     f"written for nvidia-pytriton 0.7.0: {INSTALL_HINT}")
    triton_server.get_triton_python_backend_python_env = lambda: Path(env)


def prepare_server_environment(stub_env: Path | None = None) -> dict:
    """Both fixes, before the server starts. Returns what was done (for the log)."""
    require_pytriton()
    done = {"libpython": str(fix_libpython() or "the system's")}
    if stub_env is not None or needs_stub_env():
        env = prepare_stub_env(stub_env)
        use_stub_env(env)
        done["stub_env"] = str(env)
    return done
