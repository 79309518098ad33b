//! Real Python WSGI apps (`tests/python/`) served over real sockets.

use stackway_test_support as support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use stackway_middleware::Dispatcher;
use stackway_wsgi::Wsgi;
use support::http::Conn;
use support::{Running, external, server};

/// The app `callable` of `tests/python/wsgi_apps.py`.
fn app(callable: &str) -> Wsgi {
    stackway_wsgi::python_path("tests/python").unwrap();
    Wsgi::import(&format!("wsgi_apps:{callable}")).unwrap()
}

fn serve(app: impl stackway::App) -> Running {
    Running::start(server().workers(2), app)
}

#[test]
fn the_seed_documents_application() {
    let running = serve(Dispatcher::new(app("hello")).mount("/greet", app("hello")));
    let mut conn = Conn::open(running.addr);
    assert_eq!(conn.get("/").text(), "Hello, world!");
    assert_eq!(conn.get("/greet/you").text(), "Hello, you!");
    let res = conn.get("/greet/caf%C3%A9");
    assert_eq!(res.text(), "Hello, café!");
    assert_eq!(
        res.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
}

/// One line of `describe`'s answer.
fn field<'a>(text: &'a str, name: &str) -> &'a str {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no {name} in {text}"))
}

#[test]
fn the_environ_says_whether_calls_overlap_in_threads_and_processes() {
    // (the app, what it is told): gunicorn's sync workers and uWSGI's
    // processes say false where one call at a time runs in a process.
    let table = [
        (app("describe"), "thread:True process:False"),
        (app("describe").threads(1), "thread:False process:False"),
        (
            app("describe").multiprocess(true),
            "thread:True process:True",
        ),
        (
            app("describe")
                .threads(0)
                .multithread(false)
                .multiprocess(true),
            "thread:False process:True",
        ),
    ];
    for (wsgi, said) in table {
        let running = Running::start(
            server()
                .workers(2)
                .worker_context(stackway_wsgi::worker_context),
            wsgi,
        );
        let text = Conn::open(running.addr).get("/").text();
        assert_eq!(field(&text, "concurrency"), said);
    }
}

#[test]
fn a_validated_app_over_a_request_matrix() {
    // wsgiref.validate checks every environ, every call and the response;
    // its warnings are errors, so any complaint would be a 500 here.
    let running = serve(Dispatcher::default().mount("/v", app("describe")));
    let mut conn = Conn::open(running.addr);

    let text = conn.get("/v/a%2Fb/caf%C3%A9?x=1&y=%20").text();
    assert_eq!(field(&text, "method"), "GET");
    assert_eq!(field(&text, "script_name"), "/v");
    assert_eq!(field(&text, "path_info"), "/a/b/café");
    assert_eq!(field(&text, "query"), "x=1&y=%20");
    assert_eq!(field(&text, "request_uri"), "/v/a%2Fb/caf%C3%A9?x=1&y=%20");
    assert_eq!(field(&text, "content_length"), "-");
    assert_eq!(field(&text, "scheme"), "http");
    assert_eq!(field(&text, "host"), "localhost");
    assert_eq!(field(&text, "fresh"), "True");
    assert_eq!(
        field(&text, "keys"),
        "PATH_INFO,QUERY_STRING,RAW_URI,REMOTE_ADDR,REMOTE_PORT,REQUEST_METHOD,REQUEST_URI,\
         SCRIPT_NAME,SERVER_NAME,SERVER_PORT,SERVER_PROTOCOL,SERVER_SOFTWARE,wsgi.errors,\
         wsgi.file_wrapper,wsgi.input,wsgi.input_terminated,wsgi.multiprocess,wsgi.multithread,\
         wsgi.run_once,wsgi.url_scheme,wsgi.version"
    );

    conn.send(b"POST /v/form HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 7\r\n\r\na=1&b=2");
    let text = conn.read_response().text();
    assert_eq!(
        field(&text, "content_type"),
        "application/x-www-form-urlencoded"
    );
    assert_eq!(field(&text, "content_length"), "7");
    assert_eq!(field(&text, "body"), "7:b'a=1&b=2'");
    assert_eq!(field(&text, "fresh"), "True");

    // Repeated fields joined (cookies by `; `), a name with `_` left out, a
    // byte past ASCII as its latin-1 character.
    conn.send(b"GET /v/fields HTTP/1.1\r\nHost: x\r\nAccept: text/html\r\nCookie: a=1\r\nX-User_Id: 7\r\nAccept: */*\r\nCookie: b=2\r\nX-Trace: caf\xe9\r\n\r\n");
    let text = conn.read_response().text();
    assert_eq!(
        field(&text, "fields"),
        "HTTP_ACCEPT:text/html, */*|HTTP_COOKIE:a=1; b=2|HTTP_HOST:x|HTTP_X_TRACE:caf\u{e9}"
    );

    conn.send(b"POST /v/chunked HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n");
    let text = conn.read_response().text();
    assert_eq!(field(&text, "content_length"), "-");
    assert_eq!(field(&text, "body"), "11:b'hello world'");

    conn.send(b"HEAD /v/head HTTP/1.1\r\nHost: x\r\n\r\n");
    let head = conn.read_head();
    assert_eq!(head.status, 200);
    assert!(head.header("content-length").is_some());

    let res = conn.get("/v/");
    assert_eq!(res.status, 200);
    assert_eq!(field(&res.text(), "path_info"), "/");

    // An exception in the app: 500, and the server goes on; sys.exit() too.
    let res = conn.get("/v/error");
    assert_eq!(res.status, 500);
    assert_eq!(Conn::open(running.addr).get("/v/exit").status, 500);
    assert_eq!(Conn::open(running.addr).get("/v/after").status, 200);
}

#[test]
fn close_is_called_at_the_end_and_when_the_client_goes_away() {
    let running = serve(
        Dispatcher::default()
            .mount("/gen", app("generator"))
            .mount("/closed", app("closed_count")),
    );
    let count = || -> usize {
        Conn::open(running.addr)
            .get("/closed")
            .text()
            .parse()
            .unwrap()
    };
    let before = count();
    assert_eq!(
        Conn::open(running.addr).get("/gen").text(),
        "chunk 0\nchunk 1\nchunk 2\n"
    );
    assert_eq!(count(), before + 1);

    // A response that never ends; the client reads a little and leaves.
    let mut stream = TcpStream::connect(running.addr).unwrap();
    stream
        .write_all(b"GET /gen/endless HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut some = [0; 256];
    let _ = stream.read(&mut some).unwrap();
    drop(stream);
    let deadline = Instant::now() + Duration::from_secs(10);
    while count() < before + 2 {
        assert!(
            Instant::now() < deadline,
            "close() was not called after the client left"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn write_exc_info_and_start_response_rules() {
    let running = serve(
        Dispatcher::default()
            .mount("/write", app("writer"))
            .mount("/before", app("exc_info_before_the_head"))
            .mount("/after", app("exc_info_after_the_head"))
            .mount("/twice", app("start_twice"))
            .mount("/status", app("bad_status"))
            .mount("/length", app("bad_length")),
    );
    let mut conn = Conn::open(running.addr);
    assert_eq!(conn.get("/write").text(), "written, then returned");
    let res = conn.get("/before");
    assert_eq!((res.status, res.text()), (503, "replaced".to_owned()));
    // The app's mistake is the server's 500, in words as any it makes, and
    // dressed by error pages (it was an empty body, which they passed by).
    let res = conn.get("/twice");
    assert_eq!(
        (res.status, res.text().as_str()),
        (500, "500 Internal Server Error")
    );
    assert_eq!(
        res.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
    assert_eq!(conn.get("/status").status, 500);
    let dressed = serve(
        stackway_middleware::ErrorPages::new(app("start_twice")).page(
            [500],
            stackway_middleware::error_pages::Page::html("<h1>Sorry</h1>"),
        ),
    );
    let res = Conn::open(dressed.addr).get("/");
    assert_eq!((res.status, res.text().as_str()), (500, "<h1>Sorry</h1>"));
    // A Content-Length that is no length is the app's mistake, a 500 as
    // under gunicorn (hyper would close the connection with no answer).
    for length in ["", "?-1", "?1.0", "?0x1", "?1,2"] {
        let res = Conn::open(running.addr).get(&format!("/length{length}"));
        assert_eq!(res.status, 500, "Content-Length {length}");
    }
    assert_eq!(Conn::open(running.addr).get("/length?1,1").text(), "x");
    // A body short of its length: what there is, then the connection closed
    // (as gunicorn does); hyper sent nothing at all.
    let mut short = Conn::open(running.addr);
    short.send(b"GET /length?10 HTTP/1.1\r\nHost: x\r\n\r\n");
    let res = short.read_head();
    assert_eq!(
        (res.status, res.header("content-length")),
        (200, Some("10"))
    );
    let mut body = Vec::new();
    (short.reader.read_to_end(&mut body)).expect("closed, not left waiting");
    assert_eq!(body, b"x");

    // With the head out, exc_info re-raises: the response is cut short, not completed.
    let mut stream = TcpStream::connect(running.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(b"GET /after HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut got = Vec::new();
    let _ = stream.read_to_end(&mut got);
    let got = String::from_utf8_lossy(&got);
    // The connection is aborted: what was sent before may or may not have left
    // the server's buffers, but the body is never ended as if complete.
    assert!(
        got.is_empty() || got.starts_with("HTTP/1.1 200 OK"),
        "{got}"
    );
    assert!(
        !got.ends_with("0\r\n\r\n"),
        "the chunked body was ended as if complete: {got}"
    );
    assert!(!got.contains("never"), "{got}");
}

#[test]
fn file_wrapper_sends_the_file() {
    let running = serve(app("file_wrapper"));
    let mut conn = Conn::open(running.addr);
    let source = std::fs::read("tests/python/wsgi_apps.py").unwrap();
    assert_eq!(
        conn.get("/").body,
        source[3..],
        "from the file's position on"
    );
    assert_eq!(conn.get("/bytesio").text(), "from memory");
}

#[test]
fn wsgi_input_reads_lines() {
    let running = serve(app("lines"));
    let mut conn = Conn::open(running.addr);
    conn.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 13\r\n\r\none\ntwo\nthree");
    assert_eq!(
        conn.read_response().text(),
        "b'one\\n' then [b'two\\n', b'three']"
    );
}

#[test]
fn a_flask_app_mounted_under_a_prefix_builds_its_urls_there() {
    if !external::python_modules(&["flask"], "Debian's python3-flask") {
        return;
    }
    stackway_wsgi::python_path("tests/python").unwrap();
    let flask = Wsgi::import("flask_app:app").unwrap();
    let running = serve(Dispatcher::new(app("hello")).mount("/app", flask));
    let mut conn = Conn::open(running.addr);
    assert_eq!(conn.get("/app/").text(), "index links to /app/hello/x");
    assert_eq!(
        conn.get("/app/hello/you").text(),
        "hello you at /app/hello/you"
    );
    let res = conn.get("/app/go");
    assert_eq!(res.status, 302);
    assert_eq!(res.header("location"), Some("/app/hello/there"));
    conn.send(b"POST /app/form HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 5\r\n\r\na=b+c");
    assert_eq!(conn.read_response().text(), "posted b c");
    assert_eq!(conn.get("/elsewhere").text(), "Hello, elsewhere!");
}

#[test]
fn python_runs_beside_the_server_not_on_it() {
    // 32 requests to an app that sleeps 200 ms, on 16 Python threads: about
    // 0.4 s, not 32 × 200 ms; and the server answers others meanwhile.
    let sleepy = app("sleepy").threads(16);
    let running = serve(Dispatcher::new(app("hello")).mount("/sleep", sleepy));
    let started = Instant::now();
    let addr = running.addr;
    let clients: Vec<_> = (0..32)
        .map(|_| std::thread::spawn(move || Conn::open(addr).get("/sleep").text()))
        .collect();
    std::thread::sleep(Duration::from_millis(50));
    let quick = Instant::now();
    assert_eq!(Conn::open(addr).get("/rust").status, 200);
    let names: std::collections::BTreeSet<String> =
        clients.into_iter().map(|c| c.join().unwrap()).collect();
    let took = started.elapsed();
    assert!(took < Duration::from_millis(32 * 200 / 4), "took {took:?}");
    assert!(names.len() > 1, "one Python thread served all: {names:?}");
    assert!(quick.elapsed() < took, "the server waited for Python");
}

#[test]
fn an_upload_is_read_whole_before_python_and_a_stalled_one_gets_408() {
    let running = Running::start(
        server().workers(2).body_timeout(Duration::from_millis(300)),
        app("describe"),
    );
    // Past the memory bound (1 MiB) the body waits in a temporary file.
    let big = vec![b'x'; 3 << 20];
    let mut conn = Conn::open(running.addr);
    let head = format!(
        "POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        big.len()
    );
    conn.send(head.as_bytes());
    conn.send(&big);
    let res = conn.read_response();
    assert_eq!(
        field(&res.text(), "body"),
        "3145728:b'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx'"
    );
    // Ten bytes of a hundred, then nothing: no Python thread sees it.
    let mut stalled = Conn::open(running.addr);
    stalled.send(b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789");
    assert_eq!(stalled.read_head().status, 408);
}

#[test]
fn a_missing_module_or_callable_is_a_clear_error() {
    stackway_wsgi::python_path("tests/python").unwrap();
    let err = Wsgi::import("no_such_module:app").unwrap_err().to_string();
    assert!(err.contains("No module named 'no_such_module'"), "{err}");
    let err = Wsgi::import("wsgi_apps:nope").unwrap_err().to_string();
    assert!(err.contains("nope"), "{err}");
    let err = Wsgi::import("wsgi_apps:closed").unwrap_err().to_string();
    assert!(err.contains("not callable"), "{err}");
}

#[test]
fn harakiri_answers_504_once_python_time_passes_the_limit_and_calls_its_hook() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    let called = Arc::new(AtomicUsize::new(0));
    let seen = called.clone();
    // One thread: the second request waits for it, and waiting does not count.
    let wsgi = app("napper")
        .threads(1)
        .harakiri(Duration::from_millis(600), move || {
            seen.fetch_add(1, Ordering::Relaxed);
        });
    let stats = wsgi.stats();
    let running = serve(wsgi);
    let addr = running.addr;
    let (slow, queued) = std::thread::scope(|s| {
        let slow = s.spawn(|| Conn::open(addr).get("/?0.4"));
        std::thread::sleep(Duration::from_millis(100));
        let queued = s.spawn(|| Conn::open(addr).get("/?0.4"));
        (slow.join().unwrap(), queued.join().unwrap())
    });
    assert_eq!((slow.status, queued.status), (200, 200), "under the limit");
    let asked = Instant::now();
    assert_eq!(Conn::open(addr).get("/?5").status, 504);
    let took = asked.elapsed();
    assert!(
        took >= Duration::from_millis(550) && took < Duration::from_secs(3),
        "{took:?}"
    );
    assert_eq!(stats.harakiri(), 1);
    // The hook comes once the stuck thread's stack is logged.
    let logged = Instant::now();
    while called.load(Ordering::Relaxed) == 0 && logged.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(called.load(Ordering::Relaxed), 1);
}

#[test]
fn the_status_line_keeps_the_apps_reason_as_gunicorn_and_uwsgi_do() {
    let running = serve(app("reasons"));
    // (path, the status line an HTTP/1.1 client reads)
    let table = [
        ("/404", "HTTP/1.1 404 NOT FOUND"),
        ("/299", "HTTP/1.1 299 Whatever"),
        ("/200", "HTTP/1.1 200 OK"),
        // A reason no status line may carry: the code's own.
        ("/bad", "HTTP/1.1 200 OK"),
        ("/bare", "HTTP/1.1 204 No Content"),
    ];
    for (path, line) in table {
        let mut stream = TcpStream::connect(running.addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        assert_eq!(answer.lines().next(), Some(line), "{path}");
    }
}

#[test]
fn an_apps_connection_fields_are_left_out_and_its_headers_may_be_lists() {
    // PEP 3333 forbids an app its connection's fields: the server keeps the
    // connection (its own idle timeout, not the app's word). gunicorn leaves
    // them out too, and takes `[name, value]` lists for tuples, as Werkzeug
    // and waitress do; both were a 500 here.
    let running = serve(stackway_middleware::Lint::strict(app("connection_fields")));
    let mut conn = Conn::open(running.addr);
    for _ in 0..2 {
        let res = conn.get("/");
        assert_eq!((res.status, res.text().as_str()), (200, "fields"));
        assert_eq!(res.header("x-kept"), Some("yes"));
        for gone in ["keep-alive", "upgrade", "proxy-connection"] {
            assert_eq!(res.header(gone), None, "{gone}");
        }
    }
}

/// An app that counts the packets it passes on to the app it wraps.
struct PacketsCounted<A>(A, std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl<A: stackway::App> stackway::App for PacketsCounted<A> {
    fn call(&self, req: stackway::Request) -> impl Future<Output = stackway::Response> + Send {
        self.0.call(req)
    }

    fn call_packet(
        &self,
        packet: Box<stackway::environ::Packet>,
    ) -> Result<stackway::app::BoxFuture<'_, stackway::Response>, Box<stackway::environ::Packet>>
    {
        let taken = self.0.call_packet(packet)?;
        self.1.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(taken)
    }

    fn takes_packets(&self) -> bool {
        self.0.takes_packets()
    }
}

#[test]
fn over_uwsgi_a_packet_taken_as_it_is_is_answered_counted_and_logged_as_its_request() {
    use stackway::server::Listener;
    use stackway_middleware::access_log::LogFormat;
    use stackway_middleware::{AccessLog, Lint, Metrics};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    let uwsgi = || {
        let listener = Listener::bind("127.0.0.1:0").unwrap().uwsgi(true);
        stackway::Server::new([listener]).unwrap().workers(1)
    };
    let mounted = || {
        Dispatcher::default()
            .mount("/app", app("environ"))
            .mount("/", app("environ"))
    };
    // Each counted, as `--metrics` counts them, and logged, as `--access-log`
    // logs them (in the format with the most).
    let observed = |lines: &Arc<Mutex<Vec<String>>>| {
        let lines = lines.clone();
        let metrics = Metrics::new(
            AccessLog::new(Lint::strict(mounted()))
                .format(LogFormat::Combined)
                .sink(move |line: &str| lines.lock().unwrap().push(line.to_owned())),
        );
        let exposition = metrics.exposition("/metrics");
        (metrics, exposition)
    };
    let [packet_lines, request_lines] = [(); 2].map(|()| Arc::new(Mutex::new(Vec::new())));
    let (packets_app, packet_counts) = observed(&packet_lines);
    let (requests_app, request_counts) = observed(&request_lines);
    // The same apps: one server lets the WSGI app take each packet it can;
    // the other passes every request through a middleware that takes none,
    // so the app is called with the request the server makes of the packet.
    let taken = Arc::new(AtomicUsize::new(0));
    let packets = Running::start(uwsgi(), PacketsCounted(packets_app, taken.clone()));
    let requests = Running::start(
        uwsgi(),
        stackway::Builder::new()
            .wrap(stackway::from_fn(|req, next: stackway::Next| async move {
                next.run(req).await
            }))
            .run(requests_app),
    );
    let nginx = |uri: &str, path_info: &str, extra: &[(&str, &str)]| {
        let mut vars = support::http::nginx_uwsgi_vars(uri, path_info);
        for (name, value) in extra {
            // Each field comes after nginx's variables; another replaces its namesake.
            match vars
                .iter_mut()
                .find(|(n, _)| n == name && !n.starts_with("HTTP_"))
            {
                Some(var) => var.1 = (*value).to_owned(),
                None => vars.push((name, (*value).to_owned())),
            }
        }
        support::http::uwsgi_packet(&vars)
    };
    let host = ("HTTP_HOST", "example.org");
    let cases = [
        nginx("/", "/", &[host]),
        nginx(
            "/x?y=1&z=%20&e=%E9",
            "/x",
            &[host, ("HTTP_USER_AGENT", "t/1")],
        ),
        nginx(
            "/app/a%2Fb/caf%C3%A9/sp%20ace",
            "/app/a/b/café/sp ace",
            &[host],
        ),
        nginx("/app", "/app", &[host]),
        nginx("/app/q?a=<b>%20c", "/app/q", &[host]),
        nginx(
            "/mounted/x",
            "/mounted/x",
            &[host, ("SCRIPT_NAME", "/mounted")],
        ),
        nginx("/h", "/h", &[("HTTP_HOST", "Example.COM:8080")]),
        nginx(
            "/h",
            "/h",
            &[("SERVER_NAME", ""), ("HTTP_HOST", "shop.example:8080")],
        ),
        nginx("/s", "/s", &[host, ("HTTPS", "on"), ("SERVER_PORT", "443")]),
        nginx("/v", "/v", &[host, ("SERVER_PROTOCOL", "HTTP/1.0")]),
        nginx(
            "/r",
            "/r",
            &[host, ("REMOTE_ADDR", "2001:db8::1"), ("REMOTE_PORT", "")],
        ),
        nginx(
            "/f",
            "/f",
            &[
                host,
                ("HTTP_COOKIE", "a=1; b=2"),
                ("HTTP_X_EMPTY", ""),
                ("HTTP_CONTENT_TYPE", "text/plain"),
                ("HTTP_AUTHORIZATION", "Basic YWxpY2U6c2VjcmV0"),
                ("HTTP_REFERER", "https://example.org/from?\"q\""),
                ("HTTP_USER_AGENT", "t/1 (caf\u{e9})"),
                ("REMOTE_USER", "alice"),
                ("UWSGI_SCRIPT", "x"),
                ("CONTENT_LENGTH", "0"),
            ],
        ),
        nginx("/m", "/m", &[host, ("REQUEST_METHOD", "HEAD")]),
        // Not taken as packets: two Cookie variables, no host.
        nginx(
            "/two",
            "/two",
            &[host, ("HTTP_COOKIE", "a=1"), ("HTTP_COOKIE", "b=2")],
        ),
        nginx("/old", "/old", &[]),
    ];
    for packet in &cases {
        let [from_packet, from_request] =
            [&packets, &requests].map(|running| support::http::exchange(running.addr, packet));
        assert!(from_packet.starts_with("HTTP/1.0 200 OK"), "{from_packet}");
        let environ = |answer: &str| {
            let (_, body) = answer.split_once("\r\n\r\n").unwrap();
            body.to_owned()
        };
        assert_eq!(environ(&from_packet), environ(&from_request));
    }
    // As packets, all but the last two.
    assert_eq!(taken.load(Ordering::Relaxed), cases.len() - 2);
    // The same line for each, but for its time.
    let untimed = |lines: &Mutex<Vec<String>>| {
        let lines = lines.lock().unwrap();
        (lines.iter())
            .map(|line| {
                let (before, rest) = line.split_once(" [").unwrap();
                format!("{before} {}", rest.split_once("] ").unwrap().1)
            })
            .collect::<Vec<_>>()
    };
    let started = std::time::Instant::now();
    while untimed(&packet_lines).len() < cases.len() || untimed(&request_lines).len() < cases.len()
    {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "lines missing"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let lines = untimed(&packet_lines);
    assert_eq!(lines, untimed(&request_lines));
    // Counted alike, by mount, method and status, and the bytes sent.
    let counts = |exposition: &stackway_middleware::metrics::Exposition| {
        let text = exposition.render();
        (text.lines())
            .filter(|line| {
                [
                    "stackway_requests_total",
                    "stackway_requests_in_flight",
                    "stackway_response_bytes_total",
                    "stackway_request_duration_seconds_count",
                ]
                .iter()
                .any(|name| line.starts_with(name))
            })
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let packet_counts = counts(&packet_counts);
    assert_eq!(packet_counts, counts(&request_counts));
    assert!(
        packet_counts.contains(
            &r#"stackway_requests_total{mount="/app",method="GET",status="2xx"} 3"#.to_owned()
        ),
        "{packet_counts:#?}"
    );
    // The user, the referer and the agent of the one that has them, escaped.
    assert!(
        lines.iter().any(|line| {
            line.starts_with(r#"203.0.113.7 - alice "GET /f HTTP/1.1" 200 "#)
                && line.ends_with(r#" "https://example.org/from?\"q\"" "t/1 (caf\xc3\xa9)""#)
        }),
        "{lines:#?}"
    );
}
