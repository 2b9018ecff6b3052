"""Deploy artifacts parse, and every `zhizao` command line they name exists with the options they pass."""

from __future__ import annotations

import configparser
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from zhizao.cli import cli

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def _yaml_docs(path: Path) -> list[Any]:
    with path.open() as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


YAML_FILES = sorted(p for p in DEPLOY.rglob("*.y*ml"))


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: str(p.relative_to(DEPLOY)))
def test_yaml_parses(path: Path) -> None:
    docs = _yaml_docs(path)
    assert docs, f"{path} is empty"
    if "kubernetes" in path.parts:
        for doc in docs:
            assert {"apiVersion", "kind", "metadata"} <= doc.keys(), f"{path}: {doc.get('kind')}"


@pytest.mark.parametrize("path", sorted(DEPLOY.glob("systemd/*.service")), ids=lambda p: p.name)
def test_systemd_units_parse(path: Path) -> None:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(path)
    assert {"Unit", "Service", "Install"} <= set(parser.sections())
    assert parser["Service"]["ExecStart"].startswith("/usr/local/bin/zhizao ")


def _command_lines() -> list[tuple[str, list[str]]]:
    found: list[tuple[str, list[str]]] = []
    compose = _yaml_docs(DEPLOY / "compose" / "docker-compose.yml")[0]
    for name, svc in compose["services"].items():
        if svc.get("image", "").startswith("zhizao") or "build" in svc:
            found.append((f"compose:{name}", list(svc["command"])))
    for path in sorted((DEPLOY / "kubernetes").glob("*.yaml")):
        for doc in _yaml_docs(path):
            spec = doc.get("spec", {}).get("template", {}).get("spec", {})
            for c in spec.get("containers", []):
                if str(c.get("image", "")).startswith("zhizao"):
                    found.append((f"{path.name}:{c['name']}", list(c["args"])))
    for path in sorted(DEPLOY.glob("systemd/*.service")):
        for line in path.read_text().splitlines():
            if line.startswith(("ExecStart=", "ExecStartPre=")):
                argv = line.split("=", 1)[1].split()[1:]
                found.append((f"{path.name}:{line.split('=')[0]}", [a.replace("%i", "x") for a in argv]))
    return found


@pytest.mark.parametrize(("where", "argv"), _command_lines(), ids=lambda v: v if isinstance(v, str) else "")
def test_named_commands_exist(where: str, argv: list[str]) -> None:
    """Run the command line with --help appended: click fails on unknown commands or options."""
    options = [a for a in argv if a.startswith("--")]
    words = [a for a in argv if not a.startswith("-") and "/" not in a and "." not in a]
    # subcommand path: leading plain words until the first option or path argument
    path: list[str] = []
    for a in argv:
        if a.startswith("-") or "/" in a or "." in a:
            break
        path.append(a)
    assert words, f"{where}: no command"
    result = CliRunner().invoke(cli, [*path, "--help"])
    assert result.exit_code == 0, f"{where}: `zhizao {' '.join(path)}` does not exist: {result.output}"
    for opt in options:
        assert opt in result.output, f"{where}: `zhizao {' '.join(path)}` has no option {opt}"


def _ingest_settings(env: dict[str, Any], argv: list[str]) -> Any:
    from zhizao.cloud.settings import CloudSettings

    plain = {k: str(v) for k, v in env.items() if "DATABASE" not in k}  # secrets are not on this machine
    shared = True if "--shared-subscription" in argv else None
    return CloudSettings.from_env(plain, **({"ingest_shared_subscription": shared} if shared else {})).ingest_settings()


def test_ingest_workers_share_the_stream_with_acks_on_as_the_fault_matrix_tests_them() -> None:
    """The `shared-workers` row: several workers on $share (Mosquitto round robin), acks on: sessions and the
    ack ledger in PostgreSQL, one owner per site. Compose and Kubernetes run exactly that."""
    services = _yaml_docs(DEPLOY / "compose" / "docker-compose.yml")[0]["services"]
    for name in ("cloud", "ingest"):
        s = _ingest_settings(services[name]["environment"], services[name]["command"])
        assert (s.shared_subscription, s.acks) == (True, True), name
    docs = {(d["kind"], d["metadata"]["name"]): d for d in _yaml_docs(DEPLOY / "kubernetes" / "cloud.yaml")}
    config = docs["ConfigMap", "zhizao-cloud"]["data"]
    ingest = docs["Deployment", "zhizao-ingest"]
    assert ingest["spec"]["replicas"] >= 2
    container = ingest["spec"]["template"]["spec"]["containers"][0]
    env = config | {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}
    s = _ingest_settings(env, container["args"])
    assert (s.shared_subscription, s.acks) == (True, True)
    # The API pods get the same setting from the ConfigMap, so they relay the owners' live events.
    api = docs["Deployment", "zhizao-api"]["spec"]["template"]["spec"]["containers"][0]
    api_env = config | {e["name"]: e["value"] for e in api.get("env", []) if "value" in e}
    assert _ingest_settings(api_env, api["args"]).shared_subscription is True
