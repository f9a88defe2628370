//! The broker's own frames: ERROR, RECEIPT and CONNECTED, and the header clean-up they need.

use super::{refuse, Action, Broker, Ending, OutFrame, Refusal, SessionId};
use crate::stomp::{encode, Command, EncodeOptions, Version};

impl Broker {
    /// Sends ERROR (with `message`, and `receipt-id` when the frame asked for a receipt) and
    /// closes: after an ERROR the spec says the server MUST close the connection.
    pub(super) fn error(
        &mut self,
        session: SessionId,
        refusal: Refusal,
        receipt: Option<&str>,
        out: &mut Vec<Action>,
    ) {
        if let Some(frame) = self.error_frame(session, &refusal.message, &refusal.detail, receipt) {
            out.push(Action::Send { to: session, frame });
        }
        out.push(Action::Close {
            to: session,
            ending: Ending::Error(refusal.message),
        });
    }

    /// An ERROR frame for `session` in its version: `message` as the header, `detail` as the
    /// body (for the transport's own errors, such as a slow consumer being let go).
    pub fn error_frame(
        &self,
        session: SessionId,
        message: &str,
        detail: &str,
        receipt: Option<&str>,
    ) -> Option<OutFrame> {
        error_frame_in(self.version(session), message, detail, receipt)
    }

    pub(super) fn receipt(&mut self, session: SessionId, id: &str, out: &mut Vec<Action>) {
        if let Some(frame) = receipt_frame_in(self.version(session), id) {
            out.push(Action::Send { to: session, frame });
        }
    }

    /// The CONNECTED frame for `session`: the negotiated `version`, the heart-beat
    /// (`send_every`, `expect_every`) and the user it connected as.
    pub(super) fn connected_frame(
        &self,
        session: SessionId,
        version: Version,
        (send_every, expect_every): (u64, u64),
        user: Option<&str>,
    ) -> Result<Vec<u8>, Refusal> {
        let heart_beat = format!("{send_every},{expect_every}");
        let session_name = format!("s{session}");
        let mut headers = vec![
            ("version", version.as_str().to_string()),
            ("heart-beat", heart_beat),
            ("server", self.config.server_name.clone()),
            ("session", session_name),
        ];
        if let Some(u) = user {
            headers.push(("user-name", u.to_owned()));
        }
        let mut bytes = Vec::new();
        let clean: Vec<(&str, String)> = headers
            .iter()
            .map(|(n, v)| (*n, v.replace(['\r', '\n', ':'], "")))
            .collect();
        encode(
            Command::Connected,
            clean.iter().map(|(n, v)| (*n, v.as_str())),
            b"",
            EncodeOptions::new(Some(version)),
            &mut bytes,
        )
        .map_err(|e| refuse(format!("cannot encode CONNECTED: {e}")))?;
        Ok(bytes)
    }
}

/// An ERROR frame in `version`: `message` as the header, `detail` as the body, `receipt-id`
/// when the frame it answers asked for a receipt.
pub(crate) fn error_frame_in(
    version: Option<Version>,
    message: &str,
    detail: &str,
    receipt: Option<&str>,
) -> Option<OutFrame> {
    let mut headers: Vec<(&str, &str)> = vec![("message", message), ("content-type", "text/plain")];
    if let Some(r) = receipt {
        headers.push(("receipt-id", r));
    }
    let mut bytes = Vec::new();
    let opts = EncodeOptions::new(version).with_content_length(true);
    let sanitized: Vec<(&str, String)> = headers
        .iter()
        .map(|(n, v)| (*n, sanitize(v, version)))
        .collect();
    encode(
        Command::Error,
        sanitized.iter().map(|(n, v)| (*n, v.as_str())),
        detail.as_bytes(),
        opts,
        &mut bytes,
    )
    .ok()?;
    Some(OutFrame::reply(bytes))
}

/// A RECEIPT frame in `version` for the receipt `id`.
pub(crate) fn receipt_frame_in(version: Option<Version>, id: &str) -> Option<OutFrame> {
    let mut bytes = Vec::new();
    let id = sanitize(id, version);
    encode(
        Command::Receipt,
        [("receipt-id", id.as_str())],
        b"",
        EncodeOptions::new(version),
        &mut bytes,
    )
    .ok()?;
    Some(OutFrame::reply(bytes))
}

pub(super) fn join_versions(versions: &[Version]) -> String {
    versions
        .iter()
        .map(|v| v.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

/// Header values the encoder could not escape in this version lose the offending characters
/// (1.0 has no escapes at all).
pub(super) fn sanitize(value: &str, version: Option<Version>) -> String {
    match version {
        Some(Version::V1_2) => value.to_owned(),
        Some(Version::V1_1) => value.replace('\r', ""),
        _ => value.replace(['\r', '\n'], " "),
    }
}
