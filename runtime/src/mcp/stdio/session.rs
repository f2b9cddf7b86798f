//! What the stdio loop knows of its session beside the SDK: what
//! `initialize` said (noted as it passes), and which `tools/call` requests
//! the SDK is running.

use super::Line;
use rmcp::model::{
    ClientCapabilities, Implementation, InitializeRequestParams, ProtocolVersion, RequestId,
};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::collections::HashSet;
use std::sync::{Mutex, MutexGuard, OnceLock};

/// What the session's `initialize` said, once the SDK has answered it.
pub(super) struct Session {
    pub(super) version: ProtocolVersion,
    pub(super) capabilities: ClientCapabilities,
    pub(super) client: Implementation,
}

/// What the session's `initialize` said, once the SDK has answered it: the
/// request as the loop saw it go by, the version from the SDK's answer.
#[derive(Default)]
pub(super) struct Handshake {
    asked: Mutex<Option<(RequestId, InitializeRequestParams)>>,
    session: OnceLock<Session>,
}

impl Handshake {
    pub(super) fn get(&self) -> Option<&Session> {
        self.session.get()
    }

    /// Notes an `initialize` request on its way to the SDK.
    pub(super) fn asked(&self, id: &RequestId, params: Option<&RawValue>) {
        if self.session.get().is_some() {
            return;
        }
        if let Some(p) = params.and_then(|p| serde_json::from_str(p.get()).ok()) {
            *self.asked.lock().unwrap_or_else(|e| e.into_inner()) = Some((id.clone(), p));
        }
    }

    /// Sees an SDK line go to the client: a successful answer to the noted
    /// `initialize` sets the session up.
    pub(super) fn answered(&self, line: &[u8]) {
        #[derive(Deserialize)]
        struct Answer {
            id: Option<RequestId>,
            result: Option<Negotiated>,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Negotiated {
            protocol_version: ProtocolVersion,
        }
        if self.session.get().is_some() {
            return;
        }
        let mut asked = self.asked.lock().unwrap_or_else(|e| e.into_inner());
        let Some((id, _)) = asked.as_ref() else {
            return;
        };
        let Ok(Answer {
            id: Some(answered),
            result: Some(negotiated),
        }) = serde_json::from_slice::<Answer>(line)
        else {
            return;
        };
        if &answered != id {
            return;
        }
        if let Some((_, params)) = asked.take() {
            let _ = self.session.set(Session {
                version: negotiated.protocol_version,
                capabilities: params.capabilities,
                client: params.client_info,
            });
        }
    }
}

/// The ids of `tools/call` requests handed to the SDK and not yet answered
/// or cancelled: in use, as those of calls running in the loop are, so the
/// loop refuses a call under one of them (a cancellation names a call by
/// its id).
#[derive(Default)]
pub(super) struct SdkCalls(Mutex<HashSet<RequestId>>);

impl SdkCalls {
    fn ids(&self) -> MutexGuard<'_, HashSet<RequestId>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn running(&self, id: &RequestId) -> bool {
        self.ids().contains(id)
    }

    pub(super) fn is_empty(&self) -> bool {
        self.ids().is_empty()
    }

    pub(super) fn handed(&self, id: &RequestId) {
        self.ids().insert(id.clone());
    }

    /// The client cancelled `id`: the SDK does not answer a cancelled
    /// request, so the id is free again.
    pub(super) fn cancelled(&self, id: &RequestId) {
        self.ids().remove(id);
    }

    /// Sees an SDK line go to the client: an answer (not a request of the
    /// SDK's own, whose ids are its own) ends the call it answers.
    pub(super) fn answered(&self, line: &[u8]) {
        if self.ids().is_empty() {
            return;
        }
        if let Ok(Line {
            id: Some(id),
            method: None,
            answer: true,
            ..
        }) = serde_json::from_slice::<Line>(line)
        {
            self.ids().remove(&id);
        }
    }
}
