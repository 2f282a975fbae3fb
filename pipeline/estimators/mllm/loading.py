"""Loading a VLM checkpoint the way users run it: its processor (also where torchvision is
missing), its own dtype, weights straight onto the device, SDPA attention.

Several processors (Qwen2/2.5/3-VL, LLaVA-OneVision, SmolVLM) hold a video processor, and
transformers builds video processors only with torchvision. Where torchvision is absent, or
does not match the installed torch (a CPU torch next to a CUDA torchvision cannot load), the
processor is built without its video part: tracklens sends images only.
"""

from __future__ import annotations

import inspect
import json
import warnings
from contextlib import contextmanager
from pathlib import Path

from ...errors import ModelError

__all__ = ["check_adapter", "check_source", "image_only", "load_adapter", "load_model", "load_processor", "quiet_peft"]


def image_only(processor_cls: type) -> type:
    """``processor_cls`` without its video processor: its own ``__init__`` runs (token ids,
    templates), and the sub-processors it registers are the image processor and tokenizer."""
    params = inspect.signature(processor_cls.__init__).parameters
    if "video_processor" not in params:
        return processor_cls

    def __init__(self, image_processor=None, tokenizer=None, *args, **kwargs):
        processor_cls.__init__(self, image_processor, tokenizer, None, *args, **kwargs)

    # ProcessorMixin reads the sub-processors (and the settings it saves) from __init__'s
    # signature: the family's own, less the video processor, which is then never checked.
    signature = inspect.signature(processor_cls.__init__)
    __init__.__signature__ = signature.replace(parameters=[p for name, p in params.items() if name != "video_processor"])
    return type(processor_cls.__name__, (processor_cls,), {"__init__": __init__, "__module__": processor_cls.__module__,
                                                          "__doc__": f"{processor_cls.__name__} for images only"})  # fmt: skip


def check_source(model: str) -> None:
    """A model named by a path must be a folder that exists (a hub id is anything else).

    Raises:
        ModelError: the path names no folder.
    """
    path = Path(model).expanduser()
    if path.exists() and not path.is_dir():
        raise ModelError(f"cannot load MLLM {model!r}: it is a file; give the checkpoint's folder or a hub id")
    if not path.exists() and (path.is_absolute() or model.startswith((".", "~"))):
        raise ModelError(f"cannot load MLLM {model!r}: no such folder; give a checkpoint folder or a hub id (namespace/name)")


def load_processor(model: str, local_files_only: bool):
    """The checkpoint's processor; without its video part when that cannot be built here.

    Raises:
        ModelError: the checkpoint has no usable processor.
    """
    from transformers import AutoProcessor

    check_source(model)
    try:
        return AutoProcessor.from_pretrained(model, local_files_only=local_files_only)
    except (OSError, ValueError, ImportError, AttributeError, TypeError) as err:
        first = _first_line(err)
        cls = _processor_class(model, local_files_only)
        if cls is None or "video_processor" not in inspect.signature(cls.__init__).parameters:
            raise ModelError(f"cannot load the processor of {model!r}: {first}") from None
    try:
        return _image_only_from_pretrained(cls, model, local_files_only)
    except (OSError, ValueError, ImportError, AttributeError, TypeError) as err:
        raise ModelError(f"cannot load the processor of {model!r} (images only, after: {first}): {_first_line(err)}") from None


def _image_only_from_pretrained(cls: type, model: str, local_files_only: bool):
    """Load the image processor and tokenizer as ``from_pretrained`` does, then build the
    image-only processor with the checkpoint's own settings and chat template (which
    ``from_pretrained`` matches against the parameters of ``__init__``'s code, not its
    signature, and would drop)."""
    loaded = image_only(cls).from_pretrained(model, local_files_only=local_files_only)
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self", "image_processor", "tokenizer", "video_processor"}
    settings = {}
    path = _checkpoint_file(model, "processor_config.json", local_files_only)
    if path is not None:
        data = json.loads(Path(path).read_text())
        settings = {k: v for k, v in data.items() if k in accepted and not isinstance(v, dict)}
    template = _checkpoint_file(model, "chat_template.jinja", local_files_only)
    if template is not None:
        settings["chat_template"] = Path(template).read_text()
    settings.setdefault("chat_template", loaded.chat_template or getattr(loaded.tokenizer, "chat_template", None))
    return image_only(cls)(loaded.image_processor, loaded.tokenizer, **settings)


def _processor_class(model: str, local_files_only: bool) -> type | None:
    """The processor class a checkpoint names (``processor_class`` in its processor files)."""
    import transformers

    for name in ("processor_config.json", "preprocessor_config.json", "tokenizer_config.json"):
        path = _checkpoint_file(model, name, local_files_only)
        if path is None:
            continue
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError):
            continue
        cls = data.get("processor_class")
        if isinstance(cls, str) and hasattr(transformers, cls):
            return getattr(transformers, cls)
    return None


def _checkpoint_file(model: str, name: str, local_files_only: bool) -> str | None:
    if Path(model).is_dir():
        path = Path(model) / name
        return str(path) if path.is_file() else None
    try:
        from huggingface_hub import hf_hub_download

        return hf_hub_download(model, name, local_files_only=local_files_only)
    except Exception:  # a file the repository does not have, or no network: look at the next one
        return None


def load_model(model: str, dtype: str, device, local_files_only: bool):
    """The model in eval mode on ``device``.

    ``dtype`` ``auto`` is the checkpoint's own (bf16 for Qwen-VL, whose activations overflow
    fp16), falling back to fp32 on a CPU for half-precision checkpoints (most CPUs lack fast
    half-precision kernels). Weights are placed on the device as they load (``device_map``), so
    a 16 GB model never needs a full copy in CPU memory first. Attention is SDPA, which takes
    the tree-shaped masks of scored readout (FlashAttention kernels take none).

    Raises:
        ModelError: the checkpoint cannot be loaded.
    """
    import torch
    from transformers import AutoModelForImageTextToText

    torch_dtype = {"auto": "auto", "float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[dtype]
    try:
        loaded = AutoModelForImageTextToText.from_pretrained(
            model, dtype=torch_dtype, device_map={"": str(device)}, attn_implementation="sdpa", local_files_only=local_files_only
        )
    except (OSError, ValueError, ImportError, RuntimeError) as err:
        raise ModelError(f"cannot load MLLM {model!r}: {_first_line(err)}") from None
    if dtype == "auto" and device.type == "cpu" and loaded.dtype in (torch.float16, torch.bfloat16):
        loaded = loaded.float()
    return loaded.eval()


@contextmanager
def quiet_peft():
    """peft reads a transformers attribute that warns of its own deprecation (``FutureWarning:
    is_gradient_checkpointing``): a library's note to itself, not to a user's terminal."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        yield


def check_adapter(adapter: str) -> None:
    """What can be checked of an adapter before its base model loads: peft is installed, and
    an adapter named by a path is a folder with an ``adapter_config.json``.

    Raises:
        ModelError: it cannot be loaded.
    """
    try:
        import peft  # noqa: F401
    except ImportError:
        raise ModelError(f"the adapter {adapter!r} needs peft: install tracklens with the [finetune] extra "
                         "(pip install 'tracklens[finetune]')") from None  # fmt: skip
    path = Path(adapter).expanduser()
    if path.exists() and not (path / "adapter_config.json").is_file():
        raise ModelError(f"cannot load the adapter {adapter!r}: no adapter_config.json in it (give tracklens finetune's DIR/adapter)")
    if not path.exists() and (path.is_absolute() or adapter.startswith((".", "~"))):
        raise ModelError(f"cannot load the adapter {adapter!r}: no such folder")


def load_adapter(model, adapter: str, local_files_only: bool):
    """``model`` with the LoRA adapter ``adapter`` (a folder ``tracklens finetune`` wrote, or
    a hub id) injected into its layers, in eval mode. The adapter stays a separate low-rank
    path (not merged), so the model answers exactly as the trained one did.

    Raises:
        ModelError: peft is missing, or the adapter cannot be loaded onto this model.
    """
    check_adapter(adapter)
    from peft import PeftModel

    try:
        with quiet_peft():
            wrapped = PeftModel.from_pretrained(model, adapter, is_trainable=False, local_files_only=local_files_only)
    except (OSError, ValueError, KeyError, RuntimeError) as err:
        raise ModelError(f"cannot load the adapter {adapter!r} onto this model: {_first_line(err)}") from None
    # The adapter's layers now sit inside the model's own modules: the model itself answers
    # with them, and keeps the forward signature the engine reads.
    return wrapped.get_base_model().eval()


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
