//! Payload masking (RFC 6455 §5.3): XOR with a 4-byte key, in place.
//!
//! The fast path works a machine word at a time on safe code (the compiler vectorises the loop);
//! [`apply_mask_bytewise`] is the obvious reference it is tested and fuzzed against.

/// XORs `buf` in place with `key`, where `buf[0]` is byte `offset` of the masked payload.
///
/// Returns the offset of the byte after `buf`, to continue a payload that arrives in pieces.
#[inline]
pub fn apply_mask(buf: &mut [u8], key: [u8; 4], offset: usize) -> usize {
    let shift = offset & 3;
    let key = [
        key[shift],
        key[(shift + 1) & 3],
        key[(shift + 2) & 3],
        key[(shift + 3) & 3],
    ];
    let wide = u64::from_ne_bytes([
        key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3],
    ]);
    let mut chunks = buf.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        chunk.copy_from_slice(&(u64::from_ne_bytes(word) ^ wide).to_ne_bytes());
    }
    // The remainder starts at a multiple of 8, so the key index restarts at 0.
    for (i, byte) in chunks.into_remainder().iter_mut().enumerate() {
        *byte ^= key[i & 3];
    }
    (offset + buf.len()) & 3
}

/// Byte-at-a-time reference for [`apply_mask`].
pub fn apply_mask_bytewise(buf: &mut [u8], key: [u8; 4], offset: usize) -> usize {
    for (i, byte) in buf.iter_mut().enumerate() {
        *byte ^= key[(offset + i) & 3];
    }
    (offset + buf.len()) & 3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_equals_reference_for_every_tail_and_offset() {
        let key = [0x37, 0xfa, 0x21, 0x3d];
        for len in 0..80 {
            for offset in 0..4 {
                let data: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
                let mut fast = data.clone();
                let mut slow = data.clone();
                let a = apply_mask(&mut fast, key, offset);
                let b = apply_mask_bytewise(&mut slow, key, offset);
                assert_eq!(fast, slow, "len {len} offset {offset}");
                assert_eq!(a, b);
            }
        }
    }

    #[test]
    fn unaligned_start_and_split_payload() {
        let key = [1, 2, 3, 4];
        let mut backing: Vec<u8> = (0..300u32).map(|i| i as u8).collect();
        let mut reference = backing.clone();
        apply_mask_bytewise(&mut reference[3..], key, 0);
        // Mask the same payload in three uneven pieces starting at an odd address.
        let payload = &mut backing[3..];
        let (a, rest) = payload.split_at_mut(5);
        let (b, c) = rest.split_at_mut(101);
        let off = apply_mask(a, key, 0);
        let off = apply_mask(b, key, off);
        apply_mask(c, key, off);
        assert_eq!(backing, reference);
    }

    #[test]
    fn rfc_example() {
        // RFC 6455 §5.7: "Hello" masked with 37 fa 21 3d.
        let mut data = *b"Hello";
        apply_mask(&mut data, [0x37, 0xfa, 0x21, 0x3d], 0);
        assert_eq!(data, [0x7f, 0x9f, 0x4d, 0x51, 0x58]);
    }
}
