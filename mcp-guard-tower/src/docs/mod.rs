//! Design notes.

#[doc = include_str!("layer-order.md")]
pub mod layer_order {}
