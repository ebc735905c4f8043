"""The public CI (.github/workflows/ci.yml) cannot run here, so it stays a thin wrapper around what does run:
`.ci/run` (which calls `make test`) and the image's smoke test. These tests keep it that way (issue #14 item 11)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]


def workflow() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / ".github/workflows/ci.yml").read_text())
    return loaded


def commands(job: dict[str, Any]) -> list[str]:
    return [step["run"] for step in job["steps"] if "run" in step]


def test_the_test_job_runs_make_test_through_ci_run_against_service_containers() -> None:
    test = workflow()["jobs"]["test"]
    assert commands(test) == [".ci/run"]
    assert "make test" in (ROOT / ".ci/run").read_text().splitlines()[-1]
    assert set(test["services"]) == {"postgres", "redis"}
    assert "@postgres:5432/" in test["env"]["TEST_DATABASE_URL"]
    assert test["env"]["TEST_REDIS_URL"].startswith("redis://redis:")
    assert "bookworm" in test["container"]  # Debian, for Debian's Chromium as on our machines


def test_the_image_is_smoke_tested_before_it_is_published_and_published_only_on_a_tag() -> None:
    jobs = workflow()["jobs"]
    image = jobs["image"]
    assert image["needs"] == "test"
    runs = commands(image)
    assert runs[0].startswith("docker build") and runs[1].startswith("deploy/smoke-test ")
    publish = next(step for step in image["steps"] if step.get("name", "").startswith("Publish"))
    assert publish["if"] == "startsWith(github.ref, 'refs/tags/v')"
    assert "docker push" in publish["run"]


def test_the_scripts_ci_calls_are_valid_bash_and_executable() -> None:
    for script in (ROOT / ".ci/run", ROOT / "deploy/smoke-test"):
        assert script.stat().st_mode & 0o111, f"{script} is not executable"
        subprocess.run(["bash", "-n", str(script)], check=True)


def test_compose_runs_the_multi_node_topology_the_cluster_test_proves() -> None:
    compose: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services = compose["services"]
    assert {"postgres", "redis", "migrate", "web1", "web2", "worker1", "worker2", "prometheus"} <= set(services)
    assert services["migrate"]["command"] == ["cartwright", "database", "upgrade", "--no-prompt"]
    for name in ("web1", "web2", "worker1", "worker2"):
        # Every node waits for the migration and runs the Dockerfile's image, on the shared database and Redis.
        assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        assert services[name]["environment"]["REDIS_URL"].startswith("redis://redis:")
        assert "@postgres:5432/" in services[name]["environment"]["DATABASE_URL"]
    for name in ("worker1", "worker2"):
        assert services[name]["command"] == ["cartwright", "workers", "run"]
    scrape = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    targets = {t for job in scrape["scrape_configs"] for c in job["static_configs"] for t in c["targets"]}
    assert targets == {"web1:8000", "web2:8000", "worker1:9100", "worker2:9100"}
