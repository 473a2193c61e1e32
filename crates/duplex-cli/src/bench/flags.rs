//! Rules every load's flags share.

use std::time::Duration;

use super::error::BenchError;

/// The largest payload a run may send.
pub(super) const MAX_SIZE: usize = 64 << 20;

/// A number of seconds given as `flag`: finite, not negative, and above
/// zero unless `zero_ok`.
pub(super) fn seconds(flag: &str, secs: f64, zero_ok: bool) -> Result<Duration, BenchError> {
    Duration::try_from_secs_f64(secs)
        .ok()
        .filter(|d| zero_ok || !d.is_zero())
        .ok_or_else(|| {
            let what = if zero_ok { "0 or more" } else { "more than 0" };
            BenchError::Usage(format!("{flag} {secs}: must be {what} seconds"))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_are_finite_and_not_negative() {
        assert_eq!(
            seconds("--x", 1.5, false).unwrap(),
            Duration::from_millis(1500)
        );
        assert_eq!(seconds("--x", 0.0, true).unwrap(), Duration::ZERO);
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let err = seconds("--x", bad, false).unwrap_err().to_string();
            assert!(err.contains("--x"), "{err}");
        }
    }
}
