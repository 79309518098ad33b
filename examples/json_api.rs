//! Run with `cargo run --example json_api`, then, for example:
//!
//! ```text
//! curl -X POST localhost:8000/api/todos -H 'content-type: application/json' -d '{"title":"write docs"}'
//! curl localhost:8000/api/todos/1
//! curl -X PATCH localhost:8000/api/todos/1 -H 'content-type: application/json' -d '{"done":true}'
//! curl -X DELETE localhost:8000/api/todos/1
//! ```
//!
//! (another address: `cargo run --example json_api -- 127.0.0.1:0`). A small
//! JSON CRUD app on the Router, with its store as shared state and `?` for
//! every way a request can be wrong.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use stackway::prelude::*;
use stackway_middleware::router::{RouteParams, Router, get};

#[derive(Clone, Serialize)]
struct Todo {
    id: u64,
    title: String,
    done: bool,
}

#[derive(Deserialize)]
struct NewTodo {
    title: String,
}

#[derive(Deserialize)]
struct Change {
    title: Option<String>,
    done: Option<bool>,
}

/// The store every request shares (a database pool in a real app).
#[derive(Default)]
struct Store {
    todos: Mutex<BTreeMap<u64, Todo>>,
}

fn store(req: &Request) -> &Store {
    req.state::<Store>().expect("with_state gives the store")
}

/// What can go wrong, each its own response: `?` turns a bad body into one.
enum ApiError {
    NotFound,
    Bad(Rejection),
}

impl From<Rejection> for ApiError {
    fn from(rejection: Rejection) -> Self {
        Self::Bad(rejection)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            Self::NotFound => (StatusCode::NOT_FOUND, "no such todo\n").into_response(),
            Self::Bad(rejection) => rejection.into_response(),
        }
    }
}

/// The id the path names.
fn id(req: &Request) -> Result<u64, ApiError> {
    req.param("id")
        .and_then(|id| id.parse().ok())
        .ok_or(ApiError::NotFound)
}

async fn list(req: Request) -> Json<Vec<Todo>> {
    Json(
        store(&req)
            .todos
            .lock()
            .unwrap()
            .values()
            .cloned()
            .collect(),
    )
}

async fn create(mut req: Request) -> Result<(StatusCode, Json<Todo>), ApiError> {
    let new: NewTodo = req.json().await?;
    let mut todos = store(&req).todos.lock().unwrap();
    let id = todos.keys().next_back().map_or(1, |last| last + 1);
    let todo = Todo {
        id,
        title: new.title,
        done: false,
    };
    todos.insert(id, todo.clone());
    Ok((StatusCode::CREATED, Json(todo)))
}

async fn show(req: Request) -> Result<Json<Todo>, ApiError> {
    let id = id(&req)?;
    let todo = store(&req).todos.lock().unwrap().get(&id).cloned();
    todo.map(Json).ok_or(ApiError::NotFound)
}

async fn update(mut req: Request) -> Result<Json<Todo>, ApiError> {
    let id = id(&req)?;
    let change: Change = req.json().await?;
    let mut todos = store(&req).todos.lock().unwrap();
    let todo = todos.get_mut(&id).ok_or(ApiError::NotFound)?;
    if let Some(title) = change.title {
        todo.title = title;
    }
    if let Some(done) = change.done {
        todo.done = done;
    }
    Ok(Json(todo.clone()))
}

async fn remove(req: Request) -> Result<StatusCode, ApiError> {
    let id = id(&req)?;
    match store(&req).todos.lock().unwrap().remove(&id) {
        Some(_) => Ok(StatusCode::NO_CONTENT),
        None => Err(ApiError::NotFound),
    }
}

fn main() -> stackway::Result<()> {
    let api = Router::new()
        .route("/todos", get(list).post(create))
        .route("/todos/{id}", get(show).patch(update).delete(remove));
    let app = Router::new()
        .mount("/api", with_state(api, Store::default()))
        .fallback(stackway::apps::hello);
    let addr = std::env::args().nth(1);
    stackway::Server::bind(addr.as_deref().unwrap_or("127.0.0.1:8000"))?
        .when_ready(|addrs| println!("listening on {}", addrs[0]))
        .run(app)
}
