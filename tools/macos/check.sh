#!/usr/bin/env bash
# Keeps macOS compiling without a Mac: `cargo check` and `cargo clippy -D warnings` of the
# plugin, the CLI and the xtask for aarch64-apple-darwin and x86_64-apple-darwin (rustup's
# standard libraries; no Apple SDK, so nothing is linked and no macOS binary is made or run).
# README.md, "Platforms", says what a Mac user runs and what has not been tested on a Mac.
set -euo pipefail
cd "$(dirname "$0")/../.."
for triple in aarch64-apple-darwin x86_64-apple-darwin; do
  rustup target list --installed | grep -qx "$triple" || rustup target add "$triple"
  echo "== $triple: cargo clippy (check) of the engine, models, app (CLI), plugin and xtask"
  cargo clippy -p voxsift-engine -p voxsift-models -p voxsift-app -p voxsift -p xtask --all-targets \
    --target "$triple" -- -D warnings
done
