//! Fuzzes SharedData's path-to-file resolution through the whole middleware:
//! any request path under an export must give a response below 500 that holds
//! no byte of the secret kept beside the export root, whatever the symlinks.
//!
//! Run with `cargo +nightly fuzz run resolve` from the repository root.
#![no_main]

use stackway::{IntoResponse};
use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use stackway::testing::Client;
use stackway_middleware::shared_data::{Export, SharedData, Symlinks};

const SECRET: &[u8] = b"FUZZ-SECRET-7f3a";

struct Setup {
    runtime: tokio::runtime::Runtime,
    clients: Vec<Client>,
}

/// tmp/secret.txt beside tmp/public/{a.txt, sub/index.html, .env, link-out -> ../secret.txt, up -> ..}
fn setup() -> &'static Setup {
    static SETUP: OnceLock<Setup> = OnceLock::new();
    SETUP.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("stackway-fuzz-{}", std::process::id()));
        let public: PathBuf = dir.join("public");
        std::fs::create_dir_all(public.join("sub")).unwrap();
        std::fs::write(dir.join("secret.txt"), SECRET).unwrap();
        std::fs::write(public.join("a.txt"), "a").unwrap();
        std::fs::write(public.join("a.txt.gz"), "gz").unwrap();
        std::fs::write(public.join("sub/index.html"), "index").unwrap();
        std::fs::write(public.join(".env"), SECRET).unwrap();
        let _ = std::os::unix::fs::symlink("../secret.txt", public.join("link-out"));
        let _ = std::os::unix::fs::symlink("..", public.join("up"));
        let app = |_req| async { stackway::"app".into_response() };
        let clients = [Symlinks::WithinRoot, Symlinks::Deny]
            .into_iter()
            .map(|symlinks| {
                let export = Export::dir(&public).symlinks(symlinks).listing(true);
                Client::new(SharedData::new(app).export("/static", export))
            })
            .collect();
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        Setup { runtime, clients }
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(target) = std::str::from_utf8(data) else { return };
    let target = format!("/static/{target}");
    if http::Uri::try_from(target.as_str()).is_err() {
        return;
    }
    let setup = setup();
    for client in &setup.clients {
        let res = setup.runtime.block_on(client.get(&target).header("accept-encoding", "gzip").into_future());
        assert!(res.status().as_u16() < 500, "{target}: {}", res.status());
        let body = res.body();
        assert!(!body.windows(SECRET.len()).any(|w| w == SECRET), "{target} leaked the secret");
    }
});
