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
