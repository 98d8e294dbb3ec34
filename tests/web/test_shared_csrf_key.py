"""Every process of one broker signs login-form tokens with the same key (from the master key)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from broker.bootstrap import create_web_app
from broker.protection.keys import generate_master_key
from broker.settings import Settings
from broker.web import WEB


def test_processes_of_one_broker_share_the_csrf_key(tmp_path: Path) -> None:
    key_file = tmp_path / "master.key"
    key_file.write_text(generate_master_key())
    settings = replace(Settings(), master_key_file=key_file, oauth_keys_dir=tmp_path / "oauth")
    first = create_web_app(settings)[WEB].csrf_key
    second = create_web_app(settings)[WEB].csrf_key
    assert first == second and len(first) == 32
    other = tmp_path / "other.key"
    other.write_text(generate_master_key())
    assert create_web_app(replace(settings, master_key_file=other))[WEB].csrf_key != first
