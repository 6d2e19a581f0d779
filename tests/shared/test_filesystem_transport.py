"""The embedded broker's put is atomic: a consumer polling the folder never takes a half-written message
(kombu's own put writes in place, and its reader crashed a draining worker on an empty file)."""

from __future__ import annotations

import os
from queue import Empty

import pytest
from kombu import Connection

from shared import filesystem_transport
from shared.filesystem_transport import TRANSPORT


@pytest.fixture
def connection(tmp_path):
    folders = {"data_folder_in": str(tmp_path), "data_folder_out": str(tmp_path), "control_folder": str(tmp_path),
               "processed_folder": str(tmp_path), "store_processed": False}
    with Connection("filesystem://", transport=TRANSPORT, transport_options=folders) as conn:
        yield conn


def test_a_reader_polling_during_a_put_sees_nothing_then_the_whole_message(connection, monkeypatch):
    channel = connection.default_channel
    channel.queue_declare("jobs")
    seen_mid_put = []
    rename = os.replace

    def poll_then_rename(src, dst):  # the consumer's poll, between writing the message and publishing it
        try:
            seen_mid_put.append(channel._get("jobs"))
        except Empty:
            seen_mid_put.append(None)
        rename(src, dst)

    monkeypatch.setattr(filesystem_transport.os, "replace", poll_then_rename)
    channel._put("jobs", {"body": "run_job 42"})
    assert seen_mid_put == [None]
    assert channel._get("jobs") == {"body": "run_job 42"}
    with pytest.raises(Empty):
        channel._get("jobs")


def test_the_service_uses_it_for_filesystem_urls(tmp_path):
    from shared.queue import celery_config
    from shared.settings import Settings

    config = celery_config(Settings(data_dir=tmp_path))
    assert config["broker_url"] == "filesystem://" and config["broker_transport"] == TRANSPORT
