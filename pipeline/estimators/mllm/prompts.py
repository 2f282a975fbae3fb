"""Versioned prompt files (``configs/prompts/*.yaml``) and the chat messages built from them."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

import yaml

from ...errors import ConfigError

__all__ = ["Prompt", "load_prompt"]


@dataclass(frozen=True)
class Prompt:
    """A prompt version: system text, how the images are introduced, and the question."""

    version: str
    system: str
    images: dict[str, str]
    question: str

    def messages(self, has_face: bool, has_body: bool) -> list[dict]:
        """Chat messages (transformers / OpenAI content-list form) with image placeholders.

        Images come first in the user turn, face before body, matching ``images`` wording.
        """
        if not (has_face or has_body):
            raise ValueError("a prompt needs at least one image")
        which = "face_and_body" if has_face and has_body else "face" if has_face else "body"
        content = [{"type": "image"} for _ in range(int(has_face) + int(has_body))]
        content.append({"type": "text", "text": self.question.replace("{images}", self.images[which])})
        return [
            {"role": "system", "content": [{"type": "text", "text": self.system}]},
            {"role": "user", "content": content},
        ]


@lru_cache(maxsize=16)
def load_prompt(name: str) -> Prompt:
    """A prompt by version name (packaged ``configs/prompts/NAME.yaml``) or by file path."""
    path = Path(name)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        text = path.read_text()
    else:
        resource = resources.files("tracklens.configs").joinpath("prompts", f"{name}.yaml")
        if not resource.is_file():
            raise ConfigError(f"unknown prompt {name!r}: no configs/prompts/{name}.yaml and no such file")
        text = resource.read_text()
    data = yaml.safe_load(text)
    try:
        prompt = Prompt(str(data["version"]), str(data["system"]).strip(), dict(data["images"]), str(data["question"]))
    except (KeyError, TypeError) as err:
        raise ConfigError(f"prompt {name!r} is missing a field: {err}") from None
    for key in ("face_and_body", "face", "body"):
        if key not in prompt.images:
            raise ConfigError(f"prompt {name!r} has no images.{key} wording")
    return prompt
