//! Every file of firmware-config/ parses, passes the checks, and is in the build.

use gardien_drivers::lock::KeyIdentity;
use gardien_drivers::{Credential, DeviceRole, Registry};

#[test]
fn every_profile_file_loads_and_is_embedded() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../firmware-config");
    let files: Vec<(String, String)> = std::fs::read_dir(&dir)
        .expect("firmware-config/ exists")
        .map(|entry| entry.expect("readable entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "toml"))
        .map(|path| {
            let text = std::fs::read_to_string(&path).expect("readable profile");
            (path.display().to_string(), text)
        })
        .collect();
    assert!(!files.is_empty());
    let from_disk = Registry::from_files(files.clone()).expect("every profile is valid");
    let builtin = Registry::builtin().expect("embedded profiles are valid");
    assert_eq!(from_disk.all().count(), files.len(), "one profile per file");
    for profile in from_disk.all() {
        assert!(
            builtin.get(&profile.id).is_some(),
            "{} is embedded",
            profile.id
        );
    }
}

#[test]
fn models_are_found_by_name_and_firmware() {
    let registry = Registry::builtin().expect("profiles");
    assert_eq!(
        registry
            .for_model(DeviceRole::LockController, "px-2", Some(2))
            .map(|p| p.id.as_str()),
        Some("px2-fw2")
    );
    assert_eq!(
        registry
            .for_model(DeviceRole::LockController, "KL8", None)
            .map(|p| p.id.as_str()),
        Some("kl8-fw1")
    );
    assert!(registry
        .for_model(DeviceRole::LockController, "PX-2", Some(1))
        .is_none());
    for (major, id) in [(1, "mbg250-fw1"), (2, "mbg250-fw2")] {
        assert_eq!(
            registry
                .for_model(DeviceRole::MeterGateway, "mbg250", Some(major))
                .map(|p| p.id.as_str()),
            Some(id)
        );
    }
    // A gateway is not a lock controller, whatever its name.
    assert!(registry
        .for_model(DeviceRole::LockController, "MBG-250", None)
        .is_none());
}

#[test]
fn each_model_stores_keys_its_own_way() {
    let registry = Registry::builtin().expect("profiles");
    let (px2, kl8) = (
        registry.get("px2-fw2").expect("px2"),
        registry.get("kl8-fw1").expect("kl8"),
    );
    let badge = KeyIdentity::Badge(vec![0x04, 0xA2, 0x2B, 0x91]);
    assert_eq!(
        px2.credential_for(&badge),
        Ok(Credential::Uid(vec![0x04, 0xA2, 0x2B, 0x91]))
    );
    assert_eq!(
        kl8.credential_for(&badge),
        Ok(Credential::Card(2_435_555_844))
    );
    let long_badge = KeyIdentity::Badge(vec![0x04, 1, 2, 3, 4, 5, 6]);
    assert!(px2.credential_for(&long_badge).is_ok());
    let refusal = kl8
        .credential_for(&long_badge)
        .expect_err("a KL-8 cannot hold a 7-byte UID");
    assert!(refusal.to_string().contains("KL-8"), "{refusal}");
    assert_eq!(
        kl8.credential_for(&KeyIdentity::Remote(123_456)),
        Ok(Credential::Card(123_456))
    );
    assert_eq!(
        px2.credential_for(&KeyIdentity::Remote(0x0001_E240)),
        Ok(Credential::Uid(vec![0, 1, 0xE2, 0x40]))
    );
}

#[test]
fn a_broken_profile_is_refused_with_its_file_name() {
    let good = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../firmware-config/px2-fw2.toml"
    ))
    .expect("profile");
    let broken = good.replace("max_read = 125", "max_read = 300");
    let error = Registry::from_files([("broken.toml".to_string(), broken)]).expect_err("refused");
    assert!(error.starts_with("broken.toml"), "{error}");
    let unknown = good.replace("timeout_ms = 1000", "timeout_ms = 1000\ncolour = 1");
    assert!(Registry::from_files([("unknown.toml".to_string(), unknown)]).is_err());
}

#[test]
fn a_gateway_profile_must_be_consistent() {
    let good = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../firmware-config/mbg250-fw2.toml"
    ))
    .expect("profile");
    // An integer index without its exponent cannot be scaled.
    let no_exponent = good.replace("exponent = { address = 5, type = \"i16\" }", "");
    let error = Registry::from_files([("g.toml".to_string(), no_exponent)]).expect_err("refused");
    assert!(error.contains("exponent"), "{error}");
    let with_keys = format!(
        "{good}\n[keys]\nbadge_uid_lengths = [4]\nbadge_encoding = \"uid\"\nremote_encoding = \"card\"\nmax_doors = 1\n"
    );
    assert!(Registry::from_files([("k.toml".to_string(), with_keys)]).is_err());
    let too_wide = good.replace("reading_stride = 16", "reading_stride = 8");
    assert!(Registry::from_files([("w.toml".to_string(), too_wide)]).is_err());
}
