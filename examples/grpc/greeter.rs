//! A gRPC greeter written without code generation (no `protoc` needed): the messages derive
//! `prost::Message`, and the service routes by path as `tonic-build`'s output does.
//!
//! - `SayHello` (unary) spends `work_ms` asleep, then greets;
//! - `Collect` (client-streaming) counts the names it is sent, however far apart.
#![allow(dead_code, unreachable_pub)]

use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use tokio_stream::StreamExt;
use tonic::{
    Request, Response, Status, Streaming,
    body::Body,
    codegen::{BoxFuture, StdError, http},
    server::{ClientStreamingService, Grpc, NamedService, UnaryService},
};
use tonic_prost::ProstCodec;

#[derive(Clone, PartialEq, prost::Message)]
pub struct HelloRequest {
    #[prost(string, tag = "1")]
    pub name: String,
    /// How long the handler works (asleep) before it answers.
    #[prost(uint64, tag = "2")]
    pub work_ms: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct HelloReply {
    #[prost(string, tag = "1")]
    pub message: String,
}

pub const SAY_HELLO: &str = "/greeter.Greeter/SayHello";
pub const COLLECT: &str = "/greeter.Greeter/Collect";

/// The greeter service, ready for `tonic::transport::Server::add_service`.
#[derive(Debug, Clone, Default)]
pub struct GreeterServer;

impl NamedService for GreeterServer {
    const NAME: &'static str = "greeter.Greeter";
}

struct SayHello;

impl UnaryService<HelloRequest> for SayHello {
    type Response = HelloReply;
    type Future = BoxFuture<Response<HelloReply>, Status>;

    fn call(&mut self, request: Request<HelloRequest>) -> Self::Future {
        Box::pin(async move {
            let request = request.into_inner();
            tokio::time::sleep(Duration::from_millis(request.work_ms)).await;
            Ok(Response::new(HelloReply {
                message: format!("hello, {}", request.name),
            }))
        })
    }
}

struct Collect;

impl ClientStreamingService<HelloRequest> for Collect {
    type Response = HelloReply;
    type Future = BoxFuture<Response<HelloReply>, Status>;

    fn call(&mut self, request: Request<Streaming<HelloRequest>>) -> Self::Future {
        Box::pin(async move {
            let mut stream = request.into_inner();
            let mut names = Vec::new();
            while let Some(message) = stream.next().await {
                names.push(message?.name);
            }
            Ok(Response::new(HelloReply {
                message: format!("{} names: {}", names.len(), names.join(", ")),
            }))
        })
    }
}

impl<B> tower::Service<http::Request<B>> for GreeterServer
where
    B: http_body::Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        match request.uri().path() {
            SAY_HELLO => Box::pin(async move {
                let mut grpc = Grpc::new(ProstCodec::default());
                Ok(grpc.unary(SayHello, request).await)
            }),
            COLLECT => Box::pin(async move {
                let mut grpc = Grpc::new(ProstCodec::default());
                Ok(grpc.client_streaming(Collect, request).await)
            }),
            _ => Box::pin(async { Ok(Status::unimplemented("no such method").into_http()) }),
        }
    }
}
