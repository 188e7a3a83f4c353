//! Connection startup: protocol negotiation, the connection limit, the
//! database name check, optional password authentication, ParameterStatus,
//! and registration for CancelRequest.

use std::fmt::Debug;

use async_trait::async_trait;
use futures::{Sink, SinkExt};
use pgwire::api::auth::{
    ServerParameterProvider, StartupHandler, finish_authentication, protocol_negotiation,
    save_startup_parameters_to_metadata,
};
use pgwire::api::{
    ClientInfo, PgWireConnectionState, PidSecretKeyGenerator, RandomPidSecretKeyGenerator,
};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::startup::Authentication;
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};

use super::Connection;
use super::error::fatal;
use crate::SessionInfo;
use crate::catalog::DATABASE_NAME;

/// Reports the parameters of the session just created.
struct Parameters(Vec<(String, String)>);

impl ServerParameterProvider for Parameters {
    fn server_parameters<C>(&self, _client: &C) -> Option<std::collections::HashMap<String, String>>
    where
        C: ClientInfo,
    {
        Some(self.0.iter().cloned().collect())
    }
}

#[async_trait]
impl StartupHandler for Connection {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        match message {
            PgWireFrontendMessage::Startup(ref startup) => {
                protocol_negotiation(client, startup).await?;
                save_startup_parameters_to_metadata(client, startup);
                if self.permit.is_none() {
                    return Err(fatal("53300", "sorry, too many clients already"));
                }
                let database = client.metadata().get("database").cloned();
                if let Some(db) = database
                    && db != DATABASE_NAME
                {
                    return Err(fatal("3D000", format!("database \"{db}\" does not exist")));
                }
                if self.config.password.is_some() {
                    client
                        .send(PgWireBackendMessage::Authentication(
                            Authentication::CleartextPassword,
                        ))
                        .await?;
                    client.set_state(PgWireConnectionState::AuthenticationInProgress);
                    return Ok(());
                }
                self.finish(client).await
            }
            PgWireFrontendMessage::PasswordMessageFamily(pwd) => {
                let given = pwd.into_password()?.password;
                let user = client.metadata().get("user").cloned().unwrap_or_default();
                if Some(&given) != self.config.password.as_ref() {
                    return Err(fatal(
                        "28P01",
                        format!("password authentication failed for user \"{user}\""),
                    ));
                }
                self.finish(client).await
            }
            _ => Ok(()),
        }
    }
}

impl Connection {
    /// Creates the session, registers for cancellation and tells the client
    /// it is ready.
    async fn finish<C>(&self, client: &mut C) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let (pid, secret) = RandomPidSecretKeyGenerator::default().generate(client);
        client.set_pid_and_secret_key(pid, secret.clone());
        // Kept here rather than in pgwire's session extensions: pgwire would
        // then race its own receiver against ours for the same signal.
        let registration = self.cancels.register(pid, secret);
        if let Ok(mut slot) = self.cancel.lock() {
            *slot = Some(registration);
        }
        let user = client
            .metadata()
            .get("user")
            .cloned()
            .unwrap_or_else(|| "runnel".to_string());
        let mut session = self.db.session_for(SessionInfo {
            user,
            backend_pid: pid,
        });
        for name in [
            "application_name",
            "client_encoding",
            "datestyle",
            "timezone",
            "search_path",
            "extra_float_digits",
        ] {
            let value = client
                .metadata()
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone());
            if let Some(value) = value
                && let Err(e) = session.set_startup_parameter(name, &value)
            {
                return Err(fatal(e.sqlstate(), e.to_string()));
            }
        }
        let parameters = session.startup_parameters();
        *self.session.lock().await = Some(session);
        finish_authentication(client, &Parameters(parameters)).await
    }
}
