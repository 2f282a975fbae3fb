"""Placement by node role: the custom Ray resources each deployment asks for, what a Ray of
one machine offers, what the KubeRay manifests give their worker groups, and ``serve
--address`` refusing to run without a shared Redis. No Ray is started here (see
``test_multinode.py`` for a real cluster)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import assert_one_line_error, run_cli

REPO = Path(__file__).resolve().parents[1]
SERVE = "tracklens.serve.cli"


def test_each_deployment_asks_for_its_node_role_and_a_partial_section_keeps_it(tmp_path):
    from tracklens.pipeline.config import load_serve_config
    from tracklens.serve.app import deployment_options

    config_file = tmp_path / "serve.yaml"
    config_file.write_text(
        "estimator: {type: routed, primary: {type: mllm, backend: {type: openai, base_url: 'http://127.0.0.1:9/v1', model: m}}}\n"
        "pools: {specialist: {num_cpus: 1}, mllm: {num_replicas: auto, max_replicas: 3, upscale_delay_s: 2}}\n"
    )
    options = deployment_options(load_serve_config(config_file))
    asked = {name: o["ray_actor_options"].get("resources", {}) for name, o in options.items()}
    assert asked == {"Api": {}, "StreamIngest": {"ingest": 0.01}, "SpecialistPool": {"specialist": 0.01}, "MLLMPool": {"mllm": 0.01}}
    assert options["SpecialistPool"]["ray_actor_options"]["num_cpus"] == 1
    scaling = options["MLLMPool"]["autoscaling_config"]
    assert scaling == {"min_replicas": 1, "max_replicas": 3, "target_ongoing_requests": 4.0, "upscale_delay_s": 2.0, "downscale_delay_s": 600.0}
    from ray.serve.config import AutoscalingConfig

    AutoscalingConfig(**scaling)  # what Ray Serve takes: every key is one of its own


def test_a_ray_of_one_machine_offers_every_role_its_replicas_ask_for():
    from tracklens.pipeline.config import ServeConfig
    from tracklens.serve.app import deployment_options, local_resources

    config = ServeConfig.model_validate(
        {"ingest": {"replicas": 3, "resources": {"ingest": 0.5}},
         "estimator": {"type": "routed", "primary": {"type": "mllm", "backend": {"type": "openai", "base_url": "http://127.0.0.1:9/v1",
                                                                                 "model": "m"}}},
         "pools": {"mllm": {"num_replicas": "auto", "max_replicas": 5, "resources": {"gpu_node": 1}},
                   "specialist": {"num_replicas": 2, "resources": {"cpu_node": 0.25}}},
         "api": {"resources": {"cpu_node": 0.1}}}
    )  # fmt: skip
    offered = local_resources(config)
    assert set(offered) == {"ingest", "gpu_node", "cpu_node"}
    assert all(amount == int(amount) for amount in offered.values())  # Ray takes whole numbers for a node
    need: dict[str, float] = {}
    for options in deployment_options(config).values():
        replicas = options.get("autoscaling_config", {}).get("max_replicas") or options.get("num_replicas", 1)
        for name, amount in options["ray_actor_options"].get("resources", {}).items():
            need[name] = need.get(name, 0) + amount * replicas
    assert need == {"ingest": 1.5, "gpu_node": 5, "cpu_node": 0.6}
    assert all(offered[name] >= 2 * need[name] for name in need)  # room for a replacement beside each replica


@pytest.mark.parametrize(
    "resources, needle",
    [
        ({"CPU": 1}, "CPU is Ray's own resource"),
        ({"GPU": 1}, "GPU is Ray's own resource"),
        ({"ingest node": 1}, "must be 1-64 of"),
        ({"node:10.0.0.1": 1}, "must be 1-64 of"),
        ({"ingest": 0}, "must be above 0"),
        ({"ingest": -1}, "must be above 0"),
        ({"ingest": 1.5}, "whole number when above 1"),
        ({"ingest": 0.00001}, "more than 4 decimals"),
    ],
)
def test_a_bad_node_role_is_one_clear_line(tmp_path, resources, needle):
    config_file = tmp_path / "serve.yaml"
    config_file.write_text(f"ingest: {{resources: {json.dumps(resources)}}}\n")
    result = run_cli("serve", "--config", str(config_file), "--redis-url", "redis://127.0.0.1:1/0", home=tmp_path, module=SERVE)
    assert_one_line_error(result, "ingest.resources", needle)


def test_serve_on_a_cluster_without_a_shared_redis_is_refused_before_anything_starts(tmp_path):
    result = run_cli("serve", "--address", "127.0.0.1:1", home=tmp_path, module=SERVE)
    assert_one_line_error(result, "--address", "--redis-url or TRACKLENS_REDIS_URL")
    assert not (tmp_path / "redis").exists()  # no private redis-server


def _groups(manifest: str):
    import yaml
    from tracklens.pipeline.config import ServeConfig
    from tracklens.pipeline.config.base import over_defaults

    service, config_map = yaml.safe_load_all((REPO / "deploy" / manifest).read_text())
    cluster = service["spec"]["rayClusterConfig"]

    def offered(params: dict) -> dict:
        # KubeRay's form: the JSON map quoted once more for the shell of `ray start --resources`
        return json.loads(json.loads(params["resources"])) if "resources" in params else {}

    head = offered(cluster["headGroupSpec"]["rayStartParams"])
    groups = {g["groupName"]: offered(g["rayStartParams"]) for g in cluster["workerGroupSpecs"]}
    # as app_builder loads it: over the embedded defaults, section by section
    return head, groups, ServeConfig.model_validate(over_defaults(ServeConfig, yaml.safe_load(config_map["data"]["serve.yaml"])))


@pytest.mark.parametrize("manifest", ["rayservice.yaml", "rayservice-vllm.yaml"])
def test_the_manifests_give_every_role_the_service_asks_for_to_a_worker_group_and_none_to_the_head(manifest):
    from tracklens.serve.app import deployment_options

    head, groups, config = _groups(manifest)
    assert head == {}
    for name, options in deployment_options(config).items():
        asked = options["ray_actor_options"].get("resources", {})
        hosts = [g for g, offer in groups.items() if all(offer.get(r, 0) >= amount for r, amount in asked.items())]
        assert hosts, (manifest, name, asked, groups)
        if options["ray_actor_options"]["num_gpus"]:
            assert hosts == ["gpu"], (manifest, name, hosts)


@pytest.mark.parametrize("address, needle", [("nonsense", "expected HOST:PORT"), ("127.0.0.1:99999", "expected HOST:PORT"),
                                             ("127.0.0.1:{port}", "cannot reach a Ray head there")])  # fmt: skip
def test_serve_on_a_cluster_that_is_not_there_is_one_clear_line_not_a_long_wait(tmp_path, address, needle):
    from conftest import free_port

    result = run_cli("serve", "--address", address.format(port=free_port()), "--redis-url", "redis://127.0.0.1:1/0",
                     home=tmp_path, module=SERVE, timeout=120)  # fmt: skip
    assert_one_line_error(result, "--address", needle)
