"""Tiny random checkpoints of the VLM families users load, built offline with their real classes.

Each family is built the way its hub checkpoints are laid out: the family's own model class,
processor class, tokenizer class and special tokens, its image placeholders, and a chat
template that renders that family's prompt format (system turn or none, role names, image
markers, generation prompt). Weights are random (seeded) and tokenizers are trained here on the
prompt and the answers, so nothing is downloaded; what the checkpoints prove is that the MLLM
path is right for each family's positions, templates and tokenization, not that they answer
well. ``shape="tiny"`` gives models of a few MB; the GPU benchmark asks for larger shapes.

Families (``FAMILIES``): ``llava`` (LLaVA-1.5: CLIP + Llama, SentencePiece-style tokenizer with
``▁`` word starts), ``llava_onevision`` (SigLIP + Qwen2, anyres), ``qwen2_5_vl`` and ``qwen3_vl``
(M-RoPE, dynamic resolution), ``gemma3`` (SigLIP + Gemma 3, sliding-window layers, no system
role), ``smolvlm`` (Idefics3: SigLIP + Llama, image splitting off).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .tiny import _corpus

__all__ = ["FAMILIES", "FamilyParts", "build_family", "family_parts"]

# -- chat templates: each renders its family's prompt format ------------------------------------
# Messages are transformers' content lists ({"type": "image"} / {"type": "text", "text": ...}).

_CHATML_QWEN25 = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
_CHATML_QWEN3 = _CHATML_QWEN25.replace(
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}",
    "",
)
_GEMMA3 = (
    "{{ bos_token }}"
    "{% if messages[0]['role'] == 'system' %}"
    "{% set first_prefix = messages[0]['content'][0]['text'] + '\n\n' %}{% set turns = messages[1:] %}"
    "{% else %}{% set first_prefix = '' %}{% set turns = messages %}{% endif %}"
    "{% for message in turns %}"
    "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "<start_of_turn>{{ role }}\n{{ first_prefix if loop.first else '' }}"
    "{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<start_of_image>{% elif part['type'] == 'text' %}{{ part['text'] | trim }}{% endif %}"
    "{% endfor %}<end_of_turn>\n"
    "{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)
_IDEFICS3 = (
    "<|im_start|>{% for message in messages %}{{ message['role'] | capitalize }}"
    "{% if message['content'][0]['type'] == 'image' %}{{ ':' }}{% else %}{{ ': ' }}{% endif %}"
    "{% for part in message['content'] %}"
    "{% if part['type'] == 'text' %}{{ part['text'] }}{% elif part['type'] == 'image' %}{{ '<image>' }}{% endif %}"
    "{% endfor %}<end_of_utterance>\n{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)
_ONEVISION = (
    "{% for message in messages %}<|im_start|>{{ message['role'] + ' ' }}"
    "{% for part in message['content'] %}{% if part['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}"
    "{% for part in message['content'] %}{% if part['type'] == 'text' %}{{ '\n' + part['text'] }}{% endif %}{% endfor %}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
_LLAVA15 = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ message['content'][0]['text'] + ' ' }}"
    "{% elif message['role'] == 'user' %}USER: "
    "{% for part in message['content'] %}{% if part['type'] == 'image' %}<image>\n{% endif %}{% endfor %}"
    "{% for part in message['content'] %}{% if part['type'] == 'text' %}{{ part['text'] + ' ' }}{% endif %}{% endfor %}"
    "{% else %}ASSISTANT: {{ message['content'][0]['text'] + eos_token }}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)

# -- tokenizers ----------------------------------------------------------------------------------


def _byte_bpe(specials: list[str], vocab_size: int = 900, split_digits: bool = True):
    """A byte-level BPE (GPT-2 / Qwen style) trained on the prompt and the answers; digits are
    split one by one, as Qwen's and SmolLM's pre-tokenizers do."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    steps = [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)]
    if split_digits:
        steps.insert(0, pre_tokenizers.Digits(individual_digits=True))
    tok.pre_tokenizer = pre_tokenizers.Sequence(steps)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=1, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)  # fmt: skip
    tok.train_from_iterator(_corpus(), trainer)
    return tok


def _sentencepiece_bpe(specials: list[str], vocab_size: int = 900, prepend: str = "first"):
    """A SentencePiece-style BPE (Llama, Gemma): spaces become ``▁`` and start words, so a word
    or number after a space is another token than the same text glued to what precedes it;
    digits are split; bytes the vocabulary lacks fall back to ``<0xNN>`` tokens."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    byte_tokens = [f"<0x{i:02X}>" for i in range(256)]
    tok = Tokenizer(models.BPE(byte_fallback=True, fuse_unk=True, unk_token="<unk>"))
    tok.normalizer = normalizers.Replace(Regex(" "), "▁")
    if prepend == "first":
        tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(Regex(" "), "▁")])
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex("▁"), behavior="merged_with_next"), pre_tokenizers.Digits(individual_digits=True)]
    )
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
                                    + ([decoders.Strip(" ", 1, 0)] if prepend == "first" else []))  # fmt: skip
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=1, special_tokens=["<unk>", *specials, *byte_tokens],
                                  show_progress=False)  # fmt: skip
    tok.train_from_iterator([text.replace(" ", "▁") for text in _corpus()], trainer)
    return tok


# -- families ------------------------------------------------------------------------------------

_TINY_TEXT = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
              "num_key_value_heads": 2, "max_position_embeddings": 4096, "initializer_range": 0.2}  # fmt: skip


def _text(shape: dict, **fields) -> dict:
    """The text model's config: tiny sizes, the tokenizer's ids (``fields``), then ``shape``'s
    own (a benchmark's real sizes, its vocabulary size included: the trained tokenizer only
    uses the first ids)."""
    return {**_TINY_TEXT, **fields, **shape.get("text", {})}


def _qwen_vl(shape: dict, version: str) -> FamilyParts:
    import transformers as tf

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
    template = _CHATML_QWEN25 if version == "2.5" else _CHATML_QWEN3
    tokenizer = tf.Qwen2TokenizerFast(tokenizer_object=_byte_bpe(specials), eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                      unk_token=None, bos_token=None, chat_template=template, padding_side="left")  # fmt: skip
    pixels = shape.get("max_pixels", 28 * 28 * 16)
    images = tf.Qwen2VLImageProcessorPil(min_pixels=28 * 28 * 4, max_pixels=pixels, patch_size=shape.get("patch", 14),
                                         merge_size=2, temporal_patch_size=2)  # fmt: skip
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in specials}
    head_dim = _text(shape)["hidden_size"] // _text(shape)["num_attention_heads"]
    # the t, h, w shares of the rotary frequencies (half the head dimension)
    sections = shape.get("mrope_section", [head_dim // 2 - 2 * (head_dim // 6), head_dim // 6, head_dim // 6])
    text = _text(shape, vocab_size=len(tokenizer), eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"])
    vision = {"depth": 2, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2, "out_hidden_size": text["hidden_size"],
              "patch_size": shape.get("patch", 14), "spatial_merge_size": 2, "temporal_patch_size": 2, **shape.get("vision", {})}  # fmt: skip
    common = {"image_token_id": ids["<|image_pad|>"], "video_token_id": ids["<|video_pad|>"],
              "vision_start_token_id": ids["<|vision_start|>"], "vision_end_token_id": ids["<|vision_end|>"]}  # fmt: skip
    if version == "2.5":
        text["rope_scaling"] = {"rope_type": "default", "mrope_section": sections}
        vision = {"window_size": 56, "fullatt_block_indexes": [1], **vision}
        config = tf.Qwen2_5_VLConfig(text_config=text, vision_config=vision, **common)
        model_cls, processor_cls = tf.Qwen2_5_VLForConditionalGeneration, tf.Qwen2_5_VLProcessor
    else:
        text["rope_parameters"] = {"rope_type": "default", "mrope_section": sections, "mrope_interleaved": True, "rope_theta": 5e6}
        text["head_dim"] = head_dim
        vision = {**vision, "num_position_embeddings": 64, "deepstack_visual_indexes": [0]}
        vision["patch_size"] = shape.get("patch", 16)
        images = tf.Qwen2VLImageProcessorPil(min_pixels=32 * 32 * 4, max_pixels=shape.get("max_pixels", 32 * 32 * 16),
                                             patch_size=vision["patch_size"], merge_size=2, temporal_patch_size=2)  # fmt: skip
        config = tf.Qwen3VLConfig(text_config=text, vision_config=vision, **common)
        model_cls, processor_cls = tf.Qwen3VLForConditionalGeneration, tf.Qwen3VLProcessor
    return _parts(config, model_cls, processor_cls, images, tokenizer, template)


def _gemma3(shape: dict) -> FamilyParts:
    import transformers as tf

    specials = ["<pad>", "<eos>", "<bos>", "<start_of_turn>", "<end_of_turn>", "<start_of_image>", "<end_of_image>", "<image_soft_token>"]
    tokenizer = tf.GemmaTokenizerFast(
        tokenizer_object=_sentencepiece_bpe(specials, prepend="none"), bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
        unk_token="<unk>", add_bos_token=False, chat_template=_GEMMA3, padding_side="left",
        extra_special_tokens={"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>", "image_token": "<image_soft_token>"},
    )  # fmt: skip
    size = shape.get("image_size", 56)
    images = tf.Gemma3ImageProcessorPil(size={"height": size, "width": size}, do_pan_and_scan=False)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in specials}
    tokens_per_image = shape.get("mm_tokens_per_image", 4)
    text = _text(shape, vocab_size=len(tokenizer), head_dim=16, query_pre_attn_scalar=16, sliding_window=shape.get("sliding_window", 48),
                 layer_types=["sliding_attention", "full_attention"], eos_token_id=[ids["<eos>"], ids["<end_of_turn>"]],
                 pad_token_id=ids["<pad>"], bos_token_id=ids["<bos>"])  # fmt: skip
    vision = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "image_size": size,
              "patch_size": shape.get("patch", 14), **shape.get("vision", {})}  # fmt: skip
    config = tf.Gemma3Config(text_config=text, vision_config=vision, mm_tokens_per_image=tokens_per_image,
                             boi_token_index=ids["<start_of_image>"], eoi_token_index=ids["<end_of_image>"],
                             image_token_index=ids["<image_soft_token>"])  # fmt: skip
    return _parts(config, tf.Gemma3ForConditionalGeneration, tf.Gemma3Processor, images, tokenizer, _GEMMA3,
                  image_seq_length=tokens_per_image)  # fmt: skip


def _smolvlm(shape: dict) -> FamilyParts:
    import transformers as tf

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<end_of_utterance>", "<fake_token_around_image>", "<image>",
                "<global-img>"]  # fmt: skip
    tokenizer = tf.GPT2TokenizerFast(
        tokenizer_object=_byte_bpe(specials), bos_token="<|im_start|>", eos_token="<end_of_utterance>", pad_token="<|endoftext|>",
        unk_token="<|endoftext|>", chat_template=_IDEFICS3, padding_side="left",
        extra_special_tokens={"fake_image_token": "<fake_token_around_image>", "image_token": "<image>",
                              "end_of_utterance_token": "<end_of_utterance>", "global_image_token": "<global-img>"},
    )  # fmt: skip
    size = shape.get("image_size", 32)
    images = tf.SmolVLMImageProcessorPil(do_image_splitting=False, size={"longest_edge": size},
                                         max_image_size={"longest_edge": size})  # fmt: skip
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in specials}
    scale = 2
    seq_len = (size // shape.get("patch", 8)) ** 2 // scale**2
    text = _text(shape, vocab_size=len(tokenizer), eos_token_id=ids["<end_of_utterance>"], pad_token_id=ids["<|endoftext|>"],
                 bos_token_id=ids["<|im_start|>"])  # fmt: skip
    vision = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "image_size": size,
              "patch_size": shape.get("patch", 8), **shape.get("vision", {})}  # fmt: skip
    config = tf.SmolVLMConfig(text_config=text, vision_config=vision, scale_factor=scale, image_token_id=ids["<image>"],
                              pad_token_id=ids["<|endoftext|>"])  # fmt: skip
    return _parts(config, tf.SmolVLMForConditionalGeneration, tf.SmolVLMProcessor, images, tokenizer, _IDEFICS3,
                  image_seq_len=seq_len)  # fmt: skip


def _llava_onevision(shape: dict) -> FamilyParts:
    import transformers as tf

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<video>"]
    tokenizer = tf.Qwen2TokenizerFast(tokenizer_object=_byte_bpe(specials), eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                      unk_token=None, bos_token=None, chat_template=_ONEVISION, padding_side="left",
                                      extra_special_tokens={"image_token": "<image>", "video_token": "<video>"})  # fmt: skip
    size = shape.get("image_size", 28)
    pinpoints = [[size, size], [size, 2 * size], [2 * size, size]]
    images = tf.LlavaOnevisionImageProcessorPil(size={"height": size, "width": size}, image_grid_pinpoints=pinpoints,
                                                do_pad=True)  # fmt: skip
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in specials}
    patch = shape.get("patch", 14)
    text = _text(shape, vocab_size=len(tokenizer), eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"])
    text["model_type"] = "qwen2"
    vision = {"model_type": "siglip_vision_model", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
              "num_attention_heads": 2, "image_size": size, "patch_size": patch, **shape.get("vision", {})}  # fmt: skip
    config = tf.LlavaOnevisionConfig(text_config=text, vision_config=vision, image_token_index=ids["<image>"],
                                     video_token_index=ids["<video>"], image_grid_pinpoints=pinpoints,
                                     vision_feature_select_strategy="full", vision_feature_layer=-1)  # fmt: skip
    return _parts(config, tf.LlavaOnevisionForConditionalGeneration, tf.LlavaOnevisionProcessor, images, tokenizer, _ONEVISION,
                  num_image_tokens=(size // patch) ** 2, vision_feature_select_strategy="full")  # fmt: skip


def _llava(shape: dict) -> FamilyParts:
    import transformers as tf

    specials = ["<s>", "</s>", "<image>", "<pad>"]
    tokenizer = tf.LlamaTokenizerFast(tokenizer_object=_sentencepiece_bpe(specials, prepend="first"), bos_token="<s>",
                                      eos_token="</s>", pad_token="<pad>", unk_token="<unk>", add_bos_token=True,
                                      add_eos_token=False, chat_template=_LLAVA15, padding_side="left",
                                      extra_special_tokens={"image_token": "<image>"})  # fmt: skip
    size = shape.get("image_size", 56)
    images = tf.CLIPImageProcessorPil(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in specials}
    patch = shape.get("patch", 14)
    text = _text(shape, vocab_size=len(tokenizer), eos_token_id=ids["</s>"], pad_token_id=ids["<pad>"], bos_token_id=ids["<s>"])
    text["model_type"] = "llama"
    vision = {"model_type": "clip_vision_model", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
              "num_attention_heads": 2, "image_size": size, "patch_size": patch, "projection_dim": 32, **shape.get("vision", {})}  # fmt: skip
    config = tf.LlavaConfig(text_config=text, vision_config=vision, image_token_id=ids["<image>"],
                            vision_feature_select_strategy="default", vision_feature_layer=-2)  # fmt: skip
    return _parts(config, tf.LlavaForConditionalGeneration, tf.LlavaProcessor, images, tokenizer, _LLAVA15,
                  patch_size=patch, vision_feature_select_strategy="default", num_additional_image_tokens=1)  # fmt: skip


@dataclass
class FamilyParts:
    """What a family's checkpoint is made of: the model's config and class, and its processor
    (built for images only: its video part needs torchvision)."""

    config: object
    model_cls: type
    processor: object
    processor_cls: type

    def model(self, seed: int = 0):
        """The model with random weights (seeded), in eval mode, on the current default device
        and dtype (``with torch.device("cuda")`` builds it on the GPU)."""
        import torch

        torch.manual_seed(seed)
        model = self.model_cls(self.config).eval()
        generation, tokenizer = model.generation_config, self.processor.tokenizer
        generation.pad_token_id, generation.do_sample = tokenizer.pad_token_id, False
        generation.eos_token_id = self.config.get_text_config().eos_token_id
        return model


def _parts(config, model_cls, processor_cls, images, tokenizer, template: str, **processor_args) -> FamilyParts:
    from .loading import image_only

    processor = image_only(processor_cls)(image_processor=images, tokenizer=tokenizer, chat_template=template, **processor_args)
    return FamilyParts(config, model_cls, processor, processor_cls)


def _save(parts: FamilyParts, out: Path, seed: int) -> None:
    """Save the model, then the processor's parts under the family's processor class, as a hub
    checkpoint has them (without the video processor, which needs torchvision to build)."""
    out.mkdir(parents=True, exist_ok=True)
    parts.model(seed).save_pretrained(out)
    parts.processor.save_pretrained(out)
    for name in ("processor_config.json", "tokenizer_config.json", "preprocessor_config.json"):
        path = out / name
        if path.exists():  # the image-only class saves its own name; a hub checkpoint names the family's
            data = json.loads(path.read_text())
            if "processor_class" in data:
                data["processor_class"] = parts.processor_cls.__name__
                path.write_text(json.dumps(data, indent=2) + "\n")


#: family -> parts(shape)
FAMILIES: dict[str, Callable[[dict], FamilyParts]] = {
    "llava": _llava,
    "llava_onevision": _llava_onevision,
    "qwen2_5_vl": lambda shape: _qwen_vl(shape, "2.5"),
    "qwen3_vl": lambda shape: _qwen_vl(shape, "3"),
    "gemma3": _gemma3,
    "smolvlm": _smolvlm,
}


def build_family(family: str, out: str | Path, shape: dict | None = None) -> Path:
    """Build and save a random checkpoint of ``family`` in ``out``; returns ``out``.

    ``shape`` overrides sizes: ``text`` (a dict of text-model fields), ``vision`` (vision-tower
    fields), ``image_size`` / ``max_pixels`` / ``patch``, ``seed``.
    """
    out = Path(out)
    _save(family_parts(family, shape), out, (shape or {}).get("seed", 0))
    return out


def family_parts(family: str, shape: dict | None = None) -> FamilyParts:
    """The parts of a ``family`` checkpoint of ``shape`` (see :func:`build_family`), in memory."""
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; one of {', '.join(FAMILIES)}")
    return FAMILIES[family](shape or {})
