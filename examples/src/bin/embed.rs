//! Placeholder until the embedding example lands.
fn main() {}
