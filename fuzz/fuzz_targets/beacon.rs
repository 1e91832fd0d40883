//! Arbitrary bytes through the gateway's beacon layer (`gateway-api.md` §4): raw AD splitting
//! (`ad::structures`, `ad::pairs`), and every decoder — iBeacon, AltBeacon, Eddystone UID, URL,
//! TLM and EID — on the pairs found and on the whole input as a payload under the sources that
//! reach each of them (Apple, another company, `0xFEAA`, another service).
//!
//! Besides "no panic", it checks what the simulator and the pipeline rely on: AD structures lie
//! within the input, in order, and pairs are their manufacturer and service data; a decoded
//! frame encodes to a pair that decodes to the same frame, and that pair's raw advertisement
//! (the simulator's broadcast) splits back into exactly that pair; keys and JSON never fail.

#![no_main]

use libfuzzer_sys::fuzz_target;
use limmat_gateway::beacon::{self, Decoded, Frame, Source, ad, url};
use limmat_gateway::uuid::Uuid;

fuzz_target!(|data: &[u8]| {
    check_raw(data);
    let company = data
        .first_chunk::<2>()
        .map_or(0, |id| u16::from_le_bytes(*id));
    for source in [
        Source::Manufacturer(0x004c),
        Source::Manufacturer(company),
        Source::Service(Uuid::EDDYSTONE),
        Source::Service(Uuid::from_u16(company)),
    ] {
        check_pair(&source, data);
    }
    if let Some((&scheme, encoded)) = data.split_first()
        && let Ok(expanded) = url::expand(scheme, encoded)
    {
        // Every URL a frame can carry compresses again, no longer, and back to itself.
        match url::compress(&expanded) {
            Ok((scheme, shorter)) => {
                assert!(shorter.len() <= encoded.len());
                assert_eq!(
                    url::expand(scheme, &shorter).as_deref(),
                    Ok(expanded.as_str())
                );
            }
            Err(e) => assert!(encoded.len() > url::MAX_ENCODED, "{expanded:?}: {e}"),
        }
    }
});

/// Raw AD: structures within the input, pairs drawn from them, and each pair decoded.
fn check_raw(data: &[u8]) {
    let structures = ad::structures(data);
    let mut consumed = 0;
    for s in &structures {
        // [length][type][data…]: each structure takes 2 + its data bytes.
        consumed += 2 + s.data.len();
        assert!(consumed <= data.len(), "structures run past the input");
    }
    let pairs = ad::pairs(data);
    assert!(pairs.len() <= structures.len());
    for (source, payload) in &pairs {
        assert!(payload.len() <= data.len());
        check_pair(source, payload);
    }
}

/// One pair: decode it, and for a frame check the way back.
fn check_pair(source: &Source, payload: &[u8]) {
    let decoded = beacon::decode(source, payload);
    let Decoded::Frame(frame) = decoded else {
        if let Decoded::Malformed(m) = &decoded {
            let _ = m.to_string();
        }
        return;
    };
    let (again_source, again) = frame.encode();
    assert_eq!(
        beacon::decode(&again_source, &again),
        Decoded::Frame(frame.clone()),
        "a frame encodes to a pair that decodes to it"
    );
    if let Some(raw) = ad::advertisement(&again_source, &again) {
        assert_eq!(ad::pairs(&raw), [(again_source, &again[..])]);
    }
    match &frame {
        Frame::Beacon(b) => {
            assert!(b.key().starts_with(b.format().as_str()));
            serde_json::to_string(b).expect("a beacon serialises");
        }
        Frame::Telemetry(t) => {
            serde_json::to_string(t).expect("telemetry serialises");
        }
    }
}
