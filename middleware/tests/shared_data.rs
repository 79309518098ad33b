//! SharedData over real files on disk: what is served, how, and what never is.
//!
//! Each test builds its tree in a temporary directory (symlinks, and a secret
//! beside the export root, cannot be committed portably):
//!
//! ```text
//! tmp/
//!   secret.txt                 TOP-SECRET: must never be served
//!   public/                    the export root
//!     hello.txt  äöü.txt  with space.txt  tom&jerry's.txt  .env  CON.txt
//!     big.bin (200 000 bytes)  lines.txt (1000)  app.js  app.js.br  app.js.gz  data.unknownext
//!     css/site.css  css-config.env  sub/index.html  sub/page.txt  empty/  spa/index.html
//!     link-in -> hello.txt  link-out -> ../secret.txt  dir-out -> ..
//! ```

use stackway_test_support as support;

use stackway_middleware::Lint;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use stackway::testing::{Client, TestResponse};
use stackway::{IntoResponse, Request, RequestExt, Response};
use stackway_middleware::Dispatcher;
use stackway_middleware::shared_data::{Embedded, Export, SharedData, Symlinks};
use support::run;

const SECRET: &str = "TOP-SECRET";

struct Tree {
    dir: tempfile::TempDir,
}

impl Tree {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let tree = Self { dir };
        std::fs::write(tree.dir.path().join("secret.txt"), SECRET).unwrap();
        for (name, content) in [
            ("hello.txt", "Hello, file!\n"),
            ("äöü.txt", "umlauts"),
            ("with space.txt", "spaced"),
            ("tom&jerry's.txt", "cartoon"),
            (".env", "PASSWORD=hunter2"),
            ("CON.txt", "device"),
            ("app.js", "console.log('identity')"),
            ("app.js.br", "BROTLI"),
            ("app.js.gz", "GZIP"),
            ("data.unknownext", "??"),
            ("css/site.css", "body {}"),
            ("css-config.env", "SECRET_KEY=1"),
            ("sub/index.html", "<h1>sub</h1>"),
            ("sub/page.txt", "page"),
            ("spa/index.html", "<div id=app></div>"),
            ("spa/app.css", "#app {}"),
        ] {
            tree.write(name, content.as_bytes());
        }
        tree.write("big.bin", &big());
        let lines: String = (0..100).map(|i| format!("{}:{:07}\n", i % 10, i)).collect();
        tree.write("lines.txt", lines.as_bytes());
        std::fs::create_dir(tree.public().join("empty")).unwrap();
        let public = tree.public();
        std::os::unix::fs::symlink("hello.txt", public.join("link-in")).unwrap();
        std::os::unix::fs::symlink("../secret.txt", public.join("link-out")).unwrap();
        std::os::unix::fs::symlink("..", public.join("dir-out")).unwrap();
        tree
    }

    fn public(&self) -> PathBuf {
        self.dir.path().join("public")
    }

    fn write(&self, name: &str, content: &[u8]) {
        let path = self.public().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }

    /// SharedData exporting `public/` at `/static` in front of [`app`].
    fn client(&self) -> Client {
        self.client_with(Export::dir(self.public()))
    }

    fn client_with(&self, export: Export) -> Client {
        Client::new(Lint::strict(SharedData::new(app).export("/static", export)))
    }
}

/// 200 000 bytes that differ at every offset mod 251, so a wrong range shows.
fn big() -> Vec<u8> {
    (0..200_000u32).map(|i| (i % 251) as u8).collect()
}

/// The wrapped app: says what it saw, with 404.
async fn app(req: Request) -> Response {
    let env = req.environ();
    (
        http::StatusCode::NOT_FOUND,
        format!("app: {} {}", env.script_name(), env.path_info()),
    )
        .into_response()
}

fn assert_fell_through(res: &TestResponse) {
    res.assert_status(404).assert_text_contains("app: ");
}

fn http_date(path: &Path) -> String {
    httpdate::fmt_http_date(std::fs::metadata(path).unwrap().modified().unwrap())
}

#[test]
fn serves_a_file_with_type_length_and_validators() {
    let tree = Tree::new();
    run(async {
        let res = tree.client().get("/static/hello.txt").await;
        res.assert_status(200)
            .assert_text("Hello, file!\n")
            .assert_header("content-type", "text/plain; charset=utf-8")
            .assert_header("content-length", "13")
            .assert_header("accept-ranges", "bytes")
            .assert_header(
                "last-modified",
                &http_date(&tree.public().join("hello.txt")),
            )
            .assert_no_header("cache-control");
        let etag = res.header("etag").unwrap();
        assert!(
            etag.starts_with("\"d-") && etag.ends_with('"'),
            "a strong ETag: {etag}"
        );

        let client = tree.client();
        client
            .get("/static/css/site.css")
            .await
            .assert_header("content-type", "text/css; charset=utf-8");
        client
            .get("/static/%C3%A4%C3%B6%C3%BC.txt")
            .await
            .assert_text("umlauts");
        client
            .get("/static/with%20space.txt")
            .await
            .assert_text("spaced");
        client
            .get("/static/data.unknownext")
            .await
            .assert_header("content-type", "application/octet-stream");
        let custom =
            tree.client_with(Export::dir(tree.public()).fallback_content_type("text/plain"));
        custom
            .get("/static/data.unknownext")
            .await
            .assert_header("content-type", "text/plain");
        let big = client.get("/static/big.bin").await;
        big.assert_status(200)
            .assert_header("content-length", "200000");
        assert_eq!(big.body().as_ref(), big_bytes());
    });
}

fn big_bytes() -> &'static [u8] {
    static BIG: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    BIG.get_or_init(big)
}

#[test]
fn misses_fall_through_to_the_app_unchanged() {
    let tree = Tree::new();
    run(async {
        let client = tree.client();
        client
            .get("/static/missing.txt")
            .await
            .assert_status(404)
            .assert_text("app:  /static/missing.txt");
        client
            .get("/elsewhere")
            .await
            .assert_text("app:  /elsewhere");
        // A file with a trailing slash, or a path through a file, is no file.
        assert_fell_through(&client.get("/static/hello.txt/").await);
        assert_fell_through(&client.get("/static/hello.txt/x").await);
        // A directory without an index (and listings off) is a miss too.
        assert_fell_through(&client.get("/static/empty/").await);
        assert_fell_through(&client.get("/static/empty").await);
        // So is a miss for a method other than GET and HEAD.
        client
            .post("/static/missing.txt")
            .await
            .assert_text("app:  /static/missing.txt");
    });
}

#[test]
fn exports_match_whole_segments_longest_first() {
    let tree = Tree::new();
    let public = tree.public();
    run(async {
        // Rack CVE-2026-34785: `/css` must not serve `/css-config.env`.
        let client = Client::new(Lint::strict(
            SharedData::new(app).export("/css", public.join("css")),
        ));
        client.get("/css/site.css").await.assert_text("body {}");
        assert_fell_through(&client.get("/css-config.env").await);
        assert_fell_through(&client.get("/cssx/site.css").await);

        // The longest prefix wins, whichever was added first.
        let sub = public.join("sub");
        for app_ in [
            SharedData::new(app)
                .export("/s", &*public)
                .export("/s/sub", Export::dir(&sub)),
            SharedData::new(app)
                .export("/s/sub", Export::dir(&sub))
                .export("/s", &*public),
        ] {
            let client = Client::new(Lint::strict(app_));
            client.get("/s/sub/page.txt").await.assert_text("page");
            client
                .get("/s/hello.txt")
                .await
                .assert_text("Hello, file!\n");
            assert_fell_through(&client.get("/s/sub/sub/page.txt").await);
        }
        // A prefix may be given with a trailing slash, or be the root.
        let client = Client::new(Lint::strict(SharedData::new(app).export("/", &*public)));
        client.get("/hello.txt").await.assert_text("Hello, file!\n");
        client.get("/").await.assert_status(404); // no index.html at the root
        let client = Client::new(Lint::strict(
            SharedData::new(app).export("/files/", &*public),
        ));
        client
            .get("/files/hello.txt")
            .await
            .assert_text("Hello, file!\n");
    });
}

#[test]
fn single_file_exports_serve_only_their_own_path() {
    let tree = Tree::new();
    run(async {
        let export = tree.public().join("hello.txt");
        let client = Client::new(Lint::strict(SharedData::new(app).export("/hi.txt", export)));
        client
            .get("/hi.txt")
            .await
            .assert_status(200)
            .assert_text("Hello, file!\n");
        // Werkzeug serves the file for `/hi.txt/anything`; this does not.
        assert_fell_through(&client.get("/hi.txt/").await);
        assert_fell_through(&client.get("/hi.txt/anything").await);
        client
            .head("/hi.txt")
            .await
            .assert_status(200)
            .assert_header("content-length", "13");
    });
}

#[test]
fn head_sends_the_headers_of_get_without_a_body() {
    let tree = Tree::new();
    run(async {
        let client = tree.client();
        for path in ["/static/hello.txt", "/static/big.bin"] {
            let get = client.get(path).await;
            let head = client.head(path).await;
            head.assert_status(200);
            assert!(head.body().is_empty());
            for name in [
                "content-type",
                "content-length",
                "etag",
                "last-modified",
                "accept-ranges",
            ] {
                assert_eq!(head.header(name), get.header(name), "{path} {name}");
            }
        }
    });
}

#[test]
fn other_methods_get_405_with_allow() {
    let tree = Tree::new();
    run(async {
        let client = tree.client();
        for method in ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"] {
            let res = client
                .request(method.parse().unwrap(), "/static/hello.txt")
                .await;
            res.assert_status(405).assert_header("allow", "GET, HEAD");
            assert!(!res.text().contains("Hello"), "{method}");
        }
        client.post("/static/sub").await.assert_status(405);
    });
}

#[test]
fn conditional_requests_follow_rfc_9110_precedence() {
    let tree = Tree::new();
    run(async {
        let client = tree.client();
        let path = "/static/hello.txt";
        let first = client.get(path).await;
        let etag = first.header("etag").unwrap().to_owned();
        let modified = first.header("last-modified").unwrap().to_owned();
        let past = httpdate::fmt_http_date(SystemTime::now() - Duration::from_secs(86_400));

        let not_modified = client.get(path).header("if-none-match", &etag).await;
        not_modified
            .assert_status(304)
            .assert_header("etag", &etag)
            .assert_header("last-modified", &modified)
            .assert_no_header("content-length");
        assert!(not_modified.body().is_empty());
        let failed = client.get(path).header("if-match", "\"other\"").await;
        failed.assert_status(412).assert_header("etag", &etag);

        let (etag, modified, past) = (etag.as_str(), modified.as_str(), past.as_str());
        let (weak, listed) = (format!("W/{etag}"), format!("\"x\", W/{etag}"));
        // (method, conditions, status), in RFC 9110 §13.2.2's order of evaluation.
        type Conditions<'a> = &'a [(&'a str, &'a str)];
        let cases: &[(&str, Conditions<'_>, u16)] = &[
            // If-None-Match compares weakly, and answers GET and HEAD with 304.
            ("GET", &[("if-none-match", etag)], 304),
            ("GET", &[("if-none-match", "*")], 304),
            ("GET", &[("if-none-match", &listed)], 304),
            ("HEAD", &[("if-none-match", etag)], 304),
            ("GET", &[("if-none-match", "\"other\"")], 200),
            ("GET", &[("if-modified-since", modified)], 304),
            ("GET", &[("if-modified-since", past)], 200),
            // If-None-Match wins over If-Modified-Since.
            (
                "GET",
                &[
                    ("if-none-match", "\"other\""),
                    ("if-modified-since", modified),
                ],
                200,
            ),
            // If-Match compares strongly.
            ("GET", &[("if-match", etag)], 200),
            ("GET", &[("if-match", "\"other\"")], 412),
            ("GET", &[("if-match", &weak)], 412),
            ("GET", &[("if-unmodified-since", past)], 412),
            ("GET", &[("if-unmodified-since", modified)], 200),
            // If-Match is checked before If-None-Match.
            (
                "GET",
                &[("if-match", "\"other\""), ("if-none-match", etag)],
                412,
            ),
        ];
        for &(method, conditions, status) in cases {
            let mut req = match method {
                "HEAD" => client.head(path),
                _ => client.get(path),
            };
            for (name, value) in conditions {
                req = req.header(name, value);
            }
            let res = req.await;
            assert_eq!(res.status().as_u16(), status, "{method} {conditions:?}");
            if status == 200 && method == "GET" {
                res.assert_text("Hello, file!\n");
            }
        }
        let etag = etag.to_owned();
        // Rewriting the file changes the validators (seen at once without the memory cache).
        let client = tree.client_with(Export::dir(tree.public()).memory_cache(None));
        client
            .get(path)
            .header("if-none-match", &etag)
            .await
            .assert_status(304);
        std::thread::sleep(Duration::from_millis(10));
        tree.write("hello.txt", b"Hello, again!\n");
        client
            .get(path)
            .header("if-none-match", &etag)
            .await
            .assert_status(200)
            .assert_text("Hello, again!\n");
    });
}

#[test]
fn small_files_are_served_from_memory_for_the_cache_ttl() {
    let tree = Tree::new();
    run(async {
        // A ttl no test run outlasts: what is checked within it cannot expire.
        let long = Duration::from_secs(3600);
        let client = tree.client_with(Export::dir(tree.public()).memory_cache(Some(long)));
        let first = client.get("/static/hello.txt").await;
        first.assert_text("Hello, file!\n");
        tree.write("hello.txt", b"changed\n");
        // Within the ttl the disk is not looked at: same bytes, same validators.
        let cached = client.get("/static/hello.txt").await;
        cached
            .assert_text("Hello, file!\n")
            .assert_header("etag", first.header("etag").unwrap());
        client
            .head("/static/hello.txt")
            .await
            .assert_header("content-length", "13");
        client
            .get("/static/hello.txt")
            .header("range", "bytes=0-4")
            .await
            .assert_text("Hello");
        // Each coding the client accepts has its own entry.
        client
            .get("/static/app.js")
            .await
            .assert_text("console.log('identity')");
        client
            .get("/static/app.js")
            .header("accept-encoding", "br")
            .await
            .assert_text("BROTLI");
        // Files larger than 64 KiB are kept open, but looked at on each hit.
        let big = client.get("/static/big.bin").await;
        tree.write("big.bin", b"small now");
        assert_ne!(client.get("/static/big.bin").await.body(), big.body());

        // Once the ttl is over the disk is looked at again: however slow the
        // machine, waiting longer only makes the entry staler.
        let ttl = Duration::from_millis(300);
        let client = tree.client_with(Export::dir(tree.public()).memory_cache(Some(ttl)));
        client
            .get("/static/hello.txt")
            .await
            .assert_text("changed\n");
        tree.write("hello.txt", b"changed again\n");
        std::thread::sleep(ttl + Duration::from_millis(50));
        client
            .get("/static/hello.txt")
            .await
            .assert_text("changed again\n");
        // A deleted file is a miss once the ttl is over.
        std::fs::remove_file(tree.public().join("hello.txt")).unwrap();
        std::thread::sleep(ttl + Duration::from_millis(50));
        assert_fell_through(&client.get("/static/hello.txt").await);
    });
}

/// The body is `expected`, compared without printing 200 000 bytes.
fn assert_bytes(res: &TestResponse, expected: &[u8]) {
    let body = res.body();
    let first_difference = body.iter().zip(expected).position(|(a, b)| a != b);
    assert!(
        body.len() == expected.len() && first_difference.is_none(),
        "{} bytes against {} expected, first difference at {first_difference:?}",
        body.len(),
        expected.len()
    );
}

#[test]
fn large_files_stay_open_yet_a_replaced_rewritten_or_removed_one_is_never_served_as_it_was() {
    let tree = Tree::new();
    let path = tree.public().join("big.bin");
    let version = |n: u8| -> Vec<u8> { (0..200_000u32).map(|i| (i % 251) as u8 ^ n).collect() };
    run(async {
        let long = Duration::from_secs(3600);
        let client = tree.client_with(Export::dir(tree.public()).memory_cache(Some(long)));
        let range = |client: &Client| {
            client
                .get("/static/big.bin")
                .header("range", "bytes=1000-1999")
        };
        tree.write("big.bin", &version(1));
        assert_bytes(&client.get("/static/big.bin").await, &version(1));
        assert_bytes(
            range(&client).await.assert_status(206),
            &version(1)[1000..2000],
        );
        let first = client.get("/static/big.bin").await;
        assert_bytes(&first, &version(1));

        // Replaced by a rename, the same size: another inode.
        let next = tree.public().join("big.bin.next");
        std::fs::write(&next, version(2)).unwrap();
        std::fs::rename(&next, &path).unwrap();
        assert_bytes(&range(&client).await, &version(2)[1000..2000]);
        let replaced = client.get("/static/big.bin").await;
        assert_bytes(&replaced, &version(2));
        assert_ne!(replaced.header("etag"), first.header("etag"));

        // Rewritten in place, the same size: the same inode, a new mtime.
        std::thread::sleep(Duration::from_millis(10));
        std::fs::write(&path, version(3)).unwrap();
        assert_bytes(&client.get("/static/big.bin").await, &version(3));
        assert_bytes(&range(&client).await, &version(3)[1000..2000]);

        // Removed: a miss at once, the open file notwithstanding.
        std::fs::remove_file(&path).unwrap();
        assert_fell_through(&client.get("/static/big.bin").await);
        assert_fell_through(&range(&client).await);
    });
}

#[test]
fn ranges_single_several_and_unsatisfiable() {
    let tree = Tree::new();
    run(async {
        let client = tree.client();
        let data = big_bytes();
        let range = |spec: &str| client.get("/static/big.bin").header("range", spec);
        // Small files (read whole) and large ones (streamed from disk) alike.
        client
            .get("/static/hello.txt")
            .header("range", "bytes=0-4")
            .await
            .assert_status(206)
            .assert_header("content-range", "bytes 0-4/13")
            .assert_text("Hello");
        for (spec, start, end) in [
            ("bytes=0-99", 0, 100),
            ("bytes=100000-", 100_000, 200_000),
            ("bytes=-1000", 199_000, 200_000),
            ("bytes=199990-300000", 199_990, 200_000),
            ("bytes=65530-131080", 65_530, 131_081),
        ] {
            let res = range(spec).await;
            res.assert_status(206)
                .assert_header(
                    "content-range",
                    &format!("bytes {start}-{}/200000", end - 1),
                )
                .assert_header("content-length", &(end - start).to_string());
            assert_eq!(res.body().as_ref(), &data[start..end], "{spec}");
        }

        let unsatisfiable = range("bytes=200000-").await;
        unsatisfiable
            .assert_status(416)
            .assert_header("content-range", "bytes */200000");
        range("bytes=-0").await.assert_status(416);
        // Malformed or empty headers are ignored: the whole file, with 200.
        for spec in [
            "",
            "bytes=",
            "bytes=5-1",
            "bytes=a-b",
            "items=0-1",
            "bytes=0-1,x",
        ] {
            let res = range(spec).await;
            res.assert_status(200)
                .assert_header("content-length", "200000");
        }
        // Range applies to GET only.
        client
            .head("/static/big.bin")
            .header("range", "bytes=0-1")
            .await
            .assert_status(200);
    });
}

/// Splits a multipart/byteranges body into (Content-Range, data) parts.
fn multipart(res: &TestResponse) -> Vec<(String, Vec<u8>)> {
    let content_type = res.header("content-type").unwrap();
    let boundary = content_type
        .strip_prefix("multipart/byteranges; boundary=")
        .expect(content_type);
    let body = res.body().as_ref();
    let delimiter = format!("\r\n--{boundary}");
    let mut parts = Vec::new();
    let mut rest = body;
    assert!(rest.starts_with(delimiter.as_bytes()));
    loop {
        rest = &rest[delimiter.len()..];
        if rest == b"--\r\n" {
            return parts;
        }
        let head_end = rest.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        let head = std::str::from_utf8(&rest[..head_end]).unwrap();
        let content_range = head
            .lines()
            .find_map(|l| l.strip_prefix("content-range: "))
            .unwrap();
        rest = &rest[head_end + 4..];
        let next = rest
            .windows(delimiter.len())
            .position(|w| w == delimiter.as_bytes())
            .unwrap();
        parts.push((content_range.to_owned(), rest[..next].to_vec()));
        rest = &rest[next..];
    }
}

#[test]
fn several_ranges_are_sent_as_multipart_byteranges() {
    let tree = Tree::new();
    run(async {
        let client = tree.client();
        let data = big_bytes();
        let res = client
            .get("/static/big.bin")
            .header("range", "bytes=150000-150099, 0-9, -5")
            .await;
        res.assert_status(206).assert_no_header("content-range");
        assert_eq!(
            res.header("content-length").unwrap(),
            res.body().len().to_string()
        );
        let parts = multipart(&res);
        let expected = [(0, 10), (150_000, 150_100), (199_995, 200_000)];
        assert_eq!(parts.len(), 3);
        for ((content_range, bytes), (start, end)) in parts.iter().zip(expected) {
            assert_eq!(content_range, &format!("bytes {start}-{}/200000", end - 1));
            assert_eq!(bytes.as_slice(), &data[start..end]);
        }
        // In memory too, and each part says the file's type.
        let res = client
            .get("/static/lines.txt")
            .header("range", "bytes=0-1,-2")
            .await;
        let parts = multipart(&res);
        let expected = [
            ("bytes 0-1/1000".to_owned(), b"0:".to_vec()),
            ("bytes 998-999/1000".to_owned(), b"9\n".to_vec()),
        ];
        assert_eq!(parts, expected);
        assert!(
            res.text()
                .contains("content-type: text/plain; charset=utf-8")
        );
        // Overlapping and many tiny ranges are coalesced, so they cost no more than the file.
        let tiny: Vec<String> = (0..60)
            .map(|i| format!("{}-{}", i * 3, i * 3 + 5))
            .collect();
        let res = client
            .get("/static/big.bin")
            .header("range", &format!("bytes={}", tiny.join(",")))
            .await;
        res.assert_status(206)
            .assert_header("content-range", "bytes 0-182/200000");
        // Hundreds of ranges are not worth parsing: the whole file, with 200.
        let many: Vec<String> = (0..500)
            .map(|i| format!("{}-{}", i * 300, i * 300))
            .collect();
        let res = client
            .get("/static/big.bin")
            .header("range", &format!("bytes={}", many.join(",")))
            .await;
        res.assert_status(200)
            .assert_header("content-length", "200000");
    });
}

#[test]
fn if_range_decides_between_206_and_200() {
    let tree = Tree::new();
    run(async {
        let client = tree.client();
        let path = "/static/big.bin";
        let full = client.get(path).await;
        let etag = full.header("etag").unwrap().to_owned();
        let modified = full.header("last-modified").unwrap().to_owned();
        let ranged = |if_range: &str| {
            client
                .get(path)
                .header("range", "bytes=0-9")
                .header("if-range", if_range)
        };
        ranged(&etag).await.assert_status(206);
        ranged(&modified).await.assert_status(206);
        ranged("\"stale\"")
            .await
            .assert_status(200)
            .assert_header("content-length", "200000");
        ranged(&format!("W/{etag}")).await.assert_status(200);
        ranged("Thu, 01 Jan 2015 00:00:00 GMT")
            .await
            .assert_status(200);
    });
}

#[test]
fn precompressed_siblings_follow_accept_encoding() {
    let tree = Tree::new();
    run(async {
        let client = tree.client();
        let path = "/static/app.js";
        let identity = client.get(path).await;
        identity
            .assert_text("console.log('identity')")
            .assert_header("vary", "accept-encoding")
            .assert_no_header("content-encoding");
        let br = client
            .get(path)
            .header("accept-encoding", "gzip, deflate, br")
            .await;
        br.assert_text("BROTLI")
            .assert_header("content-encoding", "br")
            .assert_header("content-type", "text/javascript; charset=utf-8")
            .assert_header("vary", "accept-encoding")
            .assert_header("content-length", "6");
        assert_ne!(
            br.header("etag"),
            identity.header("etag"),
            "another representation, another ETag"
        );
        let gz = client
            .get(path)
            .header("accept-encoding", "br;q=0.5, gzip")
            .await;
        gz.assert_text("GZIP")
            .assert_header("content-encoding", "gzip");
        // (Accept-Encoding, the coding sent, the body): siblings on disk are
        // app.js.br and app.js.gz.
        let cases: &[(&str, Option<&str>, &str)] = &[
            ("br", Some("br"), "BROTLI"),
            ("gzip", Some("gzip"), "GZIP"),
            ("gzip, br", Some("br"), "BROTLI"),
            ("br;q=0.5, gzip", Some("gzip"), "GZIP"),
            ("gzip;q=1, br;q=0.9", Some("gzip"), "GZIP"),
            ("*", Some("br"), "BROTLI"),
            ("*;q=0.5, gzip", Some("gzip"), "GZIP"),
            ("br;q=0, gzip;q=0", None, "console.log('identity')"),
            ("BR", Some("br"), "BROTLI"),
            ("identity", None, "console.log('identity')"),
            ("", None, "console.log('identity')"),
            // A coding with no sibling on disk falls back to the file itself.
            ("zstd", None, "console.log('identity')"),
            ("deflate", None, "console.log('identity')"),
        ];
        for &(accept, coding, body) in cases {
            let res = client.get(path).header("accept-encoding", accept).await;
            res.assert_status(200)
                .assert_text(body)
                .assert_header("vary", "accept-encoding");
            assert_eq!(res.header("content-encoding"), coding, "{accept:?}");
        }
        // A real `.zst` sibling is sent as zstd, and decodes to the file.
        let data = b"{\"zstd\": true}".repeat(50);
        tree.write("data.json", &data);
        tree.write(
            "data.json.zst",
            &ruzstd::encoding::compress_to_vec(
                &data[..],
                ruzstd::encoding::CompressionLevel::Fastest,
            ),
        );
        let zst = client
            .get("/static/data.json")
            .header("accept-encoding", "gzip;q=0.5, zstd")
            .await;
        zst.assert_header("content-encoding", "zstd")
            .assert_header("content-type", "application/json; charset=utf-8");
        let mut decoded = Vec::new();
        std::io::Read::read_to_end(
            &mut ruzstd::decoding::StreamingDecoder::new(&zst.body()[..]).unwrap(),
            &mut decoded,
        )
        .unwrap();
        assert_eq!(decoded, data);
        // Validators and ranges apply to the representation sent.
        let etag = br.header("etag").unwrap();
        client
            .get(path)
            .header("accept-encoding", "br")
            .header("if-none-match", etag)
            .await
            .assert_status(304);
        client
            .get(path)
            .header("if-none-match", etag)
            .await
            .assert_status(200);
        client
            .get(path)
            .header("accept-encoding", "br")
            .header("range", "bytes=0-1")
            .await
            .assert_status(206)
            .assert_text("BR")
            .assert_header("content-range", "bytes 0-1/6");
        client
            .head(path)
            .header("accept-encoding", "br")
            .await
            .assert_header("content-length", "6");
        // Files without siblings are sent as they are; siblings can be asked for by name.
        client
            .get("/static/hello.txt")
            .header("accept-encoding", "br, gzip")
            .await
            .assert_text("Hello, file!\n")
            .assert_no_header("content-encoding");
        client
            .get("/static/app.js.gz")
            .await
            .assert_text("GZIP")
            .assert_no_header("content-encoding");
        // Off: no siblings and no Vary.
        let off = tree.client_with(Export::dir(tree.public()).precompressed(false));
        off.get(path)
            .header("accept-encoding", "br")
            .await
            .assert_text("console.log('identity')")
            .assert_no_header("vary");
    });
}

#[test]
fn directories_serve_their_index_and_redirect_to_the_slash_form() {
    let tree = Tree::new();
    run(async {
        let mounted = Client::new(Lint::strict(Dispatcher::default().mount(
            "/app",
            SharedData::new(app).export("/static", tree.public()),
        )));
        let clients = [
            ("index.html", tree.client()),
            // Under a mount, the redirect keeps the mount's prefix (axum #1731, tower-http #413).
            ("mounted", mounted),
            (
                "page.txt",
                tree.client_with(Export::dir(tree.public()).index_file(Some("page.txt"))),
            ),
            (
                "no index",
                tree.client_with(Export::dir(tree.public()).index_file(None)),
            ),
        ];
        // (client, method, path, status, Location or body); 404 is the app's fall-through.
        let cases: &[(&str, &str, &str, u16, &str)] = &[
            ("index.html", "GET", "/static/sub/", 200, "<h1>sub</h1>"),
            ("index.html", "GET", "/static/sub", 308, "/static/sub/"),
            (
                "index.html",
                "GET",
                "/static/sub?page=2",
                308,
                "/static/sub/?page=2",
            ),
            ("index.html", "HEAD", "/static/sub", 308, "/static/sub/"),
            ("mounted", "GET", "/app/static/sub", 308, "/app/static/sub/"),
            ("mounted", "GET", "/app/static/sub/", 200, "<h1>sub</h1>"),
            ("page.txt", "GET", "/static/sub/", 200, "page"),
            ("no index", "GET", "/static/sub/", 404, ""),
            ("no index", "GET", "/static/sub", 404, ""),
        ];
        for &(name, method, path, status, expected) in cases {
            let client = &clients.iter().find(|(n, _)| *n == name).unwrap().1;
            let res = match method {
                "HEAD" => client.head(path).await,
                _ => client.get(path).await,
            };
            let case = format!("{name}: {method} {path}");
            assert_eq!(res.status().as_u16(), status, "{case}");
            match status {
                308 => assert_eq!(res.header("location"), Some(expected), "{case}"),
                200 => {
                    let html = expected.starts_with('<');
                    let content_type = if html { "text/html" } else { "text/plain" };
                    res.assert_text(expected)
                        .assert_header("content-type", &format!("{content_type}; charset=utf-8"));
                }
                _ => assert_fell_through(&res),
            }
        }
    });
}

#[test]
fn listings_are_opt_in_and_escaped() {
    let tree = Tree::new();
    run(async {
        assert_fell_through(&tree.client().get("/static/").await);
        let client = tree.client_with(Export::dir(tree.public()).listing(true).index_file(None));
        let res = client.get("/static/").await;
        res.assert_status(200)
            .assert_header("content-type", "text/html; charset=utf-8");
        let html = res.text();
        assert!(
            html.contains("<a href=\"tom%26jerry%27s.txt\">tom&amp;jerry&#x27;s.txt</a>"),
            "{html}"
        );
        assert!(
            html.contains("<a href=\"with%20space.txt\">with space.txt</a>"),
            "{html}"
        );
        assert!(html.contains("<a href=\"sub/\">sub/</a>"), "{html}");
        assert!(
            !html.contains("\".env") && !html.contains("CON.txt"),
            "unservable names are not listed: {html}"
        );
        client
            .get("/static/empty")
            .await
            .assert_status(308)
            .assert_header("location", "/static/empty/");
        client
            .get("/static/empty/")
            .await
            .assert_status(200)
            .assert_text_contains("Index of /static/empty/");
    });
}

#[test]
fn hidden_files_are_misses_unless_allowed() {
    let tree = Tree::new();
    run(async {
        assert_fell_through(&tree.client().get("/static/.env").await);
        assert_fell_through(&tree.client().get("/static/%2eenv").await);
        let allowed = tree.client_with(Export::dir(tree.public()).hidden_files(true));
        allowed
            .get("/static/.env")
            .await
            .assert_status(200)
            .assert_text("PASSWORD=hunter2");
    });
}

#[test]
fn cache_control_is_set_per_export() {
    let tree = Tree::new();
    let export = || Export::dir(tree.public());
    let client = Client::new(Lint::strict(
        SharedData::new(app)
            .export("/a", export().max_age(Duration::from_secs(600)))
            .export("/b", export().immutable())
            .export("/c", export().cache_control("no-cache"))
            .export("/d", tree.public()),
    ));
    // (export, Cache-Control on the 200 and on the 304 that revalidates it).
    let cases: &[(&str, Option<&str>)] = &[
        ("/a", Some("public, max-age=600")),
        ("/b", Some("public, max-age=31536000, immutable")),
        ("/c", Some("no-cache")),
        ("/d", None),
    ];
    run(async {
        for &(export, cache_control) in cases {
            let path = format!("{export}/hello.txt");
            let full = client.get(&path).await;
            full.assert_status(200);
            assert_eq!(full.header("cache-control"), cache_control, "{path}");
            let etag = full.header("etag").unwrap();
            let revalidated = client.get(&path).header("if-none-match", etag).await;
            revalidated.assert_status(304);
            assert_eq!(
                revalidated.header("cache-control"),
                cache_control,
                "{path} 304"
            );
        }
    });
}

#[test]
fn spa_fallback_serves_its_file_with_200_for_misses() {
    let tree = Tree::new();
    run(async {
        let export = Export::dir(tree.public().join("spa")).spa_fallback("index.html");
        let client = Client::new(Lint::strict(SharedData::new(app).export("/app", export)));
        client.get("/app/app.css").await.assert_text("#app {}");
        for route in ["/app/users/42", "/app/", "/app/settings?tab=2"] {
            client
                .get(route)
                .await
                .assert_status(200)
                .assert_text("<div id=app></div>")
                .assert_header("content-type", "text/html; charset=utf-8");
        }
        // Other methods still reach the app, and so do paths outside the prefix.
        client
            .post("/app/users/42")
            .await
            .assert_text("app:  /app/users/42");
        assert_fell_through(&client.get("/api/users").await);
        // Hostile paths are refused before any fallback.
        assert_fell_through(&client.get("/app/../secret.txt").await);
    });
}

#[test]
fn embedded_files_are_served_like_files_on_disk() {
    run(async {
        let assets = Embedded::new()
            .file("index.html", b"<h1>embedded</h1>")
            .file("css/site.css", b"body { color: red }")
            .file("css/site.css.gz", b"GZ")
            .file("docs/index.html", b"docs");
        let app_ = SharedData::new(app)
            .export("/", Export::embedded(assets).immutable())
            .export(
                "/favicon.ico",
                Export::bytes("favicon.ico", b"\x00\x00\x01\x00"),
            );
        let client = Client::new(Lint::strict(app_));
        client.get("/").await.assert_text("<h1>embedded</h1>");
        let css = client.get("/css/site.css").await;
        css.assert_text("body { color: red }")
            .assert_header("content-type", "text/css; charset=utf-8")
            .assert_header("cache-control", "public, max-age=31536000, immutable");
        let etag = css.header("etag").unwrap();
        client
            .get("/css/site.css")
            .header("if-none-match", etag)
            .await
            .assert_status(304);
        client
            .get("/css/site.css")
            .header("range", "bytes=0-3")
            .await
            .assert_status(206)
            .assert_text("body");
        client
            .get("/css/site.css")
            .header("accept-encoding", "gzip")
            .await
            .assert_text("GZ")
            .assert_header("content-encoding", "gzip");
        client
            .get("/docs")
            .await
            .assert_status(308)
            .assert_header("location", "/docs/");
        client.get("/docs/").await.assert_text("docs");
        assert_fell_through(&client.get("/css/").await);
        assert_fell_through(&client.get("/missing.js").await);
        assert_fell_through(&client.get("/css/../index.html").await);
        client
            .get("/favicon.ico")
            .await
            .assert_header("content-type", "image/x-icon")
            .assert_header("content-length", "4");
    });
}

#[test]
fn exports_are_checked_when_the_stack_is_built() {
    let tree = Tree::new();
    let public = tree.public();
    let error = |prefix: &str, export: Export| {
        SharedData::new(app)
            .try_export(prefix, export)
            .err()
            .map(|e| e.to_string())
    };
    // actix-files GHSA-8v2v-wjwg-vx6r: a missing root must not mean the working directory.
    let missing = error("/static", Export::path(public.join("nope"))).unwrap();
    assert!(
        missing.contains("nope") && missing.contains("No such file"),
        "{missing}"
    );
    // (prefix, export, what the refusal says; "" for any refusal)
    let refused: Vec<(&str, Export, &str)> = vec![
        ("/static", Export::path(""), "empty"),
        (
            "/static",
            Export::dir(public.join("hello.txt")),
            "not a directory",
        ),
        ("/static", Export::file(public.join("sub")), "not a file"),
        ("static", Export::dir(&public), "a prefix starts with /"),
        ("/a/../b", Export::dir(&public), ""),
        (
            "/s",
            Export::dir(&public).spa_fallback("missing.html"),
            "missing.html",
        ),
        ("/s", Export::dir(&public).spa_fallback("../secret.txt"), ""),
        ("/s", Export::dir(&public).cache_control("bad\nvalue"), ""),
        (
            "/s",
            Export::embedded(Embedded::new().file("../x", b"")),
            "",
        ),
    ];
    for (prefix, export, says) in refused {
        let refusal = error(prefix, export).unwrap_or_else(|| panic!("{prefix} was accepted"));
        assert!(refusal.contains(says), "{prefix}: {refusal}");
    }
    let twice = SharedData::new(app)
        .export("/s", &*public)
        .try_export("/s/", &*public);
    assert!(
        twice
            .err()
            .unwrap()
            .to_string()
            .contains("something is exported there already")
    );
    // The panicking form says the same.
    let panic = std::panic::catch_unwind(|| SharedData::new(app).export("/s", public.join("nope")));
    assert!(panic.is_err());
}

/// Every path here is hostile; none may return a byte of `secret.txt`, or a 5xx.
const HOSTILE: &[&str] = &[
    "/static/../secret.txt",
    "/static/..%2fsecret.txt",
    "/static/..%2Fsecret.txt",
    "/static/%2e%2e/secret.txt",
    "/static/%2e%2e%2fsecret.txt",
    "/static/.%2e/secret.txt",
    "/static/%252e%252e/secret.txt",
    "/static/%252e%252e%252fsecret.txt",
    "/static/..%5csecret.txt",
    "/static/%5c..%5csecret.txt",
    "/static/sub/..%2f..%2f..%2fsecret.txt",
    "/static/%c0%ae%c0%ae/secret.txt",
    "/static/%c0%ae%c0%ae%c0%afsecret.txt",
    "/static/%e0%80%ae%e0%80%ae/secret.txt",
    "/static//etc/passwd",
    "/static/%2fetc%2fpasswd",
    "/static/c:/windows/win.ini",
    "/static/C%3A%5Cwindows%5Cwin.ini",
    "/static/hello.txt%00.png",
    "/static/%00",
    "/static/CON",
    "/static/CON.txt",
    "/static/nul",
    "/static/com1.txt",
    "/static/link-out",
    "/static/dir-out/secret.txt",
    "/static/dir-out",
    "/static/dir-out/",
    "/static/./hello.txt/../../secret.txt",
    "/static/secret.txt",
    "/static/.env",
    "/static/hello.txt.",
    "/static/hello.txt%20",
    "/static/hello.txt::$DATA",
    "/static/sub/%2e",
    "/static/a%2f..%2f..%2fsecret.txt",
    "/static/..;/secret.txt",
    "/static/...",
];

#[test]
fn hostile_paths_never_reach_outside_the_root() {
    let tree = Tree::new();
    run(async {
        for symlinks in [Symlinks::WithinRoot, Symlinks::Deny] {
            let client =
                tree.client_with(Export::dir(tree.public()).symlinks(symlinks).listing(true));
            for path in HOSTILE {
                let res = client.get(path).await;
                assert!(res.status().as_u16() < 500, "{path}: {}", res.status());
                assert!(!res.text().contains(SECRET), "{path} leaked the secret");
                assert!(!res.text().contains("hunter2"), "{path} leaked .env");
                assert_fell_through(&res);
            }
        }
        // Where the links go: inside is followed by default, never with Deny,
        // and outside only with Follow, which says so.
        tree.client()
            .get("/static/link-in")
            .await
            .assert_text("Hello, file!\n");
        let deny = tree.client_with(Export::dir(tree.public()).symlinks(Symlinks::Deny));
        assert_fell_through(&deny.get("/static/link-in").await);
        let follow = tree.client_with(Export::dir(tree.public()).symlinks(Symlinks::Follow));
        follow.get("/static/link-out").await.assert_text(SECRET);
        // Even Follow keeps the path rules.
        assert_fell_through(&follow.get("/static/../secret.txt").await);
    });
}

#[test]
fn hostile_paths_over_a_real_socket() {
    use support::http::Conn;
    let tree = Tree::new();
    let running = support::Running::start(
        support::server(),
        SharedData::new(app).export("/static", tree.public()),
    );
    let raw = [
        "/static\\..\\secret.txt",
        "/static/..\\..\\secret.txt",
        "/static/%5c..%5csecret.txt",
    ];
    for path in HOSTILE.iter().chain(&raw) {
        let mut conn = Conn::open(running.addr);
        conn.send(
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        );
        let res = conn.read_response();
        assert!(res.status < 500, "{path}: {}", res.status);
        assert!(!res.text().contains(SECRET), "{path} leaked the secret");
    }
    // And the real thing works over the socket, HEAD included.
    let mut conn = Conn::open(running.addr);
    let res = conn.get("/static/big.bin");
    assert_eq!((res.status, res.body.as_slice()), (200, big_bytes()));
    conn.send(b"HEAD /static/big.bin HTTP/1.1\r\nHost: localhost\r\n\r\n");
    let head = conn.read_head();
    assert_eq!(
        (head.status, head.header("content-length")),
        (200, Some("200000"))
    );
    let res = conn.get("/static/hello.txt");
    assert_eq!(
        res.text(),
        "Hello, file!\n",
        "the connection is still good after HEAD"
    );
    assert!(res.header("date").is_some());
}
