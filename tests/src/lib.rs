//! End-to-end tests for Morpheus live in `tests/tests/`; this crate only hosts them.
