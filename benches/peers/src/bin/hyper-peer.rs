//! Raw hyper 1 on tokio: one hello handler for every path, no routing at all.
//! The ceiling for dynamic responses; `--mount` and `--static` are accepted and
//! ignored. Paths under `/cached/` say `Cache-Control: max-age=3600`, for the
//! caching proxies in front (the `cache-hit` scenario).

use std::convert::Infallible;

use clap::Parser;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use stackway_peers::{Flags, hello_body, ready};

async fn hello(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let mut res = Response::new(Full::new(Bytes::from(hello_body(req.uri().path()))));
    res.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    if req.uri().path().starts_with("/cached/") {
        res.headers_mut()
            .insert(CACHE_CONTROL, HeaderValue::from_static("max-age=3600"));
    }
    Ok(res)
}

#[tokio::main]
async fn main() {
    let flags = Flags::parse();
    let listener = tokio::net::TcpListener::bind(&flags.bind).await.unwrap();
    ready(listener.local_addr().unwrap());
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(hello);
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
