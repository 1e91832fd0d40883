//! The devices the BlueZoo test broadcasts and serves, each on its own mock adapter (BlueZoo
//! reports only the first advertisement of an adapter): the beacons of vectors V1, V4 and V6,
//! and a peripheral shaped like the simulator's "Limmat HRM" (Battery Level readable and
//! notifying, a writable vendor characteristic, and a vendor secret that needs authorisation).

use bluer::adv::{Advertisement, AdvertisementHandle};
use bluer::gatt::local::{
    Application, ApplicationHandle, Characteristic, CharacteristicNotify,
    CharacteristicNotifyMethod, CharacteristicRead, CharacteristicWrite, CharacteristicWriteMethod,
    Descriptor, DescriptorRead, ReqError, Service,
};
use bluer::{Adapter, Uuid};
use futures::FutureExt;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// V1: iBeacon `4c696d6d-…-303031`, major 1, minor 7.
pub const V1: &str = "02154c696d6d6174426561636f6e2d30303100010007c5";
/// V4: AltBeacon from company 0x0118.
pub const V4: &str = "beac4c696d6d6174426561636f6e2d303031002a0003bf5a";
/// V6: Eddystone-UID.
pub const V6: &str = "00ee4c696d6d6f6e2d3030310000000000010000";

pub const BATTERY_SERVICE: Uuid = bluer::Uuid::from_u128(0x0000180f_0000_1000_8000_00805f9b34fb);
pub const BATTERY_LEVEL: Uuid = bluer::Uuid::from_u128(0x00002a19_0000_1000_8000_00805f9b34fb);
pub const VENDOR_SERVICE: Uuid = bluer::Uuid::from_u128(0x6c696d6d_6174_4000_8000_00000000f000);
pub const VENDOR_CONFIG: Uuid = bluer::Uuid::from_u128(0x6c696d6d_6174_4000_8000_00000000f001);
pub const VENDOR_SECRET: Uuid = bluer::Uuid::from_u128(0x6c696d6d_6174_4000_8000_00000000f002);
/// Characteristic User Description.
pub const USER_DESCRIPTION: Uuid = bluer::Uuid::from_u128(0x00002901_0000_1000_8000_00805f9b34fb);
pub const EDDYSTONE: Uuid = bluer::Uuid::from_u128(0x0000feaa_0000_1000_8000_00805f9b34fb);

pub fn bytes(hex: &str) -> Vec<u8> {
    limmat_gateway::hex::decode(hex).expect("test vector hex")
}

fn discoverable() -> Advertisement {
    Advertisement {
        discoverable: Some(true),
        ..Default::default()
    }
}

/// Manufacturer data keyed by company id (V1, V4).
pub async fn manufacturer_beacon(
    adapter: &Adapter,
    company: u16,
    payload: Vec<u8>,
) -> AdvertisementHandle {
    let advertisement = Advertisement {
        manufacturer_data: BTreeMap::from([(company, payload)]),
        ..discoverable()
    };
    adapter
        .advertise(advertisement)
        .await
        .expect("registering a manufacturer-data advertisement")
}

/// Eddystone service data keyed by UUID, with `FEAA` in the service UUID list (V6).
pub async fn eddystone_beacon(adapter: &Adapter, payload: Vec<u8>) -> AdvertisementHandle {
    let advertisement = Advertisement {
        service_uuids: BTreeSet::from([EDDYSTONE]),
        service_data: BTreeMap::from([(EDDYSTONE, payload)]),
        ..discoverable()
    };
    adapter
        .advertise(advertisement)
        .await
        .expect("registering the Eddystone advertisement")
}

/// The peripheral: its advertisement and GATT application, and the handles that change it.
pub struct Hrm {
    pub _advertisement: AdvertisementHandle,
    pub _application: ApplicationHandle,
    /// Setting it changes Battery Level, which notifies subscribers.
    pub battery: watch::Sender<u8>,
    /// What the vendor characteristic holds.
    pub config: Arc<Mutex<Vec<u8>>>,
}

pub async fn hrm(adapter: &Adapter) -> Hrm {
    let (battery, battery_rx) = watch::channel(100u8);
    let config = Arc::new(Mutex::new(vec![0u8]));

    let level = battery_rx.clone();
    let battery_level = Characteristic {
        uuid: BATTERY_LEVEL,
        read: Some(CharacteristicRead {
            read: true,
            fun: Box::new(move |_| {
                let value = *level.borrow();
                async move { Ok(vec![value]) }.boxed()
            }),
            ..Default::default()
        }),
        notify: Some(CharacteristicNotify {
            notify: true,
            method: CharacteristicNotifyMethod::Fun(Box::new(move |mut notifier| {
                let mut changes = battery_rx.clone();
                changes.mark_unchanged();
                async move {
                    // Each StartNotify gets a notifier; it forwards changes until StopNotify.
                    tokio::spawn(async move {
                        while changes.changed().await.is_ok() {
                            let value = *changes.borrow_and_update();
                            if notifier.notify(vec![value]).await.is_err() {
                                break;
                            }
                        }
                    });
                }
                .boxed()
            })),
            ..Default::default()
        }),
        ..Default::default()
    };

    let read_config = config.clone();
    let write_config = config.clone();
    let vendor_config = Characteristic {
        uuid: VENDOR_CONFIG,
        read: Some(CharacteristicRead {
            read: true,
            fun: Box::new(move |_| {
                let value = read_config.lock().expect("config lock").clone();
                async move { Ok(value) }.boxed()
            }),
            ..Default::default()
        }),
        write: Some(CharacteristicWrite {
            write: true,
            write_without_response: true,
            method: CharacteristicWriteMethod::Fun(Box::new(move |value, _| {
                let config = write_config.clone();
                async move {
                    if value.len() > 20 {
                        return Err(ReqError::InvalidValueLength);
                    }
                    *config.lock().expect("config lock") = value;
                    Ok(())
                }
                .boxed()
            })),
            ..Default::default()
        }),
        descriptors: vec![Descriptor {
            uuid: USER_DESCRIPTION,
            read: Some(DescriptorRead {
                read: true,
                fun: Box::new(|_| async { Ok(b"Vendor config".to_vec()) }.boxed()),
                ..Default::default()
            }),
            ..Default::default()
        }],
        ..Default::default()
    };

    let vendor_secret = Characteristic {
        uuid: VENDOR_SECRET,
        read: Some(CharacteristicRead {
            read: true,
            fun: Box::new(|_| async { Err(ReqError::NotAuthorized) }.boxed()),
            ..Default::default()
        }),
        ..Default::default()
    };

    // BlueZ keeps GATT (0x1801) to itself; a peripheral's own copy must stay hidden too.
    let gatt_service = Service {
        uuid: bluer::Uuid::from_u128(0x00001801_0000_1000_8000_00805f9b34fb),
        primary: true,
        characteristics: vec![Characteristic {
            // Service Changed.
            uuid: bluer::Uuid::from_u128(0x00002a05_0000_1000_8000_00805f9b34fb),
            notify: Some(CharacteristicNotify {
                indicate: true,
                method: CharacteristicNotifyMethod::Fun(Box::new(|_| async {}.boxed())),
                ..Default::default()
            }),
            ..Default::default()
        }],
        ..Default::default()
    };

    let application = Application {
        services: vec![
            gatt_service,
            Service {
                uuid: BATTERY_SERVICE,
                primary: true,
                characteristics: vec![battery_level],
                ..Default::default()
            },
            Service {
                uuid: VENDOR_SERVICE,
                primary: true,
                characteristics: vec![vendor_config, vendor_secret],
                ..Default::default()
            },
        ],
        ..Default::default()
    };
    let application = adapter
        .serve_gatt_application(application)
        .await
        .expect("registering the GATT application");

    let advertisement = Advertisement {
        local_name: Some("Limmat HRM".into()),
        service_uuids: BTreeSet::from([BATTERY_SERVICE, VENDOR_SERVICE]),
        ..discoverable()
    };
    let advertisement = adapter
        .advertise(advertisement)
        .await
        .expect("registering the HRM advertisement");

    Hrm {
        _advertisement: advertisement,
        _application: application,
        battery,
        config,
    }
}

/// Unregisters an advertisement and returns once BlueZoo has let go of it, so the adapter's
/// next advertisement is the one it reports.
pub async fn withdraw(adapter: &Adapter, advertisement: AdvertisementHandle) {
    use bluer::{AdapterEvent, AdapterProperty};
    use futures::StreamExt;
    let events = adapter.events().await.expect("adapter events");
    let mut events = std::pin::pin!(events);
    drop(advertisement);
    loop {
        let active = adapter
            .active_advertising_instances()
            .await
            .expect("active advertising instances");
        if active == 0 {
            return;
        }
        // Wait for the next change of the adapter (ActiveInstances, among others).
        while let Some(event) = events.next().await {
            if matches!(
                event,
                AdapterEvent::PropertyChanged(AdapterProperty::ActiveAdvertisingInstances(_))
            ) {
                break;
            }
        }
    }
}
