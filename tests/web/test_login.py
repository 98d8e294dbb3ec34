"""Customer login through real HTTP: language, cookie, CSRF, back-off, expiry, redirects."""

from __future__ import annotations

import hashlib
import re
from datetime import timedelta
from typing import Any

import pytest
from sqlmodel import select

from broker.http.middleware import HTML_CSP
from broker.store.tables import CustomerSessionRow, LoginThrottleRow
from broker.web.csrf import LOGIN_CSRF_COOKIE
from broker.web.i18n import LANG_COOKIE
from broker.web.sessions import SESSION_COOKIE

ANNA = ("anna", "demo-password-anna")
BRAM = ("bram", "demo-password-bram")


def session_rows(web_app: Any) -> list[CustomerSessionRow]:
    return list(
        web_app.broker.database.run_sync(lambda s: s.exec(select(CustomerSessionRow)).all())
    )


def html_lang(html: str) -> str:
    match = re.search(r'<html lang="([a-z]+)">', html)
    assert match
    return match.group(1)


# -- language --


@pytest.mark.parametrize(
    ("accept_language", "lang", "title"),
    [
        ("nl", "nl", "Inloggen"),
        ("nl-NL,nl;q=0.9,en;q=0.8", "nl", "Inloggen"),
        ("en;q=0.4, nl;q=0.8", "nl", "Inloggen"),
        ("nl;q=0, en", "en", "Log in"),
        ("en-GB", "en", "Log in"),
        ("de, fr;q=0.9", "en", "Log in"),
        (None, "en", "Log in"),
    ],
)
async def test_login_page_speaks_the_browsers_language(
    browser: Any, accept_language: str | None, lang: str, title: str
) -> None:
    headers = {"Accept-Language": accept_language} if accept_language else {}
    response = await browser.get("/login", headers=headers)
    html = await response.text()
    assert response.status == 200
    assert html_lang(html) == lang
    assert f"<h1>{title}</h1>" in html


async def test_a_language_override_is_remembered(browser: Any) -> None:
    response = await browser.get("/login?lang=nl", headers={"Accept-Language": "en"})
    assert html_lang(await response.text()) == "nl"
    assert browser.set_cookies(response)[LANG_COOKIE].value == "nl"

    again = await browser.get("/login", headers={"Accept-Language": "en"})
    assert html_lang(await again.text()) == "nl"

    back = await browser.get("/login?lang=en")
    assert html_lang(await back.text()) == "en"


async def test_the_language_links_keep_the_next_page(browser: Any) -> None:
    html = await (await browser.get("/login?next=/consent%3Fx%3D1")).text()
    assert 'href="/login?next=/consent?x%3D1&amp;lang=nl"' in html
    assert '<input type="hidden" name="next" value="/consent?x=1">' in html


async def test_a_logged_in_customer_gets_her_own_language(browser: Any) -> None:
    english = {"Accept-Language": "en"}
    assert (await browser.login(*ANNA, headers=english)).status == 303

    page = await browser.get("/", headers=english)
    html = await page.text()
    assert page.status == 200
    assert html_lang(html) == "nl"
    assert "U bent ingelogd als anna." in html
    assert "Uitloggen" in html


async def test_a_customer_preferring_english_gets_english(browser: Any) -> None:
    await browser.login(*BRAM, headers={"Accept-Language": "nl"})
    html = await (await browser.get("/", headers={"Accept-Language": "nl"})).text()
    assert html_lang(html) == "en"
    assert "You are logged in as bram." in html


# -- logging in --


async def test_a_correct_login_sets_a_locked_down_session_cookie(
    web_app: Any, browser: Any
) -> None:
    response = await browser.login(*ANNA)
    assert response.status == 303
    assert response.headers["Location"] == "/"

    cookies = browser.set_cookies(response)
    cookie = cookies[SESSION_COOKIE]
    assert SESSION_COOKIE.startswith("__Host-")
    assert cookie["httponly"] is True
    assert cookie["secure"] is True
    assert cookie["samesite"] == "Lax"
    assert cookie["path"] == "/"
    assert not cookie["domain"]
    assert len(cookie.value) == 43  # 256 bits, base64url
    # The login form's own CSRF cookie is dropped once it has served.
    assert cookies[LOGIN_CSRF_COOKIE]["max-age"] == "0"

    # Only the SHA-256 of the cookie is stored.
    (row,) = session_rows(web_app)
    assert row.id_hash == hashlib.sha256(cookie.value.encode()).hexdigest()
    assert row.customer_id == "cus-anna"

    page = await browser.get("/")
    assert page.status == 200
    assert "U bent ingelogd als anna." in await page.text()


async def test_the_start_page_sends_a_stranger_to_the_login_page(browser: Any) -> None:
    response = await browser.get("/")
    assert response.status == 303
    assert response.headers["Location"] == "/login"

    deeper = await browser.get("/?view=vehicles")
    assert deeper.status == 303
    assert deeper.headers["Location"] == "/login?next=/?view%3Dvehicles"


async def test_after_login_the_customer_goes_to_next(browser: Any) -> None:
    response = await browser.login(*ANNA, next_path="/?view=vehicles")
    assert response.status == 303
    assert response.headers["Location"] == "/?view=vehicles"


@pytest.mark.parametrize(
    "target",
    [
        "https://evil.example/",
        "//evil.example",
        "//evil.example/path",
        "/\\evil.example",
        "http:/evil.example",
        "javascript:alert(1)",
        "/ /evil",
    ],
)
async def test_next_never_leaves_the_site(browser: Any, target: str) -> None:
    page = await browser.get("/login", params={"next": target})
    assert '<input type="hidden" name="next" value="/">' in await page.text()

    response = await browser.login(*ANNA, next_path=target)
    assert response.status == 303
    assert response.headers["Location"] == "/"


async def test_a_wrong_password_and_an_unknown_login_get_the_same_answer(
    browser: Any,
) -> None:
    wrong = await browser.login("anna", "not-her-password")
    unknown = await browser.login("nobody-at-all", "not-her-password")

    assert wrong.status == unknown.status == 400
    wrong_html = (await wrong.text()).replace('value="anna"', 'value="LOGIN"')
    unknown_html = (await unknown.text()).replace('value="nobody-at-all"', 'value="LOGIN"')
    assert wrong_html == unknown_html
    assert "The login name or password is incorrect." in wrong_html
    assert SESSION_COOKIE not in browser.set_cookies(wrong)
    assert SESSION_COOKIE not in browser.set_cookies(unknown)
    assert sorted(wrong.headers) == sorted(unknown.headers)


async def test_the_error_is_linked_to_the_fields(browser: Any) -> None:
    html = await (await browser.login("anna", "wrong")).text()
    assert 'role="alert"' in html
    assert '<p id="form-error">' in html
    for field in ("login", "password"):
        tag = re.search(rf'<input id="{field}"[^>]*>', html)
        assert tag
        assert 'aria-invalid="true"' in tag.group(0)
        assert 'aria-describedby="form-error"' in tag.group(0)

    empty = await browser.login("", "")
    html = await empty.text()
    assert empty.status == 400
    assert '<p class="field-error" id="login-error">Enter your login name.</p>' in html
    assert 'aria-describedby="login-error"' in html
    assert 'aria-describedby="password-error"' in html


async def test_login_regenerates_the_session_id(web_app: Any, browser: Any) -> None:
    attacker = await web_app.new_browser()
    await attacker.login(*BRAM)
    planted = attacker.session_cookie()
    assert planted
    jar = browser.client.session.cookie_jar
    jar.update_cookies({SESSION_COOKIE: planted}, browser.client.make_url("/"))
    assert "You are logged in as bram." in await (await browser.get("/")).text()

    await browser.login(*ANNA)
    fresh = browser.session_cookie()
    assert fresh and fresh != planted
    (row,) = session_rows(web_app)  # the planted session is gone
    assert row.customer_id == "cus-anna"
    assert (await attacker.get("/")).status == 303
    assert "U bent ingelogd als anna." in await (await browser.get("/")).text()


# -- CSRF --


async def test_a_login_form_without_its_token_is_refused(browser: Any) -> None:
    await browser.get("/login")  # the token cookie is set
    response = await browser.post("/login", {"login": "anna", "password": ANNA[1]})
    html = await response.text()
    assert response.status == 403
    assert response.content_type == "text/html"
    assert response.headers["Content-Security-Policy"] == HTML_CSP
    assert "<h1>Form refused</h1>" in html
    assert browser.session_cookie() is None


async def test_a_login_token_without_its_cookie_is_refused(web_app: Any, browser: Any) -> None:
    token = await browser.csrf_token()
    other = await web_app.new_browser()  # has no cookie
    response = await other.post(
        "/login", {"csrf_token": token, "login": "anna", "password": ANNA[1]}
    )
    assert response.status == 403


async def test_a_forged_login_token_is_refused(browser: Any) -> None:
    forged = "nonce.99999999999.bWFj"
    browser.client.session.cookie_jar.update_cookies(
        {LOGIN_CSRF_COOKIE: forged}, browser.client.make_url("/")
    )
    response = await browser.post(
        "/login", {"csrf_token": forged, "login": "anna", "password": ANNA[1]}
    )
    assert response.status == 403


async def test_an_expired_login_token_is_refused(web_app: Any, browser: Any) -> None:
    token = await browser.csrf_token()
    web_app.clock.advance(timedelta(hours=1, seconds=1))
    response = await browser.post(
        "/login", {"csrf_token": token, "login": "anna", "password": ANNA[1]}
    )
    assert response.status == 403


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "https://evil.example"},
        {"Origin": "null"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
    ],
)
async def test_a_form_from_another_site_is_refused(browser: Any, headers: dict[str, str]) -> None:
    response = await browser.login(*ANNA, headers=headers)
    assert response.status == 403
    assert browser.session_cookie() is None


async def test_a_form_from_this_site_passes_the_origin_check(web_app: Any, browser: Any) -> None:
    origin = str(web_app.server.make_url("/").origin())
    response = await browser.login(
        *ANNA, headers={"Origin": origin, "Sec-Fetch-Site": "same-origin"}
    )
    assert response.status == 303


async def test_a_form_with_another_sessions_token_is_refused(web_app: Any) -> None:
    anna, bram = await web_app.new_browser(), await web_app.new_browser()
    await anna.login(*ANNA)
    await bram.login(*BRAM)
    brams_token = await bram.csrf_token("/", "/logout")
    annas_token = await anna.csrf_token("/", "/logout")
    assert brams_token != annas_token

    refused = await anna.post("/logout", {"csrf_token": brams_token})
    assert refused.status == 403
    assert refused.headers["Content-Security-Policy"] == HTML_CSP
    missing = await anna.post("/logout", {})
    assert missing.status == 403
    assert (await anna.get("/")).status == 200  # still logged in


# -- back-off --


async def test_five_failures_lock_the_login_with_retry_after(web_app: Any, browser: Any) -> None:
    for _ in range(5):
        assert (await browser.login("anna", "wrong")).status == 400

    locked = await browser.login(*ANNA)
    html = await locked.text()
    assert locked.status == 429
    assert locked.headers["Retry-After"] == "60"
    assert locked.headers["Content-Security-Policy"] == HTML_CSP
    assert "Try again in 1 minute." in html
    assert browser.session_cookie() is None

    web_app.clock.advance(timedelta(seconds=30))
    still = await browser.login(*ANNA)
    assert still.status == 429
    assert still.headers["Retry-After"] == "30"
    assert "Try again in 30 seconds." in await still.text()

    web_app.clock.advance(timedelta(seconds=31))
    assert (await browser.login(*ANNA)).status == 303
    # A success forgets the failures.
    assert web_app.broker.database.run_sync(lambda s: s.exec(select(LoginThrottleRow)).all()) == []


async def test_the_lock_grows_with_each_further_failure(web_app: Any, browser: Any) -> None:
    for _ in range(5):
        await browser.login("anna", "wrong")
    web_app.clock.advance(timedelta(minutes=1))
    assert (await browser.login("anna", "wrong")).status == 400
    locked = await browser.login(*ANNA, headers={"Accept-Language": "nl"})
    assert locked.headers["Retry-After"] == "120"
    assert "Probeer het over 2 minuten opnieuw." in await locked.text()

    web_app.clock.advance(timedelta(minutes=2))
    await browser.login("anna", "wrong")
    assert (await browser.login(*ANNA)).headers["Retry-After"] == "240"


async def test_an_unknown_login_is_locked_the_same_way(web_app: Any, browser: Any) -> None:
    for _ in range(5):
        await browser.login("nobody-at-all", "wrong")
    locked = await browser.login("nobody-at-all", "wrong")
    assert locked.status == 429
    assert locked.headers["Retry-After"] == "60"


async def test_the_lock_is_per_login_name_and_stores_no_name(web_app: Any, browser: Any) -> None:
    for _ in range(5):
        await browser.login("anna", "wrong")
    assert (await browser.login(*BRAM)).status == 303
    rows = web_app.broker.database.run_sync(lambda s: s.exec(select(LoginThrottleRow)).all())
    assert len(rows) == 1
    assert "anna" not in rows[0].key_hash


# -- session expiry and logout --


async def test_an_idle_session_expires(web_app: Any, browser: Any) -> None:
    await browser.login(*ANNA)
    web_app.clock.advance(timedelta(minutes=29))
    assert (await browser.get("/")).status == 200  # a request keeps it alive
    web_app.clock.advance(timedelta(minutes=29))
    assert (await browser.get("/")).status == 200
    web_app.clock.advance(timedelta(minutes=30))
    gone = await browser.get("/")
    assert gone.status == 303
    assert gone.headers["Location"] == "/login"
    assert session_rows(web_app) == []


async def test_a_session_ends_at_its_absolute_expiry(web_app: Any, browser: Any) -> None:
    await browser.login(*ANNA)
    for _ in range(31):  # 7 h 45 min of steady use
        web_app.clock.advance(timedelta(minutes=15))
        assert (await browser.get("/")).status == 200
    web_app.clock.advance(timedelta(minutes=15))  # 8 h after login
    assert (await browser.get("/")).status == 303
    assert session_rows(web_app) == []


async def test_logout_ends_the_session_on_the_server(web_app: Any, browser: Any) -> None:
    await browser.login(*ANNA)
    old_cookie = browser.session_cookie()
    assert old_cookie

    response = await browser.logout()
    assert response.status == 303
    assert response.headers["Location"] == "/login"
    assert browser.set_cookies(response)[SESSION_COOKIE]["max-age"] == "0"
    assert session_rows(web_app) == []

    replay = await web_app.new_browser()
    again = await replay.get("/", cookies={SESSION_COOKIE: old_cookie})
    assert again.status == 303
    assert again.headers["Location"] == "/login"


# -- headers and assets --


async def test_every_page_has_the_html_csp_and_only_local_assets(
    web_app: Any, browser: Any
) -> None:
    pages = [
        await browser.get("/login"),
        await browser.get("/login?lang=nl"),
        await browser.login("anna", "wrong"),
        await browser.post("/login", {}),
    ]
    for _ in range(4):
        await browser.login("anna", "wrong")
    pages.append(await browser.login("anna", "wrong"))  # 429
    web_app.clock.advance(timedelta(hours=1))
    await browser.login(*ANNA)
    pages.append(await browser.get("/"))
    pages.append(await browser.post("/logout", {"csrf_token": "not-it"}))

    assert [page.status for page in pages] == [200, 200, 400, 403, 429, 200, 403]
    for page in pages:
        html = await page.text()
        assert page.headers["Content-Type"] == "text/html; charset=utf-8"
        assert page.headers["Content-Security-Policy"] == HTML_CSP
        assert page.headers["X-Frame-Options"] == "DENY"
        assert page.headers["Cache-Control"] == "no-store"
        assert "http://" not in html
        assert "https://" not in html
        assert "<script" not in html
        assert "<style" not in html
        assert " style=" not in html
        assert '<link rel="stylesheet" href="/static/broker.css">' in html
        assert '<a class="skip-link" href="#main">' in html
        assert '<main id="main"' in html
        assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in html


async def test_the_stylesheet_is_served_locally(browser: Any) -> None:
    response = await browser.get("/static/broker.css")
    assert response.status == 200
    assert response.content_type == "text/css"
    css = await response.text()
    assert ".skip-link" in css
    assert "@media" in css
    assert "url(" not in css  # no fonts or images from anywhere
    assert "@import" not in css

    for path in ("/static/missing.css", "/static/..%2Fcsrf.py", "/static/%2e%2e/login.py"):
        assert (await browser.get(path)).status == 404


async def test_the_login_form_is_shown_to_a_logged_in_customer_too(browser: Any) -> None:
    await browser.login(*ANNA)
    page = await browser.get("/login")
    assert page.status == 200
    assert '<form method="post" action="/login"' in await page.text()


async def test_the_logout_button_works_on_the_login_page_too(web_app: Any, browser: Any) -> None:
    await browser.login(*ANNA)
    html = await (await browser.get("/login")).text()
    token = browser.csrf_token_in(html, "/logout")
    assert token != browser.csrf_token_in(html, "/login")
    response = await browser.post("/logout", {"csrf_token": token})
    assert response.status == 303
    assert session_rows(web_app) == []
