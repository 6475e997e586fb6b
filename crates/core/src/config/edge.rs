//! The api's edge: how connections are served (timeouts, caps), how many requests run at once before the
//! api sheds load, and each client's rate limits. Read with the other settings; used only by the api.

use std::time::Duration;

use ipnet::IpNet;

use super::parse;

/// Connections, load shedding and rate limits.
#[derive(Debug, Clone)]
pub struct Edge {
    /// A client must send a request's whole header within this, or its connection is closed
    /// (`HTTP_HEADER_READ_TIMEOUT_MS`).
    pub header_read_timeout: Duration,
    /// A keep-alive connection with nothing to read for this long is closed (`HTTP_KEEPALIVE_TIMEOUT_SECS`).
    pub keepalive_timeout: Duration,
    /// Open connections one process serves; beyond, a new one is accepted and closed at once.
    pub max_connections: usize,
    /// Requests one process handles at once; beyond, 503 with `Retry-After` at once (load shedding).
    pub max_in_flight: usize,
    /// Each client's requests per second and burst, per class; 0 turns a class's limit off.
    pub reads: RateLimit,
    pub orders: RateLimit,
    pub admin: RateLimit,
    /// Proxies whose `X-Forwarded-For` is believed (addresses or CIDR ranges); a guest is limited by the
    /// address the nearest untrusted hop reports.
    pub trusted_proxies: Vec<IpNet>,
}

/// A client's sustained rate and burst for one class of requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub per_second: u32,
    pub burst: u32,
}

impl Edge {
    pub(super) fn from_env() -> anyhow::Result<Self> {
        let rate = |rate_var: &str, burst_var: &str, per_second: u32| -> anyhow::Result<RateLimit> {
            let per_second = parse(rate_var, per_second)?;
            let burst = parse(burst_var, per_second.saturating_mul(2))?;
            Ok(RateLimit { per_second, burst })
        };
        let edge = Self {
            header_read_timeout: Duration::from_millis(parse("HTTP_HEADER_READ_TIMEOUT_MS", 10_000)?),
            keepalive_timeout: Duration::from_secs(parse("HTTP_KEEPALIVE_TIMEOUT_SECS", 10)?),
            max_connections: parse("HTTP_MAX_CONNECTIONS", 10_000)?,
            max_in_flight: parse("HTTP_MAX_IN_FLIGHT", 4_096)?,
            reads: rate("RATE_LIMIT_READS_PER_SEC", "RATE_LIMIT_READS_BURST", 200)?,
            orders: rate("RATE_LIMIT_ORDERS_PER_SEC", "RATE_LIMIT_ORDERS_BURST", 20)?,
            admin: rate("RATE_LIMIT_ADMIN_PER_SEC", "RATE_LIMIT_ADMIN_BURST", 50)?,
            trusted_proxies: super::list("TRUSTED_PROXIES")
                .iter()
                .map(|p| {
                    p.parse::<IpNet>().or_else(|_| p.parse::<std::net::IpAddr>().map(IpNet::from)).map_err(
                        |_| anyhow::anyhow!("TRUSTED_PROXIES: {p:?} is not an address or CIDR range"),
                    )
                })
                .collect::<anyhow::Result<_>>()?,
        };
        edge.check()?;
        Ok(edge)
    }

    fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.header_read_timeout >= Duration::from_millis(100),
            "HTTP_HEADER_READ_TIMEOUT_MS must be at least 100"
        );
        anyhow::ensure!(
            self.keepalive_timeout >= Duration::from_secs(1),
            "HTTP_KEEPALIVE_TIMEOUT_SECS must be at least 1"
        );
        anyhow::ensure!(self.max_connections >= 1, "HTTP_MAX_CONNECTIONS must be at least 1");
        anyhow::ensure!(self.max_in_flight >= 1, "HTTP_MAX_IN_FLIGHT must be at least 1");
        for (name, limit) in [("READS", self.reads), ("ORDERS", self.orders), ("ADMIN", self.admin)] {
            anyhow::ensure!(
                limit.per_second == 0 || limit.burst >= 1,
                "RATE_LIMIT_{name}_BURST must be at least 1 when RATE_LIMIT_{name}_PER_SEC is set"
            );
        }
        Ok(())
    }
}
