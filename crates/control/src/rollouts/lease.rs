//! Leader election for the rollout controller on Kubernetes: a coordination.k8s.io `Lease`
//! taken when free or expired and renewed while held, so that one replica of a replicated
//! control plane advances rollouts and writes their status; the others follow the status.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use kube::Client;
use tokio::sync::watch;

/// The Lease's name, in the control plane's namespace.
pub const LEASE_NAME: &str = "ferry-rollouts";
/// How long a Lease holds without renewal.
pub const DEFAULT_DURATION: Duration = Duration::from_secs(15);

/// Who competes for which Lease.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    /// The control plane's namespace.
    pub namespace: String,
    /// This replica (its pod name).
    pub identity: String,
    /// How long the Lease holds without renewal; it is renewed every third of it.
    pub duration: Duration,
}

/// Competes for the Lease in a task (aborted with the returned handle); the receiver says
/// whether this replica holds it.
pub fn spawn(
    client: Client,
    config: LeaseConfig,
) -> (watch::Receiver<bool>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = watch::channel(false);
    let task = tokio::spawn(async move {
        let api: Api<Lease> = Api::namespaced(client, &config.namespace);
        let mut last_renewed: Option<tokio::time::Instant> = None;
        loop {
            let held = match try_hold(&api, &config).await {
                Ok(held) => {
                    last_renewed = held.then(tokio::time::Instant::now);
                    held
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot renew the rollouts Lease");
                    // Still ours until it would have expired for others.
                    last_renewed.is_some_and(|t| t.elapsed() < config.duration)
                }
            };
            tx.send_if_modified(|current| {
                let changed = *current != held;
                if changed {
                    tracing::info!(identity = %config.identity, leading = held, "rollouts Lease changed hands");
                }
                *current = held;
                changed
            });
            tokio::time::sleep(config.duration / 3).await;
        }
    });
    (rx, task)
}

/// This replica's name in the Lease: its host name (a pod's name) and process id.
pub fn own_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    format!("{}-{}", host.trim(), std::process::id())
}

fn now() -> MicroTime {
    MicroTime(k8s_openapi::jiff::Timestamp::now())
}

/// Takes or renews the Lease; whether this replica holds it now.
async fn try_hold(api: &Api<Lease>, config: &LeaseConfig) -> Result<bool, kube::Error> {
    let duration = config.duration.as_secs().max(1) as i32;
    let spec = |transitions: i32, acquired: Option<MicroTime>| LeaseSpec {
        holder_identity: Some(config.identity.clone()),
        lease_duration_seconds: Some(duration),
        acquire_time: acquired.or_else(|| Some(now())),
        renew_time: Some(now()),
        lease_transitions: Some(transitions),
        ..LeaseSpec::default()
    };
    let Some(mut lease) = api.get_opt(LEASE_NAME).await? else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(LEASE_NAME.into()),
                namespace: Some(config.namespace.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(spec(0, None)),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        };
    };
    let current = lease.spec.clone().unwrap_or_default();
    let ours = current.holder_identity.as_deref() == Some(config.identity.as_str());
    let expired = match (&current.renew_time, current.lease_duration_seconds) {
        (Some(renewed), Some(secs)) => {
            renewed.0.as_millisecond() + i64::from(secs.max(0)) * 1000
                < k8s_openapi::jiff::Timestamp::now().as_millisecond()
        }
        _ => true,
    };
    if !ours && !expired && current.holder_identity.is_some() {
        return Ok(false);
    }
    let transitions = current.lease_transitions.unwrap_or(0) + i32::from(!ours);
    let acquired = if ours { current.acquire_time } else { None };
    lease.spec = Some(spec(transitions, acquired));
    // At the resourceVersion read: another replica taking it meanwhile makes this a 409.
    match api
        .replace(LEASE_NAME, &PostParams::default(), &lease)
        .await
    {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}
