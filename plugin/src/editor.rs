//! The plugin editor (nice-plug-egui): a resizable window with a control for every parameter,
//! live meters, a scrolling spectrogram of the mask and the worker's status.
//!
//! - Everything live is read from [`Meters`] (atomics and the mask-column ring, whose consumer
//!   only the editor locks) and [`PluginStatus`] (atomics and mutexes that the audio thread
//!   never touches), so the editor never blocks the audio thread, and closing it while audio
//!   runs only drops GUI-side state.
//! - The window size is saved in the plugin state through [`EditorState`], the
//!   `#[persist = "editor-state"]` field of [`VoxsiftParams`]. nice-plug-egui's
//!   [`EguiEditorState`] cannot be serialised or resized from outside, so [`EditorState`]
//!   swaps in a fresh one when a state is loaded, and [`VoxsiftEditor`] builds the egui editor
//!   for whichever one is current when the host asks for its size or opens it.
//! - The spectrogram history is a ring of [`HISTORY`] columns kept in a GPU texture that is
//!   created when the window opens; each frame uploads only the columns that arrived.

use super::meters::{Meters, BANDS, FLOOR_DB, LOW_HZ};
use super::params::VoxsiftParams;
use super::PluginStatus;
pub use crate::editor_state::{
    EditorState, SavedEditorState, DEFAULT_HEIGHT, DEFAULT_WIDTH, MIN_HEIGHT, MIN_WIDTH,
};
use egui::{
    pos2, vec2, Align2, Color32, ColorImage, FontId, Rect, RichText, Sense, Stroke, StrokeKind,
    TextureHandle, TextureOptions, Ui, Vec2,
};
use nice_plug::context::gui::GuiContext;
use nice_plug::editor::dpi::{LogicalSize, NativeSize};
use nice_plug::editor::{HostMethods, ParentWindowHandle, ResizeHint, SpawnedEditor};
use nice_plug::prelude::{BoolParam, Editor, Param, ParamSetter};
use nice_plug_egui::baseview::HandlerError;
use nice_plug_egui::resizable_window::ResizableWindow;
use nice_plug_egui::widgets::ParamSlider;
use nice_plug_egui::{
    create_egui_editor, EguiEditor, EguiEditorHandle, EguiEditorState, EguiNiceSettings,
    NiceEguiApp, RepaintNotifier,
};
use std::error::Error;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use voxsift_engine::status::{Shared, WorkerState};

/// Mask columns the spectrogram shows (at 100 columns per second: 6 s).
pub const HISTORY: usize = 600;
/// Worker load (fraction of real time) above which the editor warns.
pub const LOAD_WARNING: f32 = 0.8;
/// How often the editor repaints while open.
const REFRESH: Duration = Duration::from_millis(33);
/// Columns popped from the meters per call.
const POP_COLUMNS: usize = 64;
/// Bottom of the level meters in dB.
const METER_MIN_DB: f32 = -60.0;
/// Top of the level meters in dB.
const METER_MAX_DB: f32 = 6.0;
/// Reduction that fills the reduction meter, in dB.
const REDUCTION_RANGE_DB: f32 = 40.0;
/// Height of the three boxes above the spectrogram.
const GROUP_HEIGHT: f32 = 200.0;
/// Width of the values beside the meters.
const METER_TEXT_WIDTH: f32 = 84.0;

/// The resize behaviour offered to hosts: free, down to the minimum size.
const RESIZE_HINT: ResizeHint =
    ResizeHint::RESIZABLE.with_min_logical_size(LogicalSize::new(MIN_WIDTH, MIN_HEIGHT));

/// What the editor reads: the plugin's parameters, status and meters.
#[derive(Clone)]
struct Sources {
    /// Parameters (read, and set through the GUI context).
    params: Arc<VoxsiftParams>,
    /// Worker and activation status.
    status: Arc<PluginStatus>,
    /// Levels and mask columns.
    meters: Arc<Meters>,
    /// Frames drawn by any window of this editor.
    frames: Arc<AtomicU64>,
}

/// An egui editor and the egui state it was built on.
type Built = (Arc<EguiEditorState>, Arc<EguiEditor<EditorApp>>);

/// The plugin's [`Editor`]: nice-plug-egui's editor, built on the current [`EditorState`].
pub struct VoxsiftEditor {
    /// What the editor shows.
    sources: Sources,
    /// Wakes the window when the host changes a parameter.
    repaint: RepaintNotifier,
    /// The egui editor and the state it was built on.
    built: Mutex<Option<Built>>,
}

impl VoxsiftEditor {
    /// An editor on the plugin's parameters, status and meters. Allocates nothing until the
    /// host asks for its size or opens it.
    pub fn new(params: Arc<VoxsiftParams>, status: Arc<PluginStatus>, meters: Arc<Meters>) -> Self {
        Self {
            sources: Sources {
                params,
                status,
                meters,
                frames: Arc::new(AtomicU64::new(0)),
            },
            repaint: RepaintNotifier::new(),
            built: Mutex::new(None),
        }
    }

    /// Frames the editor has drawn so far, over all the times it was opened.
    pub fn frames_drawn(&self) -> u64 {
        self.sources.frames.load(Ordering::Relaxed)
    }

    /// The egui editor for the current [`EditorState`], built if the state was replaced.
    fn current(&self) -> Option<Arc<EguiEditor<EditorApp>>> {
        let state = self.sources.params.editor_state.egui();
        let mut built = self.built.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((s, e)) = built.as_ref() {
            if Arc::ptr_eq(s, &state) {
                return Some(e.clone());
            }
        }
        let settings = EguiNiceSettings::new()
            .with_tile("Voxsift")
            .with_resize_hint(RESIZE_HINT);
        let app = EditorApp::new(self.sources.clone());
        let editor = Arc::new(create_egui_editor(
            state.clone(),
            self.repaint.clone(),
            settings,
            app,
        )?);
        *built = Some((state, editor.clone()));
        Some(editor)
    }
}

impl Editor for VoxsiftEditor {
    type Handle = EguiEditorHandle;

    fn spawn(
        &self,
        parent: Option<ParentWindowHandle>,
        wait_for_parent: bool,
        fallback_scale_factor: Option<f64>,
        gui_context: GuiContext,
        host: Option<HostMethods>,
    ) -> Result<SpawnedEditor<Self::Handle>, Box<dyn Error>> {
        let editor = self
            .current()
            .ok_or("the egui editor could not be created")?;
        editor.spawn(
            parent,
            wait_for_parent,
            fallback_scale_factor,
            gui_context,
            host,
        )
    }

    fn size(&self) -> NativeSize<u32> {
        match self.current() {
            Some(e) => e.size(),
            None => NativeSize::new(DEFAULT_WIDTH as u32, DEFAULT_HEIGHT as u32),
        }
    }

    fn resize_hint(&self) -> ResizeHint {
        RESIZE_HINT
    }

    unsafe fn assume_standalone_in_process(&self) {
        if let Some(e) = self.current() {
            // SAFETY: the caller upholds the same contract (standalone binary only).
            unsafe { e.assume_standalone_in_process() };
        }
    }
}

/// The egui app: the plugin's sources, the GUI context of the open window and the
/// spectrogram, created when the window opens.
struct EditorApp {
    /// What the editor shows.
    sources: Sources,
    /// The open window's context (sets parameters).
    gui: Option<GuiContext>,
    /// The spectrogram of the open window.
    spectrogram: Option<Spectrogram>,
}

impl EditorApp {
    /// An app with nothing allocated yet.
    fn new(sources: Sources) -> Self {
        Self {
            sources,
            gui: None,
            spectrogram: None,
        }
    }
}

impl NiceEguiApp for EditorApp {
    fn build(
        &mut self,
        egui_ctx: egui::Context,
        nice_gui_ctx: GuiContext,
        _frame: &mut nice_plug_egui::Frame,
    ) -> Result<(), HandlerError> {
        egui_ctx.set_theme(egui::Theme::Dark);
        self.gui = Some(nice_gui_ctx);
        // Columns that piled up while the window was closed are stale.
        self.spectrogram = Some(Spectrogram::new(&egui_ctx, &self.sources.meters));
        Ok(())
    }

    fn ui(&mut self, ui: &mut Ui, _frame: &mut nice_plug_egui::Frame) {
        ui.ctx().request_repaint_after(REFRESH);
        let Self {
            sources,
            gui,
            spectrogram,
        } = self;
        let spectrogram =
            spectrogram.get_or_insert_with(|| Spectrogram::new(ui.ctx(), &sources.meters));
        spectrogram.pull(&sources.meters);
        let snapshot = Snapshot::read(sources);
        ResizableWindow::new("voxsift-editor")
            .min_size(Vec2::new(MIN_WIDTH, MIN_HEIGHT))
            .show(ui, |ui| {
                egui::Frame::new()
                    .inner_margin(egui::Margin::same(10))
                    .show(ui, |ui| {
                        ui.spacing_mut().item_spacing = vec2(8.0, 6.0);
                        header(ui, &snapshot);
                        banners(ui, &snapshot);
                        ui.add_space(2.0);
                        ui.columns(3, |cols| {
                            if let Some(gui) = gui.as_ref() {
                                group(&mut cols[0], "Controls", |ui| {
                                    controls(ui, &sources.params, &gui.param_setter());
                                });
                            }
                            group(&mut cols[1], "Levels", |ui| levels(ui, &snapshot));
                            group(&mut cols[2], "Engine", |ui| engine_info(ui, &snapshot));
                        });
                        ui.add_space(4.0);
                        spectrogram.show(ui, &snapshot);
                    });
            });
        sources.frames.fetch_add(1, Ordering::Relaxed);
    }
}

/// Everything the editor shows, read once per frame.
struct Snapshot {
    /// Input level in dBFS.
    input_db: f32,
    /// Output level in dBFS.
    output_db: f32,
    /// Reduction in dB (≤ 0 when removing).
    reduction_db: f32,
    /// Reported latency in samples.
    latency: u32,
    /// Sample rate of the activation in Hz (0 when inactive).
    sample_rate: u32,
    /// Model name.
    model: String,
    /// Execution provider.
    provider: String,
    /// The worker's state, if active.
    state: Option<WorkerState>,
    /// The worker's message (why it failed, or what it fell back to).
    message: String,
    /// Worker load as a fraction of real time.
    load: f32,
    /// Masks that came late.
    late_masks: u64,
    /// Mask columns per second (0 when inactive).
    columns_per_second: u32,
    /// Top frequency of the mask bands in Hz.
    top_hz: f32,
}

impl Snapshot {
    /// Reads the meters and the status (GUI thread; locks only mutexes the audio thread never
    /// touches).
    fn read(s: &Sources) -> Self {
        let m = &s.meters;
        let shared: Option<Arc<Shared>> = s
            .status
            .worker
            .lock()
            .ok()
            .and_then(|w| w.as_ref().cloned());
        let text = |m: &Mutex<String>| m.lock().map(|s| s.clone()).unwrap_or_default();
        Self {
            input_db: m.input_db.load(Ordering::Relaxed),
            output_db: m.output_db.load(Ordering::Relaxed),
            reduction_db: m.reduction_db.load(Ordering::Relaxed),
            latency: s.status.latency.load(Ordering::Relaxed),
            sample_rate: s.status.sample_rate.load(Ordering::Relaxed),
            model: text(&s.status.model),
            // What the worker really runs on, once it has loaded the model.
            provider: shared
                .as_ref()
                .map(|w| w.provider())
                .filter(|p| !p.is_empty())
                .unwrap_or_else(|| text(&s.status.provider)),
            state: shared.as_ref().map(|w| w.state()),
            message: shared.as_ref().map(|w| w.message()).unwrap_or_default(),
            load: shared
                .as_ref()
                .map_or(0.0, |w| w.worker_load.load(Ordering::Relaxed)),
            late_masks: shared
                .as_ref()
                .map_or(0, |w| w.late_masks.load(Ordering::Relaxed)),
            columns_per_second: m.columns_per_second.load(Ordering::Relaxed),
            top_hz: m.top_hz.load(Ordering::Relaxed),
        }
    }

    /// Latency in milliseconds, if active.
    fn latency_ms(&self) -> Option<f64> {
        (self.sample_rate > 0).then(|| self.latency as f64 * 1000.0 / self.sample_rate as f64)
    }
}

/// How serious a banner is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// Something to know (loading, inactive).
    Info,
    /// Audio is processed but something is degraded (overload, fallback).
    Warning,
    /// Audio passes through unprocessed.
    Error,
}

/// One status banner: a title and the details (which say how to fix it where there is a fix).
#[derive(Debug, Clone, PartialEq)]
pub struct Banner {
    /// How serious it is.
    pub severity: Severity,
    /// A short title.
    pub title: String,
    /// The details.
    pub text: String,
}

/// The banners for a worker state, its message, its load (fraction of real time), the
/// execution provider and the late mask count. Empty when all is well.
pub fn banners_for(
    state: Option<WorkerState>,
    message: &str,
    load: f32,
    provider: &str,
    late_masks: u64,
) -> Vec<Banner> {
    let banner = |severity, title: &str, text: String| Banner {
        severity,
        title: title.into(),
        text,
    };
    let mut out = Vec::new();
    match state {
        None => out.push(banner(
            Severity::Info,
            "Inactive",
            "The host has not started processing yet.".into(),
        )),
        Some(WorkerState::Starting) => out.push(banner(
            Severity::Info,
            "Loading the model",
            "Audio passes through (delayed) until the model is ready.".into(),
        )),
        Some(WorkerState::Stopped) => out.push(banner(
            Severity::Info,
            "Stopped",
            "The worker is stopped.".into(),
        )),
        Some(WorkerState::Failed) => {
            let title = if message.starts_with("ONNX Runtime") {
                "ONNX Runtime missing: audio passes through unprocessed"
            } else if message.contains("model graph") || message.contains("model file") {
                "Model failed to load: audio passes through unprocessed"
            } else {
                "The model worker failed: audio passes through unprocessed"
            };
            out.push(banner(Severity::Error, title, message.to_string()));
        }
        Some(WorkerState::Running) => {
            if is_fallback(message) {
                out.push(banner(
                    Severity::Warning,
                    "GPU fallback",
                    message.to_string(),
                ));
            } else if !message.is_empty() {
                out.push(banner(Severity::Warning, "Note", message.to_string()));
            }
        }
    }
    if state == Some(WorkerState::Running) && load > LOAD_WARNING {
        out.push(banner(
            Severity::Warning,
            "Worker overloaded",
            format!(
                "The model needs {:.0} % of real time; masks may come late ({late_masks} so far) \
                 and the last good one is reused. Close other instances or raise the buffer size.",
                load * 100.0
            ),
        ));
    }
    if is_fallback(provider) && !is_fallback(message) {
        out.push(banner(
            Severity::Warning,
            "GPU fallback",
            provider.to_string(),
        ));
    }
    out
}

/// Whether a status text says that a GPU provider could not start and the CPU runs instead.
fn is_fallback(text: &str) -> bool {
    let t = text.to_ascii_lowercase();
    t.contains("running on the cpu") || t.contains("fallback") || t.contains("fell back")
}

/// Colours of the UI.
mod palette {
    use egui::Color32;
    /// Panel backgrounds.
    pub const PANEL: Color32 = Color32::from_rgb(0x1c, 0x1f, 0x26);
    /// Meter troughs.
    pub const TROUGH: Color32 = Color32::from_rgb(0x2a, 0x2e, 0x38);
    /// Quiet levels.
    pub const GREEN: Color32 = Color32::from_rgb(0x3d, 0xc2, 0x6b);
    /// Levels near full scale.
    pub const YELLOW: Color32 = Color32::from_rgb(0xe6, 0xc2, 0x3a);
    /// Levels over full scale; errors.
    pub const RED: Color32 = Color32::from_rgb(0xe0, 0x4a, 0x3f);
    /// Reduction.
    pub const REDUCTION: Color32 = Color32::from_rgb(0x4a, 0x9e, 0xe8);
    /// Info banners.
    pub const INFO: Color32 = Color32::from_rgb(0x2b, 0x4a, 0x6f);
    /// Warning banners.
    pub const WARNING: Color32 = Color32::from_rgb(0x7a, 0x5a, 0x12);
    /// Error banners.
    pub const ERROR: Color32 = Color32::from_rgb(0x84, 0x24, 0x24);
    /// Secondary text.
    pub const DIM: Color32 = Color32::from_rgb(0x9a, 0xa0, 0xac);
    /// Grid lines on the spectrogram.
    pub const GRID: Color32 = Color32::from_rgba_premultiplied(0x50, 0x50, 0x50, 0x50);
}

/// A framed group with a title.
fn group(ui: &mut Ui, title: &str, add: impl FnOnce(&mut Ui)) {
    egui::Frame::new()
        .fill(palette::PANEL)
        .corner_radius(4)
        .inner_margin(egui::Margin::same(8))
        .show(ui, |ui| {
            ui.set_width(ui.available_width());
            ui.set_min_height(GROUP_HEIGHT);
            ui.label(RichText::new(title).strong());
            ui.add_space(2.0);
            add(ui);
        });
}

/// The title line.
fn header(ui: &mut Ui, s: &Snapshot) {
    ui.horizontal(|ui| {
        ui.label(RichText::new("Voxsift").size(20.0).strong());
        ui.label(RichText::new("speech isolation").color(palette::DIM));
        ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
            let (text, colour) = match s.state {
                Some(WorkerState::Running) => ("running", palette::GREEN),
                Some(WorkerState::Starting) => ("loading the model", palette::YELLOW),
                Some(WorkerState::Failed) => ("passing audio through", palette::RED),
                Some(WorkerState::Stopped) => ("stopped", palette::DIM),
                None => ("inactive", palette::DIM),
            };
            ui.label(RichText::new(text).color(colour));
            let (dot, _) = ui.allocate_exact_size(vec2(10.0, 10.0), Sense::hover());
            ui.painter().circle_filled(dot.center(), 4.5, colour);
        });
    });
}

/// The status banners, if any.
fn banners(ui: &mut Ui, s: &Snapshot) {
    for b in banners_for(s.state, &s.message, s.load, &s.provider, s.late_masks) {
        let fill = match b.severity {
            Severity::Info => palette::INFO,
            Severity::Warning => palette::WARNING,
            Severity::Error => palette::ERROR,
        };
        egui::Frame::new()
            .fill(fill)
            .corner_radius(4)
            .inner_margin(egui::Margin::symmetric(10, 6))
            .show(ui, |ui| {
                ui.set_width(ui.available_width());
                ui.label(RichText::new(&b.title).strong().color(Color32::WHITE));
                ui.label(RichText::new(&b.text).color(Color32::from_gray(230)));
            });
    }
}

/// A control for every parameter.
fn controls(ui: &mut Ui, p: &VoxsiftParams, setter: &ParamSetter) {
    let label_width = 74.0;
    let slider_width = (ui.available_width() - label_width - 72.0).max(60.0);
    let row = |ui: &mut Ui, name: &str, add: &mut dyn FnMut(&mut Ui)| {
        ui.horizontal(|ui| {
            let (rect, _) = ui.allocate_exact_size(
                vec2(label_width, ui.spacing().interact_size.y),
                Sense::hover(),
            );
            ui.painter().text(
                rect.left_center(),
                Align2::LEFT_CENTER,
                name,
                FontId::proportional(14.0),
                ui.visuals().text_color(),
            );
            add(ui);
        });
    };
    row(ui, "Wet", &mut |ui| {
        ui.add(ParamSlider::for_param(&p.wet, setter).with_width(slider_width));
    });
    row(ui, "Beta", &mut |ui| {
        ui.add(ParamSlider::for_param(&p.beta, setter).with_width(slider_width));
    });
    row(ui, "Floor", &mut |ui| {
        ui.add(ParamSlider::for_param(&p.floor_db, setter).with_width(slider_width));
    });
    row(ui, "Output", &mut |ui| {
        ui.add(ParamSlider::for_param(&p.gain_db, setter).with_width(slider_width));
    });
    row(ui, "Device", &mut |ui| {
        ui.add(ParamSlider::for_param(&p.device, setter).with_width(slider_width));
    });
    row(ui, "Preset", &mut |ui| {
        ui.add(ParamSlider::for_param(&p.preset, setter).with_width(slider_width));
    });
    ui.horizontal(|ui| {
        toggle(ui, setter, &p.link, "Link channels");
        toggle(ui, setter, &p.bypass, "Bypass");
    });
    ui.label(
        RichText::new("Double-click a slider to reset it; click its value to type one.")
            .small()
            .color(palette::DIM),
    );
}

/// A checkbox for a boolean parameter, set through the host's begin/set/end gesture.
fn toggle(ui: &mut Ui, setter: &ParamSetter, param: &BoolParam, label: &str) {
    let mut value = param.value();
    let response = ui.checkbox(&mut value, label).on_hover_text(format!(
        "Default: {}",
        if param.default_plain_value() {
            "on"
        } else {
            "off"
        }
    ));
    if response.changed() {
        setter.begin_set_parameter(param);
        setter.set_parameter(param, value);
        setter.end_set_parameter(param);
    }
}

/// Input, output and reduction meters.
fn levels(ui: &mut Ui, s: &Snapshot) {
    level_row(ui, "In", s.input_db);
    level_row(ui, "Out", s.output_db);
    let reduction = (-s.reduction_db).clamp(0.0, REDUCTION_RANGE_DB);
    meter_row(
        ui,
        "Reduction",
        reduction / REDUCTION_RANGE_DB,
        palette::REDUCTION,
        &format!("{:.1} dB", s.reduction_db.min(0.0)),
    );
    let load_colour = if s.load > LOAD_WARNING {
        palette::RED
    } else {
        palette::GREEN
    };
    meter_row(
        ui,
        "Worker load",
        s.load,
        load_colour,
        &format!("{:.0} %", s.load * 100.0),
    );
    ui.label(
        RichText::new(format!(
            "Peak {METER_MIN_DB:.0}…+{METER_MAX_DB:.0} dBFS; reduction 0…{REDUCTION_RANGE_DB:.0} dB; \
             worker load in % of real time."
        ))
        .small()
        .color(palette::DIM),
    );
}

/// A level meter row in dBFS.
fn level_row(ui: &mut Ui, name: &str, db: f32) {
    let fraction = (db - METER_MIN_DB) / (METER_MAX_DB - METER_MIN_DB);
    let colour = if db > 0.0 {
        palette::RED
    } else if db > -6.0 {
        palette::YELLOW
    } else {
        palette::GREEN
    };
    let text = if db <= FLOOR_DB + 0.5 {
        "-inf dBFS".to_string()
    } else {
        format!("{db:.1} dBFS")
    };
    meter_row(ui, name, fraction, colour, &text);
}

/// A labelled horizontal bar filled to `fraction`, with a value text.
fn meter_row(ui: &mut Ui, name: &str, fraction: f32, colour: Color32, text: &str) {
    ui.horizontal(|ui| {
        let h = ui.spacing().interact_size.y;
        let (label, _) = ui.allocate_exact_size(vec2(70.0, h), Sense::hover());
        ui.painter().text(
            label.left_center(),
            Align2::LEFT_CENTER,
            name,
            FontId::proportional(14.0),
            ui.visuals().text_color(),
        );
        let width =
            (ui.available_width() - METER_TEXT_WIDTH - ui.spacing().item_spacing.x).max(40.0);
        let (bar, _) = ui.allocate_exact_size(vec2(width, h * 0.7), Sense::hover());
        let (value, _) = ui.allocate_exact_size(vec2(METER_TEXT_WIDTH, h), Sense::hover());
        let painter = ui.painter();
        painter.rect_filled(bar, 2, palette::TROUGH);
        let f = fraction.clamp(0.0, 1.0);
        if f > 0.0 {
            let filled = Rect::from_min_size(bar.min, vec2(bar.width() * f, bar.height()));
            painter.rect_filled(filled, 2, colour);
        }
        painter.text(
            value.right_center(),
            Align2::RIGHT_CENTER,
            text,
            FontId::monospace(12.5),
            ui.visuals().text_color(),
        );
    });
}

/// Latency, model, provider, load and late masks.
fn engine_info(ui: &mut Ui, s: &Snapshot) {
    let dash = || "—".to_string();
    let latency = match s.latency_ms() {
        Some(ms) => format!("{ms:.1} ms ({} samples)", s.latency),
        None => dash(),
    };
    let text = |s: &str| {
        if s.is_empty() {
            dash()
        } else {
            s.to_string()
        }
    };
    egui::Grid::new("voxsift-engine")
        .num_columns(2)
        .spacing(vec2(10.0, 4.0))
        .show(ui, |ui| {
            let row = |ui: &mut Ui, k: &str, v: String| {
                ui.label(RichText::new(k).color(palette::DIM));
                ui.label(v);
                ui.end_row();
            };
            row(ui, "Latency", latency);
            row(ui, "Model", text(&s.model));
            row(ui, "Provider", text(&s.provider));
            row(
                ui,
                "Rate",
                if s.sample_rate > 0 {
                    format!("{} Hz", s.sample_rate)
                } else {
                    dash()
                },
            );
            ui.label(RichText::new("Late masks").color(palette::DIM));
            let colour = if s.late_masks > 0 {
                palette::YELLOW
            } else {
                ui.visuals().text_color()
            };
            ui.label(RichText::new(s.late_masks.to_string()).color(colour));
            ui.end_row();
        });
}

/// The scrolling mask display: a ring of [`HISTORY`] columns of [`BANDS`] texels in a texture
/// (band 0, the lowest, at the bottom), written where the ring's head is.
struct Spectrogram {
    /// The ring of columns.
    texture: TextureHandle,
    /// The column the next mask column goes to (the oldest one).
    head: usize,
    /// Columns popped from the meters.
    scratch: Vec<f32>,
    /// Colour of each mask value, 0 (removed) to 1 (kept) in 256 steps.
    lut: Vec<Color32>,
}

impl Spectrogram {
    /// Allocates the ring (on the window's context) and drops columns that are already waiting.
    fn new(ctx: &egui::Context, meters: &Meters) -> Self {
        let options = TextureOptions {
            wrap_mode: egui::TextureWrapMode::Repeat,
            ..TextureOptions::LINEAR
        };
        let texture = ctx.load_texture(
            "voxsift-mask",
            ColorImage::filled([HISTORY, BANDS], palette::TROUGH),
            options,
        );
        let mut scratch = vec![0.0; POP_COLUMNS * BANDS];
        while meters.pop_columns(&mut scratch) > 0 {}
        Self {
            texture,
            head: 0,
            scratch,
            lut: (0..256).map(|i| mask_colour(i as f32 / 255.0)).collect(),
        }
    }

    /// Moves the columns that arrived into the ring.
    fn pull(&mut self, meters: &Meters) {
        loop {
            let n = meters.pop_columns(&mut self.scratch);
            if n == 0 {
                break;
            }
            let mut done = 0;
            while done < n {
                let run = (n - done).min(HISTORY - self.head);
                let mut pixels = vec![Color32::BLACK; run * BANDS];
                for c in 0..run {
                    let column = &self.scratch[(done + c) * BANDS..(done + c + 1) * BANDS];
                    for (b, v) in column.iter().enumerate() {
                        let i = (v.clamp(0.0, 1.0) * 255.0).round() as usize;
                        pixels[(BANDS - 1 - b) * run + c] = self.lut[i];
                    }
                }
                self.texture.set_partial(
                    [self.head, 0],
                    ColorImage::new([run, BANDS], pixels),
                    TextureOptions {
                        wrap_mode: egui::TextureWrapMode::Repeat,
                        ..TextureOptions::LINEAR
                    },
                );
                self.head = (self.head + run) % HISTORY;
                done += run;
            }
            if n < POP_COLUMNS {
                break;
            }
        }
    }

    /// Draws the ring, oldest on the left, with a log-frequency axis, a time axis and a legend.
    fn show(&self, ui: &mut Ui, s: &Snapshot) {
        ui.horizontal(|ui| {
            ui.label(RichText::new("Mask").strong());
            ui.label(
                RichText::new("what is kept (bright) and removed (dark), per frequency over time")
                    .color(palette::DIM),
            );
            ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
                self.legend(ui);
            });
        });
        let axis_left = 44.0;
        let axis_bottom = 18.0;
        let size = ui.available_size();
        let (outer, _) = ui.allocate_exact_size(
            vec2(size.x.max(100.0), (size.y - 14.0).max(80.0)),
            Sense::hover(),
        );
        let plot = Rect::from_min_max(
            pos2(outer.left() + axis_left, outer.top()),
            pos2(outer.right(), outer.bottom() - axis_bottom),
        );
        let painter = ui.painter_at(outer);
        painter.rect_filled(plot, 0, palette::TROUGH);
        // Oldest columns (head..HISTORY) first, then the newest (0..head).
        let h = HISTORY as f32;
        let split = plot.left() + plot.width() * (h - self.head as f32) / h;
        let u0 = self.head as f32 / h;
        painter.image(
            self.texture.id(),
            Rect::from_min_max(plot.min, pos2(split, plot.bottom())),
            Rect::from_min_max(pos2(u0, 0.0), pos2(1.0, 1.0)),
            Color32::WHITE,
        );
        if self.head > 0 {
            painter.image(
                self.texture.id(),
                Rect::from_min_max(pos2(split, plot.top()), plot.max),
                Rect::from_min_max(pos2(0.0, 0.0), pos2(u0, 1.0)),
                Color32::WHITE,
            );
        }
        let font = FontId::proportional(11.0);
        let dim = palette::DIM;
        // Frequency axis: the bands are log-spaced from LOW_HZ to top_hz.
        let top = (s.top_hz as f64).max(LOW_HZ * 2.0);
        let (lo, hi) = (LOW_HZ.ln(), top.ln());
        for (hz, label) in [
            (100.0, "100"),
            (200.0, "200"),
            (500.0, "500"),
            (1000.0, "1k"),
            (2000.0, "2k"),
            (5000.0, "5k"),
            (10000.0, "10k"),
            (20000.0, "20k"),
        ] {
            if hz >= top {
                continue;
            }
            let f = ((f64::ln(hz) - lo) / (hi - lo)) as f32;
            let y = plot.bottom() - f * plot.height();
            painter.hline(plot.x_range(), y, Stroke::new(1.0, palette::GRID));
            painter.text(
                pos2(plot.left() - 4.0, y),
                Align2::RIGHT_CENTER,
                label,
                font.clone(),
                dim,
            );
        }
        painter.text(
            pos2(plot.left() - 4.0, plot.bottom() + 3.0),
            Align2::RIGHT_TOP,
            "Hz",
            font.clone(),
            dim,
        );
        // Time axis: newest on the right.
        if s.columns_per_second > 0 {
            let span = h / s.columns_per_second as f32;
            let mut t = 0.0f32;
            while t <= span {
                let x = plot.right() - t / span * plot.width();
                if x < plot.left() + 16.0 {
                    break;
                }
                painter.vline(x, plot.y_range(), Stroke::new(1.0, palette::GRID));
                let label = if t == 0.0 {
                    "now".to_string()
                } else {
                    format!("-{t:.0} s")
                };
                painter.text(
                    pos2(x, plot.bottom() + 3.0),
                    if t == 0.0 {
                        Align2::RIGHT_TOP
                    } else {
                        Align2::CENTER_TOP
                    },
                    label,
                    font.clone(),
                    dim,
                );
                t += 1.0;
            }
        } else {
            painter.text(
                plot.center(),
                Align2::CENTER_CENTER,
                "no audio: the plugin is not processing",
                FontId::proportional(14.0),
                dim,
            );
        }
        painter.rect_stroke(plot, 0, Stroke::new(1.0, palette::GRID), StrokeKind::Inside);
    }

    /// A small colour bar from removed to kept.
    fn legend(&self, ui: &mut Ui) {
        ui.label(RichText::new("kept").color(palette::DIM));
        let (rect, _) = ui.allocate_exact_size(vec2(120.0, 10.0), Sense::hover());
        let steps = 24;
        for i in 0..steps {
            let x0 = rect.left() + rect.width() * i as f32 / steps as f32;
            let x1 = rect.left() + rect.width() * (i + 1) as f32 / steps as f32;
            let v = i as f32 / (steps - 1) as f32;
            ui.painter().rect_filled(
                Rect::from_min_max(pos2(x0, rect.top()), pos2(x1 + 0.5, rect.bottom())),
                0,
                mask_colour(v),
            );
        }
        ui.label(RichText::new("removed").color(palette::DIM));
    }
}

/// The colour of a mask value: dark blue-black (removed) through purple and orange to pale
/// yellow (kept).
pub fn mask_colour(v: f32) -> Color32 {
    const STOPS: [(f32, [f32; 3]); 5] = [
        (0.0, [10.0, 12.0, 30.0]),
        (0.25, [72.0, 18.0, 110.0]),
        (0.5, [170.0, 40.0, 110.0]),
        (0.75, [240.0, 120.0, 40.0]),
        (1.0, [252.0, 240.0, 150.0]),
    ];
    let v = if v.is_finite() {
        v.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let mut i = 0;
    while i + 2 < STOPS.len() && v > STOPS[i + 1].0 {
        i += 1;
    }
    let (a, ca) = STOPS[i];
    let (b, cb) = STOPS[i + 1];
    let t = ((v - a) / (b - a)).clamp(0.0, 1.0);
    let mix = |k: usize| (ca[k] + (cb[k] - ca[k]) * t).round() as u8;
    Color32::from_rgb(mix(0), mix(1), mix(2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn banners_say_what_is_wrong() {
        assert!(banners_for(Some(WorkerState::Running), "", 0.3, "CPU", 0).is_empty());
        let b = banners_for(
            Some(WorkerState::Failed),
            "ONNX Runtime library not found (looked in: x); to fix: run `cargo xtask fetch-runtime`",
            0.0,
            "CPU",
            0,
        );
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].severity, Severity::Error);
        assert!(b[0].title.contains("ONNX Runtime missing"));
        assert!(b[0].text.contains("cargo xtask fetch-runtime"));
        let b = banners_for(
            Some(WorkerState::Failed),
            "model graph `enc` could not be loaded: bad",
            0.0,
            "CPU",
            0,
        );
        assert!(b[0].title.contains("Model failed to load"));
        let b = banners_for(Some(WorkerState::Running), "", 0.93, "CPU", 7);
        assert_eq!(b[0].title, "Worker overloaded");
        assert!(b[0].text.contains("93 %") && b[0].text.contains("7 so far"));
        let b = banners_for(
            Some(WorkerState::Running),
            "CUDA could not start, running on the CPU: this ONNX Runtime build has no CUDA provider",
            0.2,
            "CPU",
            0,
        );
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].title, "GPU fallback");
        assert!(b[0].text.contains("no CUDA provider"));
        assert_eq!(
            banners_for(None, "", 0.0, "", 0)[0].severity,
            Severity::Info
        );
    }

    #[test]
    fn mask_colours_go_from_dark_to_bright() {
        let lum = |c: Color32| c.r() as u32 + c.g() as u32 + c.b() as u32;
        let mut last = 0;
        for i in 0..=20 {
            let l = lum(mask_colour(i as f32 / 20.0));
            assert!(l + 40 >= last, "colour map should brighten");
            last = l;
        }
        assert!(lum(mask_colour(1.0)) > 3 * lum(mask_colour(0.0)));
    }
}

/// Opening and closing the editor in a real window, as a host does, while audio runs. Needs an
/// X server, so it is ignored by default: `tools/editor/open-close.sh` runs it under Xvfb.
#[cfg(all(test, target_os = "linux"))]
mod window_tests {
    use super::*;
    use crate::Voxsift;
    use nice_plug::context::gui::GuiContextInner;
    use nice_plug::context::process::{SendEventError, Transport};
    use nice_plug::editor::{EditorHandle, HostCallbacks, HostMainThreadCaller};
    use nice_plug::prelude::{
        ActivateContext, AuxiliaryBuffers, Buffer, BufferConfig, ParamPtr, Plugin, PluginApi,
        PluginNoteEvent, PluginState, ProcessContext, ProcessMode,
    };
    use std::ffi::c_ulong;
    use std::sync::atomic::AtomicBool;
    use std::time::Instant;
    use x11rb::connection::Connection;
    use x11rb::protocol::xproto::{ConnectionExt, CreateWindowAux, WindowClass};

    /// Cycles of opening and closing.
    const CYCLES: usize = 20;
    /// Sample rate and block size of the simulated audio thread.
    const RATE: u32 = 48_000;
    /// Block size of the simulated audio thread.
    const BLOCK: usize = 512;

    /// The GUI side of a host: accepts parameter gestures.
    struct TestGui;

    impl GuiContextInner for TestGui {
        fn plugin_api(&self) -> PluginApi {
            PluginApi::Clap
        }
        unsafe fn raw_begin_set_parameter(&self, _param: ParamPtr) {}
        unsafe fn raw_set_parameter_normalized(&self, _param: ParamPtr, _normalized: f32) {}
        unsafe fn raw_end_set_parameter(&self, _param: ParamPtr) {}
        fn get_state(&self) -> PluginState {
            PluginState {
                version: String::new(),
                params: Default::default(),
                fields: Default::default(),
            }
        }
        fn set_state(&self, _state: PluginState) {}
        fn request_restart(&self) {}
    }

    /// Host callbacks: resizes are accepted.
    struct TestCallbacks;

    impl HostCallbacks for TestCallbacks {
        fn request_resize(
            &mut self,
            _new_size: nice_plug::editor::dpi::Size,
            _scale_factor: f64,
        ) -> Result<(), Box<dyn Error>> {
            Ok(())
        }
        fn destroyed(&mut self) {}
    }

    /// Flags that the window thread wants a main-thread callback.
    struct TestCaller(Arc<AtomicBool>);

    impl HostMainThreadCaller for TestCaller {
        fn call_main_thread(&mut self) {
            self.0.store(true, Ordering::Release);
        }
    }

    /// The audio side of a host (activation and processing).
    struct TestAudio {
        /// The transport handed to the plugin.
        transport: Transport,
    }

    impl ActivateContext<Voxsift> for TestAudio {
        fn plugin_api(&self) -> PluginApi {
            PluginApi::Clap
        }
        fn execute(&self, _task: ()) {}
        fn set_latency_samples(&self, _samples: u32) {}
        fn set_current_voice_capacity(&self, _capacity: u32) {}
    }

    impl ProcessContext<Voxsift> for TestAudio {
        fn plugin_api(&self) -> PluginApi {
            PluginApi::Clap
        }
        fn execute_background(&self, _task: ()) {}
        fn execute_gui(&self, _task: ()) {}
        fn transport(&self) -> &Transport {
            &self.transport
        }
        fn next_event(&mut self) -> Option<PluginNoteEvent<Voxsift>> {
            None
        }
        fn try_send_event(
            &mut self,
            _event: PluginNoteEvent<Voxsift>,
        ) -> Result<(), (PluginNoteEvent<Voxsift>, SendEventError)> {
            Ok(())
        }
        fn set_latency_samples(&self, _samples: u32) {}
        fn request_restart(&self) {}
        fn set_current_voice_capacity(&self, _capacity: u32) {}
    }

    /// Resident memory of this process in KiB.
    fn rss_kib() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    /// Threads of this process.
    fn threads() -> usize {
        std::fs::read_dir("/proc/self/task").map_or(0, |d| d.count())
    }

    /// Runs the plugin on its own thread at the pace of real time (a chirp over noise) until
    /// `stop` is set; returns it deactivated.
    fn run_audio(mut plugin: Voxsift, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Voxsift> {
        std::thread::spawn(move || {
            let mut ctx = TestAudio {
                transport: Transport::new(RATE as f32),
            };
            let layout = Voxsift::AUDIO_IO_LAYOUTS[0];
            let config = BufferConfig {
                sample_rate: RATE as f32,
                min_buffer_size: None,
                max_buffer_size: BLOCK as u32,
                process_mode: ProcessMode::Realtime,
            };
            assert!(plugin.activate(&layout, &config, &mut ctx));
            plugin.reset();
            let mut left = vec![0.0f32; BLOCK];
            let mut right = vec![0.0f32; BLOCK];
            let (mut n, mut seed) = (0u64, 1u32);
            let start = Instant::now();
            let mut blocks = 0u32;
            while !stop.load(Ordering::Acquire) {
                for (l, r) in left.iter_mut().zip(right.iter_mut()) {
                    let t = n as f32 / RATE as f32;
                    seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    let noise = (seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5;
                    let tone = (std::f32::consts::TAU * (200.0 + 300.0 * (t % 3.0)) * t).sin();
                    *l = 0.3 * tone + 0.1 * noise;
                    *r = *l;
                    n += 1;
                }
                let mut buffer = Buffer::default();
                // SAFETY: the slices outlive the call to `process`.
                unsafe {
                    buffer.set_slices(BLOCK, |s| {
                        s.clear();
                        s.push(&mut left);
                        s.push(&mut right);
                    });
                }
                let mut aux = AuxiliaryBuffers {
                    inputs: &mut [],
                    outputs: &mut [],
                };
                plugin.process(&mut buffer, &mut aux, &mut ctx);
                drop(buffer);
                blocks += 1;
                let due =
                    start + Duration::from_secs_f64(blocks as f64 * BLOCK as f64 / RATE as f64);
                std::thread::sleep(due.saturating_duration_since(Instant::now()));
            }
            plugin.deactivate();
            plugin
        })
    }

    #[test]
    #[ignore = "needs an X server; run tools/editor/open-close.sh"]
    fn open_and_close_while_audio_runs() {
        let (conn, screen) = x11rb::connect(None).expect("an X server (DISPLAY)");
        let root = conn.setup().roots[screen].root;
        let parent = conn.generate_id().expect("an X id");
        conn.create_window(
            x11rb::COPY_DEPTH_FROM_PARENT,
            parent,
            root,
            0,
            0,
            1100,
            800,
            0,
            WindowClass::INPUT_OUTPUT,
            0,
            &CreateWindowAux::new(),
        )
        .expect("create_window");
        conn.map_window(parent).expect("map_window");
        conn.flush().expect("flush");

        let plugin = Voxsift::default();
        let editor = plugin.create_editor();
        let params = plugin.params.clone();
        let meters = plugin.meters();
        let stop = Arc::new(AtomicBool::new(false));
        let audio = run_audio(plugin, stop.clone());
        // Let the worker start before counting threads.
        std::thread::sleep(Duration::from_secs(2));
        let threads_before = threads();
        let mut rss = Vec::new();
        let mut frames = Vec::new();
        for cycle in 0..CYCLES {
            let called = Arc::new(AtomicBool::new(false));
            let spawned = editor
                .spawn(
                    None,
                    true,
                    None,
                    GuiContext::new(Arc::new(TestGui)),
                    Some(HostMethods {
                        callbacks: Box::new(TestCallbacks),
                        main_thread_caller: Box::new(TestCaller(called.clone())),
                    }),
                )
                .expect("the editor opens");
            let window = &spawned.window;
            spawned
                .handle
                .set_parent(ParentWindowHandle::XlibWindow(parent as c_ulong), window)
                .expect("set_parent");
            spawned.handle.show(window).expect("show");
            assert!(params.editor_state.is_open());
            if cycle == CYCLES / 2 {
                // The host resizes the window: the new size is what the state saves.
                spawned
                    .handle
                    .set_size(NativeSize::new(1000, 700), window)
                    .expect("set_size");
            }
            let drawn = editor.frames_drawn();
            let t0 = Instant::now();
            while t0.elapsed() < Duration::from_millis(400)
                || (editor.frames_drawn() < drawn + 5 && t0.elapsed() < Duration::from_secs(10))
            {
                if called.swap(false, Ordering::AcqRel) {
                    spawned.handle.host_main_thread_callback(window);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            frames.push(editor.frames_drawn() - drawn);
            drop(spawned);
            assert!(!params.editor_state.is_open());
            // The window thread and the GL context's threads go away with the window.
            let t0 = Instant::now();
            while threads() > threads_before && t0.elapsed() < Duration::from_secs(5) {
                std::thread::sleep(Duration::from_millis(10));
            }
            assert_eq!(
                threads(),
                threads_before,
                "threads left after close {cycle}"
            );
            rss.push(rss_kib());
        }
        stop.store(true, Ordering::Release);
        let plugin = audio.join().expect("the audio thread");
        drop(plugin);
        let saved = params.editor_state.saved();
        println!("frames drawn per open: {frames:?}");
        println!("resident memory after each close (KiB): {rss:?}");
        println!(
            "threads while closed: {threads_before}; saved size: {}x{} (zoom {})",
            saved.width, saved.height, saved.zoom
        );
        println!(
            "mask columns per second: {}",
            meters.columns_per_second.load(Ordering::Relaxed)
        );
        assert!(
            frames.iter().all(|&f| f >= 5),
            "every open draws: {frames:?}"
        );
        assert_eq!((saved.width, saved.height), (1000.0, 700.0));
        // Memory settles after the first opens (GL driver, fonts); later cycles must not grow.
        let growth = rss[CYCLES - 1] as i64 - rss[4] as i64;
        assert!(
            growth < 8 * 1024,
            "memory grew by {growth} KiB over cycles 5..{CYCLES}"
        );
    }
}
