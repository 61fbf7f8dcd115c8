//! System tests live in `tests/`; they run the built binaries (build them
//! first with `cargo build --workspace --bins --examples`).
