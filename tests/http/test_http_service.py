"""The service around the routes: its OpenAPI document matches what the routes answer, probes, metrics."""

from __future__ import annotations

import httpx2 as httpx
import jsonschema
import pytest
from google.protobuf import json_format

from services.http.metrics import REGISTRY
from shared.proto.llada.serve.v1 import jobs_pb2 as pb


@pytest.fixture(scope="module")
def openapi(door):
    reply = httpx.get(door.url + "/openapi.json")
    assert reply.status_code == 200
    return reply.json()


def validator(openapi, name):
    # The document's components ride along, so that "#/components/schemas/…" resolves inside the schema itself.
    schema = {"$ref": f"#/components/schemas/{name}", "components": openapi["components"]}
    return jsonschema.Draft202012Validator(schema)


def test_the_document_lists_every_route_the_app_serves(door, openapi):
    paths = set(openapi["paths"])
    assert {"/v1/jobs", "/v1/jobs/{job_id}", "/v1/jobs/{job_id}:cancel", "/v1/jobs/{job_id}/events",
            "/v1/jobs/{job_id}/output", "/v1/images/generations", "/v1/images/edits", "/v1/chat/completions",
            "/v1/models", "/v1/models/{model}"} <= paths
    for operations in openapi["paths"].values():
        for operation in operations.values():
            assert "422" not in operation["responses"]  # a bad request is a 400 here, never FastAPI's 422
            assert operation["responses"]["default"]["content"]["application/json"]["schema"] == {
                "$ref": "#/components/schemas/Error"}


def test_real_answers_validate_against_the_documents_schemas(door, openapi):
    headers = {"Authorization": f"Bearer {door.key('schema')}"}
    body = json_format.MessageToDict(pb.SubmitJobRequest(text_to_image=pb.TextToImageParams(prompt="x", seed=2**40)))
    validator(openapi, "SubmitJobRequest").validate(body)
    submitted = httpx.post(door.url + "/v1/jobs", json=body, headers=headers)
    validator(openapi, "Job").validate(submitted.json())
    listed = httpx.get(door.url + "/v1/jobs", headers=headers)
    validator(openapi, "ListJobsResponse").validate(listed.json())
    refused = httpx.get(door.url + "/v1/jobs/nope", headers=headers)
    validator(openapi, "Error").validate(refused.json())
    with pytest.raises(jsonschema.ValidationError):  # the schemas do constrain: a wrong type fails
        validator(openapi, "Job").validate({"attempts": "three"})


def test_probes(door, make_front_door, http_loop):
    assert httpx.get(door.url + "/healthz").status_code == 200
    assert httpx.get(door.url + "/readyz").status_code == 200
    orphan = make_front_door()
    http_loop.run(orphan.gw.gateway.stop(0))
    assert httpx.get(orphan.url + "/healthz").status_code == 200
    assert httpx.get(orphan.url + "/readyz").status_code == 503


def test_requests_are_counted_by_route_template_not_by_id(door):
    headers = {"Authorization": f"Bearer {door.key('metrics')}"}
    route = "/v1/jobs/{job_id}"
    labels = {"route": route, "method": "GET", "status": "404"}
    before = REGISTRY.get_sample_value("llada_http_requests_total", labels) or 0
    httpx.get(door.url + "/v1/jobs/00000000-0000-4000-8000-000000000001", headers=headers)
    httpx.get(door.url + "/v1/jobs/00000000-0000-4000-8000-000000000002", headers=headers)
    after = REGISTRY.get_sample_value("llada_http_requests_total", labels)
    assert after == before + 2
