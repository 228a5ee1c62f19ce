//! The operator's Prometheus metrics (base units: seconds).

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// The operator's metrics, registered in their own registry.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Reconciles by controller and result (`ok`, `error`).
    pub reconciles: IntCounterVec,
    /// Reconcile errors by controller and category.
    pub errors: IntCounterVec,
    /// Reconcile duration by controller.
    pub duration: HistogramVec,
    /// Writes to the Kubernetes API by kind and verb.
    pub writes: IntCounterVec,
    /// Objects the operator manages, by kind.
    pub managed: IntGaugeVec,
    /// 1 while this replica holds the leader Lease.
    pub leader: IntGauge,
    /// Replicas the autoscaler wants, by namespace, VoiceAgent and component.
    pub desired_replicas: IntGaugeVec,
    /// `spec.replicas` of the component Deployment as of the last tick.
    pub current_replicas: IntGaugeVec,
    /// Autoscaler decisions by component and reason, one per component per tick.
    pub scaling_decisions: IntCounterVec,
    /// Runtime pods by drain outcome: `started`, `cancelled`, `drained`
    /// (empty when replicas dropped), `deadline` (still holding calls).
    pub drain_pods: IntCounterVec,
    /// Calls still on drained runtime pods at the drain deadline, when the
    /// replicas dropped anyway.
    pub drain_cut_calls: IntCounterVec,
    /// Runtime pods draining now, by VoiceAgent.
    pub draining_pods: IntGaugeVec,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers the metrics.
    pub fn new() -> Self {
        let registry = Registry::new();
        let reconciles = IntCounterVec::new(
            Opts::new(
                "voice_agent_operator_reconciles_total",
                "Reconciles by controller and result.",
            ),
            &["controller", "result"],
        )
        .expect("valid metric");
        let errors = IntCounterVec::new(
            Opts::new(
                "voice_agent_operator_reconcile_errors_total",
                "Reconcile errors by controller and error category.",
            ),
            &["controller", "category"],
        )
        .expect("valid metric");
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "voice_agent_operator_reconcile_duration_seconds",
                "Time spent in one reconcile.",
            )
            .buckets(vec![
                0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
            &["controller"],
        )
        .expect("valid metric");
        let writes = IntCounterVec::new(
            Opts::new(
                "voice_agent_operator_api_writes_total",
                "Writes to the Kubernetes API by kind and verb.",
            ),
            &["kind", "verb"],
        )
        .expect("valid metric");
        let managed = IntGaugeVec::new(
            Opts::new(
                "voice_agent_operator_managed_objects",
                "Objects the operator manages, by kind.",
            ),
            &["kind"],
        )
        .expect("valid metric");
        let leader = IntGauge::new(
            "voice_agent_operator_leader",
            "1 while this replica holds the leader Lease, else 0.",
        )
        .expect("valid metric");
        let desired_replicas = IntGaugeVec::new(
            Opts::new(
                "voice_agent_operator_desired_replicas",
                "Replicas the autoscaler wants, by VoiceAgent and component.",
            ),
            &["namespace", "voice_agent", "component"],
        )
        .expect("valid metric");
        let current_replicas = IntGaugeVec::new(
            Opts::new(
                "voice_agent_operator_current_replicas",
                "spec.replicas of the component Deployment after the last autoscaler tick.",
            ),
            &["namespace", "voice_agent", "component"],
        )
        .expect("valid metric");
        let scaling_decisions = IntCounterVec::new(
            Opts::new(
                "voice_agent_operator_scaling_decisions_total",
                "Autoscaler decisions by component and reason (one per component per tick).",
            ),
            &["component", "reason"],
        )
        .expect("valid metric");
        let drain_pods = IntCounterVec::new(
            Opts::new(
                "voice_agent_operator_drain_pods_total",
                "Runtime pods by drain outcome (started, cancelled, drained, deadline).",
            ),
            &["outcome"],
        )
        .expect("valid metric");
        let drain_cut_calls = IntCounterVec::new(
            Opts::new(
                "voice_agent_operator_drain_cut_calls_total",
                "Calls still on drained runtime pods at the drain deadline when the replicas dropped.",
            ),
            &["namespace", "voice_agent"],
        )
        .expect("valid metric");
        let draining_pods = IntGaugeVec::new(
            Opts::new(
                "voice_agent_operator_draining_pods",
                "Runtime pods draining before a scale-down, by VoiceAgent.",
            ),
            &["namespace", "voice_agent"],
        )
        .expect("valid metric");
        for c in [
            Box::new(reconciles.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(errors.clone()),
            Box::new(duration.clone()),
            Box::new(writes.clone()),
            Box::new(managed.clone()),
            Box::new(leader.clone()),
            Box::new(desired_replicas.clone()),
            Box::new(current_replicas.clone()),
            Box::new(scaling_decisions.clone()),
            Box::new(drain_pods.clone()),
            Box::new(drain_cut_calls.clone()),
            Box::new(draining_pods.clone()),
        ] {
            registry.register(c).expect("unique metric names");
        }
        Self {
            registry,
            reconciles,
            errors,
            duration,
            writes,
            managed,
            leader,
            desired_replicas,
            current_replicas,
            scaling_decisions,
            drain_pods,
            drain_cut_calls,
            draining_pods,
        }
    }

    /// All writes counted so far, over every kind and verb.
    pub fn total_writes(&self) -> u64 {
        self.registry
            .gather()
            .iter()
            .filter(|f| f.name() == "voice_agent_operator_api_writes_total")
            .flat_map(|f| f.get_metric())
            .map(|m| m.get_counter().get_value() as u64)
            .sum()
    }

    /// The metrics in the Prometheus text format.
    pub fn encode(&self) -> String {
        let mut buf = Vec::new();
        let families = self.registry.gather();
        // Encoding into a Vec cannot fail for well-formed families.
        let _ = TextEncoder::new().encode(&families, &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}
