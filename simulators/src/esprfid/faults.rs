//! Lost MQTT messages, drawn from a seedable RNG like [`crate::faults::Faults`]. An
//! ESP8266 low on memory drops what it receives without a trace; what it publishes at
//! QoS 0 can be lost on the way. Being offline is the device's own switch
//! ([`super::EspRfidDevice::set_offline`]), since it closes the connection.

use std::sync::{Arc, Mutex, MutexGuard};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

#[derive(Debug)]
struct Inner {
    drop_commands: f64,
    drop_messages: f64,
    rng: StdRng,
}

/// A cheap cloneable handle; probabilities are 0.0 to 1.0 (anything else counts as 0
/// or 1) and can change while the device runs.
#[derive(Debug, Clone)]
pub struct EspRfidFaults {
    inner: Arc<Mutex<Inner>>,
}

impl Default for EspRfidFaults {
    fn default() -> Self {
        EspRfidFaults::with_rng(StdRng::from_entropy())
    }
}

impl EspRfidFaults {
    /// No faults, with a fixed seed for the random draws.
    pub fn seeded(seed: u64) -> EspRfidFaults {
        EspRfidFaults::with_rng(StdRng::seed_from_u64(seed))
    }

    fn with_rng(rng: StdRng) -> EspRfidFaults {
        EspRfidFaults {
            inner: Arc::new(Mutex::new(Inner {
                drop_commands: 0.0,
                drop_messages: 0.0,
                rng,
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic elsewhere while holding the lock leaves plain numbers behind; keep going.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Probability that a command arriving on `TOPIC/cmd` is lost unprocessed.
    pub fn set_drop_commands(&self, probability: f64) {
        self.lock().drop_commands = probability;
    }

    /// Probability that a message the device publishes never leaves it.
    pub fn set_drop_messages(&self, probability: f64) {
        self.lock().drop_messages = probability;
    }

    /// (commands, messages).
    pub fn probabilities(&self) -> (f64, f64) {
        let inner = self.lock();
        (inner.drop_commands, inner.drop_messages)
    }

    pub fn reseed(&self, seed: u64) {
        self.lock().rng = StdRng::seed_from_u64(seed);
    }

    pub(crate) fn drop_command(&self) -> bool {
        let mut inner = self.lock();
        let p = inner.drop_commands;
        chance(&mut inner.rng, p)
    }

    pub(crate) fn drop_message(&self) -> bool {
        let mut inner = self.lock();
        let p = inner.drop_messages;
        chance(&mut inner.rng, p)
    }
}

/// True with probability `p`; draws nothing when `p` is 0, so a fault left off does not
/// change the draws of the others.
fn chance(rng: &mut StdRng, p: f64) -> bool {
    p > 0.0 && rng.gen::<f64>() < p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certain_and_repeatable() {
        let faults = EspRfidFaults::seeded(1);
        assert!(!(0..50).any(|_| faults.drop_command() || faults.drop_message()));
        faults.set_drop_commands(1.0);
        assert!((0..50).all(|_| faults.drop_command()));
        let draws = |seed| {
            let f = EspRfidFaults::seeded(seed);
            f.set_drop_messages(0.5);
            (0..100).map(|_| f.drop_message()).collect::<Vec<_>>()
        };
        assert_eq!(draws(7), draws(7));
        assert!(draws(7).contains(&true) && draws(7).contains(&false));
    }
}
