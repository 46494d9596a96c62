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
}

impl FaultConfig {
    /// Rolls the dice for one request; returns the status code to fail it with.
    pub fn roll(&self, is_write: bool) -> Option<u16> {
        if self.error_rate <= 0.0 || fastrand::f64() >= self.error_rate {
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
        codes.get(fastrand::usize(..codes.len())).copied()
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
            never_ready_selector: None,
        };
        assert_eq!(f.roll(true), Some(409));
        assert_eq!(f.roll(false), None);
    }

    #[test]
    fn zero_rate_injects_nothing() {
        assert_eq!(FaultConfig::default().roll(true), None);
    }
}
