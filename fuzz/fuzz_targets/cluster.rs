//! The internal listener's request parser (spec 7.1, 7.5) on arbitrary bytes: it must never
//! panic, and a forward it accepts must encode back to a head it parses to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use limmat_wire::cluster::{Internal, parse_internal};

fuzz_target!(|data: &[u8]| {
    let parsed = parse_internal(data);
    if let Ok(Internal::Forward(forward)) = parsed.request
        && let Ok(head) = forward.encode(b"fuzz-secret")
    {
        assert_eq!(parse_internal(&head).request, Ok(Internal::Forward(forward)));
    }
});
