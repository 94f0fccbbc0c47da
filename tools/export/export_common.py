"""Shared helpers for export_htdemucs.py and export_denoiser.py: ONNX export, the model.toml
writer, reference files and ONNX Runtime checks. See docs/models.md."""

import hashlib
import importlib.metadata
import json
import math
import os
import sys
from pathlib import Path

import numpy as np

OPSET = 18
# Constants bigger than this many elements are left for the runtime to compute instead of
# being folded into the file (e.g. an Expand of a small embedding table to the full input
# shape).
FOLD_LIMIT = 65536

# Exit status for "the pretrained weights could not be downloaded", so the xtask can say so.
EXIT_NO_WEIGHTS = 3


def fail(msg, code=1):
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(code)


def versions(*packages):
    out = {}
    for p in packages:
        try:
            out[p] = importlib.metadata.version(p)
        except importlib.metadata.PackageNotFoundError:
            out[p] = "missing"
    return out


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def export_onnx(module, args, path, input_names, output_names, dynamic_shapes=None):
    """torch.onnx.export with the dynamo exporter at opset 18, constant folding limited to
    FOLD_LIMIT elements, written as one self-contained file (no external data)."""
    import onnx
    import onnxscript.optimizer
    import onnxscript.rewriter.onnx_fusions
    import torch

    prog = torch.onnx.export(
        module,
        args,
        input_names=input_names,
        output_names=output_names,
        opset_version=OPSET,
        dynamo=True,
        optimize=False,
        external_data=False,
        dynamic_shapes=dynamic_shapes,
        verbose=False,
    )
    onnxscript.optimizer.optimize_ir(prog.model, output_size_limit=FOLD_LIMIT)
    onnxscript.rewriter.onnx_fusions.fuse(prog.model)
    tmp = Path(str(path) + ".tmp")
    prog.save(tmp, external_data=False)
    model = onnx.load(tmp)
    strip_metadata(model)
    two_pass_instance_norm(model)
    double_reductions(model)
    onnx.checker.check_model(model, full_check=True)
    kinds = sorted({n.op_type for n in model.graph.node})
    for n in model.graph.node:
        if n.domain not in ("", "ai.onnx"):
            fail(f"the graph uses a non-standard op {n.domain}::{n.op_type}")
    for v in list(model.graph.input) + list(model.graph.output) + list(model.graph.value_info):
        if v.type.tensor_type.elem_type in (14, 15):  # COMPLEX64, COMPLEX128
            fail(f"the graph has a complex tensor: {v.name}")
    onnx.save(model, tmp)
    data = Path(tmp).read_bytes()
    for marker in {str(Path(__file__).resolve().parents[2]), sys.prefix}:
        if marker.encode() in data:
            fail(f"the graph still holds a machine path ({marker})")
    os.replace(tmp, path)
    return kinds


def two_pass_instance_norm(model):
    """Replaces every InstanceNormalization (what the exporter makes of GroupNorm) by
    ReduceMean(x), d = x - mean, ReduceMean(d * d), d / sqrt(var + eps), times scale plus bias.

    ONNX Runtime's CPU InstanceNormalization sums in float32 in one pass: over the 10^5 to
    10^6 elements of a full-size HTDemucs group its error reaches 1e-4 of the output, where
    this form stays near 1e-6 (docs/models.md, "How HTDemucs fits ONNX")."""
    import onnx
    from onnx import helper, numpy_helper

    inferred = onnx.shape_inference.infer_shapes(model)
    ranks = {}
    for v in list(inferred.graph.value_info) + list(inferred.graph.input):
        if v.type.tensor_type.HasField("shape"):
            ranks[v.name] = len(v.type.tensor_type.shape.dim)
    inits = {t.name: t for t in model.graph.initializer}
    new_nodes = []
    count = 0
    for n in model.graph.node:
        if n.op_type != "InstanceNormalization" or n.domain not in ("", "ai.onnx"):
            new_nodes.append(n)
            continue
        x, scale, bias = n.input
        y = n.output[0]
        rank = ranks.get(x)
        if rank is None or rank < 3:
            fail(f"InstanceNormalization on {x}: unknown rank")
        eps = next((a.f for a in n.attribute if a.name == "epsilon"), 1e-5)
        p = f"{n.name or y}_2pass"
        axes = f"{p}_axes"
        model.graph.initializer.append(
            numpy_helper.from_array(np.arange(2, rank, dtype=np.int64), axes))
        model.graph.initializer.append(numpy_helper.from_array(np.array(eps, np.float32),
                                                               f"{p}_eps"))
        new_nodes += [
            helper.make_node("ReduceMean", [x, axes], [f"{p}_mean"], keepdims=1),
            helper.make_node("Sub", [x, f"{p}_mean"], [f"{p}_d"]),
            helper.make_node("Mul", [f"{p}_d", f"{p}_d"], [f"{p}_d2"]),
            helper.make_node("ReduceMean", [f"{p}_d2", axes], [f"{p}_var"], keepdims=1),
            helper.make_node("Add", [f"{p}_var", f"{p}_eps"], [f"{p}_ve"]),
            helper.make_node("Sqrt", [f"{p}_ve"], [f"{p}_sd"]),
        ]
        s_val = numpy_helper.to_array(inits[scale]) if scale in inits else None
        b_val = numpy_helper.to_array(inits[bias]) if bias in inits else None
        if s_val is None or b_val is None:
            fail(f"InstanceNormalization on {x}: scale and bias must be constants")
        plain = np.all(s_val == 1) and np.all(b_val == 0)
        out = y if plain else f"{p}_norm"
        new_nodes.append(helper.make_node("Div", [f"{p}_d", f"{p}_sd"], [out]))
        if not plain:
            shape = [-1] + [1] * (rank - 2)
            model.graph.initializer.extend([
                numpy_helper.from_array(s_val.astype(np.float32).reshape(shape), f"{p}_scale"),
                numpy_helper.from_array(b_val.astype(np.float32).reshape(shape), f"{p}_bias"),
            ])
            new_nodes += [
                helper.make_node("Mul", [out, f"{p}_scale"], [f"{p}_scaled"]),
                helper.make_node("Add", [f"{p}_scaled", f"{p}_bias"], [y]),
            ]
        count += 1
    del model.graph.node[:]
    model.graph.node.extend(new_nodes)
    # Drop initializers nothing uses any more (the old scale and bias).
    used = {i for n in model.graph.node for i in n.input}
    keep = [t for t in model.graph.initializer if t.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)
    return count


def double_reductions(model, limit=4096):
    """Runs every float ReduceMean/ReduceSum over more than `limit` elements (or over a
    dynamic axis) in float64: Cast to double, reduce, Cast back.

    ONNX Runtime sums in float32: the mean of the squares of a full-size HTDemucs spectrogram
    (2.75 million values, the model's normalisation) comes out 1e-4 off, and every output of
    the spectrogram branch is scaled by it. In float64 the graph matches torch to ~1e-6."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    inferred = onnx.shape_inference.infer_shapes(model)
    info = {}
    for v in list(inferred.graph.value_info) + list(inferred.graph.input):
        t = v.type.tensor_type
        if t.HasField("shape"):
            info[v.name] = (t.elem_type, [d.dim_value if d.HasField("dim_value") else None
                                          for d in t.shape.dim])
    inits = {t.name: t for t in model.graph.initializer}
    new_nodes = []
    count = 0
    for n in model.graph.node:
        if n.op_type not in ("ReduceMean", "ReduceSum") or n.domain not in ("", "ai.onnx"):
            new_nodes.append(n)
            continue
        elem, shape = info.get(n.input[0], (None, None))
        if elem != TensorProto.FLOAT or shape is None:
            new_nodes.append(n)
            continue
        if len(n.input) > 1 and n.input[1]:
            if n.input[1] not in inits:
                fail(f"{n.op_type} {n.name}: axes must be a constant")
            axes = [int(a) % len(shape) for a in numpy_helper.to_array(inits[n.input[1]])]
        else:
            axes = list(range(len(shape)))
        dims = [shape[a] for a in axes]
        if all(d is not None for d in dims) and int(np.prod(dims)) <= limit:
            new_nodes.append(n)
            continue
        p = f"{n.name or n.output[0]}_f64"
        reduced = onnx.NodeProto()
        reduced.CopyFrom(n)
        reduced.input[0] = f"{p}_in"
        reduced.output[0] = f"{p}_out"
        new_nodes += [
            helper.make_node("Cast", [n.input[0]], [f"{p}_in"], to=TensorProto.DOUBLE),
            reduced,
            helper.make_node("Cast", [f"{p}_out"], [n.output[0]], to=TensorProto.FLOAT),
        ]
        count += 1
    del model.graph.node[:]
    model.graph.node.extend(new_nodes)
    return count


def strip_metadata(model):
    """Drops what the exporter records for debugging (stack traces with this machine's
    paths, FX node text, the exported program's signature): the file then holds only the
    graph, and is smaller."""
    g = model.graph
    del g.metadata_props[:]
    del model.metadata_props[:]
    model.doc_string = ""
    g.doc_string = ""
    for n in g.node:
        del n.metadata_props[:]
        n.doc_string = ""
    for v in list(g.value_info) + list(g.input) + list(g.output):
        del v.metadata_props[:]
        v.doc_string = ""
    for t in g.initializer:
        del t.metadata_props[:]
        t.doc_string = ""
    model.producer_version = model.producer_version.split("+")[0]


def ort_session(path):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def max_err(a, b):
    """(max |a - b|, that divided by max |b|)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    e = float(np.abs(a - b).max()) if a.size else 0.0
    scale = float(np.abs(b).max()) if b.size else 0.0
    return e, (e / scale if scale > 0 else e)


def test_signal(channels, length, sample_rate, seed):
    """The reference input: per channel a sine (220 Hz * (1 + c/2)) at 0.3, an amplitude-
    modulated 1 kHz tone at 0.1 and seeded Gaussian noise at 0.05; float32 [channels, length]."""
    rng = np.random.default_rng(seed)
    t = np.arange(length, dtype=np.float64) / sample_rate
    out = np.empty((channels, length), dtype=np.float64)
    for c in range(channels):
        f = 220.0 * (1.0 + 0.5 * c)
        am = 0.5 + 0.5 * np.sin(2 * np.pi * 3.0 * t + c)
        out[c] = (
            0.3 * np.sin(2 * np.pi * f * t)
            + 0.1 * am * np.sin(2 * np.pi * 1000.0 * t)
            + 0.05 * rng.standard_normal(length)
        )
    return out.astype(np.float32)


class Refs:
    """Writes reference arrays as raw little-endian float32 and records them for
    reference.toml."""

    def __init__(self, folder):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        for old in list(self.folder.glob("*.f32")) + [self.folder / "reference.toml"]:
            old.unlink(missing_ok=True)  # nothing stale from an earlier export
        self.files = []

    def write(self, name, array, what):
        a = np.ascontiguousarray(np.asarray(array, dtype="<f4"))
        path = self.folder / f"{name}.f32"
        a.tofile(path)
        self.files.append({"file": path.name, "shape": list(a.shape), "what": what})
        return a


# ---------------------------------------------------------------------------------------
# A small TOML writer (tomllib reads only); enough for model.toml and reference.toml.


def _toml_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v) or math.isinf(v):
            raise ValueError("no NaN or inf in TOML here")
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{_toml_key(k)} = {_toml_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(f"cannot write {type(v)} to TOML")


def _toml_key(k):
    import re

    return k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else json.dumps(k)


def toml_dumps(doc, comments=None):
    """doc: dict of scalars/lists, then tables (dict) and arrays of tables (list of dict),
    in insertion order. comments: {key or table name: comment} written above it."""
    comments = comments or {}
    lines = []

    def comment(key):
        if key in comments:
            for line in comments[key].splitlines():
                lines.append(f"# {line}".rstrip())

    def scalars(table, prefix):
        for k, v in table.items():
            if isinstance(v, dict) or (isinstance(v, list) and v and isinstance(v[0], dict)):
                continue
            comment(prefix + k)
            lines.append(f"{_toml_key(k)} = {_toml_value(v)}")

    def tables(table, prefix):
        for k, v in table.items():
            name = prefix + k
            if isinstance(v, dict):
                lines.append("")
                comment(name)
                lines.append(f"[{name}]")
                scalars(v, name + ".")
                tables(v, name + ".")
            elif isinstance(v, list) and v and isinstance(v[0], dict):
                lines.append("")
                comment(name)
                for item in v:
                    lines.append(f"[[{name}]]")
                    scalars(item, name + ".")

    scalars(doc, "")
    tables(doc, "")
    return "\n".join(lines) + "\n"


def write_toml(path, doc, comments=None, header=None):
    text = toml_dumps(doc, comments)
    if header:
        text = "".join(f"# {h}".rstrip() + "\n" for h in header.splitlines()) + "\n" + text
    import tomllib

    tomllib.loads(text)  # must read back
    Path(path).write_text(text, encoding="utf-8")


def jsonable(v):
    """Model constructor arguments as TOML-friendly values (fractions become floats, None
    becomes the string "none")."""
    from fractions import Fraction

    if isinstance(v, Fraction):
        return float(v)
    if v is None:
        return "none"
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): jsonable(x) for k, x in v.items()}
    return v


def snr_db(estimate, reference):
    """10 log10(sum reference^2 / sum (estimate - reference)^2)."""
    e = np.asarray(estimate, dtype=np.float64)
    r = np.asarray(reference, dtype=np.float64)
    noise = float(np.sum((e - r) ** 2))
    return float("inf") if noise == 0 else 10.0 * math.log10(float(np.sum(r**2)) / noise)
