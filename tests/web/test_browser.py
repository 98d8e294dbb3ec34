"""The customer app in a real browser: Debian's headless Chromium driven by Playwright,
against the broker running as a subprocess (``broker seed`` then ``broker serve``).

Log in, see the grants, revoke one through its confirmation page — and the insurer's
next call with the token it held is refused; switch location off — and no position
reaches a recipient; download the copy. Screenshots of every page on a desktop
(1280x800) and a phone (390x844) screen, in Dutch and English, are saved to
``test-artifacts/screenshots/``. Under ``CI=true`` a missing Chromium or Playwright
fails the run instead of skipping it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from ingest_app import free_port
from worlds import COOPER, ROOT

from broker.bootstrap import open_broker
from broker.clock import format_instant
from broker.domain.contracts import Channel
from broker.gate.release import Release, ReleaseRequest, VehicleTarget
from broker.settings import Settings

CHROMIUM = Path("/usr/bin/chromium")
IN_CI = os.environ.get("CI", "").lower() == "true"
SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"
SIZES = {"desktop": (1280, 800), "phone": (390, 844)}
INSURER_REDIRECT = "http://localhost:9001/callback"
INSURER_AUTH = "Basic " + base64.b64encode(b"insurer-demo:demo-secret-insurer-demo").decode()
BACKEND_AUTH = "Basic " + base64.b64encode(b"broker-backend:demo-secret-broker-backend").decode()


def _unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: the browser tests must run; see .ci/ensure-chromium)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def playwright_api() -> Iterator[Any]:
    if not CHROMIUM.exists():
        _unavailable(f"{CHROMIUM} is missing (run .ci/ensure-chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("the playwright package is not installed (pip install -e '.[dev]')")
    with sync_playwright() as api:
        yield api


@pytest.fixture(scope="module")
def chromium(playwright_api: Any) -> Iterator[Any]:
    browser = playwright_api.chromium.launch(
        executable_path=str(CHROMIUM),
        headless=True,
        args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
    )
    yield browser
    browser.close()


@dataclass
class Served:
    base: str
    env: dict[str, str]

    def settings(self) -> Settings:
        return Settings.from_env(self.env)

    def call(
        self, method: str, path: str, *, headers: dict[str, str], body: bytes | None = None
    ) -> tuple[int, Any]:
        request = urllib.request.Request(  # noqa: S310 - loopback only
            self.base + path, data=body, headers=headers, method=method
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            text = error.read()
            return error.code, json.loads(text) if text.strip().startswith(b"{") else text


@pytest.fixture
def served(database_url: str, tmp_path: Path) -> Iterator[Served]:
    """The broker on the current backend (SQLite, then PostgreSQL)."""
    yield from _serve(database_url, tmp_path)


@pytest.fixture
def served_on_sqlite(tmp_path: Path) -> Iterator[Served]:
    """The broker on a fresh SQLite file: page layout does not depend on the database."""
    yield from _serve(f"sqlite:///{tmp_path / 'broker.sqlite3'}", tmp_path)


def _serve(database_url: str, tmp_path: Path) -> Iterator[Served]:
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("BROKER_")},
        "BROKER_DATABASE_URL": database_url,
        "BROKER_HOST": "127.0.0.1",
        "BROKER_PORT": str(port),
        "BROKER_PUBLIC_URL": f"http://localhost:{port}",
        "BROKER_MASTER_KEY_FILE": str(tmp_path / "master.key"),
        "BROKER_AUDIT_KEY_FILE": str(tmp_path / "audit.key"),
        "BROKER_OAUTH_KEYS_DIR": str(tmp_path / "oauth-keys"),
        "BROKER_PURGE_INTERVAL": "86400",
        "BROKER_LOG_LEVEL": "WARNING",
    }
    broker = [sys.executable, "-m", "broker.cli"]
    seed = ROOT / "examples" / "demo-seed.json"
    subprocess.run([*broker, "seed", str(seed)], env=env, check=True, capture_output=True)
    log = (tmp_path / "serve.log").open("wb")
    process = subprocess.Popen([*broker, "serve"], env=env, stdout=log, stderr=log)
    base = f"http://localhost:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(base + "/readyz", timeout=2):  # noqa: S310
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(
                        (tmp_path / "serve.log").read_text(errors="replace")
                    ) from None
                time.sleep(0.2)
        yield Served(base, env)
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()


def shoot(page: Any, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def log_in(page: Any, base: str, login: str = "anna") -> None:
    page.goto(f"{base}/login")
    page.fill("#login", login)
    page.fill("#password", f"demo-password-{login}")
    page.click("form[action='/login'] button[type=submit]")
    page.wait_for_load_state()
    assert page.url == f"{base}/", page.content()


def insurer_token(page: Any, served: Served) -> dict[str, Any]:
    """The insurer's code flow, with anna's consent given on the consent page."""
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    params = {
        "response_type": "code", "client_id": "insurer-demo", "redirect_uri": INSURER_REDIRECT,
        "scope": "vehicle.status:read vehicle.position:read", "state": "st",
        "code_challenge": challenge.rstrip(b"=").decode(), "code_challenge_method": "S256",
    }  # fmt: skip
    answers: list[str] = []

    def callback(route: Any) -> None:
        answers.append(route.request.url)
        route.fulfill(status=200, content_type="text/plain", body="ok")

    page.route("http://localhost:9001/**", callback)
    page.goto(f"{served.base}/oauth/authorize?{urlencode(params)}")
    page.click("button[name=decision][value=approve]")
    page.wait_for_url("http://localhost:9001/**")
    code = parse_qs(urlsplit(answers[-1]).query)["code"][0]
    form = {"grant_type": "authorization_code", "code": code,
            "redirect_uri": INSURER_REDIRECT, "code_verifier": verifier}  # fmt: skip
    status, body = served.call(
        "POST",
        "/oauth/token",
        headers={
            "Authorization": INSURER_AUTH,
            "Content-Type": "application/x-www-form-urlencoded",
        },
        body=urlencode(form).encode(),
    )
    assert status == 200, body
    return dict(body)


def ingest(served: Served, records: list[dict[str, Any]]) -> list[str]:
    form = urlencode({"grant_type": "client_credentials", "scope": "ingest"}).encode()
    status, token = served.call(
        "POST", "/oauth/token",
        headers={"Authorization": BACKEND_AUTH,
                 "Content-Type": "application/x-www-form-urlencoded"},
        body=form,
    )  # fmt: skip
    assert status == 200, token
    status, answer = served.call(
        "POST", "/v1/ingest/records",
        headers={"Authorization": f"Bearer {token['access_token']}",
                 "Content-Type": "application/json"},
        body=json.dumps(records).encode(),
    )  # fmt: skip
    assert status in (200, 207), answer
    return [r["status"] for r in answer["results"]]


def insurer_release(served: Served, since: datetime) -> Release:
    """What the gate would release to the insurer for anna's Cooper now (same database)."""
    broker = open_broker(served.settings())
    try:
        now = broker.clock.now()
        request = ReleaseRequest(
            recipient_id="rcp-insurer",
            contract_id="insurer-ubi",
            channel=Channel.PULL,
            purpose="usage-based-insurance",
            target=VehicleTarget(COOPER),
            categories=frozenset({"vehicle.status", "vehicle.position"}),
            since=since,
            until=now + timedelta(seconds=1),
        )
        outcome = broker.database.run_sync(
            lambda s: broker.gate.decide(s, request, now), write=True
        )
    finally:
        broker.close()
    assert isinstance(outcome, Release), outcome
    return outcome


def record(record_id: str, category: str, at: datetime, data: dict[str, Any]) -> dict[str, Any]:
    return {"record_id": record_id, "vin": COOPER, "category": category,
            "recorded_at": format_instant(at), "data": data}  # fmt: skip


POSITION = {"latitude": 52.37, "longitude": 4.89, "speed_kmh": 40.0, "heading_deg": 90.0,
            "trip_id": "t1"}  # fmt: skip
STATUS = {"mileage_km": 1000.0, "battery_voltage_v": 13.9, "doors_locked": True}


def test_log_in_revoke_switch_location_off_and_download(
    chromium: Any, served: Served, tmp_path: Path, backend: str
) -> None:
    width, height = SIZES["desktop"]
    context = chromium.new_context(
        viewport={"width": width, "height": height}, accept_downloads=True
    )
    page = context.new_page()
    violations: list[str] = []
    page.on(
        "console",
        lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None,
    )
    start = datetime.now(UTC) - timedelta(hours=2)
    before = ingest(
        served,
        [record("p-before", "vehicle.position", start + timedelta(minutes=10), POSITION),
         record("s-before", "vehicle.status", start + timedelta(minutes=10), STATUS)],
    )  # fmt: skip
    assert before == ["stored", "stored"]
    released = insurer_release(served, start)
    assert "vehicle.position" in {r["category"] for r in released.payload.records}

    log_in(page, served.base)
    assert page.locator("html").get_attribute("lang") == "nl"  # anna prefers Dutch
    tokens = insurer_token(page, served)
    bearer = {"Authorization": f"Bearer {tokens['access_token']}"}
    status, covered = served.call("GET", "/v1/recipient/grants", headers=bearer)
    assert status == 200
    [grant_id] = [g["grant"] for g in covered["grants"]]

    # See the grants; revoke the new one, through its confirmation page.
    page.goto(f"{served.base}/grants")
    assert page.locator("h1").inner_text() == "Mijn gegevensdeling"
    card = page.locator(f"#grant-{grant_id}")
    assert "Polder Verzekeringen" in card.inner_text()
    shoot(page, f"{backend}-grants-nl-desktop")
    card.get_by_role("button", name="Trek de toestemming voor Polder Verzekeringen in").click()
    page.wait_for_url(f"**/grants/{grant_id}/end?action=withdraw")
    shoot(page, f"{backend}-confirm-nl-desktop")
    page.get_by_role("button", name="Ja, nu intrekken").click()
    page.wait_for_url(f"**/grants/{grant_id}?ended=1")
    assert page.get_by_role("status").is_visible()
    shoot(page, f"{backend}-revoked-nl-desktop")

    # The insurer's next call with the token it already held is refused.
    status, _ = served.call("GET", "/v1/recipient/grants", headers=bearer)
    assert status == 401

    # Location off for the Cooper: no position reaches any recipient from now on.
    page.goto(f"{served.base}/vehicles")
    section = page.locator("section.vehicle").filter(has_text=COOPER)
    section.get_by_label("Locatie verzamelen").uncheck()
    section.get_by_label("Locatie delen").uncheck()
    section.get_by_role("button").click()
    page.wait_for_url("**/vehicles?saved=1")
    assert (
        not page.locator("section.vehicle")
        .filter(has_text=COOPER)
        .get_by_label("Locatie verzamelen")
        .is_checked()
    )
    shoot(page, f"{backend}-location-off-nl-desktop")
    after = ingest(served, [record("p-after", "vehicle.position", datetime.now(UTC), POSITION)])
    assert after == ["withheld"]
    released = insurer_release(served, start)
    assert {r["category"] for r in released.payload.records} == {"vehicle.status"}

    # Download the copy.
    with page.expect_download() as info:
        page.get_by_role("button", name="Mijn gegevens downloaden").click()
    path = tmp_path / "copy.json"
    info.value.save_as(path)
    copy = json.loads(path.read_text("utf-8"))
    assert info.value.suggested_filename.startswith("my-vehicle-data-")
    assert copy["account"]["login"] == "anna"
    assert "rcp-insurer" in {r["id"] for r in copy["recipients"]}
    assert {r["id"] for r in copy["telemetry"]["records"]} == {"p-before", "s-before"}
    assert violations == []
    context.close()


def test_every_page_on_a_desktop_and_a_phone_in_both_languages(
    chromium: Any, served_on_sqlite: Served
) -> None:
    served = served_on_sqlite
    for size, (width, height) in SIZES.items():
        context = chromium.new_context(viewport={"width": width, "height": height})
        page = context.new_page()
        log_in(page, served.base)
        # Keyboard users land on the skip link first, and see where the focus is.
        page.keyboard.press("Tab")
        focused = page.evaluate(
            "() => [document.activeElement.className,"
            " getComputedStyle(document.activeElement).outlineStyle]"
        )
        assert focused == ["skip-link", "solid"]
        for language in ("nl", "en"):
            for name, path in (("home", "/"), ("grants", "/grants"),
                               ("grant", "/grants/gr-anna-insurer"),
                               ("confirm", "/grants/gr-anna-insurer/end?action=withdraw"),
                               ("vehicles", "/vehicles")):  # fmt: skip
                page.goto(f"{served.base}{path}{'&' if '?' in path else '?'}lang={language}")
                assert page.locator("html").get_attribute("lang") == language
                assert page.locator("main h1").count() == 1
                overflow = page.evaluate(
                    "() => document.documentElement.scrollWidth - window.innerWidth"
                )
                assert overflow <= 0, f"{name} scrolls sideways on a {size} screen"
                shoot(page, f"{name}-{language}-{size}")
        context.close()
