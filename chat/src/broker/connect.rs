//! CONNECT: authentication (with the verdict reached outside the lock), version and
//! heart-beat negotiation, sessions per user and per address, and the SEND rate.

use std::net::IpAddr;

use super::limits::Bucket;
use super::replies::join_versions;
use super::{
    refuse, Action, AuthRefusal, Authenticator, Broker, BrokerEvent, ConnectRequest, Credentials,
    OutFrame, Refusal, SessionId, SessionState, Verdict,
};
use crate::stomp::{Command, Frame, Version};

impl Broker {
    /// The credentials of `frame` when it is a CONNECT from `session` that the authenticator
    /// has yet to judge. The server then stops handing this session's frames to the broker,
    /// calls [`authenticator`](Self::authenticator) with the broker unlocked (a password hash
    /// costs tens of milliseconds: under the lock every other session would wait),
    /// gives the verdict to [`authenticated`](Self::authenticated) and offers the CONNECT again.
    /// `None`: handle the frame now.
    pub fn needs_authentication(
        &self,
        session: SessionId,
        frame: &Frame<'_>,
    ) -> Option<Credentials> {
        let connect = matches!(frame.command, Command::Connect | Command::Stomp);
        if !connect
            || self.config.authenticator.is_none()
            || self.sessions.contains_key(&session)
            || self.verdicts.contains_key(&session)
        {
            return None;
        }
        Some(Credentials {
            login: frame.header("login").map(str::to_owned),
            passcode: frame.header("passcode").map(str::to_owned),
            host: frame.header("host").map(str::to_owned),
            session,
            peer: self.address(session),
        })
    }

    /// The authenticator, to call outside the lock.
    pub fn authenticator(&self) -> Option<Authenticator> {
        self.config.authenticator.clone()
    }

    /// The verdict on `session`'s pending CONNECT, reached outside the lock.
    pub fn authenticated(&mut self, session: SessionId, verdict: Verdict) {
        self.verdicts.insert(session, verdict);
    }

    /// A CONNECT of the application's own (its internal subscriptions): no authenticator, and
    /// the session is exempt from the permission rules and limits, which are for clients.
    pub fn connect_trusted(
        &mut self,
        session: SessionId,
        frame: &Frame<'_>,
        out: &mut Vec<Action>,
    ) {
        self.trusting = Some(session);
        self.handle(session, frame, out);
        self.trusting = None;
    }

    pub(super) fn connect(
        &mut self,
        session: SessionId,
        frame: &Frame<'_>,
        trusted: bool,
        out: &mut Vec<Action>,
    ) -> Result<(), Refusal> {
        let version = Version::negotiate(frame.header("accept-version"), &self.config.versions)
            .ok_or_else(|| Refusal {
                message: "no supported version".into(),
                detail: format!(
                    "supported versions: {}",
                    join_versions(&self.config.versions)
                ),
            })?;
        let request = ConnectRequest {
            login: frame.header("login"),
            passcode: frame.header("passcode"),
            host: frame.header("host"),
            session,
            peer: self.address(session),
        };
        let user = match &self.config.authenticator {
            _ if trusted => None,
            Some(auth) => match self
                .verdicts
                .remove(&session)
                .unwrap_or_else(|| auth(&request))
            {
                Ok(user) => user,
                Err(AuthRefusal { reason, delay_ms }) if delay_ms > 0 => {
                    let mut actions = Vec::new();
                    let refusal = refuse(format!("not authorized: {reason}"));
                    self.error(session, refusal, frame.header("receipt"), &mut actions);
                    out.push(Action::Later {
                        to: session,
                        delay_ms,
                        actions,
                    });
                    self.receipt_taken = true;
                    return Ok(());
                }
                Err(AuthRefusal { reason, .. }) => {
                    return Err(refuse(format!("not authorized: {reason}")))
                }
            },
            None => None,
        };
        if !trusted {
            self.check_session_limits(user.as_deref(), request.peer)?;
        }
        let (send_every, expect_every) = match frame.header("heart-beat") {
            None => (0, 0),
            Some(value) => {
                let (cx, cy) = crate::stomp::parse_heart_beat(value)
                    .ok_or_else(|| refuse("invalid heart-beat header"))?;
                let (sx, sy) = self.config.heart_beat;
                // STOMP 1.2 "Heart-beating": 0 on either side means none in that direction.
                let send = if sx == 0 || cy == 0 { 0 } else { sx.max(cy) };
                let expect = if cx == 0 || sy == 0 { 0 } else { cx.max(sy) };
                (send, expect)
            }
        };
        // From here the session's state holds its address: the table of addresses keeps only
        // sessions not connected yet.
        let address = self.addresses.remove(&session);
        if let Some(u) = &user {
            self.per_user.add(u.clone());
        }
        if let Some(ip) = address {
            self.per_address.add(ip);
        }
        self.sessions.insert(
            session,
            Box::new(SessionState {
                version: Some(version),
                user: user.clone(),
                subscriptions: Vec::new(),
                topic_subscriptions: 0,
                transactions: Default::default(),
                attributes: None,
                sends: (!trusted)
                    .then_some(self.config.max_send_rate)
                    .flatten()
                    .map(|r| Bucket::full(r, self.now_ms)),
                address,
                trusted,
            }),
        );
        let bytes = self.connected_frame(
            session,
            version,
            (send_every, expect_every),
            user.as_deref(),
        )?;
        out.push(Action::Send {
            to: session,
            frame: OutFrame::reply(bytes),
        });
        out.push(Action::HeartBeat {
            to: session,
            send_every,
            expect_every,
        });
        out.push(Action::Event(BrokerEvent::Connected { session, user }));
        Ok(())
    }

    /// Sessions per user and per address, at CONNECT.
    pub(super) fn check_session_limits(
        &self,
        user: Option<&str>,
        peer: Option<IpAddr>,
    ) -> Result<(), Refusal> {
        if let (Some(max), Some(user)) = (self.config.max_sessions_per_user, user) {
            if self.per_user.count(&user.to_owned()) >= max {
                return Err(refuse(format!(
                    "too many sessions of user {user} (at most {max})"
                )));
            }
        }
        if let (Some(max), Some(ip)) = (self.config.max_sessions_per_address, peer) {
            if self.per_address.count(&ip) >= max {
                return Err(refuse(format!(
                    "too many sessions from {ip} (at most {max})"
                )));
            }
        }
        Ok(())
    }

    pub(super) fn is_trusted(&self, session: SessionId) -> bool {
        self.sessions.get(&session).is_some_and(|s| s.trusted)
    }

    /// Takes a token of the session's SEND rate, or refuses.
    pub(super) fn check_send_rate(&mut self, session: SessionId) -> Result<(), Refusal> {
        let (Some(rate), now) = (self.config.max_send_rate, self.now_ms) else {
            return Ok(());
        };
        let bucket = self
            .sessions
            .get_mut(&session)
            .and_then(|s| s.sends.as_mut());
        match bucket.is_none_or(|b| b.take(rate, now)) {
            true => Ok(()),
            false => Err(refuse(format!(
                "SEND rate over {} a second (bursts of {})",
                rate.per_second, rate.burst
            ))),
        }
    }
}
