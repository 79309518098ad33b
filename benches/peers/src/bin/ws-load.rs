//! A WebSocket echo load: `ws-load URL CONNECTIONS SECONDS` opens the
//! connections, then each sends a 32-byte text message and waits for its echo,
//! over and over, for SECONDS. Prints one JSON line: round trips a second
//! (`rps`) and the 99th percentile of a round trip (`p99_ms`), as wrk's
//! figures are read.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, url, connections, seconds] = &args[..] else {
        eprintln!("usage: ws-load URL CONNECTIONS SECONDS");
        std::process::exit(2);
    };
    let connections: usize = connections.parse().expect("CONNECTIONS");
    let seconds: u64 = seconds.parse().expect("SECONDS");
    let mut sockets = Vec::with_capacity(connections);
    for _ in 0..connections {
        let (socket, _) = tokio_tungstenite::connect_async(url.as_str()).await.expect("connect");
        sockets.push(socket);
    }
    let end = Instant::now() + Duration::from_secs(seconds);
    let tasks: Vec<_> = sockets
        .into_iter()
        .map(|mut socket| {
            tokio::spawn(async move {
                let mut trips = Vec::new();
                let payload = "x".repeat(32);
                while Instant::now() < end {
                    let sent = Instant::now();
                    socket.send(Message::text(payload.clone())).await.expect("send");
                    match socket.next().await {
                        Some(Ok(Message::Text(echo))) if echo.as_str() == payload => {}
                        other => panic!("no echo: {other:?}"),
                    }
                    trips.push(sent.elapsed());
                }
                let _ = socket.close(None).await;
                trips
            })
        })
        .collect();
    let mut trips = Vec::new();
    for task in tasks {
        trips.extend(task.await.expect("a connection failed"));
    }
    trips.sort();
    let p99 = trips.get(trips.len() * 99 / 100).copied().unwrap_or_default();
    println!(
        "{{\"rps\": {:.1}, \"p99_ms\": {:.3}}}",
        trips.len() as f64 / seconds as f64,
        p99.as_secs_f64() * 1000.0
    );
}
