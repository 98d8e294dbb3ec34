"""Re-consent amends the open grant (issue 14), over real HTTP on both databases.

Tried as a recipient would see it: anna consented to the insurer, then approved again on
the consent page to share her positions as well. That created a second active grant for
the same vehicle and contract, and the newest then decided alone: a range the first grant
covered was refused as ``before_grant``. Now the approval amends the open grant (one
grant, with its history); what it adds covers only data recorded from the approval on,
what it removes stops at once; an ended grant stays ended and a new approval creates a
new grant.
"""

from __future__ import annotations

from contextlib import aclosing
from datetime import datetime, timedelta
from typing import Any

from oauth_site import Site, hidden_fields, log_in, relative
from pull_site import code_flow, drive, insurer_client
from worlds import COOPER, NOW

from broker.clock import format_instant, parse_instant
from broker.domain.grants import Grant, GrantAction, GrantState
from broker.store import audit as audit_store
from broker.store import grants as grant_store

SEED_GRANT = "gr-677f38bc93017473"  # anna's insurer grant on her Cooper: coarse location
STATUS, POSITION, GENERAL = "vehicle.status", "vehicle.position", "vehicle.general"
UNTIL = NOW + timedelta(hours=6)


def annas_insurer_grants(site: Site) -> list[Grant]:
    grants = site.broker.database.run_sync(lambda s: grant_store.for_vehicle(s, COOPER))
    return [g for g in grants if g.customer_id == "cus-anna" and g.contract_id == "insurer-ubi"]


def drive_five_hours(site: Site) -> None:
    """A status and a position record every minute from NOW + 1 min to NOW + 5 h."""
    site.clock.set(NOW + timedelta(hours=6))  # the records must not be in the future
    drive(site, COOPER, NOW + timedelta(minutes=1), 300)


async def consent_at(
    site: Site, at: datetime, scope: str | None = None, **choices: str
) -> tuple[Any, str, list[str]]:
    """anna approves on the consent page at ``at``: the client, the grant its token names
    and the token's scope."""
    site.clock.set(at)
    client = insurer_client(site, scope=scope)
    token = await code_flow(site, client, **choices)
    grants = (await client.get(f"{site.base}/v1/recipient/grants")).json()["grants"]
    [grant] = [g["grant"] for g in grants]
    return client, grant, token["scope"].split()


async def pull(client: Any, site: Site, since: datetime) -> Any:
    response = await client.get(
        f"{site.base}/v1/recipient/vehicles/{COOPER}/records",
        params={"since": format_instant(since), "until": format_instant(UNTIL), "limit": "5000"},
    )
    assert response.status_code == 200, response.text
    return response.json()


def recorded(body: Any, category: str) -> list[datetime]:
    return [parse_instant(r["recorded_at"]) for r in body["records"] if r["category"] == category]


def withheld(body: Any, code: str) -> dict[str, int]:
    return {w["category"]: w.get("count", 0) for w in body["withheld"] if w["code"] == code}


async def test_re_consent_amends_one_grant_adding_only_forward_and_removing_at_once(
    site: Site,
) -> None:
    # The seed grant ends first: a new approval then creates a new grant.
    site.broker.database.run_sync(
        lambda s: site.broker.grants.transition(
            s, SEED_GRANT, GrantAction.WITHDRAW, at=NOW - timedelta(hours=1), reason="test"
        ),
        write=True,
    )
    drive_five_hours(site)
    first, granted, _ = await consent_at(site, NOW, category=GENERAL)  # no position
    await first.aclose()
    assert granted != SEED_GRANT

    added = NOW + timedelta(hours=2)
    second, again, _ = await consent_at(site, added, category=POSITION, precision="precise")
    assert again == granted  # the token names the amended grant, its id unchanged
    [grant] = [g for g in annas_insurer_grants(site) if g.state is not GrantState.REVOKED]
    assert grant.id == granted and grant.categories >= {STATUS, POSITION}
    actions = [e.action for e in grant.history]
    assert actions == [GrantAction.ACTIVATE, GrantAction.ACTIVATE, GrantAction.AMEND]
    assert grant.history[-1].at == added and grant.history[-1].to_state is GrantState.ACTIVE
    entries = site.broker.database.run_sync(lambda s: audit_store.read(s, start=0, limit=10**6))
    events = [e for e in entries if e.kind == "grant_event" and e.subject_ref == granted]
    assert [e.details["action"] for e in events] == ["activate", "activate", "amend"]

    async with aclosing(second):
        body = await pull(second, site, NOW)  # the range the grant covered before still pulls
        status, position = recorded(body, STATUS), recorded(body, POSITION)
        assert len(status) == 300 and min(status) < added  # status from before the approval
        assert position and min(position) >= added  # position only from the approval on
        early = withheld(body, "recorded_before_category_granted")
        assert early == {POSITION: 300 - len(position)}
        assert len(position) == sum(1 for t in status if t >= added)

        # A third approval without position: it stops at once, for older data too.
        third, _, _ = await consent_at(site, added + timedelta(minutes=1), category=GENERAL)
        await third.aclose()
        body = await pull(second, site, NOW)
        assert recorded(body, POSITION) == [] and len(recorded(body, STATUS)) == 300
        assert POSITION in withheld(body, "category_not_granted")
    [grant] = [g for g in annas_insurer_grants(site) if g.state is not GrantState.REVOKED]
    assert grant.id == granted and POSITION not in grant.categories
    assert [e.action for e in grant.history].count(GrantAction.AMEND) == 2

    # Once withdrawn, it stays ended; the next approval creates a new grant.
    withdrawn = added + timedelta(minutes=2)
    site.broker.database.run_sync(
        lambda s: site.broker.grants.transition(
            s, granted, GrantAction.WITHDRAW, at=withdrawn, reason="test"
        ),
        write=True,
    )
    fourth, renewed, _ = await consent_at(site, withdrawn + timedelta(minutes=1), category=POSITION)
    await fourth.aclose()
    assert renewed not in (granted, SEED_GRANT)
    states = {g.id: g.state for g in annas_insurer_grants(site)}
    assert states == {
        SEED_GRANT: GrantState.REVOKED,
        granted: GrantState.REVOKED,
        renewed: GrantState.ACTIVE,
    }


async def test_a_finer_precision_covers_only_later_data_and_the_older_range_still_pulls(
    site: Site,
) -> None:
    drive_five_hours(site)
    finer = NOW + timedelta(hours=2)
    client, granted, _ = await consent_at(site, finer, category=POSITION, precision="precise")
    assert granted == SEED_GRANT  # anna's open grant, amended
    [grant] = annas_insurer_grants(site)
    assert grant.location_precision == "precise" and grant.history[-1].action is GrantAction.AMEND
    async with aclosing(client):
        # From before the seed grant's own start (2026-01-15) is still refused ...
        response = await client.get(
            f"{site.base}/v1/recipient/vehicles/{COOPER}/records",
            params={"since": "2026-01-01T00:00:00Z", "until": format_instant(UNTIL)},
        )
        assert response.status_code == 403
        assert [r["code"] for r in response.json()["reasons"]] == ["before_grant"]
        # ... but everything the grant covered before the approval still pulls.
        body = await pull(client, site, NOW - timedelta(days=7))
    positions = [r for r in body["records"] if r["category"] == POSITION]
    assert len(positions) == 300 and not withheld(body, "recorded_before_category_granted")
    before = [r for r in positions if parse_instant(r["recorded_at"]) < finer]
    after = [r for r in positions if parse_instant(r["recorded_at"]) >= finer]
    assert len(before) == 119 and len(after) == 181
    # Before the approval, at the coarse precision anna had given: snapped to the 5 km grid.
    assert len({r["data"]["latitude"] for r in before}) <= 2
    # From the approval on, precise (rounded to 4 decimals by the contract's transform).
    for record in after:
        minute = (parse_instant(record["recorded_at"]) - NOW) // timedelta(minutes=1) - 1
        assert record["data"]["latitude"] == round(52.37 + minute / 10000, 4)

    # Asked for status only, anna is not asked about position: it stays as she gave it
    # (and the token carries only what this page approved).
    later = finer + timedelta(minutes=1)
    narrow, same, scope = await consent_at(site, later, "vehicle.status:read", category=GENERAL)
    await narrow.aclose()
    assert same == SEED_GRANT and "vehicle.position:read" not in scope
    [grant] = annas_insurer_grants(site)
    assert POSITION in grant.categories and grant.location_precision == "precise"
    assert [e.action for e in grant.history].count(GrantAction.AMEND) == 2


async def test_the_page_approves_only_what_it_offered(site: Site) -> None:
    """Asked for status only, a forged answer adding precise positions changes nothing."""
    client = insurer_client(site, scope="vehicle.status:read")
    meta = await (await site.browser.get("/.well-known/oauth-authorization-server")).json()
    await log_in(site, "anna", "demo-password-anna")
    async with aclosing(client):
        url, _ = client.create_authorization_url(
            meta["authorization_endpoint"], code_verifier="v" * 50
        )
    page = await site.browser.get(relative(url), allow_redirects=False)
    assert page.status == 200
    form = hidden_fields(await page.text()) | {
        "decision": "approve",
        "vehicle": COOPER,
        "category": POSITION,
        "precision": "precise",
    }
    answer = await site.browser.post("/oauth/authorize", data=form, allow_redirects=False)
    assert answer.status == 400
    [grant] = annas_insurer_grants(site)
    assert grant.location_precision == "coarse" and grant.amendments == ()
