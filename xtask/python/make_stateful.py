"""Derive streaming (stateful) versions of the DeepFilterNet3 ONNX graphs.

The exported graphs take a whole sequence [1, C, T, F] and keep no recurrent state: each causal
time `Pad` adds k zero frames in front, and each GRU starts from a zero hidden state. Here every
such Pad becomes `Concat(state_in_i, x, axis=2)` with `state_out_i` = the last k frames of that
concat, and every GRU takes its initial state from `state_in_i` and exposes its final state as
`state_out_i`. States are numbered in node order per graph; all-zero states reproduce the
original, and feeding each call's `state_out_i` back as `state_in_i` makes chunked runs equal
to one full-sequence run, which this script checks with onnxruntime before it writes anything.

Usage (from the repository root): python xtask/python/make_stateful.py [--src DIR] [--out DIR]
"""

import argparse
import hashlib
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

GRAPHS = ("enc", "erb_dec", "df_dec")
T_TEST = 60
CHUNKS = (1, 7)
TOLERANCE = 1e-4
HIDDEN = 256
EXPECTED_STATES = {"enc": ["Pad", "Pad", "GRU"], "erb_dec": ["GRU", "GRU"], "df_dec": ["GRU", "GRU", "Pad"]}
EXPECTED_PADS = {"feat_erb": 2, "feat_spec": 2, "c0": 4}


def fail(msg):
    sys.exit(f"make_stateful: {msg}")


def sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def session(model):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def graph_inputs(g):
    inits = {i.name for i in g.initializer}
    return [v for v in g.input if v.name not in inits]


def run_with_probes(model, feeds, probes):
    """Run `model`, also returning the values of the intermediate tensors named in `probes`."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for name in probes:
        m.graph.output.append(helper.make_empty_tensor_value_info(name))
    names = [o.name for o in m.graph.output]
    values = dict(zip(names, session(m).run(names, feeds)))
    return {o.name: values[o.name] for o in model.graph.output}, {p: values[p] for p in probes}


def stateful_nodes(g):
    return [(j, nd) for j, nd in enumerate(g.node) if nd.op_type in ("Pad", "GRU")]


def probe_names(nd):
    if nd.op_type == "Pad":
        return [nd.input[0], nd.input[1]] + ([nd.input[2]] if len(nd.input) > 2 and nd.input[2] else [])
    if len(nd.input) < 6 or not nd.input[5]:
        fail(f"GRU {nd.name} has no initial-state input")
    return [nd.input[5]]


def check_states(name, g, probes):
    """Check every Pad is a causal zero pad on axis 2 and every GRU starts from zeros.

    Returns (node index, node, kind, k, state shape) per state, in node order.
    """
    states = []
    for j, nd in stateful_nodes(g):
        attrs = {a.name: helper.get_attribute_value(a) for a in nd.attribute}
        if nd.op_type == "Pad":
            x, pads = probes[nd.input[0]], probes[nd.input[1]].tolist()
            value = probes[nd.input[2]] if len(nd.input) > 2 and nd.input[2] else np.zeros(())
            k = pads[2] if x.ndim == 4 else 0
            if attrs.get("mode", b"constant") != b"constant" or np.any(value != 0):
                fail(f"{name}: Pad {nd.name} is not a zero constant pad ({attrs}, value {value})")
            if x.ndim != 4 or k <= 0 or pads != [0, 0, k, 0, 0, 0, 0, 0]:
                fail(f"{name}: Pad {nd.name} is not a causal pad on time axis 2 (pads {pads}, rank {x.ndim})")
            if EXPECTED_PADS.get(nd.input[0]) != k:
                fail(f"{name}: Pad {nd.name} pads {nd.input[0]} by {k} frames, expected {EXPECTED_PADS}")
            states.append((j, nd, "Pad", k, [1, x.shape[1], k, x.shape[3]]))
        else:
            h0 = probes[nd.input[5]]
            if attrs.get("direction", b"forward") != b"forward" or attrs.get("layout", 0) != 0:
                fail(f"{name}: GRU {nd.name} is not a forward, seq-major GRU ({attrs})")
            if attrs.get("hidden_size") != HIDDEN or list(h0.shape) != [1, 1, HIDDEN] or np.any(h0 != 0):
                fail(f"{name}: GRU {nd.name} initial state is not zeros [1,1,{HIDDEN}] (shape {h0.shape})")
            states.append((j, nd, "GRU", None, [1, 1, HIDDEN]))
    kinds = [kind for _, _, kind, _, _ in states]
    if kinds != EXPECTED_STATES[name]:
        fail(f"{name}: found stateful nodes {kinds}, expected {EXPECTED_STATES[name]}")
    return states


def prune(g):
    """Drop nodes and initializers that no graph output depends on."""
    needed = {o.name for o in g.output}
    keep = []
    for nd in reversed(g.node):
        if any(o in needed for o in nd.output):
            keep.append(nd)
            needed.update(i for i in nd.input if i)
    keep.reverse()
    del g.node[:]
    g.node.extend(keep)
    inits = [i for i in g.initializer if i.name in needed]
    del g.initializer[:]
    g.initializer.extend(inits)


def make_stateful(model, states):
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    for i, (_, _, _, _, shape) in enumerate(states):
        g.input.append(helper.make_tensor_value_info(f"state_in_{i}", TensorProto.FLOAT, shape))
        g.output.append(helper.make_tensor_value_info(f"state_out_{i}", TensorProto.FLOAT, shape))
    # Back to front, so that replacing a Pad by two nodes keeps the earlier indices valid.
    for i, (j, _, kind, k, _) in reversed(list(enumerate(states))):
        s_in, s_out = f"state_in_{i}", f"state_out_{i}"
        nd = g.node[j]
        if kind == "Pad":
            cat = nd.output[0]
            consts = {"starts": [-k], "ends": [np.iinfo(np.int64).max], "axes": [2]}
            for key, val in consts.items():
                g.initializer.append(numpy_helper.from_array(np.array(val, np.int64), f"{s_out}_{key}"))
            concat = helper.make_node("Concat", [s_in, nd.input[0]], [cat], name=f"{nd.name}_state_concat", axis=2)
            keep = helper.make_node("Slice", [cat] + [f"{s_out}_{key}" for key in consts], [s_out],
                                    name=f"{nd.name}_state_slice")
            del g.node[j]
            g.node.insert(j, keep)
            g.node.insert(j, concat)
        else:
            nd.input[5] = s_in
            while len(nd.output) < 2:
                nd.output.append("")
            old, nd.output[1] = nd.output[1], s_out
            if old and (any(old in other.input for other in g.node) or old in {o.name for o in g.output}):
                fail(f"GRU {nd.name}: final state {old} is already used; renaming it would break the graph")
    prune(g)
    onnx.checker.check_model(m)
    return m


def random_inputs(g, t, rng):
    feeds = {}
    for v in graph_inputs(g):
        dims = [d.dim_value if d.HasField("dim_value") else t for d in v.type.tensor_type.shape.dim]
        feeds[v.name] = rng.standard_normal(dims).astype(np.float32)
    return feeds


def time_axis(arr, t):
    axes = [a for a, n in enumerate(arr.shape) if n == t]
    if len(axes) != 1:
        fail(f"cannot tell the time axis of shape {arr.shape} for T={t}")
    return axes[0]


def stream(model, feeds, chunk, t):
    """Run `model` over `feeds` in chunks of `chunk` frames, carrying the states between calls."""
    sess = session(model)
    in_axes = {k: time_axis(v, t) for k, v in feeds.items()}
    state_shapes = [[d.dim_value for d in v.type.tensor_type.shape.dim]
                    for v in model.graph.input if v.name.startswith("state_in_")]
    state = {f"state_in_{i}": np.zeros(s, np.float32) for i, s in enumerate(state_shapes)}
    names = [o.name for o in model.graph.output]
    pieces = {o: [] for o in names if not o.startswith("state_out_")}
    for start in range(0, t, chunk):
        step = {k: np.take(v, range(start, min(start + chunk, t)), axis=in_axes[k]) for k, v in feeds.items()}
        result = dict(zip(names, sess.run(names, {**step, **state})))
        for o, parts in pieces.items():
            parts.append(result[o])
        state = {f"state_in_{i}": result[f"state_out_{i}"] for i in range(len(state))}
    return pieces


def shape_str(v):
    return "[" + ",".join(str(d.dim_value) if d.HasField("dim_value") else d.dim_param
                          for d in v.type.tensor_type.shape.dim) + "]"


def main():
    root = Path(__file__).resolve().parents[2]
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", type=Path, default=root / "models/dfn3")
    ap.add_argument("--out", type=Path, default=root / "models/dfn3/stateful")
    args = ap.parse_args()

    rng = np.random.default_rng(20240601)
    originals = {n: onnx.load(args.src / f"{n}.onnx") for n in GRAPHS}
    feeds = {"enc": random_inputs(originals["enc"].graph, T_TEST, rng)}
    full, derived, manifest_states = {}, {}, []
    for name in GRAPHS:
        model = originals[name]
        if name != "enc":
            feeds[name] = {v.name: full["enc"][v.name] for v in graph_inputs(model.graph)}
        probes = [p for _, nd in stateful_nodes(model.graph) for p in probe_names(nd)]
        full[name], probed = run_with_probes(model, feeds[name], probes)
        states = check_states(name, model.graph, probed)
        derived[name] = make_stateful(model, states)
        for i, (_, nd, kind, k, shape) in enumerate(states):
            what = f"Pad {nd.input[0]} k={k}" if kind == "Pad" else "GRU hidden"
            manifest_states.append(f"stateful/{name}.onnx state_{i} {shape} {what} ({nd.name})")

    worst = 0.0
    for name in GRAPHS:
        for chunk in CHUNKS:
            pieces = stream(derived[name], feeds[name], chunk, T_TEST)
            for out, parts in pieces.items():
                ref = full[name][out]
                axis = time_axis(ref, T_TEST)
                got = np.concatenate(parts, axis=axis)
                diff = float(np.max(np.abs(got - ref)))
                worst = max(worst, diff)
                print(f"{name:8} chunk {chunk}: {out:6} {list(ref.shape)} max|diff| = {diff:.3e}")
                if not diff < TOLERANCE:
                    fail(f"{name} output {out} differs by {diff} with chunks of {chunk} frames")
    print(f"all outputs equal within {worst:.3e} (tolerance {TOLERANCE})")

    args.out.mkdir(parents=True, exist_ok=True)
    lines = [
        "# DeepFilterNet3 stateful graphs, derived by xtask/python/make_stateful.py",
        f"# onnx {onnx.__version__}, checked with onnxruntime {ort.__version__} and numpy {np.__version__}",
        f"# streaming in chunks of {CHUNKS} frames equals one {T_TEST}-frame run within {TOLERANCE}",
        "# sha256  file",
    ]
    for name in GRAPHS:
        lines.append(f"{sha256(args.src / f'{name}.onnx')}  {name}.onnx (source)")
    for name in GRAPHS:
        path = args.out / f"{name}.onnx"
        onnx.save(derived[name], path)
        lines.append(f"{sha256(path)}  stateful/{name}.onnx")
    lines += ["# states: state_in_i / state_out_i, zeros initially, copy out -> in after each call"]
    lines += manifest_states
    (args.out / "MANIFEST.txt").write_text("\n".join(lines) + "\n")

    for name in GRAPHS:
        g = derived[name].graph
        print(f"{name}.onnx")
        for v in graph_inputs(g):
            print(f"  in  {v.name:12} {shape_str(v)}")
        for v in g.output:
            print(f"  out {v.name:12} {shape_str(v)}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
