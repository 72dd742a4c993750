//! Every byte a peer sends goes through `frame_len` and `decode`: neither may panic, and a
//! decoded message must re-encode to a frame that decodes to the same message.
//! Run: `cargo +nightly fuzz run decode` (needs `cargo install cargo-fuzz`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tether_proto::{Request, Response, decode, encode, frame_len};

fuzz_target!(|data: &[u8]| {
    if data.len() >= 4 {
        let _ = frame_len([data[0], data[1], data[2], data[3]]);
    }
    if let Ok(req) = decode::<Request>(data) {
        let frame = encode(&req).expect("a decoded request re-encodes");
        assert_eq!(decode::<Request>(&frame[4..]).ok(), Some(req));
    }
    if let Ok(resp) = decode::<Response>(data) {
        let frame = encode(&resp).expect("a decoded response re-encodes");
        assert_eq!(decode::<Response>(&frame[4..]).ok(), Some(resp));
    }
});
