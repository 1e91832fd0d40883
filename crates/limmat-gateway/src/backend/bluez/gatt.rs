//! GATT on BlueZ (`gateway-api.md` §6.3): the attribute table of a connected node and the
//! operations on it. Handles are bluer's attribute `id()`s, which BlueZ takes from the ATT
//! handles in its object paths (`…/service0010/char0012/desc0014`), so they are unique within a
//! node and stable until the link drops. The GAP (`0x1800`) and GATT (`0x1801`) services are
//! hidden, as BlueZ itself does. Properties are checked here before anything goes on air
//! (§2.6); BlueZ's own refusals still map through [`super::error`].

use super::convert;
use super::error::{Op, map};
use crate::backend::{
    BleError, Characteristic, Descriptor, Handle, Notification, NotifyKind, Service, WriteMode,
    props,
};
use crate::uuid::Uuid;
use bluer::Device;
use bluer::gatt::remote::{self, CharacteristicWriteRequest};
use bluer::gatt::{CharacteristicFlags, WriteOp};
use futures::StreamExt;
use futures::stream::BoxStream;
use std::collections::HashMap;
use std::time::SystemTime;

/// The services BlueZ keeps to itself.
const HIDDEN: [Uuid; 2] = [Uuid::from_u16(0x1800), Uuid::from_u16(0x1801)];

/// A node's attribute table, read once per connection.
pub struct Table {
    /// The services, GAP `0x1800` and GATT `0x1801` left out (§6.3).
    pub services: Vec<Service>,
    /// The characteristics of those services.
    pub characteristics: Vec<Characteristic>,
    /// The descriptors of those characteristics.
    pub descriptors: Vec<Descriptor>,
    remote_characteristics: HashMap<Handle, (remote::Characteristic, CharacteristicFlags)>,
    remote_descriptors: HashMap<Handle, remote::Descriptor>,
}

/// Reads the attribute table; waits for BlueZ to resolve the services first.
pub async fn discover(device: &Device) -> Result<Table, BleError> {
    let attr = |e: bluer::Error| map(&e, Op::Attribute);
    let mut table = Table {
        services: Vec::new(),
        characteristics: Vec::new(),
        descriptors: Vec::new(),
        remote_characteristics: HashMap::new(),
        remote_descriptors: HashMap::new(),
    };
    for service in device.services().await.map_err(attr)? {
        let uuid = convert::uuid(service.uuid().await.map_err(attr)?);
        if HIDDEN.contains(&uuid) {
            continue;
        }
        let handle = service.id();
        table.services.push(Service {
            handle,
            uuid,
            primary: service.primary().await.map_err(attr)?,
        });
        for characteristic in service.characteristics().await.map_err(attr)? {
            let flags = characteristic.flags().await.map_err(attr)?;
            let char_handle = characteristic.id();
            table.characteristics.push(Characteristic {
                handle: char_handle,
                uuid: convert::uuid(characteristic.uuid().await.map_err(attr)?),
                service: handle,
                properties: convert::properties(&flags),
            });
            for descriptor in characteristic.descriptors().await.map_err(attr)? {
                table.descriptors.push(Descriptor {
                    handle: descriptor.id(),
                    uuid: convert::uuid(descriptor.uuid().await.map_err(attr)?),
                    characteristic: char_handle,
                });
                table.remote_descriptors.insert(descriptor.id(), descriptor);
            }
            table
                .remote_characteristics
                .insert(char_handle, (characteristic, flags));
        }
    }
    table.services.sort_by_key(|s| s.handle);
    table.characteristics.sort_by_key(|c| c.handle);
    table.descriptors.sort_by_key(|d| d.handle);
    Ok(table)
}

impl Table {
    /// The characteristics of one service (`NotFound` for an unknown one), or all.
    pub fn characteristics_of(
        &self,
        service: Option<Handle>,
    ) -> Result<Vec<Characteristic>, BleError> {
        match service {
            None => Ok(self.characteristics.clone()),
            Some(s) if self.services.iter().any(|x| x.handle == s) => Ok(self
                .characteristics
                .iter()
                .filter(|c| c.service == s)
                .cloned()
                .collect()),
            Some(_) => Err(BleError::NotFound),
        }
    }

    /// The descriptors of one characteristic (`NotFound` for an unknown one), or all.
    pub fn descriptors_of(
        &self,
        characteristic: Option<Handle>,
    ) -> Result<Vec<Descriptor>, BleError> {
        match characteristic {
            None => Ok(self.descriptors.clone()),
            Some(c) if self.remote_characteristics.contains_key(&c) => Ok(self
                .descriptors
                .iter()
                .filter(|d| d.characteristic == c)
                .cloned()
                .collect()),
            Some(_) => Err(BleError::NotFound),
        }
    }

    fn properties(&self, handle: Handle) -> u8 {
        self.characteristics
            .iter()
            .find(|c| c.handle == handle)
            .map_or(0, |c| c.properties)
    }

    /// Reads a characteristic (with the read property) or a descriptor.
    pub async fn read(&self, handle: Handle) -> Result<Vec<u8>, BleError> {
        let attr = |e: bluer::Error| map(&e, Op::Attribute);
        if let Some((characteristic, _)) = self.remote_characteristics.get(&handle) {
            if self.properties(handle) & props::READ == 0 {
                return Err(BleError::NotPermitted);
            }
            return characteristic.read().await.map_err(attr);
        }
        match self.remote_descriptors.get(&handle) {
            Some(descriptor) => descriptor.read().await.map_err(attr),
            None => Err(BleError::NotFound),
        }
    }

    /// Writes a characteristic in the given mode (which its properties must allow) or a
    /// descriptor.
    pub async fn write(
        &self,
        handle: Handle,
        value: &[u8],
        mode: WriteMode,
    ) -> Result<(), BleError> {
        let attr = |e: bluer::Error| map(&e, Op::Attribute);
        if let Some((characteristic, flags)) = self.remote_characteristics.get(&handle) {
            let properties = self.properties(handle);
            let (allowed, op_type) = match mode {
                WriteMode::Request => (properties & props::WRITE != 0, WriteOp::Request),
                WriteMode::Command => (
                    properties & props::WRITE_WITHOUT_RESPONSE != 0,
                    WriteOp::Command,
                ),
                WriteMode::Reliable => (flags.reliable_write, WriteOp::Reliable),
            };
            if !allowed {
                return Err(BleError::NotPermitted);
            }
            let request = CharacteristicWriteRequest {
                op_type,
                ..Default::default()
            };
            return characteristic
                .write_ext(value, &request)
                .await
                .map_err(attr);
        }
        match self.remote_descriptors.get(&handle) {
            Some(descriptor) => descriptor.write(value).await.map_err(attr),
            None => Err(BleError::NotFound),
        }
    }

    /// Starts notification or indication. BlueZ picks the kind itself (notification when the
    /// characteristic has both), so `kind` only selects the property that must be present.
    /// The stream ends when the link drops or the device goes away.
    pub async fn subscribe(
        &self,
        device: &Device,
        handle: Handle,
        kind: NotifyKind,
    ) -> Result<BoxStream<'static, Notification>, BleError> {
        let Some((characteristic, _)) = self.remote_characteristics.get(&handle) else {
            return Err(BleError::NotFound);
        };
        let needed = match kind {
            NotifyKind::Notify => props::NOTIFY,
            NotifyKind::Indicate => props::INDICATE,
        };
        if self.properties(handle) & needed == 0 {
            return Err(BleError::NotPermitted);
        }
        // Watch the link before starting, so a drop in between still ends the stream.
        let events = device.events().await.map_err(|e| map(&e, Op::Attribute))?;
        if !device
            .is_connected()
            .await
            .map_err(|e| map(&e, Op::Attribute))?
        {
            return Err(BleError::NotConnected);
        }
        let values = characteristic
            .notify()
            .await
            .map_err(|e| map(&e, Op::Attribute))?;
        Ok(values
            .map(|value| Notification {
                value,
                received: SystemTime::now(),
            })
            .take_until(super::link::link_down(events))
            .boxed())
    }
}
