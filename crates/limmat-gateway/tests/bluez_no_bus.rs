#![cfg(feature = "bluez")]
//! The BlueZ backend without a D-Bus system bus is `Unavailable`, and the message names the bus
//! it tried. A test binary of its own, because libdbus reads `DBUS_SYSTEM_BUS_ADDRESS` once per
//! process.

use limmat_gateway::backend::BleError;
use limmat_gateway::backend::bluez::BluezBackend;

#[tokio::test]
async fn no_bus_is_unavailable_with_a_reason() {
    let nowhere = "unix:path=/nonexistent/limmat-no-bus";
    // SAFETY: the only test of this binary sets the variable before anything reads it.
    unsafe { std::env::set_var("DBUS_SYSTEM_BUS_ADDRESS", nowhere) };
    match BluezBackend::new("hci0").await {
        Err(BleError::Unavailable(why)) => {
            assert!(
                why.contains("cannot connect to the D-Bus system bus"),
                "{why}"
            );
            assert!(why.contains(nowhere), "{why}");
        }
        other => panic!("expected Unavailable, got {:?}", other.map(|_| ())),
    }
}
