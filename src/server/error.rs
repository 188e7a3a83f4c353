//! runnel errors as PostgreSQL ErrorResponses, and back.

use pgwire::error::{ErrorInfo, PgWireError};

use crate::error::Error;

/// The ErrorResponse for `e`: severity, SQLSTATE, message, cursor position.
pub fn to_pg_error(e: &Error) -> PgWireError {
    let mut info = ErrorInfo::new("ERROR".to_string(), e.sqlstate().to_string(), e.to_string());
    info.position = e.position().map(|p| p.to_string());
    PgWireError::UserError(Box::new(info))
}

/// A FATAL error that ends the connection (startup failures).
pub fn fatal(code: &str, message: impl Into<String>) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "FATAL".to_string(),
        code.to_string(),
        message.into(),
    )))
}

/// Errors raised inside pgwire's parameter decoding or arrow-pg's encoding
/// keep their own codes; anything else becomes a runnel error.
pub fn from_pg_error(e: PgWireError) -> PgWireError {
    match e {
        PgWireError::UserError(_) => e,
        PgWireError::ApiError(inner) => match inner.downcast::<Error>() {
            Ok(ours) => to_pg_error(&ours),
            Err(other) => match other.downcast::<datafusion::error::DataFusionError>() {
                Ok(df) => to_pg_error(&Error::from(*df)),
                Err(other) => to_pg_error(&Error::Internal(other.to_string())),
            },
        },
        PgWireError::FailedToParseParameter(inner) => to_pg_error(&Error::data(
            "22P02",
            format!("invalid parameter value: {inner}"),
        )),
        other => other,
    }
}
