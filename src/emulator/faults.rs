//! Fault injection for tests: error responses at a rate, pods that never become ready, dropped watches.

use serde::{Deserialize, Serialize};

/// What the emulator currently injects. Changed at run time through `PUT /emulator/faults`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct FaultConfig {
    /// Fraction (0.0–1.0) of API requests answered with an injected error.
    pub error_rate: f64,
    /// Status codes to choose from; 409 is only used for writes. Empty means 500 and 503.
    pub error_codes: Vec<u16>,
    /// A label selector: ReplicaSets whose pod template labels match never get ready pods.
    pub never_ready_selector: Option<String>,
    /// Seeds the dice, so a test's run of injected errors can be replayed; without it they are random.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
}

/// The dice behind [`FaultConfig::roll`]: reseeded whenever the configuration names a new seed.
#[derive(Debug)]
pub struct FaultDice {
    seed: Option<u64>,
    rng: fastrand::Rng,
}

impl Default for FaultDice {
    fn default() -> Self {
        Self {
            seed: None,
            rng: fastrand::Rng::new(),
        }
    }
}

impl FaultDice {
    /// The generator for `config`: the same sequence after every change to its seed.
    fn for_config(&mut self, config: &FaultConfig) -> &mut fastrand::Rng {
        if config.seed.is_some() && config.seed != self.seed {
            self.rng = fastrand::Rng::with_seed(config.seed.unwrap_or_default());
        }
        self.seed = config.seed;
        &mut self.rng
    }
}

impl FaultConfig {
    /// Rolls the dice for one request; returns the status code to fail it with.
    pub fn roll(&self, dice: &mut FaultDice, is_write: bool) -> Option<u16> {
        let rng = dice.for_config(self);
        if self.error_rate <= 0.0 || rng.f64() >= self.error_rate {
            return None;
        }
        let codes: Vec<u16> = if self.error_codes.is_empty() {
            vec![500, 503]
        } else {
            self.error_codes
                .iter()
                .copied()
                .filter(|c| is_write || *c != 409)
                .collect()
        };
        if codes.is_empty() {
            return None;
        }
        codes.get(rng.usize(..codes.len())).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflicts_are_injected_on_writes_only() {
        let f = FaultConfig {
            error_rate: 1.0,
            error_codes: vec![409],
            ..FaultConfig::default()
        };
        let mut dice = FaultDice::default();
        assert_eq!(f.roll(&mut dice, true), Some(409));
        assert_eq!(f.roll(&mut dice, false), None);
    }

    #[test]
    fn zero_rate_injects_nothing() {
        assert_eq!(
            FaultConfig::default().roll(&mut FaultDice::default(), true),
            None
        );
    }

    #[test]
    fn a_seed_replays_the_same_faults() {
        let f = FaultConfig {
            error_rate: 0.3,
            error_codes: vec![409, 500, 503],
            seed: Some(7),
            ..FaultConfig::default()
        };
        let rolls = |dice: &mut FaultDice| -> Vec<Option<u16>> {
            (0..200).map(|i| f.roll(dice, i % 2 == 0)).collect()
        };
        let first = rolls(&mut FaultDice::default());
        assert_eq!(first, rolls(&mut FaultDice::default()));
        assert!(first.iter().any(Option::is_some) && first.iter().any(Option::is_none));
        // A new seed restarts the sequence; the same seed again does not.
        let mut dice = FaultDice::default();
        let a = rolls(&mut dice);
        let b = rolls(&mut dice);
        assert_eq!(a, first);
        assert_ne!(a, b);
    }
}
