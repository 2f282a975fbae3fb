"""A batch of prompts' KV cache, extended by token trees without ever copying it.

After one prefill, every later step feeds new tokens after the cache: each new token names
its parent (another token of the same feed, or the row's committed context), and a 4D
attention mask lets it see exactly the row's committed context, its ancestors and itself. So
all paths of an answer-trie level, or of a whole subtree, are read in one forward over the
one shared cache (scored readout), and ragged chains of forced tokens go in one forward too
(constrained decoding). Tokens not on the chosen path stay in the cache, masked out for good:
the cache grows by the tokens fed (tens per request), never by a copy of the prompt.

Positions follow each family's own scheme: a token's position is the row's next text
position plus its depth in the feed. For M-RoPE models (Qwen2/2.5/3-VL) the prompt's 3-D
positions come from the model's own ``get_rope_index`` (text after the images continues from
the largest position so far, on all three axes); for the others, the count of the row's real
tokens (left padding skipped), as generation does. Models with sliding-window layers (Gemma 3)
get a second mask with the window applied on those positions.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["Engine", "PromptState"]


@dataclass
class PromptState:
    """The cache of a batch and, per row, what of it is context.

    Attributes:
        cache: the model's KV cache, ``C`` positions long.
        keep: ``(B, C)`` bool, the cache positions each row's next tokens may attend to.
        key_pos: ``(B, C)`` long, the text position of each cache entry (for sliding windows).
        next_pos: ``(B,)`` long, the position the row's next committed token takes.
        last_logits: ``(B, V)`` float32, the logits after the prompt.
    """

    cache: object
    keep: torch.Tensor
    key_pos: torch.Tensor
    next_pos: torch.Tensor
    last_logits: torch.Tensor


class Engine:
    """Prefill and tree-shaped extensions of one model; see the module docstring."""

    @staticmethod
    def problem(model) -> str | None:
        """Why tree-shaped feeds cannot run on ``model`` (None: they can). They need every
        layer to be attention over the cache (full or sliding window: not the linear-attention
        or recurrent layers of Qwen3.5 or LFM2, whose state would absorb sibling tokens), no
        cross-attention (Mllama), and an attention that takes a dense 4D mask (SDPA or eager,
        not FlashAttention or flex)."""
        text = model.config.get_text_config()
        kinds = set(getattr(text, "layer_types", None) or ()) - {"full_attention", "sliding_attention"}
        if kinds:
            return f"its layers include {', '.join(sorted(kinds))}"
        if getattr(text, "cross_attention_layers", None):
            return "it attends to images by cross-attention"
        implementation = getattr(model.config, "_attn_implementation", "sdpa")
        if implementation not in ("sdpa", "eager"):
            return f"its attention ({implementation}) takes no tree-shaped mask; load it with SDPA"
        return None

    def __init__(self, model) -> None:
        self.model = model
        self.device = next(model.parameters()).device
        base = getattr(model, "model", model)
        self._rope_index = getattr(base, "get_rope_index", None)
        text = model.config.get_text_config()
        kinds = set(getattr(text, "layer_types", None) or ())
        self._window = getattr(text, "sliding_window", None) if "sliding_attention" in kinds else None
        self._eager = getattr(model.config, "_attn_implementation", "sdpa") == "eager"
        params = inspect.signature(model.forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"
        self.keeps_logits = "logits_to_keep" in params  # the forward can compute the last logits only

    @property
    def mrope(self) -> bool:
        """Whether the model places text and image tokens with 3-D rotary positions."""
        return self._rope_index is not None

    def prompt_positions(self, batch: dict) -> torch.Tensor:
        """The positions the model itself gives the prompt: ``(3, B, L)`` for M-RoPE, else
        ``(B, L)``."""
        mask = batch["attention_mask"]
        if self._rope_index is None:
            return (mask.long().cumsum(-1) - 1).clamp(min=0)
        accepted = inspect.signature(self._rope_index).parameters
        args = {k: v for k, v in batch.items() if k in accepted and k != "input_ids"}
        positions, _ = self._rope_index(batch["input_ids"], **args)
        return positions

    @torch.inference_mode()
    def prefill(self, batch: dict) -> PromptState:
        """One forward over the prompts (left-padded); only the last position's logits are kept."""
        from transformers import DynamicCache

        positions = self.prompt_positions(batch)
        extra = {"logits_to_keep": 1} if self.keeps_logits else {}
        # A cache built without the config keeps every position on every layer: a sliding-
        # window layer's own cache would evict prompt tokens as tree tokens are appended, and
        # which tokens a query may see is the masks' business here (by position, see feed).
        cache = extra[self._cache_kw] = DynamicCache()
        out = self.model(**batch, position_ids=positions, use_cache=True, **extra)  # the cache fills in place
        mask = batch["attention_mask"].bool()
        flat = positions.amax(0) if positions.ndim == 3 else positions
        flat = torch.where(mask, flat, torch.zeros_like(flat))
        return PromptState(cache=cache, keep=mask, key_pos=flat, next_pos=flat.amax(-1) + 1, last_logits=out.logits[:, -1].float())

    @torch.inference_mode()
    def feed(self, state: PromptState, tokens: torch.Tensor, parents: list[list[int]], last_only: bool = False) -> torch.Tensor:
        """Append ``tokens`` ``(B, T)`` to the cache, each attending to the row's context and
        its ancestors; returns their logits ``(B, T, V)`` (float32; ``(B, 1, V)``, the last
        token's only, with ``last_only``).

        ``parents[b][i]`` is the index in this feed of token ``i``'s parent, or -1 when it
        follows the row's committed context directly; a parent comes before its children.
        Nothing fed becomes context until :meth:`commit`.
        """
        rows, width = tokens.shape
        depth = np.zeros((rows, width), dtype=np.int64)
        ancestry = np.zeros((rows, width, width), dtype=bool)
        for b, row in enumerate(parents):  # built on the host, copied once
            for i, parent in enumerate(row):
                ancestry[b, i, i] = True
                if parent >= 0:
                    ancestry[b, i] |= ancestry[b, parent]
                    depth[b, i] = depth[b, parent] + 1
        depth, ancestry = torch.from_numpy(depth).to(self.device), torch.from_numpy(ancestry).to(self.device)
        query_pos = state.next_pos[:, None] + depth
        keys = torch.cat([state.keep[:, None, :].expand(rows, width, -1), ancestry], dim=-1)
        masks = keys
        if self._window is not None:
            key_pos = torch.cat([state.key_pos, query_pos], dim=-1)
            near = key_pos[:, None, :] > query_pos[:, :, None] - self._window
            masks = {"full_attention": self._mask(keys), "sliding_attention": self._mask(keys & near)}
        else:
            masks = self._mask(keys)
        positions = query_pos[None].expand(3, -1, -1) if self.mrope else query_pos
        extra = {"logits_to_keep": 1} if last_only and self.keeps_logits else {}
        out = self.model(input_ids=tokens.to(self.device), attention_mask=masks, position_ids=positions, use_cache=True,
                         **{self._cache_kw: state.cache}, **extra)  # fmt: skip (the cache grows in place)
        state.keep = torch.cat([state.keep, torch.zeros(rows, width, dtype=torch.bool, device=self.device)], dim=-1)
        state.key_pos = torch.cat([state.key_pos, query_pos], dim=-1)
        return out.logits.float()

    @torch.inference_mode()
    def commit(self, state: PromptState, chosen: list[list[int]], width: int) -> None:
        """Make tokens of the last feed (``width`` wide) part of each row's context:
        ``chosen[b]`` are their indices in that feed, a path from the context down."""
        picked = np.zeros((len(chosen), width), dtype=bool)
        for b, items in enumerate(chosen):
            picked[b, items] = True
        start = state.keep.shape[1] - width
        state.keep[:, start:] |= torch.from_numpy(picked).to(self.device)
        state.next_pos = state.next_pos + torch.from_numpy(picked.sum(1)).to(self.device)

    def _mask(self, allowed: torch.Tensor) -> torch.Tensor:
        """``(B, 1, T, C + T)``: bool for SDPA; additive for eager attention."""
        allowed = allowed[:, None]
        if not self._eager:
            return allowed
        dtype = self.model.dtype
        return torch.zeros(allowed.shape, dtype=dtype, device=self.device).masked_fill(~allowed, torch.finfo(dtype).min)
