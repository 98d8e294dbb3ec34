"""The OpenAPI 3.1 document: the same paths as the route table, valid, every schema local."""

from __future__ import annotations

from typing import Any

from openapi_spec_validator import validate
from referencing.jsonschema import DRAFT202012

from broker.bootstrap import create_web_app
from broker.settings import Settings


def _pointer(document: Any, ref: str) -> Any:
    node = document
    for part in ref.removeprefix("#/").split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


async def test_the_route_table_and_the_documents_paths_are_the_same_set(
    tmp_path: Any, aiohttp_client: Any
) -> None:
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'b.sqlite3'}",
        master_key_file=tmp_path / "master.key",
        audit_key_file=tmp_path / "audit.key",
        oauth_keys_dir=tmp_path / "keys",
    )
    app = create_web_app(settings)
    client = await aiohttp_client(app)
    response = await client.get("/openapi.json")
    assert response.status == 200
    document = await response.json()

    served = {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.method != "HEAD" and route.resource is not None
    }
    documented = {
        (method.upper(), path)
        for path, operations in document["paths"].items()
        for method in operations
    }
    assert served == documented
    assert ("GET", "/v1/recipient/vehicles/{vehicle}/records") in documented

    validate(document)  # the OpenAPI 3.1 schema
    refs = _refs(document)
    assert refs and all(ref.startswith("#/") for ref in refs)  # resolvable without fetching
    for ref in refs:
        assert _pointer(document, ref) is not None, ref
    for name, schema in document["components"]["schemas"].items():
        DRAFT202012.create_resource(schema)  # each a JSON Schema 2020-12 resource
        assert "$id" not in schema, name  # no base-URI change under the document


async def test_request_schemas_are_the_ones_that_validate_requests(
    tmp_path: Any, aiohttp_client: Any
) -> None:
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'b.sqlite3'}",
        master_key_file=tmp_path / "master.key",
        audit_key_file=tmp_path / "audit.key",
        oauth_keys_dir=tmp_path / "keys",
    )
    client = await aiohttp_client(create_web_app(settings))
    document = await (await client.get("/openapi.json")).json()
    body = document["paths"]["/v1/recipient/eligibility"]["post"]["requestBody"]
    ref = body["content"]["application/json"]["schema"]["$ref"]
    schema = _pointer(document, ref)
    assert set(schema["required"]) == {"vin", "contract"}
    vin = _pointer(document, schema["properties"]["vin"]["$ref"])
    assert vin["pattern"]  # the common VIN rule the broker validates with
