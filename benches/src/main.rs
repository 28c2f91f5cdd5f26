//! Placeholder binary; the benches live under `benches/`.
fn main() {}
