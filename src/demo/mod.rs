//! The demo residence: what `gardien demo` serves, so that a newcomer has something to
//! look at. Seeding is idempotent: a database that already has the residence is kept.

pub mod meters;
pub mod mqtt;

use std::net::SocketAddr;
use std::path::Path;

use crate::domain::key_id::KeyKind;
use crate::domain::roles::Role;
use crate::domain::{LockKind, OccupancyRole, Transport, UnitKind};
use crate::error::Result;
use crate::storage::audit::Actor;
use crate::storage::auth::Membership;
use crate::storage::buildings::BuildingInput;
use crate::storage::controllers::ControllerInput;
use crate::storage::keys::KeyInput;
use crate::storage::locks::LockInput;
use crate::storage::occupancies::OccupancyInput;
use crate::storage::people::PersonInput;
use crate::storage::profiles::ProfileInput;
use crate::storage::providers::ProviderInput;
use crate::storage::residences::ResidenceInput;
use crate::storage::units::UnitInput;
use crate::storage::{Store, Tx};

pub const RESIDENCE_NAME: &str = "Résidence Les Tilleuls";
pub const PASSWORD: &str = "demo-gardien";
pub const ADMIN_EMAIL: &str = "admin@demo.gardien";
pub const COUNCIL_EMAIL: &str = "conseil@demo.gardien";
pub const RESIDENT_EMAIL: &str = "resident@demo.gardien";

/// What the demo holds, for the welcome message.
pub struct Seeded {
    pub residence_id: i64,
    pub lost_badge_example: i64,
}

/// The simulated controllers of the demo, served on loopback.
pub struct DemoDevices {
    pub px2: gardien_simulators::Px2Device,
    pub kl8: gardien_simulators::Kl8Device,
    servers: Vec<gardien_simulators::TcpServer>,
    /// The two MBG-250 meter gateways.
    pub gateways: meters::DemoGateways,
}

impl DemoDevices {
    pub async fn stop(self) {
        for server in self.servers.into_iter().chain(self.gateways.servers) {
            server.stop().await;
        }
    }

    fn addresses(&self) -> Vec<String> {
        self.servers
            .iter()
            .map(|server| server.local_addr().to_string())
            .collect()
    }
}

/// Starts a simulated PX-2 (the halls) and KL-8 (the car park) on free loopback ports
/// and points the demo's controller records at them.
pub async fn start_devices(store: &Store, seeded: &Seeded) -> Result<DemoDevices> {
    use gardien_simulators::{serve_tcp, Faults, Kl8Config, Kl8Device, Px2Config, Px2Device};
    let failed = |err: std::io::Error| {
        crate::Error::Internal(format!("starting a simulated controller: {err}"))
    };
    let px2 = Px2Device::new(
        Px2Config {
            capacity: 2000,
            doors: 4,
            ..Px2Config::default()
        },
        Faults::default(),
    );
    let kl8 = Kl8Device::new(
        Kl8Config {
            capacity: 1000,
            ..Kl8Config::default()
        },
        Faults::default(),
    );
    let servers = vec![
        serve_tcp(px2.clone(), "127.0.0.1:0")
            .await
            .map_err(failed)?,
        serve_tcp(kl8.clone(), "127.0.0.1:0")
            .await
            .map_err(failed)?,
    ];
    let gateways = meters::start(store, seeded.residence_id).await?;
    let devices = DemoDevices {
        px2,
        kl8,
        servers,
        gateways,
    };
    let actor = Actor::system("demo");
    let mut tx = store.write().await?;
    let controllers = tx
        .controllers(seeded.residence_id, &Default::default())
        .await?
        .items;
    let modbus = controllers
        .iter()
        .filter(|c| c.transport != Transport::Mqtt);
    for (controller, address) in modbus.zip(devices.addresses()) {
        let input = ControllerInput {
            name: controller.name.clone(),
            model: controller.model.clone(),
            transport: Transport::ModbusTcp,
            address,
            modbus_unit: controller.modbus_unit,
            notes: controller.notes.clone(),
            policy: controller.policy,
        };
        tx.update_controller(
            &actor,
            seeded.residence_id,
            controller.id,
            &input.validated()?,
        )
        .await?;
    }
    tx.commit().await?;
    Ok(devices)
}

const BUILDINGS: [&str; 3] = ["A", "B", "C"];
const FLATS_PER_BUILDING: usize = 47;
const PARKING_SPACES: usize = 60;
const SURNAMES: [&str; 12] = [
    "Martin", "Bernard", "Dubois", "Thomas", "Robert", "Richard", "Petit", "Durand", "Leroy",
    "Moreau", "Simon", "Laurent",
];

/// Seeds the demo residence unless it is already there.
pub async fn seed(store: &Store) -> Result<Seeded> {
    let mut tx = store.write().await?;
    if let Some(existing) = tx
        .residences(None)
        .await?
        .into_iter()
        .find(|r| r.name == RESIDENCE_NAME)
    {
        let first_key = tx
            .keys(
                existing.id,
                &Default::default(),
                crate::domain::roles::Visibility::Everything,
            )
            .await?;
        return Ok(Seeded {
            residence_id: existing.id,
            lost_badge_example: first_key.items.first().map_or(1, |k| k.id),
        });
    }
    let actor = Actor::system("demo");
    let residence = tx
        .insert_residence(
            &actor,
            &ResidenceInput {
                name: RESIDENCE_NAME.into(),
                address: "12 rue des Tilleuls, 69003 Lyon".into(),
            },
        )
        .await?;
    let rid = residence.id;

    let halls = seed_locks(&mut tx, &actor, rid).await?;
    let mut building_ids = Vec::new();
    for name in BUILDINGS {
        building_ids.push(
            tx.insert_building(
                &actor,
                rid,
                &BuildingInput {
                    name: format!("Bâtiment {name}"),
                },
            )
            .await?
            .id,
        );
    }
    let mut profile_ids = Vec::new();
    for (index, name) in BUILDINGS.iter().enumerate() {
        let input = ProfileInput {
            name: format!("Résident bât. {name}"),
            description: format!("Hall {name}, local vélos et portail du parking"),
            lock_ids: vec![halls.halls[index], halls.bikes, halls.gate],
        };
        profile_ids.push(tx.insert_profile(&actor, rid, &input).await?.id);
    }
    let all_doors = ProfileInput {
        name: "Toutes portes".into(),
        description: "Gardien et prestataires d'entretien".into(),
        lock_ids: [halls.halls.as_slice(), &[halls.bikes, halls.gate]].concat(),
    };
    let all_doors = tx.insert_profile(&actor, rid, &all_doors).await?.id;

    let mut first_badge = None;
    let mut first_person = None;
    for (b, building) in building_ids.iter().enumerate() {
        for flat in 0..FLATS_PER_BUILDING {
            let lot = format!("{}{:02}", BUILDINGS[b], flat + 1);
            let unit = UnitInput {
                lot_number: lot.clone(),
                kind: UnitKind::Flat,
                building_id: Some(*building),
                floor: Some((flat / 8) as i64),
                area_m2: Some(35.0 + ((flat * 7) % 60) as f64),
            };
            let unit = tx.insert_unit(&actor, rid, &unit).await?;
            let surname = SURNAMES[(b * FLATS_PER_BUILDING + flat) % SURNAMES.len()];
            let person = PersonInput {
                full_name: format!("{surname} ({lot})"),
                email: None,
                phone: None,
                is_caretaker: false,
                notes: String::new(),
            };
            let person = tx.insert_person(&actor, rid, &person).await?;
            first_person.get_or_insert(person.id);
            let occupancy = OccupancyInput {
                unit_id: unit.id,
                person_id: person.id,
                role: OccupancyRole::Owner,
                start_date: None,
                end_date: None,
            };
            tx.insert_occupancy(&actor, rid, &occupancy).await?;
            for badge in 0..2 {
                let serial = (b * 1000 + flat * 10 + badge) as u32;
                let key = KeyInput {
                    kind: KeyKind::VigikBadge,
                    identifier: format!("04{:06X}", 0xA20000 + serial),
                    label: format!("Badge {lot}-{}", badge + 1),
                    status: None,
                    holder_person_id: Some(person.id),
                    holder_provider_id: None,
                    unit_id: Some(unit.id),
                    handed_out_on: None,
                    valid_from: None,
                    valid_until: None,
                    notes: String::new(),
                    profile_ids: vec![profile_ids[b]],
                }
                .validated()?;
                let key = tx.insert_key(&actor, rid, &key).await?;
                first_badge.get_or_insert(key.id);
            }
        }
    }
    for space in 0..PARKING_SPACES {
        let unit = UnitInput {
            lot_number: format!("P{:02}", space + 1),
            kind: UnitKind::Parking,
            building_id: None,
            floor: Some(-1),
            area_m2: Some(12.5),
        };
        let unit = tx.insert_unit(&actor, rid, &unit).await?;
        let remote = KeyInput {
            kind: KeyKind::Remote,
            identifier: format!("{}", 7_340_000 + space),
            label: format!("Bip P{:02}", space + 1),
            status: None,
            holder_person_id: None,
            holder_provider_id: None,
            unit_id: Some(unit.id),
            handed_out_on: None,
            valid_from: None,
            valid_until: None,
            notes: String::new(),
            profile_ids: vec![profile_ids[space % BUILDINGS.len()]],
        }
        .validated()?;
        tx.insert_key(&actor, rid, &remote).await?;
    }
    let caretaker = PersonInput {
        full_name: "Mme Garcia (gardienne)".into(),
        email: None,
        phone: None,
        is_caretaker: true,
        notes: String::new(),
    };
    let caretaker = tx.insert_person(&actor, rid, &caretaker).await?;
    let cleaning = ProviderInput {
        name: "Net'Immo".into(),
        trade: "nettoyage".into(),
        email: None,
        phone: None,
        notes: String::new(),
    };
    let cleaning = tx.insert_provider(&actor, rid, &cleaning).await?;
    for (holder_person_id, holder_provider_id, identifier, label) in [
        (Some(caretaker.id), None, "0C0FFEE1", "Badge gardienne"),
        (None, Some(cleaning.id), "04BEEF01", "Badge nettoyage"),
    ] {
        let key = KeyInput {
            kind: KeyKind::VigikBadge,
            identifier: identifier.into(),
            label: label.into(),
            status: None,
            holder_person_id,
            holder_provider_id,
            unit_id: None,
            handed_out_on: None,
            valid_from: None,
            valid_until: None,
            notes: String::new(),
            profile_ids: vec![all_doors],
        }
        .validated()?;
        tx.insert_key(&actor, rid, &key).await?;
    }

    let hash = crate::auth::hash_new_password(PASSWORD.into()).await?;
    tx.insert_user(&actor, ADMIN_EMAIL, "Administrateur démo", &hash, true)
        .await?;
    let council = tx
        .insert_user(&actor, COUNCIL_EMAIL, "Conseil syndical démo", &hash, false)
        .await?;
    let resident = tx
        .insert_user(&actor, RESIDENT_EMAIL, "Résident démo", &hash, false)
        .await?;
    tx.set_membership(
        &actor,
        &Membership {
            user_id: council.id,
            residence_id: rid,
            role: Role::Council,
            person_id: None,
            provider_id: None,
        },
    )
    .await?;
    tx.set_membership(
        &actor,
        &Membership {
            user_id: resident.id,
            residence_id: rid,
            role: Role::Resident,
            person_id: first_person,
            provider_id: None,
        },
    )
    .await?;
    meters::seed(&mut tx, &actor, rid).await?;
    tx.commit().await?;
    Ok(Seeded {
        residence_id: rid,
        lost_badge_example: first_badge.unwrap_or(1),
    })
}

struct DemoLocks {
    halls: Vec<i64>,
    bikes: i64,
    gate: i64,
}

async fn seed_locks(tx: &mut Tx, actor: &Actor, rid: i64) -> Result<DemoLocks> {
    let px2 = ControllerInput {
        name: "Centrale halls".into(),
        model: "PX-2".into(),
        transport: Transport::ModbusTcp,
        address: "127.0.0.1:15020".into(),
        modbus_unit: Some(1),
        notes: "simulée".into(),
        policy: crate::domain::Policy::Enforce,
    };
    let px2 = tx.insert_controller(actor, rid, &px2.validated()?).await?;
    let kl8 = ControllerInput {
        name: "Centrale parking".into(),
        model: "KL-8".into(),
        transport: Transport::ModbusTcp,
        address: "127.0.0.1:15021".into(),
        modbus_unit: Some(17),
        notes: "simulée".into(),
        policy: crate::domain::Policy::Enforce,
    };
    let kl8 = tx.insert_controller(actor, rid, &kl8.validated()?).await?;
    let mut halls = Vec::new();
    for (door, name) in BUILDINGS.iter().enumerate() {
        let lock = LockInput {
            name: format!("Hall {name}"),
            kind: LockKind::Door,
            building_id: None,
            controller_id: Some(px2.id),
            door_number: Some(door as i64 + 1),
        };
        halls.push(tx.insert_lock(actor, rid, &lock).await?.id);
    }
    let bikes = LockInput {
        name: "Local vélos".into(),
        kind: LockKind::Door,
        building_id: None,
        controller_id: Some(px2.id),
        door_number: Some(4),
    };
    let bikes = tx.insert_lock(actor, rid, &bikes).await?.id;
    let gate = LockInput {
        name: "Portail parking".into(),
        kind: LockKind::Gate,
        building_id: None,
        controller_id: Some(kl8.id),
        door_number: Some(1),
    };
    let gate = tx.insert_lock(actor, rid, &gate).await?.id;
    Ok(DemoLocks { halls, bikes, gate })
}

/// The message `gardien demo` prints: where to look and what to try.
pub fn welcome(
    seeded: &Seeded,
    listen: SocketAddr,
    database: &Path,
    devices: &DemoDevices,
) -> String {
    let base = format!("http://{listen}");
    let rid = seeded.residence_id;
    let key = seeded.lost_badge_example;
    let addresses = devices.addresses().join(" and ");
    format!(
        "gardien demo — {RESIDENCE_NAME}, database {database}\n\
         Simulated controllers: PX-2 (halls) and KL-8 (car park) on {addresses}\n\
         Simulated meter gateways: two MBG-250 (firmware 1.x and 2.x) with 3 meters per flat; \
         one collection runs now, then every night at 02:00\n\
         API: {base}/api/v1 (OpenAPI: {base}/api/v1/openapi.json)\n\
         Accounts (password {PASSWORD}): {ADMIN_EMAIL} (admin), {COUNCIL_EMAIL} (council), {RESIDENT_EMAIL} (resident)\n\n\
         Try it:\n\
         TOKEN=$(curl -s {base}/api/v1/auth/login -H 'content-type: application/json' \\\n\
           -d '{{\"email\":\"{COUNCIL_EMAIL}\",\"password\":\"{PASSWORD}\"}}' | sed 's/.*\"token\":\"\\([^\"]*\\)\".*/\\1/')\n\
         curl -s -H \"authorization: Bearer $TOKEN\" {base}/api/v1/residences/{rid}/keys/{key}/locks\n\
         curl -s -X POST -H \"authorization: Bearer $TOKEN\" -H 'content-type: application/json' \\\n\
           -d '{{\"reason\":\"perdu dans le bus\"}}' {base}/api/v1/residences/{rid}/keys/{key}/declare-lost\n\
         curl -s -H \"authorization: Bearer $TOKEN\" {base}/api/v1/residences/{rid}/keys/{key}/sync\n\
         curl -s -H \"authorization: Bearer $TOKEN\" {base}/api/v1/residences/{rid}/keys/{key}/history\n\
         curl -s -H \"authorization: Bearer $TOKEN\" '{base}/api/v1/residences/{rid}/units/1/consumption?from=2026-08-01&to=2026-10-31&period=month'\n\
         curl -s -H \"authorization: Bearer $TOKEN\" {base}/api/v1/residences/{rid}/collections\n\n\
         The first minute programs the ~350 keys into the simulated controllers; \
         /residences/{rid}/controllers/1/status shows progress.\n\
         Ctrl-C stops the demo; the database stays for next time.",
        database = database.display()
    )
}
