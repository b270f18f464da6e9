//! The bounded HTTP head parser on arbitrary bytes: never panics, never reads past
//! the input, never accepts more than MAX_HEAD.
#![no_main]
use libfuzzer_sys::fuzz_target;
use wsgate::head::{self, MAX_HEAD};

fuzz_target!(|data: &[u8]| {
    let mut storage = head::header_storage();
    if let Ok(Some((req, n))) = head::parse(data, &mut storage) {
        assert!(n <= data.len() && n <= MAX_HEAD);
        let _ = (
            req.path(),
            req.query(),
            req.is_upgrade(),
            req.websocket_key(),
        );
        let _ = wsgate::head::percent_decode(req.target);
    }
});
