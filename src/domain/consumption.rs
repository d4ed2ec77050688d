//! Consumption derived from meter indexes, per local calendar period.
//!
//! A meter shows an index: a cumulative counter in its own unit, read at instants. A
//! *position* (the cold water of flat 12, the building's gas) is measured by a chain of
//! physical meters over time: the old one until its replacement, the new one after. This
//! module turns the indexes of such a chain into the consumption of each period asked
//! for. It does no I/O; callers load the histories and show the results.
//!
//! # Rules
//!
//! - **Points of a meter.** `(installed_at, initial_index)`, the readings taken within
//!   `[installed_at, removed_at]` (both ends included; readings outside are ignored),
//!   and `(removed_at, final_index)` when the meter was removed with a known final
//!   index (a `final_index` without `removed_at` is ignored). Points whose value is not
//!   a finite number are skipped. Points are sorted by time whatever the input order;
//!   when several fall on the same instant one is kept: a reading rather than the
//!   installation or removal index, and among readings the first given. A meter whose
//!   `removed_at` is before its `installed_at` has no data and never existed.
//! - **Unwrapping.** The index wraps to 0 after `10^digits`
//!   ([`rollover_modulus`]). Walking the points in order, a step from index `a` to `b`
//!   adds to the meter's cumulative consumption:
//!   - `b - a` when `b >= a`;
//!   - `b + modulus - a` when `b < a` and `modulus / 2 < a - b <= modulus` (a
//!     *rollover*: `a` was near the top, `b` near 0);
//!   - nothing otherwise (an index going *backwards*: the curve goes on from `b`). A
//!     step whose size is not a finite number is treated the same way.
//!
//!   So the cumulative curve starts at 0 at the first point and never decreases.
//!   Consumption is never computed between indexes of two different meters: each
//!   meter has its own curve.
//! - **Between points** the cumulative consumption is interpolated linearly in time
//!   (the result is then `estimated`). Before a meter's first point and after its last
//!   point it is unknown: nothing is extrapolated.
//! - **A period** is a half-open UTC interval `[start, end)`. A meter *exists* in it
//!   over `[max(start, installed_at), min(end, removed_at))`, and its data is *known*
//!   over `[max(start, first point), min(end, last point)]`. When the known part has a
//!   positive length, the meter contributes `cum(known end) - cum(known start)`.
//!   Adjacent periods share their boundary, so consumption is additive over them.
//! - **Partial.** A period is `partial` when some meter existed in it over a part where
//!   its data is unknown: after its last reading (the current month, a future day),
//!   before its first point (the installation index is missing), or up to its removal
//!   when the final index is missing. A meter installed mid-period does not make the
//!   period partial (it did not exist before), nor does a removed one after its
//!   removal, nor a time when no meter of the chain existed.
//! - **Chain.** The consumption of a period is the sum of the contributions of the
//!   chain's meters; `None` when no meter contributes (nothing known), even if the
//!   period is `partial`. A single meter is a chain of one. Meters whose lives overlap
//!   are all summed: the caller gives a chain, where they do not.
//! - **Events.** A rollover or backwards step is dated by the point that ends it, and
//!   counted in a period when that point falls within the meter's known part
//!   `(known start, known end]`: the step's consumption lies before that point, so an
//!   event read exactly at a period's boundary belongs to the period that ends there.
//!   Events add up over adjacent periods like consumption does.
//! - **Periods.** [`periods`] cuts local calendar days, months or years (Europe/Paris)
//!   into UTC intervals, from local midnight to local midnight: a day lasts 23 or 25
//!   hours on clock changes.
//!
//! Cost: sorting each meter's points once, then a few binary searches per period and
//! meter, so `O(points log points + periods × meters × log points)`.

use chrono::{
    DateTime, Datelike, LocalResult, Months, NaiveDate, NaiveTime, Offset, TimeDelta, TimeZone, Utc,
};
use chrono_tz::Europe::Paris;

use super::meter::rollover_modulus;

/// One physical meter of a position: its life and the indexes read on it.
#[derive(Debug, Clone, PartialEq)]
pub struct MeterHistory {
    /// The meter's id, reported in [`PeriodConsumption::meters`].
    pub meter_id: i64,
    /// Integer digits of its index: it wraps to 0 after `10^digits` (clamped to 1..=12).
    pub digits: i64,
    /// When it was installed.
    pub installed_at: DateTime<Utc>,
    /// Its index when installed.
    pub initial_index: f64,
    /// When it was removed (replaced), if it was.
    pub removed_at: Option<DateTime<Utc>>,
    /// Its index when removed, if known; ignored without `removed_at`.
    pub final_index: Option<f64>,
    /// Indexes read, in any order; those outside `[installed_at, removed_at]` are ignored.
    pub readings: Vec<(DateTime<Utc>, f64)>,
}

/// The length of the calendar periods [`periods`] cuts.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Granularity {
    /// A local day, labelled `2026-03-01`.
    Day,
    /// A local calendar month, labelled `2026-03`.
    Month,
    /// A local calendar year, labelled `2026`.
    Year,
}

impl Granularity {
    /// The text form: `day`, `month` or `year`.
    pub fn as_str(self) -> &'static str {
        match self {
            Granularity::Day => "day",
            Granularity::Month => "month",
            Granularity::Year => "year",
        }
    }

    /// The first day of the period that holds `date`.
    fn first_day(self, date: NaiveDate) -> Option<NaiveDate> {
        match self {
            Granularity::Day => Some(date),
            Granularity::Month => date.with_day(1),
            Granularity::Year => NaiveDate::from_ymd_opt(date.year(), 1, 1),
        }
    }

    /// The first day of the next period, given the first day of one.
    fn next(self, first: NaiveDate) -> Option<NaiveDate> {
        match self {
            Granularity::Day => first.succ_opt(),
            Granularity::Month => first.checked_add_months(Months::new(1)),
            Granularity::Year => first.checked_add_months(Months::new(12)),
        }
    }

    fn label(self, first: NaiveDate) -> String {
        let format = match self {
            Granularity::Day => "%Y-%m-%d",
            Granularity::Month => "%Y-%m",
            Granularity::Year => "%Y",
        };
        first.format(format).to_string()
    }
}

/// A time interval `[start, end)` in UTC, with its name.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Period {
    /// First instant of the period.
    pub start: DateTime<Utc>,
    /// First instant after the period (the next one's `start`).
    pub end: DateTime<Utc>,
    /// Its name: `2026-03-01`, `2026-03` or `2026` for calendar periods.
    pub label: String,
}

/// The local (Europe/Paris) calendar periods that hold the dates `from..=to`, as UTC
/// intervals from local midnight to local midnight, in order and contiguous. Whole
/// periods: `Month` from 2026-03-15 to 2026-04-02 gives March and April. Empty when
/// `from > to`. One period per day for `Day`: callers bound the range. A period whose
/// bounds fall outside what dates can represent (near year ±262 000) is left out.
pub fn periods(from: NaiveDate, to: NaiveDate, granularity: Granularity) -> Vec<Period> {
    let mut out = Vec::new();
    let Some(mut first) = granularity.first_day(from) else {
        return out;
    };
    while first <= to {
        let Some(next) = granularity.next(first) else {
            break;
        };
        if let (Some(start), Some(end)) = (local_midnight(first), local_midnight(next)) {
            out.push(Period {
                start,
                end,
                label: granularity.label(first),
            });
        }
        first = next;
    }
    out
}

/// The first instant of `date` in Europe/Paris, in UTC.
fn local_midnight(date: NaiveDate) -> Option<DateTime<Utc>> {
    let midnight = date.and_time(NaiveTime::MIN);
    match Paris.from_local_datetime(&midnight) {
        LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => Some(t.with_timezone(&Utc)),
        LocalResult::None => {
            // Midnight skipped by a clock change (or out of range): the day starts where
            // the gap ends, which is midnight read with the offset in force before it.
            let before = midnight.checked_sub_signed(TimeDelta::days(1))?;
            let offset = Paris.offset_from_utc_datetime(&before).fix();
            midnight.checked_sub_offset(offset).map(|t| t.and_utc())
        }
    }
}

/// The consumption of a position (or of one meter) over one period.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct PeriodConsumption {
    /// The period's label.
    pub label: String,
    /// The period's first instant.
    pub start: DateTime<Utc>,
    /// The first instant after the period.
    pub end: DateTime<Utc>,
    /// What was consumed, in the meters' unit; `None` when nothing is known in the period.
    pub consumption: Option<f64>,
    /// A bound of a meter's known part fell between two points and was interpolated.
    pub estimated: bool,
    /// Some meter existed during part of the period where its data is unknown, so
    /// `consumption` covers only what is known (see the module's rules).
    pub partial: bool,
    /// The earliest instant with known data in the period.
    pub covered_from: Option<DateTime<Utc>>,
    /// The latest instant with known data in the period.
    pub covered_to: Option<DateTime<Utc>>,
    /// Rollovers of the index (wraps to 0) read in the period.
    pub rollovers: u32,
    /// Steps where the index went backwards (not counted as consumption) read in the period.
    pub backwards: u32,
    /// The meters that contributed, in chain order.
    pub meters: Vec<i64>,
}

/// The consumption of a chain of meters (one position over time, or a single meter)
/// over each of `periods`, in the same order. Never panics; see the module's rules.
pub fn consumption(chain: &[MeterHistory], periods: &[Period]) -> Vec<PeriodConsumption> {
    let curves: Vec<Curve> = chain.iter().filter_map(Curve::build).collect();
    periods
        .iter()
        .map(|period| period_consumption(&curves, period))
        .collect()
}

fn period_consumption(curves: &[Curve], period: &Period) -> PeriodConsumption {
    let mut out = PeriodConsumption {
        label: period.label.clone(),
        start: period.start,
        end: period.end,
        consumption: None,
        estimated: false,
        partial: false,
        covered_from: None,
        covered_to: None,
        rollovers: 0,
        backwards: 0,
        meters: Vec::new(),
    };
    for curve in curves {
        let exists_from = period.start.max(curve.installed_at);
        let exists_to = curve.removed_at.map_or(period.end, |r| r.min(period.end));
        if exists_from >= exists_to {
            continue;
        }
        let (Some(&first), Some(&last)) = (curve.times.first(), curve.times.last()) else {
            out.partial = true;
            continue;
        };
        let known_from = exists_from.max(first);
        let known_to = exists_to.min(last);
        if known_from >= known_to {
            out.partial = true;
            continue;
        }
        if known_from > exists_from || known_to < exists_to {
            out.partial = true;
        }
        let (Some((from_cum, from_exact)), Some((to_cum, to_exact))) =
            (curve.at(known_from), curve.at(known_to))
        else {
            // Cannot happen: both instants lie within [first, last].
            out.partial = true;
            continue;
        };
        out.consumption = Some(out.consumption.unwrap_or(0.0) + (to_cum - from_cum).max(0.0));
        out.estimated |= !(from_exact && to_exact);
        out.covered_from = Some(out.covered_from.map_or(known_from, |c| c.min(known_from)));
        out.covered_to = Some(out.covered_to.map_or(known_to, |c| c.max(known_to)));
        let (r_from, b_from) = curve.events_until(known_from);
        let (r_to, b_to) = curve.events_until(known_to);
        out.rollovers = out.rollovers.saturating_add(r_to.saturating_sub(r_from));
        out.backwards = out.backwards.saturating_add(b_to.saturating_sub(b_from));
        if !out.meters.contains(&curve.meter_id) {
            out.meters.push(curve.meter_id);
        }
    }
    out
}

/// One meter's cumulative consumption curve: its points in time order, the consumption
/// since the first point at each, and the events counted up to each.
struct Curve {
    meter_id: i64,
    installed_at: DateTime<Utc>,
    removed_at: Option<DateTime<Utc>>,
    times: Vec<DateTime<Utc>>,
    cumulative: Vec<f64>,
    /// Rollovers among the steps ending at or before each point.
    rollovers: Vec<u32>,
    /// Backwards steps among the steps ending at or before each point.
    backwards: Vec<u32>,
}

/// What a step between two successive indexes means.
enum Step {
    Forward(f64),
    Rollover(f64),
    Backwards,
}

fn step(a: f64, b: f64, modulus: f64) -> Step {
    if b >= a {
        let delta = b - a;
        return if delta.is_finite() {
            Step::Forward(delta)
        } else {
            Step::Backwards
        };
    }
    let drop = a - b;
    if drop > modulus / 2.0 && drop <= modulus {
        Step::Rollover(modulus - drop)
    } else {
        Step::Backwards
    }
}

impl Curve {
    /// `None` for a meter removed before it was installed.
    fn build(meter: &MeterHistory) -> Option<Curve> {
        if meter.removed_at.is_some_and(|r| r < meter.installed_at) {
            return None;
        }
        let inside =
            |t: DateTime<Utc>| t >= meter.installed_at && meter.removed_at.is_none_or(|r| t <= r);
        // (instant, rank, index): at the same instant rank 0 (a reading) wins over rank 1
        // (installation or removal index); the sort is stable, so the first reading given
        // wins among readings.
        let mut points: Vec<(DateTime<Utc>, u8, f64)> = meter
            .readings
            .iter()
            .filter(|&&(t, v)| v.is_finite() && inside(t))
            .map(|&(t, v)| (t, 0, v))
            .collect();
        if meter.initial_index.is_finite() {
            points.push((meter.installed_at, 1, meter.initial_index));
        }
        if let (Some(removed), Some(index)) = (meter.removed_at, meter.final_index) {
            if index.is_finite() {
                points.push((removed, 1, index));
            }
        }
        points.sort_by_key(|&(t, rank, _)| (t, rank));
        points.dedup_by_key(|p| p.0);

        let modulus = rollover_modulus(meter.digits);
        let mut curve = Curve {
            meter_id: meter.meter_id,
            installed_at: meter.installed_at,
            removed_at: meter.removed_at,
            times: Vec::with_capacity(points.len()),
            cumulative: Vec::with_capacity(points.len()),
            rollovers: Vec::with_capacity(points.len()),
            backwards: Vec::with_capacity(points.len()),
        };
        let (mut total, mut rollovers, mut backwards) = (0.0_f64, 0_u32, 0_u32);
        let mut previous: Option<f64> = None;
        for (t, _, index) in points {
            if let Some(a) = previous {
                let added = match step(a, index, modulus) {
                    Step::Forward(delta) => Some(delta),
                    Step::Rollover(delta) => {
                        rollovers = rollovers.saturating_add(1);
                        Some(delta)
                    }
                    Step::Backwards => None,
                };
                match added.map(|delta| total + delta) {
                    Some(next) if next.is_finite() => total = next,
                    Some(_) | None => backwards = backwards.saturating_add(1),
                }
            }
            previous = Some(index);
            curve.times.push(t);
            curve.cumulative.push(total);
            curve.rollovers.push(rollovers);
            curve.backwards.push(backwards);
        }
        Some(curve)
    }

    /// The cumulative consumption at `t` and whether `t` is exactly a point; `None`
    /// outside `[first point, last point]`.
    fn at(&self, t: DateTime<Utc>) -> Option<(f64, bool)> {
        let after = self.times.partition_point(|&x| x <= t);
        let i = after.checked_sub(1)?;
        let (&t0, &c0) = (self.times.get(i)?, self.cumulative.get(i)?);
        if t0 == t {
            return Some((c0, true));
        }
        let (&t1, &c1) = (self.times.get(after)?, self.cumulative.get(after)?);
        let fraction = (seconds(t - t0) / seconds(t1 - t0)).clamp(0.0, 1.0);
        Some((c0 + (c1 - c0) * fraction, false))
    }

    /// Rollovers and backwards steps whose ending point is at or before `t`.
    fn events_until(&self, t: DateTime<Utc>) -> (u32, u32) {
        let after = self.times.partition_point(|&x| x <= t);
        after
            .checked_sub(1)
            .and_then(|i| Some((*self.rollovers.get(i)?, *self.backwards.get(i)?)))
            .unwrap_or((0, 0))
    }
}

fn seconds(delta: TimeDelta) -> f64 {
    delta.num_seconds() as f64 + f64::from(delta.subsec_nanos()) * 1e-9
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn date(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    fn paris(y: i32, m: u32, d: u32, h: u32, min: u32) -> DateTime<Utc> {
        Paris
            .with_ymd_and_hms(y, m, d, h, min, 0)
            .single()
            .unwrap()
            .with_timezone(&Utc)
    }

    fn midnight(d: NaiveDate) -> DateTime<Utc> {
        local_midnight(d).unwrap()
    }

    fn meter(id: i64, digits: i64, installed_at: DateTime<Utc>, initial: f64) -> MeterHistory {
        MeterHistory {
            meter_id: id,
            digits,
            installed_at,
            initial_index: initial,
            removed_at: None,
            final_index: None,
            readings: Vec::new(),
        }
    }

    fn one(chain: &[MeterHistory], start: DateTime<Utc>, end: DateTime<Utc>) -> PeriodConsumption {
        let period = Period {
            start,
            end,
            label: String::new(),
        };
        consumption(chain, &[period]).remove(0)
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
    }

    #[test]
    fn daily_readings_give_exact_days_months_year() {
        let mut m = meter(1, 6, midnight(date(2026, 1, 1)), 100.0);
        let mut index = 100.0;
        let mut expected = Vec::new();
        let mut day = date(2026, 1, 1);
        while day < date(2026, 4, 1) {
            let used = f64::from(day.ordinal() % 7) * 0.25 + 0.1;
            index += used;
            expected.push(used);
            day = day.succ_opt().unwrap();
            m.readings.push((midnight(day), index));
        }
        m.readings.reverse(); // any order

        let days = consumption(
            std::slice::from_ref(&m),
            &periods(date(2026, 1, 1), date(2026, 3, 31), Granularity::Day),
        );
        assert_eq!(days.len(), 90);
        assert_eq!(days[0].label, "2026-01-01");
        for (got, want) in days.iter().zip(&expected) {
            assert!(close(got.consumption.unwrap(), *want), "{got:?}");
            assert!(!got.estimated && !got.partial, "{got:?}");
            assert_eq!(got.meters, vec![1]);
        }

        let months = consumption(
            std::slice::from_ref(&m),
            &periods(date(2026, 1, 15), date(2026, 3, 2), Granularity::Month),
        );
        let labels: Vec<&str> = months.iter().map(|p| p.label.as_str()).collect();
        assert_eq!(labels, ["2026-01", "2026-02", "2026-03"]);
        for month in &months {
            let (mut sum, mut want) = (0.0, 0.0);
            for (day, used) in days.iter().zip(&expected) {
                if day.start >= month.start && day.end <= month.end {
                    sum += day.consumption.unwrap();
                    want += used;
                }
            }
            assert!(close(month.consumption.unwrap(), sum), "{month:?}");
            assert!(close(sum, want));
            assert!(!month.partial && !month.estimated);
        }

        let year = consumption(
            std::slice::from_ref(&m),
            &periods(date(2026, 6, 1), date(2026, 6, 1), Granularity::Year),
        );
        assert_eq!(year[0].label, "2026");
        assert!(close(year[0].consumption.unwrap(), expected.iter().sum()));
        assert!(year[0].partial, "data stops on 1 April");
        assert_eq!(year[0].covered_from, Some(midnight(date(2026, 1, 1))));
        assert_eq!(year[0].covered_to, Some(midnight(date(2026, 4, 1))));
    }

    #[test]
    fn rollover_adds_the_wrapped_step() {
        let mut m = meter(1, 5, paris(2026, 5, 1, 0, 0), 99_980.0);
        m.readings = vec![
            (paris(2026, 5, 3, 0, 0), 15.0),
            (paris(2026, 5, 2, 0, 0), 99_990.0),
        ];
        let days = consumption(
            &[m],
            &periods(date(2026, 5, 1), date(2026, 5, 3), Granularity::Day),
        );
        assert_eq!(days[0].consumption, Some(10.0));
        assert_eq!(days[0].rollovers, 0);
        assert!(close(days[1].consumption.unwrap(), 25.0));
        assert_eq!(days[1].rollovers, 1);
        assert_eq!(days[2].consumption, None);
        assert!(days[2].partial, "the meter exists but was not read");
    }

    #[test]
    fn replacement_never_subtracts_two_meters() {
        let d = paris(2026, 3, 10, 14, 30);
        let mut old = meter(7, 5, paris(2025, 1, 1, 0, 0), 1000.0);
        old.removed_at = Some(d);
        old.final_index = Some(1234.5);
        old.readings = vec![
            (paris(2026, 2, 1, 0, 0), 1180.0),
            (paris(2026, 3, 1, 0, 0), 1200.0),
            (paris(2026, 3, 10, 0, 0), 1230.0),
            // read after removal (a gateway still reporting the old address): ignored
            (paris(2026, 3, 12, 0, 0), 5000.0),
        ];
        let mut new = meter(8, 5, paris(2026, 3, 10, 14, 35), 0.2);
        new.readings = vec![
            (paris(2026, 3, 9, 0, 0), 99_999.0), // before installation: ignored
            (paris(2026, 3, 11, 0, 0), 1.2),
            (paris(2026, 4, 1, 0, 0), 7.7),
            (paris(2026, 5, 1, 0, 0), 17.7),
        ];
        let chain = [old, new];
        let months = consumption(
            &chain,
            &periods(date(2026, 3, 1), date(2026, 3, 1), Granularity::Month),
        );
        let march = &months[0];
        assert!(close(
            march.consumption.unwrap(),
            (1234.5 - 1200.0) + (7.7 - 0.2)
        ));
        assert!(!close(march.consumption.unwrap(), 7.7 - 1200.0));
        assert_eq!(march.meters, vec![7, 8]);
        assert!(!march.partial && !march.estimated);
        assert_eq!((march.rollovers, march.backwards), (0, 0));

        let days = consumption(
            &chain,
            &periods(date(2026, 3, 10), date(2026, 3, 11), Granularity::Day),
        );
        assert!(close(
            days[0].consumption.unwrap(),
            (1234.5 - 1230.0) + (1.2 - 0.2)
        ));
        assert!(
            !days[0].partial,
            "the 5 minutes without a meter are not missing data"
        );
        assert_eq!(days[0].covered_from, Some(paris(2026, 3, 10, 0, 0)));
        assert_eq!(days[0].covered_to, Some(paris(2026, 3, 11, 0, 0)));
        assert_eq!(days[1].meters, vec![8]);
        assert!(days[1].estimated, "1.2 on the 11th, 7.7 on 1 April");

        // The old meter alone: its last month ends with its removal, not partial.
        let alone = consumption(&chain[..1], &months_of(2026, 3));
        assert!(close(alone[0].consumption.unwrap(), 34.5));
        assert!(!alone[0].partial);
    }

    fn months_of(y: i32, m: u32) -> Vec<Period> {
        periods(date(y, m, 1), date(y, m, 1), Granularity::Month)
    }

    #[test]
    fn backwards_step_is_counted_not_subtracted() {
        let mut m = meter(1, 5, paris(2026, 6, 1, 0, 0), 10.0);
        m.readings = vec![
            (paris(2026, 6, 2, 0, 0), 12.0),
            (paris(2026, 6, 3, 0, 0), 11.5),
            (paris(2026, 6, 4, 0, 0), 13.0),
        ];
        let days = consumption(
            &[m.clone()],
            &periods(date(2026, 6, 1), date(2026, 6, 3), Granularity::Day),
        );
        let got: Vec<_> = days.iter().map(|d| (d.consumption, d.backwards)).collect();
        assert_eq!(got, [(Some(2.0), 0), (Some(0.0), 1), (Some(1.5), 0)]);
        let whole = one(&[m], paris(2026, 6, 1, 0, 0), paris(2026, 6, 4, 0, 0));
        assert_eq!(
            (whole.consumption, whole.backwards, whole.rollovers),
            (Some(3.5), 1, 0)
        );
    }

    #[test]
    fn dst_days_last_23_and_25_hours() {
        let spring = periods(date(2026, 3, 29), date(2026, 3, 29), Granularity::Day);
        assert_eq!(spring[0].end - spring[0].start, TimeDelta::hours(23));
        assert_eq!(
            spring[0].start,
            "2026-03-28T23:00:00Z".parse::<DateTime<Utc>>().unwrap()
        );
        let autumn = periods(date(2026, 10, 25), date(2026, 10, 25), Granularity::Day);
        assert_eq!(autumn[0].end - autumn[0].start, TimeDelta::hours(25));
        assert_eq!(
            autumn[0].end,
            "2026-10-25T23:00:00Z".parse::<DateTime<Utc>>().unwrap()
        );

        // One unit per hour, read every UTC hour.
        let start = midnight(date(2026, 3, 1));
        let mut m = meter(1, 8, start, 0.0);
        let mut t = start;
        let mut index = 0.0;
        while t < midnight(date(2026, 11, 1)) {
            t += TimeDelta::hours(1);
            index += 1.0;
            m.readings.push((t, index));
        }
        let chain = [m];
        let days = consumption(&chain, &[spring[0].clone(), autumn[0].clone()]);
        assert_eq!(days[0].consumption, Some(23.0));
        assert_eq!(days[1].consumption, Some(25.0));
        let march = consumption(&chain, &months_of(2026, 3));
        assert_eq!(march[0].consumption, Some(31.0 * 24.0 - 1.0));
        let october = consumption(&chain, &months_of(2026, 10));
        assert_eq!(october[0].consumption, Some(31.0 * 24.0 + 1.0));
    }

    #[test]
    fn periods_are_whole_contiguous_and_labelled() {
        assert!(periods(date(2026, 2, 1), date(2026, 1, 31), Granularity::Day).is_empty());
        let months = periods(date(2025, 12, 31), date(2026, 1, 1), Granularity::Month);
        let labels: Vec<_> = months.iter().map(|p| p.label.as_str()).collect();
        assert_eq!(labels, ["2025-12", "2026-01"]);
        assert_eq!(months[0].start, midnight(date(2025, 12, 1)));
        assert_eq!(months[0].end, months[1].start);
        assert_eq!(months[1].end, midnight(date(2026, 2, 1)));
        let years = periods(date(2024, 7, 1), date(2026, 1, 1), Granularity::Year);
        let labels: Vec<_> = years.iter().map(|p| p.label.as_str()).collect();
        assert_eq!(labels, ["2024", "2025", "2026"]);
        assert_eq!(
            years[2].start,
            "2025-12-31T23:00:00Z".parse::<DateTime<Utc>>().unwrap()
        );
        assert_eq!(Granularity::Month.as_str(), "month");
    }

    #[test]
    fn partial_and_unknown_periods() {
        // Read until the 15th of the current month.
        let mut m = meter(1, 5, paris(2026, 1, 1, 0, 0), 0.0);
        m.readings = vec![
            (paris(2026, 5, 1, 0, 0), 40.0),
            (paris(2026, 5, 15, 0, 0), 54.0),
        ];
        let chain = [m];
        let may = consumption(&chain, &months_of(2026, 5));
        assert_eq!(may[0].consumption, Some(14.0));
        assert!(may[0].partial && !may[0].estimated);
        assert_eq!(may[0].covered_to, Some(paris(2026, 5, 15, 0, 0)));
        let june = consumption(&chain, &months_of(2026, 6));
        assert_eq!((june[0].consumption, june[0].partial), (None, true));
        let before = consumption(&chain, &months_of(2025, 12));
        assert_eq!((before[0].consumption, before[0].partial), (None, false));
        // January to April: interpolated in time from the installation index (2879 hours,
        // one lost to summer time), estimated.
        let february = consumption(&chain, &months_of(2026, 2));
        assert!(february[0].estimated && !february[0].partial);
        assert!(close(
            february[0].consumption.unwrap(),
            40.0 * (28.0 * 24.0) / 2879.0
        ));

        // Installed mid-month and read at month end: not partial.
        let mut m = meter(2, 5, paris(2026, 5, 20, 9, 0), 3.0);
        m.readings = vec![(paris(2026, 6, 1, 0, 0), 5.0)];
        let may = consumption(&[m], &months_of(2026, 5));
        assert_eq!(may[0].consumption, Some(2.0));
        assert!(!may[0].partial && !may[0].estimated);
        assert_eq!(may[0].covered_from, Some(paris(2026, 5, 20, 9, 0)));

        // Removed without a final index: partial up to the removal.
        let mut m = meter(3, 5, paris(2026, 5, 1, 0, 0), 3.0);
        m.removed_at = Some(paris(2026, 5, 20, 0, 0));
        m.readings = vec![(paris(2026, 5, 10, 0, 0), 5.0)];
        let may = consumption(&[m], &months_of(2026, 5));
        assert_eq!((may[0].consumption, may[0].partial), (Some(2.0), true));
    }

    #[test]
    fn bad_points_are_skipped() {
        let mut m = meter(1, 5, paris(2026, 5, 1, 0, 0), f64::NAN);
        m.readings = vec![
            (paris(2026, 5, 5, 0, 0), 10.0),
            (paris(2026, 5, 6, 0, 0), f64::INFINITY),
            (paris(2026, 5, 7, 0, 0), f64::NAN),
            (paris(2026, 5, 8, 0, 0), 13.0),
        ];
        let may = consumption(&[m], &months_of(2026, 5));
        assert_eq!((may[0].consumption, may[0].partial), (Some(3.0), true));
        assert_eq!(may[0].covered_from, Some(paris(2026, 5, 5, 0, 0)));

        // Removed before installed: no data, never existed.
        let mut m = meter(2, 5, paris(2026, 5, 10, 0, 0), 1.0);
        m.removed_at = Some(paris(2026, 5, 9, 0, 0));
        m.final_index = Some(2.0);
        m.readings = vec![(paris(2026, 5, 9, 12, 0), 5.0)];
        let may = consumption(&[m], &months_of(2026, 5));
        assert_eq!((may[0].consumption, may[0].partial), (None, false));
        assert!(may[0].meters.is_empty());
    }

    #[test]
    fn a_reading_wins_over_the_installation_index_at_the_same_instant() {
        let at = paris(2026, 5, 1, 0, 0);
        let mut m = meter(1, 5, at, 100.0);
        m.removed_at = Some(paris(2026, 5, 3, 0, 0));
        m.final_index = Some(130.0);
        m.readings = vec![(at, 110.0), (at, 111.0), (paris(2026, 5, 3, 0, 0), 125.0)];
        let may = consumption(&[m], &months_of(2026, 5));
        assert_eq!(may[0].consumption, Some(15.0));
    }

    #[test]
    fn ten_years_of_daily_readings() {
        let first = date(2016, 1, 1);
        let last = date(2025, 12, 31);
        let switch = date(2021, 6, 15);
        let mut old = meter(1, 5, midnight(first), 99_900.0);
        let mut new = meter(2, 6, midnight(switch), 0.0);
        old.removed_at = Some(midnight(switch));
        let (mut index, mut total, mut day) = (99_900.0_f64, 0.0, first);
        while day <= last {
            let used = 0.1 + f64::from(day.day() % 5) * 0.05;
            total += used;
            let next = day.succ_opt().unwrap();
            if day == switch.pred_opt().unwrap() {
                old.final_index = Some((index + used) % 100_000.0);
                index = 0.0;
            } else {
                index = (index + used) % if day < switch { 100_000.0 } else { 1e6 };
                let target = if day < switch { &mut old } else { &mut new };
                target.readings.push((midnight(next), index));
            }
            day = next;
        }
        let chain = [old, new];
        let days = periods(first, last, Granularity::Day);
        assert_eq!(days.len(), 3653);
        let result = consumption(&chain, &days);
        let sum: f64 = result.iter().filter_map(|d| d.consumption).sum();
        assert!((sum - total).abs() < 1e-6 * total, "{sum} {total}");
        assert!(result.iter().all(|d| !d.partial && !d.estimated));
        let rollovers: u32 = result.iter().map(|d| d.rollovers).sum();
        assert_eq!(rollovers, 1);
        let years = consumption(&chain, &periods(first, last, Granularity::Year));
        let by_year: f64 = years.iter().filter_map(|y| y.consumption).sum();
        assert!((by_year - total).abs() < 1e-6 * total);
    }

    /// A random chain of meters with readings around `base`: rollovers, backwards steps,
    /// replacements, points outside the meters' lives.
    fn chain_strategy() -> impl Strategy<Value = Vec<MeterHistory>> {
        let base = paris(2026, 1, 1, 0, 0).timestamp();
        let meter = (
            3_i64..7,
            0_i64..40 * 86_400,
            prop::option::of(0_i64..60 * 86_400),
            0.0..1.0_f64,
            prop::option::of(0.0..1.0_f64),
            prop::collection::vec((0_i64..100 * 86_400, 0.0..1.0_f64), 0..40),
        )
            .prop_map(move |(digits, installed, life, initial, last, readings)| {
                let modulus = rollover_modulus(digits);
                let at = |s: i64| DateTime::from_timestamp(base + s, 0).unwrap_or_default();
                MeterHistory {
                    meter_id: digits,
                    digits,
                    installed_at: at(installed),
                    initial_index: initial * modulus,
                    removed_at: life.map(|l| at(installed + l)),
                    final_index: last.map(|v| v * modulus),
                    readings: readings
                        .into_iter()
                        .map(|(s, v)| (at(s), v * modulus))
                        .collect(),
                }
            });
        prop::collection::vec(meter, 1..4)
    }

    fn any_instant() -> impl Strategy<Value = DateTime<Utc>> {
        prop_oneof![
            Just(DateTime::<Utc>::MIN_UTC),
            Just(DateTime::<Utc>::MAX_UTC),
            (-20_000_000_000_i64..20_000_000_000)
                .prop_map(|s| DateTime::from_timestamp(s, 0).unwrap_or_default()),
            (0_i64..1_000)
                .prop_map(|s| DateTime::from_timestamp(1_700_000_000 + s, 0).unwrap_or_default()),
        ]
    }

    fn any_value() -> impl Strategy<Value = f64> {
        prop_oneof![
            any::<f64>(),
            Just(f64::NAN),
            Just(f64::INFINITY),
            Just(f64::NEG_INFINITY),
            Just(f64::MAX),
            Just(-f64::MAX),
            -1e6..1e6_f64,
        ]
    }

    proptest! {
        #[test]
        fn total_is_the_true_consumption(
            start_offset in 0_u64..730,
            digits in (3_i64..7, 3_i64..7),
            initials in (0.0..1.0_f64, 0.0..1.0_f64),
            daily in prop::collection::vec(0.0..450.0_f64, 2..60),
            replace in (any::<prop::sample::Index>(), 1_i64..80_000, 0_i64..2_000, 0.0..450.0_f64),
            range in (any::<prop::sample::Index>(), any::<prop::sample::Index>()),
            shuffle in prop::collection::vec(any::<u32>(), 60),
        ) {
            let first = date(2025, 1, 1) + chrono::Days::new(start_offset);
            let n = daily.len();
            let day_start = |i: usize| midnight(first + chrono::Days::new(i as u64));
            let (k, removal_secs, gap_secs, after) = (replace.0.index(n), replace.1, replace.2, replace.3);
            let moduli = (rollover_modulus(digits.0), rollover_modulus(digits.1));

            // True consumption of each day; on day k, `daily[k]` before the removal and
            // `after` after the new meter's installation.
            let truth: Vec<f64> = (0..n).map(|i| if i == k { daily[i] + after } else { daily[i] }).collect();
            let mut old = meter(1, digits.0, day_start(0), initials.0 * moduli.0);
            let mut new = meter(2, digits.1, day_start(k) + TimeDelta::seconds(removal_secs + gap_secs), initials.1 * moduli.1);
            let mut index = old.initial_index;
            for (i, used) in daily.iter().enumerate() {
                if i < k {
                    index = (index + used) % moduli.0;
                    old.readings.push((day_start(i + 1), index));
                } else if i == k {
                    old.removed_at = Some(day_start(k) + TimeDelta::seconds(removal_secs));
                    old.final_index = Some((index + used) % moduli.0);
                    index = (new.initial_index + after) % moduli.1;
                    new.readings.push((day_start(i + 1), index));
                } else {
                    index = (index + used) % moduli.1;
                    new.readings.push((day_start(i + 1), index));
                }
            }
            for m in [&mut old, &mut new] {
                let mut keyed: Vec<_> = m.readings.drain(..).zip(shuffle.iter().copied()).collect();
                keyed.sort_by_key(|(_, key)| *key);
                m.readings = keyed.into_iter().map(|(r, _)| r).collect();
            }
            let chain = [old, new];

            let (a, b) = (range.0.index(n), range.1.index(n));
            let (a, b) = (a.min(b), a.max(b));
            let want: f64 = truth[a..=b].iter().sum();
            let whole = one(&chain, day_start(a), day_start(b + 1));
            let got = whole.consumption.unwrap_or(0.0);
            prop_assert!((got - want).abs() <= 1e-6 * want.max(1.0), "{} vs {}", got, want);
            prop_assert!(!whole.partial && !whole.estimated);
            let days = consumption(&chain, &periods(first + chrono::Days::new(a as u64), first + chrono::Days::new(b as u64), Granularity::Day));
            prop_assert_eq!(days.len(), b - a + 1);
            for (d, want) in days.iter().zip(&truth[a..=b]) {
                let got = d.consumption.unwrap_or(0.0);
                prop_assert!((got - want).abs() <= 1e-6 * want.max(1.0), "{:?} vs {}", d, want);
            }
        }

        #[test]
        fn consumption_is_additive(
            chain in chain_strategy(),
            cut in (0_i64..110 * 86_400, 0_i64..110 * 86_400, 0_i64..110 * 86_400),
        ) {
            let base = paris(2025, 12, 25, 0, 0).timestamp();
            let mut cut = [cut.0, cut.1, cut.2];
            cut.sort_unstable();
            let [s, m, e] = cut.map(|c| DateTime::from_timestamp(base + c, 0).unwrap_or_default());
            let whole = one(&chain, s, e);
            let left = one(&chain, s, m);
            let right = one(&chain, m, e);
            let sum = left.consumption.unwrap_or(0.0) + right.consumption.unwrap_or(0.0);
            prop_assert!(close(whole.consumption.unwrap_or(0.0), sum), "{:?} {:?} {:?}", whole, left, right);
            prop_assert_eq!(whole.consumption.is_none(), left.consumption.is_none() && right.consumption.is_none());
            prop_assert_eq!(whole.rollovers, left.rollovers + right.rollovers);
            prop_assert_eq!(whole.backwards, left.backwards + right.backwards);
            prop_assert_eq!(whole.partial, left.partial || right.partial);
            prop_assert!(whole.consumption.unwrap_or(0.0) >= 0.0);
        }

        #[test]
        fn calendar_periods_add_up(chain in chain_strategy()) {
            let days = consumption(&chain, &periods(date(2026, 1, 1), date(2026, 4, 30), Granularity::Day));
            let months = consumption(&chain, &periods(date(2026, 1, 1), date(2026, 4, 30), Granularity::Month));
            for month in &months {
                let inside: Vec<_> = days.iter().filter(|d| d.start >= month.start && d.end <= month.end).collect();
                let sum: f64 = inside.iter().filter_map(|d| d.consumption).sum();
                prop_assert!(close(month.consumption.unwrap_or(0.0), sum));
                prop_assert_eq!(month.rollovers, inside.iter().map(|d| d.rollovers).sum::<u32>());
                prop_assert_eq!(month.partial, inside.iter().any(|d| d.partial));
            }
        }

        #[test]
        fn arbitrary_input_never_panics(
            meters in prop::collection::vec(
                (
                    any::<i64>(),
                    any_instant(),
                    any_value(),
                    prop::option::of(any_instant()),
                    prop::option::of(any_value()),
                    prop::collection::vec((any_instant(), any_value()), 0..12),
                ),
                0..4,
            ),
            bounds in prop::collection::vec((any_instant(), any_instant()), 0..8),
        ) {
            let chain: Vec<MeterHistory> = meters
                .into_iter()
                .map(|(digits, installed_at, initial_index, removed_at, final_index, readings)| MeterHistory {
                    meter_id: digits,
                    digits,
                    installed_at,
                    initial_index,
                    removed_at,
                    final_index,
                    readings,
                })
                .collect();
            let asked: Vec<Period> = bounds
                .into_iter()
                .map(|(start, end)| Period { start, end, label: String::new() })
                .collect();
            let result = consumption(&chain, &asked);
            prop_assert_eq!(result.len(), asked.len());
            for r in result {
                if let Some(c) = r.consumption {
                    prop_assert!(c >= 0.0, "{:?}", r);
                }
            }
        }

        #[test]
        fn periods_never_panic_and_tile_the_range(
            from in any::<i32>(),
            span in 0_u64..800,
            granularity in prop_oneof![Just(Granularity::Day), Just(Granularity::Month), Just(Granularity::Year)],
        ) {
            let from = NaiveDate::from_num_days_from_ce_opt(from).unwrap_or(NaiveDate::MAX);
            let to = from.checked_add_days(chrono::Days::new(span)).unwrap_or(NaiveDate::MAX);
            let cut = periods(from, to, granularity);
            for pair in cut.windows(2) {
                prop_assert_eq!(pair[0].end, pair[1].start);
            }
            for p in &cut {
                prop_assert!(p.start < p.end);
                if granularity == Granularity::Day && (1950..2100).contains(&from.year()) {
                    let hours = (p.end - p.start).num_hours();
                    prop_assert!((23..=25).contains(&hours), "{:?}", p);
                }
            }
            if (1900..2100).contains(&from.year()) {
                prop_assert!(!cut.is_empty());
                prop_assert!(cut[0].start <= midnight(from));
                prop_assert!(cut[cut.len() - 1].end > midnight(to));
            }
        }
    }
}
