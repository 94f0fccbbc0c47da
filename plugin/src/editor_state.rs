//! The editor's size and zoom, saved in the plugin state: [`SavedEditorState`] (what is
//! serialised) and [`EditorState`] (the `#[persist = "editor-state"]` field of
//! [`crate::params::VoxsiftParams`], holding nice-plug-egui's state). Apart from the editor so
//! that the parameters need only this, not the editor, and the editor needs the parameters.

use nice_plug::editor::dpi::LogicalSize;
use nice_plug::params::persist::PersistentField;
use nice_plug_egui::EguiEditorState;
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex, PoisonError};

/// Default editor width in logical pixels.
pub const DEFAULT_WIDTH: f32 = 860.0;
/// Default editor height in logical pixels.
pub const DEFAULT_HEIGHT: f32 = 600.0;
/// Smallest editor width in logical pixels.
pub const MIN_WIDTH: f32 = 640.0;
/// Smallest editor height in logical pixels.
pub const MIN_HEIGHT: f32 = 460.0;
/// Largest editor side in logical pixels accepted from a saved state.
const MAX_SIDE: f32 = 8192.0;
/// The editor's size and zoom as saved in the plugin state (logical pixels, before zoom).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SavedEditorState {
    /// Window width in logical pixels.
    pub width: f32,
    /// Window height in logical pixels.
    pub height: f32,
    /// The user's zoom factor on top of the system scale.
    #[serde(default = "unit_zoom")]
    pub zoom: f32,
}

/// The zoom of states saved without one.
fn unit_zoom() -> f32 {
    1.0
}

impl Default for SavedEditorState {
    fn default() -> Self {
        Self {
            width: DEFAULT_WIDTH,
            height: DEFAULT_HEIGHT,
            zoom: 1.0,
        }
    }
}

impl SavedEditorState {
    /// The same state with a usable size and zoom (a corrupt or hand-edited state cannot open
    /// a window of zero or absurd size).
    pub fn sanitized(self) -> Self {
        let side = |v: f32, min: f32, default: f32| {
            if v.is_finite() {
                v.clamp(min, MAX_SIDE)
            } else {
                default
            }
        };
        Self {
            width: side(self.width, MIN_WIDTH, DEFAULT_WIDTH),
            height: side(self.height, MIN_HEIGHT, DEFAULT_HEIGHT),
            zoom: if self.zoom.is_finite() {
                self.zoom.clamp(0.25, 4.0)
            } else {
                1.0
            },
        }
    }
}

/// The egui editor state (size, zoom, open or not), saved in the plugin state as a
/// [`SavedEditorState`]. Only the main and GUI threads touch it.
pub struct EditorState {
    /// The state the editor is built on; replaced when a plugin state is loaded.
    egui: Mutex<Arc<EguiEditorState>>,
}

impl Default for EditorState {
    fn default() -> Self {
        Self::from_saved(SavedEditorState::default())
    }
}

impl EditorState {
    /// A state for a window of the given size and zoom.
    pub fn from_saved(saved: SavedEditorState) -> Self {
        Self {
            egui: Mutex::new(Self::egui_state(saved)),
        }
    }

    /// A fresh egui state for `saved`.
    fn egui_state(saved: SavedEditorState) -> Arc<EguiEditorState> {
        let s = saved.sanitized();
        EguiEditorState::from_size(LogicalSize::new(s.width as f64, s.height as f64), s.zoom)
    }

    /// The current egui state (what the editor opens with and resizes).
    pub fn egui(&self) -> Arc<EguiEditorState> {
        self.egui
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The size and zoom to save.
    pub fn saved(&self) -> SavedEditorState {
        let egui = self.egui();
        let size = egui.logical_size();
        SavedEditorState {
            width: size.width,
            height: size.height,
            zoom: egui.user_scale_factor(),
        }
    }

    /// Whether the editor window is open.
    pub fn is_open(&self) -> bool {
        self.egui().is_open()
    }
}

impl<'a> PersistentField<'a, SavedEditorState> for EditorState {
    fn set(&self, new_value: SavedEditorState) {
        let mut egui = self.egui.lock().unwrap_or_else(PoisonError::into_inner);
        // An open window keeps the size the user sees; the next state save records it.
        if !egui.is_open() {
            *egui = Self::egui_state(new_value);
        }
    }

    fn map<F, R>(&self, f: F) -> R
    where
        F: Fn(&SavedEditorState) -> R,
    {
        f(&self.saved())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::VoxsiftParams;

    #[test]
    fn editor_size_is_saved_in_the_plugin_state() {
        use nice_plug::prelude::Params;
        let params = VoxsiftParams::default();
        let saved = SavedEditorState {
            width: 1000.0,
            height: 700.0,
            zoom: 1.25,
        };
        params.editor_state.set(saved);
        let fields = params.serialize_fields();
        let json = fields.get("editor-state").expect("the editor-state field");
        assert!(json.contains("1000"), "{json}");
        let restored = VoxsiftParams::default();
        assert_eq!(restored.editor_state.saved(), SavedEditorState::default());
        restored.deserialize_fields(&fields);
        assert_eq!(restored.editor_state.saved(), saved);
        let egui = restored.editor_state.egui();
        assert_eq!(egui.logical_size().width, 1000.0);
        assert!(!restored.editor_state.is_open());
    }

    #[test]
    fn corrupt_sizes_are_sanitized() {
        let s = SavedEditorState {
            width: f32::NAN,
            height: 1.0,
            zoom: 0.0,
        }
        .sanitized();
        assert_eq!(s.width, DEFAULT_WIDTH);
        assert_eq!(s.height, MIN_HEIGHT);
        assert_eq!(s.zoom, 0.25);
    }
}
