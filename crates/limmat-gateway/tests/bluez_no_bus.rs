//! The BlueZ backend without a D-Bus system bus is `Unavailable`, and the message names the bus
//! it tried; the gateway on it (what `limmat gateway --backend bluez` starts) refuses to start
//! with that message. A test binary of its own, because libdbus reads
//! `DBUS_SYSTEM_BUS_ADDRESS` once per process.
#![cfg(feature = "bluez")]

use limmat_gateway::backend::BleError;
use limmat_gateway::backend::bluez::BluezBackend;
use limmat_gateway::config::{BackendKind, GatewayConfig};
use limmat_gateway::server::{Gateway, Options, StartError};
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn no_bus_is_unavailable_with_a_reason() {
    let nowhere = "unix:path=/nonexistent/limmat-no-bus";
    // SAFETY: the only test of this binary sets the variable before anything reads it.
    // Edition 2024: the environment is process-wide; set before the bus is first read.
    #[allow(unsafe_code)]
    unsafe {
        std::env::set_var("DBUS_SYSTEM_BUS_ADDRESS", nowhere);
    }
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

    // The whole gateway: `Gateway::start` fails (the CLI prints it and exits non-zero), before
    // it binds its listener or opens its state database.
    let state = tempfile::tempdir().expect("state dir");
    let mut config = GatewayConfig::default();
    config.gateway.state_dir = state.path().join("state");
    config.api.listen = Some("127.0.0.1:0".into());
    config.backend.kind = BackendKind::Bluez;
    let options = Options {
        config,
        prometheus: None,
    };
    match Gateway::start(options, CancellationToken::new()).await {
        Err(error @ StartError::Backend("bluez", _)) => {
            let message = error.to_string();
            assert!(
                message.starts_with("the bluez backend cannot start: "),
                "{message}"
            );
            assert!(
                message.contains("cannot connect to the D-Bus system bus"),
                "{message}"
            );
            assert!(message.contains(nowhere), "{message}");
        }
        Err(other) => panic!("expected a bluez backend error, got {other}"),
        Ok(_) => panic!("the gateway started without a bus"),
    }
    assert!(
        !state.path().join("state").exists(),
        "no state database was created"
    );
}
