//! Slow clients never hold a Python thread: a request body is read whole
//! before a thread is taken (in memory up to a bound, then in an unnamed
//! temporary file), and a response is taken from Python as fast as Python
//! makes it ([`Body::spooled`]).

use std::io::{Cursor, Seek, SeekFrom};

use http::StatusCode;
use stackway::{Body, IntoResponse, Response};
use tokio::io::AsyncWriteExt;

use crate::objects::BodyReader;

/// The bytes of a request or response body kept in memory; more go to a file.
pub(crate) const MEMORY: usize = 1 << 20;

/// Reads the whole request `body`; a body that fails to arrive is answered
/// here (408 when the client stopped sending, 400 otherwise; the server makes
/// one over its size limit a 413).
pub(crate) async fn request_body(mut body: Body) -> Result<BodyReader, Response> {
    let mut memory = Vec::new();
    let mut file: Option<tokio::fs::File> = None;
    while let Some(chunk) = body.chunk().await {
        let chunk = chunk.map_err(|e| match e.is_timeout() {
            true => StatusCode::REQUEST_TIMEOUT.into_response(),
            false => StatusCode::BAD_REQUEST.into_response(),
        })?;
        match &mut file {
            Some(file) => file.write_all(&chunk).await.map_err(failed)?,
            None if memory.len() + chunk.len() <= MEMORY => memory.extend_from_slice(&chunk),
            None => {
                let spill = tokio::task::spawn_blocking(tempfile::tempfile)
                    .await
                    .map_err(std::io::Error::other)
                    .and_then(|made| made)
                    .map_err(failed)?;
                let mut spill = tokio::fs::File::from_std(spill);
                spill.write_all(&memory).await.map_err(failed)?;
                spill.write_all(&chunk).await.map_err(failed)?;
                memory = Vec::new();
                file = Some(spill);
            }
        }
    }
    match file {
        None => Ok(Box::new(Cursor::new(memory))),
        Some(mut file) => {
            file.flush().await.map_err(failed)?;
            let mut file = file.into_std().await;
            file.seek(SeekFrom::Start(0)).map_err(failed)?;
            Ok(Box::new(file))
        }
    }
}

fn failed(e: impl std::fmt::Display) -> Response {
    tracing::error!("cannot keep a request body in a temporary file: {e}");
    StatusCode::INTERNAL_SERVER_ERROR.into_response()
}
