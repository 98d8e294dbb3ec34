"""A customer never sees or acts on another customer's grants or vehicles: the JSON API
and the pages answer 404 exactly as for ids that were never issued; forms need their
CSRF token."""

from __future__ import annotations

import re
from typing import Any

from oauth_site import hidden_fields, log_in
from worlds import CLUBMAN, COOPER

NEVER_ISSUED = "gr-0000000000000000"


def without_request_id(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k not in {"request_id", "instance"}}


async def state_of(kit: Any, grant_id: str) -> str:
    token = await kit.token("anna")
    _, body, _ = await kit.api("GET", f"/v1/me/grants/{grant_id}", token)
    return str(body["state"])


async def test_another_customers_grant_is_not_found_like_one_never_issued(kit: Any) -> None:
    token = await kit.token("carla")
    answers = {}
    for grant_id in ("gr-677f38bc93017473", NEVER_ISSUED):
        for method, path in (
            ("GET", f"/v1/me/grants/{grant_id}"),
            ("GET", f"/v1/me/grants/{grant_id}/transfers"),
            ("POST", f"/v1/me/grants/{grant_id}/withdrawal"),
            ("POST", f"/v1/me/grants/{grant_id}/objection"),
        ):
            status, body, _ = await kit.api(method, path, token)
            assert status == 404, (method, path, body)
            answers.setdefault((method, path.replace(grant_id, "X")), []).append(
                without_request_id(body)
            )
    for first, second in answers.values():
        assert first == second  # nothing tells an existing grant from a guessed one
    assert await state_of(kit, "gr-677f38bc93017473") == "active"


async def test_another_customers_vehicle_cannot_be_switched(kit: Any) -> None:
    token = await kit.token("bram")  # drives anna's Cooper, has nothing to do with the Clubman
    for vin in (CLUBMAN, "WMW00000000000000"):
        status, body, _ = await kit.api(
            "PUT", f"/v1/me/vehicles/{vin}/location", token,
            json={"collection": False, "sharing": False},
        )  # fmt: skip
        assert status == 404, body
    _, carla, _ = await kit.api("GET", "/v1/me/vehicles", await kit.token("carla"))
    clubman = next(v for v in carla["vehicles"] if v["vin"] == CLUBMAN)
    assert clubman["location"] == {"collection": True, "sharing": True}


async def test_the_pages_answer_404_for_another_customers_grant(kit: Any) -> None:
    site = kit.site
    await log_in(site, "carla", "demo-password-carla")
    pages = {}
    for grant_id in ("gr-677f38bc93017473", NEVER_ISSUED):
        for path in (f"/grants/{grant_id}", f"/grants/{grant_id}/end?action=withdraw"):
            response = await site.browser.get(path, allow_redirects=False)
            assert response.status == 404, path
            html = await response.text()
            assert "Polder" not in html and COOPER not in html
            pages.setdefault(path.replace(grant_id, "X"), []).append(html.replace(grant_id, "X"))
    for first, second in pages.values():
        assert first == second
    # Posting the confirmation form with carla's own valid token: still not found.
    home = await site.browser.get("/grants")
    token = hidden_fields(await home.text())["csrf_token"]
    response = await site.browser.post(
        "/grants/gr-677f38bc93017473/end",
        data={"csrf_token": token, "action": "withdraw"},
        allow_redirects=False,
    )
    assert response.status == 404
    response = await site.browser.post(
        f"/vehicles/{COOPER}/location", data={"csrf_token": token}, allow_redirects=False
    )
    assert response.status == 404
    assert await state_of(kit, "gr-677f38bc93017473") == "active"


async def test_a_form_without_its_csrf_token_is_refused(kit: Any) -> None:
    site = kit.site
    await log_in(site, "anna", "demo-password-anna")
    page = await site.browser.get("/grants/gr-677f38bc93017473/end?action=withdraw")
    assert page.status == 200
    form = hidden_fields(await page.text())
    assert form["action"] == "withdraw" and form["csrf_token"]
    for data in ({"action": "withdraw"}, {"action": "withdraw", "csrf_token": "forged"}):
        response = await site.browser.post(
            "/grants/gr-677f38bc93017473/end", data=data, allow_redirects=False
        )
        assert response.status == 403
    response = await site.browser.post(
        f"/vehicles/{COOPER}/location", data={}, allow_redirects=False
    )
    assert response.status == 403
    # Another site's page posting with the right token is refused too.
    response = await site.browser.post(
        "/grants/gr-677f38bc93017473/end",
        data=form,
        headers={"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"},
        allow_redirects=False,
    )
    assert response.status == 403
    assert await state_of(kit, "gr-677f38bc93017473") == "active"
    _, vehicles, _ = await kit.api("GET", "/v1/me/vehicles", await kit.token("anna"))
    assert vehicles["vehicles"][0]["location"] == {"collection": True, "sharing": True}
    # With the token, the same form ends the grant.
    await log_in(site, "anna", "demo-password-anna")
    page = await site.browser.get("/grants/gr-677f38bc93017473/end?action=withdraw")
    response = await site.browser.post(
        "/grants/gr-677f38bc93017473/end",
        data=hidden_fields(await page.text()),
        allow_redirects=False,
    )
    assert response.status == 303
    assert re.fullmatch(r"/grants/gr-677f38bc93017473\?ended=1", response.headers["Location"])
    assert await state_of(kit, "gr-677f38bc93017473") == "revoked"


async def test_pages_need_a_login(kit: Any) -> None:
    for path in ("/grants", "/grants/gr-677f38bc93017473", "/vehicles", "/export"):
        response = await kit.site.browser.get(path, allow_redirects=False)
        assert response.status == 303
        assert response.headers["Location"].startswith("/login")
