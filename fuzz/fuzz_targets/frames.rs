//! The frame cursor on arbitrary bytes cut at arbitrary points: never panics,
//! always makes progress, and cuts exactly where a one-shot walk of the same bytes
//! finds frame ends (so no read ever crosses one).
#![no_main]
use libfuzzer_sys::fuzz_target;
use wsgate::internal::FrameCursor;

fuzz_target!(|data: &[u8]| {
    // The first byte picks the chunk size the bytes arrive in.
    let Some((&chunk, bytes)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(chunk).max(1);
    // Frame ends by feeding the whole input at once, repeatedly.
    let mut ends = Vec::new();
    let (mut c, mut at) = (FrameCursor::default(), 0);
    while at < bytes.len() {
        let n = c.take(&bytes[at..]);
        assert!(n >= 1);
        at += n;
        if c.at_boundary() {
            ends.push(at);
        }
    }
    // The same bytes in chunks: the same frame ends, never crossed.
    let (mut c, mut at) = (FrameCursor::default(), 0);
    let mut chunked_ends = Vec::new();
    while at < bytes.len() {
        let end = at.saturating_add(chunk).min(bytes.len());
        let n = c.take(&bytes[at..end]);
        assert!(n >= 1 && n <= end - at);
        at += n;
        if c.at_boundary() {
            chunked_ends.push(at);
        }
    }
    assert_eq!(ends, chunked_ends);
});
