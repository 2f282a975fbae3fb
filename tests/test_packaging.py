"""Packaging: one import root, no generic top-level modules, light imports, typed config."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _python(code: str, cwd: Path) -> str:
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd, check=True)
    return result.stdout.strip()


def test_installed_package_imports_from_outside_the_repo(tmp_path):
    out = _python(
        "import tracklens.pipeline, tracklens.trackers, tracklens.serve, tracklens.pipeline.runner\n"
        "print(tracklens.pipeline.__file__); print(tracklens.trackers.__file__); print(tracklens.serve.__file__)",
        tmp_path,
    )
    files = [Path(line) for line in out.splitlines()]
    assert [f.parent.name for f in files] == ["pipeline", "trackers", "serve"]
    assert all(f.is_relative_to(REPO) for f in files)


@pytest.mark.parametrize("name", ["serve", "pipeline", "trackers"])
def test_no_generic_top_level_module_is_importable(tmp_path, name):
    assert _python(f"import importlib.util; print(importlib.util.find_spec({name!r}))", tmp_path) == "None"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(REPO)],
                   check=True, capture_output=True)  # fmt: skip
    (built,) = out.glob("tracklens-*.whl")
    return built


def test_the_wheel_holds_only_the_tracklens_root(wheel):
    tops = {name.split("/")[0] for name in zipfile.ZipFile(wheel).namelist()}
    assert tops == {"tracklens", wheel.name.split("-")[0] + "-" + wheel.name.split("-")[1] + ".dist-info"}
    names = zipfile.ZipFile(wheel).namelist()
    assert "tracklens/pipeline/runner.py" in names and "tracklens/trackers/bytetrack.py" in names


def test_importing_the_pipeline_loads_no_heavy_library(tmp_path):
    out = _python(
        "import sys, tracklens.pipeline, tracklens.pipeline.runner, tracklens.pipeline.cli, tracklens.trackers\n"
        "print(sorted(m for m in ('torch', 'onnxruntime', 'ray', 'av', 'dlib', 'redis', 'cv2', 'transformers') if m in sys.modules))",
        tmp_path,
    )
    assert out == "[]"


def test_trackers_use_only_numpy_and_scipy():
    for path in (REPO / "trackers").glob("*.py"):
        for line in path.read_text().splitlines():
            if line.startswith(("import ", "from ")) and not line.startswith(("from .", "from __future__")):
                assert line.split()[1].split(".")[0] in {"numpy", "scipy", "dataclasses", "typing"}, (path, line)


def _imports(path: Path, package: str) -> set[str]:
    """Absolute names of every module ``path`` imports (relative imports resolved), read with ast."""
    import ast

    parts = package.split(".")
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = parts[: len(parts) - node.level + 1] if node.level else []
            module = ".".join([*base, *(node.module.split(".") if node.module else [])])
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def _package_of(path: Path, root: str) -> str:
    rel = path.relative_to(REPO / root).with_suffix("")
    return ".".join(["tracklens", root, *rel.parts[:-1]])


def test_layers_import_downward_only():
    """trackers <- pipeline (no ray, no fastapi) <- serve; read from the import statements."""
    for layer, banned in (("pipeline", ("ray", "fastapi", "starlette", "tracklens.serve")),
                          ("trackers", ("ray", "fastapi", "tracklens.serve", "tracklens.pipeline"))):  # fmt: skip
        for path in (REPO / layer).rglob("*.py"):
            for name in _imports(path, _package_of(path, layer)):
                assert not any(name == b or name.startswith(b + ".") for b in banned), (path, name)


def test_serve_writes_import_ray_never_from_ray_import_serve():
    import ast

    for path in (REPO / "serve").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "ray":
                assert "serve" not in {alias.name for alias in node.names}, path


def test_default_yaml_spells_out_the_embedded_defaults():
    from tracklens.pipeline.config import PipelineConfig, load_config

    assert load_config(REPO / "configs" / "default.yaml") == PipelineConfig()


def test_serve_yaml_spells_out_the_service_defaults():
    from tracklens.pipeline.config import ServeConfig, load_serve_config

    assert load_serve_config(REPO / "configs" / "serve.yaml") == ServeConfig()


def test_the_cluster_manifest_carries_a_valid_service_config():
    import yaml
    from tracklens.pipeline.config import ServeConfig

    service, config_map = yaml.safe_load_all((REPO / "deploy" / "rayservice.yaml").read_text())
    assert "tracklens.serve.app:app_builder" in service["spec"]["serveConfigV2"]
    config = ServeConfig.model_validate(yaml.safe_load(config_map["data"]["serve.yaml"]))
    assert config.estimator.type == "routed" and config.pools.mllm.num_gpus == 1


def test_the_vllm_manifest_points_the_mllm_pool_at_its_ray_serve_llm_application():
    """deploy/rayservice-vllm.yaml cannot run here (vLLM has no CPU wheel): check what can be,
    the two applications and that tracklens's openai backend names the served model at its route."""
    import yaml
    from tracklens.pipeline.config import ServeConfig

    service, config_map = yaml.safe_load_all((REPO / "deploy" / "rayservice-vllm.yaml").read_text())
    apps = {a["name"]: a for a in yaml.safe_load(service["spec"]["serveConfigV2"])["applications"]}
    assert apps["mllm"]["import_path"] == "ray.serve.llm:build_openai_app"
    (llm,) = apps["mllm"]["args"]["llm_configs"]
    assert llm["engine_kwargs"]["limit_mm_per_prompt"] == {"image": 2} and llm["engine_kwargs"]["enable_prefix_caching"]
    backend = ServeConfig.model_validate(yaml.safe_load(config_map["data"]["serve.yaml"])).estimator.primary.backend
    assert backend.type == "openai" and backend.model == llm["model_loading_config"]["model_id"]
    assert backend.base_url.endswith(apps["mllm"]["route_prefix"] + "/v1")


@pytest.mark.parametrize("name", ["mllm-transformers.yaml", "mllm-openai.yaml"])
def test_example_configs_are_valid(name):
    from tracklens.pipeline.config import load_config

    estimator = load_config(REPO / "configs" / name).estimator
    assert estimator.type == "routed" and estimator.primary.type == "mllm" and estimator.fallback.type == "specialist"


def test_the_wheel_carries_the_prompts_and_default_config(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert "tracklens/configs/prompts/person-v1.yaml" in names and "tracklens/configs/default.yaml" in names
