use std::time::Duration;

/// Everything that can stop a benchmark run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("invalid option: {0}")]
    Options(String),
    #[error("connecting to {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: Box<tokio_tungstenite::tungstenite::Error>,
    },
    #[error("websocket: {0}")]
    Ws(#[from] Box<tokio_tungstenite::tungstenite::Error>),
    #[error("the server closed the connection during setup")]
    Closed,
    #[error("no {what} within {after:?}")]
    Timeout { what: &'static str, after: Duration },
    #[error("unexpected frame while waiting for {expected}: {got}")]
    Protocol { expected: &'static str, got: String },
    #[error("reading /proc/{pid}: {source}")]
    Proc {
        pid: u32,
        #[source]
        source: std::io::Error,
    },
    #[error("HTTP {what}: {source}")]
    Http {
        what: &'static str,
        #[source]
        source: reqwest::Error,
    },
    #[error("HTTP {what}: status {status}: {body}")]
    HttpStatus { what: &'static str, status: u16, body: String },
    #[error("plot: {0}")]
    Plot(String),
    #[error("only {opened} of {wanted} connections opened; first failure: {first}")]
    TooFewConnections { opened: usize, wanted: usize, first: String },
    #[error("cancelled")]
    Cancelled,
}

impl From<tokio_tungstenite::tungstenite::Error> for BenchError {
    fn from(e: tokio_tungstenite::tungstenite::Error) -> Self {
        BenchError::Ws(Box::new(e))
    }
}
