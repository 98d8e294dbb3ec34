"""SSRF: forbidden addresses are refused before any connection is made (the autouse
``loopback_only`` guard fails the test if a connection beyond loopback is even tried)."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import web

from broker.webhooks.egress import Egress, EgressPolicy, UrlRefused, refusal, vet_url

FORBIDDEN = ["127.0.0.1", "169.254.169.254", "10.0.0.1", "192.168.1.10", "::ffff:10.0.0.1",
             "100.64.0.1", "172.16.0.1", "0.0.0.0", "::1",  # noqa: S104 "fe80::1", "224.0.0.1",
             "::ffff:127.0.0.1", "2002:a00:1::", "64:ff9b::a00:1", "::10.0.0.1"]  # fmt: skip


@pytest.mark.parametrize("address", FORBIDDEN)
def test_forbidden_addresses_are_refused(address: str) -> None:
    assert refusal(address, allow_loopback=False) is not None


def test_public_addresses_pass_and_loopback_only_with_the_setting() -> None:
    assert refusal("93.184.215.14", allow_loopback=False) is None
    assert refusal("2606:4700::1111", allow_loopback=False) is None
    assert refusal("127.0.0.1", allow_loopback=True) is None
    assert refusal("10.0.0.1", allow_loopback=True) is not None


def answers(address: str) -> Any:
    async def lookup(host: str, port: int) -> list[str]:
        return ["93.184.215.14", address]  # one good answer does not save a bad one

    return lookup


@pytest.mark.parametrize("address", ["127.0.0.1", "169.254.169.254", "10.1.2.3", "192.168.0.1",
                                     "::ffff:10.0.0.1"])  # fmt: skip
async def test_a_name_resolving_to_a_forbidden_address_is_never_called(address: str) -> None:
    egress = Egress(EgressPolicy(), answers(address))
    await egress.start()
    try:
        answer = await egress.post("https://hooks.example.com/x", b"{}", {})
    finally:
        await egress.close()
    assert answer.status is None and answer.error.startswith("refused")


@pytest.mark.parametrize("url", ["https://10.0.0.1/", "https://[::ffff:10.0.0.1]/",
                                 "https://169.254.169.254/latest/meta-data",
                                 "http://127.0.0.1:9/", "https://127.0.0.1/",
                                 "ftp://example.com/", "https://user:pw@example.com/"])  # fmt: skip
async def test_literal_and_malformed_urls_are_refused(url: str) -> None:
    with pytest.raises(UrlRefused):
        await vet_url(url, EgressPolicy(), answers("93.184.215.14"))


async def test_http_to_a_public_name_is_refused_even_in_development() -> None:
    async def public(host: str, port: int) -> list[str]:
        return ["93.184.215.14"]

    with pytest.raises(UrlRefused, match="https"):
        await vet_url("http://hooks.example.com/", EgressPolicy(allow_http_loopback=True), public)


REDIRECTS = ["http://10.0.0.1/x", "http://169.254.169.254/", "http://[::ffff:10.0.0.1]/",
             "http://internal.example/"]  # fmt: skip


@pytest.mark.parametrize("target", REDIRECTS)
async def test_a_redirect_to_a_forbidden_address_is_not_followed(
    aiohttp_server: Any, target: str
) -> None:
    hits: list[str] = []

    async def redirect(request: web.Request) -> web.Response:
        hits.append(request.path)
        raise web.HTTPTemporaryRedirect(target)

    app = web.Application()
    app.router.add_post("/hook", redirect)
    server = await aiohttp_server(app, host="127.0.0.1")

    async def lookup(host: str, port: int) -> list[str]:
        return ["127.0.0.1"] if host in {"127.0.0.1", "localhost"} else ["10.9.9.9"]

    egress = Egress(EgressPolicy(allow_http_loopback=True), lookup)
    await egress.start()
    try:
        answer = await egress.post(str(server.make_url("/hook")), b"{}", {})
    finally:
        await egress.close()
    assert hits == ["/hook"]
    assert answer.status is None and answer.error.startswith("refused")
