//! gRPC (tonic, Linkerd's own proxy API as the service) through a proxy pair: unary and
//! server-streaming calls, and classification by `grpc-status`.

use std::{net::SocketAddr, pin::Pin, time::Duration};

use ferry_testkit::metric;
use linkerd2_proxy_api::{destination as dst, identity as id};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::Pair;

struct Identity;

#[tonic::async_trait]
impl id::identity_server::Identity for Identity {
    async fn certify(
        &self,
        req: Request<id::CertifyRequest>,
    ) -> Result<Response<id::CertifyResponse>, Status> {
        let req = req.into_inner();
        if req.identity == "bad" {
            return Err(Status::permission_denied("token does not match"));
        }
        Ok(Response::new(id::CertifyResponse {
            leaf_certificate: req.identity.into_bytes(),
            ..Default::default()
        }))
    }
}

struct Destination;

type Updates = Pin<Box<dyn Stream<Item = Result<dst::Update, Status>> + Send>>;
type Profiles = Pin<Box<dyn Stream<Item = Result<dst::DestinationProfile, Status>> + Send>>;

#[tonic::async_trait]
impl dst::destination_server::Destination for Destination {
    type GetStream = Updates;
    type GetProfileStream = Profiles;

    async fn get(&self, req: Request<dst::GetDestination>) -> Result<Response<Updates>, Status> {
        let path = req.into_inner().path;
        let updates = (0..5).map(move |i| {
            Ok(dst::Update {
                update: Some(dst::update::Update::NoEndpoints(dst::NoEndpoints {
                    exists: i % 2 == 0,
                })),
            })
        });
        let _ = path;
        Ok(Response::new(Box::pin(tokio_stream::iter(updates))))
    }

    async fn get_profile(
        &self,
        _: Request<dst::GetDestination>,
    ) -> Result<Response<Profiles>, Status> {
        Err(Status::unimplemented("no profiles"))
    }
}

async fn grpc_server() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    let task = tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(id::identity_server::IdentityServer::new(Identity))
            .add_service(dst::destination_server::DestinationServer::new(Destination))
            .serve_with_incoming(incoming)
            .await
            .unwrap();
    });
    (addr, task)
}

#[tokio::test]
async fn unary_and_server_streaming_calls_pass_and_are_classified() {
    let (addr, _server) = grpc_server().await;
    let pair = Pair::to(addr).await;
    let channel = tonic::transport::Endpoint::from_shared(pair.url(""))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .unwrap();

    let mut identity = id::identity_client::IdentityClient::new(channel.clone());
    let ok = identity
        .certify(id::CertifyRequest {
            identity: "web.emojivoto".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(ok.into_inner().leaf_certificate, b"web.emojivoto");
    let denied = identity
        .certify(id::CertifyRequest {
            identity: "bad".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);
    assert_eq!(denied.message(), "token does not match");

    let mut destination = dst::destination_client::DestinationClient::new(channel);
    let mut stream = destination
        .get(dst::GetDestination {
            path: "emoji.emojivoto.svc.cluster.local:8080".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut n = 0;
    while let Some(update) = stream.message().await.unwrap() {
        assert!(update.update.is_some());
        n += 1;
    }
    assert_eq!(
        n, 5,
        "every streamed message arrives, then the trailers end the call"
    );

    let a = pair
        .a
        .wait_metric("response_total", &[("direction", "outbound")], 3.0)
        .await;
    let ok = metric(
        &a,
        "response_total",
        &[
            ("direction", "outbound"),
            ("grpc_status", "0"),
            ("classification", "success"),
        ],
    );
    assert_eq!(ok, Some(2.0), "{a}");
    let denied = metric(
        &a,
        "response_total",
        &[
            ("direction", "outbound"),
            ("grpc_status", "7"),
            ("classification", "failure"),
        ],
    );
    assert_eq!(denied, Some(1.0), "{a}");
    pair.b
        .wait_metric(
            "response_total",
            &[
                ("direction", "inbound"),
                ("grpc_status", "7"),
                ("classification", "failure"),
            ],
            1.0,
        )
        .await;
}
