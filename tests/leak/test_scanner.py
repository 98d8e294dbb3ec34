"""The scanner finds a canary however it is wrapped, and finds nothing that is not there."""

from __future__ import annotations

import base64
import json
from urllib.parse import quote

import jwt
from hypothesis import given
from hypothesis import strategies as st
from leak.scanner import Canaries

VIN = "WMWXR31002TA10001"


def canaries() -> Canaries:
    found = Canaries()
    found.add("vin", VIN)
    found.add("email", "anna.devries@example.nl")
    return found


def b64(text: str, *, url: bool = False, pad: bool = True) -> str:
    encode = base64.urlsafe_b64encode if url else base64.b64encode
    out = encode(text.encode()).decode()
    return out if pad else out.rstrip("=")


def test_plain_body_and_header() -> None:
    assert canaries().scan(f"vehicle {VIN}".encode(), {}) == {"vin"}
    assert canaries().scan(b"{}", {"X-Vehicle": VIN.lower()}) == {"vin"}


def test_base64_cursor_in_a_link_header_percent_escaped() -> None:
    cursor = b64(json.dumps({"after": f"r-{VIN}-1"}), url=True, pad=False)
    link = f'</v1/recipient/vehicles/x/records?cursor={quote(cursor)}>; rel="next"'
    assert canaries().scan(b"{}", {"Link": link}) == {"vin"}


def test_jwt_payload_and_json_escapes() -> None:
    token = jwt.encode({"sub": "anna.devries@example.nl"}, "k" * 32, algorithm="HS256")
    body = json.dumps({"access_token": token, "v": VIN}, ensure_ascii=True)
    assert canaries().scan(body.encode(), {}) == {"vin", "email"}
    escaped = '{"v": "' + "".join(f"\\u{ord(c):04x}" for c in VIN) + '"}'
    assert VIN not in escaped
    assert canaries().scan(escaped.encode(), {}) == {"vin"}


def test_base64_inside_base64() -> None:
    assert canaries().scan(b64(b64(VIN)).encode(), {}) == {"vin"}


@given(st.text(alphabet='abcdefghijklmnopqrstuvwxyz0123456789 {}:",', max_size=200))
def test_nothing_is_found_in_text_without_a_canary(text: str) -> None:
    assert canaries().scan(text.encode(), {"Content-Type": "application/json"}) == set()


@given(st.text(max_size=40), st.text(max_size=40), st.booleans())
def test_a_canary_is_found_anywhere_in_an_encoded_cursor(
    before: str, after: str, url: bool
) -> None:
    cursor = b64(before + VIN + after, url=url, pad=False)
    assert "vin" in canaries().scan(json.dumps({"next_cursor": cursor}).encode(), {})
