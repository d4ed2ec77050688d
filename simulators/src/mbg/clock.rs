//! The virtual clock meters live on. By default it runs with real time from a chosen
//! start; a test moves it with [`SimClock::set_time`] and [`SimClock::advance`], and a
//! forward jump makes every meter consume for the span jumped. Clones share one clock,
//! so several gateways can be moved through "the night" together.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

#[derive(Debug, Clone, Copy)]
struct State {
    /// Virtual Unix time at `since`.
    base: i64,
    since: Instant,
    running: bool,
}

#[derive(Debug, Clone)]
pub struct SimClock {
    state: Arc<Mutex<State>>,
}

impl Default for SimClock {
    fn default() -> Self {
        SimClock::system()
    }
}

impl SimClock {
    /// Starts at `unix` and runs with real time.
    pub fn starting_at(unix: i64) -> SimClock {
        SimClock::with(unix, true)
    }

    /// Stands still at `unix`; only [`SimClock::set_time`] and [`SimClock::advance`]
    /// move it. What tests want for exact values.
    pub fn frozen(unix: i64) -> SimClock {
        SimClock::with(unix, false)
    }

    /// The system time, running.
    pub fn system() -> SimClock {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        SimClock::starting_at(now)
    }

    fn with(unix: i64, running: bool) -> SimClock {
        SimClock {
            state: Arc::new(Mutex::new(State {
                base: unix,
                since: Instant::now(),
                running,
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Virtual Unix time now.
    pub fn now(&self) -> i64 {
        self.at(Instant::now())
    }

    /// Virtual Unix time at a real instant (past or future), as the clock stands.
    pub fn at(&self, instant: Instant) -> i64 {
        let state = *self.lock();
        if !state.running {
            return state.base;
        }
        match instant.checked_duration_since(state.since) {
            Some(elapsed) => state.base.saturating_add(secs(elapsed)),
            None => state.base.saturating_sub(secs(state.since - instant)),
        }
    }

    pub fn set_time(&self, unix: i64) {
        let mut state = self.lock();
        state.base = unix;
        state.since = Instant::now();
    }

    /// Jumps forward (or back, with a negative count) by `seconds`.
    pub fn advance(&self, seconds: i64) {
        let now = self.now();
        self.set_time(now.saturating_add(seconds));
    }

    /// Stops the clock where it is, or lets it run with real time again.
    pub fn set_running(&self, running: bool) {
        let now = self.now();
        let mut state = self.lock();
        state.base = now;
        state.since = Instant::now();
        state.running = running;
    }

    pub fn is_running(&self) -> bool {
        self.lock().running
    }
}

fn secs(duration: Duration) -> i64 {
    i64::try_from(duration.as_secs()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn runs_jumps_and_stops() {
        let clock = SimClock::starting_at(1_000);
        let shared = clock.clone();
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(clock.now(), 1_005);
        shared.advance(3600);
        assert_eq!(clock.now(), 4_605);
        clock.set_running(false);
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(shared.now(), 4_605);
        let frozen = SimClock::frozen(7);
        frozen.set_time(9);
        assert_eq!(frozen.now(), 9);
        assert!(!frozen.is_running());
    }
}
