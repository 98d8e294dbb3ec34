"""The OpenAPI 3.1 document of everything the broker serves, built from its routes.

Every route is added through :func:`route`, which registers the handler with
aiohttp *and* describes the operation, so the document cannot drift from the
route table (a test asserts the two are the same set). Request and response
bodies refer to the JSON Schemas in ``contracts/schemas`` that validate them
(:func:`schema_ref`); the document carries those schemas as components, with
every ``$ref`` rewritten to point inside the document, so it resolves locally.

https://spec.openapis.org/oas/v3.1.1.html
"""

from __future__ import annotations

import copy
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from broker.errors import BrokerError

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

SCHEMA_URN = "urn:vehicle-data-broker:schema:"
CATEGORY_URN = "urn:vehicle-data-broker:category:"
PROBLEM = {"$ref": "#/components/schemas/Problem"}
OAUTH_ERROR = {"$ref": "#/components/schemas/OAuthError"}

#: Security schemes: which kind of token each API takes (see ``broker.http.oauth.API_ACCESS``).
SECURITY_SCHEMES: dict[str, dict[str, Any]] = {
    "recipient": {
        "type": "oauth2",
        "description": "Recipient tokens (authorization code for a customer's grants, or "
        "client credentials); DPoP-bound (RFC 9449) when the contract requires it.",
        "flows": {
            "authorizationCode": {
                "authorizationUrl": "/oauth/authorize",
                "tokenUrl": "/oauth/token",
                "refreshUrl": "/oauth/token",
                "scopes": {},
            },
            "clientCredentials": {"tokenUrl": "/oauth/token", "scopes": {}},
        },
    },
    "customer": {
        "type": "oauth2",
        "description": "Tokens of the customer app (authorization code with PKCE).",
        "flows": {
            "authorizationCode": {
                "authorizationUrl": "/oauth/authorize",
                "tokenUrl": "/oauth/token",
                "refreshUrl": "/oauth/token",
                "scopes": {},
            }
        },
    },
    "ingest": {
        "type": "oauth2",
        "description": "The car maker's backend (client credentials; scope ingest for "
        "telemetry, holders for holder changes).",
        "flows": {"clientCredentials": {"tokenUrl": "/oauth/token", "scopes": {}}},
    },
    "client": {
        "type": "http",
        "scheme": "basic",
        "description": "Client authentication at the token endpoints (client_secret_basic; "
        "private_key_jwt and public clients are sent in the form).",
    },
    "session": {
        "type": "apiKey",
        "in": "cookie",
        "name": "__Host-broker-session",
        "description": "The customer's login session on the broker's own pages.",
    },
}


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    summary: str
    tag: str
    security: tuple[tuple[str, tuple[str, ...]], ...] = ()
    parameters: tuple[Mapping[str, Any], ...] = ()
    request_body: Mapping[str, Any] | None = None
    responses: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    description: str | None = None

    def document(self) -> dict[str, Any]:
        operation: dict[str, Any] = {
            "operationId": _operation_id(self.method, self.path),
            "summary": self.summary,
            "tags": [self.tag],
            "responses": {k: dict(v) for k, v in sorted(self.responses.items())},
        }
        if self.description:
            operation["description"] = self.description
        if self.security:
            operation["security"] = [{name: list(scopes)} for name, scopes in self.security]
        else:
            operation["security"] = []
        if self.parameters:
            operation["parameters"] = [dict(p) for p in self.parameters]
        if self.request_body is not None:
            operation["requestBody"] = dict(self.request_body)
        return operation


@dataclass
class ApiDescription:
    """The operations added so far, keyed by (method, path)."""

    title: str
    version: str
    operations: dict[tuple[str, str], Operation] = field(default_factory=dict)

    def add(self, operation: Operation) -> None:
        key = (operation.method.upper(), operation.path)
        if key in self.operations:
            raise ValueError(f"{key[0]} {key[1]} is described twice")
        self.operations[key] = operation

    def document(self, schemas: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
        """The OpenAPI 3.1 document; ``schemas`` maps schema ids (URNs) to JSON Schemas."""
        paths: dict[str, dict[str, Any]] = {}
        for (method, path), operation in sorted(self.operations.items()):
            paths.setdefault(path, {})[method.lower()] = operation.document()
        components: dict[str, Any] = {
            name: _localise(schema, name) for name, schema in _components(schemas).items()
        }
        components["Problem"] = _PROBLEM_SCHEMA
        components["OAuthError"] = _OAUTH_ERROR_SCHEMA
        return {
            "openapi": "3.1.1",
            "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
            "info": {
                "title": self.title,
                "version": self.version,
                "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
            },
            "paths": paths,
            "components": {"schemas": components, "securitySchemes": SECURITY_SCHEMES},
        }


API_DESCRIPTION = web.AppKey("api_description", ApiDescription)


def route(
    app: web.Application,
    method: str,
    path: str,
    handler: Handler,
    *,
    summary: str,
    tag: str,
    security: Iterable[tuple[str, Iterable[str]]] = (),
    parameters: Iterable[Mapping[str, Any]] = (),
    request_body: Mapping[str, Any] | None = None,
    responses: Mapping[int | str, Mapping[str, Any]],
    description: str | None = None,
) -> None:
    """Add ``handler`` at ``method path`` and describe it in the application's document."""
    app.router.add_route(method, path, handler)
    app[API_DESCRIPTION].add(
        Operation(
            method=method.upper(),
            path=path,
            summary=summary,
            tag=tag,
            security=tuple((name, tuple(scopes)) for name, scopes in security),
            parameters=tuple(parameters),
            request_body=request_body,
            responses={str(k): v for k, v in responses.items()},
            description=description,
        )
    )


# -- building blocks for operations ---------------------------------------------------------


def schema_ref(schema_id: str) -> dict[str, str]:
    """A reference to one of the broker's JSON Schemas (by its ``$id``) inside the document."""
    return {"$ref": f"#/components/schemas/{component_name(schema_id)}"}


def component_name(schema_id: str) -> str:
    if schema_id.startswith(SCHEMA_URN):
        return schema_id.removeprefix(SCHEMA_URN)
    if schema_id.startswith(CATEGORY_URN):
        return "category." + schema_id.removeprefix(CATEGORY_URN)
    raise ValueError(f"not one of the broker's schema ids: {schema_id}")


def json_content(schema: Mapping[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def json_body(schema: Mapping[str, Any], *, required: bool = True) -> dict[str, Any]:
    return {"required": required, "content": {"application/json": {"schema": schema}}}


def form_body(properties: Mapping[str, Any], required: Iterable[str] = ()) -> dict[str, Any]:
    schema = {"type": "object", "properties": dict(properties), "required": sorted(required)}
    return {"required": True, "content": {"application/x-www-form-urlencoded": {"schema": schema}}}


def problem(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/problem+json": {"schema": PROBLEM}},
    }


def oauth_error(description: str) -> dict[str, Any]:
    return json_content(OAUTH_ERROR, description)


def html(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"text/html": {"schema": {"type": "string"}}}}


def redirect(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "headers": {"Location": {"schema": {"type": "string", "format": "uri-reference"}}},
    }


def query(
    name: str, schema: Mapping[str, Any], description: str, *, required: bool = False
) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": required,
        "description": description,
        "schema": dict(schema),
    }


def path_param(name: str, schema: Mapping[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": dict(schema),
    }


def header(name: str, description: str, *, required: bool = False) -> dict[str, Any]:
    return {
        "name": name,
        "in": "header",
        "required": required,
        "description": description,
        "schema": {"type": "string"},
    }


#: The refusals every bearer-protected operation may answer with (RFC 6750 + RFC 9457).
BEARER_ERRORS: dict[int | str, dict[str, Any]] = {
    401: problem("No valid access token (see WWW-Authenticate)."),
    403: problem("The token lacks a scope or may not call this API."),
}


# -- the document's components --------------------------------------------------------------


def _components(schemas: Mapping[str, Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    out: dict[str, Mapping[str, Any]] = {}
    for schema_id, schema in schemas.items():
        try:
            out[component_name(schema_id)] = schema
        except ValueError:
            continue
    return dict(sorted(out.items()))


def _localise(schema: Mapping[str, Any], name: str) -> dict[str, Any]:
    """The schema with ``$id``/``$schema`` dropped and every reference made document-local."""
    node = copy.deepcopy(dict(schema))
    node.pop("$id", None)
    node.pop("$schema", None)
    return _rewrite(node, name)  # type: ignore[no-any-return]


def _rewrite(node: Any, name: str) -> Any:
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                out[key] = _local_ref(value, name)
            elif key == "$id":
                continue
            else:
                out[key] = _rewrite(value, name)
        return out
    if isinstance(node, list):
        return [_rewrite(v, name) for v in node]
    return node


def _local_ref(ref: str, name: str) -> str:
    """A reference (to another schema by its ``$id``, or within this one by a JSON
    pointer) as a pointer into this document's components."""
    base, _, fragment = ref.partition("#")
    if base and not base.startswith("urn:vehicle-data-broker:"):
        raise BrokerError(f"a schema uses a relative reference the document cannot hold: {ref}")
    target = f"#/components/schemas/{component_name(base) if base else name}"
    return target + fragment if fragment else target


def _operation_id(method: str, path: str) -> str:
    words = [p.strip("{}").replace(".", "_").replace("-", "_") for p in path.split("/") if p]
    return "_".join([method.lower(), *words]) or method.lower()


_PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "RFC 9457 problem details.",
    "required": ["type", "title", "status"],
    "properties": {
        "type": {"type": "string", "format": "uri-reference"},
        "title": {"type": "string"},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
        "request_id": {"type": "string"},
    },
}

_OAUTH_ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "RFC 6749 section 5.2 error response.",
    "required": ["error"],
    "properties": {
        "error": {"type": "string"},
        "error_description": {"type": "string"},
        "error_uri": {"type": "string", "format": "uri"},
    },
}


def add_document_route(
    app: web.Application, *, schemas: Callable[[], Mapping[str, Mapping[str, Any]]]
) -> None:
    """``GET /openapi.json``: the document, built once from the routes added before start-up."""
    built: list[dict[str, Any]] = []

    async def openapi(_request: web.Request) -> web.Response:
        if not built:
            built.append(app[API_DESCRIPTION].document(schemas()))
        return web.json_response(built[0], headers={"Cache-Control": "max-age=300"})

    route(
        app,
        "GET",
        "/openapi.json",
        openapi,
        summary="This OpenAPI 3.1 document",
        tag="operations",
        responses={200: json_content({"type": "object"}, "The OpenAPI document.")},
    )
