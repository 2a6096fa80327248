//! The logging channel's counters, summed over a cluster's nodes: where a
//! paired write's time goes (exchanges with the backup, records per exchange,
//! the backup's write and fdatasync per append).

use crate::failover::Cluster;

/// The pair counters of `/metrics`, summed over nodes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PairCounters {
    exchanges: u64,
    exchange_micros: u64,
    records_sent: u64,
    backup_appends: u64,
    backup_append_micros: u64,
}

impl PairCounters {
    /// Reads and sums every node's counters; an error if a node does not
    /// answer (the throughput phases run with every node up).
    pub async fn read(cluster: &Cluster) -> Result<PairCounters, String> {
        let http = reqwest::Client::new();
        let mut total = PairCounters::default();
        for id in Cluster::node_ids() {
            let url = format!("{}/metrics", cluster.client_url(id));
            let text = match http.get(&url).send().await {
                Ok(response) => response.text().await.map_err(|error| error.to_string())?,
                Err(error) => return Err(format!("cannot read {url}: {error}")),
            };
            total = total.plus(&PairCounters::parse(&text));
        }
        Ok(total)
    }

    fn parse(text: &str) -> PairCounters {
        let value = |name: &str| {
            text.lines()
                .filter_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
                .find_map(|value| value.trim().parse::<u64>().ok())
                .unwrap_or(0)
        };
        PairCounters {
            exchanges: value("understudy_pair_exchanges_total"),
            exchange_micros: value("understudy_pair_exchange_micros_total"),
            records_sent: value("understudy_pair_records_sent_total"),
            backup_appends: value("understudy_pair_backup_appends_total"),
            backup_append_micros: value("understudy_pair_backup_append_micros_total"),
        }
    }

    fn plus(&self, other: &PairCounters) -> PairCounters {
        PairCounters {
            exchanges: self.exchanges + other.exchanges,
            exchange_micros: self.exchange_micros + other.exchange_micros,
            records_sent: self.records_sent + other.records_sent,
            backup_appends: self.backup_appends + other.backup_appends,
            backup_append_micros: self.backup_append_micros + other.backup_append_micros,
        }
    }

    /// What happened between `earlier` and `self`, as one line.
    pub fn describe_since(&self, earlier: &PairCounters) -> String {
        let exchanges = self.exchanges.saturating_sub(earlier.exchanges);
        let records = self.records_sent.saturating_sub(earlier.records_sent);
        let exchange_micros = self.exchange_micros.saturating_sub(earlier.exchange_micros);
        let appends = self.backup_appends.saturating_sub(earlier.backup_appends);
        let append_micros = self
            .backup_append_micros
            .saturating_sub(earlier.backup_append_micros);
        let per = |total: u64, count: u64| total as f64 / count.max(1) as f64;
        format!(
            "{exchanges} exchanges with the backup ({:.0} µs each, {:.1} records each); \
             {appends} appends at the backup ({:.0} µs each to write and sync)",
            per(exchange_micros, exchanges),
            per(records, exchanges),
            per(append_micros, appends),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_differences_the_counters() {
        let text = "# TYPE understudy_pair_exchanges_total counter\n\
                    understudy_pair_exchanges_total 10\n\
                    understudy_pair_exchange_micros_total 5000\n\
                    understudy_pair_records_sent_total 40\n\
                    understudy_pair_backup_appends_total 10\n\
                    understudy_pair_backup_append_micros_total 2000\n";
        let later = PairCounters::parse(text);
        assert_eq!(later.exchanges, 10);
        assert_eq!(later.backup_append_micros, 2000);
        let line = later.describe_since(&PairCounters::default());
        assert!(line.contains("10 exchanges"), "{line}");
        assert!(line.contains("500 µs each, 4.0 records each"), "{line}");
        assert!(line.contains("200 µs each to write"), "{line}");
    }
}
