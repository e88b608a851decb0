//! Prometheus metrics (`/metrics`). Counts only: never a name of a secret or a value.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crossbeam_utils::CachePadded;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::{Atomic, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Shards of a [`ShardedCounter`].
const COUNTER_SHARDS: usize = 8;

/// A counter that every agent read increments: threads add to shards of their own (each on its
/// own cache line), so reads on many cores do not contend for one line; it reads as the sum.
pub type ShardedCounter = Counter<u64, CounterShards>;

/// The value of a [`ShardedCounter`].
#[derive(Debug, Default)]
pub struct CounterShards([CachePadded<AtomicU64>; COUNTER_SHARDS]);

/// The next thread's shard.
static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// This thread's shard of every [`ShardedCounter`], handed out in turn.
    static SHARD: usize = NEXT_SHARD.fetch_add(1, Ordering::Relaxed) % COUNTER_SHARDS;
}

impl Atomic<u64> for CounterShards {
    fn inc(&self) -> u64 {
        self.inc_by(1)
    }

    /// Adds to this thread's shard; returns that shard's value before (not the counter's).
    fn inc_by(&self, v: u64) -> u64 {
        let shard = SHARD.try_with(|s| *s).unwrap_or(0);
        self.0[shard].fetch_add(v, Ordering::Relaxed)
    }

    fn get(&self) -> u64 {
        self.0.iter().fold(0u64, |sum, s| sum.wrapping_add(s.load(Ordering::Relaxed)))
    }
}

/// Labels of a request: all `'static`, so counting a request allocates nothing.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub method: &'static str,
    pub route: &'static str,
    pub status: u16,
}

/// The method labels of requests (the last for every other method); each has counter slots of
/// its own in [`RouteCounters`].
const METHODS: [&str; 8] = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "other"];

/// A request method's place in [`METHODS`] (its label, and its counter slots).
pub fn method_index(m: &axum::http::Method) -> usize {
    use axum::http::Method;
    match *m {
        Method::GET => 0,
        Method::POST => 1,
        Method::PUT => 2,
        Method::PATCH => 3,
        Method::DELETE => 4,
        Method::HEAD => 5,
        Method::OPTIONS => 6,
        _ => METHODS.len() - 1,
    }
}
/// Statuses with a counter slot of their own in [`RouteCounters`]; others are looked up.
const STATUSES: [u16; 12] = [200, 201, 204, 400, 401, 403, 404, 409, 413, 422, 429, 503];

/// The request counters of every route (and of requests no route matched), found by the route's
/// template once per request, then kept by index.
pub struct RouteMetrics {
    index: std::collections::HashMap<String, usize>,
    routes: Vec<RouteCounters>,
}

impl RouteMetrics {
    /// The label of requests that matched no route; its counters are at index 0.
    pub const UNMATCHED: &'static str = "unmatched";

    pub fn new(templates: impl IntoIterator<Item = String>) -> RouteMetrics {
        let mut routes = vec![RouteCounters::new(Self::UNMATCHED)];
        let mut index = std::collections::HashMap::new();
        for t in templates {
            index.insert(t.clone(), routes.len());
            // Label values are `'static`: one string per route, for the life of the process.
            routes.push(RouteCounters::new(Box::leak(t.into_boxed_str())));
        }
        RouteMetrics { index, routes }
    }

    /// The index of the route with this template (0 for none or an unknown one).
    pub fn find(&self, template: Option<&str>) -> usize {
        template.and_then(|t| self.index.get(t).copied()).unwrap_or(0)
    }

    /// Counts a request with the method at `method` (from [`method_index`]) to route `route` (an
    /// index from [`RouteMetrics::find`]) in `family`.
    pub fn count(&self, route: usize, family: &Family<RequestLabels, ShardedCounter>, method: usize, status: u16) {
        if let Some(r) = self.routes.get(route).or(self.routes.first()) {
            r.count(family, method, status);
        }
    }
}

/// One route's request counters, kept as they are first used, so that counting a request is an
/// increment rather than a lookup in the family's map.
struct RouteCounters {
    name: &'static str,
    slots: Vec<std::sync::OnceLock<ShardedCounter>>,
}

impl RouteCounters {
    fn new(name: &'static str) -> RouteCounters {
        RouteCounters { name, slots: (0..METHODS.len() * STATUSES.len()).map(|_| Default::default()).collect() }
    }

    fn count(&self, family: &Family<RequestLabels, ShardedCounter>, method: usize, status: u16) {
        let method = method.min(METHODS.len() - 1);
        let labels = || RequestLabels { method: METHODS[method], route: self.name, status };
        let slot = STATUSES.iter().position(|s| *s == status).and_then(|s| self.slots.get(method * STATUSES.len() + s));
        match slot {
            Some(slot) => slot.get_or_init(|| family.get_or_create(&labels()).clone()).inc(),
            None => family.get_or_create(&labels()).inc(),
        };
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

/// The outcomes of an egress connection.
pub const EGRESS_OUTCOMES: [&str; 3] = ["allowed", "refused", "failed"];

/// The outcomes of an agent read, counted without a label lookup.
pub const READ_OUTCOMES: [&str; 4] = ["allowed", "denied", "not_found", "invalid"];

pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, ShardedCounter>,
    secret_reads: [ShardedCounter; 4],
    audit_records: ShardedCounter,
    audit_batches: ShardedCounter,
    audit_failures: Counter,
    pub agents: Gauge<i64, std::sync::atomic::AtomicI64>,
    pub secrets: Gauge<i64, std::sync::atomic::AtomicI64>,
    /// Changes from the change feed applied to the read model.
    pub changes_applied: Counter,
    /// The newest change the read model holds.
    pub change_index: Gauge<i64, std::sync::atomic::AtomicI64>,
    egress_connections: Family<OutcomeLabels, Counter>,
    egress_refusals: Family<ReasonLabels, Counter>,
    egress_injections: Family<OutcomeLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("agentvault");
        let requests = Family::<RequestLabels, ShardedCounter>::default();
        registry.register("http_requests", "HTTP requests by route and status", requests.clone());
        let family = Family::<OutcomeLabels, ShardedCounter>::default();
        registry.register("secret_reads", "Agent secret reads by outcome", family.clone());
        let secret_reads = READ_OUTCOMES.map(|outcome| family.get_or_create(&OutcomeLabels { outcome }).clone());
        let audit_records = ShardedCounter::default();
        registry.register("audit_records", "Audit records written by the group-commit writer", audit_records.clone());
        let audit_batches = ShardedCounter::default();
        registry.register("audit_batches", "Group commits of the audit writer", audit_batches.clone());
        let audit_failures = Counter::default();
        registry.register("audit_failures", "Audit batches that failed to commit", audit_failures.clone());
        let agents = Gauge::default();
        registry.register("agents", "Agents in the read model", agents.clone());
        let secrets = Gauge::default();
        registry.register("secrets", "Secrets in the read model", secrets.clone());
        let changes_applied = Counter::default();
        registry.register(
            "changes_applied",
            "Changes of the change feed applied to the read model",
            changes_applied.clone(),
        );
        let change_index = Gauge::default();
        registry.register("change_index", "The newest change the read model holds", change_index.clone());
        let egress_connections = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "egress_connections",
            "Connections functions asked the egress proxy for, by outcome (allowed, refused, failed)",
            egress_connections.clone(),
        );
        for outcome in EGRESS_OUTCOMES {
            let _ = egress_connections.get_or_create(&OutcomeLabels { outcome });
        }
        let egress_refusals = Family::<ReasonLabels, Counter>::default();
        registry.register("egress_refusals", "Egress connections refused, by reason", egress_refusals.clone());
        let egress_injections = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "egress_injections",
            "Injected credentials: swapped into a request (injected) or refused for its host (refused)",
            egress_injections.clone(),
        );
        Metrics {
            registry,
            requests,
            secret_reads,
            audit_records,
            audit_batches,
            audit_failures,
            agents,
            secrets,
            changes_applied,
            change_index,
            egress_connections,
            egress_refusals,
            egress_injections,
        }
    }

    pub fn audit_batch(&self, records: usize, ok: bool) {
        self.audit_batches.inc();
        if ok {
            self.audit_records.inc_by(records as u64);
        } else {
            self.audit_failures.inc();
        }
    }

    /// Counts an agent read; `outcome` is one of [`READ_OUTCOMES`].
    pub fn read(&self, outcome: &'static str) {
        if let Some(i) = READ_OUTCOMES.iter().position(|o| *o == outcome) {
            self.secret_reads[i].inc();
        }
    }

    /// Counts an egress connection; `outcome` is one of [`EGRESS_OUTCOMES`].
    pub fn egress_connection(&self, outcome: &'static str) {
        self.egress_connections.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    /// Counts an egress refusal by its code (one of `egress::policy::REFUSAL_CODES`).
    pub fn egress_refusal(&self, reason: &'static str) {
        self.egress_refusals.get_or_create(&ReasonLabels { reason }).inc();
    }

    /// Counts an injection: `injected` or `refused`.
    pub fn egress_injection(&self, outcome: &'static str) {
        self.egress_injections.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_route_counts_in_its_slots_and_beyond_them_under_the_same_labels() {
        let family = Family::<RequestLabels, ShardedCounter>::default();
        let routes = RouteMetrics::new(["/api/v1/a".to_string(), "/api/v1/b".to_string()]);
        let a = routes.find(Some("/api/v1/a"));
        let method = |m: &str| method_index(&m.parse().unwrap_or(axum::http::Method::TRACE));
        for _ in 0..3 {
            routes.count(a, &family, method("GET"), 200); // a slot of its own
        }
        routes.count(a, &family, method("GET"), 418); // no slot: looked up
        routes.count(routes.find(Some("/elsewhere")), &family, method("POST"), 404);
        routes.count(routes.find(None), &family, method("TRACE"), 404);
        let get = |method, route, status| family.get_or_create(&RequestLabels { method, route, status }).get();
        assert_eq!(get("GET", "/api/v1/a", 200), 3);
        assert_eq!(get("GET", "/api/v1/a", 418), 1);
        assert_eq!(get("GET", "/api/v1/b", 200), 0);
        assert_eq!(get("POST", RouteMetrics::UNMATCHED, 404), 1);
        assert_eq!(get("other", RouteMetrics::UNMATCHED, 404), 1);
    }

    #[test]
    fn a_sharded_counter_reads_as_the_sum_of_every_thread_and_renders_it() {
        let metrics = Metrics::new();
        // More threads than shards, so that some share one.
        std::thread::scope(|s| {
            for t in 0..(2 * COUNTER_SHARDS + 3) {
                let m = &metrics;
                s.spawn(move || {
                    for _ in 0..1000 {
                        m.read("allowed");
                    }
                    m.audit_batch(t + 1, true);
                });
            }
        });
        let threads = 2 * COUNTER_SHARDS + 3;
        assert_eq!(metrics.secret_reads[0].get(), 1000 * threads as u64);
        assert_eq!(metrics.audit_batches.get(), threads as u64);
        assert_eq!(metrics.audit_records.get(), (1..=threads as u64).sum::<u64>());
        let text = metrics.render();
        assert!(
            text.contains(&format!("agentvault_secret_reads_total{{outcome=\"allowed\"}} {}", 1000 * threads)),
            "{text}"
        );
        assert!(text.contains(&format!("agentvault_audit_batches_total {threads}")), "{text}");
    }
}
