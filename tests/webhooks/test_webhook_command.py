"""`python -m services.webhooks`, run in-process through its `main()`: it delivers with the settings it reads
from the environment (signed, with output URLs presigned by the configured store), serves its metrics, and on
SIGTERM waits its grace for the tries in flight, then returns."""

from __future__ import annotations

import json
import os
import signal
import threading

import pytest

from client import verify_webhook
from services.webhooks import dispatcher as command
from services.webhooks import metrics as webhook_metrics
from shared import attempts
from shared.objectstore import object_store_from_settings
from tests.webhooks.conftest import WebhookWorld


@pytest.fixture
def world_from_environment(tmp_path, monkeypatch, process_state):
    for name, value in {"LLADA_DATA_DIR": str(tmp_path), "LLADA_WEBHOOK_ALLOW_HTTP": "true",
                        "LLADA_WEBHOOK_ALLOW_NETWORKS": '["127.0.0.0/8"]', "LLADA_WEBHOOK_POLL_INTERVAL_S": "0.05",
                        "LLADA_WEBHOOK_TIMEOUT_S": "4", "LLADA_WEBHOOK_METRICS_PORT": "9556",
                        "LLADA_METRICS_HOST": "127.0.0.2"}.items():
        monkeypatch.setenv(name, value)
    world = WebhookWorld(tmp_path)  # the same database, store and secrets the command will read
    yield world
    world.stop()


class CallRecorderDouble:
    """Stands in for a function the command calls at the end of its setup: records the call, does nothing."""

    def __init__(self, result=None):
        self.calls = []
        self.result = result

    def __call__(self, *args, **kwargs):
        self.calls.append((args, kwargs))
        return self.result


def test_a_delivery_goes_out_signed_with_its_output_url_then_sigterm_stops_it(world_from_environment, receiver,
                                                                                 monkeypatch):
    world = world_from_environment
    metrics = CallRecorderDouble(result=True)
    monkeypatch.setattr(command, "serve_metrics", metrics)
    job = world.submit(receiver.url(), ("completed",))
    key = f"results/{job.id}/1/image.png"
    store = object_store_from_settings(world.settings)
    store.put(key, b"png", "image/png")
    world.db(attempts.finish_job, world.claim(job.id), output_keys={"image": key})

    default_sigterm = signal.getsignal(signal.SIGTERM)

    def stop_once_delivered():
        try:
            receiver.wait_for(1, timeout_s=20)
        finally:
            if signal.getsignal(signal.SIGTERM) is not default_sigterm:  # main's handler: never kill the test run
                os.kill(os.getpid(), signal.SIGTERM)

    stopper = threading.Thread(target=stop_once_delivered)
    stopper.start()
    assert command.main(["--grace", "2"]) == 0
    stopper.join(5)
    [delivered] = receiver.requests
    assert verify_webhook(world.secret, delivered.headers, delivered.body)["id"] == job.id
    body = json.loads(delivered.body)
    [image] = body["outputs"]["objects"]
    assert body["state"] == "JOB_STATE_SUCCEEDED"
    assert image["url"] == store.presigned_get(key, world.settings.presign_expiry_s) and image["urlExpiresAt"]
    assert metrics.calls == [((webhook_metrics.REGISTRY, 9556, "127.0.0.2"), {})]


@pytest.mark.parametrize("argv, grace", [([], 4 + 5.0), (["--grace", "3"], 3.0)])
def test_the_grace_defaults_to_the_try_timeout_plus_five_seconds(world_from_environment, monkeypatch, argv, grace):
    loop = CallRecorderDouble()
    monkeypatch.setattr(command, "run_forever", loop)
    monkeypatch.setattr(command, "serve_metrics", CallRecorderDouble(result=True))
    assert command.main(argv) == 0
    [(args, kwargs)] = loop.calls
    assert isinstance(args[0], command.Dispatcher) and kwargs == {"grace_s": grace}
    assert not args[1].is_set()  # the stop event, set only by SIGTERM or SIGINT
    signal.raise_signal(signal.SIGINT)
    assert args[1].is_set()


def test_help_names_the_command_and_its_grace(world_from_environment, capsys):
    with pytest.raises(SystemExit) as exited:
        command.main(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert exited.value.code == 0
    assert out.startswith("usage: python -m services.webhooks [-h] [--grace GRACE] ")
    assert command.__doc__.splitlines()[0] in out
    assert ("--grace GRACE seconds to wait for tries in flight on SIGTERM (default: the try timeout + 5)") in out


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_it_logs_as_the_dispatcher_from_its_first_line_in_the_format_the_settings_ask(
        world_from_environment, monkeypatch, capsys, log_format):
    monkeypatch.setenv("LLADA_LOG_FORMAT", log_format)
    monkeypatch.setenv("LLADA_QQQQ_UNRELATED", "1")  # read with the settings, before their format is known
    monkeypatch.setattr(command, "run_forever", CallRecorderDouble())
    monkeypatch.setattr(command, "serve_metrics", CallRecorderDouble(result=True))
    assert command.main([]) == 0
    lines = capsys.readouterr().err.splitlines()
    [unknown] = [line for line in lines if "LLADA_QQQQ_UNRELATED" in line]
    assert json.loads(unknown)["service"] == "webhooks"
    [started] = [line for line in lines if "webhook dispatcher started" in line]
    if log_format == "json":
        assert json.loads(started)["service"] == "webhooks"
    else:
        assert not started.startswith("{") and "INFO" in started


class PresignRecorderStoreDouble:
    def __init__(self):
        self.calls = []

    def presigned_get(self, key, expires_s):
        self.calls.append((key, expires_s))
        return f"https://objects.example/{key}"


@pytest.mark.parametrize("ca_file", [None, "/etc/llada/webhook-ca.pem"])
def test_the_dispatcher_from_the_settings_sends_with_their_timeout_and_ca_and_presigns_for_their_expiry(
        tmp_path, monkeypatch, ca_file):
    import certifi

    from shared import objectstore
    from shared.settings import Settings

    store = PresignRecorderStoreDouble()
    monkeypatch.setattr(objectstore, "object_store_from_settings", lambda settings: store)
    settings = Settings(data_dir=tmp_path, webhook_timeout_s=7, presign_expiry_s=321, webhook_ca_file=ca_file)

    dispatcher = command.dispatcher_from_settings(settings)

    assert (dispatcher.sender.timeout.connect_timeout, dispatcher.sender.timeout.read_timeout) == (7, 7)
    assert dispatcher.sender.ca_file == (ca_file or certifi.where())
    assert dispatcher.presign("results/j/1/image.png") == "https://objects.example/results/j/1/image.png"
    assert store.calls == [("results/j/1/image.png", 321)]
    dispatcher.close()
