use std::time::Duration;

/// Errors of the ingest, worker and DLQ tools. The CLI adds context and decides the exit code.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("RabbitMQ: {0}")]
    Amqp(#[from] lapin::Error),
    #[error("RabbitMQ did not answer within {0:?}")]
    AmqpTimeout(Duration),
    #[error("{url}: {message}")]
    Http { url: String, message: String },
    #[error("Discord refused the token (HTTP 401 from {url}): check DISCORD_TOKEN")]
    Unauthorized { url: String },
    #[error("the Discord gateway closed shard {shard} with {code} ({meaning}); reconnecting cannot help")]
    FatalClose { shard: u32, code: u16, meaning: &'static str },
    #[error("invalid {what}: {message}")]
    Invalid { what: &'static str, message: String },
    #[error("TLS setup: {0}")]
    Tls(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl Error {
    pub(crate) fn invalid(what: &'static str, message: impl Into<String>) -> Error {
        Error::Invalid { what, message: message.into() }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
