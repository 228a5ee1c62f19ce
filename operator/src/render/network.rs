//! NetworkPolicies: deny everything by default, then allow only the call
//! paths between the components, DNS, the metrics service, Prometheus scrapes,
//! the operator's drain calls, and egress to the vendors a component uses.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use voice_agent_api::VoiceAgent;
use voice_agent_api::deploy::HTTP_PORT;
use voice_agent_api::voiceagent::{
    EmbedderProvider, LlmProvider, SttProvider, Transport, TtsProvider, VectorStoreType,
};
use voice_agent_proto::Component;

use super::{COMPONENTS, MANAGER, Naming};

/// Port of the cluster's metrics service.
pub const METRICS_SERVICE_PORT: i32 = 9090;
/// Ports of the Kubernetes API server as pods reach it.
const API_SERVER_PORTS: [i32; 2] = [443, 6443];
/// PostgreSQL's port. Databases on other ports need an extra NetworkPolicy.
const POSTGRES_PORT: i32 = 5432;
/// LiveKit WebRTC media: the default UDP port range and the TCP fallback.
const LIVEKIT_RTC_UDP: (i32, i32) = (50000, 60000);
const LIVEKIT_RTC_TCP: i32 = 7881;

/// The port of an http(s)/ws(s) URL: explicit, or the scheme's default.
pub fn url_port(url: &str) -> Option<u16> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let host_port = authority.rsplit('@').next()?;
    // `[::1]:8080` or `host:8080`
    let port = match host_port.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(':') && !port.contains(']') => Some(port),
        _ => None,
    };
    match port {
        Some(p) => p.parse().ok(),
        None => match scheme {
            "http" | "ws" => Some(80),
            "https" | "wss" => Some(443),
            _ => None,
        },
    }
}

fn tcp(port: i32) -> NetworkPolicyPort {
    NetworkPolicyPort {
        port: Some(IntOrString::Int(port)),
        protocol: Some("TCP".to_string()),
        ..NetworkPolicyPort::default()
    }
}

fn udp_range(from: i32, to: i32) -> NetworkPolicyPort {
    NetworkPolicyPort {
        port: Some(IntOrString::Int(from)),
        end_port: Some(to),
        protocol: Some("UDP".to_string()),
    }
}

fn pods(labels: BTreeMap<String, String>) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        pod_selector: Some(LabelSelector {
            match_labels: Some(labels),
            ..LabelSelector::default()
        }),
        ..NetworkPolicyPeer::default()
    }
}

/// Pods with `labels` in any namespace.
fn pods_anywhere(labels: BTreeMap<String, String>) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        namespace_selector: Some(LabelSelector::default()),
        ..pods(labels)
    }
}

fn anywhere() -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        ip_block: Some(IPBlock {
            cidr: "0.0.0.0/0".to_string(),
            except: None,
        }),
        ..NetworkPolicyPeer::default()
    }
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
        .collect()
}

fn operator_pods() -> NetworkPolicyPeer {
    pods_anywhere(labels(&[
        ("app.kubernetes.io/name", MANAGER),
        ("app.kubernetes.io/component", "operator"),
    ]))
}

fn metrics_service_pods() -> NetworkPolicyPeer {
    pods_anywhere(labels(&[
        ("app.kubernetes.io/name", MANAGER),
        ("app.kubernetes.io/component", "metrics"),
    ]))
}

fn prometheus_pods() -> NetworkPolicyPeer {
    pods_anywhere(labels(&[("app.kubernetes.io/name", "prometheus")]))
}

fn ingress(from: Vec<NetworkPolicyPeer>) -> NetworkPolicyIngressRule {
    NetworkPolicyIngressRule {
        from: Some(from),
        ports: Some(vec![tcp(HTTP_PORT)]),
    }
}

fn egress(to: Vec<NetworkPolicyPeer>, ports: Vec<NetworkPolicyPort>) -> NetworkPolicyEgressRule {
    NetworkPolicyEgressRule {
        to: Some(to),
        ports: Some(ports),
    }
}

/// Vendor endpoints a component calls, as ports to the outside world.
fn vendor_ports(va: &VoiceAgent, c: Component) -> BTreeSet<i32> {
    let spec = &va.spec;
    let mut urls: Vec<(bool, Option<&str>, &str)> = Vec::new(); // (used, baseUrl, default)
    match c {
        Component::Runtime => {
            urls.push((
                spec.stt.provider == SttProvider::Deepgram,
                spec.stt.base_url.as_deref(),
                "wss://api.deepgram.com",
            ));
        }
        Component::Agent => {
            urls.push((
                spec.llm.provider == LlmProvider::Openai,
                spec.llm.base_url.as_deref(),
                "https://api.openai.com",
            ));
            urls.push((
                spec.knowledge.embedder.provider == EmbedderProvider::Openai,
                spec.knowledge.embedder.base_url.as_deref(),
                "https://api.openai.com",
            ));
            if spec.knowledge.vector_store.type_ == VectorStoreType::Qdrant
                && let Some(q) = &spec.knowledge.vector_store.qdrant
            {
                urls.push((true, Some(q.url.as_str()), "http://qdrant:6334"));
            }
        }
        Component::Tts => {
            urls.push((
                spec.tts.provider != TtsProvider::Local,
                spec.tts.base_url.as_deref(),
                "https://vendor",
            ));
        }
        Component::Gateway | Component::Metrics => {}
    }
    let mut ports: BTreeSet<i32> = urls
        .into_iter()
        .filter(|(used, ..)| *used)
        .filter_map(|(_, base, default)| url_port(base.unwrap_or(default)))
        .map(i32::from)
        .collect();
    if c == Component::Agent && spec.database.is_some() {
        ports.insert(POSTGRES_PORT);
    }
    let livekit = spec.telephony.transport == Transport::Livekit;
    if livekit && matches!(c, Component::Gateway | Component::Runtime) {
        if let Some(lk) = &spec.telephony.livekit
            && let Some(p) = url_port(&lk.url)
        {
            ports.insert(i32::from(p));
        }
        ports.insert(443);
    }
    ports
}

fn policy(
    naming: &Naming,
    name: String,
    c: Option<Component>,
    spec: NetworkPolicySpec,
) -> NetworkPolicy {
    NetworkPolicy {
        metadata: naming.meta(name, c),
        spec: Some(spec),
    }
}

/// Every NetworkPolicy of a VoiceAgent.
pub(super) fn policies(va: &VoiceAgent, naming: &Naming) -> Vec<NetworkPolicy> {
    let mut out = vec![policy(
        naming,
        format!("{}-default-deny", naming.agent),
        None,
        NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(naming.agent_selector()),
                ..LabelSelector::default()
            }),
            policy_types: Some(vec!["Ingress".to_string(), "Egress".to_string()]),
            ..NetworkPolicySpec::default()
        },
    )];
    let component_pods = |c: Component| pods(naming.selector(c));
    let livekit = va.spec.telephony.transport == Transport::Livekit;

    for c in COMPONENTS {
        let mut ingress_rules = Vec::new();
        match c {
            // Twilio reaches the gateway through the cluster's ingress; its
            // requests are authenticated by signature, not by address.
            Component::Gateway => ingress_rules.push(NetworkPolicyIngressRule {
                from: None,
                ports: Some(vec![tcp(HTTP_PORT)]),
            }),
            Component::Runtime => ingress_rules.push(ingress(vec![
                component_pods(Component::Gateway),
                operator_pods(),
                prometheus_pods(),
            ])),
            Component::Agent | Component::Tts => ingress_rules.push(ingress(vec![
                component_pods(Component::Runtime),
                prometheus_pods(),
            ])),
            Component::Metrics => {}
        }
        if livekit && c == Component::Runtime {
            // WebRTC media from the LiveKit server.
            ingress_rules.push(NetworkPolicyIngressRule {
                from: Some(vec![anywhere()]),
                ports: Some(vec![udp_range(LIVEKIT_RTC_UDP.0, LIVEKIT_RTC_UDP.1)]),
            });
        }

        let mut egress_rules = vec![
            // DNS, wherever the cluster runs it.
            NetworkPolicyEgressRule {
                to: None,
                ports: Some(vec![
                    NetworkPolicyPort {
                        port: Some(IntOrString::Int(53)),
                        protocol: Some("UDP".to_string()),
                        ..NetworkPolicyPort::default()
                    },
                    tcp(53),
                ]),
            },
            egress(
                vec![metrics_service_pods()],
                vec![tcp(METRICS_SERVICE_PORT)],
            ),
        ];
        match c {
            Component::Gateway => {
                egress_rules.push(egress(
                    vec![component_pods(Component::Runtime)],
                    vec![tcp(HTTP_PORT)],
                ));
            }
            Component::Runtime => egress_rules.push(egress(
                vec![
                    component_pods(Component::Agent),
                    component_pods(Component::Tts),
                ],
                vec![tcp(HTTP_PORT)],
            )),
            _ => {}
        }
        if matches!(c, Component::Gateway | Component::Runtime) {
            // Calls are custom resources: the API server's address is not
            // known here, so its ports are allowed to any destination.
            egress_rules.push(NetworkPolicyEgressRule {
                to: None,
                ports: Some(API_SERVER_PORTS.iter().map(|p| tcp(*p)).collect()),
            });
        }
        let vendor: Vec<NetworkPolicyPort> = vendor_ports(va, c).into_iter().map(tcp).collect();
        if !vendor.is_empty() {
            egress_rules.push(egress(vec![anywhere()], vendor));
        }
        if livekit && c == Component::Runtime {
            egress_rules.push(egress(
                vec![anywhere()],
                vec![
                    udp_range(LIVEKIT_RTC_UDP.0, LIVEKIT_RTC_UDP.1),
                    tcp(LIVEKIT_RTC_TCP),
                ],
            ));
        }

        out.push(policy(
            naming,
            naming.component(c),
            Some(c),
            NetworkPolicySpec {
                pod_selector: Some(LabelSelector {
                    match_labels: Some(naming.selector(c)),
                    ..LabelSelector::default()
                }),
                policy_types: Some(vec!["Ingress".to_string(), "Egress".to_string()]),
                ingress: Some(ingress_rules),
                egress: Some(egress_rules),
            },
        ));
    }
    out
}
