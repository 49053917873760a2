//! `grpc` probes: grpc.health.v1 `Check`, SERVING passes, with kubelet's messages.

use super::connect::{Destination, ProbeConnector};
use super::http::error_chain;
use super::{ProbeOutcome, Target, KUBE_VERSION};
use k8s_openapi::api::core::v1::GRPCAction;
use std::time::Duration;
use tonic::transport::Endpoint;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

/// One `grpc` probe attempt against the pod (the action has no host), within `timeout`.
pub(crate) async fn probe(action: &GRPCAction, target: &Target, timeout: Duration) -> ProbeOutcome {
    let port = match u16::try_from(action.port).ok().filter(|p| *p != 0) {
        Some(p) => p,
        None => return ProbeOutcome::Unknown(format!("invalid port number: {}", action.port)),
    };
    let dest = match Destination::new(target, None, port) {
        Ok(d) => d,
        Err(e) => return ProbeOutcome::Unknown(e),
    };
    let mut connector = ProbeConnector::new(dest.netns.clone());
    match action.mode.as_deref().unwrap_or("") {
        "" | "Plaintext" => {}
        "TLS" => match connector.with_insecure_tls(&[b"h2"]) {
            Ok(c) => connector = c,
            Err(e) => return ProbeOutcome::Unknown(e),
        },
        other => {
            return ProbeOutcome::Unknown(format!("unsupported gRPC probe mode {other:?} (want TLS or Plaintext)"))
        }
    }
    let addr = dest.authority();
    let secs = timeout.as_secs_f64();
    let endpoint = match Endpoint::from_shared(format!("http://{addr}"))
        .and_then(|e| e.user_agent(format!("kube-probe/{KUBE_VERSION}")))
    {
        Ok(e) => e,
        Err(e) => return ProbeOutcome::Unknown(format!("gRPC endpoint {addr}: {}", error_chain(&e))),
    };
    let deadline = tokio::time::Instant::now() + timeout;
    let channel = match tokio::time::timeout_at(deadline, endpoint.connect_with_connector(connector)).await {
        Err(_) => return ProbeOutcome::Failure(format!("timeout: failed to connect service {addr:?} within {secs}s")),
        Ok(Err(e)) => {
            return ProbeOutcome::Failure(format!(
                "error: failed to connect service at {addr:?}: {}",
                error_chain(&e)
            ))
        }
        Ok(Ok(c)) => c,
    };
    let request = HealthCheckRequest {
        service: action.service.clone().unwrap_or_default(),
    };
    let mut client = HealthClient::new(channel);
    match tokio::time::timeout_at(deadline, client.check(request)).await {
        Err(_) => ProbeOutcome::Failure(format!("timeout: health rpc did not complete within {secs}s")),
        Ok(Err(status)) => ProbeOutcome::Failure(match status.code() {
            tonic::Code::Unimplemented => format!(
                "error: this server does not implement the grpc health protocol (grpc.health.v1.Health): {}",
                status.message()
            ),
            tonic::Code::DeadlineExceeded => format!("timeout: health rpc did not complete within {secs}s"),
            _ => format!(
                "error: health rpc probe failed: rpc error: code = {:?} desc = {}",
                status.code(),
                status.message()
            ),
        }),
        Ok(Ok(resp)) => {
            let status = resp.into_inner().status();
            if status == ServingStatus::Serving {
                ProbeOutcome::Success
            } else {
                ProbeOutcome::Failure(format!("service unhealthy (responded with {:?})", status.as_str_name()))
            }
        }
    }
}
