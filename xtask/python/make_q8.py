"""Derives DeepFilterNet3's int8-weight graphs (models/dfn3/stateful-q8/) from the stateful ones.

At one frame per call every matrix product in DeepFilterNet3 is a matrix-vector product, so a
hop streams all of the graphs' weights once; 92 % of them (1.97 M of 2.13 M) are the five GRUs'
(hidden 256). Here every GRU node becomes the same recurrence written out with ONNX Runtime's
`MatMulNBits` (com.microsoft): weights as 8-bit integers with one fp32 scale per block of
BLOCK inputs, products computed in int8 (`accuracy_level` 4, the activations quantized per
block too). The input projection runs over all frames of a call at once; the recurrence runs in
a `Scan` over the frames. ONNX Runtime takes another int8 kernel when a call holds more than
one frame, so S calls of one frame do not equal one call of S frames (up to 3e-2 apart on
random inputs, reported in the manifest): use these graphs frame by frame only.

Experimental: not wired into the xtask or the binary yet. Measured in BENCHMARKS.md ("int8 GRU
weights"): the worker at 0.43x libdeepfilter against 0.60x with fp32, and 0.03 dB lower SI-SDR
on the mixtures.

Everything else (the convolutions, the grouped linear layers, the state tensors and their
names) is left as it is, so the engine runs these graphs exactly as it runs the fp32 ones.

Usage: make_q8.py SRC_DIR DST_DIR   (with the .venv-xtask Python)
"""

import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from make_stateful import CHUNKS, GRAPHS, random_inputs, sha256, stream, time_axis
from onnx import TensorProto, helper, numpy_helper

BITS = 8
BLOCK = 128
ACCURACY_LEVEL = 4
# Frames in the check's one call (the chunked runs use make_stateful's CHUNKS).
T_CHECK = 40


def fail(msg):
    sys.exit(f"make_q8.py: {msg}")


def quantize(w):
    """[N, K] fp32 -> (uint8 [N, K/BLOCK, BLOCK], fp32 scales [N * K/BLOCK]); symmetric, zero
    point 128 (MatMulNBits' default for 8 bits)."""
    n, k = w.shape
    if k % BLOCK:
        fail(f"K={k} is not a multiple of the block size {BLOCK}")
    blocks = w.reshape(n, k // BLOCK, BLOCK).astype(np.float64)
    scale = np.abs(blocks).max(axis=-1, keepdims=True) / 127.0
    scale[scale == 0] = 1.0
    q = np.clip(np.round(blocks / scale), -127, 127).astype(np.int16) + 128
    return q.astype(np.uint8), scale.astype(np.float32).reshape(n * (k // BLOCK))


def constant_values(g):
    """Name -> array for initializers and Constant nodes."""
    vals = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    for nd in g.node:
        if nd.op_type == "Constant":
            for a in nd.attribute:
                if a.name == "value":
                    vals[nd.output[0]] = numpy_helper.to_array(a.t)
    return vals


def matmul_nbits(a, prefix, n, k, out):
    return helper.make_node(
        "MatMulNBits",
        [a, f"{prefix}_q", f"{prefix}_scale"],
        [out],
        domain="com.microsoft",
        K=k,
        N=n,
        bits=BITS,
        block_size=BLOCK,
        accuracy_level=ACCURACY_LEVEL,
        name=out,
    )


def replace_gru(nd, vals, inits):
    """The nodes that compute GRU `nd` (forward, linear_before_reset=1) with int8 weights."""
    attrs = {a.name: helper.get_attribute_value(a) for a in nd.attribute}
    if attrs.get("linear_before_reset") != 1 or attrs.get("direction", b"forward") != b"forward":
        fail(f"GRU {nd.name} is not a forward GRU with linear_before_reset=1 ({attrs})")
    h = attrs["hidden_size"]
    x, w_name, r_name, b_name = nd.input[:4]
    h0 = nd.input[5] if len(nd.input) > 5 else ""
    if (len(nd.input) > 4 and nd.input[4]) or not h0:
        fail(f"GRU {nd.name}: expected no sequence lengths and an initial state")
    w, r, b = vals[w_name][0], vals[r_name][0], vals[b_name][0]
    k = w.shape[1]
    if w.shape != (3 * h, k) or r.shape != (3 * h, h) or b.shape != (6 * h,):
        fail(f"GRU {nd.name}: unexpected weight shapes {w.shape} {r.shape} {b.shape}")
    p = nd.name.strip("/").replace("/", "_")
    for tag, m in (("w", w), ("r", r)):
        q, s = quantize(m)
        inits += [numpy_helper.from_array(q, f"{p}_{tag}_q"), numpy_helper.from_array(s, f"{p}_{tag}_scale")]
    inits += [
        numpy_helper.from_array(b[: 3 * h].astype(np.float32), f"{p}_wb"),
        numpy_helper.from_array(b[3 * h :].astype(np.float32), f"{p}_rb"),
        numpy_helper.from_array(np.array([1, h], np.int64), f"{p}_shape_h"),
        numpy_helper.from_array(np.array([1, 1, h], np.int64), f"{p}_shape_state"),
    ]
    y, y_h = nd.output[0], nd.output[1]

    # Scan body: one frame.
    body = helper.make_graph(
        [
            matmul_nbits("h", f"{p}_r", 3 * h, h, "gh0"),
            helper.make_node("Add", ["gh0", f"{p}_rb"], ["gh"]),
            helper.make_node("Split", ["gx"], ["gx_zr", "gx_n"], axis=-1, split=[2 * h, h]),
            helper.make_node("Split", ["gh"], ["gh_zr", "gh_n"], axis=-1, split=[2 * h, h]),
            helper.make_node("Add", ["gx_zr", "gh_zr"], ["a_zr"]),
            helper.make_node("Sigmoid", ["a_zr"], ["zr"]),
            helper.make_node("Split", ["zr"], ["z", "r"], axis=-1, split=[h, h]),
            helper.make_node("Mul", ["r", "gh_n"], ["r_gh_n"]),
            helper.make_node("Add", ["gx_n", "r_gh_n"], ["a_n"]),
            helper.make_node("Tanh", ["a_n"], ["n"]),
            helper.make_node("Sub", ["h", "n"], ["h_n"]),
            helper.make_node("Mul", ["z", "h_n"], ["z_h_n"]),
            helper.make_node("Add", ["n", "z_h_n"], ["h_next"]),
            helper.make_node("Identity", ["h_next"], ["y_t"]),
        ],
        f"{p}_step",
        [
            helper.make_tensor_value_info("h", TensorProto.FLOAT, [1, h]),
            helper.make_tensor_value_info("gx", TensorProto.FLOAT, [1, 3 * h]),
        ],
        [
            helper.make_tensor_value_info("h_next", TensorProto.FLOAT, [1, h]),
            helper.make_tensor_value_info("y_t", TensorProto.FLOAT, [1, h]),
        ],
    )
    return [
        matmul_nbits(x, f"{p}_w", 3 * h, k, f"{p}_gx0"),
        helper.make_node("Add", [f"{p}_gx0", f"{p}_wb"], [f"{p}_gx"]),
        helper.make_node("Reshape", [h0, f"{p}_shape_h"], [f"{p}_h0"]),
        helper.make_node(
            "Scan", [f"{p}_h0", f"{p}_gx"], [f"{p}_hT", f"{p}_y"], body=body, num_scan_inputs=1, name=f"{p}_scan"
        ),
        helper.make_node("Unsqueeze", [f"{p}_y"], [y], axes=[1]),
        helper.make_node("Reshape", [f"{p}_hT", f"{p}_shape_state"], [y_h]),
    ]


def convert(source):
    """A converted copy of `source`."""
    model = onnx.ModelProto()
    model.CopyFrom(source)
    g = model.graph
    vals = constant_values(g)
    inits = []
    nodes = []
    for nd in g.node:
        if nd.op_type == "GRU":
            nodes += replace_gru(nd, vals, inits)
        else:
            nodes.append(nd)
    # Drop what only the GRUs used.
    used = {i for nd in nodes for i in nd.input} | {o.name for o in g.output}
    nodes = [nd for nd in nodes if nd.op_type != "Constant" or nd.output[0] in used]
    kept = [i for i in g.initializer if i.name in used]
    del g.node[:]
    g.node.extend(nodes)
    del g.initializer[:]
    g.initializer.extend(kept + inits)
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return model


def check(fp32, q8, rng):
    """Returns (max |q8 - fp32| over one T_CHECK-frame call from zero states, max |chunks -
    one call| for the q8 graph with chunks of CHUNKS frames)."""
    feeds = {k: v for k, v in random_inputs(fp32.graph, T_CHECK, rng).items() if not k.startswith("state_in_")}
    ref = {k: v[0] for k, v in stream(fp32, feeds, T_CHECK, T_CHECK).items()}
    out = {k: v[0] for k, v in stream(q8, feeds, T_CHECK, T_CHECK).items()}
    diff = max(float(np.abs(ref[k] - out[k]).max()) for k in ref)
    chunked = 0.0
    for chunk in CHUNKS:
        for k, parts in stream(q8, feeds, chunk, T_CHECK).items():
            got = np.concatenate(parts, axis=time_axis(out[k], T_CHECK))
            chunked = max(chunked, float(np.abs(got - out[k]).max()))
    return diff, chunked


def main():
    if len(sys.argv) != 3:
        fail("usage: make_q8.py SRC_DIR DST_DIR")
    src, dst = Path(sys.argv[1]), Path(sys.argv[2])
    dst.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(20261208)
    lines = [
        "# DeepFilterNet3 int8-weight stateful graphs, derived by xtask/python/make_q8.py",
        f"# onnx {onnx.__version__}, checked with onnxruntime {ort.__version__} and numpy {np.__version__}",
        f"# every GRU as MatMulNBits (bits {BITS}, block {BLOCK}, accuracy_level {ACCURACY_LEVEL}) in a Scan",
        "# sha256  file",
    ]
    report = []
    for name in GRAPHS:
        source = onnx.load(src / f"{name}.onnx")
        model = convert(source)
        onnx.checker.check_model(model)
        out = dst / f"{name}.onnx"
        onnx.save(model, out)
        diff, chunked = check(source, model, rng)
        lines.append(f"{sha256(src / f'{name}.onnx')}  {src.name}/{name}.onnx (source)")
        lines.append(f"{sha256(out)}  {dst.name}/{name}.onnx")
        report.append(f"# {name}: max |q8 - fp32| {diff:.3g} on random inputs; chunks of {CHUNKS} frames vs one call {chunked:.2e}")
        print(report[-1][2:])
    (dst / "MANIFEST.txt").write_text("\n".join(lines + report) + "\n")


if __name__ == "__main__":
    main()
