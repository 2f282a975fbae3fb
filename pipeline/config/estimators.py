"""Estimator sections: the specialist, the MLLM with its backends, and the routed pair."""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import Field

from .base import Section as _Section

__all__ = [
    "EstimatorConfig",
    "MllmEstimatorConfig",
    "OpenAIBackendConfig",
    "RoutedEstimatorConfig",
    "SpecialistEstimatorConfig",
    "TransformersBackendConfig",
]


class SpecialistEstimatorConfig(_Section):
    """Age+gender (dlib-models, ONNX) and expression (mini-Xception, ONNX) on onnxruntime."""

    type: Literal["specialist"] = "specialist"
    batch_size: int = Field(32, ge=1)
    min_expression_face_px: int = Field(32, ge=8)
    threads: int = Field(0, ge=0, description="onnxruntime intra-op threads, 0 = library default")


class TransformersBackendConfig(_Section):
    """An ``AutoModelForImageTextToText`` + ``AutoProcessor`` by hub id or local path."""

    type: Literal["transformers"] = "transformers"
    model: str = Field(description="hub id (e.g. a LLaVA or Qwen-VL checkpoint) or local folder")
    adapter: str | None = Field(
        None, description="a LoRA adapter folder (tracklens finetune's DIR/adapter) loaded on top of model; needs peft"
    )
    model_id: str | None = Field(None, description="name recorded on estimates; default: model, with +adapter when one is set")
    device: str = Field("auto", description="auto (cuda if present), cpu, cuda, cuda:1, ...")
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field(
        "auto", description="auto: the checkpoint's own (float32 on a CPU for half-precision checkpoints)"
    )
    local_files_only: bool = False
    max_new_tokens: int = Field(64, ge=1, description="free-text mode only")
    max_image_pixels: int | None = Field(
        200_704, ge=3136, description="pixels an image may keep before it is scaled down (dynamic-resolution families: "
        "Qwen-VL); 448x448 gives a face or body crop at most 256 image tokens; null: the checkpoint's own limit"
    )
    image_splitting: bool = Field(False, description="tile images into sub-images (SmolVLM/Idefics3, Gemma 3 pan and scan)")
    warmup: bool = True


class OpenAIBackendConfig(_Section):
    """An OpenAI-compatible chat endpoint with image input (vLLM, Ray Serve LLM, hosted APIs).

    The API key is read from the environment variable named by ``api_key_env``.
    """

    type: Literal["openai"] = "openai"
    base_url: str = Field(description="e.g. http://127.0.0.1:8000/v1")
    model: str
    api_key_env: str | None = "OPENAI_API_KEY"
    timeout_s: float = Field(30.0, gt=0)
    max_retries: int = Field(3, ge=0, description="on timeouts, connection errors, 429 and 5xx")
    backoff_s: float = Field(0.5, ge=0, description="first retry delay; doubles each retry")
    max_concurrency: int = Field(8, ge=1, description="requests in flight at once")
    max_tokens: int = Field(64, ge=1)
    constraint: Literal["json_schema", "choice"] = Field(
        "json_schema", description="how constrained and scored modes make the server enforce the answer: json_schema "
        "(OpenAI response_format; vLLM, hosted APIs) or choice (vLLM structured_outputs over the 1,414 canonical answers)"
    )
    top_logprobs: int = Field(20, ge=2, le=1000, description="scored mode: alternatives read at each answer token "
                              "(OpenAI allows 20; vLLM up to its --max-logprobs)")
    number_tokens: Literal["auto", "whole", "digits"] = Field(
        "auto", description="scored mode: whether the server's tokenizer writes a number as one token or digit by digit; "
        "auto asks the server's /tokenize (vLLM)"
    )
    check_on_start: bool = Field(
        True, description="before any work: GET /models (unreachable is an error) and, for constrained and scored modes, "
        "one probe request that only a server enforcing the constraint answers in the schema"
    )
    image_format: Literal["jpeg", "png"] = "jpeg"


MllmBackendConfig = Annotated[Union[TransformersBackendConfig, OpenAIBackendConfig], Field(discriminator="type")]


class MllmEstimatorConfig(_Section):
    """Ask a multimodal LLM about each person (face crop + body crop) with a versioned prompt.

    Modes: ``constrained`` (generation forced into the answer schema), ``scored`` (field
    distributions from one forward pass; transformers only) and ``free`` (plain text, parsed
    strictly: refusals and off-format answers are counted, never guessed).
    """

    type: Literal["mllm"] = "mllm"
    backend: MllmBackendConfig
    mode: Literal["constrained", "scored", "free"] = "scored"
    prompt: str = Field("person-v1", description="configs/prompts/NAME.yaml or a path")
    batch_size: int = Field(8, ge=1)
    hard_answer_confidence: float = Field(0.9, gt=0.5, lt=1, description="probability given to a hard label")


class RoutedEstimatorConfig(_Section):
    """The MLLM first, the specialist for whatever it cannot answer.

    A crop whose primary estimate is invalid (a refusal, an off-format answer, a failed
    request) is sent to the fallback; every estimate keeps the source that made it. In the
    service the router also sends crops straight to the fallback while the MLLM pool is full
    (see ``ServeConfig.router``).
    """

    type: Literal["routed"] = "routed"
    primary: MllmEstimatorConfig
    fallback: SpecialistEstimatorConfig = SpecialistEstimatorConfig()


EstimatorConfig = Annotated[
    Union[SpecialistEstimatorConfig, MllmEstimatorConfig, RoutedEstimatorConfig], Field(discriminator="type")
]


