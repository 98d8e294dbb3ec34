"""broker.web.csrf: the signed login token of the login form."""

from __future__ import annotations

from datetime import timedelta

from broker.clock import ManualClock
from broker.web.csrf import (
    LOGIN_TOKEN_LIFETIME,
    csrf_field,
    issue_login_token,
    login_token_expiry,
    valid_login_token,
)

KEY = bytes(range(32))


def test_a_login_token_is_valid_until_it_expires(clock: ManualClock) -> None:
    token = issue_login_token(KEY, clock.now())
    assert valid_login_token(KEY, token, clock.now())
    clock.advance(LOGIN_TOKEN_LIFETIME - timedelta(seconds=1))
    assert valid_login_token(KEY, token, clock.now())
    clock.advance(timedelta(seconds=1))
    assert not valid_login_token(KEY, token, clock.now())


def test_a_login_token_cannot_be_forged_or_stretched(clock: ManualClock) -> None:
    token = issue_login_token(KEY, clock.now())
    nonce, expires, mac = token.split(".")
    assert login_token_expiry(KEY, token) == int(expires)
    assert login_token_expiry(bytes(32), token) is None  # another app's key
    assert login_token_expiry(KEY, f"{nonce}.{int(expires) + 3600}.{mac}") is None
    assert login_token_expiry(KEY, f"other.{expires}.{mac}") is None
    for broken in ("", "a.b", "a.b.c", f"{nonce}.-1.{mac}", token + ".x", "x" * 300, None):
        assert login_token_expiry(KEY, broken) is None


def test_two_tokens_differ(clock: ManualClock) -> None:
    assert issue_login_token(KEY, clock.now()) != issue_login_token(KEY, clock.now())


def test_the_field_escapes_its_token() -> None:
    assert str(csrf_field('a"b<c')) == (
        '<input type="hidden" name="csrf_token" value="a&#34;b&lt;c">'
    )
