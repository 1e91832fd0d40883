//! Whether a device's link is up, read from its events: the connections' watcher drops a
//! node's attribute table when it goes down (`links`), and notification streams end then
//! (`gatt`). Ground floor of the backend's connection files, so neither imports the other for it.

use bluer::{DeviceEvent, DeviceProperty};
use futures::{Stream, StreamExt};

/// Resolves when a device's events say its link is down, or end (the device went away).
pub async fn link_down(events: impl Stream<Item = DeviceEvent>) {
    let mut events = std::pin::pin!(events);
    while let Some(event) = events.next().await {
        if matches!(
            event,
            DeviceEvent::PropertyChanged(DeviceProperty::Connected(false))
        ) {
            return;
        }
    }
}
