"""The key fingerprint check, on every backend (the CLI checks before it records)."""

from __future__ import annotations

import pytest

from cartwin.errors import StoreError


def test_check_only_records_nothing_then_first_record_wins(store):
    store.check_key("fingerprint-1", record=False)
    store.check_key("fingerprint-2", record=False)  # nothing recorded yet
    store.check_key("fingerprint-2")
    with pytest.raises(StoreError, match="another pseudonymisation key"):
        store.check_key("fingerprint-1", record=False)
