//! Shared helpers for the host-level tests in `tests/tests/`.
