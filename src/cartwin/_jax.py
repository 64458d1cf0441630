"""JAX set-up shared by every numerical module: float64 and a persistent cache.

cartwin's models and calibration need double precision (log-likelihoods of
hundreds of observations, Hessians inverted for Laplace approximations), so
:func:`configure_jax` turns on ``jax_enable_x64``. It also points JAX's
persistent compilation cache at a directory on disk, so that a second Python
process reuses the compiled calibration programs instead of compiling them
again (seconds saved per process on a CPU).

Model modules call :func:`configure_jax` when they are imported; calling it
again is harmless. The cache directory is, in order of precedence: the
``cache_dir`` argument, the environment variable ``CARTWIN_JAX_CACHE``, a
directory already configured in JAX by the caller, ``~/.cache/cartwin/jax``.
Setting ``CARTWIN_JAX_CACHE`` to an empty string disables the persistent cache.

Notes
-----
``jax_enable_x64`` is process-wide: importing :mod:`cartwin.models` changes
the default float type of every JAX user in the process to float64.
"""

from __future__ import annotations

import os
from pathlib import Path

import jax

#: Environment variable naming the persistent compilation cache directory.
CACHE_ENV_VAR = "CARTWIN_JAX_CACHE"

#: Default persistent compilation cache directory.
DEFAULT_CACHE_DIR = Path("~/.cache/cartwin/jax")


def configure_jax(cache_dir: str | None = None) -> str | None:
    """Enable float64 and the persistent compilation cache; return the cache dir.

    Parameters
    ----------
    cache_dir : str, optional
        Directory for compiled programs. When omitted, ``$CARTWIN_JAX_CACHE``
        is used, then a directory the caller already set in JAX, then
        ``~/.cache/cartwin/jax``. An empty ``$CARTWIN_JAX_CACHE`` disables
        the cache.

    Returns
    -------
    str or None
        The cache directory in use, or ``None`` when caching is disabled.

    Notes
    -----
    ``jax_persistent_cache_min_compile_time_secs`` is set to 0 so that small
    programs, which compile in well under JAX's default 1 s threshold, are
    cached too.
    """
    jax.config.update("jax_enable_x64", True)
    chosen = _cache_dir(cache_dir)
    if chosen is None:
        return None
    Path(chosen).mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", chosen)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return chosen


def _cache_dir(cache_dir: str | None) -> str | None:
    # explicit argument, then environment, then caller's JAX setting, then default
    if cache_dir is not None:
        return str(Path(cache_dir).expanduser())
    from_env = os.environ.get(CACHE_ENV_VAR)
    if from_env is not None:
        return str(Path(from_env).expanduser()) if from_env.strip() else None
    configured = jax.config.jax_compilation_cache_dir
    if configured:
        return str(configured)
    return str(DEFAULT_CACHE_DIR.expanduser())
