//! Reading the identity registers and refusing a device that is not what its
//! configuration says.

use crate::error::{DriverError, Result};
use crate::link::Link;
use crate::profile::DeviceProfile;
use crate::registers::{Block, Field};

/// Reads the identity and table-summary registers and checks model and firmware line.
/// Only registers the map defines are read: a device may refuse a read that spans a
/// gap, so adjacent fields are read together and separate runs apart.
/// A wrong-device answer is remembered in `wrong_device`, so that the driver writes
/// nothing afterwards; a right one clears it.
pub(crate) async fn read_identity(
    link: &mut Link,
    profile: &DeviceProfile,
    wrong_device: &mut Option<DriverError>,
) -> Result<Block> {
    let identity = read_checked_identity(link, profile).await;
    match &identity {
        Err(err @ DriverError::WrongDevice(_)) => *wrong_device = Some(err.clone()),
        Ok(_) => *wrong_device = None,
        Err(_) => {}
    }
    identity
}

async fn read_checked_identity(link: &mut Link, profile: &DeviceProfile) -> Result<Block> {
    let mut spans: Vec<(u16, u16)> = profile
        .identity_map()?
        .summary_fields()
        .map(|field| {
            (
                field.address,
                field.address.saturating_add(field.registers()),
            )
        })
        .collect();
    spans.sort_unstable();
    let mut runs: Vec<(u16, u16)> = Vec::new();
    for (start, end) in spans {
        match runs.last_mut() {
            Some(run) if start <= run.1 => run.1 = run.1.max(end),
            _ => runs.push((start, end)),
        }
    }
    let base = runs.first().map_or(0, |run| run.0);
    let end = runs.last().map_or(0, |run| run.1);
    // One block over all runs; the gaps between runs stay zero and are never decoded.
    let mut words = vec![0u16; usize::from(end - base)];
    for (start, stop) in runs {
        let part = match link.read_holding(start, stop - start).await {
            Ok(part) => part,
            // Another model may not map these addresses: tell it is the wrong device.
            Err(
                err @ DriverError::Exception {
                    code: 0x02 | 0x03, ..
                },
            ) => return Err(wrong_device_or(link, profile, err).await),
            Err(err) => return Err(err),
        };
        let offset = usize::from(start - base);
        words[offset..offset + part.len()].copy_from_slice(&part);
    }
    let block = Block { base, words };
    check_model(&block, profile)?;
    Ok(block)
}

/// Refuses a device whose model or firmware line differ from the profile's.
fn check_model(block: &Block, profile: &DeviceProfile) -> Result<()> {
    let identity = profile.identity_map()?;
    let model_code = profile.modbus_model_code()?;
    let model = required(block, &identity.model, "model")?;
    let firmware = required(block, &identity.firmware, "firmware")?;
    let major = (firmware >> 8) as u8;
    if model != u64::from(model_code) || major != profile.firmware_major {
        return Err(DriverError::WrongDevice(format!(
            "expected a {} (model code {:#06x}) with firmware {}.x, found model code {model:#06x} with firmware {}.{}",
            profile.model,
            model_code,
            profile.firmware_major,
            major,
            firmware & 0xFF
        )));
    }
    Ok(())
}

pub(crate) fn ensure_right_device(wrong_device: &Option<DriverError>) -> Result<()> {
    match wrong_device {
        Some(err) => Err(err.clone()),
        None => Ok(()),
    }
}

/// After a refused identity read: `WrongDevice` if model and firmware alone say so,
/// else the original error.
async fn wrong_device_or(
    link: &mut Link,
    profile: &DeviceProfile,
    original: DriverError,
) -> DriverError {
    let Ok(identity) = profile.identity_map() else {
        return original;
    };
    let (model, firmware) = (&identity.model, &identity.firmware);
    let start = model.address.min(firmware.address);
    let end = (model.address + model.registers()).max(firmware.address + firmware.registers());
    match link.read_holding(start, end - start).await {
        Ok(words) => match check_model(&Block { base: start, words }, profile) {
            Err(wrong) => wrong,
            Ok(()) => original,
        },
        Err(_) => original,
    }
}

/// Reads the device clock (Unix time, UTC), if the profile maps one.
pub(crate) async fn read_clock(link: &mut Link, profile: &DeviceProfile) -> Result<Option<u32>> {
    let Some(field) = profile.identity_map()?.clock else {
        return Ok(None);
    };
    let words = link.read_holding(field.address, field.registers()).await?;
    Ok(field.decode_unsigned(&words).map(|value| value as u32))
}

pub(crate) fn required(block: &Block, field: &Field, name: &str) -> Result<u64> {
    block.unsigned(field).ok_or_else(|| {
        DriverError::Protocol(format!(
            "identity register {name} at {} missing from the answer",
            field.address
        ))
    })
}

pub(crate) fn optional(block: &Block, field: Option<&Field>) -> Option<u64> {
    field.and_then(|field| block.unsigned(field))
}

pub(crate) fn firmware_pair(block: &Block, profile: &DeviceProfile) -> (u8, u8) {
    let firmware = profile
        .identity_map()
        .ok()
        .and_then(|identity| block.unsigned(&identity.firmware))
        .unwrap_or_default();
    ((firmware >> 8) as u8, firmware as u8)
}
