"""The compose tier's own logic (tests/compose/podman_stack.py), without Podman."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.compose import podman_stack
from tests.compose.podman_stack import Built, ComposeStack, Images


def test_the_tier_moves_every_published_port_and_keeps_the_rest_of_env_example() -> None:
    example = podman_stack.read_env(podman_stack.ENV_EXAMPLE)
    tier = podman_stack.tier_env()
    assert tier.keys() == example.keys()
    for key, value in example.items():
        if key.endswith("_PORT"):
            assert int(tier[key]) == int(value) + podman_stack.PORT_OFFSET, key
        else:
            assert tier[key] == value, key
    assert len({tier[k] for k in tier if k.endswith("_PORT")}) == len([k for k in tier if k.endswith("_PORT")])


@pytest.mark.parametrize(
    ("files", "mirror"),
    [
        ({"sources.list.d/debian.sources": "Types: deb\nURIs: http://mirror.example/debian/\nSuites: bookworm\n"},
         "http://mirror.example/debian"),
        ({"sources.list": "# comment\ndeb [arch=amd64] http://ftp.example/debian bookworm main\n"}, "http://ftp.example/debian"),
        ({"sources.list.d/debian.sources": "URIs: http://deb.debian.org/debian-security\n"}, podman_stack.DEFAULT_MIRROR),
        ({}, podman_stack.DEFAULT_MIRROR),
    ],
)  # fmt: skip
def test_the_base_image_uses_the_mirror_apt_uses(tmp_path: Path, files: dict[str, str], mirror: str) -> None:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert podman_stack.debian_mirror(tmp_path) == mirror


@pytest.mark.parametrize(
    ("value", "expected"), [("30s", 30.0), ("1m30s", 90.0), ("500ms", 0.5), (10_000_000_000, 10.0), (5, 5.0)]
)
def test_compose_durations(value: object, expected: float) -> None:
    assert podman_stack.seconds(value) == expected


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> ComposeStack:
    images = Images([Built(name, f"localhost/test/{name}", 0.0, False) for name in ("mariadb", "postgres", "kafka", "spotlake")])
    return ComposeStack(tmp_path_factory.mktemp("tier"), images)


@pytest.mark.tools
def test_every_service_starts_after_what_it_depends_on(stack: ComposeStack) -> None:
    order = stack.start_order()
    assert sorted(order) == sorted(stack.services)
    for service in order:
        for dependency in stack.dependencies(service):
            assert order.index(dependency) < order.index(service), (dependency, service)
    assert order[0] == "stack-net"


@pytest.mark.tools
def test_the_override_replaces_every_image_and_never_pulls(stack: ComposeStack) -> None:
    for name, spec in stack.services.items():
        assert spec["image"].startswith("localhost/test/"), name
        assert spec["pull_policy"] == "never", name
    assert stack.services["mariadb"]["image"] == "localhost/test/mariadb"
    assert stack.services["airflow-scheduler"]["image"] == "localhost/test/spotlake"
