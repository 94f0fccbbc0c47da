//! The plugin's parameters. The engine ramps wet and output gain over 20 ms and beta and the
//! floor per STFT frame, so values are read unsmoothed here and handed to it; with sample
//! accurate automation the host's block is split at each change.

use crate::editor_state::EditorState;
use nice_plug::prelude::*;
use voxsift_engine::{ChannelMode, EngineParams};
use voxsift_models::runtime::Provider;

/// The bottom of the floor range, shown as "Off": no floor at all.
pub const FLOOR_OFF_DB: f32 = -80.0;

/// Everything the host can automate and save. Allocated once when the plugin is created.
#[derive(Params)]
pub struct VoxsiftParams {
    /// Wet/dry mix, 0..=1 (shown in %).
    #[id = "wet"]
    pub wet: FloatParam,
    /// Mask sharpness on the power ratio, 0.5..=4 (1 = the model's mask as it is).
    #[id = "beta"]
    pub beta: FloatParam,
    /// Attenuation floor in dB; [`FLOOR_OFF_DB`] means off.
    #[id = "floor"]
    pub floor_db: FloatParam,
    /// One mask for all channels (from their mean) instead of one per channel.
    #[id = "link"]
    pub link: BoolParam,
    /// Output gain in dB.
    #[id = "gain"]
    pub gain_db: FloatParam,
    /// Click-free bypass that keeps the latency.
    #[id = "bypass"]
    pub bypass: BoolParam,
    /// Where the model runs; a change restarts the plugin's processing (not automatable).
    #[id = "device"]
    pub device: EnumParam<Device>,
    /// Which models run (Live or Studio); a change restarts the plugin's processing, since
    /// the latency changes (not automatable).
    #[id = "preset"]
    pub preset: EnumParam<Preset>,
    /// The editor's size and zoom, saved with the plugin state.
    #[persist = "editor-state"]
    pub editor_state: EditorState,
}

impl Default for VoxsiftParams {
    fn default() -> Self {
        let d = EngineParams::default();
        Self {
            wet: FloatParam::new("Wet", d.wet, FloatRange::Linear { min: 0.0, max: 1.0 })
                .with_unit(" %")
                .with_value_to_string(formatters::v2s_f32_percentage(0))
                .with_string_to_value(formatters::s2v_f32_percentage()),
            beta: FloatParam::new(
                "Beta",
                d.beta,
                FloatRange::Skewed {
                    min: 0.5,
                    max: 4.0,
                    factor: FloatRange::skew_factor(-1.0),
                },
            )
            .with_value_to_string(formatters::v2s_f32_rounded(2)),
            floor_db: FloatParam::new(
                "Floor",
                d.floor_db.unwrap_or(FLOOR_OFF_DB),
                FloatRange::Linear {
                    min: FLOOR_OFF_DB,
                    max: 0.0,
                },
            )
            // The unit is part of the text so that the bottom reads "Off", not "Off dB".
            .with_value_to_string(std::sync::Arc::new(|v| {
                if v <= FLOOR_OFF_DB {
                    "Off".into()
                } else {
                    format!("{v:.1} dB")
                }
            }))
            .with_string_to_value(std::sync::Arc::new(|s| {
                let s = s.trim();
                if s.eq_ignore_ascii_case("off") {
                    Some(FLOOR_OFF_DB)
                } else {
                    s.trim_end_matches("dB").trim().parse().ok()
                }
            })),
            link: BoolParam::new("Link channels", true),
            gain_db: FloatParam::new(
                "Output gain",
                d.output_gain_db,
                FloatRange::Linear {
                    min: -24.0,
                    max: 24.0,
                },
            )
            .with_unit(" dB")
            .with_step_size(0.1),
            bypass: BoolParam::new("Bypass", d.bypass).make_bypass(),
            device: EnumParam::new("Device", Device::Cpu).non_automatable(),
            preset: EnumParam::new("Preset", Preset::Live).non_automatable(),
            editor_state: EditorState::default(),
        }
    }
}

/// The execution provider choices, as a parameter.
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    /// ONNX Runtime's CPU provider.
    #[name = "CPU"]
    Cpu,
    /// NVIDIA CUDA (needs the GPU runtime in the bundle).
    #[name = "CUDA"]
    Cuda,
    /// Apple CoreML.
    #[name = "CoreML"]
    CoreMl,
    /// DirectML (Windows).
    #[name = "DirectML"]
    DirectMl,
}

impl Device {
    /// The runtime provider it stands for.
    pub fn provider(self) -> Provider {
        match self {
            Self::Cpu => Provider::Cpu,
            Self::Cuda => Provider::Cuda,
            Self::CoreMl => Provider::CoreMl,
            Self::DirectMl => Provider::DirectMl,
        }
    }
}

/// The model presets, as a parameter.
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    /// DeepFilterNet3 alone: the lowest latency.
    #[name = "Live"]
    Live,
    /// DeepFilterNet3 fused by max with a separator (`VOXSIFT_SEPARATOR`, by default
    /// `models/local/htdemucs`): more latency, better on music. Falls back to Live, saying
    /// why, when the separator is missing or cannot load.
    #[name = "Studio"]
    Studio,
}

impl Preset {
    /// The library preset it stands for.
    pub fn preset(self) -> voxsift_models::choice::Preset {
        match self {
            Self::Live => voxsift_models::choice::Preset::Live,
            Self::Studio => voxsift_models::choice::Preset::Studio,
        }
    }
}

impl VoxsiftParams {
    /// The engine settings these values stand for. Allocation-free (audio thread).
    pub fn engine_params(&self) -> EngineParams {
        let floor = self.floor_db.value();
        EngineParams {
            wet: self.wet.value(),
            beta: self.beta.value(),
            floor_db: (floor > FLOOR_OFF_DB).then_some(floor),
            output_gain_db: self.gain_db.value(),
            bypass: self.bypass.value(),
        }
    }

    /// The channel mode these values stand for.
    pub fn channel_mode(&self) -> ChannelMode {
        if self.link.value() {
            ChannelMode::Linked
        } else {
            ChannelMode::Independent
        }
    }
}
