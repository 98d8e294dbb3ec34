"""The customer app in a real browser: Debian's headless Chromium driven by Playwright,
against the broker running as a subprocess (``broker seed`` then ``broker serve``), the
fleet's webhooks delivered by ``broker webhooks worker`` processes to a receiver on
loopback, the insurer pulling over the pull API with its DPoP-bound token.

Log in, consent, switch location off — and no position reaches the insurer's pull or the
fleet's webhooks; revoke the insurer's consent through its confirmation page — and its next
pull is refused; object to the fleet's clearance — and its queued webhook is not sent, the
grant's end is; download the copy. Screenshots of every page on a desktop
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
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pull_site
import pytest
from ingest_app import free_port
from processes import broker_env
from worlds import CLUBMAN, ROOT

from broker.clock import format_instant
from broker.settings import Settings

CHROMIUM = Path("/usr/bin/chromium")
IN_CI = os.environ.get("CI", "").lower() == "true"
SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"
SIZES = {"desktop": (1280, 800), "phone": (390, 844)}
INSURER_REDIRECT = "http://localhost:9001/callback"
INSURER_AUTH = "Basic " + base64.b64encode(b"insurer-demo:demo-secret-insurer-demo").decode()
BACKEND_AUTH = "Basic " + base64.b64encode(b"broker-backend:demo-secret-broker-backend").decode()
FLEET_AUTH = "Basic " + base64.b64encode(b"fleet-demo:demo-secret-fleet-demo").decode()
ACEMAN = "WMW11DJ07T2D40004"  # carla's, in the fleet too


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
def fleet_served(database_url: str, tmp_path: Path) -> Iterator[Served]:
    """The broker on the current backend (SQLite, then PostgreSQL), without its own webhook
    worker (deliveries wait for a worker process), allowed to deliver to loopback over HTTP."""
    yield from _serve(
        database_url,
        tmp_path,
        BROKER_WEBHOOK_WORKER="0",
        BROKER_WEBHOOK_ALLOW_HTTP_LOOPBACK="1",
    )


@pytest.fixture
def served_on_sqlite(tmp_path: Path) -> Iterator[Served]:
    """The broker on a fresh SQLite file: page layout does not depend on the database."""
    yield from _serve(f"sqlite:///{tmp_path / 'broker.sqlite3'}", tmp_path)


def _serve(database_url: str, tmp_path: Path, **settings: str) -> Iterator[Served]:
    port = free_port()
    env = broker_env(
        database_url,
        tmp_path,
        BROKER_HOST="127.0.0.1",
        BROKER_PORT=str(port),
        BROKER_PUBLIC_URL=f"http://localhost:{port}",
        BROKER_PURGE_INTERVAL="86400",
        BROKER_LOG_LEVEL="WARNING",
        **settings,
    )
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


def insurer_token(page: Any, served: Served, key: Any, vin: str) -> str:
    """The insurer's code flow: the logged-in customer consents for ``vin`` on the consent
    page; the insurer's token is bound to its DPoP key (the insurer-ubi contract asks it)."""
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
    page.check(f"input[name=vehicle][value={vin}]")
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
            "DPoP": key.proof("POST", f"{served.base}/oauth/token"),
        },
        body=urlencode(form).encode(),
    )
    assert status == 200 and body["token_type"] == "DPoP", body
    return str(body["access_token"])


def insurer_pull(served: Served, key: Any, token: str, vin: str, since: datetime) -> Any:
    """The insurer's pull of ``vin``'s status and positions, over the pull API with DPoP."""
    path = f"/v1/recipient/vehicles/{vin}/records"
    query = urlencode({"since": format_instant(since), "limit": 100})
    status, body = served.call(
        "GET",
        f"{path}?{query}",
        headers={
            "Authorization": f"DPoP {token}",
            "DPoP": key.proof("GET", served.base + path, token),
        },
    )
    return status, body


def client_token(served: Served, basic: str, **form: str) -> str:
    """A client-credentials access token."""
    status, token = served.call(
        "POST", "/oauth/token",
        headers={"Authorization": basic, "Content-Type": "application/x-www-form-urlencoded"},
        body=urlencode({"grant_type": "client_credentials", **form}).encode(),
    )  # fmt: skip
    assert status == 200, token
    return str(token["access_token"])


def ingest(served: Served, records: list[dict[str, Any]]) -> list[str]:
    token = client_token(served, BACKEND_AUTH, scope="ingest")
    status, answer = served.call(
        "POST", "/v1/ingest/records",
        headers={"Authorization": f"Bearer {token}",
                 "Content-Type": "application/json"},
        body=json.dumps(records).encode(),
    )  # fmt: skip
    assert status in (200, 207), answer
    return [r["status"] for r in answer["results"]]


def record(
    record_id: str, category: str, at: datetime, data: dict[str, Any], vin: str = CLUBMAN
) -> dict[str, Any]:
    return {"record_id": record_id, "vin": vin, "category": category,
            "recorded_at": format_instant(at), "data": data}  # fmt: skip


POSITION = {"latitude": 51.92, "longitude": 4.48, "speed_kmh": 40.0, "heading_deg": 90.0,
            "trip_id": "t1"}  # fmt: skip


def status_data(mileage: float) -> dict[str, Any]:
    return {"mileage_km": mileage, "battery_voltage_v": 13.9, "doors_locked": True}


class Hooks:
    """The fleet operator's webhook endpoint on 127.0.0.1: every delivery, verified with
    the ``standardwebhooks`` library against the subscription's secret."""

    def __init__(self) -> None:
        self.secret = ""
        self._received: list[tuple[bytes, dict[str, str]]] = []
        self._lock = threading.Lock()
        hooks = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with hooks._lock:
                    hooks._received.append((body, {k.lower(): v for k, v in self.headers.items()}))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def messages(self) -> list[dict[str, Any]]:
        import standardwebhooks

        with self._lock:
            received = list(self._received)
        webhook = standardwebhooks.Webhook(self.secret)
        return [dict(webhook.verify(body, headers)) for body, headers in received]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def subscribe(served: Served, hooks: Hooks, events: list[str]) -> None:
    token = client_token(served, FLEET_AUTH)
    status, sub = served.call(
        "POST", "/v1/recipient/webhooks",
        headers={"Authorization": f"Bearer {token}",
                 "Content-Type": "application/json"},
        body=json.dumps({"url": hooks.url, "event_types": events}).encode(),
    )  # fmt: skip
    assert status == 201, sub
    hooks.secret = sub["secret"]


def deliver_until(served: Served, hooks: Hooks, done: Any, log: Path) -> list[dict[str, Any]]:
    """Run a ``broker webhooks worker`` process until ``done(messages)``, then stop it."""
    with log.open("ab") as out:
        worker = subprocess.Popen(
            [sys.executable, "-m", "broker.cli", "webhooks", "worker"],
            env=served.env, stdout=out, stderr=out,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 60
            while not done(messages := hooks.messages()):
                if worker.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"delivered so far: {messages}\n{log.read_text()}")
                time.sleep(0.2)
        finally:
            worker.terminate()
            worker.wait(timeout=30)
    return messages


def mileages(messages: list[dict[str, Any]], vin: str) -> list[float]:
    """The mileages the fleet operator received for ``vin``, in the order received."""
    return [
        r["data"]["mileage_km"]
        for m in messages
        if m["type"] == "data.vehicle.status"
        for r in m["data"]["records"]
        if r["vehicle"] == vin
    ]


def test_location_off_then_revoke_and_object_in_the_browser_stop_every_channel(
    chromium: Any, fleet_served: Served, tmp_path: Path, backend: str
) -> None:
    """carla owns the Clubman and the Aceman, both in the fleet of Lage Landen Lease (fleet
    clearance on legitimate interest, delivered by webhook); she lets Polder Verzekeringen
    pull her Clubman's data (consent, DPoP-bound token)."""
    served = fleet_served
    hooks = Hooks()
    try:
        _scenario(chromium, served, hooks, tmp_path, backend)
    finally:
        hooks.close()


def _scenario(chromium: Any, served: Served, hooks: Hooks, tmp_path: Path, backend: str) -> None:
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
    worker_log = tmp_path / "worker.log"
    subscribe(served, hooks, ["data.vehicle.status", "data.vehicle.position", "grant.ended"])

    # Log in; consent for the insurer on the Clubman: its pull carries positions.
    log_in(page, served.base, "carla")
    assert page.locator("html").get_attribute("lang") == "en"  # carla prefers English
    key = pull_site.example.DpopKey()
    token = insurer_token(page, served, key, CLUBMAN)
    start = datetime.now(UTC)  # the insurer's grant covers data recorded from now on
    stored = ingest(
        served,
        [record("p-before", "vehicle.position", start, POSITION),
         record("s-before", "vehicle.status", start, status_data(1000)),
         record("a-before", "vehicle.status", start, status_data(2000), vin=ACEMAN)],
    )  # fmt: skip
    assert stored == ["stored"] * 3
    status, pulled = insurer_pull(served, key, token, CLUBMAN, start)
    assert status == 200, pulled
    assert {r["category"] for r in pulled["records"]} == {"vehicle.status", "vehicle.position"}

    # Location off for the Clubman: no position reaches any recipient from now on —
    # not a new one (withheld at ingest), not a stored one (insurer's pull, fleet's queue).
    page.goto(f"{served.base}/vehicles")
    section = page.locator("section.vehicle").filter(has_text=CLUBMAN)
    section.get_by_label("Collect location").uncheck()
    section.get_by_label("Share location").uncheck()
    section.get_by_role("button").click()
    page.wait_for_url("**/vehicles?saved=1")
    assert not (
        page.locator("section.vehicle").filter(has_text=CLUBMAN)
        .get_by_label("Share location").is_checked()
    )  # fmt: skip
    shoot(page, f"{backend}-location-off-en-desktop")
    later = datetime.now(UTC)
    assert ingest(served, [record("p-after", "vehicle.position", later, POSITION)]) == ["withheld"]
    status, pulled = insurer_pull(served, key, token, CLUBMAN, start)
    assert status == 200, pulled
    assert {r["category"] for r in pulled["records"]} == {"vehicle.status"}
    assert "vehicle.position" in {w.get("category") for w in pulled["withheld"]}
    # The fleet's queue is delivered: the Clubman's status (queued after its position,
    # so its arrival means the position's turn has passed), the Aceman's status; no position.
    delivered = deliver_until(
        served, hooks, lambda ms: mileages(ms, CLUBMAN) and mileages(ms, ACEMAN), worker_log
    )
    assert delivered[0]["type"] == "ping"
    assert (mileages(delivered, CLUBMAN), mileages(delivered, ACEMAN)) == ([1000], [2000])
    assert "data.vehicle.position" not in {m["type"] for m in delivered}
    assert not any("latitude" in json.dumps(m) for m in delivered)

    # Revoke the insurer's consent in one click (with its confirmation page).
    status, covered = served.call(
        "GET", "/v1/recipient/grants",
        headers={"Authorization": f"DPoP {token}",
                 "DPoP": key.proof("GET", f"{served.base}/v1/recipient/grants", token)},
    )  # fmt: skip
    assert status == 200, covered
    [insurer_grant] = [g["grant"] for g in covered["grants"]]
    page.goto(f"{served.base}/grants")
    assert page.locator("h1").inner_text() == "My data sharing"
    shoot(page, f"{backend}-grants-en-desktop")
    card = page.locator(f"#grant-{insurer_grant}")
    card.get_by_role("button", name="Withdraw the permission for Polder Verzekeringen").click()
    page.wait_for_url(f"**/grants/{insurer_grant}/end?action=withdraw")
    shoot(page, f"{backend}-confirm-withdraw-en-desktop")
    page.get_by_role("button", name="Yes, withdraw now").click()
    page.wait_for_url(f"**/grants/{insurer_grant}?ended=1")
    assert page.get_by_role("status").is_visible()
    # The insurer's next pull, with the token it held, is refused.
    status, refused = insurer_pull(served, key, token, CLUBMAN, start)
    assert status == 401, refused

    # New fleet data is queued for both vehicles; carla objects to the Clubman's clearance.
    now = datetime.now(UTC)
    stored = ingest(
        served,
        [record("s-queued", "vehicle.status", now, status_data(3000)),
         record("a-queued", "vehicle.status", now, status_data(4000), vin=ACEMAN)],
    )  # fmt: skip
    assert stored == ["stored", "stored"]
    page.goto(f"{served.base}/grants")
    fleet = page.locator("#grant-gr-81ac3a06b35dc15c")
    fleet.get_by_role("button", name="Object to the processing by Lage Landen Lease").click()
    page.wait_for_url("**/grants/gr-81ac3a06b35dc15c/end?action=object")
    shoot(page, f"{backend}-confirm-object-en-desktop")
    page.get_by_role("button", name="Yes, object now").click()
    page.wait_for_url("**/grants/gr-81ac3a06b35dc15c?ended=1")
    shoot(page, f"{backend}-objected-en-desktop")

    # The fleet's queued Clubman webhook is not sent; the grant's end is (after it, in the
    # Clubman's order); the Aceman's queued data still is.
    seen = len(delivered)

    def ended(ms: list[dict[str, Any]]) -> bool:
        types = {(m["type"], m["data"].get("grant")) for m in ms[seen:]}
        return ("grant.ended", "gr-81ac3a06b35dc15c") in types and 4000 in mileages(ms, ACEMAN)

    delivered = deliver_until(served, hooks, ended, worker_log)
    assert mileages(delivered, CLUBMAN) == [1000]  # 3000 was queued, never sent
    assert mileages(delivered, ACEMAN) == [2000, 4000]
    [notice] = [m for m in delivered[seen:] if m["type"] == "grant.ended"]
    assert notice["data"]["erase"] is True

    # Download the copy: it lists both recipients.
    page.goto(f"{served.base}/")
    with page.expect_download() as info:
        page.get_by_role("button", name="Download my data").click()
    path = tmp_path / "copy.json"
    info.value.save_as(path)
    copy = json.loads(path.read_text("utf-8"))
    assert info.value.suggested_filename.startswith("my-vehicle-data-")
    assert copy["account"]["login"] == "carla"
    assert {"rcp-insurer", "rcp-fleet"} <= {r["id"] for r in copy["recipients"]}
    held = {r["id"] for r in copy["telemetry"]["records"]}
    assert {"p-before", "s-before", "s-queued", "a-before", "a-queued"} <= held
    assert "p-after" not in held  # collection was off: never kept
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
                               ("grant", "/grants/gr-677f38bc93017473"),
                               ("confirm", "/grants/gr-677f38bc93017473/end?action=withdraw"),
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
