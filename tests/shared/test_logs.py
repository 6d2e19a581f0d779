import io
import json
import logging
from pathlib import Path

import pytest

from shared.logs import configure_logging
from shared.settings import Settings


@pytest.fixture
def restore_root_logger():
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_one_json_object_per_line_with_extra_fields_and_the_service(restore_root_logger, tmp_path):
    out = io.StringIO()
    configure_logging(Settings(data_dir=tmp_path), service="worker", stream=out)
    log = logging.getLogger("llada.test")
    log.info("job submitted", extra={"job_id": "j-1", "where": Path("/x/y")})
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        log.exception("run failed", extra={"job_id": "j-2"})
    first, second = lines(out)
    assert {"level": "info", "logger": "llada.test", "msg": "job submitted", "service": "worker",
            "job_id": "j-1", "where": "/x/y"}.items() <= first.items()
    assert first["ts"].endswith("+00:00")
    assert second["level"] == "error" and second["job_id"] == "j-2"
    assert "RuntimeError: boom" in second["exc"]


def test_level_comes_from_the_settings(restore_root_logger, tmp_path, monkeypatch):
    monkeypatch.setenv("LLADA_LOG_LEVEL", "warning")
    out = io.StringIO()
    configure_logging(Settings(data_dir=tmp_path), stream=out)
    logging.getLogger("llada.test").info("hidden")
    logging.getLogger("llada.test").warning("shown")
    assert [entry["msg"] for entry in lines(out)] == ["shown"]
    assert "service" not in lines(out)[0]


def test_configuring_again_replaces_the_handler(restore_root_logger):
    first, second = io.StringIO(), io.StringIO()
    configure_logging(stream=first)
    configure_logging(level="DEBUG", stream=second)
    logging.getLogger("llada.test").debug("once")
    assert first.getvalue() == "" and [e["msg"] for e in lines(second)] == ["once"]
