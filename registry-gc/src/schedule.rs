//! Cron schedules for garbage collection, evaluated in UTC.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use croner::Cron;

use crate::error::GcError;

pub struct Schedule {
    cron: Cron,
    pub expression: String,
}

impl Schedule {
    /// A 5-field cron expression or one of the shortcuts `@hourly`,
    /// `@daily`, `@midnight`, `@weekly`, `@monthly`, `@yearly`, `@annually`.
    pub fn parse(expression: &str) -> Result<Schedule, GcError> {
        let trimmed = expression.trim();
        let fields = trimmed.split_whitespace().count();
        if !trimmed.starts_with('@') && fields != 5 {
            return Err(GcError::Invalid(format!(
                "schedule {expression:?}: expected 5 fields (minute hour day month weekday) or an @shortcut"
            )));
        }
        // "@midnight" is the same instant as "@daily".
        let normalized = if trimmed.eq_ignore_ascii_case("@midnight") {
            "@daily"
        } else {
            trimmed
        };
        let cron = Cron::from_str(normalized)
            .map_err(|e| GcError::Invalid(format!("schedule {expression:?}: {e}")))?;
        Ok(Schedule {
            cron,
            expression: trimmed.to_owned(),
        })
    }

    /// The first run strictly after `after`.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron.find_next_occurrence(&after, false).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn shortcuts_and_fields() {
        let t = Utc.with_ymd_and_hms(2026, 3, 14, 15, 9, 26).unwrap();
        let next = |e: &str| Schedule::parse(e).unwrap().next_after(t).unwrap();
        assert_eq!(
            next("@hourly"),
            Utc.with_ymd_and_hms(2026, 3, 14, 16, 0, 0).unwrap()
        );
        assert_eq!(
            next("@daily"),
            Utc.with_ymd_and_hms(2026, 3, 15, 0, 0, 0).unwrap()
        );
        assert_eq!(
            next("@midnight"),
            Utc.with_ymd_and_hms(2026, 3, 15, 0, 0, 0).unwrap()
        );
        assert_eq!(
            next("@monthly"),
            Utc.with_ymd_and_hms(2026, 4, 1, 0, 0, 0).unwrap()
        );
        assert_eq!(
            next("@yearly"),
            Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0).unwrap()
        );
        assert_eq!(
            next("@weekly"),
            Utc.with_ymd_and_hms(2026, 3, 15, 0, 0, 0).unwrap()
        ); // a Sunday
        assert_eq!(
            next("30 2 * * *"),
            Utc.with_ymd_and_hms(2026, 3, 15, 2, 30, 0).unwrap()
        );
        assert_eq!(
            next("*/15 * * * *"),
            Utc.with_ymd_and_hms(2026, 3, 14, 15, 15, 0).unwrap()
        );
        for bad in ["", "* * *", "61 * * * *", "@sometimes", "* * * * * *"] {
            assert!(Schedule::parse(bad).is_err(), "{bad:?} must be refused");
        }
    }
}
