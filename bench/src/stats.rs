//! Medians over rounds.

use serde::Serialize;

/// Summary of the per-round samples of one measurement.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Stat {
    /// Median of the samples.
    pub median: f64,
    /// Smallest sample.
    pub min: f64,
    /// Largest sample.
    pub max: f64,
    /// Every sample, in round order.
    pub samples: Vec<f64>,
}

impl Stat {
    /// The summary of `samples` (all zero when there are none).
    pub fn of(samples: Vec<f64>) -> Stat {
        if samples.is_empty() {
            return Stat::default();
        }
        let mut s = samples.clone();
        s.sort_by(f64::total_cmp);
        let n = s.len();
        let median = if n % 2 == 1 {
            s[n / 2]
        } else {
            (s[n / 2 - 1] + s[n / 2]) / 2.0
        };
        Stat {
            median,
            min: s[0],
            max: s[n - 1],
            samples,
        }
    }
}

/// `items` rotated left by `by` (so that each round starts with another
/// condition and none always runs first or last).
pub fn rotated<T: Clone>(items: &[T], by: usize) -> Vec<T> {
    if items.is_empty() {
        return Vec::new();
    }
    let k = by % items.len();
    items[k..].iter().chain(&items[..k]).cloned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_rotation() {
        let s = Stat::of(vec![5.0, 1.0, 3.0]);
        assert_eq!((s.median, s.min, s.max), (3.0, 1.0, 5.0));
        assert_eq!(Stat::of(vec![4.0, 1.0, 2.0, 3.0]).median, 2.5);
        assert_eq!(Stat::of(vec![]).median, 0.0);
        assert_eq!(rotated(&[1, 2, 3], 4), vec![2, 3, 1]);
    }
}
