"""Contract tests for the connection layer: credentials, TLS, unreachable servers, versions, secrets."""

from __future__ import annotations

import base64
import datetime
import ipaddress
import logging
import socket
import ssl
import subprocess
from pathlib import Path

import pytest
from kibana_contract_fixtures import PASSWORD, RAW_API_KEY, write_rules
from kibana_contract_server import KibanaContractServer

from deployer.targets.http import RetryPolicy
from deployer.targets.kibana import KibanaClient

SECRETS = (RAW_API_KEY, base64.b64encode(RAW_API_KEY.encode()).decode(), PASSWORD, RAW_API_KEY.split(":")[1])


def _assert_no_secret(*texts: str) -> None:
    for text in texts:
        for secret in SECRETS:
            assert secret not in text, "a secret leaked into the output"


def test_wrong_api_key_gives_one_clear_401_and_no_retry_storm(kibana, dac, tmp_path: Path):
    rules_dir = write_rules(tmp_path, 2)
    wrong = base64.b64encode(b"dacTestKeyId:not-the-right-key").decode()
    run = dac("deploy", str(rules_dir), env={"KIBANA_URL": kibana.url, "KIBANA_API_KEY": wrong})
    assert run.exit_code == 2
    assert run.stderr.count("rejected the credentials (HTTP 401)") == 1
    assert "hint:" in run.stderr
    assert len(kibana.state.requests) == 1  # not retried
    assert "not-the-right-key" not in run.stdout + run.stderr
    assert wrong not in run.stdout + run.stderr


def test_missing_credentials_is_a_usage_error_naming_the_variables(kibana, dac, tmp_path: Path):
    rules_dir = write_rules(tmp_path, 1)
    run = dac("plan", str(rules_dir), "--kibana-url", kibana.url)
    assert run.exit_code == 2
    assert "KIBANA_API_KEY" in run.stderr and "KIBANA_USERNAME" in run.stderr
    assert len(kibana.state.requests) == 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_connection_refused_fails_fast_with_a_clear_error(dac, tmp_path: Path, monkeypatch):
    delays: list[float] = []
    monkeypatch.setattr("deployer.targets.http._sleep", delays.append)
    rules_dir = write_rules(tmp_path, 1)
    url = f"http://127.0.0.1:{_free_port()}"
    run = dac("plan", str(rules_dir), env={"KIBANA_URL": url, "KIBANA_API_KEY": "a2V5"})
    assert run.exit_code == 2
    assert f"cannot reach Kibana at {url}" in run.stderr and "connection refused" in run.stderr
    # The whole retry schedule (not wall-clock, which tests never assert) stays far below 10 s.
    policy = RetryPolicy()
    assert len(delays) == policy.connect_retries
    assert sum(delays) <= sum(policy.base_delay * 2**i for i in range(policy.connect_retries))


def test_unsupported_kibana_version_is_refused(kibana, env, dac, tmp_path: Path):
    kibana.state.version = "8.10.4"
    run = dac("plan", str(write_rules(tmp_path, 1)), env=env)
    assert run.exit_code == 2
    assert "Kibana 8.10.4" in run.stderr and "not supported" in run.stderr and "8.11.0" in run.stderr
    kibana.state.version = "9.1.0"
    assert dac("plan", str(tmp_path / "detections"), env=env).exit_code == 3


def test_credentials_in_url_are_refused_without_echoing_them(dac, tmp_path: Path):
    run = dac(
        "plan",
        str(write_rules(tmp_path, 1)),
        "--kibana-url",
        f"https://elastic:{PASSWORD}@kibana.example:5601",
    )
    assert run.exit_code == 2
    assert "credentials embedded in the target URL" in run.stderr
    _assert_no_secret(run.stdout, run.stderr)


def test_no_secret_in_any_output_or_log(kibana, env, dac, tmp_path: Path, caplog, monkeypatch):
    monkeypatch.setattr("deployer.targets.http._sleep", lambda _s: None)
    caplog.set_level(logging.DEBUG)
    rules_dir = write_rules(tmp_path, 3)
    kibana.fail(503, times=1, path_contains="/_import")
    outputs = []
    for args in (
        ("deploy", str(rules_dir), "-v"),
        ("deploy", str(rules_dir), "--format", "json"),
        ("plan", str(rules_dir), "-v", "--format", "json"),
        ("export", "--out", str(tmp_path / "exported")),
    ):
        run = dac(*args, env=env)
        assert run.exit_code == 0, run.stderr
        outputs += [run.stdout, run.stderr]
    bad = dac("plan", str(rules_dir), env={**env, "KIBANA_API_KEY": base64.b64encode(b"x:y").decode()})
    outputs += [bad.stdout, bad.stderr]
    exported = "".join(p.read_text() for p in (tmp_path / "exported").glob("*.yaml"))
    _assert_no_secret(*outputs, caplog.text, exported)
    client = KibanaClient(kibana.url, auth=_auth(), verify=True)
    _assert_no_secret(
        repr(client), repr(client.http), repr(client.http._session.auth), str(client.http._session.auth)
    )


def _auth():
    from deployer.targets.http import ApiKeyAuth, encode_api_key

    return ApiKeyAuth(encode_api_key(RAW_API_KEY))


# -- TLS ---------------------------------------------------------------------------------------


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    """Write a self-signed certificate for 127.0.0.1 (cryptography, else the openssl CLI)."""
    cert, key = tmp_path / "server.crt", tmp_path / "server.key"
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
    except ImportError:
        try:
            subprocess.run(
                ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                 "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
                 "-addext", "subjectAltName=IP:127.0.0.1", "-addext", "basicConstraints=critical,CA:TRUE"],
                check=True, capture_output=True,
            )  # fmt: skip
        except (OSError, subprocess.CalledProcessError) as e:
            pytest.skip(f"neither the cryptography package nor a working openssl CLI is available: {e}")
        return cert, key
    pk = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dac contract test CA")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(pk.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(pk, hashes.SHA256())
    )
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(
        pk.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert, key


@pytest.fixture
def tls_kibana(kibana_spec, kibana_exceptions_spec, tmp_path: Path):
    cert, key = _self_signed(tmp_path)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    server = KibanaContractServer(kibana_spec, ssl_context=ctx, exceptions_spec=kibana_exceptions_spec)
    encoded = server.add_api_key(RAW_API_KEY)
    server.start()
    yield server, cert, encoded
    server.stop()


def test_tls_unknown_ca_is_refused_unless_ca_cert_or_insecure(tls_kibana, dac, tmp_path: Path, monkeypatch):
    server, cert, encoded = tls_kibana
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    rules_dir = write_rules(tmp_path, 2)
    env = {"KIBANA_URL": server.url, "KIBANA_API_KEY": encoded}

    refused = dac("plan", str(rules_dir), env=env)
    assert refused.exit_code == 2
    assert "TLS verification failed" in refused.stderr and "--ca-cert" in refused.stderr
    assert server.state.requests == []  # the handshake failed: nothing reached the handler

    trusted = dac("plan", str(rules_dir), "--ca-cert", str(cert), env=env)
    assert trusted.exit_code == 3, trusted.stderr

    insecure = dac("plan", str(rules_dir), "--insecure", env=env)
    assert insecure.exit_code == 3, insecure.stderr
    assert "TLS verification is off" in insecure.stderr

    # A CA bundle in the environment must not override an explicit --insecure / --ca-cert choice.
    env_bundle = dac(
        "plan", str(rules_dir), "--ca-cert", str(cert), env={**env, "REQUESTS_CA_BUNDLE": "/nonexistent"}
    )
    assert env_bundle.exit_code == 3, env_bundle.stderr
