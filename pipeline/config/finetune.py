"""The ``finetune`` section: how ``tracklens finetune`` trains the MLLM named by ``estimator``."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .base import Section as _Section

__all__ = ["FinetuneConfig", "LoraConfig"]

#: The linear layers of a decoder's attention and MLP, by their names in Llama, Qwen2, Mistral,
#: Gemma and most VLM language models: every one gets an adapter by default.
LANGUAGE_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class LoraConfig(_Section):
    """LoRA adapters (``peft``) on the language model's linear layers."""

    rank: int = Field(16, ge=1)
    alpha: float = Field(32.0, gt=0, description="scale of the update: alpha / rank")
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] = Field(
        list(LANGUAGE_LINEAR), min_length=1, description="names of the language model's linear layers that get adapters"
    )
    projector: bool = Field(
        True, description="adapters on the projector between vision and language too; false keeps them to the language "
        "model, the layers vLLM's --enable-lora serves (with true, serve the --merge checkpoint instead)"
    )


class FinetuneConfig(_Section):
    """Method and hyper-parameters. The recipe of *Beyond Specialization* (full fine-tuning,
    learning rate 2e-6, batch 32, one epoch) is ``configs/finetune-full.yaml``."""

    method: Literal["lora", "full"] = "lora"
    lora: LoraConfig = LoraConfig()
    tune_vision: bool = Field(
        False, description="also train the vision tower (LoRA: adapters on all its linear layers; full: its weights); "
        "the projector between vision and language is trained in full fine-tuning; with LoRA see lora.projector"
    )
    learning_rate: float = Field(2e-4, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    epochs: float = Field(1.0, gt=0, description="passes over the training rows (ignored when max_steps is set)")
    max_steps: int | None = Field(None, ge=1, description="optimizer steps; default: from epochs")
    batch_size: int = Field(8, ge=1, description="rows per forward")
    grad_accum: int = Field(1, ge=1, description="forwards per optimizer step (effective batch: batch_size x grad_accum)")
    warmup_ratio: float = Field(0.03, ge=0, lt=1, description="share of the steps with a linear warm-up, then cosine decay to 0")
    max_grad_norm: float | None = Field(1.0, gt=0)
    precision: Literal["auto", "float32", "bf16-mixed"] = Field(
        "auto", description="auto: bf16-mixed on a GPU (float32 weights and optimizer, bfloat16 compute; a LoRA base "
        "stays in bfloat16), float32 on a CPU"
    )
    gradient_checkpointing: bool = Field(False, description="recompute activations in the backward pass: less memory, ~30% slower")
    seed: int = 0
    checkpoint_every: int = Field(100, ge=1, description="optimizer steps between checkpoints")
    keep_checkpoints: int = Field(2, ge=1)
    val_share: float = Field(0.1, gt=0, lt=1, description="share held out for validation when no --val manifest is given")

