//! `apply_mask` (word at a time) against `apply_mask_bytewise`, on a payload at an unaligned
//! address, masked in one call and in pieces the input chooses.
//!
//! Input: the key (4 bytes), the starting offset (u32: any position in a payload), the
//! misalignment of the payload in its buffer (0–7), a length-prefixed run of piece sizes, then
//! the payload.

use sockeye::frame::{apply_mask, apply_mask_bytewise};

use crate::input::{chunks, Cursor};

const GUARD: u8 = 0x5a;

pub fn run(data: &[u8]) {
    let mut input = Cursor::new(data);
    let key = input.array::<4>();
    let offset = input.u32() as usize;
    let start = usize::from(input.u8() & 7);
    let sizes = input.take_prefixed(15);
    let payload = input.rest();
    let end = start + payload.len();

    // Guard bytes on both sides catch a write outside the slice.
    let mut backing = vec![GUARD; start];
    backing.extend_from_slice(payload);
    backing.extend_from_slice(&[GUARD; 8]);

    let mut reference = backing.clone();
    let next = apply_mask_bytewise(&mut reference[start..end], key, offset);
    assert_eq!(next, (offset + payload.len()) % 4);
    for (i, (&masked, &plain)) in reference[start..end].iter().zip(payload).enumerate() {
        assert_eq!(masked, plain ^ key[(offset + i) % 4]);
    }

    let mut whole = backing.clone();
    assert_eq!(apply_mask(&mut whole[start..end], key, offset), next);
    assert_eq!(whole, reference, "one call");

    let mut pieced = backing.clone();
    let (mut pos, mut off) = (start, offset);
    for piece in chunks(sizes, payload) {
        off = apply_mask(&mut pieced[pos..pos + piece.len()], key, off);
        pos += piece.len();
    }
    assert_eq!(off, next);
    assert_eq!(pieced, reference, "in pieces");

    // Masking is an involution.
    apply_mask(&mut pieced[start..end], key, offset);
    assert_eq!(pieced, backing);
}
