//! The front of the server: every request of every connection enters here.
//!
//! An agent read (`GET /api/v1/agents/{agent_id}/secrets/{name}`) is most of the traffic a
//! vault serves, so the front answers one itself when its path is plain (no percent-encoded
//! character), it has no body and no index to wait for: the same work as the read route
//! ([`read::answer`]) and the same finish as the edge ([`crate::Answer`]: the request counted
//! under the route, `Cache-Control: no-store`, `nosniff`), without the router's matching, path
//! extraction and nested route services. Where nothing in the read waits (the store appends its
//! audit record on the request's thread, the request has no query string and its credential
//! needs no database lookup), the read is done within the call and its answer is ready when
//! first polled: no future to build, move and box per read. Every other request, an agent read
//! with an encoded path or `X-Agentvault-Index` included, goes to the router with its peer
//! address ([`ConnectInfo`]), as `into_make_service_with_connect_info` would pass it.

use std::convert::Infallible;
use std::future::{Future, Ready, ready};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::Router;
use axum::body::{Bytes, HttpBody};
use axum::extract::ConnectInfo;
use axum::http::{Method, Request, header};
use axum::response::{IntoResponse, Response};
use axum::routing::future::RouteFuture;
use tower_service::Service;

use crate::api::read;
use crate::{Answer, AppState, extract, replication};

/// Makes each connection's [`Front`].
#[derive(Clone)]
pub struct MakeFront {
    st: AppState,
    router: Router,
    /// The read route's index in [`AppState::routes`].
    read_route: usize,
}

impl MakeFront {
    /// The front of `router` (made by [`crate::app`] for `st`).
    pub fn new(st: AppState, router: Router) -> MakeFront {
        let read_route = crate::route_index(&st, Some(read::ROUTE));
        MakeFront { st, router, read_route }
    }
}

impl Service<SocketAddr> for MakeFront {
    type Response = Front;
    type Error = Infallible;
    type Future = Ready<Result<Front, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, peer: SocketAddr) -> Self::Future {
        let (st, router, read_route) = (self.st.clone(), self.router.clone(), self.read_route);
        ready(Ok(Front(Arc::new(Connection { st, router, read_route, peer }))))
    }
}

/// One connection's entry. Each request gets a clone (hyper's way), so everything sits behind
/// one reference count of the connection's own: requests on other connections never write its
/// cache line.
#[derive(Clone)]
pub struct Front(Arc<Connection>);

struct Connection {
    st: AppState,
    router: Router,
    read_route: usize,
    peer: SocketAddr,
}

impl<B> Service<Request<B>> for Front
where
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = FrontFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // The router is always ready.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<B>) -> FrontFuture {
        if req.method() == Method::GET
            && req.body().size_hint().exact() == Some(0)
            && !req.headers().contains_key(replication::INDEX_HEADER)
            && let Some((agent_id, name)) = read::plain_path(req.uri().path())
        {
            let answer = Answer::for_route(&Method::GET, self.0.read_route);
            let st = &self.0.st;
            if req.uri().query().is_none()
                && let Some(resp) = read::answer_now(st, req.headers().get(header::AUTHORIZATION), agent_id, name)
            {
                return FrontFuture::Done(Some(answer.finish(st, resp.into_response(), true)));
            }
            let (agent_id, name) = (agent_id.to_owned(), name.to_owned());
            // Without a query string there is nothing to parse (the usual read).
            let query = match req.uri().query() {
                None => Ok(read::ReadQuery { env: None }),
                Some(_) => extract::query_of(req.uri()),
            };
            let authorization = req.headers().get(header::AUTHORIZATION).cloned();
            let conn = self.0.clone();
            return FrontFuture::Read(Box::pin(async move {
                let resp = read::answer(&conn.st, authorization.as_ref(), agent_id, name, query).await;
                answer.finish(&conn.st, resp.into_response(), true)
            }));
        }
        req.extensions_mut().insert(ConnectInfo(self.0.peer));
        FrontFuture::Routed(self.0.router.clone().call(req))
    }
}

/// The answer of [`Front`]: an agent read's, done or to wait for, or the router's.
// The router's future is kept inline, as a connection served by the router alone keeps it: a
// connection holds one answer at a time, in place.
#[allow(clippy::large_enum_variant)]
pub enum FrontFuture {
    /// Answered at once (taken when polled).
    Done(Option<Response>),
    Read(Pin<Box<dyn Future<Output = Response> + Send>>),
    Routed(RouteFuture<Infallible>),
}

impl Future for FrontFuture {
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            FrontFuture::Done(resp) => Poll::Ready(Ok(resp.take().unwrap_or_else(polled_again))),
            FrontFuture::Read(f) => f.as_mut().poll(cx).map(Ok),
            FrontFuture::Routed(f) => Pin::new(f).poll(cx),
        }
    }
}

/// A future polled after it finished breaks its contract; hyper never does. Answered with a 500
/// rather than a panic.
#[cold]
fn polled_again() -> Response {
    tracing::error!("an answered agent read was polled again");
    axum::http::StatusCode::INTERNAL_SERVER_ERROR.into_response()
}

#[cfg(test)]
mod tests {
    use super::read::{ROUTE, plain_path};

    #[test]
    fn only_plain_read_paths_are_answered_in_front() {
        assert_eq!(
            plain_path("/api/v1/agents/agt_0123456789abcdef0123/secrets/stripe_api_key"),
            Some(("agt_0123456789abcdef0123", "stripe_api_key"))
        );
        // Malformed names and ids are the read's to refuse (and audit), as on the route.
        assert_eq!(plain_path("/api/v1/agents/x/secrets/Bad-Name"), Some(("x", "Bad-Name")));
        for routed in [
            // Encoded characters: the router decodes them.
            "/api/v1/agents/agt_1/secrets/stripe%5Fapi_key",
            "/api/v1/agents/%61gt_1/secrets/k",
            // Other routes, and paths no route has.
            "/api/v1/agents/agt_1/secrets",
            "/api/v1/agents/agt_1/secrets/",
            "/api/v1/agents//secrets/k",
            "/api/v1/agents/agt_1/secrets/k/",
            "/api/v1/agents/agt_1/secrets/k/versions",
            "/api/v1/agents/agt_1/x/secrets/k",
            "/api/v1/agents/agt_1/secrets/k/secrets/j",
            "/api/v1/agents/agt_1secrets/k",
            "/api/v1/agents/agt_1",
            "/api/v2/agents/agt_1/secrets/k",
            "/api/v1/workspaces/ws_1/secrets/k",
        ] {
            assert_eq!(plain_path(routed), None, "{routed}");
        }
    }

    #[test]
    fn the_read_route_is_one_the_router_and_the_metrics_know() {
        let (_, doc) = crate::routes();
        assert!(doc.paths.paths.contains_key(ROUTE), "{ROUTE} is not a route");
        let metrics = crate::metrics::RouteMetrics::new(doc.paths.paths.keys().cloned());
        assert_ne!(metrics.find(Some(ROUTE)), 0);
    }
}
