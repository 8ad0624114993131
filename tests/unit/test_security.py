"""Security settings reach the clients, secrets stay out of logs, tampered snapshots are refused.

The worker's own startup log line is checked live in
``tests/integration/test_faults.py::test_redis_outage_pages_keep_flowing_and_state_catches_up``
(real secrets in the environment, none of them in the log).
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import ssl
import subprocess
from pathlib import Path
from typing import Any

import pytest
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

from online_models.snapshot import MAGIC, dump_snapshot
from stream.app import WorkerApp
from stream.config import Settings
from stream.kafka_clients import client_config
from stream.redis_store import RedisStore

SECRETS = {
    "KAFKA_SASL_PASSWORD": "sasl-pw-0f9e",
    "REDIS_PASSWORD": "redis-pw-7c1d",
    "INSESSION_SNAPSHOT_KEY": "snap-key-55aa",
    "KAFKA_SSL_KEY_PASSWORD": "key-pw-3b3b",
}
ENV = {
    "KAFKA_BOOTSTRAP_SERVERS": "k1:9093,k2:9093",
    "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
    "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
    "KAFKA_SASL_USERNAME": "svc-insession",
    "REDIS_URL": "rediss://:url-pw-9d9d@redis.internal:6380/0",
    "REDIS_SSL_CAFILE": "/etc/ssl/certs/ca-certificates.crt",
    **SECRETS,
}


def test_settings_read_every_security_variable() -> None:
    settings = Settings.from_env(ENV)
    assert settings.security_protocol == "SASL_SSL"
    assert settings.sasl_mechanism == "SCRAM-SHA-512"
    assert settings.sasl_username == "svc-insession"
    assert settings.sasl_password == SECRETS["KAFKA_SASL_PASSWORD"]
    assert settings.redis_password == SECRETS["REDIS_PASSWORD"]
    assert settings.snapshot_key == SECRETS["INSESSION_SNAPSHOT_KEY"]
    assert settings.ssl_key_password == SECRETS["KAFKA_SSL_KEY_PASSWORD"]
    assert settings.redis_ssl_cafile == ENV["REDIS_SSL_CAFILE"]
    assert not settings.using_dev_snapshot_key


def test_redacted_settings_and_repr_hold_no_secret() -> None:
    settings = Settings.from_env(ENV)
    shown = str(settings.redacted()) + repr(settings)
    for name, secret in {**SECRETS, "url password": "url-pw-9d9d"}.items():
        assert secret not in shown, f"{name} leaked"
    redacted = settings.redacted()
    assert redacted["sasl_password"] == "***"
    assert redacted["redis_password"] == "***"
    assert redacted["snapshot_key"] == "***"
    assert redacted["redis_url"] == "rediss://:***@redis.internal:6380/0"
    assert redacted["sasl_username"] == "svc-insession"  # not a secret, useful in logs


def test_unset_secrets_are_shown_as_unset() -> None:
    redacted = Settings.from_env({}).redacted()
    assert redacted["sasl_password"] is None
    assert redacted["redis_url"] == "redis://127.0.0.1:6379/0"


@pytest.mark.parametrize(
    ("protocol", "mechanism", "expect_ssl"),
    [
        ("SASL_SSL", "SCRAM-SHA-512", True),
        ("SASL_PLAINTEXT", "SCRAM-SHA-256", False),
        ("sasl_plaintext", None, False),  # case-insensitive, PLAIN by default
    ],
)
def test_faust_gets_the_sasl_settings(
    protocol: str, mechanism: str | None, expect_ssl: bool
) -> None:
    settings = Settings.from_env(
        {**ENV, "KAFKA_SECURITY_PROTOCOL": protocol, "KAFKA_SASL_MECHANISM": mechanism or ""}
    )
    app = WorkerApp(settings)
    auth = credentials_to_aiokafka_auth(app.app.conf.broker_credentials)
    assert auth["security_protocol"] == protocol.upper()
    assert auth["sasl_mechanism"] == (mechanism or "PLAIN")
    assert auth["sasl_plain_username"] == "svc-insession"
    assert auth["sasl_plain_password"] == SECRETS["KAFKA_SASL_PASSWORD"]
    assert isinstance(auth["ssl_context"], ssl.SSLContext) is expect_ssl


def test_faust_gets_tls_and_plaintext_settings() -> None:
    tls = WorkerApp(Settings.from_env({"KAFKA_SECURITY_PROTOCOL": "SSL"}))
    auth = credentials_to_aiokafka_auth(tls.app.conf.broker_credentials)
    assert auth["security_protocol"] == "SSL"
    assert auth["ssl_context"].verify_mode == ssl.CERT_REQUIRED
    plain = WorkerApp(Settings.from_env({}))
    assert plain.app.conf.broker_credentials is None
    with pytest.raises(ValueError, match="KAFKA_SECURITY_PROTOCOL"):
        WorkerApp(Settings.from_env({"KAFKA_SECURITY_PROTOCOL": "TLS"}))


@pytest.fixture
def client_certificate(tmp_path: Path) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    cert, key = tmp_path / "client.pem", tmp_path / "client.key"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-days", "1", "-subj", "/CN=t",
            "-keyout", str(key), "-out", str(cert),
            "-passout", f"pass:{SECRETS['KAFKA_SSL_KEY_PASSWORD']}",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


def test_client_certificate_for_mutual_tls(client_certificate: tuple[Path, Path]) -> None:
    cert, key = client_certificate
    env = {
        "KAFKA_SECURITY_PROTOCOL": "SSL",
        "KAFKA_SSL_CERTFILE": str(cert),
        "KAFKA_SSL_KEYFILE": str(key),
        "KAFKA_SSL_KEY_PASSWORD": SECRETS["KAFKA_SSL_KEY_PASSWORD"],
    }
    app = WorkerApp(Settings.from_env(env))  # loads the encrypted key: wrong password raises
    assert app.app.conf.broker_credentials is not None
    with pytest.raises(ssl.SSLError):
        WorkerApp(Settings.from_env({**env, "KAFKA_SSL_KEY_PASSWORD": "wrong"}))
    config = client_config(Settings.from_env(env))
    assert config["ssl.certificate.location"] == str(cert)
    assert config["ssl.key.location"] == str(key)
    assert config["ssl.key.password"] == SECRETS["KAFKA_SSL_KEY_PASSWORD"]


def test_tool_clients_get_the_same_security_settings() -> None:
    config = client_config(Settings.from_env(ENV))
    assert config == {
        "bootstrap.servers": "k1:9093,k2:9093",
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "svc-insession",
        "sasl.password": SECRETS["KAFKA_SASL_PASSWORD"],
        "ssl.key.password": SECRETS["KAFKA_SSL_KEY_PASSWORD"],
    }


def test_redis_password_and_tls_reach_the_connection_pool() -> None:
    app = WorkerApp(Settings.from_env({**ENV, "REDIS_URL": "rediss://redis.internal:6380/0"}))
    pool: Any = app.store.client.connection_pool
    assert pool.connection_class.__name__ == "SSLConnection"
    assert pool.connection_kwargs["password"] == SECRETS["REDIS_PASSWORD"]
    assert pool.connection_kwargs["ssl_ca_certs"] == ENV["REDIS_SSL_CAFILE"]
    plain = RedisStore("redis://127.0.0.1:6379/0", password="pw", ssl_ca_certs="/ignored")
    plain_pool: Any = plain.client.connection_pool
    assert plain_pool.connection_class.__name__ == "Connection"  # no TLS without rediss://
    assert "ssl_ca_certs" not in plain_pool.connection_kwargs


# --- model snapshots through the worker's restore path ---------------------------------------


def _pipeline(redis_url: str, prefix: str, key: str) -> Any:
    settings = Settings(redis_url=redis_url, redis_prefix=prefix, snapshot_key=key)
    return WorkerApp(settings).pipeline


def _flip_last_byte(blob: bytes) -> bytes:
    return blob[:-1] + bytes([blob[-1] ^ 0x01])


@pytest.mark.parametrize(
    ("spoil", "reason"),
    [
        (_flip_last_byte, "signature"),
        (lambda blob: blob[: len(MAGIC) + 10], ""),  # truncated
        (lambda blob: b"\x80\x04\x95pickle?", ""),  # not a snapshot at all
        (lambda blob: "other-key", "signature"),  # signed with another key
    ],
)
async def test_a_tampered_snapshot_is_refused_with_a_clear_error(
    redis_url: str, key_prefix: str, caplog: pytest.LogCaptureFixture, spoil: Any, reason: str
) -> None:
    writer = _pipeline(redis_url, key_prefix, "the-right-key")
    assert await writer.checkpoint_models()
    blob = await writer.store.load_models()
    assert blob is not None and blob.startswith(MAGIC)
    spoiled = spoil(blob)
    if spoiled == "other-key":
        spoiled = dump_snapshot(writer.engine.model_states(), key=b"other-key", created_at=1)
    await writer.store.client.set(writer.store.key("models"), spoiled)

    reader = _pipeline(redis_url, key_prefix, "the-right-key")
    fresh_models = reader.engine.models
    with caplog.at_level(logging.ERROR, logger="stream.pipeline"):
        assert await reader.restore_models() is False
    assert reader.engine.models is fresh_models, "a refused snapshot must not replace models"
    assert reader.counters["model_snapshots_refused"] == 1
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("refusing model snapshot: ") and reason in m for m in messages), (
        messages
    )
    assert "the-right-key" not in " ".join(messages)
    await asyncio.gather(writer.store.close(), reader.store.close())


async def test_a_genuine_snapshot_is_restored(redis_url: str, key_prefix: str) -> None:
    writer = _pipeline(redis_url, key_prefix, "k")
    assert await writer.checkpoint_models()
    reader = _pipeline(redis_url, key_prefix, "k")
    assert await reader.restore_models() is True
    assert reader.engine.model_states() == writer.engine.model_states()
    await asyncio.gather(writer.store.close(), reader.store.close())


def test_no_code_executing_deserializer_in_the_shipped_packages() -> None:
    root = Path(__file__).resolve().parents[2]
    forbidden = ("import pickle", "pickle.load", "import marshal", "shelve", "yaml.load(", "eval(")
    offenders = [
        f"{path.relative_to(root)}: {needle}"
        for package in ("schemas", "processors", "online_models", "stream", "scripts")
        for path in (root / package).rglob("*.py")
        for needle in forbidden
        if needle in path.read_text(encoding="utf-8")
    ]
    assert not offenders, offenders
    app = WorkerApp(Settings())
    assert app.app.conf.value_serializer == "raw"
    assert all(topic.value_serializer == "raw" for topic in app.topics.values())
