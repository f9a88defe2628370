//! The frame layer: header codec and masking.

pub mod header;
pub mod mask;

pub use header::{FrameHeader, LengthOverflow, OpCode, MAX_HEADER_LEN};
pub use mask::{apply_mask, apply_mask_bytewise};
