# A fix for BlueZoo (1.0.2), loaded by Python at start-up because the BlueZoo test puts this
# directory on PYTHONPATH (crates/limmat-gateway/tests/bluez/bus.rs).
#
# BlueZoo declares org.bluez.Device1.ManufacturerData as a{sv}, but BlueZ's type is a{qv}: the
# company id is a u16. The advertisement it copies the data from (registered by bluer with the
# BlueZ type) therefore carries integer keys that cannot be sent as strings, and every device
# with manufacturer data fails to export ("Message append error, expected str got 76"). Giving
# the property BlueZ's signature before anything is exported fixes it; a BlueZoo that already
# declares a{qv} is left as it is.
try:
    from bluezoo.interfaces.Device import DeviceInterface
    from bluezoo.device import Device

    for cls in (DeviceInterface, Device):
        prop = cls.__dict__.get("ManufacturerData")
        if prop is not None and getattr(prop, "property_signature", None) == "a{sv}":
            prop.property_signature = "a{qv}"
except Exception:  # Not BlueZoo, or a layout this fix does not know: change nothing.
    pass
