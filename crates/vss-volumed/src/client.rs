//! The vssd side of the control protocol.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use crate::protocol::{ErrorReply, Reply, Request};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("volume server at {socket} is not answering: {source}")]
    Unreachable {
        socket: String,
        #[source]
        source: std::io::Error,
    },
    #[error("volume server sent a reply that is not valid: {0}")]
    BadReply(String),
    #[error("{}", .0.message)]
    Server(ErrorReply),
}

/// Sends one request and waits for its reply. Each call is its own
/// connection: the server handles them one at a time.
pub fn call(socket: &Path, request: &Request, timeout: Duration) -> Result<Reply, ClientError> {
    let unreachable = |source| ClientError::Unreachable {
        socket: socket.display().to_string(),
        source,
    };
    let stream = UnixStream::connect(socket).map_err(unreachable)?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(unreachable)?;
    stream
        .set_write_timeout(Some(timeout))
        .map_err(unreachable)?;
    let mut line =
        serde_json::to_string(request).map_err(|e| ClientError::BadReply(e.to_string()))?;
    line.push('\n');
    (&stream).write_all(line.as_bytes()).map_err(unreachable)?;
    let mut reply = String::new();
    BufReader::new(&stream)
        .read_line(&mut reply)
        .map_err(unreachable)?;
    if reply.is_empty() {
        return Err(ClientError::BadReply(
            "connection closed without a reply".into(),
        ));
    }
    match serde_json::from_str::<Reply>(&reply) {
        Ok(Reply::Error(e)) => Err(ClientError::Server(e)),
        Ok(r) => Ok(r),
        Err(e) => Err(ClientError::BadReply(e.to_string())),
    }
}
