//! The GATT database of "Limmat HRM" (`gateway-api.md` §6.2): the services, characteristics
//! and descriptors with the exact handles of the spec's table, their property checks, and the
//! values they read, accept and notify.
//!
//! Property checks come first, as on a real stack ("before anything goes on air", §2.6): a
//! read needs `read`, a write request `write`, a write command `write without response`,
//! notify `notify` and indicate `indicate`, or the answer is [`BleError::NotPermitted`]. Only
//! then does the "device" answer, possibly with an ATT error. Values that change with time
//! (battery level, vendor counter) are functions of simulated time, so a read and a
//! notification at the same moment agree; the heart rate is a seeded random walk advanced once
//! per simulated second. CCCDs are served by the peripheral, which owns the subscriptions.

use crate::backend::{
    BleError, Characteristic, Descriptor, Handle, NotifyKind, Service, WriteMode, props,
};
use crate::uuid::Uuid;
use rand::Rng;
use rand::rngs::SmallRng;

/// The longest attribute value (ATT).
pub(super) const MAX_VALUE: usize = 512;

pub(super) const MANUFACTURER_NAME: Handle = 0x0012;
pub(super) const MODEL_NUMBER: Handle = 0x0014;
pub(super) const FIRMWARE_REVISION: Handle = 0x0016;
pub(super) const BATTERY_LEVEL: Handle = 0x0022;
pub(super) const HR_MEASUREMENT: Handle = 0x0032;
pub(super) const BODY_SENSOR_LOCATION: Handle = 0x0035;
pub(super) const HR_CONTROL_POINT: Handle = 0x0037;
pub(super) const VENDOR_CONFIG: Handle = 0x0042;
pub(super) const VENDOR_CONFIG_DESCRIPTION: Handle = 0x0043;
pub(super) const VENDOR_SECRET: Handle = 0x0045;
pub(super) const VENDOR_COUNTER: Handle = 0x0047;

/// The Limmat vendor UUIDs `6c696d6d-6174-4000-8000-00000000fNNN`.
const fn vendor(last: u16) -> Uuid {
    let [hi, lo] = last.to_be_bytes();
    Uuid([
        0x6c, 0x69, 0x6d, 0x6d, 0x61, 0x74, 0x40, 0x00, 0x80, 0x00, 0, 0, 0, 0, hi, lo,
    ])
}

const fn service(handle: Handle, uuid: Uuid) -> Service {
    Service {
        handle,
        uuid,
        primary: true,
    }
}

/// The primary services (GAP `0x1800` and GATT `0x1801` hidden, as BlueZ hides them).
pub(super) const SERVICES: [Service; 4] = [
    service(0x0010, Uuid::from_u16(0x180a)),
    service(0x0020, Uuid::from_u16(0x180f)),
    service(0x0030, Uuid::from_u16(0x180d)),
    service(0x0040, vendor(0xf000)),
];

const fn characteristic(
    handle: Handle,
    uuid: Uuid,
    service: Handle,
    properties: u8,
) -> Characteristic {
    Characteristic {
        handle,
        uuid,
        service,
        properties,
    }
}

use props::{INDICATE, NOTIFY, READ, WRITE, WRITE_WITHOUT_RESPONSE};

pub(super) const CHARACTERISTICS: [Characteristic; 10] = [
    characteristic(MANUFACTURER_NAME, Uuid::from_u16(0x2a29), 0x0010, READ),
    characteristic(MODEL_NUMBER, Uuid::from_u16(0x2a24), 0x0010, READ),
    characteristic(FIRMWARE_REVISION, Uuid::from_u16(0x2a26), 0x0010, READ),
    characteristic(BATTERY_LEVEL, Uuid::from_u16(0x2a19), 0x0020, READ | NOTIFY),
    characteristic(HR_MEASUREMENT, Uuid::from_u16(0x2a37), 0x0030, NOTIFY),
    characteristic(BODY_SENSOR_LOCATION, Uuid::from_u16(0x2a38), 0x0030, READ),
    characteristic(HR_CONTROL_POINT, Uuid::from_u16(0x2a39), 0x0030, WRITE),
    characteristic(
        VENDOR_CONFIG,
        vendor(0xf001),
        0x0040,
        READ | WRITE | WRITE_WITHOUT_RESPONSE,
    ),
    characteristic(VENDOR_SECRET, vendor(0xf002), 0x0040, READ),
    characteristic(VENDOR_COUNTER, vendor(0xf003), 0x0040, READ | INDICATE),
];

/// Client Characteristic Configuration.
pub(super) const CCCD_UUID: Uuid = Uuid::from_u16(0x2902);
/// Characteristic User Description.
const USER_DESCRIPTION_UUID: Uuid = Uuid::from_u16(0x2901);

const fn descriptor(handle: Handle, uuid: Uuid, characteristic: Handle) -> Descriptor {
    Descriptor {
        handle,
        uuid,
        characteristic,
    }
}

pub(super) const DESCRIPTORS: [Descriptor; 4] = [
    descriptor(0x0023, CCCD_UUID, BATTERY_LEVEL),
    descriptor(0x0033, CCCD_UUID, HR_MEASUREMENT),
    descriptor(
        VENDOR_CONFIG_DESCRIPTION,
        USER_DESCRIPTION_UUID,
        VENDOR_CONFIG,
    ),
    descriptor(0x0048, CCCD_UUID, VENDOR_COUNTER),
];

/// The characteristic with this handle.
pub(super) fn characteristic_at(handle: Handle) -> Option<&'static Characteristic> {
    CHARACTERISTICS.iter().find(|c| c.handle == handle)
}

/// The CCCD with this handle, and the characteristic it configures.
pub(super) fn cccd_at(handle: Handle) -> Option<&'static Characteristic> {
    DESCRIPTORS
        .iter()
        .find(|d| d.handle == handle && d.uuid == CCCD_UUID)
        .and_then(|d| characteristic_at(d.characteristic))
}

/// The property a subscription of this kind needs.
pub(super) fn notify_property(kind: NotifyKind) -> u8 {
    match kind {
        NotifyKind::Notify => NOTIFY,
        NotifyKind::Indicate => INDICATE,
    }
}

/// Battery Level at simulated time `t` ms: 100, falling 1 per minute to 5, then 100 again.
pub(super) fn battery_level(t: u64) -> u8 {
    100 - ((t / 60_000) % 96) as u8
}

/// Vendor Counter at simulated time `t` ms: +1 per second.
fn counter(t: u64) -> u32 {
    (t / 1000) as u32
}

/// A peripheral's GATT state that outlives links: the stored vendor config and the heart rate.
#[derive(Debug)]
pub(super) struct Gatt {
    config: Vec<u8>,
    bpm: u8,
    rng: SmallRng,
    /// The last battery level notified, to notify on change only.
    battery: u8,
}

impl Gatt {
    pub fn new(rng: SmallRng) -> Gatt {
        Gatt {
            config: vec![0],
            bpm: 72,
            rng,
            battery: battery_level(0),
        }
    }

    /// Reads a characteristic value or the user description (CCCDs are the caller's).
    pub fn read(&self, handle: Handle, t: u64) -> Result<Vec<u8>, BleError> {
        if handle == VENDOR_CONFIG_DESCRIPTION {
            return Ok(b"Vendor config".to_vec());
        }
        let c = characteristic_at(handle).ok_or(BleError::NotFound)?;
        if c.properties & READ == 0 {
            return Err(BleError::NotPermitted);
        }
        Ok(match handle {
            MANUFACTURER_NAME => b"Limmat".to_vec(),
            MODEL_NUMBER => b"LM-SIM-1".to_vec(),
            FIRMWARE_REVISION => b"1.0.0".to_vec(),
            BATTERY_LEVEL => vec![battery_level(t)],
            BODY_SENSOR_LOCATION => vec![0x01],
            VENDOR_CONFIG => self.config.clone(),
            // Insufficient Encryption: the link is not encrypted.
            VENDOR_SECRET => return Err(BleError::Att(0x0f)),
            VENDOR_COUNTER => counter(t).to_be_bytes().to_vec(),
            _ => return Err(BleError::Att(0x02)),
        })
    }

    /// Writes a characteristic value or the user description (CCCDs are the caller's). A
    /// write command gets no answer on air, so a value the device refuses is dropped silently.
    pub fn write(&mut self, handle: Handle, value: &[u8], mode: WriteMode) -> Result<(), BleError> {
        if handle == VENDOR_CONFIG_DESCRIPTION {
            // Write Not Permitted: the description is fixed.
            return Err(BleError::Att(0x03));
        }
        let c = characteristic_at(handle).ok_or(BleError::NotFound)?;
        let needed = match mode {
            WriteMode::Request | WriteMode::Reliable => WRITE,
            WriteMode::Command => WRITE_WITHOUT_RESPONSE,
        };
        if c.properties & needed == 0 {
            return Err(BleError::NotPermitted);
        }
        let answer = if value.len() > MAX_VALUE {
            // Invalid Attribute Value Length.
            Err(BleError::Att(0x0d))
        } else {
            match handle {
                // Accepts 01 (Reset Energy Expended); other values: 0x80, Control Point Not
                // Supported (Heart Rate Service).
                HR_CONTROL_POINT if value == [0x01] => Ok(()),
                HR_CONTROL_POINT => Err(BleError::Att(0x80)),
                VENDOR_CONFIG if value.len() > 20 => Err(BleError::Att(0x0d)),
                VENDOR_CONFIG => {
                    self.config = value.to_vec();
                    Ok(())
                }
                _ => Err(BleError::Att(0x03)),
            }
        };
        match mode {
            WriteMode::Command => Ok(()),
            WriteMode::Request | WriteMode::Reliable => answer,
        }
    }

    /// One simulated second passed (at `t` ms): the values to notify or indicate now, whether
    /// or not anyone listens (so the walk does not depend on subscriptions).
    pub fn tick(&mut self, t: u64) -> Vec<(Handle, Vec<u8>)> {
        let mut out = vec![
            (HR_MEASUREMENT, vec![0x00, self.bpm]),
            (VENDOR_COUNTER, counter(t).to_be_bytes().to_vec()),
        ];
        let step = self.rng.random_range(-2i16..=2);
        self.bpm = (i16::from(self.bpm) + step).clamp(60, 90) as u8;
        let level = battery_level(t);
        if level != self.battery {
            self.battery = level;
            out.push((BATTERY_LEVEL, vec![level]));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn gatt() -> Gatt {
        Gatt::new(SmallRng::seed_from_u64(7))
    }

    #[test]
    fn handles_are_the_spec_table() {
        let handles: Vec<Handle> = CHARACTERISTICS.iter().map(|c| c.handle).collect();
        assert_eq!(
            handles,
            [0x12, 0x14, 0x16, 0x22, 0x32, 0x35, 0x37, 0x42, 0x45, 0x47]
        );
        assert_eq!(
            vendor(0xf001).to_string(),
            "6c696d6d-6174-4000-8000-00000000f001"
        );
        for c in CHARACTERISTICS {
            assert!(SERVICES.iter().any(|s| s.handle == c.service));
            assert!(c.handle > c.service && c.handle < c.service + 0x10);
        }
        for d in DESCRIPTORS {
            assert!(characteristic_at(d.characteristic).is_some());
        }
        assert_eq!(cccd_at(0x0048).map(|c| c.handle), Some(VENDOR_COUNTER));
        assert_eq!(cccd_at(0x0043), None);
    }

    #[test]
    fn battery_falls_to_5_then_restarts() {
        assert_eq!(battery_level(0), 100);
        assert_eq!(battery_level(59_999), 100);
        assert_eq!(battery_level(60_000), 99);
        assert_eq!(battery_level(95 * 60_000), 5);
        assert_eq!(battery_level(96 * 60_000), 100);
    }

    #[test]
    fn writes_follow_properties_then_device_rules() {
        let mut g = gatt();
        assert_eq!(
            g.write(BATTERY_LEVEL, &[1], WriteMode::Request),
            Err(BleError::NotPermitted)
        );
        assert_eq!(
            g.write(HR_CONTROL_POINT, &[1], WriteMode::Command),
            Err(BleError::NotPermitted)
        );
        assert_eq!(g.write(HR_CONTROL_POINT, &[1], WriteMode::Request), Ok(()));
        assert_eq!(
            g.write(HR_CONTROL_POINT, &[2], WriteMode::Request),
            Err(BleError::Att(0x80))
        );
        assert_eq!(
            g.write(VENDOR_CONFIG, &[0; 21], WriteMode::Request),
            Err(BleError::Att(0x0d))
        );
        // A refused write command is silent, and changes nothing.
        assert_eq!(g.write(VENDOR_CONFIG, &[0; 21], WriteMode::Command), Ok(()));
        assert_eq!(g.read(VENDOR_CONFIG, 0), Ok(vec![0]));
        assert_eq!(g.write(VENDOR_CONFIG, &[], WriteMode::Request), Ok(()));
        assert_eq!(g.read(VENDOR_CONFIG, 0), Ok(vec![]));
        assert_eq!(g.read(HR_MEASUREMENT, 0), Err(BleError::NotPermitted));
        assert_eq!(g.read(VENDOR_SECRET, 0), Err(BleError::Att(0x0f)));
        assert_eq!(g.read(0x0099, 0), Err(BleError::NotFound));
        assert_eq!(g.read(VENDOR_COUNTER, 3_500), Ok(vec![0, 0, 0, 3]));
    }

    #[test]
    fn heart_rate_walks_within_range_from_72() {
        let mut g = gatt();
        let first = g.tick(1000);
        assert_eq!(first[0], (HR_MEASUREMENT, vec![0, 72]));
        for s in 2..5000 {
            let out = g.tick(s * 1000);
            let bpm = out[0].1[1];
            assert!((60..=90).contains(&bpm), "{bpm}");
        }
    }
}
