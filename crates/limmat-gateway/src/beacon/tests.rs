//! The normative vectors of §4.5 (V1–V17, N1–N11), the JSON members of §3.2 and §3.4, and
//! properties: no input panics, and decoding what was encoded gives the same frame.

use super::*;
use crate::hex;
use proptest::prelude::*;

fn bytes(text: &str) -> Vec<u8> {
    hex::decode(text).unwrap()
}

fn manufacturer(company_id: u16, payload: &str) -> Decoded {
    decode(&Source::Manufacturer(company_id), &bytes(payload))
}

fn eddystone(payload: &str) -> Decoded {
    decode(&Source::Service(Uuid::EDDYSTONE), &bytes(payload))
}

/// Decodes every pair of a raw advertisement.
fn raw(text: &str) -> Vec<Decoded> {
    let raw = bytes(text);
    ad::pairs(&raw)
        .into_iter()
        .map(|(source, payload)| decode(&source, payload))
        .collect()
}

fn beacon(decoded: Decoded) -> Beacon {
    match decoded {
        Decoded::Frame(Frame::Beacon(beacon)) => beacon,
        other => panic!("not a beacon: {other:?}"),
    }
}

fn plain_tlm(decoded: Decoded) -> PlainTlm {
    match decoded {
        Decoded::Frame(Frame::Telemetry(Telemetry::Plain(tlm))) => tlm,
        other => panic!("not plain TLM: {other:?}"),
    }
}

fn malformed(format: Format, reason: Reason) -> Decoded {
    Decoded::Malformed(Malformed { format, reason })
}

fn length(format: Format, actual: usize, expected: &'static str) -> Decoded {
    malformed(format, Reason::Length { actual, expected })
}

fn json(value: &impl serde::Serialize) -> serde_json::Value {
    serde_json::to_value(value).unwrap()
}

const LIMMAT_UUID: &str = "4c696d6d-6174-4265-6163-6f6e2d303031";
const V1: &str = "02154c696d6d6174426561636f6e2d30303100010007c5";
const V4: &str = "beac4c696d6d6174426561636f6e2d303031002a0003bf5a";
const V6: &str = "00ee4c696d6d6f6e2d3030310000000000010000";
const V12: &str = "20000b861780000004b000008ca0";

fn v1() -> Beacon {
    Beacon::IBeacon(IBeacon {
        uuid: LIMMAT_UUID.parse().unwrap(),
        major: 1,
        minor: 7,
        tx_power: -59,
    })
}

fn v4() -> Beacon {
    let mut beacon_id = [0; 20];
    beacon_id.copy_from_slice(&bytes("4c696d6d6174426561636f6e2d303031002a0003"));
    Beacon::AltBeacon(AltBeacon {
        company_id: 0x0118,
        beacon_id,
        tx_power: -65,
        mfg_reserved: 90,
    })
}

fn v6() -> Beacon {
    Beacon::EddystoneUid(EddystoneUid {
        tx_power: -18,
        namespace: *b"Limmon-001",
        instance: [0, 0, 0, 0, 0, 1],
    })
}

fn v12() -> PlainTlm {
    PlainTlm {
        battery_mv: Some(2950),
        temperature_c: Some(23.5),
        adv_count: 1200,
        uptime_ds: 36000,
    }
}

#[test]
fn v1_ibeacon() {
    let b = beacon(manufacturer(0x004c, V1));
    assert_eq!(b, v1());
    assert_eq!(b.key(), format!("ibeacon:{LIMMAT_UUID}:1:7"));
    assert_eq!((b.tx_power(), b.tx_power_1m()), (-59, -59));
    assert_eq!(
        json(&b),
        serde_json::json!({
            "key": "ibeacon:4c696d6d-6174-4265-6163-6f6e2d303031:1:7", "format": "ibeacon",
            "uuid": LIMMAT_UUID, "major": 1, "minor": 7, "txPower": -59, "txPower1m": -59,
        })
    );
}

#[test]
fn v2_ibeacon_extremes() {
    let b = beacon(manufacturer(
        0x004c,
        "0215e2c56db5dffb48d2b060d0f5a71096e0ffff0000ba",
    ));
    let Beacon::IBeacon(i) = &b else {
        panic!("{b:?}")
    };
    assert_eq!(i.uuid.to_string(), "e2c56db5-dffb-48d2-b060-d0f5a71096e0");
    assert_eq!((i.major, i.minor, i.tx_power), (65535, 0, -70));
    assert_eq!(
        b.key(),
        "ibeacon:e2c56db5-dffb-48d2-b060-d0f5a71096e0:65535:0"
    );
}

/// A *raw* vector: it decodes to exactly `frame`, and `frame` builds exactly these bytes.
fn raw_vector(raw_hex: &str, frame: Frame) {
    assert_eq!(raw(raw_hex), vec![Decoded::Frame(frame.clone())]);
    let (source, payload) = frame.encode();
    let built = ad::advertisement(&source, &payload).unwrap();
    assert_eq!(hex::encode(&built), raw_hex);
}

#[test]
fn v3_raw_ibeacon() {
    raw_vector(
        "0201061aff4c0002154c696d6d6174426561636f6e2d30303100010007c5",
        Frame::Beacon(v1()),
    );
}

#[test]
fn v4_altbeacon() {
    let b = beacon(manufacturer(0x0118, V4));
    assert_eq!(b, v4());
    assert_eq!(
        json(&b),
        serde_json::json!({
            "key": "altbeacon:4c696d6d6174426561636f6e2d303031002a0003", "format": "altbeacon",
            "beaconId": "4c696d6d6174426561636f6e2d303031002a0003", "id1": LIMMAT_UUID,
            "id2": 42, "id3": 3, "companyId": 280, "mfgReserved": 90,
            "txPower": -65, "txPower1m": -65,
        })
    );
}

#[test]
fn v5_raw_altbeacon() {
    let raw_v5 = "0201061bff1801beac4c696d6d6174426561636f6e2d303031002a0003bf5a";
    assert_eq!(bytes(raw_v5).len(), 31);
    raw_vector(raw_v5, Frame::Beacon(v4()));
}

#[test]
fn v6_eddystone_uid() {
    let b = beacon(eddystone(V6));
    assert_eq!(b, v6());
    assert_eq!(b.tx_power_1m(), -59);
    assert_eq!(
        json(&b),
        serde_json::json!({
            "key": "eddystone-uid:4c696d6d6f6e2d303031:000000000001", "format": "eddystone-uid",
            "namespace": "4c696d6d6f6e2d303031", "instance": "000000000001",
            "txPower": -18, "txPower1m": -59,
        })
    );
}

#[test]
fn v7_eddystone_uid_without_rfu() {
    assert_eq!(
        beacon(eddystone("00ee4c696d6d6f6e2d303031000000000001")),
        v6()
    );
}

#[test]
fn v8_raw_eddystone_uid() {
    let raw_v8 = "0201060303aafe1716aafe00ee4c696d6d6f6e2d3030310000000000010000";
    assert_eq!(bytes(raw_v8).len(), 31);
    raw_vector(raw_v8, Frame::Beacon(v6()));
    assert_eq!(hex::encode(&v6().encode().1), V6);
}

#[test]
fn v9_to_v11_eddystone_url() {
    for (payload, tx_power, url) in [
        ("10ee016578616d706c6500", -18, "https://www.example.com/"),
        (
            "10f4026578616d706c6501622f3137",
            -12,
            "http://example.org/b/17",
        ),
        (
            "10ee03626561636f6e2e6578616d706c652f61",
            -18,
            "https://beacon.example/a",
        ),
    ] {
        let b = beacon(eddystone(payload));
        assert_eq!(
            b,
            Beacon::EddystoneUrl(EddystoneUrl::new(tx_power, url).unwrap())
        );
        assert_eq!(b.key(), format!("eddystone-url:{url}"));
        assert_eq!(b.tx_power_1m(), i16::from(tx_power) - 41);
        assert_eq!(hex::encode(&b.encode().1), payload, "canonical encoding");
    }
    assert_eq!(
        json(&beacon(eddystone("10ee016578616d706c6500"))),
        serde_json::json!({
            "key": "eddystone-url:https://www.example.com/", "format": "eddystone-url",
            "url": "https://www.example.com/", "txPower": -18, "txPower1m": -59,
        })
    );
}

#[test]
fn v12_to_v14_plain_tlm() {
    assert_eq!(plain_tlm(eddystone(V12)), v12());
    assert_eq!(
        plain_tlm(eddystone("20000000fdc0ffffffff000d2f00")),
        PlainTlm {
            battery_mv: None,
            temperature_c: Some(-2.25),
            adv_count: 4_294_967_295,
            uptime_ds: 864_000,
        }
    );
    let v14 = plain_tlm(eddystone("20000bb88000000000050000000a"));
    assert_eq!(
        v14,
        PlainTlm {
            battery_mv: Some(3000),
            temperature_c: None,
            adv_count: 5,
            uptime_ds: 10,
        }
    );
    assert_eq!(v14.uptime_s(), 1.0);
    assert_eq!(
        serde_json::to_string(&Telemetry::Plain(v12())).unwrap(),
        r#"{"version":0,"batteryMv":2950,"temperatureC":23.5,"advCount":1200,"uptimeS":3600.0}"#
    );
    assert_eq!(
        json(&Telemetry::Plain(v14)),
        serde_json::json!({"version": 0, "batteryMv": 3000, "temperatureC": null,
                           "advCount": 5, "uptimeS": 1.0})
    );
    for payload in [
        V12,
        "20000000fdc0ffffffff000d2f00",
        "20000bb88000000000050000000a",
    ] {
        let Decoded::Frame(frame) = eddystone(payload) else {
            panic!()
        };
        assert_eq!(hex::encode(&frame.encode().1), payload);
    }
}

#[test]
fn v15_raw_tlm() {
    raw_vector(
        "0201060303aafe1116aafe20000b861780000004b000008ca0",
        Frame::Telemetry(Telemetry::Plain(v12())),
    );
}

#[test]
fn v16_encrypted_tlm() {
    let v16 = "200100112233445566778899aabbc0debeef";
    let decoded = eddystone(v16);
    let expected = Telemetry::Encrypted(EncryptedTlm {
        etlm: [
            0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb,
        ],
        salt: [0xc0, 0xde],
        mic: [0xbe, 0xef],
    });
    assert_eq!(decoded.telemetry(), Some(&expected));
    assert_eq!(
        json(&expected),
        serde_json::json!({"version": 1, "etlm": "00112233445566778899aabb",
                           "salt": "c0de", "mic": "beef"})
    );
    assert_eq!(hex::encode(&expected.encode()), v16);
}

#[test]
fn v17_eddystone_eid() {
    let b = beacon(eddystone("30ee0a1b2c3d4e5f6071"));
    assert_eq!(
        b,
        Beacon::EddystoneEid(EddystoneEid {
            tx_power: -18,
            eid: [0x0a, 0x1b, 0x2c, 0x3d, 0x4e, 0x5f, 0x60, 0x71],
        })
    );
    assert_eq!(b.key(), "eddystone-eid:0a1b2c3d4e5f6071");
    assert_eq!(
        json(&b),
        serde_json::json!({"key": "eddystone-eid:0a1b2c3d4e5f6071", "format": "eddystone-eid",
                           "eid": "0a1b2c3d4e5f6071", "txPower": -18, "txPower1m": -59})
    );
    assert_eq!(hex::encode(&b.encode().1), "30ee0a1b2c3d4e5f6071");
}

#[test]
fn n1_apple_but_not_ibeacon() {
    let payload = format!("1219{}", "00".repeat(25));
    assert_eq!(manufacturer(0x004c, &payload), Decoded::NotABeacon);
}

#[test]
fn n2_short_ibeacon() {
    assert_eq!(
        manufacturer(0x004c, "02154c696d6d6174426561636f6e2d303031000100"),
        length(Format::IBeacon, 21, "23")
    );
}

#[test]
fn n3_not_altbeacon() {
    let payload = format!("bead{}", "00".repeat(22));
    assert_eq!(manufacturer(0x0118, &payload), Decoded::NotABeacon);
}

#[test]
fn n4_to_n6_bad_urls() {
    assert_eq!(
        eddystone("10ee046578616d706c65"),
        malformed(Format::EddystoneUrl, Reason::UrlScheme(4))
    );
    assert_eq!(
        eddystone("10ee0265780e6d"),
        malformed(
            Format::EddystoneUrl,
            Reason::UrlReserved {
                byte: 0x0e,
                offset: 2
            }
        )
    );
    assert_eq!(
        eddystone(&format!("10ee03{}", "61".repeat(18))),
        length(Format::EddystoneUrl, 21, "3 to 20")
    );
}

#[test]
fn n7_short_uid() {
    assert_eq!(
        eddystone("00ee4c696d6d6f6e2d303031000000"),
        length(Format::EddystoneUid, 15, "18 or 20")
    );
}

#[test]
fn n8_tlm_version_2() {
    assert_eq!(
        eddystone(&format!("2002{}", "00".repeat(12))),
        malformed(Format::EddystoneTlm, Reason::TlmVersion(2))
    );
}

#[test]
fn n9_low_nibble_set() {
    assert_eq!(
        eddystone(&format!("01ee{}", "00".repeat(18))),
        Decoded::NotABeacon
    );
}

#[test]
fn n10_structure_past_the_end() {
    assert_eq!(ad::structures(&bytes("0201061aff4c000215")).len(), 1);
    assert_eq!(raw("0201061aff4c000215"), vec![]);
}

#[test]
fn n11_zero_length_ends_parsing() {
    let raw_n11 = bytes("020106000000");
    assert_eq!(
        ad::structures(&raw_n11),
        vec![ad::AdStructure {
            ad_type: ad::FLAGS,
            data: &[0x06]
        }]
    );
    assert_eq!(ad::pairs(&raw_n11), vec![]);
    // What follows a zero length is ignored, even a valid beacon.
    let hidden = format!("02010600{}", "1aff4c00".to_owned() + V1);
    assert_eq!(raw(&hidden), vec![]);
}

#[test]
fn other_malformed_lengths() {
    let long_ibeacon = format!("{V1}00");
    assert_eq!(
        manufacturer(0x004c, &long_ibeacon),
        length(Format::IBeacon, 24, "23")
    );
    // `02 15` under another company is not Apple's format.
    assert_eq!(manufacturer(0x0118, V1), Decoded::NotABeacon);
    assert_eq!(manufacturer(0x004c, ""), Decoded::NotABeacon);
    assert_eq!(manufacturer(0x004c, "02"), Decoded::NotABeacon);
    assert_eq!(
        manufacturer(0xffff, "beac"),
        length(Format::AltBeacon, 2, "24")
    );
    assert_eq!(
        manufacturer(0x0118, &format!("{V4}00")),
        length(Format::AltBeacon, 25, "24")
    );
    // AltBeacon is accepted under any company id, Apple's included.
    assert_eq!(
        beacon(manufacturer(0x004c, V4)).key(),
        "altbeacon:4c696d6d6174426561636f6e2d303031002a0003"
    );
    assert_eq!(
        eddystone(&V6[..38]),
        length(Format::EddystoneUid, 19, "18 or 20")
    );
    assert_eq!(
        eddystone(&format!("{V6}00")),
        length(Format::EddystoneUid, 21, "18 or 20")
    );
    assert_eq!(
        eddystone("10ee"),
        length(Format::EddystoneUrl, 2, "3 to 20")
    );
    assert_eq!(eddystone("10"), length(Format::EddystoneUrl, 1, "3 to 20"));
    assert_eq!(eddystone("00"), length(Format::EddystoneUid, 1, "18 or 20"));
    assert_eq!(eddystone("20"), length(Format::EddystoneTlm, 1, "14 or 18"));
    assert_eq!(
        eddystone(&V12[..26]),
        length(Format::EddystoneTlm, 13, "14")
    );
    assert_eq!(
        eddystone(&format!("{V12}00")),
        length(Format::EddystoneTlm, 15, "14")
    );
    assert_eq!(eddystone("2001"), length(Format::EddystoneTlm, 2, "18"));
    assert_eq!(eddystone("30ee0a1b"), length(Format::EddystoneEid, 4, "10"));
    assert_eq!(
        eddystone("30ee0a1b2c3d4e5f607100"),
        length(Format::EddystoneEid, 11, "10")
    );
}

#[test]
fn not_beacons() {
    assert_eq!(eddystone(""), Decoded::NotABeacon);
    for frame_type in ["40", "50", "f0", "ff", "11", "21"] {
        assert_eq!(
            eddystone(&format!("{frame_type}ee{}", "00".repeat(18))),
            Decoded::NotABeacon
        );
    }
    // An Eddystone frame under another service UUID is not a beacon.
    assert_eq!(
        decode(&Source::Service(Uuid::from_u16(0x180f)), &bytes(V6)),
        Decoded::NotABeacon
    );
}

#[test]
fn tx_power_and_reserved_bytes_are_reported_as_broadcast() {
    // The spec gives no range check for TX power (AltBeacon: "the gateway reports any value")
    // and none for the UID's RFU bytes.
    let b = beacon(eddystone("007f4c696d6d6f6e2d303031000000000001ffff"));
    assert_eq!((b.tx_power(), b.tx_power_1m()), (127, 86));
    let b = beacon(eddystone("30800a1b2c3d4e5f6071"));
    assert_eq!((b.tx_power(), b.tx_power_1m()), (-128, -169));
    let b = beacon(manufacturer(
        0x0118,
        "beac4c696d6d6174426561636f6e2d303031002a00037fff",
    ));
    assert_eq!(b.tx_power(), 127);
}

#[test]
fn raw_service_data_with_long_uuids() {
    // 32-bit and 128-bit service-data keys (AD types 0x20 and 0x21) are little-endian on air.
    let found = raw("0720aafe000001020b21fb349b5f80000080001000");
    assert_eq!(found, vec![Decoded::NotABeacon]);
    let raw_uid = format!("2521fb349b5f8000008000100000aafe0000{V6}");
    assert_eq!(raw(&raw_uid), vec![Decoded::Frame(Frame::Beacon(v6()))]);
    let (source, payload) = v6().encode();
    let again = ad::advertisement(&source, &payload).unwrap();
    assert_eq!(
        ad::pairs(&again),
        vec![(Source::Service(Uuid::EDDYSTONE), &payload[..])]
    );
    // A structure too short for its id is skipped; the rest still count.
    let short_then_v1 = format!("02ff4c1aff4c00{V1}");
    assert_eq!(
        raw(&short_then_v1),
        vec![Decoded::Frame(Frame::Beacon(v1()))]
    );
}

#[test]
fn formats_have_their_spec_names() {
    for format in Format::ALL {
        assert_eq!(Format::from_name(format.as_str()), Some(format));
        assert_eq!(json(&format), serde_json::json!(format.as_str()));
    }
    assert_eq!(Format::from_name("iBeacon"), None);
}

fn arb_source() -> impl Strategy<Value = Source> {
    prop_oneof![
        Just(Source::Manufacturer(ibeacon::APPLE)),
        any::<u16>().prop_map(Source::Manufacturer),
        Just(Source::Service(Uuid::EDDYSTONE)),
        any::<[u8; 16]>().prop_map(|b| Source::Service(Uuid(b))),
    ]
}

/// Payloads near the formats' discriminators, so the properties reach the decoders.
fn arb_payload() -> impl Strategy<Value = Vec<u8>> {
    let tail = proptest::collection::vec(any::<u8>(), 0..26);
    (
        prop_oneof![
            Just(vec![]),
            Just(vec![0x02, 0x15]),
            Just(vec![0xbe, 0xac]),
            Just(vec![0x00]),
            Just(vec![0x10]),
            Just(vec![0x20, 0x00]),
            Just(vec![0x20, 0x01]),
            Just(vec![0x30]),
        ],
        tail,
    )
        .prop_map(|(head, tail)| [head, tail].concat())
}

proptest! {
    #[test]
    fn decoding_never_panics(source in arb_source(), payload in arb_payload()) {
        let _ = decode(&source, &payload);
    }

    #[test]
    fn arbitrary_bytes_never_panic(raw in proptest::collection::vec(any::<u8>(), 0..64)) {
        for (source, payload) in ad::pairs(&raw) {
            if let Decoded::Frame(frame) = decode(&source, payload) {
                let _ = serde_json::to_string(&frame_json(&frame));
            }
        }
    }

    #[test]
    fn decode_encode_decode(source in arb_source(), payload in arb_payload()) {
        if let Decoded::Frame(frame) = decode(&source, &payload) {
            let (source2, payload2) = frame.encode();
            prop_assert_eq!(decode(&source2, &payload2), Decoded::Frame(frame.clone()));
            // The raw form carries the same pair.
            let raw = ad::advertisement(&source2, &payload2).unwrap();
            prop_assert_eq!(ad::pairs(&raw), vec![(source2, &payload2[..])]);
            if let Frame::Beacon(beacon) = &frame {
                prop_assert!(beacon.key().starts_with(beacon.format().as_str()));
            }
        }
    }

    #[test]
    fn canonical_frames_round_trip_byte_for_byte(
        uuid in any::<[u8; 16]>(), major: u16, minor: u16, tx_power: i8,
        company_id: u16, beacon_id in any::<[u8; 20]>(), reserved: u8,
        namespace in any::<[u8; 10]>(), instance in any::<[u8; 6]>(), eid in any::<[u8; 8]>(),
        battery: u16, temperature: i16, adv_count: u32, uptime_ds: u32,
    ) {
        let frames = [
            Frame::Beacon(Beacon::IBeacon(IBeacon { uuid: Uuid(uuid), major, minor, tx_power })),
            Frame::Beacon(Beacon::AltBeacon(AltBeacon {
                company_id, beacon_id, tx_power, mfg_reserved: reserved,
            })),
            Frame::Beacon(Beacon::EddystoneUid(EddystoneUid { tx_power, namespace, instance })),
            Frame::Beacon(Beacon::EddystoneEid(EddystoneEid { tx_power, eid })),
            Frame::Telemetry(Telemetry::Plain(PlainTlm {
                battery_mv: (battery != 0).then_some(battery),
                temperature_c: (temperature != i16::MIN).then(|| f64::from(temperature) / 256.0),
                adv_count,
                uptime_ds,
            })),
        ];
        for frame in frames {
            let (source, payload) = frame.encode();
            let decoded = decode(&source, &payload);
            prop_assert_eq!(&decoded, &Decoded::Frame(frame));
            let Decoded::Frame(again) = decoded else { unreachable!() };
            prop_assert_eq!(again.encode(), (source, payload));
        }
    }
}

fn frame_json(frame: &Frame) -> serde_json::Value {
    match frame {
        Frame::Beacon(b) => json(b),
        Frame::Telemetry(t) => json(t),
    }
}
