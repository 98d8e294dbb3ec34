"""The listings over HTTP: decided by the gate, refused like records, one audit entry each."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
from oauth_site import Site
from pull_site import client_token
from worlds import COUNTRYMAN

from broker.audit.entry import canonical_json
from broker.store import audit as audit_store

LISTINGS = ("/v1/recipient/vehicles", "/v1/recipient/grants")


def audit(site: Site) -> list[Any]:
    return site.broker.database.run_sync(lambda s: audit_store.read(s, start=0, limit=10_000))


async def get(site: Site, path: str, token: str) -> Any:
    return await site.browser.get(path, headers={"Authorization": f"Bearer {token}"})


async def test_a_bearer_token_under_a_dpop_contract_is_refused_like_a_pull(site: Site) -> None:
    bearer = await client_token(site, "insurer-demo", "vehicle.status:read")
    response = await get(site, "/v1/recipient/vehicles", bearer)
    assert response.status == 401
    assert response.headers["WWW-Authenticate"].startswith("DPoP ")
    body = await response.text()
    assert "requires DPoP" in body and "WMW" not in body and "gr-" not in body


@pytest.mark.parametrize("path", LISTINGS)
async def test_each_listing_is_one_audit_entry_matching_what_arrived(site: Site, path: str) -> None:
    token = await client_token(site, "dealer-demo", "vehicle.status:read")
    before = len(audit(site))
    response = await get(site, path, token)
    assert response.status == 200
    body = await response.json()
    release = body.pop("release")
    added = audit(site)[before:]
    assert [e.seq for e in added] == [release["audit_seq"]]
    [entry] = added
    digest = hashlib.sha256(canonical_json(body)).hexdigest()
    assert entry.payload_digest == release["digest"] == digest
    assert entry.kind == "listing" and entry.grant_ids
    if path.endswith("vehicles"):
        assert [v["vehicle"] for v in body["vehicles"]] == [COUNTRYMAN]


async def test_the_anonymised_map_provider_learns_no_grant(site: Site) -> None:
    token = await client_token(site, "maps-demo", "vehicle.position:read")
    before = len(audit(site))
    for path in LISTINGS:
        response = await get(site, path, token)
        assert response.status == 200
        body = await response.json()
        assert "release" not in body and not any(body.values())
        assert "gr-" not in json.dumps(body)
    assert len(audit(site)) == before  # nothing named, nothing to audit
