//! The tower layer in front of the interceptor: a tonic interceptor sees
//! metadata and extensions but not the URI, so this layer records the method
//! path; it also gives the call its request id and its tracing span.

use std::task::{Context, Poll};

use crate::auth::headers::{REQUEST_ID_HEADER, request_id_in};

/// The full gRPC method path, e.g. `/hookplane.v1.TenantService/GetTenant`,
/// in the request extensions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MethodPath(pub String);

/// Wraps every gRPC call: puts [`MethodPath`] into the request extensions
/// (a tonic interceptor sees metadata and extensions but not the URI), makes
/// sure the call has an `x-request-id` (the client's, or a new one), runs the
/// call inside a tracing span carrying that id, and echoes the id in the
/// response headers.
#[derive(Clone, Copy, Debug, Default)]
pub struct MethodPathLayer;

impl<S> tower::Layer<S> for MethodPathLayer {
    type Service = MethodPathService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        MethodPathService { inner }
    }
}

#[derive(Clone, Debug)]
pub struct MethodPathService<S> {
    inner: S,
}

type BoxFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>;

impl<S, B, R> tower::Service<http::Request<B>> for MethodPathService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    R: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        use tracing::Instrument;

        let path = req.uri().path().to_owned();
        let request_id = request_id_in(req.headers());
        let header = http::HeaderValue::from_str(&request_id)
            .ok()
            .map(|mut value| {
                // Usually unique to the call, so HPACK should send it as a
                // never-indexed literal: indexing it would only push reusable
                // headers out of the table (RFC 7541, 7.1.3).
                value.set_sensitive(true);
                value
            });
        if let Some(value) = &header {
            req.headers_mut().insert(REQUEST_ID_HEADER, value.clone());
        }
        let span = tracing::info_span!("call", method = %path, request_id = %request_id);
        req.extensions_mut().insert(MethodPath(path));
        let started = std::time::Instant::now();
        let future = {
            let _entered = span.enter();
            self.inner.call(req)
        };
        Box::pin(
            async move {
                let mut response = future.await?;
                if let Some(value) = header {
                    response.headers_mut().insert(REQUEST_ID_HEADER, value);
                }
                // Errors usually come trailers-only, with grpc-status in the
                // headers; otherwise the status follows in the trailers.
                let grpc_status = response
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("in-trailers")
                    .to_owned();
                tracing::debug!(
                    grpc_status = %grpc_status,
                    elapsed_us = started.elapsed().as_micros() as u64,
                    "call finished"
                );
                Ok(response)
            }
            .instrument(span),
        )
    }
}

#[cfg(test)]
mod tests {
    use std::future::Ready;
    use std::pin::pin;

    use tower::{Layer, Service};

    use super::*;

    const METHOD: &str = "/hookplane.v1.TenantService/GetTenant";

    /// Records the method path the layer handed on.
    #[derive(Clone)]
    struct Recorder;

    impl Service<http::Request<()>> for Recorder {
        type Response = http::Response<Option<MethodPath>>;
        type Error = std::convert::Infallible;
        type Future = Ready<Result<Self::Response, Self::Error>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, req: http::Request<()>) -> Self::Future {
            std::future::ready(Ok(http::Response::new(
                req.extensions().get::<MethodPath>().cloned(),
            )))
        }
    }

    #[test]
    fn method_path_layer_records_the_uri_path() {
        let mut svc = MethodPathLayer.layer(Recorder);
        let req = http::Request::builder()
            .uri("http://localhost:50051/hookplane.v1.TenantService/GetTenant")
            .body(())
            .unwrap();
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let fut = pin!(svc.call(req));
        let Poll::Ready(Ok(response)) = fut.poll(&mut cx) else {
            panic!("the inner future is ready at once");
        };
        assert_eq!(response.body(), &Some(MethodPath(METHOD.into())));
        // A request without an id gets a generated one, echoed back.
        let echoed = response
            .headers()
            .get(REQUEST_ID_HEADER)
            .unwrap()
            .to_str()
            .unwrap();
        assert!(
            uuid::Uuid::parse_str(echoed).is_ok(),
            "generated id {echoed}"
        );
    }

    #[test]
    fn method_path_layer_echoes_the_callers_request_id() {
        let mut svc = MethodPathLayer.layer(Recorder);
        let req = http::Request::builder()
            .uri("http://localhost:50051/hookplane.v1.TenantService/GetTenant")
            .header(REQUEST_ID_HEADER, "req-001")
            .body(())
            .unwrap();
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let fut = pin!(svc.call(req));
        let Poll::Ready(Ok(response)) = fut.poll(&mut cx) else {
            panic!("the inner future is ready at once");
        };
        assert_eq!(
            response.headers().get(REQUEST_ID_HEADER).unwrap(),
            "req-001"
        );
    }

    /// Stands in for the generated gRPC services behind the layer.
    #[derive(Clone)]
    struct Grpc;

    impl Service<http::Request<tonic::body::Body>> for Grpc {
        type Response = http::Response<tonic::body::Body>;
        type Error = std::convert::Infallible;
        type Future = Ready<Result<Self::Response, Self::Error>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: http::Request<tonic::body::Body>) -> Self::Future {
            std::future::ready(Ok(http::Response::new(tonic::body::Body::empty())))
        }
    }

    #[test]
    fn method_path_layer_fits_the_tonic_server() {
        // Building the serve future checks the layered stack against the
        // server's bounds at compile time; it is never polled.
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
        let serve = tonic::transport::Server::builder()
            .layer(MethodPathLayer)
            .serve(addr, Grpc);
        drop(serve);
    }
}
