"""Fine-tuning the MLLM on labelled people (``tracklens finetune``): the same crops, prompt
and answer format as evaluation and inference, LoRA or full, with before/after evaluation.

Needs torch, transformers and (for LoRA) peft: ``pip install 'tracklens[finetune]'``; the
modules import them on use.
"""

from .rows import split_rows
from .run import run_finetune
from .synthetic import write_people

__all__ = ["run_finetune", "split_rows", "write_people"]
