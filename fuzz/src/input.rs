//! Structured choices read off the fuzzer's bytes.

/// Reads values off the front of the input. Past the end every read yields zeros (or an empty
/// slice), so a target never has to handle "input too short" itself.
#[derive(Clone, Debug)]
pub struct Cursor<'a> {
    data: &'a [u8],
}

impl<'a> Cursor<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Cursor { data }
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn u8(&mut self) -> u8 {
        self.array::<1>()[0]
    }

    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.array())
    }

    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.array())
    }

    pub fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.array())
    }

    /// `N` bytes, zero-padded when the input runs out.
    pub fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        let got = self.take(N);
        out[..got.len()].copy_from_slice(got);
        out
    }

    /// Up to `n` bytes.
    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, tail) = self.data.split_at(n.min(self.data.len()));
        self.data = tail;
        head
    }

    /// A length byte (taken modulo `max + 1`) followed by that many bytes.
    pub fn take_prefixed(&mut self, max: usize) -> &'a [u8] {
        let n = usize::from(self.u8()) % (max + 1);
        self.take(n)
    }

    /// Everything left.
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.data)
    }
}

/// The piece size a control byte stands for: `0x00..=0x7f` are 0–127 bytes (0 is an empty
/// piece, which a driver must cope with), `0x80..=0xff` are 32–4096 bytes in steps of 32.
pub fn piece_size(b: u8) -> usize {
    if b & 0x80 == 0 {
        usize::from(b)
    } else {
        (usize::from(b & 0x7f) + 1) * 32
    }
}

/// Most pieces [`chunks`] makes: the rest of the data goes in the last one, so that a 64 KiB
/// input cut into 1-byte pieces does not make an execution a thousand times slower.
pub const MAX_PIECES: usize = 512;

/// Splits `data` into consecutive pieces whose sizes are read cyclically from `sizes` (see
/// [`piece_size`]). The pieces concatenate to `data`. No sizes: one piece. Only zero sizes: one
/// empty piece, then the rest in one piece. At most [`MAX_PIECES`].
pub fn chunks<'a>(sizes: &[u8], data: &'a [u8]) -> Vec<&'a [u8]> {
    if sizes.is_empty() || data.is_empty() {
        return vec![data];
    }
    let mut out = Vec::new();
    let mut rest = data;
    let mut zero_run = 0;
    for &b in sizes.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let mut n = piece_size(b).min(rest.len());
        if out.len() + 1 == MAX_PIECES {
            n = rest.len();
        } else if n == 0 {
            zero_run += 1;
            if zero_run > sizes.len() {
                n = rest.len();
            }
        } else {
            zero_run = 0;
        }
        let (piece, tail) = rest.split_at(n);
        out.push(piece);
        rest = tail;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_concatenate_to_the_input() {
        let data: Vec<u8> = (0..=255).collect();
        for sizes in [&[][..], &[0], &[1], &[0, 3], &[0x80], &[7, 0, 0x81, 2]] {
            let pieces = chunks(sizes, &data);
            assert_eq!(pieces.concat(), data, "{sizes:?}");
        }
        assert_eq!(chunks(&[0], &data).len(), 2);
        assert_eq!(chunks(&[1], &data).len(), 256);
        let long = vec![0u8; 4 * MAX_PIECES];
        let pieces = chunks(&[1], &long);
        assert_eq!(pieces.len(), MAX_PIECES);
        assert_eq!(pieces.concat(), long);
    }

    #[test]
    fn cursor_pads_with_zeros() {
        let mut c = Cursor::new(&[1, 2, 3]);
        assert_eq!(c.u16(), 0x0201);
        assert_eq!(c.u32(), 3);
        assert!(c.is_empty());
        assert_eq!(c.take_prefixed(15), &[] as &[u8]);
    }
}
