"""No error a caller can read says more than what happened: every refusal and failure this test can reach
— bad keys, bad ids, tokens and parameters, a reused request id, a full queue, the database down during
authentication and during each RPC, a database whose schema is broken — is checked for SQL, parameters,
hosts and ports, database names, paths, stack text, driver names and hashes, in the status message and
in every trailer. On SQLite and on Postgres."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import re
import socket
import uuid

import grpc
import pytest
from sqlalchemy import create_engine

from tests.gateway.images_for_tests import png
from shared.db import session_factory
from shared.proto.llada.serve.v1 import jobs_pb2 as pb

DEFAULT_KEY = "llada_default-key-for-error-text-tests"
SQL = re.compile(r"\b(SELECT|INSERT|UPDATE|DELETE|FROM|WHERE|VALUES|JOIN|RETURNING)\b")
INTERNALS = re.compile(
    r"traceback|file \"|line \d+|sqlalchemy|sqlalche\.me|psycopg|sqlite|postgres|operational|programming|"
    r"integrityerror|dataerror|\[sql|\[parameters|background on this error|connection|refused|"
    r"127\.0\.0\.1|localhost|5432|jobs\.db|api_keys|key_hash|\bjobs\.|relation|pg_|exception|error at 0x", re.I)
HEX_DIGEST = re.compile(r"[0-9a-fA-F]{32,}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def gw(make_gateway_each_db):
    return make_gateway_each_db(default_api_key=DEFAULT_KEY, max_queued_per_tenant=3, max_prompt_chars=500,
                                max_image_bytes=200_000)


@pytest.fixture(scope="module")
def secrets_(gw):
    """What must never appear: the keys in play and their hashes, the database's address, name and path."""
    url = gw.settings.database_url
    return {DEFAULT_KEY, hashlib.sha256(DEFAULT_KEY.encode()).hexdigest(), url, url.rsplit("/", 1)[-1],
            str(gw.settings.data_dir)}


class Checked:
    """Calls that must fail; each failure's message and trailers are checked as they come."""

    def __init__(self, gw, secrets):
        self.gw, self.secrets, self.seen = gw, set(secrets), []

    def key(self, tenant: str):
        md = self.gw.key(tenant)
        self.secrets |= {md[0][1], hashlib.sha256(md[0][1].encode()).hexdigest()}
        return md

    def fails(self, method: str, request_, md, code: grpc.StatusCode | tuple = ()) -> grpc.RpcError:
        call = getattr(self.gw.stub, method)
        with pytest.raises(grpc.RpcError) as err:
            result = call(request_, metadata=md, timeout=30)
            if method == "WatchJob":
                list(result)
        error = err.value
        codes = code if isinstance(code, tuple) else (code,)
        assert not codes or error.code() in codes, (method, error.code(), error.details())
        self.check(method, error)
        return error

    def check(self, what: str, error: grpc.RpcError) -> None:
        texts = [error.details() or ""]
        texts += [f"{k}={v}" for k, v in (error.trailing_metadata() or ())]
        for text in texts:
            assert not SQL.search(text), (what, text)
            assert not INTERNALS.search(text), (what, text)
            assert not HEX_DIGEST.search(text), (what, text)
            for secret in self.secrets:
                assert secret not in text, (what, text)
        self.seen.append((what, error.code()))


def T(**params):
    params.setdefault("prompt", "a lighthouse")
    return pb.SubmitJobRequest(text_to_image=pb.TextToImageParams(**params))


def U(image=None, **params):
    return pb.SubmitJobRequest(understand=pb.UnderstandParams(image=image or png(), question="what?"), **params)


def every_rpc(job_id: str):
    return [("SubmitJob", T()), ("SubmitJob", U()), ("GetJob", pb.GetJobRequest(job_id=job_id)),
            ("ListJobs", pb.ListJobsRequest()), ("WatchJob", pb.WatchJobRequest(job_id=job_id)),
            ("CancelJob", pb.CancelJobRequest(job_id=job_id)), ("DeleteJob", pb.DeleteJobRequest(job_id=job_id))]


def test_refusals_say_what_was_wrong_and_nothing_more(gw, secrets_):
    c = Checked(gw, secrets_)
    md = c.key("t-texts")
    job = gw.stub.SubmitJob(pb.SubmitJobRequest(request_id="r-1", text_to_image=pb.TextToImageParams(prompt="p")),
                            metadata=md)
    bad = grpc.StatusCode.INVALID_ARGUMENT
    for keys in [(), (("x-api-key", "llada_wrong-key-000000000000"),), (("x-api-key", "short"),),
                 (("x-api-key", "k" * 5000),), (("x-api-key", "llada_odd key with spaces 0000"),)]:
        for method, request_ in every_rpc(job.id):
            c.fails(method, request_, keys, grpc.StatusCode.UNAUTHENTICATED)
    for job_id in ("", "nope", "x\x00" * 10, "9" * 10_000, job.id + "' OR '1'='1", job.id[:-1] + "\x00"):
        for method, request_ in every_rpc(job_id)[2:]:
            if method != "ListJobs":
                c.fails(method, request_, md, bad)
    tokens = ["garbage!", "\x00", "A" * 50_000, base64.urlsafe_b64encode(b"[" * 150).decode(),
              base64.urlsafe_b64encode(json.dumps(["2026-01-01T00:00:00+00:00", "x\x00"]).encode()).decode()]
    for page_token in tokens:
        c.fails("ListJobs", pb.ListJobsRequest(page_token=page_token), md, bad)
    for request_ in (pb.ListJobsRequest(state=99), pb.ListJobsRequest(kind=42), pb.ListJobsRequest(page_size=-1)):
        c.fails("ListJobs", request_, md, bad)
    for request_ in (T(prompt="a\x00b"), T(prompt="x" * 1000), T(width=500), T(cfg_scale=float("nan")),
                     T(seed=-1), pb.SubmitJobRequest(request_id="r\x00", text_to_image=pb.TextToImageParams(prompt="p")),
                     pb.SubmitJobRequest(request_id="r" * 500, text_to_image=pb.TextToImageParams(prompt="p")),
                     U(image=b"not an image"), U(image=b"\x89PNG" + b"\0" * 250_000), pb.SubmitJobRequest()):
        c.fails("SubmitJob", request_, md, bad)
    c.fails("SubmitJob", pb.SubmitJobRequest(request_id="r-1", text_to_image=pb.TextToImageParams(prompt="q")), md,
            grpc.StatusCode.ALREADY_EXISTS)
    c.fails("GetJob", pb.GetJobRequest(job_id=str(uuid.uuid4())), md, grpc.StatusCode.NOT_FOUND)
    c.fails("GetJob", pb.GetJobRequest(job_id=job.id), c.key("t-texts-other"), grpc.StatusCode.NOT_FOUND)
    c.fails("DeleteJob", pb.DeleteJobRequest(job_id=job.id), md, grpc.StatusCode.FAILED_PRECONDITION)
    for _ in range(2):
        gw.stub.SubmitJob(T(), metadata=md)
    c.fails("SubmitJob", T(), md, grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert len(c.seen) > 60


@contextlib.contextmanager
def database_swapped(gw, url: str):
    """The gateway's database (for the RPCs and the key lookups alike) replaced by `url` for a while."""
    deps = gw.gateway.servicer.deps
    saved = deps.sessions, deps.read_sessions
    engine = create_engine(url, pool_pre_ping=True)
    deps.sessions, deps.read_sessions = session_factory(engine), None  # reads too: None is "the same sessions"
    try:
        yield
    finally:
        deps.sessions, deps.read_sessions = saved
        engine.dispose()


OUTAGES = {
    "postgres refuses connections": lambda tmp: f"postgresql+psycopg://llada:s3cret-pw@127.0.0.1:{free_port()}/llada_gone",
    "sqlite file cannot be opened": lambda tmp: f"sqlite:///{tmp}/no-such-folder/jobs.db",
}


@pytest.mark.parametrize("outage", list(OUTAGES.values()), ids=list(OUTAGES))
def test_the_database_down_is_unavailable_during_auth_and_every_rpc(gw, secrets_, tmp_path, outage):
    c = Checked(gw, secrets_)
    md = c.key("t-outage")
    job = gw.stub.SubmitJob(T(), metadata=md)  # md is now a cached, known key
    unchecked = c.key("t-outage-new")  # created, never used: its lookup needs the database
    url = outage(tmp_path)
    c.secrets |= {url, url.split("@")[-1], "s3cret-pw", str(tmp_path)}
    default = (("x-api-key", DEFAULT_KEY),)
    before = gw.objects()
    with database_swapped(gw, url):
        for keys in (unchecked, (("x-api-key", "llada_never-seen-key-0000000"),)):
            c.fails("ListJobs", pb.ListJobsRequest(), keys, grpc.StatusCode.UNAVAILABLE)
            assert "retry" in c.fails("GetJob", pb.GetJobRequest(job_id=job.id), keys).details()
        for keys in (md, default):
            for method, request_ in every_rpc(job.id):
                c.fails(method, request_, keys, grpc.StatusCode.UNAVAILABLE)
    assert gw.objects() == before  # a failed submit leaves no input image behind
    # Back up: the key that could not be checked works, nothing was cached from the outage.
    assert gw.stub.GetJob(pb.GetJobRequest(job_id=job.id), metadata=md).id == job.id
    assert gw.stub.ListJobs(pb.ListJobsRequest(), metadata=unchecked).jobs == []


def test_a_broken_schema_is_internal_with_a_generic_message(gw, secrets_, empty_postgres_url):
    c = Checked(gw, secrets_ | {empty_postgres_url, empty_postgres_url.rsplit("/", 1)[-1]})
    md = c.key("t-broken")
    job = gw.stub.SubmitJob(T(), metadata=md)
    unchecked = c.key("t-broken-new")
    with database_swapped(gw, empty_postgres_url):
        c.fails("ListJobs", pb.ListJobsRequest(), unchecked, grpc.StatusCode.INTERNAL)
        for keys in (md, (("x-api-key", DEFAULT_KEY),)):
            for method, request_ in every_rpc(job.id):
                c.fails(method, request_, keys, grpc.StatusCode.INTERNAL)
