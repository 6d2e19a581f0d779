from pathlib import Path

import pytest
from pydantic import ValidationError

from shared.settings import Settings


def test_embedded_defaults_live_under_data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("LLADA_DATA_DIR", str(tmp_path))
    s = Settings()
    assert s.data_dir == tmp_path.resolve()
    assert s.database_url == f"sqlite:///{tmp_path.resolve() / 'jobs.db'}"
    assert s.broker_url.startswith("filesystem://") and s.broker_url.endswith("/broker")
    assert s.object_store_url == f"file://{tmp_path.resolve() / 'objects'}"
    assert s.event_bus_url.startswith("embedded://")
    assert s.grpc_listen == "127.0.0.1:50051"
    assert s.max_attempts == 3


def test_relative_data_dir_is_made_absolute(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    s = Settings(data_dir=Path("./state"))
    assert s.data_dir == tmp_path.resolve() / "state"


def test_environment_chooses_backends(monkeypatch):
    monkeypatch.setenv("LLADA_DATABASE_URL", "postgresql+psycopg://u@db/llada")
    monkeypatch.setenv("LLADA_OBJECT_STORE_URL", "s3://results")
    monkeypatch.setenv("LLADA_S3_PUBLIC_ENDPOINT", "files.example.com")
    monkeypatch.setenv("LLADA_MAX_ATTEMPTS", "5")
    s = Settings()
    assert s.database_url == "postgresql+psycopg://u@db/llada"
    assert s.object_store_url == "s3://results"
    assert s.public_endpoint == "files.example.com"
    assert s.max_attempts == 5


def test_bad_values_are_refused_naming_the_setting(monkeypatch):
    monkeypatch.setenv("LLADA_MAX_ATTEMPTS", "0")
    with pytest.raises(ValidationError, match="max_attempts"):
        Settings()


def test_tls_needs_both_files():
    with pytest.raises(ValidationError, match="tls_cert_file"):
        Settings(tls_cert_file=Path("/x/cert.pem"))


def test_heartbeat_timeout_must_leave_room_for_a_late_beat():
    with pytest.raises(ValidationError, match="heartbeat_timeout_s"):
        Settings(heartbeat_interval_s=10, heartbeat_timeout_s=15)
