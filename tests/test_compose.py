"""docker-compose.yml against the Compose specification (no Docker engine runs here).

tests/data/compose_spec.json is the Compose specification's JSON schema as shipped in
docker-compose 1.29.2 (compose/config/compose_spec.json, Apache License 2.0).
"""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import yaml

ROOT = Path(__file__).resolve().parent.parent


def _compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_file_is_valid_against_the_spec() -> None:
    schema = json.loads((ROOT / "tests" / "data" / "compose_spec.json").read_text())
    jsonschema.validate(_compose(), schema, cls=jsonschema.Draft201909Validator)


def test_compose_has_the_services_and_no_published_database_ports() -> None:
    services = _compose()["services"]
    assert {"redis", "postgres", "migrate", "worker", "replay"} <= set(services)
    for name in ("redis", "postgres"):
        assert "ports" not in services[name], f"{name} must not publish a port"
    assert services["worker"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert "replay" in services["replay"]["command"] and "seeds/" in services["replay"]["command"]


def test_referenced_files_exist() -> None:
    compose = _compose()
    for secret in compose["secrets"].values():
        assert secret["file"].startswith("./secrets/")
    for name in ("Dockerfile", "docker/entrypoint.sh", "docker/redis.conf", "docker/redis-users.acl",
                 "docker/postgres-roles.sh"):
        assert (ROOT / name).exists(), name
    assert "maxmemory-policy noeviction" in (ROOT / "docker" / "redis.conf").read_text()
