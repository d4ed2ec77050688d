//! Fault injection: what happens to a request before, or instead of, the device
//! answering it. A [`Faults`] is a cheap cloneable handle; tests and the control
//! commands change it while servers run. Its random draws come from a seedable RNG
//! so a test can replay the same sequence of faults.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;
use tokio_modbus::ExceptionCode;

/// The persistent faults. Probabilities are 0.0 to 1.0; anything else counts as 0 or 1.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FaultSettings {
    /// Added before each answer.
    pub latency: Duration,
    /// The request is lost: never processed, never answered.
    pub drop_request: f64,
    /// The request is processed but the answer is lost (a client retrying must not
    /// apply a change twice).
    pub drop_reply: f64,
    /// The TCP connection is closed instead of answering (on RTU: no answer).
    pub close_connection: f64,
    /// The request is answered with this exception instead of being processed.
    pub exception: Option<(ExceptionCode, f64)>,
}

/// What to do with one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Answer,
    DropRequest,
    DropReply,
    Close,
    Exception(ExceptionCode),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    pub latency: Duration,
    pub outcome: Outcome,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Offline {
    No,
    Until(Instant),
    UntilSwitchedBack,
}

#[derive(Debug)]
struct Inner {
    settings: FaultSettings,
    offline: Offline,
    rng: StdRng,
}

#[derive(Debug, Clone)]
pub struct Faults {
    inner: Arc<Mutex<Inner>>,
}

impl Default for Faults {
    fn default() -> Self {
        Faults::with_rng(StdRng::from_entropy())
    }
}

impl Faults {
    /// No faults, with a fixed seed for the random draws.
    pub fn seeded(seed: u64) -> Faults {
        Faults::with_rng(StdRng::seed_from_u64(seed))
    }

    fn with_rng(rng: StdRng) -> Faults {
        Faults {
            inner: Arc::new(Mutex::new(Inner {
                settings: FaultSettings::default(),
                offline: Offline::No,
                rng,
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic elsewhere while holding the lock leaves plain data behind; keep going.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn settings(&self) -> FaultSettings {
        self.lock().settings.clone()
    }

    pub fn set(&self, settings: FaultSettings) {
        self.lock().settings = settings;
    }

    /// Back to a healthy, online device.
    pub fn clear(&self) {
        let mut inner = self.lock();
        inner.settings = FaultSettings::default();
        inner.offline = Offline::No;
    }

    pub fn reseed(&self, seed: u64) {
        self.lock().rng = StdRng::seed_from_u64(seed);
    }

    pub fn set_latency(&self, latency: Duration) {
        self.lock().settings.latency = latency;
    }

    pub fn set_drop_probability(&self, probability: f64) {
        self.lock().settings.drop_request = probability;
    }

    pub fn set_drop_reply_probability(&self, probability: f64) {
        self.lock().settings.drop_reply = probability;
    }

    pub fn set_close_probability(&self, probability: f64) {
        self.lock().settings.close_connection = probability;
    }

    /// Answer `code` instead of processing, with this probability; `None` stops it.
    pub fn set_exception(&self, exception: Option<(ExceptionCode, f64)>) {
        self.lock().settings.exception = exception;
    }

    /// Offline: no request is answered and TCP connections are closed, for `duration`
    /// or, with `None`, until [`Faults::go_online`].
    pub fn go_offline(&self, duration: Option<Duration>) {
        self.lock().offline = match duration {
            Some(duration) => Offline::Until(Instant::now() + duration),
            None => Offline::UntilSwitchedBack,
        };
    }

    pub fn go_online(&self) {
        self.lock().offline = Offline::No;
    }

    pub fn is_offline(&self) -> bool {
        match self.lock().offline {
            Offline::No => false,
            Offline::Until(end) => Instant::now() < end,
            Offline::UntilSwitchedBack => true,
        }
    }

    /// Draws the fate of one request.
    pub fn plan(&self) -> Plan {
        if self.is_offline() {
            return Plan {
                latency: Duration::ZERO,
                outcome: Outcome::Close,
            };
        }
        let mut inner = self.lock();
        let Inner { settings, rng, .. } = &mut *inner;
        let outcome = if chance(rng, settings.drop_request) {
            Outcome::DropRequest
        } else if chance(rng, settings.close_connection) {
            Outcome::Close
        } else if let Some((code, _)) = settings.exception.filter(|(_, p)| chance(rng, *p)) {
            Outcome::Exception(code)
        } else if chance(rng, settings.drop_reply) {
            Outcome::DropReply
        } else {
            Outcome::Answer
        };
        Plan {
            latency: settings.latency,
            outcome,
        }
    }
}

/// True with probability `p`. Draws nothing when `p` is 0, so enabling one fault does
/// not change the draws of a test that uses none.
fn chance(rng: &mut StdRng, p: f64) -> bool {
    p > 0.0 && rng.gen::<f64>() < p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcomes(faults: &Faults, n: usize) -> Vec<Outcome> {
        (0..n).map(|_| faults.plan().outcome).collect()
    }

    #[test]
    fn healthy_by_default_and_extremes_are_certain() {
        let faults = Faults::seeded(1);
        assert!(outcomes(&faults, 50).iter().all(|o| *o == Outcome::Answer));
        faults.set_drop_probability(1.0);
        assert!(outcomes(&faults, 50)
            .iter()
            .all(|o| *o == Outcome::DropRequest));
        faults.set_drop_probability(f64::NAN);
        faults.set_exception(Some((ExceptionCode::ServerDeviceFailure, 2.0)));
        assert_eq!(
            faults.plan().outcome,
            Outcome::Exception(ExceptionCode::ServerDeviceFailure)
        );
    }

    #[test]
    fn same_seed_same_faults() {
        let a = Faults::seeded(42);
        let b = Faults::seeded(42);
        for f in [&a, &b] {
            f.set_drop_probability(0.3);
            f.set_close_probability(0.3);
        }
        let drawn = outcomes(&a, 200);
        assert_eq!(drawn, outcomes(&b, 200));
        assert!(drawn.contains(&Outcome::DropRequest) && drawn.contains(&Outcome::Answer));
    }

    #[tokio::test(start_paused = true)]
    async fn offline_for_a_while() {
        let faults = Faults::seeded(0);
        faults.go_offline(Some(Duration::from_secs(2)));
        assert_eq!(faults.plan().outcome, Outcome::Close);
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(!faults.is_offline());
        faults.go_offline(None);
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert!(faults.is_offline());
        faults.go_online();
        assert_eq!(faults.plan().outcome, Outcome::Answer);
    }
}
