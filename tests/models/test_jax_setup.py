"""Tests of cartwin._jax.configure_jax (float64 and persistent cache)."""

from __future__ import annotations

import jax

from cartwin._jax import CACHE_ENV_VAR, _cache_dir, configure_jax


def test_explicit_directory_is_created_and_configured(tmp_path, monkeypatch):
    previous = jax.config.jax_compilation_cache_dir
    target = tmp_path / "jaxcache"
    try:
        assert configure_jax(str(target)) == str(target)
        assert target.is_dir()
        assert jax.config.jax_compilation_cache_dir == str(target)
        assert jax.config.jax_persistent_cache_min_compile_time_secs == 0.0
        assert jax.config.jax_enable_x64
    finally:
        jax.config.update("jax_compilation_cache_dir", previous)


def test_environment_variable_overrides_default(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV_VAR, str(tmp_path / "env"))
    assert _cache_dir(None) == str(tmp_path / "env")
    assert _cache_dir(str(tmp_path / "arg")) == str(tmp_path / "arg")


def test_empty_environment_variable_disables_cache(monkeypatch):
    monkeypatch.setenv(CACHE_ENV_VAR, "")
    assert _cache_dir(None) is None
