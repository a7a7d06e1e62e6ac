"""Settings from the environment: every field reachable through its variable, bad values refused at
start with the variable named, secrets masked, and ``adapter-registry config`` printing the result."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from registry_service.cli import app as cli
from registry_service.settings import Settings, SettingsError, WorkerSettings, mask_url, unknown_variables

#: A valid value for every field that differs from its default, as the environment would give it.
SERVICE_VALUES: dict[str, tuple[str, Any]] = {
    "data_dir": ("/srv/registry", Path("/srv/registry")),
    "database_url": ("postgresql://reg:pw@db:5432/reg", "postgresql://reg:pw@db:5432/reg"),
    "s3_endpoint": ("http://minio:9000", "http://minio:9000"),
    "s3_bucket": ("adapters", "adapters"),
    "s3_region": ("eu-west-1", "eu-west-1"),
    "s3_public_endpoint": ("http://localhost:9000", "http://localhost:9000"),
    "s3_max_connections": ("64", 64),
    "database_pool_size": ("5", 5),
    "database_max_overflow": ("0", 0),
    "public_url": ("https://hub.example.org", "https://hub.example.org"),
    "max_direct_upload_bytes": ("1048576", 1048576),
    "max_header_bytes": ("65536", 65536),
    "upload_part_bytes": ("8388608", 8388608),
    "presign_expires_s": ("600", 600),
    "redirect_downloads": ("false", False),
    "apply_migrations": ("0", False),
    "debug": ("true", True),
    "host": ("0.0.0.0", "0.0.0.0"),
    "port": ("9000", 9000),
    "workers": ("4", 4),
    "graceful_shutdown_s": ("5", 5),
    "forwarded_allow_ips": ("*", "*"),
    "log_level": ("warning", "warning"),
    "log_format": ("json", "json"),
    "metrics": ("off", False),
    "probe_timeout_s": ("0.5", 0.5),
    "restrictive_licenses": ("llama3.1,gemma", "llama3.1,gemma"),
    "gc_grace_s": ("600", 600),
    "gc_finalizing_s": ("7200", 7200),
    "gc_max_objects": ("500", 500),
    "webhook_allow_private": ("true", True),
    "webhook_timeout_s": ("2.5", 2.5),
    "max_webhooks_per_namespace": ("3", 3),
    "max_body_bytes": ("4096", 4096),
    "max_signature_body_bytes": ("1000000", 1000000),
    "max_hub_commit_bytes": ("2000000", 2000000),
    "max_concurrent_uploads": ("3", 3),
    "max_upload_session_bytes": ("1000000000", 1000000000),
    "upload_session_ttl_s": ("600", 600),
    "namespace_max_bytes": ("123456789", 123456789),
    "namespace_max_open_uploads": ("7", 7),
    "max_merge_weight": ("2.5", 2.5),
    "max_merge_memory_bytes": ("1000000000", 1000000000),
    "token_default_ttl_s": ("3600", 3600),
    "token_max_ttl_s": ("86400", 86400),
    "web_session_ttl_s": ("600", 600),
    "secret_key": ("k" * 40, "k" * 40),
}
WORKER_VALUES: dict[str, tuple[str, Any]] = {
    "concurrency": ("3", 3),
    "heartbeat_s": ("2", 2.0),
    "stall_timeout_s": ("9", 9.0),
    "stall_check_s": ("4", 4.0),
    "poll_s": ("0.5", 0.5),
    "max_attempts": ("5", 5),
    "progress_interval_s": ("0.25", 0.25),
    "step_delay_s": ("0.1", 0.1),
    "scratch_dir": ("/scratch", Path("/scratch")),
    "name": ("worker-7", "worker-7"),
    "metrics_port": ("9101", 9101),
    "metrics_host": ("0.0.0.0", "0.0.0.0"),
    "gc_cron": ("*/5 * * * *", "*/5 * * * *"),
    "webhook_max_attempts": ("3", 3),
    "webhook_backoff_s": ("2", 2),
    "job_timeout_s": ("90", 90.0),
}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No service variables from the caller's environment."""
    import os

    for var in list(os.environ):
        if var.startswith("ADAPTER_REGISTRY_") or var == "DATABASE_URL":
            monkeypatch.delenv(var)
    return monkeypatch


def test_the_tables_cover_every_field() -> None:
    assert set(SERVICE_VALUES) == set(Settings.model_fields)
    assert set(WORKER_VALUES) == set(WorkerSettings.model_fields)


@pytest.mark.parametrize(("model", "prefix", "table"), [(Settings, "ADAPTER_REGISTRY_", SERVICE_VALUES),
                                                         (WorkerSettings, "ADAPTER_REGISTRY_WORKER_", WORKER_VALUES)])
def test_every_setting_is_read_from_its_variable(clean_env: pytest.MonkeyPatch, model: Any, prefix: str,
                                                 table: dict[str, tuple[str, Any]]) -> None:
    defaults = model()
    for field, (raw, value) in table.items():
        assert getattr(defaults, field) != value, f"pick a non-default value for {field}"
        clean_env.setenv(f"{prefix}{field.upper()}", raw)
    settings = model.from_env()
    assert {f: getattr(settings, f) for f in table} == {f: v for f, (_, v) in table.items()}


def test_options_win_over_the_environment_and_none_means_not_given(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("ADAPTER_REGISTRY_PORT", "9000")
    clean_env.setenv("ADAPTER_REGISTRY_WORKERS", "3")
    settings = Settings.from_env(port=9100, workers=None)
    assert (settings.port, settings.workers) == (9100, 3)


def test_plain_database_url_is_read_too_and_empty_variables_are_unset(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("DATABASE_URL", "postgres://u@db/x")
    clean_env.setenv("ADAPTER_REGISTRY_S3_BUCKET", "")
    settings = Settings.from_env()
    assert settings.database_url == "postgres://u@db/x" and not settings.embedded_database
    assert settings.s3_bucket is None and not settings.uses_s3


@pytest.mark.parametrize(("var", "raw", "says"), [
    ("ADAPTER_REGISTRY_PRESIGN_EXPIRES_S", "soon", "valid integer"),
    ("ADAPTER_REGISTRY_PRESIGN_EXPIRES_S", "9999999", "less than or equal to 604800"),
    ("ADAPTER_REGISTRY_UPLOAD_PART_BYTES", "1024", "greater than or equal to 5242880"),
    ("ADAPTER_REGISTRY_WORKERS", "0", "greater than or equal to 1"),
    ("ADAPTER_REGISTRY_PORT", "70000", "less than or equal to 65535"),
    ("ADAPTER_REGISTRY_LOG_FORMAT", "xml", "'text' or 'json'"),
    ("ADAPTER_REGISTRY_DEBUG", "maybe", "valid boolean"),
    ("ADAPTER_REGISTRY_DATABASE_URL", "mysql://root:hunter2@db/x", "PostgreSQL URL"),
    ("ADAPTER_REGISTRY_S3_ENDPOINT", "minio:9000", "http:// or https://"),
    ("ADAPTER_REGISTRY_S3_BUCKET", "My_Bucket", "S3 bucket names"),
])
def test_a_bad_value_names_its_variable(clean_env: pytest.MonkeyPatch, var: str, raw: str, says: str) -> None:
    clean_env.setenv(var, raw)
    if var == "ADAPTER_REGISTRY_S3_ENDPOINT":
        clean_env.setenv("ADAPTER_REGISTRY_S3_BUCKET", "adapters")
    with pytest.raises(SettingsError) as info:
        Settings.from_env()
    message = str(info.value)
    assert message.startswith(f"{var}="), message
    assert says in message
    assert "hunter2" not in message  # a password in a bad URL is masked too


def test_every_problem_is_reported_at_once(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("ADAPTER_REGISTRY_PORT", "x")
    clean_env.setenv("ADAPTER_REGISTRY_MAX_HEADER_BYTES", "-1")
    with pytest.raises(SettingsError) as info:
        Settings.from_env()
    lines = str(info.value).splitlines()
    assert sorted(line.split("=")[0] for line in lines) == ["ADAPTER_REGISTRY_MAX_HEADER_BYTES",
                                                            "ADAPTER_REGISTRY_PORT"]


def test_settings_that_contradict_each_other_are_refused(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("ADAPTER_REGISTRY_S3_ENDPOINT", "http://minio:9000")
    with pytest.raises(SettingsError, match="S3_BUCKET is not"):
        Settings.from_env()
    clean_env.setenv("ADAPTER_REGISTRY_WORKER_HEARTBEAT_S", "30")
    clean_env.setenv("ADAPTER_REGISTRY_WORKER_STALL_TIMEOUT_S", "20")
    with pytest.raises(SettingsError, match=r"HEARTBEAT_S.*STALL_TIMEOUT_S"):
        WorkerSettings.from_env()


def test_to_env_round_trips(clean_env: pytest.MonkeyPatch) -> None:
    """What ``serve --workers N`` hands its processes gives them exactly the parent's settings."""
    original = Settings(**{f: v for f, (_, v) in SERVICE_VALUES.items()})
    for var, value in original.to_env().items():
        clean_env.setenv(var, value)
    assert Settings.from_env() == original


def test_urls_are_masked() -> None:
    assert mask_url("postgresql://reg:s3cret@db:5432/reg?sslmode=require") == \
        "postgresql://reg:***@db:5432/reg?sslmode=require"
    assert mask_url("postgresql://reg@db/reg") == "postgresql://reg@db/reg"
    shown = Settings(database_url="postgresql://reg:s3cret@db/reg").shown()
    assert shown["database_url"] == "postgresql://reg:***@db/reg"


def test_misspelt_variables_are_pointed_out() -> None:
    found = unknown_variables({"ADAPTER_REGISTRY_PRESIGN_EXPIRE_S": "60", "ADAPTER_REGISTRY_URL": "http://x",
                               "ADAPTER_REGISTRY_WORKER_CONCURRENCY": "2", "HOME": "/root"})
    assert found == ["ADAPTER_REGISTRY_PRESIGN_EXPIRE_S (did you mean ADAPTER_REGISTRY_PRESIGN_EXPIRES_S?)"]


def test_config_command_prints_effective_settings_masked(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("ADAPTER_REGISTRY_DATABASE_URL", "postgresql://reg:s3cret@db/reg")
    clean_env.setenv("ADAPTER_REGISTRY_WORKERS", "4")
    clean_env.setenv("ADAPTER_REGISTRY_WORKER_CONCURRENCY", "2")
    clean_env.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE1234")
    clean_env.setenv("AWS_SECRET_ACCESS_KEY", "very-secret-key")
    clean_env.setenv("ADAPTER_REGISTRY_WORKES", "8")
    result = CliRunner().invoke(cli, ["config"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "s3cret" not in out and "very-secret-key" not in out and "AKIAEXAMPLE1234" not in out
    lines = out.splitlines()
    assert "ADAPTER_REGISTRY_DATABASE_URL=postgresql://reg:***@db/reg" in lines
    assert "ADAPTER_REGISTRY_WORKERS=4" in lines
    assert "ADAPTER_REGISTRY_WORKER_CONCURRENCY=2" in lines
    assert "ADAPTER_REGISTRY_PORT=8000    # default" in lines
    assert "AWS_ACCESS_KEY_ID=***1234" in lines and "AWS_SECRET_ACCESS_KEY=***" in lines
    assert "ADAPTER_REGISTRY_WORKES (did you mean ADAPTER_REGISTRY_WORKERS?)" in out
    every = {f"ADAPTER_REGISTRY_{f.upper()}" for f in SERVICE_VALUES} | \
        {f"ADAPTER_REGISTRY_WORKER_{f.upper()}" for f in WORKER_VALUES}
    assert every <= {line.split("=")[0] for line in lines if "=" in line}

    result = CliRunner().invoke(cli, ["config", "--json"])
    body = json.loads(result.stdout[result.stdout.index("{"):])
    assert body["service"]["database_url"] == "postgresql://reg:***@db/reg"
    assert body["worker"]["concurrency"] == 2


def test_config_command_refuses_bad_settings_with_every_problem(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("ADAPTER_REGISTRY_UPLOAD_PART_BYTES", "100")
    clean_env.setenv("ADAPTER_REGISTRY_WORKER_CONCURRENCY", "many")
    result = CliRunner().invoke(cli, ["config"])
    assert result.exit_code == 2
    assert "ADAPTER_REGISTRY_UPLOAD_PART_BYTES='100'" in result.output
    assert "ADAPTER_REGISTRY_WORKER_CONCURRENCY='many'" in result.output


def test_serve_refuses_bad_settings_before_starting_anything(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    clean_env.setenv("ADAPTER_REGISTRY_PRESIGN_EXPIRES_S", "-5")
    result = CliRunner().invoke(cli, ["serve", "--data-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "ADAPTER_REGISTRY_PRESIGN_EXPIRES_S='-5'" in result.output
    assert not (tmp_path / "pg").exists()  # no database was started


def test_a_bad_collection_schedule_is_refused_naming_its_variable(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("ADAPTER_REGISTRY_WORKER_GC_CRON", "every hour")
    with pytest.raises(SettingsError, match="ADAPTER_REGISTRY_WORKER_GC_CRON"):
        WorkerSettings.from_env()
