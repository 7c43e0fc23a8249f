//! The destination API's gRPC service: the generated `DestinationServer`, except that the
//! two streaming calls (`Get`, `GetProfile`) encode with a small buffer. The generated code
//! gives every response stream tonic's default 8 KiB encode buffer for its whole life; a
//! control plane holds one stream per name per proxy (5,000 streams are 40 MB of buffers),
//! while an update is a few hundred bytes. The buffer still grows for a larger message.

use std::convert::Infallible;
use std::marker::PhantomData;
use std::sync::Arc;
use std::task::{Context, Poll};

use linkerd2_proxy_api::destination as pb;
use linkerd2_proxy_api::destination::destination_server::{Destination, DestinationServer};
use tonic::body::Body;
use tonic::codec::{BufferSettings, Codec};
use tonic::codegen::{Body as HttpBody, BoxFuture, Service, StdError};
use tonic::server::{Grpc, NamedService, ServerStreamingService};
use tonic_prost::prost::Message;
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

/// The initial encode buffer of a destination stream.
pub const ENCODE_BUFFER: usize = 512;

/// tonic's default: an encoder yields after this many bytes.
const YIELD_THRESHOLD: usize = 32 * 1024;

const GET: &str = "/io.linkerd.proxy.destination.Destination/Get";
const GET_PROFILE: &str = "/io.linkerd.proxy.destination.Destination/GetProfile";

/// The destination service for a tonic router.
pub struct Server<T> {
    service: Arc<T>,
    generated: DestinationServer<T>,
    /// The largest request message decoded (tonic's default, 4 MiB, when none).
    max_decoding: Option<usize>,
}

impl<T> Server<T> {
    /// Serves `service`.
    pub fn new(service: T) -> Self {
        Self::from_arc(Arc::new(service))
    }

    fn from_arc(service: Arc<T>) -> Self {
        Self {
            generated: DestinationServer::from_arc(service.clone()),
            service,
            max_decoding: None,
        }
    }

    /// Refuses request messages larger than `limit` bytes (`RESOURCE_EXHAUSTED`).
    pub fn max_decoding_message_size(mut self, limit: usize) -> Self {
        self.generated = self.generated.max_decoding_message_size(limit);
        self.max_decoding = Some(limit);
        self
    }
}

impl<T> Clone for Server<T> {
    fn clone(&self) -> Self {
        let mut server = Self::from_arc(self.service.clone());
        if let Some(limit) = self.max_decoding {
            server = server.max_decoding_message_size(limit);
        }
        server
    }
}

impl<T> NamedService for Server<T> {
    const NAME: &'static str = <DestinationServer<T> as NamedService>::NAME;
}

impl<T, B> Service<http::Request<B>> for Server<T>
where
    T: Destination,
    B: HttpBody + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let service = self.service.clone();
        let max = self.max_decoding;
        match req.uri().path() {
            GET => Box::pin(async move {
                Ok(Grpc::new(SmallBuffers::default())
                    .apply_max_message_size_config(max, None)
                    .server_streaming(Get(service), req)
                    .await)
            }),
            GET_PROFILE => Box::pin(async move {
                Ok(Grpc::new(SmallBuffers::default())
                    .apply_max_message_size_config(max, None)
                    .server_streaming(GetProfile(service), req)
                    .await)
            }),
            _ => self.generated.call(req),
        }
    }
}

struct Get<T>(Arc<T>);

impl<T: Destination> ServerStreamingService<pb::GetDestination> for Get<T> {
    type Response = pb::Update;
    type ResponseStream = T::GetStream;
    type Future = BoxFuture<tonic::Response<Self::ResponseStream>, tonic::Status>;

    fn call(&mut self, request: tonic::Request<pb::GetDestination>) -> Self::Future {
        let service = self.0.clone();
        Box::pin(async move { service.get(request).await })
    }
}

struct GetProfile<T>(Arc<T>);

impl<T: Destination> ServerStreamingService<pb::GetDestination> for GetProfile<T> {
    type Response = pb::DestinationProfile;
    type ResponseStream = T::GetProfileStream;
    type Future = BoxFuture<tonic::Response<Self::ResponseStream>, tonic::Status>;

    fn call(&mut self, request: tonic::Request<pb::GetDestination>) -> Self::Future {
        let service = self.0.clone();
        Box::pin(async move { service.get_profile(request).await })
    }
}

/// Prost encoding with an [`ENCODE_BUFFER`]-byte initial buffer.
struct SmallBuffers<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for SmallBuffers<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<T, U> Codec for SmallBuffers<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::raw_encoder(BufferSettings::new(ENCODE_BUFFER, YIELD_THRESHOLD))
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstCodec::<T, U>::raw_decoder(BufferSettings::default())
    }
}
