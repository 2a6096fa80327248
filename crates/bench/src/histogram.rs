//! Latency samples and their percentiles (nearest-rank on sorted samples).
//!
//! A benchmark run records at most [`SAMPLES_MAX`] latencies; beyond that it
//! keeps counting operations but stops storing samples, so memory stays bounded
//! however fast the target is.

use std::time::Duration;

/// Latency samples one [`Samples`] stores, at most (8 MiB of `u64`s).
pub const SAMPLES_MAX: usize = 1 << 20;

/// Latencies of successful operations, in microseconds.
#[derive(Debug, Default, Clone)]
pub struct Samples {
    latencies_us: Vec<u64>,
    /// Successful operations, including those whose sample was not stored.
    operations: u64,
    sorted: bool,
}

impl Samples {
    /// An empty set of samples.
    pub fn new() -> Samples {
        Samples::default()
    }

    /// Records one successful operation that took `latency`.
    pub fn record(&mut self, latency: Duration) {
        self.operations += 1;
        if self.latencies_us.len() < SAMPLES_MAX {
            let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
            self.latencies_us.push(micros);
            self.sorted = false;
        }
    }

    /// Adds every operation and sample of `other`, up to [`SAMPLES_MAX`] samples.
    pub fn merge(&mut self, other: &Samples) {
        self.operations += other.operations;
        let room = SAMPLES_MAX - self.latencies_us.len();
        let taken = other.latencies_us.len().min(room);
        self.latencies_us
            .extend_from_slice(&other.latencies_us[..taken]);
        self.sorted = false;
    }

    /// Successful operations recorded (stored or not).
    pub fn operations(&self) -> u64 {
        self.operations
    }

    /// The `percent`-th percentile latency (nearest rank: the smallest sample
    /// with at least `percent`% of the samples at or below it), or `None` if
    /// there are no samples.
    pub fn percentile(&mut self, percent: f64) -> Option<Duration> {
        assert!(
            (0.0..=100.0).contains(&percent),
            "percentile {percent} is outside 0..=100"
        );
        if self.latencies_us.is_empty() {
            return None;
        }
        if !self.sorted {
            self.latencies_us.sort_unstable();
            self.sorted = true;
        }
        let count = self.latencies_us.len();
        // Nearest rank: ceil(p/100 * n), at least 1, as a 1-based index.
        let rank = ((percent / 100.0) * count as f64).ceil() as usize;
        let index = rank.clamp(1, count) - 1;
        Some(Duration::from_micros(self.latencies_us[index]))
    }
}

/// Milliseconds with two decimals, or `-` for no value.
pub fn format_millis(value: Option<Duration>) -> String {
    match value {
        Some(duration) => format!("{:.2}", duration.as_secs_f64() * 1000.0),
        None => "-".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples_of(millis: &[u64]) -> Samples {
        let mut samples = Samples::new();
        for &value in millis {
            samples.record(Duration::from_millis(value));
        }
        samples
    }

    #[test]
    fn empty_samples_have_no_percentiles() {
        let mut samples = Samples::new();
        assert_eq!(samples.percentile(50.0), None);
        assert_eq!(samples.operations(), 0);
        assert_eq!(format_millis(None), "-");
    }

    #[test]
    fn nearest_rank_percentiles_of_one_to_a_hundred() {
        // Recorded in reverse so the sort matters.
        let values: Vec<u64> = (1..=100).rev().collect();
        let mut samples = samples_of(&values);
        let at = |samples: &mut Samples, percent| samples.percentile(percent).unwrap();
        assert_eq!(at(&mut samples, 50.0), Duration::from_millis(50));
        assert_eq!(at(&mut samples, 99.0), Duration::from_millis(99));
        assert_eq!(at(&mut samples, 100.0), Duration::from_millis(100));
        assert_eq!(at(&mut samples, 0.0), Duration::from_millis(1));
        assert_eq!(at(&mut samples, 90.5), Duration::from_millis(91));
    }

    #[test]
    fn small_sets_round_up_to_the_next_sample() {
        let mut samples = samples_of(&[30, 10, 20]);
        assert_eq!(samples.percentile(50.0), Some(Duration::from_millis(20)));
        assert_eq!(samples.percentile(99.0), Some(Duration::from_millis(30)));
        assert_eq!(samples.percentile(33.0), Some(Duration::from_millis(10)));
        assert_eq!(samples.percentile(34.0), Some(Duration::from_millis(20)));
    }

    #[test]
    fn recording_after_a_percentile_resorts() {
        let mut samples = samples_of(&[5, 6]);
        assert_eq!(samples.percentile(100.0), Some(Duration::from_millis(6)));
        samples.record(Duration::from_millis(1));
        assert_eq!(samples.percentile(0.0), Some(Duration::from_millis(1)));
        assert_eq!(samples.percentile(100.0), Some(Duration::from_millis(6)));
    }

    #[test]
    fn merge_adds_operations_and_samples() {
        let mut left = samples_of(&[1, 2]);
        let mut right = samples_of(&[3, 4]);
        left.merge(&right);
        assert_eq!(left.operations(), 4);
        assert_eq!(left.percentile(100.0), Some(Duration::from_millis(4)));
        assert_eq!(left.percentile(25.0), Some(Duration::from_millis(1)));
        assert_eq!(right.percentile(0.0), Some(Duration::from_millis(3)));
    }

    #[test]
    fn storage_stops_at_the_limit_but_counting_does_not() {
        let mut samples = Samples::new();
        for _ in 0..SAMPLES_MAX {
            samples.record(Duration::from_micros(1));
        }
        samples.record(Duration::from_secs(1));
        assert_eq!(samples.operations(), SAMPLES_MAX as u64 + 1);
        // The slow sample was not stored: the maximum is still 1 µs.
        assert_eq!(samples.percentile(100.0), Some(Duration::from_micros(1)));
        let mut other = samples_of(&[7]);
        samples.merge(&other);
        assert_eq!(samples.operations(), SAMPLES_MAX as u64 + 2);
        assert_eq!(samples.percentile(100.0), Some(Duration::from_micros(1)));
        assert_eq!(other.percentile(50.0), Some(Duration::from_millis(7)));
    }

    #[test]
    fn milliseconds_format_with_two_decimals() {
        assert_eq!(format_millis(Some(Duration::from_micros(1234))), "1.23");
        assert_eq!(format_millis(Some(Duration::from_secs(2))), "2000.00");
    }
}
