"""docs/openapi.json is the API's contract for callers: generated from handler.entry.api, never edited by hand.

Importing handler.entry.api needs POWERTOOLS_* in the environment (tests/conftest.py sets them; so does
kickout_dev.openapi for `make openapi`).
"""

from __future__ import annotations

import difflib
import json
from typing import Any

import pytest
from cfnlint.decode import cfn_yaml

from kickout_dev.openapi import OPENAPI_PATH, ROOT, document, project_version

ERROR_STATUSES = ["400", "404", "405", "415", "422", "429", "500", "502", "503", "504"]


@pytest.fixture(scope="module")
def generated() -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(document())
    return parsed


def test_committed_document_is_what_the_code_generates() -> None:
    # GIVEN docs/openapi.json as committed
    committed = OPENAPI_PATH.read_text(encoding="utf-8") if OPENAPI_PATH.exists() else ""
    # WHEN Powertools generates the document from the routes and models as they are now
    current = document()
    # THEN they are the same: a changed route, model or field shows up here, not in a caller's integration
    if committed != current:
        diff = "".join(
            difflib.unified_diff(
                committed.splitlines(keepends=True),
                current.splitlines(keepends=True),
                "docs/openapi.json (committed)",
                "docs/openapi.json (from the code)",
                n=1,
            )
        )
        pytest.fail(f"docs/openapi.json is out of date: run `make openapi` and commit it.\n{diff[:4000]}")


def test_document_names_the_api_and_the_projects_version(generated: dict[str, Any]) -> None:
    assert generated["info"]["title"] == "kickout"
    assert generated["info"]["version"] == project_version()
    assert generated["info"]["description"]


def test_post_kickouts_and_the_keep_outs_are_offered_and_nothing_else(generated: dict[str, Any]) -> None:
    # ZIM's callbacks (POST /zego/callbacks) are a function of their own, ZEGO's to call, not the callers' API
    assert {path: list(methods) for path, methods in generated["paths"].items()} == {
        "/kickouts": ["post"],
        "/keep-outs": ["get"],
        "/keep-outs/{room_id}/{user_id}": ["delete"],
    }
    listing = generated["paths"]["/keep-outs"]["get"]
    parameters = {parameter["name"]: parameter for parameter in listing["parameters"]}
    assert parameters["room_id"]["required"] is True
    assert parameters["room_id"]["schema"]["maxLength"] == 32
    assert parameters["limit"]["schema"]["maximum"] == 100
    assert {"200", "400", "422", "503"} <= set(listing["responses"])
    lifting = generated["paths"]["/keep-outs/{room_id}/{user_id}"]["delete"]
    assert {parameter["name"] for parameter in lifting["parameters"]} == {"room_id", "user_id"}
    assert {"200", "404", "422", "503"} <= set(lifting["responses"])
    operation = generated["paths"]["/kickouts"]["post"]
    assert operation["requestBody"]["required"] is True
    assert operation["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/KickoutRequest"
    }
    assert "200" in operation["responses"]


def test_request_schema_refuses_unknown_fields_and_bounds_the_users(generated: dict[str, Any]) -> None:
    request = generated["components"]["schemas"]["KickoutRequest"]
    assert request["additionalProperties"] is False
    assert request["required"] == ["room_id", "user_ids"]
    assert request["properties"]["user_ids"]["minItems"] == 1
    assert request["properties"]["user_ids"]["maxItems"] == 500
    assert request["properties"]["room_id"]["maxLength"] == 32


def test_every_operation_requires_sigv4(generated: dict[str, Any]) -> None:
    scheme = generated["components"]["securitySchemes"]["sigv4"]
    # API Gateway's own vocabulary for AWS_IAM: an Authorization header of type awsSigv4.
    assert scheme["type"] == "apiKey"
    assert scheme["in"] == "header"
    assert scheme["name"] == "Authorization"
    assert scheme["x-amazon-apigateway-authtype"] == "awsSigv4"
    assert generated["security"] == [{"sigv4": []}]


def test_server_url_ends_in_the_templates_stage(generated: dict[str, Any]) -> None:
    template = cfn_yaml.load(str(ROOT / "template.yaml"))
    stage = template["Resources"]["KickoutApi"]["Properties"]["StageName"]
    (server,) = generated["servers"]
    assert server["url"] == "https://{restApiId}.execute-api.{region}.amazonaws.com/{stage}"
    assert server["variables"]["stage"] == {"enum": [stage], "default": stage, "description": "The API Gateway stage."}


def test_every_error_status_is_documented_with_the_json_error_body(generated: dict[str, Any]) -> None:
    responses = generated["paths"]["/kickouts"]["post"]["responses"]
    for status in ERROR_STATUSES:
        schema = responses[status]["content"]["application/json"]["schema"]
        body = generated["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
        assert {"error", "message"} <= set(body["required"]), status
    assert "Retry-After" in responses["429"]["headers"]
    assert "Allow" in responses["405"]["headers"]
