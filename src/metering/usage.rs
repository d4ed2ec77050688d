//! Consumption series from storage: the glue between the stored meters and readings
//! and the pure rules of [`crate::domain::consumption`].
//!
//! A meter's life, in instants:
//! - it starts at local (Europe/Paris) midnight of its `installed_on`;
//! - a removed meter ends at local midnight of the day *after* its `removed_on`, so
//!   that readings taken on the day of its replacement still count for it and its
//!   final index closes its curve; the meter that replaced it starts at local
//!   midnight of that same day. Both are summed on that day, each with its own
//!   indexes: consumption never subtracts the indexes of two meters.
//!
//! A position (the cold water of a flat) is a chain of meters linked by replacements
//! ([`Tx::meter_chain`]); its series is given in the unit of its current meter.

use std::collections::HashSet;

use chrono::{DateTime, Months, NaiveDate, NaiveTime, TimeDelta, Utc};
use serde::Serialize;

use crate::domain::consumption::{self, Granularity, MeterHistory, Period, PeriodConsumption};
use crate::domain::meter::{MeasureUnit, MeterKind};
use crate::domain::roles::Visibility;
use crate::domain::text;
use crate::error::{Error, Result};
use crate::storage::meters::{Meter, MeterFilter};
use crate::storage::page::MAX_LIMIT;
use crate::storage::Tx;

/// Most days a daily series may cover (ten years and a bit).
pub const MAX_DAYS: i64 = 3660;

/// The first instant of `date` in Europe/Paris, in UTC (the start of that local day
/// as [`consumption::periods`] cuts it).
pub fn local_midnight(date: NaiveDate) -> DateTime<Utc> {
    consumption::periods(date, date, Granularity::Day)
        .first()
        .map(|period| period.start)
        // Only for dates near the end of what chrono represents.
        .unwrap_or_else(|| date.and_time(NaiveTime::MIN).and_utc())
}

/// The local midnight that ends `date` (the start of the next day).
fn end_of_local_day(date: NaiveDate) -> DateTime<Utc> {
    consumption::periods(date, date, Granularity::Day)
        .first()
        .map(|period| period.end)
        .unwrap_or_else(|| date.and_time(NaiveTime::MIN).and_utc() + TimeDelta::days(1))
}

/// The dates a consumption request covers, `from..=to`, checked: plausible dates, in
/// order, at most [`MAX_DAYS`] days for a daily series. Defaults: `to` today; `from`
/// 30 days before `to` by day, the 11 months before `to`'s by month, the 4 years
/// before `to`'s by year. An error names the field the caller gave.
pub fn date_range(
    from: Option<NaiveDate>,
    to: Option<NaiveDate>,
    granularity: Granularity,
) -> Result<(NaiveDate, NaiveDate)> {
    // The field to blame for a range that does not fit: the end when it was given.
    let end_field = if to.is_some() || from.is_none() {
        "to"
    } else {
        "from"
    };
    let to = text::plausible_date("to", to.unwrap_or_else(text::local_today))?;
    let from = match from {
        Some(from) => text::plausible_date("from", from)?,
        None => {
            let back = match granularity {
                Granularity::Day => to.checked_sub_signed(TimeDelta::days(30)),
                Granularity::Month => to.checked_sub_months(Months::new(11)),
                Granularity::Year => to.checked_sub_months(Months::new(48)),
            };
            back.unwrap_or(to)
        }
    };
    if from > to {
        return Err(Error::invalid(
            end_field,
            format!("la fin de la période ({to}) précède son début ({from})"),
        ));
    }
    let days = (to - from).num_days() + 1;
    if granularity == Granularity::Day && days > MAX_DAYS {
        return Err(Error::invalid(
            end_field,
            format!(
                "{days} jours demandés : {MAX_DAYS} au plus par jour (period=day) ; \
                 raccourcissez la période ou choisissez period=month"
            ),
        ));
    }
    Ok((from, to))
}

/// `[from, to)` in UTC, either end open.
pub type Instants = (Option<DateTime<Utc>>, Option<DateTime<Utc>>);

/// The instants `[from, to)` of the local dates `from..=to` (either may be open), for
/// listing readings: from local midnight of `from` to local midnight after `to`.
pub fn instant_range(from: Option<NaiveDate>, to: Option<NaiveDate>) -> Result<Instants> {
    let from = from
        .map(|date| text::plausible_date("from", date))
        .transpose()?;
    let to = to
        .map(|date| text::plausible_date("to", date))
        .transpose()?;
    if let (Some(from), Some(to)) = (from, to) {
        if from > to {
            return Err(Error::invalid(
                "to",
                format!("la fin de la période ({to}) précède son début ({from})"),
            ));
        }
    }
    Ok((from.map(local_midnight), to.map(end_of_local_day)))
}

/// A stored meter and its readings as the consumption rules see it.
pub fn meter_history(meter: &Meter, readings: Vec<(DateTime<Utc>, f64)>) -> MeterHistory {
    MeterHistory {
        meter_id: meter.id,
        digits: meter.digits,
        installed_at: local_midnight(meter.installed_on),
        initial_index: meter.initial_index,
        removed_at: meter.removed_on.map(end_of_local_day),
        final_index: meter.final_index,
        readings,
    }
}

/// The consumption of one position (a chain of meters) over periods.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Series {
    pub kind: MeterKind,
    /// The unit of the current meter, in which every period is given.
    pub measure_unit: MeasureUnit,
    /// The unit as people write it (`m³`, `kWh`).
    pub unit_symbol: String,
    /// The meter in place now (or the last one, if the position was taken out).
    pub current_meter_id: i64,
    /// The meters of the position, oldest first.
    pub meter_ids: Vec<i64>,
    pub periods: Vec<PeriodConsumption>,
}

/// The series of a chain of meters (oldest first) over `periods`, loading their readings.
pub async fn chain_series(tx: &mut Tx, chain: &[Meter], periods: &[Period]) -> Result<Series> {
    let current = chain
        .last()
        .ok_or_else(|| Error::Internal("empty meter chain".into()))?;
    let ids: Vec<i64> = chain.iter().map(|meter| meter.id).collect();
    let readings = tx.readings_between(&ids, None, None).await?;
    let histories = chain
        .iter()
        .map(|meter| {
            let points = readings
                .iter()
                .filter(|reading| reading.meter_id == meter.id)
                .map(|reading| (reading.read_at, reading.value))
                .collect();
            (meter.measure_unit, meter_history(meter, points))
        })
        .collect();
    Ok(Series {
        kind: current.kind,
        measure_unit: current.measure_unit,
        unit_symbol: current.measure_unit.symbol().to_owned(),
        current_meter_id: current.id,
        meter_ids: ids,
        periods: position_consumption(histories, current.measure_unit, periods),
    })
}

/// The series of the position of `meter` (the meters it replaced and that replaced it).
pub async fn meter_series(
    tx: &mut Tx,
    residence_id: i64,
    meter: &Meter,
    periods: &[Period],
) -> Result<Series> {
    let chain = tx.meter_chain(residence_id, meter).await?;
    chain_series(tx, &chain, periods).await
}

/// One series per meter position of a unit, removed meters included, ordered by kind
/// then current meter. The caller has checked that the unit may be seen.
pub async fn unit_series(
    tx: &mut Tx,
    residence_id: i64,
    unit_id: i64,
    periods: &[Period],
) -> Result<Vec<Series>> {
    let mut meters: Vec<Meter> = Vec::new();
    loop {
        let page = tx
            .meters(
                residence_id,
                &MeterFilter {
                    unit_id: Some(unit_id),
                    removed: Some(true),
                    limit: Some(MAX_LIMIT),
                    offset: Some(meters.len() as i64),
                    ..MeterFilter::default()
                },
                Visibility::Everything,
            )
            .await?;
        let done = page.items.is_empty() || meters.len() as i64 + page.limit >= page.total;
        meters.extend(page.items);
        if done {
            break;
        }
    }
    meters.sort_by_key(|meter| meter.id);
    let mut placed: HashSet<i64> = HashSet::new();
    let mut series = Vec::new();
    for meter in &meters {
        if placed.contains(&meter.id) {
            continue;
        }
        let chain = tx.meter_chain(residence_id, meter).await?;
        placed.extend(chain.iter().map(|meter| meter.id));
        series.push(chain_series(tx, &chain, periods).await?);
    }
    series.sort_by(|a, b| {
        (a.kind.as_str(), a.current_meter_id).cmp(&(b.kind.as_str(), b.current_meter_id))
    });
    Ok(series)
}

/// The consumption of a chain whose meters may count in different units (a heat meter
/// in kWh replaced by one in MWh), given in `target`. Meters of one unit are computed
/// together by the domain rules; each unit's results are converted and added. A part
/// that cannot be converted (m³ and kWh) is left out and makes the period partial.
fn position_consumption(
    histories: Vec<(MeasureUnit, MeterHistory)>,
    target: MeasureUnit,
    periods: &[Period],
) -> Vec<PeriodConsumption> {
    let order: Vec<i64> = histories.iter().map(|(_, h)| h.meter_id).collect();
    let mut groups: Vec<(MeasureUnit, Vec<MeterHistory>)> = Vec::new();
    for (unit, history) in histories {
        match groups.iter_mut().find(|(u, _)| *u == unit) {
            Some((_, chain)) => chain.push(history),
            None => groups.push((unit, vec![history])),
        }
    }
    if let [(unit, chain)] = groups.as_slice() {
        if *unit == target {
            return consumption::consumption(chain, periods);
        }
    }
    let mut merged: Vec<PeriodConsumption> = periods
        .iter()
        .map(|period| PeriodConsumption {
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
        })
        .collect();
    for (unit, chain) in groups {
        let parts = consumption::consumption(&chain, periods);
        for (out, part) in merged.iter_mut().zip(parts) {
            out.partial |= part.partial;
            let Some(value) = part.consumption else {
                continue;
            };
            let Some(value) = target.convert(value, unit) else {
                out.partial = true;
                continue;
            };
            out.consumption = Some(out.consumption.unwrap_or(0.0) + value);
            out.estimated |= part.estimated;
            out.covered_from = min_option(out.covered_from, part.covered_from);
            out.covered_to = max_option(out.covered_to, part.covered_to);
            out.rollovers = out.rollovers.saturating_add(part.rollovers);
            out.backwards = out.backwards.saturating_add(part.backwards);
            out.meters.extend(part.meters);
        }
    }
    for out in &mut merged {
        out.meters
            .sort_by_key(|id| order.iter().position(|o| o == id).unwrap_or(usize::MAX));
    }
    merged
}

fn min_option(a: Option<DateTime<Utc>>, b: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn max_option(a: Option<DateTime<Utc>>, b: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use chrono_tz::Europe::Paris;

    fn date(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    fn paris(y: i32, m: u32, d: u32, h: u32) -> DateTime<Utc> {
        Paris
            .with_ymd_and_hms(y, m, d, h, 0, 0)
            .single()
            .unwrap()
            .with_timezone(&Utc)
    }

    fn meter(id: i64, installed_on: NaiveDate, initial_index: f64) -> Meter {
        Meter {
            id,
            residence_id: 1,
            kind: MeterKind::Heating,
            unit_id: Some(1),
            building_id: None,
            mbus_id: format!("{id:08}"),
            manufacturer: "KAM".into(),
            version: 0,
            medium: 4,
            measure_unit: MeasureUnit::Kwh,
            digits: 5,
            installed_on,
            initial_index,
            removed_on: None,
            final_index: None,
            gateway_id: None,
            label: String::new(),
        }
    }

    #[test]
    fn meter_lives_run_from_local_midnights() {
        let mut old = meter(1, date(2026, 1, 10), 100.0);
        old.removed_on = Some(date(2026, 3, 28));
        old.final_index = Some(150.0);
        let history = meter_history(&old, vec![(paris(2026, 3, 28, 2), 140.0)]);
        assert_eq!(history.installed_at, paris(2026, 1, 10, 0));
        // The day after the replacement; 29 March 2026 is a clock change in Paris.
        assert_eq!(history.removed_at, Some(paris(2026, 3, 29, 0)));
        assert_eq!(history.final_index, Some(150.0));
        assert_eq!(local_midnight(date(2026, 7, 1)), paris(2026, 7, 1, 0));
    }

    #[test]
    fn a_replacement_day_counts_both_meters() {
        let mut old = meter(1, date(2026, 1, 1), 0.0);
        old.removed_on = Some(date(2026, 2, 10));
        old.final_index = Some(60.0);
        let new = meter(2, date(2026, 2, 10), 5.0);
        let histories = vec![
            (
                MeasureUnit::Kwh,
                meter_history(&old, vec![(paris(2026, 2, 10, 3), 50.0)]),
            ),
            (
                MeasureUnit::Kwh,
                meter_history(&new, vec![(paris(2026, 2, 11, 3), 12.0)]),
            ),
        ];
        let periods = consumption::periods(date(2026, 2, 10), date(2026, 2, 10), Granularity::Day);
        let day = &position_consumption(histories, MeasureUnit::Kwh, &periods)[0];
        // Old: 50 at 03:00 then 60 at the end of the day, so (60 - 50) and the part of
        // (50 - 0) after midnight; new: 5 → 12 over 27 hours, 24 of them that day.
        let old_part = 50.0 * (3.0 / ((40.0 * 24.0) + 3.0)) + 10.0;
        let new_part = 7.0 * 24.0 / 27.0;
        let got = day.consumption.unwrap();
        assert!((got - (old_part + new_part)).abs() < 1e-9, "{got}");
        assert_eq!(day.meters, vec![1, 2]);
    }

    #[test]
    fn units_of_a_chain_are_converted_to_the_current_meters() {
        let mut old = meter(1, date(2026, 1, 1), 0.0);
        old.removed_on = Some(date(2026, 1, 31));
        old.final_index = Some(3000.0);
        let new = meter(2, date(2026, 1, 31), 10.0);
        let periods = consumption::periods(date(2026, 1, 1), date(2026, 2, 28), Granularity::Month);
        let histories = vec![
            (MeasureUnit::Kwh, meter_history(&old, Vec::new())),
            (
                MeasureUnit::Mwh,
                meter_history(&new, vec![(paris(2026, 3, 1, 0), 12.0)]),
            ),
        ];
        let months = position_consumption(histories, MeasureUnit::Mwh, &periods);
        // 3000 kWh of the old meter, and the new one's first day of its 29 (2 MWh).
        let january = months[0].consumption.unwrap();
        assert!((january - (3.0 + 2.0 / 29.0)).abs() < 1e-9, "{january}");
        let february = months[1].consumption.unwrap();
        assert!(february > 1.9 && february <= 2.0, "{february}");
        assert_eq!(months[0].meters, vec![1, 2]);
        // kWh and m³ do not mix: left out, and said so.
        let histories = vec![
            (MeasureUnit::M3, meter_history(&old, Vec::new())),
            (
                MeasureUnit::Mwh,
                meter_history(&new, vec![(paris(2026, 3, 1, 0), 12.0)]),
            ),
        ];
        let months = position_consumption(histories, MeasureUnit::Mwh, &periods);
        assert!(months[0].partial);
        assert_eq!(months[0].meters, vec![2]);
    }

    #[test]
    fn ranges_are_checked_naming_the_field() {
        let field = |result: Result<(NaiveDate, NaiveDate)>| match result {
            Err(Error::Invalid { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            date_range(
                Some(date(2026, 3, 1)),
                Some(date(2026, 2, 1)),
                Granularity::Month
            )
            .map_err(|e| e.to_string())
            .unwrap_err()
            .split(':')
            .next(),
            Some("to")
        );
        assert_eq!(
            field(date_range(Some(date(2200, 12, 31)), None, Granularity::Day)),
            "from"
        );
        assert_eq!(
            field(date_range(
                Some(date(2000, 1, 1)),
                Some(date(2026, 1, 1)),
                Granularity::Day
            )),
            "to"
        );
        assert_eq!(
            field(date_range(Some(date(1800, 1, 1)), None, Granularity::Year)),
            "from"
        );
        assert!(date_range(
            Some(date(2000, 1, 1)),
            Some(date(2026, 1, 1)),
            Granularity::Month
        )
        .is_ok());
        let (from, to) = date_range(None, Some(date(2026, 3, 15)), Granularity::Month).unwrap();
        assert_eq!((from, to), (date(2025, 4, 15), date(2026, 3, 15)));
        // Exactly the limit is accepted.
        let to = date(2020, 1, 1) + TimeDelta::days(MAX_DAYS - 1);
        assert!(date_range(Some(date(2020, 1, 1)), Some(to), Granularity::Day).is_ok());
        let (start, end) = instant_range(Some(date(2026, 3, 1)), Some(date(2026, 3, 1))).unwrap();
        assert_eq!(
            (start, end),
            (Some(paris(2026, 3, 1, 0)), Some(paris(2026, 3, 2, 0)))
        );
        assert!(instant_range(Some(date(2026, 3, 2)), Some(date(2026, 3, 1))).is_err());
    }
}
