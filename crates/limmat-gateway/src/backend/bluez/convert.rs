//! Conversions between `bluer`'s types and the backend's: addresses, UUIDs, address types and
//! the characteristic flag strings, which become the GATT property bitmask of §2.7.

use crate::address::{Address, AddressType};
use crate::backend::props;
use crate::uuid::Uuid;
use bluer::gatt::CharacteristicFlags;

/// bluer's address as the gateway's (both most significant byte first).
pub fn address(a: bluer::Address) -> Address {
    Address(a.0)
}

/// The gateway's address as bluer's.
pub fn bluer_address(a: Address) -> bluer::Address {
    bluer::Address(a.0)
}

/// bluer's UUID as the gateway's 128-bit one.
pub fn uuid(u: bluer::Uuid) -> Uuid {
    Uuid(*u.as_bytes())
}

/// BlueZ knows `public`, `random` and BR/EDR; the gateway shows LE devices, where anything not
/// random is public.
pub fn address_type(t: bluer::AddressType) -> AddressType {
    match t {
        bluer::AddressType::LeRandom => AddressType::Random,
        bluer::AddressType::LePublic | bluer::AddressType::BrEdr => AddressType::Public,
    }
}

/// The property bitmask (§2.7) of BlueZ's flag strings. The extended properties (reliable
/// write, writable auxiliaries) and the security requirements (`encrypt-read`, …) have no bit of
/// their own: a reliable-write flag sets the extended-properties bit, as on air.
pub fn properties(flags: &CharacteristicFlags) -> u8 {
    let bits = [
        (flags.broadcast, props::BROADCAST),
        (flags.read, props::READ),
        (flags.write_without_response, props::WRITE_WITHOUT_RESPONSE),
        (flags.write, props::WRITE),
        (flags.notify, props::NOTIFY),
        (flags.indicate, props::INDICATE),
        (flags.authenticated_signed_writes, props::SIGNED_WRITE),
        (
            flags.extended_properties || flags.reliable_write || flags.writable_auxiliaries,
            props::EXTENDED,
        ),
    ];
    bits.iter()
        .filter(|(set, _)| *set)
        .fold(0, |mask, (_, bit)| mask | bit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_become_the_property_bitmask() {
        let flags = CharacteristicFlags {
            read: true,
            write: true,
            write_without_response: true,
            ..Default::default()
        };
        assert_eq!(properties(&flags), 0x0e);
        let flags = CharacteristicFlags {
            notify: true,
            indicate: true,
            reliable_write: true,
            encrypt_read: true,
            ..Default::default()
        };
        assert_eq!(properties(&flags), 0x10 | 0x20 | 0x80);
        assert_eq!(properties(&CharacteristicFlags::default()), 0);
    }

    #[test]
    fn addresses_and_uuids_keep_their_byte_order() {
        let a = bluer::Address([0xc0, 0xff, 0xee, 0, 0, 0x10]);
        assert_eq!(address(a).to_string(), "C0:FF:EE:00:00:10");
        assert_eq!(bluer_address(address(a)), a);
        let u = bluer::Uuid::from_u128(0x0000180f_0000_1000_8000_00805f9b34fb);
        assert_eq!(uuid(u), Uuid::from_u16(0x180f));
    }
}
