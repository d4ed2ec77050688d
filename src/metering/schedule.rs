//! The nightly collection: at a local time of day (default 02:00 Europe/Paris), every
//! night, once across all instances (the run is keyed by its date). A service started
//! a little after the hour catches up on the night it missed.

use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use super::collect::{collect, CollectOptions};
use crate::storage::Store;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CollectionConfig {
    /// Run the nightly collection in `gardien serve`.
    pub enabled: bool,
    /// Local time of day, `HH:MM`.
    pub at: String,
    /// IANA time zone of `at`.
    pub timezone: String,
    /// Gateways read at once.
    pub concurrency: usize,
    /// Longest one gateway may take, read-out included, in seconds.
    pub gateway_timeout_seconds: u64,
    /// A service (re)started this many hours after the time still runs that night's
    /// collection.
    pub catch_up_hours: u64,
}

impl Default for CollectionConfig {
    fn default() -> Self {
        CollectionConfig {
            enabled: true,
            at: "02:00".into(),
            timezone: "Europe/Paris".into(),
            concurrency: 8,
            gateway_timeout_seconds: 600,
            catch_up_hours: 6,
        }
    }
}

impl CollectionConfig {
    /// The time of day and zone, or what is wrong with them.
    pub fn schedule(&self) -> Result<(NaiveTime, Tz), String> {
        let at = NaiveTime::parse_from_str(&self.at, "%H:%M")
            .map_err(|_| format!("at: {:?} is not a time of day like \"02:00\"", self.at))?;
        let zone = self.timezone.parse::<Tz>().map_err(|_| {
            format!(
                "timezone: {:?} is not an IANA time zone like \"Europe/Paris\"",
                self.timezone
            )
        })?;
        Ok((at, zone))
    }

    pub fn options(&self, owner: String) -> CollectOptions {
        CollectOptions {
            concurrency: self.concurrency.max(1),
            gateway_timeout: Duration::from_secs(self.gateway_timeout_seconds.max(1)),
            owner,
        }
    }
}

/// The instant of `at` on local `date`. A time the clock skips (spring forward) runs
/// at the first instant after the gap; a time it repeats (fall back) the first time.
pub fn instant_of(date: NaiveDate, at: NaiveTime, zone: Tz) -> DateTime<Utc> {
    let mut local = date.and_time(at);
    for _ in 0..4 {
        if let Some(instant) = zone.from_local_datetime(&local).earliest() {
            return instant.with_timezone(&Utc);
        }
        local += chrono::Duration::minutes(30);
    }
    local.and_utc()
}

/// The night to collect next and when: today's if its time has not come, or came less
/// than `catch_up` ago and it was not done; otherwise tomorrow's.
pub fn next_run(
    now: DateTime<Utc>,
    at: NaiveTime,
    zone: Tz,
    catch_up: chrono::Duration,
    done: Option<NaiveDate>,
) -> (NaiveDate, DateTime<Utc>) {
    let today = now.with_timezone(&zone).date_naive();
    let when = instant_of(today, at, zone);
    if now < when {
        return (today, when);
    }
    if now - when < catch_up && done != Some(today) {
        return (today, now);
    }
    let tomorrow = today.succ_opt().unwrap_or(today);
    (tomorrow, instant_of(tomorrow, at, zone))
}

/// Runs the nightly collection until `shutdown` completes.
pub async fn run(
    store: Store,
    config: CollectionConfig,
    owner: String,
    shutdown: impl Future<Output = ()>,
) {
    let (at, zone) = match config.schedule() {
        Ok(schedule) => schedule,
        Err(err) => {
            tracing::error!(%err, "nightly collection disabled: bad configuration");
            return;
        }
    };
    let catch_up = chrono::Duration::hours(config.catch_up_hours as i64);
    let options = config.options(owner);
    tokio::pin!(shutdown);
    let mut done: Option<NaiveDate> = None;
    loop {
        let (night, when) = next_run(Utc::now(), at, zone, catch_up, done);
        let wait = (when - Utc::now()).to_std().unwrap_or_default();
        tracing::info!(%night, %when, "next meter collection");
        tokio::select! {
            () = &mut shutdown => return,
            () = tokio::time::sleep(wait) => {}
        }
        match collect(&store, Some(night), &options, |_, _| {}).await {
            Ok(Some(_)) => {}
            Ok(None) => tracing::info!(%night, "collection already run by another instance"),
            Err(err) => tracing::error!(%night, %err, "nightly collection failed"),
        }
        done = Some(night);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default()
    }

    #[test]
    fn two_in_the_morning_in_paris_follows_summer_time() {
        let (at, zone) = CollectionConfig::default()
            .schedule()
            .unwrap_or_else(|e| panic!("{e}"));
        let date = |d: u32, m: u32| NaiveDate::from_ymd_opt(2026, m, d).unwrap_or_default();
        assert_eq!(
            instant_of(date(15, 1), at, zone),
            utc("2026-01-15T01:00:00Z")
        );
        assert_eq!(
            instant_of(date(15, 7), at, zone),
            utc("2026-07-15T00:00:00Z")
        );
        // 02:00 does not exist on 29 March 2026: the run is at 03:00 summer time.
        assert_eq!(
            instant_of(date(29, 3), at, zone),
            utc("2026-03-29T01:00:00Z")
        );
        // 02:00 happens twice on 25 October 2026: the first one.
        assert_eq!(
            instant_of(date(25, 10), at, zone),
            utc("2026-10-25T00:00:00Z")
        );
    }

    #[test]
    fn catching_up_on_a_missed_night_once() {
        let (at, zone) = CollectionConfig::default()
            .schedule()
            .unwrap_or_else(|e| panic!("{e}"));
        let hours = chrono::Duration::hours(6);
        let today = NaiveDate::from_ymd_opt(2026, 1, 15).unwrap_or_default();
        let before = utc("2026-01-15T00:30:00Z");
        assert_eq!(
            next_run(before, at, zone, hours, None),
            (today, utc("2026-01-15T01:00:00Z"))
        );
        let late = utc("2026-01-15T03:00:00Z");
        assert_eq!(next_run(late, at, zone, hours, None), (today, late));
        let tomorrow = today.succ_opt().unwrap_or_default();
        assert_eq!(next_run(late, at, zone, hours, Some(today)).0, tomorrow);
        let much_later = utc("2026-01-15T12:00:00Z");
        assert_eq!(next_run(much_later, at, zone, hours, None).0, tomorrow);
    }

    #[test]
    fn bad_schedules_are_named() {
        let bad_time = CollectionConfig {
            at: "2h".into(),
            ..Default::default()
        };
        assert!(bad_time.schedule().unwrap_err().starts_with("at:"));
        let bad_zone = CollectionConfig {
            timezone: "Paris".into(),
            ..Default::default()
        };
        assert!(bad_zone.schedule().unwrap_err().starts_with("timezone:"));
    }
}
