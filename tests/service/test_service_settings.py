"""Typed service settings: defaults, environment overrides, refused values."""

from __future__ import annotations

import pytest

from cartwin.service.settings import ServiceSettings, SettingsError


def test_defaults_are_loopback_and_closed():
    settings = ServiceSettings()
    assert settings.host == "127.0.0.1" and settings.cors_origins == ()
    assert settings.max_body_bytes == 16 * 1024 * 1024


def test_environment_overrides_and_explicit_values_win(monkeypatch):
    monkeypatch.setenv("CARTWIN_SERVICE_PORT", "9100")
    monkeypatch.setenv(
        "CARTWIN_SERVICE_CORS_ORIGINS", "https://a.example, https://b.example"
    )
    monkeypatch.setenv("CARTWIN_SERVICE_PSEUDONYM_KEY", "secret")
    monkeypatch.setenv("CARTWIN_STORE", "/data/site.duckdb")
    settings = ServiceSettings.from_env(port=None, host="::1")
    assert settings.port == 9100 and settings.host == "::1"
    assert settings.cors_origins == ("https://a.example", "https://b.example")
    assert settings.key_bytes() == b"secret" and "secret" not in repr(settings)
    assert settings.security_db_path() == "/data/site.duckdb.service.sqlite3"


def test_invalid_value_names_the_field(monkeypatch):
    monkeypatch.setenv("CARTWIN_SERVICE_RATE_LIMIT_PER_SECOND", "-3")
    with pytest.raises(SettingsError, match="rate_limit_per_second"):
        ServiceSettings.from_env()


def test_security_db_for_server_and_memory_stores():
    url = ServiceSettings(store="postgresql://localhost/twins")
    assert url.security_db_path() == "cartwin-service.sqlite3"
    assert ServiceSettings(store=":memory:").security_db_path() == ":memory:"
    chosen = ServiceSettings(store=":memory:", security_db="/x/s.sqlite3")
    assert chosen.security_db_path() == "/x/s.sqlite3"
