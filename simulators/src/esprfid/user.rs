//! One user file. esp-rfid writes the `adduser` message it received to flash as the
//! user's file and reads its fields back when a badge is shown; numbers may come as
//! JSON numbers or as numeric strings, both read the same (ArduinoJson converts).

use serde::Serialize;
use serde_json::{json, Map, Value};

use super::UserlistShape;

/// Longest uid the firmware accepts (it names a file after it).
pub const MAX_UID_LEN: usize = 19;

/// What a user file says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EspRfidUser {
    /// Lowercased, as the device keys its users.
    pub uid: String,
    pub user: String,
    /// `acctype`, `acctype2`..`acctype4`: one per relay; 0 disabled, 1 always, 99 admin.
    /// A missing field reads 0.
    pub acctype: [i64; 4],
    /// Unix times; a missing field reads 0, so a user without `validuntil` is expired.
    pub validsince: i64,
    pub validuntil: i64,
}

/// A user as stored: the message as received, and what it says.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StoredUser {
    pub raw: String,
    pub user: EspRfidUser,
}

impl StoredUser {
    /// Reads an `adduser` command; `raw` is its text as received.
    pub fn from_command(command: &Map<String, Value>, raw: &str) -> Result<StoredUser, String> {
        let uid = uid_field(command)?;
        let user = match command.get("user") {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(name)) => name.clone(),
            Some(Value::Number(n)) => n.to_string(),
            Some(other) => return Err(format!("user is not a name: {other}")),
        };
        let mut acctype = [0; 4];
        for (i, slot) in acctype.iter_mut().enumerate() {
            let field = match i {
                0 => "acctype".to_owned(),
                i => format!("acctype{}", i + 1),
            };
            *slot = number(command, &field)?;
        }
        Ok(StoredUser {
            raw: raw.trim().to_owned(),
            user: EspRfidUser {
                uid,
                user,
                acctype,
                validsince: number(command, "validsince")?,
                validuntil: number(command, "validuntil")?,
            },
        })
    }

    /// A user put in by the simulator itself, as if a client had sent this `adduser`.
    pub fn from_user(user: &EspRfidUser, doorip: &str) -> Result<StoredUser, String> {
        let mut command = json!({
            "cmd": "adduser", "doorip": doorip, "uid": user.uid, "user": user.user,
            "acctype": user.acctype[0], "validsince": user.validsince,
            "validuntil": user.validuntil,
        });
        for (i, acctype) in user.acctype.iter().enumerate().skip(1) {
            command[format!("acctype{}", i + 1)] = json!(acctype);
        }
        let raw = command.to_string();
        match command {
            Value::Object(map) => StoredUser::from_command(&map, &raw),
            _ => Err("not an object".into()),
        }
    }

    /// The `getuserlist` message for this user.
    pub fn list_entry(&self, shape: UserlistShape, relays: u8) -> String {
        match shape {
            UserlistShape::Stored => self.raw.clone(),
            UserlistShape::Userfile => {
                let u = &self.user;
                let mut entry = json!({
                    "command": "userfile", "uid": u.uid, "user": u.user,
                    "acctype": u.acctype[0], "acctype2": u.acctype[1],
                    "validsince": u.validsince, "validuntil": u.validuntil,
                });
                for relay in 3..=relays.min(4) {
                    entry[format!("acctype{relay}")] = json!(u.acctype[usize::from(relay) - 1]);
                }
                entry.to_string()
            }
        }
    }
}

/// The command's `uid`, checked and lowercased.
pub(crate) fn uid_field(command: &Map<String, Value>) -> Result<String, String> {
    let uid = match command.get("uid") {
        Some(Value::String(uid)) => uid,
        Some(other) => return Err(format!("uid is not a string: {other}")),
        None => return Err("uid missing".into()),
    };
    if uid.is_empty() || uid.len() > MAX_UID_LEN || !uid.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("uid {uid:?} is not 1 to {MAX_UID_LEN} hex digits"));
    }
    Ok(uid.to_ascii_lowercase())
}

/// A whole number given as a number or a numeric string; missing or null reads 0.
fn number(command: &Map<String, Value>, field: &str) -> Result<i64, String> {
    let bad = |value: &Value| format!("{field} is not a number: {value}");
    match command.get(field) {
        None | Some(Value::Null) => Ok(0),
        Some(value @ Value::Number(n)) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.is_finite()).map(|f| f as i64))
            .ok_or_else(|| bad(value)),
        Some(value @ Value::String(text)) => {
            let text = text.trim();
            text.parse::<i64>()
                .ok()
                .or_else(|| {
                    let float = text.parse::<f64>().ok()?;
                    float.is_finite().then_some(float as i64)
                })
                .ok_or_else(|| bad(value))
        }
        Some(value) => Err(bad(value)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<StoredUser, String> {
        let Value::Object(map) = serde_json::from_str(text).unwrap() else {
            panic!("object");
        };
        StoredUser::from_command(&map, text)
    }

    #[test]
    fn numbers_and_numeric_strings_read_the_same() {
        let a = parse(
            r#"{"cmd":"adduser","doorip":"1","uid":"04A22B91","user":"Ann","acctype":1,"validuntil":2000000000}"#,
        )
        .unwrap();
        let b = parse(
            r#"{"cmd":"adduser","doorip":"1","uid":"04a22b91","user":"Ann","acctype":"1","validuntil":" 2000000000"}"#,
        )
        .unwrap();
        assert_eq!(a.user, b.user);
        assert_eq!(a.user.uid, "04a22b91");
        assert_eq!(a.user.acctype, [1, 0, 0, 0]);
        assert_eq!(a.user.validsince, 0);
        assert!(b.raw.contains(r#""acctype":"1""#));
    }

    #[test]
    fn bad_fields_are_named() {
        for (text, expected) in [
            (r#"{"user":"x"}"#, "uid missing"),
            (r#"{"uid":1234}"#, "uid is not a string"),
            (r#"{"uid":"04g2"}"#, "hex digits"),
            (r#"{"uid":"01234567890123456789"}"#, "hex digits"),
            (r#"{"uid":"04","acctype":"always"}"#, "acctype is not"),
            (r#"{"uid":"04","acctype3":[1]}"#, "acctype3 is not"),
            (r#"{"uid":"04","user":{}}"#, "user is not"),
        ] {
            let err = parse(text).unwrap_err();
            assert!(err.contains(expected), "{text}: {err}");
        }
    }

    #[test]
    fn list_entries_in_both_shapes() {
        let text = r#"{"cmd":"adduser","doorip":"1","uid":"AB","acctype":"99","acctype3":1}"#;
        let stored = parse(text).unwrap();
        assert_eq!(stored.list_entry(UserlistShape::Stored, 4), text);
        let entry: Value =
            serde_json::from_str(&stored.list_entry(UserlistShape::Userfile, 3)).unwrap();
        assert_eq!(
            entry,
            json!({"command": "userfile", "uid": "ab", "user": "", "acctype": 99,
                   "acctype2": 0, "acctype3": 1, "validsince": 0, "validuntil": 0})
        );
        let again = StoredUser::from_user(&stored.user, "1").unwrap();
        assert_eq!(again.user, stored.user);
    }
}
