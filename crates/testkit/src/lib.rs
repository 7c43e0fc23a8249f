//! Dev-only helpers for Ferry's tests.
