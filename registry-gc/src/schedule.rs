//! Cron schedules for garbage collection, evaluated in UTC.

use std::str::FromStr;

use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, Utc};
use croner::Cron;
use registry_core::Clock;
use tokio::sync::watch;

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

/// The next time `expression` names after now, if it is set and parses.
pub fn next_time(expression: Option<&str>, clock: &Clock) -> Option<DateTime<Utc>> {
    Schedule::parse(expression?).ok()?.next_after(clock.now())
}

/// Calls `fire` at every time the schedule in `schedule` names (none: never),
/// following its changes, until the sender is dropped.
pub fn spawn_cron<F, Fut>(
    clock: Clock,
    mut schedule: watch::Receiver<Option<String>>,
    fire: F,
) -> tokio::task::JoinHandle<()>
where
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    tokio::spawn(async move {
        loop {
            let next = next_time(schedule.borrow_and_update().as_deref(), &clock);
            let Some(at) = next else {
                if schedule.changed().await.is_err() {
                    return;
                }
                continue;
            };
            let wait = (at - clock.now()).to_std().unwrap_or(Duration::ZERO);
            tokio::select! {
                () = tokio::time::sleep(wait) => {
                    fire().await;
                    // Do not fire twice for the same minute.
                    tokio::time::sleep(Duration::from_millis(1100)).await;
                }
                changed = schedule.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
            }
        }
    })
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
