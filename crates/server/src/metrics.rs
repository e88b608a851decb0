//! Prometheus metrics (`/metrics`). Counts only: never a name of a secret or a value.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Labels of a request: all `'static`, so counting a request allocates nothing.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub method: &'static str,
    pub route: &'static str,
    pub status: u16,
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
    pub requests: Family<RequestLabels, Counter>,
    secret_reads: [Counter; 4],
    audit_records: Counter,
    audit_batches: Counter,
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
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register("http_requests", "HTTP requests by route and status", requests.clone());
        let family = Family::<OutcomeLabels, Counter>::default();
        registry.register("secret_reads", "Agent secret reads by outcome", family.clone());
        let secret_reads = READ_OUTCOMES.map(|outcome| family.get_or_create(&OutcomeLabels { outcome }).clone());
        let audit_records = Counter::default();
        registry.register("audit_records", "Audit records written by the group-commit writer", audit_records.clone());
        let audit_batches = Counter::default();
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
