//! A byte stream that hands the WebSocket layer no byte past the end of the frame
//! it is reading, so that between messages nothing is left in tungstenite's
//! buffers and a session can swap its WebSocket state for a fresh one.
//!
//! Why: tungstenite reserves a whole frame's length in its read buffer and grows
//! its write buffer to the largest frame sent, and neither ever shrinks. One 1 MiB
//! message in each direction left a session holding ~2 MiB for the rest of its
//! life (measured: 50 sessions, 6 → 104 MiB RSS). [`crate::session::Session`]
//! therefore rebuilds its `WebSocketStream` (fresh, small buffers) once a large
//! message has gone through, which is only safe when the old one holds no unread
//! bytes: this stream guarantees that, by reading the frame headers as they pass
//! and keeping what arrived past a frame's end (its `spill`) for the next read.
//!
//! Here, sans IO: [`FrameCursor`], the frame boundaries in a byte sequence. The
//! stream, [`FrameAligned`](crate::aligned::FrameAligned), is in
//! `src/server/aligned.rs` (the server layer): it only moves bytes.

/// Where the next byte of a stream of WebSocket frames falls (RFC 6455 §5.2).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FrameCursor {
    /// The header read so far (at most 14 bytes: 2 + 8 length + 4 mask).
    head: [u8; 14],
    have: u8,
    /// Payload bytes left in the current frame; the header is complete when set.
    payload_left: Option<u64>,
    /// Payload bytes of the data message under way, from its frames' headers so far
    /// (a text or binary frame starts one, continuations add to it).
    message: u64,
}

impl FrameCursor {
    /// Whether the next byte starts a frame.
    pub fn at_boundary(&self) -> bool {
        self.have == 0 && self.payload_left.is_none()
    }

    /// The announced length of the data message under way (or the last one), its
    /// frames' headers read so far: known before any of its payload is handed out.
    pub fn message_len(&self) -> u64 {
        self.message
    }

    /// Counts a frame header: first byte (FIN, opcode) and payload length.
    fn count(&mut self, b0: u8, payload: u64) {
        match b0 & 0x0f {
            0 => self.message = self.message.saturating_add(payload),
            1..=7 => self.message = payload,
            _ => {}
        }
    }

    /// At a boundary again, the message count kept.
    fn reset(&mut self) {
        *self = FrameCursor {
            message: self.message,
            ..FrameCursor::default()
        };
    }

    /// How many leading bytes of `bytes` belong to the current frame, never past
    /// its end, and advances over them. At least one when `bytes` is not empty.
    #[inline]
    pub fn take(&mut self, bytes: &[u8]) -> usize {
        // The usual case: a whole header at a boundary.
        if self.at_boundary() {
            if let Some((head, payload)) = parse_header(bytes) {
                self.count(bytes[0], payload);
                let rest = (bytes.len() - head) as u64;
                if payload <= rest {
                    return head + payload as usize;
                }
                self.payload_left = Some(payload - rest);
                return bytes.len();
            }
        }
        let mut i = 0;
        while i < bytes.len() {
            if let Some(left) = self.payload_left {
                let n = left.min((bytes.len() - i) as u64) as usize;
                i += n;
                let left = left - n as u64;
                if left == 0 {
                    self.reset();
                    return i;
                }
                self.payload_left = Some(left);
                continue;
            }
            // Header bytes: up to the two that give its length, then up to its end.
            let have = usize::from(self.have);
            let want = if have < 2 {
                2
            } else {
                header_len(self.head[1])
            };
            let n = (want - have).min(bytes.len() - i);
            self.head[have..have + n].copy_from_slice(&bytes[i..i + n]);
            self.have += n as u8;
            i += n;
            if let Some((_, payload)) = parse_header(&self.head[..usize::from(self.have)]) {
                self.count(self.head[0], payload);
                if payload == 0 {
                    self.reset();
                    return i;
                }
                self.payload_left = Some(payload);
            }
        }
        i
    }
}

/// A whole frame header at the start of `bytes`: its length and the payload's.
fn parse_header(bytes: &[u8]) -> Option<(usize, u64)> {
    let b1 = *bytes.get(1)?;
    let head = header_len(b1);
    if bytes.len() < head {
        return None;
    }
    let payload = match b1 & 0x7f {
        126 => u64::from(u16::from_be_bytes([bytes[2], bytes[3]])),
        127 => u64::from_be_bytes(bytes[2..10].try_into().ok()?),
        len => u64::from(len),
    };
    Some((head, payload))
}

/// A frame header's length (2 to 14 bytes), from its second byte: the length code
/// (16- or 64-bit extended lengths follow) and the mask bit (a 4-byte key follows).
fn header_len(b1: u8) -> usize {
    let ext = match b1 & 0x7f {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    2 + ext + if b1 & 0x80 != 0 { 4 } else { 0 }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A frame: FIN + opcode `op`, masked when `mask`, with `len` payload bytes.
    pub(crate) fn frame(op: u8, len: usize, mask: bool) -> Vec<u8> {
        let mut f = vec![0x80 | op];
        let m = if mask { 0x80 } else { 0 };
        match len {
            0..=125 => f.push(m | len as u8),
            126..=0xffff => {
                f.push(m | 126);
                f.extend_from_slice(&(len as u16).to_be_bytes());
            }
            _ => {
                f.push(m | 127);
                f.extend_from_slice(&(len as u64).to_be_bytes());
            }
        }
        if mask {
            f.extend_from_slice(&[1, 2, 3, 4]);
        }
        f.extend(std::iter::repeat_n(b'x', len));
        f
    }

    /// Feeds `stream` to a cursor in pieces of `chunk` bytes; returns the lengths of
    /// the pieces handed out and checks each ends at or before a frame end.
    fn pieces(stream: &[u8], chunk: usize) -> Vec<usize> {
        let mut c = FrameCursor::default();
        let mut out = Vec::new();
        let mut i = 0;
        while i < stream.len() {
            let end = i.saturating_add(chunk).min(stream.len());
            let n = c.take(&stream[i..end]);
            assert!(n >= 1, "progress");
            out.push(n);
            i += n;
        }
        assert!(c.at_boundary(), "ends at a frame end");
        out
    }

    #[test]
    fn pieces_end_at_frame_ends_for_every_length_form() {
        for mask in [true, false] {
            let frames = [
                frame(1, 5, mask),
                frame(9, 0, mask),
                frame(2, 126, mask),
                frame(2, 65_535, mask),
                frame(2, 65_536, mask),
                frame(8, 2, mask),
            ];
            let stream: Vec<u8> = frames.concat();
            // Whole stream at once: exactly one piece per frame.
            let lens: Vec<usize> = frames.iter().map(Vec::len).collect();
            assert_eq!(pieces(&stream, usize::MAX), lens);
            // Any chunking: the pieces add up to the frames, none crosses an end.
            for chunk in [1, 2, 3, 7, 14, 1000] {
                let got = pieces(&stream, chunk);
                let mut ends: Vec<usize> = lens
                    .iter()
                    .scan(0, |s, l| {
                        *s += l;
                        Some(*s)
                    })
                    .collect();
                let mut at = 0;
                for n in got {
                    at += n;
                    let next_end = ends[0];
                    assert!(at <= next_end, "chunk {chunk}: crossed a frame end");
                    if at == next_end {
                        ends.remove(0);
                    }
                }
                assert!(ends.is_empty());
            }
        }
    }

    #[test]
    fn boundary_only_between_frames() {
        let mut c = FrameCursor::default();
        assert!(c.at_boundary());
        let f = frame(1, 3, true);
        assert_eq!(c.take(&f[..1]), 1);
        assert!(!c.at_boundary(), "mid-header");
        assert_eq!(c.take(&f[1..f.len() - 1]), f.len() - 2);
        assert!(!c.at_boundary(), "mid-payload");
        assert_eq!(c.take(&f[f.len() - 1..]), 1);
        assert!(c.at_boundary());
    }

    /// A message's length is known from its frames' headers: a text or binary frame
    /// starts one, continuations add to it, control frames between them do not count;
    /// whether a header comes whole or a byte at a time.
    #[test]
    fn message_lengths_add_up_over_fragments() {
        let mut first = frame(1, 300, true);
        first[0] &= 0x7f; // not FIN: fragments follow
        let mut second = frame(0, 70_000, true);
        second[0] &= 0x7f;
        let stream = [
            first,
            frame(9, 4, true),
            second,
            frame(0, 5, true),
            frame(2, 7, true),
        ]
        .concat();
        for chunk in [1, 3, 13, 1 << 20] {
            let mut c = FrameCursor::default();
            let mut seen = Vec::new();
            let mut at = 0;
            while at < stream.len() {
                let end = (at + chunk).min(stream.len());
                at += c.take(&stream[at..end]);
                if c.message_len() > 0 && seen.last() != Some(&c.message_len()) {
                    seen.push(c.message_len());
                }
            }
            assert_eq!(seen, [300, 70_300, 70_305, 7], "chunks of {chunk}");
        }
    }
}
