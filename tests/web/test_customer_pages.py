"""The customer app's pages: the overview in Dutch and English, the confirmation step,
the location form, the download; strict CSP, no inline script or style, local assets."""

from __future__ import annotations

import json
import re
from typing import Any

from worlds import COOPER

from broker.http.middleware import HTML_CSP
from broker.http.openapi import API_DESCRIPTION
from broker.store.tables import GrantRow, VehicleRow

ANNA_INSURER = "gr-677f38bc93017473"
PAGES = ("/", "/grants", f"/grants/{ANNA_INSURER}", f"/grants/{ANNA_INSURER}/end?action=withdraw",
         "/vehicles")  # fmt: skip


def grant_state(web_app: Any, grant_id: str) -> str:
    row = web_app.broker.database.run_sync(lambda s: s.get(GrantRow, grant_id))
    return str(row.state)


async def test_the_overview_speaks_the_customers_language(web_app: Any, browser: Any) -> None:
    assert (await browser.login("anna", "demo-password-anna")).status == 303
    response = await browser.get("/grants")
    html = await response.text()
    assert response.status == 200
    assert '<html lang="nl">' in html  # anna prefers Dutch
    assert "<h1>Mijn gegevensdeling</h1>" in html
    assert "Polder Verzekeringen" in html and "Kraftwerk Komponenten" in html
    assert "SCC-DEMO-2025-017" in html  # India, under standard contractual clauses
    assert re.search(r'<button type="submit" class="danger"[^>]*>Intrekken</button>', html)
    assert re.search(r'<button type="submit" class="danger"[^>]*>Bezwaar maken</button>', html)
    english = await (await browser.get("/grants?lang=en")).text()
    assert '<html lang="en">' in english and "<h1>My data sharing</h1>" in english
    assert "Withdraw" in english


async def test_legal_obligation_is_shown_with_no_right_to_object(browser: Any) -> None:
    await browser.login("carla", "demo-password-carla")
    html = await (await browser.get("/grants?lang=en")).text()
    assert "European Commission" in html
    assert "there is no right to object" in html
    assert "Object</button>" not in html.split("European Commission")[1].split("</li>")[0]


async def test_revoking_takes_a_confirmation_then_one_click(web_app: Any, browser: Any) -> None:
    await browser.login("anna", "demo-password-anna")
    overview = await (await browser.get("/grants?lang=en")).text()
    assert 'action="/grants/gr-677f38bc93017473/end"' in overview
    confirm = await browser.get("/grants/gr-677f38bc93017473/end?action=withdraw")
    html = await confirm.text()
    assert confirm.status == 200
    assert "Withdraw the permission for Polder Verzekeringen?" in html
    assert grant_state(web_app, "gr-677f38bc93017473") == "active"  # showing it changes nothing
    token = browser.csrf_token_in(html, "/grants/gr-677f38bc93017473/end")
    done = await browser.post(
        "/grants/gr-677f38bc93017473/end", {"csrf_token": token, "action": "withdraw"}
    )
    assert done.status == 303
    assert grant_state(web_app, "gr-677f38bc93017473") == "revoked"
    page = await (await browser.get(done.headers["Location"])).text()
    assert 'role="status"' in page and "ended on every channel" in page
    assert "Withdraw</button>" not in page


async def test_a_grant_the_customer_cannot_end_has_no_confirmation(browser: Any) -> None:
    await browser.login("carla", "demo-password-carla")
    response = await browser.get("/grants/gr-9b2496dba961e34e/end?action=object")
    assert response.status == 409


async def test_the_location_form_switches_location_off(web_app: Any, browser: Any) -> None:
    await browser.login("anna", "demo-password-anna")
    html = await (await browser.get("/vehicles?lang=en")).text()
    assert '<label for="collection-1">Collect location</label>' in html
    token = browser.csrf_token_in(html, f"/vehicles/{COOPER}/location")
    response = await browser.post(f"/vehicles/{COOPER}/location", {"csrf_token": token})
    assert response.status == 303 and response.headers["Location"] == "/vehicles?saved=1"
    row = web_app.broker.database.run_sync(lambda s: s.get(VehicleRow, COOPER))
    assert (row.location_collection, row.location_sharing) == (False, False)
    saved = await (await browser.get("/vehicles?saved=1")).text()
    assert 'role="status"' in saved
    assert not re.search(r'id="collection-1" name="collection" checked', saved)


async def test_the_copy_downloads_as_a_json_attachment(browser: Any) -> None:
    await browser.login("anna", "demo-password-anna")
    response = await browser.get("/export")
    assert response.status == 200
    assert response.headers["Content-Disposition"].startswith('attachment; filename="my-')
    copy = json.loads(await response.read())
    assert copy["account"]["login"] == "anna"
    assert copy["contact"]["name"] == "Anna de Vries"


async def test_every_page_is_strict_about_scripts_styles_and_assets(browser: Any) -> None:
    await browser.login("anna", "demo-password-anna")
    for path in PAGES:
        response = await browser.get(path)
        assert response.status == 200, path
        assert response.headers["Content-Security-Policy"] == HTML_CSP
        assert "unsafe-inline" not in HTML_CSP
        html = await response.text()
        assert "<script" not in html and "<style" not in html, path
        assert not re.search(r"\sstyle=", html), path
        assert not re.search(r"\son[a-z]+=", html), path  # no inline event handlers
        assert not re.search(r'(?:src|href)="(?:https?:)?//', html), path  # all assets local
        assert '<main id="main"' in html and "<nav" in html and "<h1>" in html


async def test_the_pages_and_the_json_api_are_in_the_openapi_document(web_app: Any) -> None:
    app = web_app.server.app
    operations = app[API_DESCRIPTION].operations
    document: dict[str, dict[str, Any]] = {"paths": {}}
    for (method, path), operation in operations.items():
        document["paths"].setdefault(path, {})[method.lower()] = operation.document()
    mine = re.compile(r"^/(?:$|grants|vehicles|export|login|logout|static|oauth/authorize|v1/me)")
    routes = {
        (r.method, r.resource.canonical)
        for r in app.router.routes()
        if r.method != "HEAD" and r.resource is not None and mine.match(r.resource.canonical)
    }
    described = {
        (method.upper(), path)
        for path, operations in document["paths"].items()
        if mine.match(path)
        for method in operations
    }
    assert routes == described
    assert ("POST", "/v1/me/grants/{grant_id}/withdrawal") in described
    grants = document["paths"]["/v1/me/grants"]["get"]
    assert grants["security"] == [{"customer": ["grants:read"]}]
    assert document["paths"]["/grants"]["get"]["security"] == [{"session": []}]
    assert mine.match("/v1/recipient/grants") is None
    assert "/v1/recipient/grants" in document["paths"]


async def test_a_browsers_null_origin_is_judged_by_sec_fetch_site(
    web_app: Any, browser: Any
) -> None:
    # The pages send "Referrer-Policy: no-referrer", so real browsers post "Origin: null".
    await browser.login("anna", "demo-password-anna")
    html = await (await browser.get("/grants/gr-677f38bc93017473/end?action=withdraw")).text()
    form = {"csrf_token": browser.csrf_token_in(html, "/grants/gr-677f38bc93017473/end"),
            "action": "withdraw"}  # fmt: skip
    for fetch_site in ("cross-site", None):
        headers = {"Origin": "null"} | ({"Sec-Fetch-Site": fetch_site} if fetch_site else {})
        refused = await browser.post("/grants/gr-677f38bc93017473/end", form, headers=headers)
        assert refused.status == 403, fetch_site
    assert grant_state(web_app, "gr-677f38bc93017473") == "active"
    headers = {"Origin": "null", "Sec-Fetch-Site": "same-origin"}
    accepted = await browser.post("/grants/gr-677f38bc93017473/end", form, headers=headers)
    assert accepted.status == 303
    assert grant_state(web_app, "gr-677f38bc93017473") == "revoked"
