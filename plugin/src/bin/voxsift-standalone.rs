//! Voxsift as a standalone application with its editor, on nice-plug's standalone wrapper
//! (JACK, ALSA or a dummy backend; `--help` lists the options). Built with the `standalone`
//! feature. Used to try the editor without a host and to take its screenshot
//! (`tools/editor/screenshot.sh`).

use nice_plug::prelude::*;
use voxsift::Voxsift;

fn main() {
    if !nice_export_standalone::<Voxsift>() {
        std::process::exit(1);
    }
}
