"""A database with a tenant that has a signing secret, jobs with webhooks driven as a worker drives them, and
dispatchers running in threads of this process against a LoopbackReceiver."""

from __future__ import annotations

import threading

import pytest

from services.webhooks.addresses import AddressPolicy
from services.webhooks.dispatcher import Dispatcher, run_forever
from services.webhooks.sender import WebhookSender
from shared import attempts
from shared import repository as repo
from shared.db import make_engine, session_factory, upgrade
from shared.settings import Settings
from shared.webhooks.secrets import create_secret
from shared.webhooks.subscription import WebhookSubscription
from tests.webhooks.receiver import LoopbackReceiver

TENANT = "acme"
FAST = dict(webhook_poll_interval_s=0.02, webhook_backoff_s=0.05, webhook_backoff_cap_s=0.2, webhook_timeout_s=2,
            webhook_allow_http=True, webhook_allow_networks=["127.0.0.0/8"])


class WebhookWorld:
    def __init__(self, tmp_path, **overrides):
        self.settings = Settings(data_dir=tmp_path, **{**FAST, **overrides})
        upgrade(self.settings.database_url)
        self.sessions = session_factory(make_engine(self.settings.database_url))
        self.secret = self.db(create_secret, TENANT)
        self.running: list[tuple[threading.Thread, threading.Event]] = []

    def db(self, fn, *args, **kwargs):
        with self.sessions() as s:
            return fn(s, *args, **kwargs)

    def submit(self, url: str, events=("completed",)):
        return self.db(repo.submit_job, tenant=TENANT, request_id=None, kind="TEXT_TO_IMAGE",
                       params={"prompt": "p"}, input_keys={}, webhook=WebhookSubscription(url, tuple(events))).job

    def claim(self, job_id: str):
        return self.db(attempts.claim_job, job_id, "worker-1", heartbeat_timeout_s=60)

    def dispatcher(self, name: str = "d1", **kwargs) -> Dispatcher:
        sender = WebhookSender(AddressPolicy(self.settings.webhook_allow_networks),
                               timeout_s=self.settings.webhook_timeout_s)
        return Dispatcher(self.settings, self.sessions, sender, name=name, **kwargs)

    def start(self, dispatcher: Dispatcher | None = None) -> Dispatcher:
        dispatcher = dispatcher or self.dispatcher()
        stop = threading.Event()
        thread = threading.Thread(target=run_forever, args=(dispatcher, stop), kwargs={"grace_s": 5}, daemon=True)
        thread.start()
        self.running.append((thread, stop))
        return dispatcher

    def stop(self) -> None:
        for thread, stop in self.running:
            stop.set()
        for thread, _ in self.running:
            thread.join(10)
        self.running.clear()


@pytest.fixture
def world(tmp_path):
    w = WebhookWorld(tmp_path)
    yield w
    w.stop()


@pytest.fixture
def receiver():
    r = LoopbackReceiver()
    yield r
    r.close()
