from pathlib import Path

import pytest
from pydantic import ValidationError

from shared.settings import Settings, check_environment, describe_settings_error


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


def test_gateway_timings_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("LLADA_SHUTDOWN_GRACE_S", "3.5")
    monkeypatch.setenv("LLADA_WATCH_POLL_INTERVAL_S", "0.5")
    s = Settings()
    assert (s.shutdown_grace_s, s.watch_poll_interval_s) == (3.5, 0.5)
    assert (Settings.model_fields["shutdown_grace_s"].default, Settings.model_fields["watch_poll_interval_s"].default) \
        == (10.0, 2.0)
    monkeypatch.setenv("LLADA_WATCH_POLL_INTERVAL_S", "0")
    with pytest.raises(ValidationError, match="watch_poll_interval_s"):
        Settings()


def test_log_level_is_case_insensitive_and_checked(monkeypatch):
    monkeypatch.setenv("LLADA_LOG_LEVEL", "debug")
    assert Settings().log_level == "DEBUG"
    monkeypatch.setenv("LLADA_LOG_LEVEL", "loud")
    with pytest.raises(ValidationError, match="log_level"):
        Settings()


def test_a_misspelled_environment_variable_is_an_error_naming_it(monkeypatch):
    monkeypatch.setenv("LLADA_MAX_ATTEMTPS", "5")
    with pytest.raises(ValidationError, match="LLADA_MAX_ATTEMTPS is not a setting; did you mean LLADA_MAX_ATTEMPTS"):
        Settings()
    monkeypatch.delenv("LLADA_MAX_ATTEMTPS")
    monkeypatch.setenv("llada_heartbeat_timeout", "90")  # case does not hide it either
    with pytest.raises(ValidationError, match="did you mean LLADA_HEARTBEAT_TIMEOUT_S"):
        Settings()


def test_an_unknown_environment_variable_is_logged_and_ignored(monkeypatch, caplog):
    monkeypatch.setenv("LLADA_FROBNICATE", "yes")
    monkeypatch.setenv("LLADA_DATABASE", "postgresql://x")  # like a setting, but not close enough to refuse
    monkeypatch.setenv("LLADA_SERVER", "host:50051")  # the client's variable: known, not reported
    monkeypatch.setenv("LLADA_METRICS_HOST_PORT", "9464")  # docker-compose's: known, not reported
    with caplog.at_level("WARNING", logger="llada.settings"):
        s = Settings()
    assert s.max_attempts == 3
    messages = [r.getMessage() for r in caplog.records]
    assert any("LLADA_FROBNICATE is not a llada-serve setting" in m for m in messages)
    assert any("LLADA_DATABASE is not" in m and "did you mean LLADA_DATABASE_URL" in m for m in messages)
    assert not any("LLADA_SERVER" in m or "LLADA_METRICS_HOST_PORT" in m for m in messages)


def test_check_environment_returns_the_unknown_names():
    env = {"LLADA_GRPC_LISTEN": "x", "LLADA_TEST_STEPS": "3", "LLADA_NOPE": "1", "PATH": "/bin"}
    assert check_environment(env) == ["LLADA_NOPE"]


def test_a_misspelled_keyword_is_an_error():
    with pytest.raises(ValidationError, match="max_attempt"):
        Settings(max_attempt=5)


def test_engine_layout_settings_are_read_from_json(monkeypatch):
    monkeypatch.setenv("LLADA_ENGINE_PLACEMENT", '{"tokenizer": 0, "denoiser": 1, "decoder": 0}')
    monkeypatch.setenv("LLADA_ENGINE_REPLICAS", "2")
    s = Settings()
    assert s.engine_placement == {"tokenizer": 0, "denoiser": 1, "decoder": 0} and s.engine_replicas == 2
    assert Settings.model_fields["engine_device"].default is None  # the engine's own default applies


def test_settings_errors_are_described_one_line_each_without_the_inputs(monkeypatch):
    monkeypatch.setenv("LLADA_S3_SECRET_KEY", "very-secret")
    monkeypatch.setenv("LLADA_MAX_ATTEMPTS", "0")
    monkeypatch.setenv("LLADA_METRICS_PORT", "70000")
    with pytest.raises(ValidationError) as err:
        Settings()
    text = describe_settings_error(err.value)
    assert sorted(text.split("; ")) == ["max_attempts: Input should be greater than or equal to 1",
                                        "metrics_port: Input should be less than or equal to 65535"]
    assert "very-secret" not in text
    monkeypatch.delenv("LLADA_MAX_ATTEMPTS")
    monkeypatch.delenv("LLADA_METRICS_PORT")
    monkeypatch.setenv("LLADA_MAX_ATEMPTS", "2")
    with pytest.raises(ValidationError) as err:
        Settings()
    assert describe_settings_error(err.value) == \
        "environment: environment variable LLADA_MAX_ATEMPTS is not a setting; did you mean LLADA_MAX_ATTEMPTS?"


def test_secrets_and_urls_with_passwords_stay_out_of_the_repr(monkeypatch):
    monkeypatch.setenv("LLADA_S3_SECRET_KEY", "s3-secret-value")
    monkeypatch.setenv("LLADA_DEFAULT_API_KEY", "llada_default-key-value")
    monkeypatch.setenv("LLADA_DATABASE_URL", "postgresql://llada:db-password@db:5432/llada")
    monkeypatch.setenv("LLADA_BROKER_URL", "redis://:broker-password@redis:6379/0")
    monkeypatch.setenv("LLADA_EVENT_BUS_URL", "redis://:bus-password@redis:6379/1")
    s = Settings()
    for text in (repr(s), str(s)):
        for secret in ("s3-secret-value", "llada_default-key-value", "db-password", "broker-password",
                       "bus-password"):
            assert secret not in text
    assert s.s3_secret_key.get_secret_value() == "s3-secret-value"
    assert s.default_api_key.get_secret_value() == "llada_default-key-value"
    assert s.database_url == "postgresql://llada:db-password@db:5432/llada"  # URLs stay plain strings
