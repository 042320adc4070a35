"""The trained Keras model as a native ONNX graph, so scoring needs ONNX Runtime, not TensorFlow.

Each of our layers maps to the ONNX ops that compute what its `call` computes, with the layer's
own weights: `LSTM`/`GRU`/`RNN` with `sequence_lens` for the masked recurrent layers, `Conv`,
`Gather`, reductions; no `Loop` or `Scan` (what a generic converter makes of a masked RNN, which
runs slower than Keras and scores differently). Keras walks its own graph and hands each layer,
or each op it recorded to compute a mask, the ONNX names of its inputs: `_converters()` holds
one function per class.

Masks are boolean (batch, steps) tensors, as in Keras. A recurrent layer reads its mask as
`sequence_lens`, which holds because every masked model moves its padding after the text first
(`RightPad`); `train` checks the graph against Keras before it keeps it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from pipeline.errors import PipelineError

OPSET = 18  # the first where every reduction takes its axes as an input
INPUT, OUTPUT = "chars", "positive"
LOW = -1e9  # what masked steps hold before a max, never its winner: the Keras layers' value
# onnx.TensorProto's element types, named here so that scoring never needs the onnx package
FLOAT, INT32, INT64, BOOL = 1, 6, 7, 9
_DTYPES = {"float32": FLOAT, "int32": INT32, "int64": INT64, "bool": BOOL}


class Graph:
    """The nodes and weights of one ONNX graph being built, with fresh names."""

    def __init__(self) -> None:
        self.nodes: list = []
        self.initializers: list = []
        self._names: dict[str, int] = {}
        self.layer = "graph"  # the Keras layer being converted: its nodes' names start with it

    def name(self, hint: str) -> str:
        self._names[hint] = self._names.get(hint, 0) + 1
        return f"{hint}_{self._names[hint]}"

    def const(self, value, dtype, hint: str = "const") -> str:
        from onnx import numpy_helper

        name = self.name(hint)
        self.initializers.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def ints(self, *values: int) -> str:
        """An int64 vector: axes, shapes, pads."""
        return self.const(list(values), np.int64)

    def op(self, op_type: str, *inputs: str, outputs: int = 1, **attrs):
        """Add a node; its output's name, or a list of `outputs` names."""
        from onnx import helper

        names = [self.name(f"{self.layer}/{op_type.lower()}") for _ in range(outputs)]
        self.nodes.append(helper.make_node(op_type, list(inputs), names, **attrs))
        return names[0] if outputs == 1 else names

    def scalar_like(self, value, like: str) -> str:
        return self.op(
            "CastLike",
            self.const(value, np.float32 if isinstance(value, float) else np.int64),
            like,
        )

    def filled(self, value: bool | float, shape: str, dtype: int) -> str:
        """A tensor of `shape` (an int64 vector) holding `value` everywhere."""
        return self.op(
            "Cast", self.op("Expand", self.const(float(value), np.float32), shape), to=dtype
        )

    def lengths(self, mask: str) -> str:
        """(batch,) int32 real steps of a mask whose real steps come first."""
        real = self.op("Cast", mask, to=INT32)
        return self.op("ReduceSum", real, self.ints(1), keepdims=0)

    def is_not_zero(self, ids: str, to: int) -> str:
        return self.op(
            "Cast", self.op("Not", self.op("Equal", ids, self.scalar_like(0, ids))), to=to
        )


# -- our layers and the Keras layers we use -------------------------------------------------------
def right_pad(g: Graph, layer, ids: str) -> str:
    if layer.padding == "post":
        return ids
    # Reverse each row, then its first `lengths` ids back: the text first, in order, padding after.
    lengths = g.op("ReduceSum", g.is_not_zero(ids, INT64), g.ints(1), keepdims=0)
    flipped = g.op("Slice", ids, g.ints(-1), g.ints(np.iinfo(np.int64).min), g.ints(1), g.ints(-1))
    return g.op("ReverseSequence", flipped, lengths, batch_axis=0, time_axis=1)


def embedding(g: Graph, layer, ids: str) -> str:
    return g.op("Gather", g.const(layer.embeddings.numpy(), np.float32, layer.name), ids)


def jamo_embedding(g: Graph, layer, ids: str) -> str:
    # The jamo table is a constant of the model, so each character's summed jamo vector is too:
    # worked out here once, it is one lookup per character.
    jamo_ids = layer.table.numpy()
    vectors = layer.embeddings.numpy()[jamo_ids] * (jamo_ids > 0)[..., None]
    return g.op("Gather", g.const(vectors.sum(axis=1), np.float32, layer.name), ids)


def concatenate(g: Graph, layer, inputs: list[str], mask=None) -> str:
    return g.op("Concat", *inputs, axis=layer.axis)


def passthrough(g: Graph, layer, x: str, mask=None) -> str:
    """Dropout of any kind, and KeepFirstStep (its work is the mask's): nothing at inference."""
    return x


def masked_conv1d(g: Graph, layer, x: str, mask: str | None = None) -> str:
    if layer.padding != "same" or layer.strides != (1,) or layer.dilation_rate != (1,):
        raise PipelineError(f"the {layer.name} convolution must be 'same', stride 1, dilation 1")
    if mask is not None:  # padded steps read as zeros, like the convolution's border
        x = g.op("Mul", x, g.op("Cast", g.op("Unsqueeze", mask, g.ints(-1)), to=FLOAT))
    kernel = layer.kernel.numpy()  # (width, in, out) -> ONNX's (out, in, width)
    weights = [g.const(kernel.transpose(2, 1, 0), np.float32, layer.name)]
    if layer.use_bias:
        weights.append(g.const(layer.bias.numpy(), np.float32, f"{layer.name}_bias"))
    half = (kernel.shape[0] - 1) // 2
    y = g.op("Conv", g.op("Transpose", x, perm=[0, 2, 1]), *weights, pads=[half, half])
    return _activation(g, layer, g.op("Transpose", y, perm=[0, 2, 1]))


def masked_max_pool1d(g: Graph, layer, x: str, mask: str | None = None) -> list[str]:
    # ONNX's MaxPool, channels first: (batch, steps, features) -> (batch, features, steps). The
    # convolution before it ends by transposing the other way, and ONNX Runtime cancels the two.
    channels = g.op("Transpose", x, perm=[0, 2, 1])
    if mask is None:
        mask = g.filled(True, g.op("Shape", x, end=2), BOOL)
    real = g.op("Unsqueeze", mask, g.ints(1))  # (batch, 1, steps)
    as_float = g.op("Cast", real, to=FLOAT)
    # Padded steps sink to about LOW, so no real step loses to one (cheaper than a Where, and
    # a window of padding alone is zeroed below).
    sink = g.op(
        "Mul", g.op("Sub", as_float, g.scalar_like(1.0, as_float)), g.scalar_like(-LOW, as_float)
    )
    channels = g.op("Add", channels, sink)
    pooled = _pool(g, layer, channels, g.scalar_like(LOW, channels))
    # a window is real if any of its steps is
    steps = g.op("Cast", _pool(g, layer, as_float, g.scalar_like(0.0, as_float)), to=BOOL)
    pooled = g.op("Where", steps, pooled, g.scalar_like(0.0, pooled))
    squeezed = g.op("Squeeze", steps, g.ints(1))
    return [g.op("Transpose", pooled, perm=[0, 2, 1]), squeezed]


def _pool(g: Graph, layer, x: str, fill: str) -> str:
    """Max over windows of pool_size steps of (batch, channels, steps), counted from the text's
    side: padded with `fill` to whole windows away from it, as MaskedMaxPool1D._windows does."""
    size, zero = layer.pool_size, g.ints(0)
    extra = g.op("Mod", g.op("Neg", g.op("Shape", x, start=2, end=3)), g.ints(size))
    before, after = (extra, zero) if layer.padding == "pre" else (zero, extra)
    padded = g.op("Pad", x, g.op("Concat", zero, zero, before, zero, zero, after, axis=0), fill)
    return g.op("MaxPool", padded, kernel_shape=[size], strides=[size])


def recurrent(g: Graph, layer, x: str, mask: str | None = None) -> str:
    """LSTM, GRU or SimpleRNN, alone or wrapped in Bidirectional (its two outputs concatenated)."""
    import keras

    if isinstance(layer, keras.layers.Bidirectional):
        if layer.merge_mode != "concat":
            raise PipelineError(f"the {layer.name} layer must concatenate its two directions")
        cells, direction = [layer.forward_layer, layer.backward_layer], "bidirectional"
    else:
        if layer.go_backwards:
            raise PipelineError(f"the {layer.name} layer runs backwards alone; wrap it instead")
        cells, direction = [layer], "forward"
    kind = type(cells[0]).__name__
    units, sequences = cells[0].units, cells[0].return_sequences
    w, r, b = (
        np.stack(each) for each in zip(*(_rnn_weights(cell, kind) for cell in cells), strict=True)
    )
    attrs = {"direction": direction, "hidden_size": units}
    if kind == "GRU":
        attrs["linear_before_reset"] = int(cells[0].reset_after)
    op_type = {"LSTM": "LSTM", "GRU": "GRU", "SimpleRNN": "RNN"}[kind]
    all_steps, last = g.op(
        op_type,
        g.op("Transpose", x, perm=[1, 0, 2]),  # ONNX's RNNs are time-major
        g.const(w, np.float32, f"{layer.name}_W"),
        g.const(r, np.float32, f"{layer.name}_R"),
        g.const(b, np.float32, f"{layer.name}_B"),
        g.lengths(mask) if mask is not None else "",
        outputs=3 if op_type == "LSTM" else 2,
        **attrs,
    )[:2]
    width = len(cells) * units
    if sequences:  # (steps, directions, batch, units) -> (batch, steps, directions * units)
        # Time-major first: a next recurrent layer's own transpose then cancels this last one.
        y = g.op("Transpose", all_steps, perm=[0, 2, 1, 3])
        y = g.op("Reshape", y, g.ints(0, 0, width))
        return g.op("Transpose", y, perm=[1, 0, 2])
    y = g.op("Transpose", last, perm=[1, 0, 2])  # (directions, batch, units) -> (batch, width)
    return g.op("Reshape", y, g.ints(0, width))


# the gates' order in Keras' kernels, and in ONNX's, per cell
_GATES = {"LSTM": ("ifco", "iofc"), "GRU": ("zrh", "zrh"), "SimpleRNN": ("h", "h")}
_ACTIVATIONS = {"LSTM": ("tanh", "sigmoid"), "GRU": ("tanh", "sigmoid"), "SimpleRNN": ("tanh",)}


def _rnn_weights(layer, kind: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ONNX's W (gates*units, in), R (gates*units, units) and B (2*gates*units) of one layer."""
    cell = layer.cell
    activations = (cell.activation.__name__,)
    if kind != "SimpleRNN":
        activations += (cell.recurrent_activation.__name__,)
    if activations != _ACTIVATIONS[kind]:
        raise PipelineError(f"the {layer.name} layer's activations {activations} have no ONNX form")
    if layer.stateful:
        raise PipelineError(f"the {layer.name} layer must not be stateful")
    keras_order, onnx_order = _GATES[kind]
    units, gates = cell.units, len(keras_order) * cell.units

    def reorder(matrix: np.ndarray) -> np.ndarray:  # blocks of columns by gate, in ONNX's order
        blocks = {
            gate: matrix[..., i * units : (i + 1) * units] for i, gate in enumerate(keras_order)
        }
        return np.concatenate([blocks[gate] for gate in onnx_order], axis=-1)

    w, r = reorder(cell.kernel.numpy()).T, reorder(cell.recurrent_kernel.numpy()).T
    if not cell.use_bias:
        return w, r, np.zeros(2 * gates, dtype=np.float32)
    bias = cell.bias.numpy()
    if bias.ndim == 2:  # a GRU with reset_after keeps its input and recurrent biases apart
        return w, r, np.concatenate([reorder(bias[0]), reorder(bias[1])])
    return w, r, np.concatenate([reorder(bias), np.zeros(gates, dtype=bias.dtype)])


def masked_max_mean_pooling(g: Graph, layer, x: str, mask: str | None = None) -> str:
    steps = g.ints(1)
    if mask is None:
        peak, mean = (
            g.op("ReduceMax", x, steps, keepdims=0),
            g.op("ReduceMean", x, steps, keepdims=0),
        )
        return g.op("Concat", peak, mean, axis=-1)
    real = g.op("Unsqueeze", mask, g.ints(-1))
    count = g.op("ReduceSum", g.op("Cast", real, to=FLOAT), steps, keepdims=0)
    total = g.op("ReduceSum", g.op("Mul", x, g.op("Cast", real, to=FLOAT)), steps, keepdims=0)
    mean = g.op("Div", total, g.op("Max", count, g.scalar_like(1.0, count)))
    # Padded steps can never win the max; a review with no steps at all pools to zeros.
    peak = g.op("ReduceMax", g.op("Where", real, x, g.scalar_like(LOW, x)), steps, keepdims=0)
    has_steps = g.op("Greater", count, g.scalar_like(0.0, count))
    peak = g.op("Where", has_steps, peak, g.scalar_like(0.0, peak))
    return g.op("Concat", peak, mean, axis=-1)


def hashed_ngrams(g: Graph, layer, ids: str) -> str:
    real = g.is_not_zero(ids, BOOL)
    vocab, buckets = layer.vocab_size, layer.buckets
    rows, shifted, hashed = [ids], ids, ids
    for order in range(2, layer.max_order + 1):
        # the id `order - 1` steps ahead, 0 past the end of the row
        tail = g.op("Slice", shifted, g.ints(1), g.ints(np.iinfo(np.int64).max), g.ints(1))
        shifted = g.op("Pad", tail, g.ints(0, 0, 0, 1))
        step = g.op("Add", g.op("Mul", hashed, g.const(vocab + 1, np.int32)), shifted)
        hashed = g.op("Mod", step, g.const(buckets, np.int32))
        row = g.op("Add", hashed, g.const(vocab + (order - 2) * buckets, np.int32))
        rows.append(g.op("Where", real, row, g.const(0, np.int32)))
    return g.op("Concat", *(g.op("Unsqueeze", row, g.ints(-1)) for row in rows), axis=-1)


def masked_bag_mean(g: Graph, layer, inputs: list[str]) -> str:
    vectors, rows = inputs
    present = g.is_not_zero(rows, FLOAT)
    reviews = g.ints(1, 2)
    weighted = g.op("Mul", vectors, g.op("Unsqueeze", present, g.ints(-1)))
    total = g.op("ReduceSum", weighted, reviews, keepdims=0)
    count = g.op("ReduceSum", present, reviews, keepdims=0)
    count = g.op("Max", g.op("Unsqueeze", count, g.ints(-1)), g.scalar_like(1.0, count))
    return g.op("Div", total, count)


def zero_empty_reviews(g: Graph, layer, inputs: list[str]) -> str:
    features, ids = inputs
    has_text = g.op("ReduceMax", g.is_not_zero(ids, FLOAT), g.ints(1), keepdims=1)
    return g.op("Mul", features, has_text)


def dense(g: Graph, layer, x: str) -> str:
    y = g.op("MatMul", x, g.const(layer.kernel.numpy(), np.float32, layer.name))
    if layer.use_bias:
        y = g.op("Add", y, g.const(layer.bias.numpy(), np.float32, f"{layer.name}_bias"))
    return _activation(g, layer, y)


def temperature(g: Graph, layer, x: str) -> str:
    return g.op("Sigmoid", g.op("Div", x, g.const(layer.temperature, np.float32, "temperature")))


def _activation(g: Graph, layer, y: str) -> str:
    name = layer.activation.__name__
    ops = {"linear": None, "relu": "Relu", "sigmoid": "Sigmoid", "tanh": "Tanh"}
    if name not in ops:
        raise PipelineError(f"the {layer.name} layer's activation {name!r} has no ONNX form")
    return g.op(ops[name], y) if ops[name] else y


# -- the ops Keras records to compute masks --------------------------------------------------------
def not_equal(g: Graph, op, x: str, y) -> str:
    return g.op("Not", g.op("Equal", x, y if isinstance(y, str) else g.scalar_like(y, x)))


def logical_or(g: Graph, op, x: str, y: str) -> str:
    return g.op("Or", x, y)


def any_of(g: Graph, op, x: str) -> str:
    if op.axis is None:
        raise PipelineError("a mask reduced over every axis has no ONNX form here")
    axes = op.axis if isinstance(op.axis, list | tuple) else [op.axis]
    as_int = g.op("Cast", x, to=INT32)
    return g.op(
        "Cast", g.op("ReduceMax", as_int, g.ints(*axes), keepdims=int(op.keepdims)), to=BOOL
    )


def expand_dims(g: Graph, op, x: str) -> str:
    axes = op.axis if isinstance(op.axis, list | tuple) else [op.axis]
    return g.op("Unsqueeze", x, g.ints(*axes))


def concatenate_op(g: Graph, op, xs: list[str]) -> str:
    return g.op("Concat", *xs, axis=op.axis)


def ones_like(g: Graph, op, x: str) -> str:
    return _filled_like(g, op, x, True)


def zeros_like(g: Graph, op, x: str) -> str:
    return _filled_like(g, op, x, False)


def _filled_like(g: Graph, op, x: str, value: bool) -> str:
    shape = g.op("Shape", x)
    if op.dtype is None:
        return g.op("CastLike", g.filled(value, shape, FLOAT), x)
    return g.filled(value, shape, _DTYPES[str(op.dtype)])


def get_item(g: Graph, op, x: str, key) -> str:
    """x[key] for a key of slices with step 1 (how KeepFirstStep cuts its mask)."""
    key = tuple(key) if isinstance(key, list | tuple) else (key,)  # a list once saved and loaded
    starts, ends, axes = [], [], []
    for axis, part in enumerate(key):
        if not isinstance(part, slice) or part.step not in (None, 1):
            raise PipelineError(f"a mask is indexed with {key!r}, which has no ONNX form here")
        if part.start is None and part.stop is None:
            continue
        starts.append(part.start or 0)
        ends.append(np.iinfo(np.int64).max if part.stop is None else part.stop)
        axes.append(axis)
    if not axes:
        return x
    return g.op("Slice", x, g.ints(*starts), g.ints(*ends), g.ints(*axes))


def _converters() -> dict[type, Callable]:
    import keras
    from keras.src.ops import numpy as keras_ops  # the classes of the ops masks are made of

    from pipeline import layers as ours

    return {
        ours.RightPad: right_pad,
        keras.layers.Embedding: embedding,
        ours.JamoEmbedding: jamo_embedding,
        keras.layers.Concatenate: concatenate,
        keras.layers.Dropout: passthrough,
        keras.layers.SpatialDropout1D: passthrough,
        ours.KeepFirstStep: passthrough,
        ours.MaskedConv1D: masked_conv1d,
        ours.MaskedMaxPool1D: masked_max_pool1d,
        keras.layers.LSTM: recurrent,
        keras.layers.GRU: recurrent,
        keras.layers.SimpleRNN: recurrent,
        keras.layers.Bidirectional: recurrent,
        ours.MaskedMaxMeanPooling: masked_max_mean_pooling,
        ours.HashedNgrams: hashed_ngrams,
        ours.MaskedBagMean: masked_bag_mean,
        ours.ZeroEmptyReviews: zero_empty_reviews,
        keras.layers.Dense: dense,
        ours.Temperature: temperature,
        keras_ops.NotEqual: not_equal,
        keras_ops.LogicalOr: logical_or,
        keras_ops.Any: any_of,
        keras_ops.ExpandDims: expand_dims,
        keras_ops.Concatenate: concatenate_op,
        keras_ops.OnesLike: ones_like,
        keras_ops.ZerosLike: zeros_like,
        keras_ops.GetItem: get_item,
    }


# -- the whole model -------------------------------------------------------------------------------
def convert(model, metadata: dict[str, object] | None = None):
    """The onnx.ModelProto of a classifier of ours: int32 ids (batch, steps) in, (batch, 1) out."""
    from onnx import TensorProto, checker, helper

    converters = _converters()
    graph = Graph()

    def call(operation, *args, **kwargs):
        convert_one = converters.get(type(operation))
        if convert_one is None:
            raise PipelineError(
                f"the model's {operation.name} layer ({type(operation).__name__}) has no ONNX "
                "form; model.onnx can be written only for the layers build_model makes"
            )
        kwargs.pop("training", None)
        graph.layer = operation.name
        return convert_one(graph, operation, *args, **kwargs)

    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise PipelineError("model.onnx is written for a model of one input (ids) and one output")
    # Keras walks its own graph, calling each operation on what its inputs became here. This and
    # keras.src.ops.numpy's classes are Keras internals (pinned < 4): if they change, conversion
    # or train's check fails loudly, never a silently different model.onnx.
    output = model._run_through_graph([INPUT], call_fn=call)
    output = output[0] if isinstance(output, list | tuple) else output
    graph.nodes.append(helper.make_node("Identity", [output], [OUTPUT]))
    onnx_graph = helper.make_graph(
        graph.nodes,
        model.name,
        [helper.make_tensor_value_info(INPUT, TensorProto.INT32, ["batch", "steps"])],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["batch", 1])],
        graph.initializers,
    )
    proto = helper.make_model(
        onnx_graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="naver-shopping-sentiment",
    )
    helper.set_model_props(proto, {k: str(v) for k, v in (metadata or {}).items()})
    checker.check_model(proto)
    return proto


TOLERANCE = 1e-4  # far above float32 rounding (about 1e-7 here), far below any real mismatch


def checked(model, sample: np.ndarray, trim: bool, padding: str):
    """`model` as an ONNX ModelProto, once it scores `sample` as Keras does, and the largest
    difference seen.

    `sample`: padded ids, scored in batches cut to their longest row when the model masks
    padding (`trim`), as a predictor does. A difference above TOLERANCE is an error.
    """
    import onnxruntime as ort

    from pipeline.tokenizer import trim_padding

    embedding = next(layer for layer in model.layers if type(layer).__name__ == "Embedding")
    about = {
        "vocab_size": embedding.input_dim,
        "mask_padding": bool(embedding.mask_zero),
        "parameters": model.count_params(),
    }
    proto = convert(model, about)
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    lengths = np.count_nonzero(sample, axis=1)
    order = np.argsort(lengths, kind="stable")
    worst = 0.0
    for start in range(0, len(sample), 256):
        rows = sample[order[start : start + 256]]
        if trim:
            rows = trim_padding(rows, int(lengths[order[start : start + 256]].max()), padding)
        expected = np.asarray(model(rows, training=False)).reshape(-1)
        got = session.run(None, {INPUT: rows})[0].reshape(-1)
        worst = max(worst, float(np.max(np.abs(expected - got), initial=0.0)))
    if not worst <= TOLERANCE:  # NaN fails too
        raise PipelineError(
            f"model.onnx scores validation reviews up to {worst:.2g} away from model.keras "
            f"(allowed {TOLERANCE:g}), so it was not written: please report this as a bug; "
            "meanwhile score with model.keras (engine 'keras')"
        )
    return proto, worst


def save(proto, graph_path: Path, weights_path: Path) -> None:
    """Write the graph, and beside it its weights as ONNX external data: ONNX Runtime maps
    them from disk instead of copying them, so a process holds only the pages it reads (the
    n-gram table is mostly unread), shared with every other process scoring the same file.

    The weights land first, then the graph that names them; the train record, written last,
    names both, and a predictor trusts model.onnx only once it does.
    """
    import os
    import tempfile

    from onnx import external_data_helper

    from pipeline.files import make_readable

    external_data_helper.convert_model_to_external_data(
        proto, all_tensors_to_one_file=True, location=weights_path.name, size_threshold=1024
    )
    with tempfile.TemporaryDirectory(dir=graph_path.parent, prefix=".model.onnx.tmp") as tmp:
        external_data_helper.write_external_data_tensors(proto, tmp)
        Path(tmp, graph_path.name).write_bytes(proto.SerializeToString())
        for name, final in ((weights_path.name, weights_path), (graph_path.name, graph_path)):
            make_readable(Path(tmp, name))  # onnx writes its data file 0600
            os.replace(Path(tmp, name), final)
