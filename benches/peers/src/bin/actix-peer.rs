//! actix-web 4 + actix-files: mounts by `scope`, static by `Files`.

use std::time::Duration;

use actix_files::Files;
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use clap::Parser;
use stackway_peers::{Flags, hello_body, ready};

/// The `hello-param` scenario's route: `/users/{id}` greets `id`.
async fn user(id: web::Path<String>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(hello_body(&format!("/{id}")))
}

async fn hello(req: HttpRequest) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(hello_body(req.match_info().unprocessed()))
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let flags = Flags::parse();
    let (statics, mounts) = (flags.statics.clone(), flags.mounts.clone());
    let server = HttpServer::new(move || {
        let mut app = App::new().route("/users/{id}", web::get().to(user));
        for (prefix, dir) in &statics {
            app = app.service(Files::new(if prefix.is_empty() { "/" } else { prefix }, dir));
        }
        for prefix in &mounts {
            app = match prefix.as_str() {
                "" => app.default_service(web::to(hello)),
                prefix => app.service(web::scope(prefix).default_service(web::to(hello))),
            };
        }
        app
    })
    // TCP_NODELAY, as stackway, hyper-peer and nginx (`tcp_nodelay on`) set it.
    .on_connect(|conn, _| {
        if let Some(tcp) = conn.downcast_ref::<actix_web::rt::net::TcpStream>() {
            let _ = tcp.set_nodelay(true);
        }
    })
    // Idle keep-alive connections stay open as long as the other servers keep them.
    .keep_alive(Duration::from_secs(60))
    .client_request_timeout(Duration::from_secs(30))
    .backlog(4096)
    .max_connections(100_000)
    .bind(&flags.bind)?;
    ready(server.addrs()[0]);
    server.run().await
}
