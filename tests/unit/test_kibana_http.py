"""Unit tests for the HTTP layer, auth selection, target config resolution and Kibana chunking."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from deployer.targets import kibana
from deployer.targets.base import TargetError
from deployer.targets.config import resolve_target
from deployer.targets.http import ApiKeyAuth, BasicAuth, RetryPolicy, auth_from_env, encode_api_key, safe_url


def test_backoff_is_exponential_with_bounded_jitter():
    p = RetryPolicy(base_delay=0.5, max_delay=4.0)
    for attempt, ceiling in enumerate([0.5, 1.0, 2.0, 4.0, 4.0]):
        for _ in range(50):
            d = p.backoff(attempt)
            assert ceiling / 2 <= d <= ceiling


def test_auth_objects_never_show_secrets():
    key = ApiKeyAuth(encode_api_key("id:very-secret"))
    basic = BasicAuth("elastic", "hunter2-secret")
    for text in (repr(key), str(key), repr(basic), str(basic)):
        assert "very-secret" not in text and "hunter2" not in text
        assert base64.b64encode(b"id:very-secret").decode() not in text


def test_encode_api_key_accepts_both_forms():
    encoded = base64.b64encode(b"id:key").decode()
    assert encode_api_key("id:key") == encoded
    assert encode_api_key(encoded + "\n") == encoded


def test_auth_precedence(tmp_path: Path):
    names = {"api_key_env": "K", "username_env": "U", "password_env": "P"}
    key_file = tmp_path / "k"
    key_file.write_text("from-file\n")
    a = auth_from_env(**names, api_key_file=str(key_file), env={"K": "from-env"}, service="Kibana")
    assert isinstance(a, ApiKeyAuth) and a._header == "ApiKey from-file"
    b = auth_from_env(**names, env={"K": "from-env", "U": "u", "P": "p"}, service="Kibana")
    assert isinstance(b, ApiKeyAuth) and b._header == "ApiKey from-env"
    c = auth_from_env(**names, env={"U": "u", "P": "p"}, service="Kibana")
    assert isinstance(c, BasicAuth)
    with pytest.raises(TargetError, match="no Kibana credentials"):
        auth_from_env(**names, env={"U": "u"}, service="Kibana")


def test_safe_url():
    assert safe_url("https://kibana.example:5601/") == "https://kibana.example:5601"
    assert safe_url("http://host/base/") == "http://host/base"
    with pytest.raises(TargetError) as e:
        safe_url("https://u:secret@host")
    assert "secret" not in str(e.value)
    with pytest.raises(TargetError):
        safe_url("kibana.example:5601")


def _write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "dac.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_resolve_target_precedence(tmp_path: Path):
    cfg_path = _write_config(
        tmp_path,
        """targets:
  prod:
    kind: kibana
    url: https://prod.example:5601
    space: secops
    ca_cert: certs/ca.pem
    auth: {api_key_env: PROD_KEY}
  os:
    kind: opensearch
    url_env: OS_URL
""",
    )
    env = {
        "KIBANA_URL": "http://ambient:5601",
        "KIBANA_SPACE": "ambient",
        "OS_URL": "https://os.example:9200",
    }
    prod = resolve_target("prod", config_path=cfg_path, env=env)
    # A named target's URL and space win over ambient variables.
    assert (prod.url, prod.space, prod.api_key_env) == ("https://prod.example:5601", "secops", "PROD_KEY")
    assert prod.ca_cert == str(tmp_path / "certs/ca.pem")
    flagged = resolve_target(
        "prod", url="https://override:5601", space="other", config_path=cfg_path, env=env
    )
    assert (flagged.url, flagged.space) == ("https://override:5601", "other")
    ad_hoc = resolve_target(None, config_path=cfg_path, env=env)
    assert (ad_hoc.url, ad_hoc.space, ad_hoc.kind) == ("http://ambient:5601", "ambient", "kibana")
    os_target = resolve_target("os", config_path=cfg_path, env=env)
    assert (os_target.kind, os_target.url, os_target.username_env) == (
        "opensearch",
        "https://os.example:9200",
        "OPENSEARCH_USERNAME",
    )
    by_env = resolve_target(None, config_path=cfg_path, env={**env, "DAC_TARGET": "prod"})
    assert by_env.url == "https://prod.example:5601"
    insecure = resolve_target(None, config_path=cfg_path, env={**env, "KIBANA_INSECURE": "true"})
    assert insecure.insecure
    with pytest.raises(TargetError, match="unknown target 'nope'"):
        resolve_target("nope", config_path=cfg_path, env=env)
    with pytest.raises(TargetError, match="no target URL"):
        resolve_target(None, config_path=cfg_path, env={})


def test_rule_selection(tmp_path: Path):
    cfg_path = _write_config(
        tmp_path,
        "targets:\n  t:\n    url: http://k:5601\n    rules: ['detections/windows/**']\n    tags: [prod]\n",
    )
    cfg = resolve_target("t", config_path=cfg_path, env={})
    assert cfg.selects("detections/windows/a/b.yaml", ["prod"])
    assert not cfg.selects("detections/linux/b.yaml", ["prod"])
    assert not cfg.selects("detections/windows/b.yaml", ["dev"])


def test_import_chunks_respect_count_and_size(monkeypatch):
    monkeypatch.setattr(kibana, "IMPORT_MAX_RULES", 3)
    bodies = [{"rule_id": str(i)} for i in range(7)]
    assert [len(c) for c in kibana._import_chunks(bodies)] == [3, 3, 1]
    monkeypatch.setattr(kibana, "IMPORT_MAX_RULES", 10_000)
    monkeypatch.setattr(kibana, "IMPORT_MAX_BYTES", 40)
    big = [{"rule_id": "x" * 20} for _ in range(3)]
    assert [len(c) for c in kibana._import_chunks(big)] == [1, 1, 1]


def test_version_parsing():
    assert kibana.parse_version("8.15.0-SNAPSHOT") == (8, 15, 0)
    assert kibana.parse_version("9.1") == (9, 1, 0)
    assert kibana.MIN_VERSION <= kibana.parse_version("8.11.0") < kibana.MAX_VERSION_EXCLUSIVE
    with pytest.raises(ValueError):
        kibana.parse_version("latest")


def test_space_id_is_checked():
    with pytest.raises(TargetError, match="invalid Kibana space id"):
        kibana.KibanaClient("http://k:5601", space="../etc", auth=None)
    assert kibana.KibanaClient("http://k:5601", space="sec-ops", auth=None).prefix == "/s/sec-ops"
    assert kibana.KibanaClient("http://k:5601", space="default", auth=None).prefix == ""
