//! One streaming ONNX graph: named inputs fed from a shared value store, recurrent state
//! (`state_in_i` / `state_out_i`) kept per stream and copied back after every call.

use crate::ModelError;
use ort::session::{Session, SessionInputValue};
use ort::value::Tensor;
use std::collections::HashMap;

/// A tensor on the worker side: shape and data.
#[derive(Debug, Clone, Default)]
pub struct Value {
    /// Shape.
    pub shape: Vec<i64>,
    /// Data, row-major.
    pub data: Vec<f32>,
}

/// Named values passed between graphs.
pub type Values = HashMap<String, Value>;

/// A loaded graph and what its inputs and outputs are.
pub struct Graph {
    /// Name for messages.
    name: String,
    /// The session.
    session: Session,
    /// Input names in session order, and for state inputs their state index.
    inputs: Vec<(String, Option<usize>)>,
    /// Output names in session order, and for state outputs their state index.
    outputs: Vec<(String, Option<usize>)>,
    /// Shapes of the state tensors, by state index.
    state_shapes: Vec<Vec<i64>>,
}

/// Parses `state_in_3` / `state_out_3`.
fn state_index(name: &str, prefix: &str) -> Option<usize> {
    name.strip_prefix(prefix)?.parse().ok()
}

impl Graph {
    /// Wraps a session, checking that it has the `required` inputs and `outputs` and that its
    /// state inputs and outputs pair up with fixed shapes.
    pub fn new(
        name: &str,
        session: Session,
        required_inputs: &[&str],
        required_outputs: &[&str],
    ) -> Result<Self, ModelError> {
        let mismatch = |message: String| ModelError::Mismatch {
            graph: name.into(),
            message,
        };
        let inputs: Vec<(String, Option<usize>)> = session
            .inputs()
            .iter()
            .map(|o| (o.name().to_string(), state_index(o.name(), "state_in_")))
            .collect();
        let outputs: Vec<(String, Option<usize>)> = session
            .outputs()
            .iter()
            .map(|o| (o.name().to_string(), state_index(o.name(), "state_out_")))
            .collect();
        for r in required_inputs {
            if !inputs.iter().any(|(n, _)| n == r) {
                return Err(mismatch(format!(
                    "no input `{r}` (inputs: {})",
                    inputs
                        .iter()
                        .map(|i| i.0.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
        }
        for r in required_outputs {
            if !outputs.iter().any(|(n, _)| n == r) {
                return Err(mismatch(format!(
                    "no output `{r}` (outputs: {})",
                    outputs
                        .iter()
                        .map(|i| i.0.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
        }
        let n_states = inputs.iter().filter(|i| i.1.is_some()).count();
        let mut state_shapes = vec![Vec::new(); n_states];
        for (o, (_, idx)) in session.inputs().iter().zip(&inputs) {
            let Some(i) = *idx else { continue };
            if i >= n_states {
                return Err(mismatch(format!("state input {i} out of range")));
            }
            let shape = o
                .dtype()
                .tensor_shape()
                .map(|s| s.iter().copied().collect::<Vec<i64>>())
                .unwrap_or_default();
            if shape.iter().any(|&d| d <= 0) {
                return Err(mismatch(format!(
                    "state input {i} has no fixed shape: {shape:?}"
                )));
            }
            state_shapes[i] = shape;
        }
        for i in 0..n_states {
            if !outputs.iter().any(|o| o.1 == Some(i)) {
                return Err(mismatch(format!("state_in_{i} has no state_out_{i}")));
            }
        }
        Ok(Self {
            name: name.into(),
            session,
            inputs,
            outputs,
            state_shapes,
        })
    }

    /// Zeroed state for one stream.
    pub fn initial_state(&self) -> Vec<Vec<f32>> {
        self.state_shapes
            .iter()
            .map(|s| vec![0.0; s.iter().product::<i64>() as usize])
            .collect()
    }

    /// Runs one step: inputs come from `values` (by name) and `state`; non-state outputs are
    /// written into `values`, state outputs back into `state`.
    pub fn run(&mut self, values: &mut Values, state: &mut [Vec<f32>]) -> Result<(), ModelError> {
        let err = |e: ort::Error| ModelError::Inference {
            graph: self.name.clone(),
            message: e.to_string(),
        };
        let mut feed: Vec<SessionInputValue> = Vec::with_capacity(self.inputs.len());
        for (name, idx) in &self.inputs {
            let (shape, data) = match idx {
                Some(i) => (self.state_shapes[*i].clone(), state[*i].clone()),
                None => {
                    let v = values.get(name).ok_or_else(|| ModelError::Inference {
                        graph: self.name.clone(),
                        message: format!("no value for input `{name}`"),
                    })?;
                    (v.shape.clone(), v.data.clone())
                }
            };
            feed.push(Tensor::from_array((shape, data)).map_err(err)?.into());
        }
        let name = self.name.clone();
        let out = self
            .session
            .run(feed.as_slice())
            .map_err(|e| ModelError::Inference {
                graph: name.clone(),
                message: e.to_string(),
            })?;
        for (k, (oname, idx)) in self.outputs.iter().enumerate() {
            let (shape, data) =
                out[k]
                    .try_extract_tensor::<f32>()
                    .map_err(|e| ModelError::Inference {
                        graph: name.clone(),
                        message: e.to_string(),
                    })?;
            match idx {
                Some(i) => state[*i].copy_from_slice(data),
                None => {
                    let v = values.entry(oname.clone()).or_default();
                    v.shape.clear();
                    v.shape.extend(shape.iter().copied());
                    v.data.clear();
                    v.data.extend_from_slice(data);
                }
            }
        }
        Ok(())
    }
}

/// Most inputs or outputs a [`Stepper`] graph may have (its call builds its pointer arrays on
/// the stack).
const MAX_IO: usize = 16;

/// Tensors shared between the graphs of one model, by name, each with one fixed shape.
/// Allocated once, when the graphs are built; a step only writes into them.
#[derive(Default)]
pub struct Slots {
    /// Names, in insertion order.
    names: Vec<String>,
    /// The tensors, owned by ONNX Runtime values over buffers allocated here.
    tensors: Vec<Tensor<f32>>,
}

impl Slots {
    /// No slots.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a zeroed slot `name` of `shape` and returns its index; an existing slot of that
    /// name is kept when its shape is the same. Allocates.
    pub fn insert(&mut self, name: &str, shape: &[i64]) -> Result<usize, ModelError> {
        if let Some(i) = self.index(name) {
            let have: Vec<i64> = self.tensors[i].shape().iter().copied().collect();
            if have != shape {
                return Err(ModelError::Mismatch {
                    graph: name.into(),
                    message: format!("`{name}` has shape {have:?} and {shape:?}"),
                });
            }
            return Ok(i);
        }
        let n = shape.iter().product::<i64>().max(0) as usize;
        let tensor = Tensor::from_array((shape.to_vec(), vec![0.0f32; n])).map_err(|e| {
            ModelError::Inference {
                graph: name.into(),
                message: e.to_string(),
            }
        })?;
        self.names.push(name.into());
        self.tensors.push(tensor);
        Ok(self.names.len() - 1)
    }

    /// The index of slot `name`.
    pub fn index(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| n == name)
    }

    /// The data of slot `i`.
    pub fn data(&self, i: usize) -> &[f32] {
        self.tensors[i].extract_tensor().1
    }

    /// The data of slot `i`, to write.
    pub fn data_mut(&mut self, i: usize) -> &mut [f32] {
        self.tensors[i].extract_tensor_mut().1
    }

    /// The slots as [`Values`] (allocates; for probing a graph's output shapes).
    fn values(&self) -> Values {
        self.names
            .iter()
            .zip(&self.tensors)
            .map(|(n, t)| {
                let (shape, data) = t.extract_tensor();
                (
                    n.clone(),
                    Value {
                        shape: shape.iter().copied().collect(),
                        data: data.to_vec(),
                    },
                )
            })
            .collect()
    }
}

/// Where a [`Stepper`] input comes from or an output goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Port {
    /// A shared slot, by index.
    Slot(usize),
    /// A recurrent state tensor of the stream, by state index.
    State(usize),
}

/// A graph run one fixed-shape step at a time with no allocation: its inputs and outputs are
/// tensors allocated when it is built (shared [`Slots`], and per stream two sets of state
/// tensors used in turn, so the states a step writes are the ones the next step reads, with
/// no copy). Each step is one `Run` of ONNX Runtime's C API into those preallocated outputs.
pub struct Stepper {
    /// Name for messages.
    name: String,
    /// The session.
    session: Session,
    /// Input names in session order, NUL-terminated.
    input_names: Vec<std::ffi::CString>,
    /// Output names in session order, NUL-terminated.
    output_names: Vec<std::ffi::CString>,
    /// What feeds each input, in session order.
    inputs: Vec<Port>,
    /// Where each output goes, in session order.
    outputs: Vec<Port>,
    /// Per stream: two sets of state tensors (by state index).
    states: Vec<[Vec<Tensor<f32>>; 2]>,
    /// Per stream: which set the next step reads.
    parity: Vec<usize>,
}

impl Stepper {
    /// Makes `graph` a stepper for `streams` streams. Its non-state inputs must already be
    /// slots; its non-state outputs become slots, with the shapes one probe run on the slots'
    /// current values (zeros) gives them. Allocates everything here.
    pub fn new(graph: Graph, slots: &mut Slots, streams: usize) -> Result<Self, ModelError> {
        let mut graph = graph;
        let gname = graph.name.clone();
        let mismatch = |message: String| ModelError::Mismatch {
            graph: gname.clone(),
            message,
        };
        if graph.inputs.len() > MAX_IO || graph.outputs.len() > MAX_IO {
            return Err(mismatch(format!(
                "{} inputs and {} outputs: at most {MAX_IO} each",
                graph.inputs.len(),
                graph.outputs.len()
            )));
        }
        let mut inputs = Vec::with_capacity(graph.inputs.len());
        for (name, idx) in &graph.inputs {
            inputs.push(match idx {
                Some(i) => Port::State(*i),
                None => Port::Slot(
                    slots
                        .index(name)
                        .ok_or_else(|| mismatch(format!("no value for input `{name}`")))?,
                ),
            });
        }
        // One probe run gives the output shapes.
        let mut values = slots.values();
        let mut probe_state = graph.initial_state();
        graph.run(&mut values, &mut probe_state)?;
        let mut outputs = Vec::with_capacity(graph.outputs.len());
        for (name, idx) in &graph.outputs {
            outputs.push(match idx {
                Some(i) => Port::State(*i),
                None => {
                    let shape = values
                        .get(name)
                        .map(|v| v.shape.clone())
                        .ok_or_else(|| mismatch(format!("no output `{name}` after a run")))?;
                    let i = slots.insert(name, &shape)?;
                    if inputs.contains(&Port::Slot(i)) {
                        return Err(mismatch(format!("`{name}` is an input and an output")));
                    }
                    Port::Slot(i)
                }
            });
        }
        let cstrings = |names: &[(String, Option<usize>)]| {
            names
                .iter()
                .map(|(n, _)| {
                    std::ffi::CString::new(n.as_str())
                        .map_err(|_| mismatch(format!("`{n}` holds a NUL byte")))
                })
                .collect::<Result<Vec<_>, _>>()
        };
        let input_names = cstrings(&graph.inputs)?;
        let output_names = cstrings(&graph.outputs)?;
        let state_set = || -> Result<Vec<Tensor<f32>>, ModelError> {
            graph
                .state_shapes
                .iter()
                .map(|s| {
                    let n = s.iter().product::<i64>() as usize;
                    Tensor::from_array((s.clone(), vec![0.0f32; n])).map_err(|e| {
                        ModelError::Inference {
                            graph: graph.name.clone(),
                            message: e.to_string(),
                        }
                    })
                })
                .collect()
        };
        let mut states = Vec::with_capacity(streams);
        for _ in 0..streams.max(1) {
            states.push([state_set()?, state_set()?]);
        }
        Ok(Self {
            name: graph.name.clone(),
            session: graph.session,
            input_names,
            output_names,
            inputs,
            outputs,
            parity: vec![0; states.len()],
            states,
        })
    }

    /// Runs one step of `stream`: inputs from `slots` and the stream's states, outputs into
    /// `slots` and its next states. No allocation on success.
    pub fn step(&mut self, slots: &mut Slots, stream: usize) -> Result<(), ModelError> {
        use ort::sys::OrtValue;
        use ort::AsPointer;
        let p = self.parity[stream];
        let [a, b] = &mut self.states[stream];
        let (read, write) = if p == 0 { (a, b) } else { (b, a) };
        let mut in_names = [std::ptr::null(); MAX_IO];
        let mut out_names = [std::ptr::null(); MAX_IO];
        let mut in_values: [*const OrtValue; MAX_IO] = [std::ptr::null(); MAX_IO];
        let mut out_values: [*mut OrtValue; MAX_IO] = [std::ptr::null_mut(); MAX_IO];
        for (k, port) in self.inputs.iter().enumerate() {
            in_names[k] = self.input_names[k].as_ptr();
            in_values[k] = match *port {
                Port::Slot(i) => slots.tensors[i].ptr(),
                Port::State(i) => read[i].ptr(),
            };
        }
        // Output tensors are borrowed mutably: they are disjoint from the inputs (checked in
        // `new`; states read and written are different sets).
        for (k, port) in self.outputs.iter().enumerate() {
            out_names[k] = self.output_names[k].as_ptr();
            out_values[k] = match *port {
                Port::Slot(i) => slots.tensors[i].ptr_mut(),
                Port::State(i) => write[i].ptr_mut(),
            };
        }
        let api = ort::api();
        // SAFETY: the session is alive; the name arrays hold `n_in`/`n_out` pointers to
        // NUL-terminated strings owned by `self`; the value arrays hold as many live tensors
        // owned by `slots` and `self.states`, the outputs of exactly the shapes and type the
        // graph produces (taken from a probe run in `new`), so ONNX Runtime writes into them
        // in place and replaces no pointer.
        let status = unsafe {
            (api.Run)(
                self.session.ptr_mut(),
                std::ptr::null(),
                in_names.as_ptr(),
                in_values.as_ptr(),
                self.inputs.len(),
                out_names.as_ptr(),
                self.outputs.len(),
                out_values.as_mut_ptr(),
            )
        };
        if !status.0.is_null() {
            // SAFETY: a non-null status holds a message; it is released once, here.
            let message = unsafe {
                let m = std::ffi::CStr::from_ptr((api.GetErrorMessage)(status.0))
                    .to_string_lossy()
                    .into_owned();
                (api.ReleaseStatus)(status.0);
                m
            };
            return Err(ModelError::Inference {
                graph: self.name.clone(),
                message,
            });
        }
        self.parity[stream] = 1 - p;
        Ok(())
    }

    /// The states `stream`'s next step reads, by state index.
    pub fn state(&self, stream: usize) -> impl Iterator<Item = &[f32]> {
        self.states[stream][self.parity[stream]]
            .iter()
            .map(|t| t.extract_tensor().1)
    }

    /// Sets the states `stream`'s next step reads: zeros for `None`, else copies of `from`
    /// (by state index, of the state shapes). No allocation.
    pub fn set_state(&mut self, stream: usize, from: Option<&[Vec<f32>]>) {
        let p = self.parity[stream];
        for (i, t) in self.states[stream][p].iter_mut().enumerate() {
            let data = t.extract_tensor_mut().1;
            match from.and_then(|f| f.get(i)) {
                Some(src) if src.len() == data.len() => data.copy_from_slice(src),
                _ => data.fill(0.0),
            }
        }
    }
}
