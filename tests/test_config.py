"""Configuration: typed, frozen, env-substituted; every fault names its key path."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

from gateway.config import DEV_SECRET_KEY, Config, ConfigError, config_from_dict, load_config

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "config.example.yaml"
SECRET = "a-secret-key-long-enough"


def minimal(**sections: Any) -> dict[str, Any]:
    base = {
        "signing": {"secret_keys": [SECRET]},
        "server": {"public_url": "https://sources.example.com"},
        "storage": {"bucket": "sources"},
    }
    for name, section in sections.items():
        current = base.get(name)
        merged = isinstance(section, dict) and isinstance(current, dict)
        base[name] = {**current, **section} if merged else section  # type: ignore[dict-item]
    return base


def test_example_file_loads_with_its_defaults() -> None:
    config = load_config(EXAMPLE, env={"GATEWAY_SECRET_KEY": SECRET})
    assert isinstance(config, Config)
    assert config.storage.embedded is True
    assert config.signing.secret_keys == (SECRET,)
    assert config.auth.tokens[0].token == "dev-token"
    assert config.sources.ttl_seconds == 600
    assert config.sources.max_size_bytes == 314572800
    assert config.server.public_url == "http://127.0.0.1:8080"
    assert config.deployments.forward.type == "sqs"


def test_example_file_moves_its_urls_with_the_port() -> None:
    env = {"GATEWAY_SECRET_KEY": SECRET, "GATEWAY_PORT": "9090"}
    config = load_config(EXAMPLE, env=env)
    assert config.server.port == 9090
    assert config.server.public_url == "http://127.0.0.1:9090"
    # An explicit public URL (a proxy in front) still wins.
    config = load_config(EXAMPLE, env={**env, "GATEWAY_PUBLIC_URL": "https://gw.example.com"})
    assert config.server.port == 9090
    assert config.server.public_url == "https://gw.example.com"


@pytest.mark.parametrize(
    ("value", "env", "expected"),
    [
        ("${A:-token-${B:-y}z}", {}, "token-yz"),
        ("${A:-token-${B:-y}z}", {"B": "b"}, "token-bz"),
        # An unused default may name an unset variable.
        ("${A:-${MISSING}}", {"A": "token-aa"}, "token-aa"),
        # A value from the environment is not expanded again.
        ("${A}", {"A": "token-${B}"}, "token-${B}"),
        ("token no ${ reference", {}, "token no ${ reference"),
    ],
)
def test_env_defaults_may_hold_references(value: str, env: dict[str, str], expected: str) -> None:
    config = config_from_dict(minimal(auth={"tokens": [{"name": "a", "token": value}]}), env=env)
    assert config.auth.tokens[0].token == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("${A:-${MISSING}}", "auth.tokens[0].token: environment variable MISSING is not set"),
        ("${A:-open", "auth.tokens[0].token: a ${...:-default} is not closed with }"),
    ],
)
def test_env_reference_faults(value: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        config_from_dict(minimal(auth={"tokens": [{"name": "a", "token": value}]}), env={})
    assert str(caught.value) == message


def test_example_file_documents_every_key() -> None:
    """Each field of each section (nested ones too) appears, commented, in config.example.yaml."""
    text = EXAMPLE.read_text()
    assert text.count("#") > 40
    missing = []

    def walk(obj: Any, path: str) -> None:
        for field in dataclasses.fields(obj):
            if f"{field.name}:" not in text:
                missing.append(f"{path}{field.name}")
            value = getattr(obj, field.name)
            if dataclasses.is_dataclass(value):
                walk(value, f"{path}{field.name}.")

    walk(config_from_dict(minimal()), "")
    assert missing == []


def test_an_unquoted_off_is_the_word_off(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(
        f"signing: {{secret_keys: [{SECRET}]}}\n"
        "server: {public_url: https://sources.example.com}\n"
        "storage: {bucket: sources}\n"
        "sources: {archive_check: off}\n"
    )
    assert load_config(path).sources.archive_check == "off"
    # A boolean is no word for a setting that has no "on".
    with pytest.raises(ConfigError, match=r"sources\.download_mode"):
        config_from_dict(minimal(sources={"download_mode": False}))


def test_config_is_frozen() -> None:
    config = config_from_dict(minimal())
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.server.port = 1  # type: ignore[misc]


def test_env_substitution_with_and_without_default() -> None:
    data = minimal(
        server={"port": "${PORT:-9000}", "public_url": "https://${HOST}/"},
        auth={"tokens": [{"name": "a", "token": "${TOKEN:-fallback-token}"}]},
    )
    config = config_from_dict(data, env={"HOST": "gw.example.com"})
    assert config.server.port == 9000
    assert config.server.base_url == "https://gw.example.com"
    assert config.auth.tokens[0].token == "fallback-token"
    config = config_from_dict(data, env={"HOST": "h", "PORT": "81", "TOKEN": "from-env-123"})
    assert config.server.port == 81
    assert config.auth.tokens[0].token == "from-env-123"


def test_env_value_stays_a_string_where_a_string_is_expected() -> None:
    data = minimal(signing={"secret_keys": ["${KEY}"]})
    config = config_from_dict(data, env={"KEY": "1" * 20})
    assert config.signing.secret_keys == ("1" * 20,)


@pytest.mark.parametrize(
    ("data", "env", "path"),
    [
        (minimal(server={"prot": 1}), {}, "server.prot: unknown key"),
        (minimal(bogus={}), {}, "bogus: unknown key"),
        (minimal(server={"port": "eighty"}), {}, "server.port: must be int, got str"),
        (minimal(server={"port": True}), {}, "server.port: must be int, got bool"),
        (minimal(storage={"read_timeout": "1s"}), {}, "storage.read_timeout: must be float"),
        (minimal(server={"header_timeout": 0}), {}, "server.header_timeout: must be positive"),
        (minimal(server={"send_timeout": -1}), {}, "server.send_timeout: must be positive"),
        (minimal(storage="s3"), {}, "storage: must be a mapping"),
        (minimal(auth={"tokens": {"a": 1}}), {}, "auth.tokens: must be a list"),
        (minimal(auth={"tokens": [{"token": "x" * 10}]}), {}, "auth.tokens[0].name: required"),
        ({}, {}, "signing.secret_keys: required"),
        ({"signing": {"secret_keys": [SECRET]}}, {}, "server.public_url: required"),
        (minimal(storage={"bucket": ""}), {}, "storage.bucket: required"),
        ({"signing": {}}, {}, "signing.secret_keys: required"),
        ({"signing": {"secret_keys": []}}, {}, "signing.secret_keys: at least one key"),
        ({"signing": {"secret_keys": ["short"]}}, {}, "signing.secret_keys[0]: must be at least"),
        (
            {"signing": {"secret_keys": ["${GATEWAY_SECRET_KEY}"]}},
            {},
            "signing.secret_keys[0]: environment variable GATEWAY_SECRET_KEY is not set",
        ),
        (
            {"signing": {"secret_keys": ["${GATEWAY_SECRET_KEY}"]}},
            {"GATEWAY_SECRET_KEY": ""},
            "signing.secret_keys[0]: environment variable GATEWAY_SECRET_KEY is not set",
        ),
        (minimal(sources={"download_mode": "x"}), {}, "sources.download_mode: must be one of"),
        (minimal(sources={"part_size_bytes": 1024}), {}, "sources.part_size_bytes: must be at"),
        (minimal(server={"public_url": "example.com"}), {}, "server.public_url: must be an"),
        (minimal(server={"trusted_proxies": ["nope"]}), {}, "server.trusted_proxies[0]: not a"),
        (
            minimal(auth={"tokens": [{"name": "a", "token": "sha256:xyz"}]}),
            {},
            "auth.tokens[0].token: sha256: must be followed by 64 hex digits",
        ),
        (
            minimal(deployments={"forward": {"type": "http"}}),
            {},
            "deployments.forward.url: required when type is http",
        ),
        (minimal(storage={"bucket": "Bad_Bucket"}), {}, "storage.bucket: not a valid"),
    ],
)
def test_faults_name_the_key_path(data: dict[str, Any], env: dict[str, str], path: str) -> None:
    with pytest.raises(ConfigError) as info:
        config_from_dict(data, env=env)
    assert str(info.value).startswith(path), str(info.value)


def test_unreadable_and_invalid_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("server: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def gateway_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", **(env or {})},
        timeout=60,
        cwd=ROOT,
    )


def test_check_config_accepts_a_valid_file() -> None:
    result = gateway_cli("check-config", str(EXAMPLE), env={"GATEWAY_SECRET_KEY": SECRET})
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout


def test_the_example_checks_on_its_own_with_the_development_key() -> None:
    """As the README documents it, without GATEWAY_SECRET_KEY: its development key, accepted
    because the file keeps storage.embedded."""
    result = gateway_cli("check-config", str(EXAMPLE))
    assert (result.returncode, result.stdout.strip()) == (0, f"{EXAMPLE}: OK"), result.stderr
    assert load_config(EXAMPLE, env={}).signing.secret_keys == (DEV_SECRET_KEY,)


def test_the_development_key_is_refused_outside_embedded_storage(tmp_path: Path) -> None:
    real = tmp_path / "real.yaml"
    real.write_text(EXAMPLE.read_text().replace("embedded: true", "embedded: false"))
    result = gateway_cli("check-config", str(real))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "gateway: configuration error: signing.secret_keys[0]: the development key of"
        " config.example.yaml is public and only accepted with storage.embedded: true; set"
        " GATEWAY_SECRET_KEY (the same on every instance) or list keys of your own"
    ]
    # Among other keys too (a rotation that kept it).
    data = {
        "server": {"public_url": "http://127.0.0.1:8080"},
        "storage": {"bucket": "sources"},
        "signing": {"secret_keys": [SECRET, DEV_SECRET_KEY]},
    }
    with pytest.raises(ConfigError, match=r"^signing\.secret_keys\[1\]: the development key"):
        config_from_dict(data)
    result = gateway_cli("check-config", str(real), env={"GATEWAY_SECRET_KEY": SECRET})
    assert result.returncode == 0, result.stderr


def test_serve_refuses_a_bad_file_before_serving(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"signing:\n  secret_keys: [{SECRET}]\nserver:\n  port: 'x'\n")
    result = gateway_cli("serve", "--config", str(bad))
    assert result.returncode == 2
    assert "server.port: must be int, got str" in result.stderr
    # GATEWAY_CONFIG names the file when --config is absent.
    result = gateway_cli("serve", env={"GATEWAY_CONFIG": str(bad)})
    assert "server.port: must be int" in result.stderr
    result = gateway_cli("serve")
    assert result.returncode == 2
    assert "pass --config FILE or set GATEWAY_CONFIG" in result.stderr


def test_check_config_takes_config_like_the_other_commands() -> None:
    env = {"GATEWAY_SECRET_KEY": SECRET}
    result = gateway_cli("check-config", "--config", str(EXAMPLE), env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{EXAMPLE}: OK"
    result = gateway_cli("check-config", env={**env, "GATEWAY_CONFIG": str(EXAMPLE)})
    assert result.returncode == 0, result.stderr


def test_check_config_without_a_file_says_how_to_give_one() -> None:
    result = gateway_cli("check-config")
    assert result.returncode == 2
    assert "pass --config FILE or set GATEWAY_CONFIG" in result.stderr


def test_version() -> None:
    result = gateway_cli("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"gateway {metadata.version('sources-gateway')}"


def test_deployments_record_keys_and_their_defaults() -> None:
    deployments = config_from_dict(minimal()).deployments
    assert deployments.prefix == "deployments/"
    assert deployments.expire_after_days == 30
    assert deployments.events_ttl_seconds == 86400
    assert deployments.max_output_bytes == 4194304
    assert deployments.poll_interval == 1
    assert deployments.demo_deployer is False
    example = load_config(EXAMPLE, env={"GATEWAY_SECRET_KEY": SECRET})
    assert example.deployments.demo_deployer is True


@pytest.mark.parametrize(
    ("sections", "path"),
    [
        ({"deployments": {"prefix": ""}}, "deployments.prefix"),
        ({"deployments": {"prefix": "records"}}, "deployments.prefix"),
        ({"deployments": {"prefix": "sources/records/"}}, "deployments.prefix"),
        ({"storage": {"bucket": "sources", "prefix": ""}}, "deployments.prefix"),
        ({"deployments": {"expire_after_days": 0}}, "deployments.expire_after_days"),
        ({"deployments": {"events_ttl_seconds": 0}}, "deployments.events_ttl_seconds"),
        ({"deployments": {"max_output_bytes": 10}}, "deployments.max_output_bytes"),
        ({"deployments": {"poll_interval": 0}}, "deployments.poll_interval"),
        ({"deployments": {"poll_interval": 120}}, "deployments.poll_interval"),
        (
            {
                "deployments": {
                    "demo_deployer": True,
                    "forward": {"type": "http", "url": "https://d.example", "secret": "s"},
                }
            },
            "deployments.demo_deployer",
        ),
    ],
)
def test_bad_deployments_record_settings_name_their_key(
    sections: dict[str, Any], path: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        config_from_dict(minimal(**sections))
    assert caught.value.path == path
