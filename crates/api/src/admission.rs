//! Who gets in, before any handler runs: load shedding and per-client rate limits.
//!
//! - **Shedding.** At most `HTTP_MAX_IN_FLIGHT` requests run at once in a process; one more is answered 503
//!   with `Retry-After` at once, instead of queueing without bound behind the others.
//! - **Rate limits** (`governor`, GCRA). Each client has its own budget per class: reads and quotes
//!   (generous), orders and cancels (stricter), admin operations (their own). A client is the verified
//!   shopper's `sub`, the admin token, or, for a guest, its address (`X-Forwarded-For` is believed only from a
//!   `TRUSTED_PROXIES` peer). Over the limit: 429 with `Retry-After`. Health and `/metrics` are not limited.
//!   The limits are per process: N api processes behind a balancer admit up to N times as much.
//!
//! The caller's identity is resolved here once (`auth::Caller`) and kept in the request for the handlers.

use std::{net::IpAddr, num::NonZeroU32, sync::Arc, time::Duration};

use axum::{
    extract::{Request, State},
    http::{header, HeaderValue, Method},
    middleware::Next,
    response::{IntoResponse, Response},
};
use governor::{clock::Clock, DefaultKeyedRateLimiter, Quota};
use ipnet::IpNet;
use pricing_core::{
    config::{Edge, RateLimit},
    prometheus::names,
};
use tokio::sync::Semaphore;

use crate::{auth::Caller, ApiContext, ApiError};

/// The process's admission state.
pub struct Admission {
    in_flight: Arc<Semaphore>,
    max_in_flight: usize,
    reads: Option<Limiter>,
    orders: Option<Limiter>,
    admin: Option<Limiter>,
    trusted_proxies: Vec<IpNet>,
}

type Limiter = DefaultKeyedRateLimiter<Client>;

/// Whose budget a request spends (a guest's address costs no allocation per request).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Client {
    Shopper(String),
    AdminToken,
    Address(Option<IpAddr>),
}

/// Which budget a request spends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Reads,
    Orders,
    Admin,
}

impl Class {
    fn as_str(self) -> &'static str {
        match self {
            Class::Reads => "reads",
            Class::Orders => "orders",
            Class::Admin => "admin",
        }
    }

    /// `None` for what is never limited: health checks and metrics (probes and scrapers).
    fn of(method: &Method, path: &str) -> Option<Class> {
        let path = path.strip_prefix("/api/v1").unwrap_or(path);
        if path.starts_with("/health") || path == "/metrics" {
            return None;
        }
        let writes = matches!(*method, Method::POST | Method::PUT | Method::DELETE | Method::PATCH);
        Some(match path {
            _ if !writes || path == "/price" => Class::Reads,
            "/orders" => Class::Orders,
            p if p.starts_with("/orders/") && p.ends_with("/cancel") => Class::Orders,
            _ => Class::Admin,
        })
    }
}

impl Admission {
    pub fn new(edge: &Edge) -> Self {
        // Exported from the start, so the dashboard and alerts see a 0 rather than no series.
        metrics::counter!(names::HTTP_SHED).increment(0);
        for class in [Class::Reads, Class::Orders, Class::Admin] {
            metrics::counter!(names::HTTP_RATE_LIMITED, "class" => class.as_str()).increment(0);
        }
        let limiter = |limit: RateLimit| {
            let per_second = NonZeroU32::new(limit.per_second)?;
            let burst = NonZeroU32::new(limit.burst).unwrap_or(per_second);
            Some(Limiter::keyed(Quota::per_second(per_second).allow_burst(burst)))
        };
        Self {
            in_flight: Arc::new(Semaphore::new(edge.max_in_flight)),
            max_in_flight: edge.max_in_flight,
            reads: limiter(edge.reads),
            orders: limiter(edge.orders),
            admin: limiter(edge.admin),
            trusted_proxies: edge.trusted_proxies.clone(),
        }
    }

    fn limiter(&self, class: Class) -> Option<&Limiter> {
        match class {
            Class::Reads => self.reads.as_ref(),
            Class::Orders => self.orders.as_ref(),
            Class::Admin => self.admin.as_ref(),
        }
    }

    /// Forgets clients idle long enough to have their whole budget back, so the table stays small.
    pub fn forget_idle_clients(&self) {
        for limiter in [&self.reads, &self.orders, &self.admin].into_iter().flatten() {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }

    /// The client's address: the peer's, or, when the peer is a trusted proxy, the nearest address in
    /// `X-Forwarded-For` (all its lines) that is not a trusted proxy.
    fn client_ip(&self, request: &Request) -> Option<IpAddr> {
        let peer = crate::server::peer_of(request)?.ip();
        let trusted = |ip: &IpAddr| self.trusted_proxies.iter().any(|net| net.contains(ip));
        if !trusted(&peer) {
            return Some(peer);
        }
        // Every line of the header, nearest hop last: a proxy may append a line of its own rather than
        // extend the client's, and then only the last lines can be trusted.
        let lines: Vec<&str> =
            request.headers().get_all("x-forwarded-for").iter().filter_map(|v| v.to_str().ok()).collect();
        let hops = lines.into_iter().rev().flat_map(|line| line.split(',').rev()).map(str::trim);
        Some(hops.filter_map(|h| h.parse::<IpAddr>().ok()).find(|ip| !trusted(ip)).unwrap_or(peer))
    }
}

/// The middleware: shed, resolve the caller, spend from its budget, then run the request.
pub async fn admit(State(ctx): State<ApiContext>, mut request: Request, next: Next) -> Response {
    let admission = &ctx.admission;
    let Ok(_in_flight) = admission.in_flight.try_acquire() else {
        metrics::counter!(names::HTTP_SHED).increment(1);
        let detail = format!(
            "The api is at capacity ({} requests in flight, HTTP_MAX_IN_FLIGHT); retry shortly",
            admission.max_in_flight
        );
        return refusal(ApiError::Overloaded(detail), Duration::from_secs(1));
    };
    let caller = Caller::resolve(request.headers(), &ctx);
    if let Some(class) = Class::of(request.method(), request.uri().path()) {
        if let Some(limiter) = admission.limiter(class) {
            let key = match &caller {
                Ok(Caller::Shopper(s)) => Client::Shopper(s.sub.clone()),
                Ok(Caller::Operator) => Client::AdminToken,
                _ => Client::Address(admission.client_ip(&request)),
            };
            if let Err(not_until) = limiter.check_key(&key) {
                metrics::counter!(names::HTTP_RATE_LIMITED, "class" => class.as_str()).increment(1);
                let wait = not_until.wait_time_from(governor::clock::DefaultClock::default().now());
                let detail = format!(
                    "Too many {} requests from this client; retry after the Retry-After seconds",
                    class.as_str()
                );
                return refusal(ApiError::RateLimited(detail), wait);
            }
        }
    }
    if let Ok(caller) = caller {
        request.extensions_mut().insert(caller);
    }
    next.run(request).await
}

/// A refusal with `Retry-After` (whole seconds, at least 1).
fn refusal(error: ApiError, wait: Duration) -> Response {
    let mut response = error.into_response();
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    if let Ok(value) = HeaderValue::from_str(&seconds.max(1).to_string()) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_route_spends_from_its_class() {
        let class = |m: Method, p: &str| Class::of(&m, p);
        assert_eq!(class(Method::GET, "/api/v1/products/1"), Some(Class::Reads));
        assert_eq!(class(Method::POST, "/api/v1/price"), Some(Class::Reads));
        assert_eq!(class(Method::GET, "/api/v1/orders"), Some(Class::Reads));
        assert_eq!(class(Method::POST, "/api/v1/orders"), Some(Class::Orders));
        assert_eq!(class(Method::POST, "/orders"), Some(Class::Orders));
        assert_eq!(class(Method::POST, "/api/v1/orders/7/cancel"), Some(Class::Orders));
        assert_eq!(class(Method::POST, "/api/v1/products"), Some(Class::Admin));
        assert_eq!(class(Method::POST, "/api/v1/recalculate"), Some(Class::Admin));
        assert_eq!(class(Method::POST, "/api/v1/publish-market-event"), Some(Class::Admin));
        assert_eq!(class(Method::GET, "/api/v1/health/ready"), None);
        assert_eq!(class(Method::GET, "/metrics"), None);
    }
}
