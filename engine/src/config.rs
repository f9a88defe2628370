//! Limits of the protocol core, each default with the reason for it.

/// Limits the receiving side enforces before it reserves memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest single frame payload. Default 16 MiB: Autobahn's largest cases (9.1.6, 9.2.6) send
    /// 16 MiB in one frame; anything larger is answered with 1009.
    pub max_frame_size: usize,
    /// Largest reassembled message. Default 16 MiB, for the same reason.
    pub max_message_size: usize,
    /// Most frames in one message, empty ones included, so that a stream of empty
    /// continuations cannot keep a message open forever. Default 131,072: Autobahn 9.4.1 sends
    /// 4 MiB in 64-byte fragments (65,536 of them), and a real client rarely comes close.
    pub max_fragments: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame_size: 16 << 20,
            max_message_size: 16 << 20,
            max_fragments: 1 << 17,
        }
    }
}
