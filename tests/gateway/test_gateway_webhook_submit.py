"""A submit's webhook (issue 14, the contract): checked at submit naming webhook.url / webhook.events, refused
for a tenant with no signing secret, with nothing stored when refused; kept on the job and shown by GetJob;
reached through the SDK and the CLI."""

from __future__ import annotations

import grpc
import pytest

from client import cli
from client.messages import text_to_image_request
from shared.proto.llada.serve.v1 import jobs_pb2 as pb
from shared.webhooks.secrets import create_secret
from shared.webhooks.subscription import MAX_URL_CHARS
from tests.gateway.images_for_tests import png

HTTPS = "https://hooks.example.com/llada"


def url_of(length: int) -> str:
    """An https URL exactly `length` characters long."""
    return HTTPS + "/" + "a" * (length - len(HTTPS) - 1)


def T(webhook: pb.Webhook | None) -> pb.SubmitJobRequest:
    return pb.SubmitJobRequest(text_to_image=pb.TextToImageParams(prompt="a lighthouse"), webhook=webhook)


def field_of(err: grpc.RpcError) -> str | None:
    return dict(err.trailing_metadata() or ()).get("llada-error-field")


@pytest.fixture(scope="module")
def gw(make_gateway):
    return make_gateway()


def key_with_secret(gw, tenant: str):
    md = gw.key(tenant)
    gw.db(create_secret, tenant)
    return md


@pytest.fixture(scope="module")
def md(gw):
    return key_with_secret(gw, "t-webhooks")


BAD = [
    ("http refused by default", pb.Webhook(url="http://hooks.example.com/x"), "webhook.url", "refuses http"),
    ("not a URL", pb.Webhook(url="hooks.example.com/x"), "webhook.url", "absolute https"),
    ("no host", pb.Webhook(url="https:///x"), "webhook.url", "names no host"),
    ("credentials in the URL", pb.Webhook(url="https://user:pw@hooks.example.com/x"), "webhook.url", "user:password"),
    ("a space", pb.Webhook(url="https://hooks.example.com/a b"), "webhook.url", "spaces"),
    ("bad port", pb.Webhook(url="https://hooks.example.com:99999/x"), "webhook.url", "not a valid URL"),
    ("one past the length limit", pb.Webhook(url=url_of(MAX_URL_CHARS + 1)), "webhook.url", "limit is 2048"),
    ("unspecified event", pb.Webhook(url=HTTPS, events=[pb.WEBHOOK_EVENT_UNSPECIFIED]), "webhook.events", "unknown"),
    ("unknown event number", pb.Webhook(url=HTTPS, events=[42]), "webhook.events", "unknown"),
    ("an event twice", pb.Webhook(url=HTTPS, events=[pb.WEBHOOK_EVENT_STARTED, pb.WEBHOOK_EVENT_STARTED]),
     "webhook.events", "twice"),
]


@pytest.mark.parametrize("webhook, field, says", [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_a_bad_webhook_is_refused_naming_the_field_and_stores_nothing(gw, md, webhook, field, says):
    before = (gw.job_count(), gw.objects(), len(gw.queue.sent))
    with pytest.raises(grpc.RpcError) as err:
        gw.stub.SubmitJob(T(webhook), metadata=md)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_of(err.value) == field and says in err.value.details()
    assert (gw.job_count(), gw.objects(), len(gw.queue.sent)) == before


def test_a_bad_webhook_with_an_image_stores_no_image(gw, md):
    before = gw.objects()
    request = pb.SubmitJobRequest(understand=pb.UnderstandParams(image=png(), question="what?"),
                                  webhook=pb.Webhook(url="ftp://hooks.example.com/x"))
    with pytest.raises(grpc.RpcError):
        gw.stub.SubmitJob(request, metadata=md)
    assert gw.objects() == before


def test_a_tenant_without_a_signing_secret_is_refused_a_webhook_and_nothing_is_stored(gw):
    md = gw.key("t-no-secret")
    before = (gw.job_count(), gw.objects(), len(gw.queue.sent))
    with pytest.raises(grpc.RpcError) as err:
        gw.stub.SubmitJob(T(pb.Webhook(url=HTTPS)), metadata=md)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "webhook-secret create --tenant t-no-secret" in err.value.details()
    assert (gw.job_count(), gw.objects(), len(gw.queue.sent)) == before
    assert gw.stub.SubmitJob(T(None), metadata=md).state == pb.JOB_STATE_QUEUED  # without a webhook it is fine


def test_the_webhook_is_kept_and_shown_with_completed_as_the_default_event(gw, md):
    at_limit = url_of(MAX_URL_CHARS)
    job = gw.stub.SubmitJob(T(pb.Webhook(url=at_limit)), metadata=md)
    assert (job.webhook.url, list(job.webhook.events)) == (at_limit, [pb.WEBHOOK_EVENT_COMPLETED])
    again = gw.stub.GetJob(pb.GetJobRequest(job_id=job.id), metadata=md)
    assert again.webhook == job.webhook
    chosen = gw.stub.SubmitJob(T(pb.Webhook(url=HTTPS, events=[pb.WEBHOOK_EVENT_COMPLETED,
                                                               pb.WEBHOOK_EVENT_STARTED])), metadata=md)
    assert list(chosen.webhook.events) == [pb.WEBHOOK_EVENT_STARTED, pb.WEBHOOK_EVENT_COMPLETED]
    plain = gw.stub.SubmitJob(T(None), metadata=md)
    assert not plain.HasField("webhook")


def test_http_is_accepted_where_the_deployment_allows_it(make_gateway):
    gw = make_gateway(webhook_allow_http=True)
    job = gw.stub.SubmitJob(T(pb.Webhook(url="http://127.0.0.1:8080/hook")), metadata=key_with_secret(gw, "t-http"))
    assert job.webhook.url == "http://127.0.0.1:8080/hook"


def test_the_sdk_builds_the_webhook_from_a_url_or_a_mapping():
    assert text_to_image_request("p", webhook=HTTPS).webhook == pb.Webhook(url=HTTPS)
    built = text_to_image_request("p", webhook={"url": HTTPS, "events": ["started", "progress"]}).webhook
    assert list(built.events) == [pb.WEBHOOK_EVENT_STARTED, pb.WEBHOOK_EVENT_PROGRESS]
    with pytest.raises(ValueError, match="unknown value 'finished'"):
        text_to_image_request("p", webhook={"url": HTTPS, "events": ["finished"]})
    with pytest.raises(TypeError, match="unknown webhook option"):
        text_to_image_request("p", webhook={"url": HTTPS, "secret": "x"})


def test_the_cli_passes_the_webhook(gw, md, capsys, monkeypatch):
    monkeypatch.setenv("LLADA_SERVER", gw.address)
    monkeypatch.setenv("LLADA_API_KEY", dict(md)["x-api-key"])
    assert cli.main(["submit", "t2i", "a fox", "--webhook", HTTPS, "--webhook-event", "started"]) == 0
    job_id = capsys.readouterr().out.strip()
    job = gw.stub.GetJob(pb.GetJobRequest(job_id=job_id), metadata=md)
    assert (job.webhook.url, list(job.webhook.events)) == (HTTPS, [pb.WEBHOOK_EVENT_STARTED])
    assert cli.main(["submit", "t2i", "a fox", "--webhook-event", "started"]) == 1
    assert "--webhook-event needs --webhook URL" in capsys.readouterr().err
