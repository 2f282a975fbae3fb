"""A tiny LLaVA-architecture VLM built offline, for smoke tests of the whole MLLM path.

It has the real parts of a LLaVA checkpoint: a CLIP vision tower, a projector, a Llama
language model, a byte-level BPE tokenizer with a chat template, and a ``LlavaProcessor``;
it saves with ``save_pretrained`` and loads through ``AutoModelForImageTextToText`` and
``AutoProcessor`` like any hub model. Its weights are random (seeded), so its answers mean
nothing; what it proves is that prompts, batching, constrained and scored decoding and
save/load work end to end. ``digits="split"`` tokenizes numbers digit by digit, as many real
tokenizers do, to exercise multi-token age scoring.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Literal

from ...types import EXPRESSIONS
from .prompts import load_prompt
from .schema import AGES, GENDERS, answer_text

__all__ = ["CHAT_TEMPLATE", "build_tiny_vlm"]

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ message['content'][0]['text'] + '\\n' }}"
    "{% elif message['role'] == 'user' %}{{ 'USER: ' }}"
    "{% for part in message['content'] %}{% if part['type'] == 'image' %}{{ '<image>\\n' }}"
    "{% else %}{{ part['text'] }}{% endif %}{% endfor %}{{ '\\n' }}"
    "{% else %}{{ 'ASSISTANT: ' + message['content'][0]['text'] + '</s>\\n' }}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)


def _corpus() -> list[str]:
    prompt = load_prompt("person-v1")
    texts = [prompt.system, *prompt.images.values(), prompt.question, "USER: ASSISTANT:"]
    answers = [answer_text(a, g, e) for a, g, e in itertools.product(AGES, GENDERS, EXPRESSIONS)]
    return texts * 20 + answers


def _tokenizer(digits: Literal["whole", "split"]):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    steps = [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)]
    if digits == "split":
        steps.insert(0, pre_tokenizers.Digits(individual_digits=True))
    tok.pre_tokenizer = pre_tokenizers.Sequence(steps)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=700,
        min_frequency=1,
        special_tokens=["<pad>", "<s>", "</s>", "<image>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        extra_special_tokens={"image_token": "<image>"},
        padding_side="left",
        chat_template=CHAT_TEMPLATE,
        model_max_length=2048,
    )


def build_tiny_vlm(out: str | Path, digits: Literal["whole", "split"] = "whole", seed: int = 0) -> Path:
    """Build, save and return the path of a tiny LLaVA model (~1 M parameters, a few MB)."""
    import torch
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    out = Path(out)
    tokenizer = _tokenizer(digits)
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224})
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=32,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=CHAT_TEMPLATE,
    )
    vision = CLIPVisionConfig(
        image_size=224, patch_size=32, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2
    )
    text = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        initializer_range=0.2,  # peaked, not near-uniform, answer distributions
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
    )
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config).eval()
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.do_sample = False
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out
