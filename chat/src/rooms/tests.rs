//! The chat domain, effect by effect.

use std::collections::BTreeSet;

use bytes::Bytes;
use serde_json::{json, Value};

use super::*;

const T0: u64 = 1_700_000_000_000;

fn app(session: SessionId, destination: &str, body: Value) -> AppMessage {
    app_raw(session, destination, body.to_string().as_bytes())
}

fn app_raw(session: SessionId, destination: &str, body: &[u8]) -> AppMessage {
    AppMessage {
        session,
        user: None,
        destination: destination.to_owned(),
        headers: vec![("content-type".into(), "application/json".into())],
        body: Bytes::copy_from_slice(body),
    }
}

fn chat_with_room(name: &str) -> (Chat, String) {
    let mut chat = Chat::default();
    let (room, _) = chat.create_room(name, T0).unwrap();
    (chat, room.id)
}

fn join(chat: &mut Chat, session: SessionId, room: &str, nick: &str) -> Vec<Effect> {
    chat.handle_app(
        &app(
            session,
            "/chat.join",
            json!({"roomId": room, "type": "JOIN", "sender": nick}),
        ),
        T0 + 1,
    )
}

fn talk(chat: &mut Chat, session: SessionId, room: &str, text: &str) -> Vec<Effect> {
    chat.handle_app(
        &app(
            session,
            "/chat.send",
            json!({"roomId": room, "type": "TALK", "message": text}),
        ),
        T0 + 2,
    )
}

/// The messages published, parsed, with their destinations.
fn published(effects: &[Effect]) -> Vec<(String, ChatMessage)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Publish { destination, body } => {
                Some((destination.clone(), serde_json::from_str(body).unwrap()))
            }
            _ => None,
        })
        .collect()
}

/// The bodies sent to `session` on `destination`.
fn to_session(effects: &[Effect], session: SessionId, destination: &str) -> Vec<Value> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::ToSession {
                session: s,
                destination: d,
                body,
            } if *s == session && d == destination => Some(serde_json::from_str(body).unwrap()),
            _ => None,
        })
        .collect()
}

fn errors(effects: &[Effect], session: SessionId) -> Vec<ErrorBody> {
    to_session(effects, session, ERRORS_DESTINATION)
        .into_iter()
        .map(|v| serde_json::from_value(v).unwrap())
        .collect()
}

/// The one error in `effects` (and nothing else), its code.
fn only_error(effects: &[Effect], session: SessionId) -> String {
    assert_eq!(effects.len(), 1, "{effects:?}");
    let errs = errors(effects, session);
    assert_eq!(errs.len(), 1, "{effects:?}");
    errs[0].code.clone().unwrap()
}

fn persisted(effects: &[Effect]) -> Vec<&PersistOp> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Persist(op) => Some(op),
            _ => None,
        })
        .collect()
}

// --- validation ---

#[test]
fn room_names_are_trimmed_and_bounded() {
    assert_eq!(validate_room_name("  General  ").unwrap(), "General");
    assert_eq!(validate_room_name(""), Err(NameError::Empty));
    assert_eq!(validate_room_name(" \t\n "), Err(NameError::Empty));
    let max = "é".repeat(64);
    assert_eq!(
        validate_room_name(&max).unwrap(),
        max,
        "characters, not bytes"
    );
    assert_eq!(
        validate_room_name(&"a".repeat(65)),
        Err(NameError::TooLong { max: 64 })
    );
    assert_eq!(
        validate_room_name(&format!("  {}  ", "a".repeat(64))).unwrap(),
        "a".repeat(64),
        "the limit applies after trimming"
    );
}

#[test]
fn room_names_refuse_control_and_invisible_characters() {
    for bad in [
        "a\u{0}b",
        "a\u{7}b",
        "line\nbreak",
        "tab\tbed",
        "del\u{7f}",
        "x\u{202e}y",
        "zero\u{200b}width",
        "\u{feff}bom",
    ] {
        assert_eq!(
            validate_room_name(bad),
            Err(NameError::ControlCharacter),
            "{bad:?}"
        );
    }
    assert!(validate_room_name("Café ☕ 日本語").is_ok());
}

#[test]
fn nicknames_are_bounded_at_32() {
    assert_eq!(validate_nickname(" ann ").unwrap(), "ann");
    assert!(validate_nickname(&"n".repeat(32)).is_ok());
    assert_eq!(
        validate_nickname(&"n".repeat(33)),
        Err(NameError::TooLong { max: 32 })
    );
    assert_eq!(
        validate_nickname("a\u{1b}[31m"),
        Err(NameError::ControlCharacter)
    );
}

#[test]
fn messages_allow_newlines_but_not_other_controls() {
    assert_eq!(validate_message("  hi  ", 10).unwrap(), "hi");
    assert_eq!(validate_message("a\nb\tc", 10).unwrap(), "a\nb\tc");
    assert_eq!(validate_message(" \n ", 10), Err(MessageError::Empty));
    assert_eq!(
        validate_message("a\u{0}b", 10),
        Err(MessageError::ControlCharacter)
    );
    assert_eq!(validate_message(&"x".repeat(10), 10).unwrap().len(), 10);
    assert_eq!(
        validate_message(&"x".repeat(11), 10),
        Err(MessageError::TooLong { max: 10 })
    );
    // Emoji ZWJ sequences are text.
    assert!(validate_message("👩\u{200d}💻", 10).is_ok());
}

#[test]
fn errors_read_clearly() {
    assert_eq!(NameError::Empty.to_string(), "must not be empty");
    assert_eq!(
        ChatError::RoomName(NameError::TooLong { max: 64 }).to_string(),
        "room name must be at most 64 characters"
    );
    assert_eq!(
        ChatError::Nickname(NameError::ControlCharacter).to_string(),
        "nickname must not contain control characters"
    );
    assert_eq!(
        ChatError::NicknameTaken("ann".into()).to_string(),
        "nickname \"ann\" is taken in this room"
    );
    assert_eq!(
        ChatError::Message(MessageError::TooLong { max: 2000 }).to_string(),
        "message must be at most 2000 characters"
    );
    assert_eq!(
        ChatError::UnknownDestination("/chat.dance".into()).to_string(),
        "unknown destination /app/chat.dance"
    );
    assert_eq!(ChatError::UnknownRoom("x".into()).http_status(), 404);
    assert_eq!(ChatError::DuplicateRoomName("x".into()).http_status(), 409);
    assert_eq!(ChatError::RoomName(NameError::Empty).http_status(), 400);
}

// --- rooms ---

#[test]
fn slugs_are_url_safe() {
    assert_eq!(slug("General Chat!"), "general-chat");
    assert_eq!(slug("  --Rust & Go--  "), "rust-go");
    assert_eq!(slug("日本語"), "");
    assert_eq!(slug("Café au lait"), "caf-au-lait");
    let long = slug("a very long room name that goes on and on");
    assert!(long.len() <= 24 && !long.ends_with('-'), "{long}");
}

#[test]
fn rooms_get_short_unique_ids_and_a_persist_effect() {
    let mut chat = Chat::default();
    let (a, effects) = chat.create_room("  General Chat ", T0).unwrap();
    assert_eq!(a.id, "general-chat-1");
    assert_eq!(a.name, "General Chat");
    assert_eq!(a.created, T0);
    assert_eq!(a.members, 0);
    assert_eq!(
        effects,
        vec![Effect::Persist(PersistOp::CreateRoom {
            id: "general-chat-1".into(),
            name: "General Chat".into(),
            created: T0,
        })]
    );
    let (b, _) = chat.create_room("日本語", T0 + 5).unwrap();
    assert_eq!(b.id, "room-2");
    let (c, _) = chat.create_room("General Chat 2", T0 + 6).unwrap();
    assert_eq!(c.id, "general-chat-2-3");
    let ids: Vec<&str> = chat.rooms().map(Room::id).collect();
    assert_eq!(
        ids,
        ["general-chat-1", "room-2", "general-chat-2-3"],
        "creation order"
    );
    assert_eq!(chat.room("room-2").unwrap().name(), "日本語");
    assert!(chat.room("nope").is_none());
}

#[test]
fn room_creation_refuses_bad_and_duplicate_names_and_too_many() {
    let mut chat = Chat::new(ChatConfig {
        max_rooms: 2,
        ..ChatConfig::default()
    });
    assert_eq!(
        chat.create_room("   ", T0).unwrap_err(),
        ChatError::RoomName(NameError::Empty)
    );
    chat.create_room("Lobby", T0).unwrap();
    assert_eq!(
        chat.create_room(" lobby ", T0).unwrap_err(),
        ChatError::DuplicateRoomName("lobby".into())
    );
    chat.create_room("Other", T0).unwrap();
    assert_eq!(
        chat.create_room("Third", T0).unwrap_err(),
        ChatError::TooManyRooms(2)
    );
    assert_eq!(chat.rooms().len(), 2);
}

// --- JOIN ---

#[test]
fn join_sends_history_then_publishes_the_join() {
    let (mut chat, room) = chat_with_room("General");
    join(&mut chat, 1, &room, "ann");
    talk(&mut chat, 1, &room, "hello");
    let effects = join(&mut chat, 2, &room, "  bob ");
    // Order: history to the joiner, persist, publish.
    assert!(
        matches!(&effects[0], Effect::ToSession { session: 2, destination, .. } if destination == "/queue/history")
    );
    assert!(matches!(
        &effects[1],
        Effect::Persist(PersistOp::AppendMessage { keep: 100, .. })
    ));
    assert!(matches!(&effects[2], Effect::Publish { .. }));
    assert_eq!(effects.len(), 3);

    let history = &to_session(&effects, 2, HISTORY_DESTINATION)[0];
    let history: Vec<ChatMessage> = serde_json::from_value(history.clone()).unwrap();
    let texts: Vec<&str> = history.iter().map(|m| m.message.as_str()).collect();
    assert_eq!(texts, ["ann joined", "hello"], "without bob's own JOIN");

    let pubs = published(&effects);
    assert_eq!(pubs[0].0, format!("/topic/rooms.{room}"));
    let m = &pubs[0].1;
    assert_eq!(m.kind, MessageType::Join);
    assert_eq!(m.sender, "bob");
    assert_eq!(m.message, "bob joined");
    assert_eq!(m.room_id, room);
    assert_eq!(m.timestamp, T0 + 1);

    let r = chat.room(&room).unwrap();
    assert_eq!(r.nicknames(), ["ann", "bob"]);
    assert_eq!(r.nickname_of(2), Some("bob"));
    assert_eq!(chat.rooms_of(2), [room.as_str()]);
}

#[test]
fn join_of_an_unknown_room_is_an_error_to_the_session() {
    let (mut chat, _) = chat_with_room("General");
    let effects = join(&mut chat, 1, "nope-9", "ann");
    assert_eq!(only_error(&effects, 1), "unknown_room");
    let err = &errors(&effects, 1)[0];
    assert_eq!(err.error, "no room \"nope-9\"");
    assert_eq!(err.room_id, None, "unknown ids are not echoed");
}

#[test]
fn nicknames_are_unique_within_a_room_case_insensitively() {
    let (mut chat, room) = chat_with_room("General");
    chat.create_room("Other", T0).unwrap();
    join(&mut chat, 1, &room, "Ann");
    let effects = join(&mut chat, 2, &room, "ann");
    assert_eq!(only_error(&effects, 2), "nickname_taken");
    let err = &errors(&effects, 2)[0];
    assert_eq!(err.room_id.as_deref(), Some(room.as_str()));
    assert_eq!(err.error, "nickname \"ann\" is taken in this room");
    assert_eq!(chat.room(&room).unwrap().member_count(), 1);
    // Another room is another namespace.
    let effects = join(&mut chat, 2, "other-2", "ann");
    assert!(errors(&effects, 2).is_empty());
    // Once Ann leaves, the name is free.
    chat.session_closed(1, T0);
    assert!(errors(&join(&mut chat, 2, &room, "ann"), 2).is_empty());
}

#[test]
fn join_validates_the_nickname() {
    let (mut chat, room) = chat_with_room("General");
    assert_eq!(
        only_error(&join(&mut chat, 1, &room, "  "), 1),
        "invalid_nickname"
    );
    assert_eq!(
        only_error(&join(&mut chat, 1, &room, &"n".repeat(33)), 1),
        "invalid_nickname"
    );
    let effects = chat.handle_app(&app(1, "/chat.join", json!({"roomId": room})), T0);
    assert_eq!(only_error(&effects, 1), "invalid_nickname");
    assert_eq!(chat.room(&room).unwrap().member_count(), 0);
}

#[test]
fn joining_twice_resends_history_or_refuses_a_second_name() {
    let (mut chat, room) = chat_with_room("General");
    join(&mut chat, 1, &room, "ann");
    let again = join(&mut chat, 1, &room, "ANN");
    assert_eq!(again.len(), 1);
    assert_eq!(to_session(&again, 1, HISTORY_DESTINATION).len(), 1);
    assert_eq!(
        only_error(&join(&mut chat, 1, &room, "bob"), 1),
        "already_joined"
    );
}

#[test]
fn a_reconnected_browser_takes_its_membership_over_with_its_client_id() {
    let (mut chat, room) = chat_with_room("General");
    let with_client = |session, client: Option<&str>| {
        app(
            session,
            "/chat.join",
            json!({"roomId": room, "sender": "ann", "clientId": client}),
        )
    };
    chat.handle_app(&with_client(1, Some("secret-1")), T0);
    // Someone else (another or no client id) cannot.
    let effects = chat.handle_app(&with_client(2, Some("guess")), T0);
    assert_eq!(only_error(&effects, 2), "nickname_taken");
    let effects = chat.handle_app(&with_client(2, None), T0);
    assert_eq!(only_error(&effects, 2), "nickname_taken");
    // The same browser on a new connection: history only, no JOIN message.
    let effects = chat.handle_app(&with_client(3, Some("secret-1")), T0);
    assert_eq!(effects.len(), 1);
    assert_eq!(to_session(&effects, 3, HISTORY_DESTINATION).len(), 1);
    let r = chat.room(&room).unwrap();
    assert_eq!(r.nickname_of(3), Some("ann"));
    assert_eq!(r.nickname_of(1), None);
    assert!(chat.rooms_of(1).is_empty());
    // The old connection's end is not Ann leaving.
    assert!(chat.session_closed(1, T0).is_empty());
    assert_eq!(chat.room(&room).unwrap().member_count(), 1);
}

// --- TALK ---

#[test]
fn the_sender_comes_from_the_session_not_the_body() {
    let (mut chat, room) = chat_with_room("General");
    join(&mut chat, 1, &room, "ann");
    let effects = chat.handle_app(
        &app(
            1,
            "/chat.send",
            json!({"roomId": room, "type": "TALK", "sender": "mallory", "message": "  hi there "}),
        ),
        T0 + 50,
    );
    let pubs = published(&effects);
    assert_eq!(pubs.len(), 1);
    let m = &pubs[0].1;
    assert_eq!(m.sender, "ann");
    assert_eq!(m.message, "hi there");
    assert_eq!(m.kind, MessageType::Talk);
    assert_eq!(m.timestamp, T0 + 50);
    assert_eq!(
        persisted(&effects),
        [&PersistOp::AppendMessage {
            message: m.clone(),
            keep: 100
        }]
    );
}

#[test]
fn talking_needs_membership() {
    let (mut chat, room) = chat_with_room("General");
    chat.create_room("Other", T0).unwrap();
    join(&mut chat, 1, "other-2", "ann");
    assert_eq!(
        only_error(&talk(&mut chat, 1, &room, "hi"), 1),
        "not_in_room"
    );
    assert_eq!(
        only_error(&talk(&mut chat, 2, &room, "hi"), 2),
        "not_in_room"
    );
    assert_eq!(
        only_error(&talk(&mut chat, 1, "zzz", "hi"), 1),
        "unknown_room"
    );
}

#[test]
fn messages_must_be_non_empty_and_at_most_2000_characters() {
    let (mut chat, room) = chat_with_room("General");
    join(&mut chat, 1, &room, "ann");
    assert_eq!(
        only_error(&talk(&mut chat, 1, &room, "   "), 1),
        "invalid_message"
    );
    let effects = chat.handle_app(&app(1, "/chat.send", json!({"roomId": room})), T0);
    assert_eq!(only_error(&effects, 1), "invalid_message");
    let effects = talk(&mut chat, 1, &room, &"ü".repeat(2001));
    assert_eq!(only_error(&effects, 1), "invalid_message");
    assert_eq!(
        errors(&effects, 1)[0].error,
        "message must be at most 2000 characters"
    );
    let effects = talk(&mut chat, 1, &room, &"ü".repeat(2000));
    assert_eq!(published(&effects).len(), 1);
    let effects = talk(&mut chat, 1, &room, "<img src=x onerror=alert(1)>");
    assert_eq!(
        published(&effects)[0].1.message,
        "<img src=x onerror=alert(1)>",
        "stored as text; the page escapes"
    );
}

#[test]
fn history_keeps_the_last_100() {
    let (mut chat, room) = chat_with_room("General");
    join(&mut chat, 1, &room, "ann");
    for i in 0..150 {
        talk(&mut chat, 1, &room, &format!("m{i}"));
    }
    let r = chat.room(&room).unwrap();
    assert_eq!(r.history().len(), 100);
    assert_eq!(r.history().front().unwrap().message, "m50");
    assert_eq!(r.history().back().unwrap().message, "m149");
    let effects = join(&mut chat, 2, &room, "bob");
    let history = &to_session(&effects, 2, HISTORY_DESTINATION)[0];
    assert_eq!(history.as_array().unwrap().len(), 100);
    assert_eq!(chat.room(&room).unwrap().history().len(), 100);
    let detail = chat.room(&room).unwrap().detail();
    assert_eq!(detail.history.len(), 100);
    assert_eq!(detail.history.last().unwrap().message, "bob joined");
}

#[test]
fn history_limit_is_configurable() {
    let mut chat = Chat::new(ChatConfig {
        history_limit: 3,
        ..ChatConfig::default()
    });
    let (room, _) = chat.create_room("Small", T0).unwrap();
    join(&mut chat, 1, &room.id, "ann");
    for i in 0..5 {
        let effects = talk(&mut chat, 1, &room.id, &format!("m{i}"));
        assert!(matches!(
            persisted(&effects)[0],
            PersistOp::AppendMessage { keep: 3, .. }
        ));
    }
    let texts: Vec<&str> = chat
        .room(&room.id)
        .unwrap()
        .history()
        .iter()
        .map(|m| m.message.as_str())
        .collect();
    assert_eq!(texts, ["m2", "m3", "m4"]);
}

#[test]
fn message_ids_increase_across_rooms() {
    let (mut chat, a) = chat_with_room("A");
    let (b, _) = chat.create_room("B", T0).unwrap();
    let mut ids = Vec::new();
    for e in [
        join(&mut chat, 1, &a, "ann"),
        join(&mut chat, 1, &b.id, "ann"),
        talk(&mut chat, 1, &a, "x"),
        talk(&mut chat, 1, &b.id, "y"),
    ] {
        ids.extend(published(&e).into_iter().map(|(_, m)| m.id));
    }
    assert_eq!(ids, [1, 2, 3, 4]);
}

// --- LEAVE ---

#[test]
fn leave_publishes_and_removes_the_member() {
    let (mut chat, room) = chat_with_room("General");
    join(&mut chat, 1, &room, "ann");
    join(&mut chat, 2, &room, "bob");
    let effects = chat.handle_app(
        &app(1, "/chat.leave", json!({"roomId": room, "type": "LEAVE"})),
        T0 + 9,
    );
    let pubs = published(&effects);
    assert_eq!(pubs.len(), 1);
    assert_eq!(pubs[0].1.kind, MessageType::Leave);
    assert_eq!(pubs[0].1.sender, "ann");
    assert_eq!(pubs[0].1.message, "ann left");
    assert_eq!(persisted(&effects).len(), 1);
    assert_eq!(chat.room(&room).unwrap().nicknames(), ["bob"]);
    assert!(chat.rooms_of(1).is_empty());
    let again = chat.handle_app(&app(1, "/chat.leave", json!({"roomId": room})), T0);
    assert_eq!(only_error(&again, 1), "not_in_room");
    // And can come back.
    assert!(errors(&join(&mut chat, 1, &room, "ann"), 1).is_empty());
}

#[test]
fn a_disconnect_leaves_every_room_of_the_session() {
    let mut chat = Chat::default();
    let ids: Vec<String> = ["A", "B", "C"]
        .iter()
        .map(|n| chat.create_room(n, T0).unwrap().0.id)
        .collect();
    join(&mut chat, 7, &ids[0], "ann");
    join(&mut chat, 7, &ids[2], "annie");
    join(&mut chat, 8, &ids[0], "bob");
    join(&mut chat, 8, &ids[1], "bob");
    assert_eq!(chat.rooms_of(7), ["a-1", "c-3"]);

    let effects = chat.handle_event(
        &BrokerEvent::Disconnected {
            session: 7,
            user: None,
            attributes: Default::default(),
        },
        T0 + 100,
    );
    let pubs = published(&effects);
    let seen: Vec<(&str, &str, &str)> = pubs
        .iter()
        .map(|(d, m)| (d.as_str(), m.sender.as_str(), m.message.as_str()))
        .collect();
    assert_eq!(
        seen,
        [
            ("/topic/rooms.a-1", "ann", "ann left"),
            ("/topic/rooms.c-3", "annie", "annie left"),
        ]
    );
    assert!(pubs
        .iter()
        .all(|(_, m)| m.kind == MessageType::Leave && m.timestamp == T0 + 100));
    assert_eq!(persisted(&effects).len(), 2);
    assert!(chat.rooms_of(7).is_empty());
    assert_eq!(chat.room("a-1").unwrap().nicknames(), ["bob"]);
    assert_eq!(chat.room("c-3").unwrap().member_count(), 0);
    assert_eq!(chat.rooms_of(8), ["a-1", "b-2"], "others stay");
    // A second notice, or a session that never joined: nothing.
    assert!(chat.session_closed(7, T0).is_empty());
    assert!(chat.session_closed(99, T0).is_empty());
    // Other events change nothing.
    let connected = BrokerEvent::Connected {
        session: 9,
        user: None,
    };
    assert!(chat.handle_event(&connected, T0).is_empty());
}

// --- bodies and destinations ---

#[test]
fn bad_bodies_and_destinations_are_answered_with_errors() {
    let (mut chat, room) = chat_with_room("General");
    let cases: Vec<(AppMessage, &str)> = vec![
        (app_raw(1, "/chat.join", b"not json"), "invalid_body"),
        (app_raw(1, "/chat.join", b"[1,2]"), "invalid_body"),
        (app_raw(1, "/chat.join", b"\xff\xfe"), "invalid_body"),
        (
            app(1, "/chat.join", json!({"roomId": room, "type": "SHOUT"})),
            "invalid_body",
        ),
        (
            app(1, "/chat.join", json!({"roomId": 5, "sender": "ann"})),
            "invalid_body",
        ),
        (
            app(
                1,
                "/chat.join",
                json!({"roomId": room, "type": "TALK", "sender": "ann"}),
            ),
            "type_mismatch",
        ),
        (
            app(1, "/chat.join", json!({"sender": "ann"})),
            "missing_room_id",
        ),
        (
            app(1, "/chat.send", json!({"roomId": "", "message": "x"})),
            "missing_room_id",
        ),
        (app(1, "/chat.dance", json!({})), "unknown_destination"),
    ];
    for (msg, code) in cases {
        let effects = chat.handle_app(&msg, T0);
        assert_eq!(only_error(&effects, 1), code, "{msg:?}");
    }
    let huge = format!(
        r#"{{"roomId":"{room}","sender":"ann","pad":"{}"}}"#,
        "x".repeat(20_000)
    );
    assert_eq!(
        only_error(
            &chat.handle_app(&app_raw(1, "/chat.join", huge.as_bytes()), T0),
            1
        ),
        "invalid_body"
    );
    // Not the chat's: left alone.
    assert!(chat.handle_app(&app(1, "/other", json!({})), T0).is_empty());
    // Unknown fields and a missing type are fine.
    let effects = chat.handle_app(
        &app(
            1,
            "/chat.join",
            json!({"roomId": room, "sender": "ann", "extra": true}),
        ),
        T0,
    );
    assert!(errors(&effects, 1).is_empty());
}

#[test]
fn json_shapes() {
    let (mut chat, room) = chat_with_room("General");
    let effects = join(&mut chat, 1, &room, "ann");
    let Effect::Publish { body, .. } = &effects[2] else {
        panic!("{effects:?}")
    };
    assert_eq!(
        body,
        r#"{"id":1,"roomId":"general-1","type":"JOIN","sender":"ann","message":"ann joined","timestamp":1700000000001}"#
    );
    let Effect::ToSession { body, .. } = &effects[0] else {
        panic!()
    };
    assert_eq!(body, "[]");

    let err = join(&mut chat, 2, &room, "ann");
    let Effect::ToSession {
        destination, body, ..
    } = &err[0]
    else {
        panic!()
    };
    assert_eq!(destination, "/queue/errors");
    assert_eq!(
        body,
        r#"{"error":"nickname \"ann\" is taken in this room","code":"nickname_taken","roomId":"general-1"}"#
    );

    let summary = serde_json::to_value(chat.summaries()).unwrap();
    assert_eq!(
        summary,
        json!([{"id": "general-1", "name": "General", "created": T0, "members": 1}])
    );
    let detail = serde_json::to_value(chat.room(&room).unwrap().detail()).unwrap();
    assert_eq!(
        detail,
        json!({
            "id": "general-1", "name": "General", "created": T0, "members": ["ann"],
            "history": [{"id": 1, "roomId": "general-1", "type": "JOIN", "sender": "ann",
                         "message": "ann joined", "timestamp": T0 + 1}],
        })
    );
    assert_eq!(
        serde_json::to_string(&ErrorBody::new("bad")).unwrap(),
        r#"{"error":"bad"}"#
    );
    assert_eq!(room_topic("x-1"), "/topic/rooms.x-1");
    assert_eq!(
        json_headers(),
        [("content-type".to_owned(), "application/json".to_owned())]
    );
}

// --- restore ---

#[test]
fn restore_continues_ids_and_counters() {
    let message = |id, room: &str| ChatMessage {
        id,
        room_id: room.into(),
        kind: MessageType::Talk,
        sender: "ann".into(),
        message: format!("m{id}"),
        timestamp: T0,
    };
    let state = LoadedState {
        rooms: vec![
            LoadedRoom {
                id: "general-4".into(),
                name: "General".into(),
                created: T0,
                history: vec![message(10, "general-4"), message(41, "general-4")],
            },
            LoadedRoom {
                id: "room-7".into(),
                name: "日本語".into(),
                created: T0 + 1,
                history: vec![],
            },
        ],
    };
    let mut chat = Chat::restore(ChatConfig::default(), state);
    assert_eq!(chat.rooms().len(), 2);
    assert_eq!(chat.room("general-4").unwrap().history().len(), 2);
    assert_eq!(chat.room("general-4").unwrap().member_count(), 0);
    let (room, _) = chat.create_room("New", T0).unwrap();
    assert_eq!(room.id, "new-8");
    let effects = join(&mut chat, 1, "general-4", "ann");
    assert_eq!(published(&effects)[0].1.id, 42);
    assert_eq!(
        chat.create_room("general", T0).unwrap_err(),
        ChatError::DuplicateRoomName("general".into())
    );
}

// --- cluster mode ---

fn node_chat(node: NodeId) -> Chat {
    let mut chat = Chat::default();
    chat.enable_cluster(ClusterConfig::new(node));
    chat
}

/// Hands what one node published to another, as the broker would: its room messages and its
/// cluster events. Returns what the receiver did in turn.
fn deliver(to: &mut Chat, effects: &[Effect], now_ms: u64) -> Vec<Effect> {
    let mut out = Vec::new();
    for effect in effects {
        let Effect::Publish { destination, body } = effect else {
            continue;
        };
        if destination == CLUSTER_TOPIC {
            let event: ClusterEvent = serde_json::from_str(body).unwrap();
            out.extend(to.handle_cluster_event(event, now_ms));
        } else {
            out.extend(
                to.handle_room_message(destination, body.as_bytes(), now_ms)
                    .unwrap(),
            );
        }
    }
    out
}

fn cluster_events(effects: &[Effect]) -> Vec<ClusterEvent> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Publish { destination, body } if destination == CLUSTER_TOPIC => {
                Some(serde_json::from_str(body).unwrap())
            }
            _ => None,
        })
        .collect()
}

fn remote(id: u64, room: &str, kind: MessageType, sender: &str) -> ChatMessage {
    let message = match kind {
        MessageType::Join => format!("{sender} joined"),
        MessageType::Leave => format!("{sender} left"),
        MessageType::Talk => format!("message {id}"),
    };
    ChatMessage {
        id,
        room_id: room.into(),
        kind,
        sender: sender.into(),
        message,
        timestamp: T0,
    }
}

/// Node 1 with a room; node 2 told of it.
fn two_nodes() -> (Chat, Chat, String) {
    let mut a = node_chat(1);
    let mut b = node_chat(2);
    let (room, effects) = a.create_room("General", T0).unwrap();
    assert!(deliver(&mut b, &effects, T0).is_empty());
    assert!(b.room(&room.id).is_some(), "the room reached node 2");
    (a, b, room.id)
}

fn members(chat: &Chat, room: &str) -> Vec<String> {
    chat.room(room)
        .unwrap()
        .detail()
        .members
        .into_iter()
        .collect()
}

fn presence_of(chat: &Chat) -> Vec<Effect> {
    chat.presence().into_iter().collect()
}

#[test]
fn cluster_ids_are_unique_across_nodes_and_follow_causality() {
    let (mut a, mut b, room) = two_nodes();
    let mut seen: Vec<u64> = Vec::new();
    let mut check = |effects: &[Effect], node: NodeId| {
        for (_, m) in published(effects) {
            assert_eq!(node_of(m.id), node, "{m:?}");
            assert!(m.id < 1 << 53, "JavaScript-safe");
            assert!(
                seen.iter().all(|&s| s < m.id),
                "{} after {seen:?}: above every id its node has seen",
                m.id
            );
            seen.push(m.id);
        }
    };
    let e = join(&mut a, 1, &room, "ann");
    check(&e, 1);
    deliver(&mut b, &e, T0);
    let e = join(&mut b, 1, &room, "bob");
    check(&e, 2);
    deliver(&mut a, &e, T0);
    for round in 0..5 {
        let e = talk(&mut a, 1, &room, &format!("a{round}"));
        check(&e, 1);
        deliver(&mut b, &e, T0);
        // Node 2 talks twice in a row: its own counter moves on too.
        for n in 0..2 {
            let e = talk(&mut b, 1, &room, &format!("b{round}.{n}"));
            check(&e, 2);
            deliver(&mut a, &e, T0);
        }
    }
    let mut sorted = seen.clone();
    sorted.dedup();
    assert_eq!(sorted.len(), 17, "unique");
    // Both histories hold the same messages in the same (id) order.
    let ids = |chat: &Chat| -> Vec<u64> {
        chat.room(&room)
            .unwrap()
            .history()
            .iter()
            .map(|m| m.id)
            .collect()
    };
    assert_eq!(ids(&a), seen);
    assert_eq!(ids(&b), seen);
    // Room ids too: each node's carry its number in the low bits, and never meet.
    let (r1, _) = a.create_room("One", T0).unwrap();
    let (r2, _) = b.create_room("Two", T0).unwrap();
    assert_eq!(r1.id, format!("one-{}", cluster_id(2, 1)));
    assert_eq!(
        r2.id,
        format!("two-{}", cluster_id(2, 2)),
        "above the room it saw"
    );
}

#[test]
fn cluster_ids_start_above_what_the_store_loaded() {
    let state = LoadedState {
        rooms: vec![LoadedRoom {
            id: "general-200000".into(),
            name: "General".into(),
            created: T0,
            // Single-node ids, and stored out of id order (a shared store orders by time).
            history: vec![
                remote(1_000_000, "general-200000", MessageType::Talk, "ann"),
                remote(999_999, "general-200000", MessageType::Talk, "ann"),
            ],
        }],
    };
    let mut chat = Chat::restore(ChatConfig::default(), state);
    chat.enable_cluster(ClusterConfig::new(7));
    assert_eq!(
        chat.room("general-200000")
            .unwrap()
            .history()
            .iter()
            .map(|m| m.id)
            .collect::<Vec<_>>(),
        [999_999, 1_000_000],
        "ordered by id"
    );
    let e = join(&mut chat, 1, "general-200000", "bob");
    let id = published(&e)[0].1.id;
    assert!(id > 1_000_000, "{id}");
    assert_eq!(node_of(id), 7);
    let (room, _) = chat.create_room("New", T0).unwrap();
    let n: u64 = room.id.rsplit('-').next().unwrap().parse().unwrap();
    assert!(n > 200_000, "{n}");
    assert_eq!(node_of(n), 7);
}

#[test]
fn remote_messages_are_filed_by_id_deduplicated_and_trimmed() {
    let mut chat = Chat::new(ChatConfig {
        history_limit: 3,
        ..ChatConfig::default()
    });
    chat.enable_cluster(ClusterConfig {
        persist_remote: true,
        ..ClusterConfig::new(1)
    });
    let (room, _) = chat.create_room("General", T0).unwrap();
    let room = room.id;
    let id = |k| cluster_id(k, 2);
    let ids = |chat: &Chat| -> Vec<u64> {
        chat.room(&room)
            .unwrap()
            .history()
            .iter()
            .map(|m| m.id)
            .collect()
    };
    let file = |chat: &mut Chat, k: u64| {
        let e = chat.handle_remote_message(remote(id(k), &room, MessageType::Talk, "bob"), T0);
        let persisted: Vec<u64> = persisted(&e)
            .into_iter()
            .map(|op| match op {
                PersistOp::AppendMessage { message, keep } => {
                    assert_eq!(*keep, 3);
                    message.id
                }
                other => panic!("{other:?}"),
            })
            .collect();
        assert!(published(&e).is_empty(), "nothing is published again");
        persisted
    };
    assert_eq!(file(&mut chat, 5), [id(5)]);
    assert_eq!(file(&mut chat, 3), [id(3)], "an older one goes before");
    assert_eq!(
        file(&mut chat, 5),
        Vec::<u64>::new(),
        "a duplicate is ignored"
    );
    assert_eq!(file(&mut chat, 9), [id(9)]);
    assert_eq!(file(&mut chat, 7), [id(7)]);
    assert_eq!(ids(&chat), [id(5), id(7), id(9)], "trimmed to the limit");
    assert_eq!(
        file(&mut chat, 4),
        Vec::<u64>::new(),
        "older than a full history keeps"
    );
    // This node's next message comes after everything it saw.
    let e = join(&mut chat, 1, &room, "ann");
    assert_eq!(published(&e)[0].1.id, cluster_id(10, 1));
    // Its own messages coming back change nothing.
    let own = published(&e)[0].1.clone();
    assert!(chat.handle_remote_message(own, T0).is_empty());
    assert_eq!(ids(&chat), [id(7), id(9), cluster_id(10, 1)]);
    // A message whose topic is not its room's is refused.
    let body = serde_json::to_vec(&remote(id(20), &room, MessageType::Talk, "bob")).unwrap();
    assert!(chat
        .handle_room_message("/topic/rooms.other-1", &body, T0)
        .is_err());
}

#[test]
fn a_shared_store_is_written_by_the_originating_node_only() {
    let (mut a, mut b, room) = two_nodes();
    let e = join(&mut a, 1, &room, "ann");
    assert_eq!(persisted(&e).len(), 1, "the node that posted writes");
    let got = deliver(&mut b, &e, T0);
    assert!(got.is_empty(), "{got:?}");
}

#[test]
fn remote_members_show_in_details_and_counts() {
    let (mut a, mut b, room) = two_nodes();
    deliver(&mut b, &join(&mut a, 1, &room, "ann"), T0);
    deliver(&mut b, &join(&mut a, 2, &room, "Zed"), T0);
    join(&mut b, 7, &room, "bob");
    assert_eq!(members(&b, &room), ["ann", "bob", "Zed"]);
    assert_eq!(b.summaries()[0].members, 3);
    assert_eq!(b.room(&room).unwrap().local_member_count(), 1);
    // A LEAVE from node 1 takes its member away at once.
    let e = a.handle_app(&app(2, "/chat.leave", json!({"roomId": room})), T0 + 3);
    deliver(&mut b, &e, T0);
    assert_eq!(members(&b, &room), ["ann", "bob"]);
    // A presence replaces node 1's members wholesale (repairing a lost JOIN).
    let mut lost = join(&mut a, 3, &room, "carol");
    lost.clear();
    deliver(&mut b, &presence_of(&a), T0 + 10);
    assert_eq!(members(&b, &room), ["ann", "bob", "carol"]);
    // A nickname on two nodes at once (they raced) counts once.
    let raced = ChatMessage {
        id: cluster_id(100, 3),
        ..remote(0, &room, MessageType::Join, "BOB")
    };
    b.handle_remote_message(raced, T0);
    assert_eq!(members(&b, &room), ["ann", "bob", "carol"]);
    assert_eq!(b.summaries()[0].members, 3);
}

#[test]
fn a_nickname_held_on_another_node_is_taken() {
    let (mut a, mut b, room) = two_nodes();
    let e = a.handle_app(
        &app(
            1,
            "/chat.join",
            json!({"roomId": room, "sender": "ann", "clientId": "same-browser"}),
        ),
        T0,
    );
    deliver(&mut b, &e, T0);
    // Not even with ann's clientId: taking a membership over is for this node's sessions.
    for body in [
        json!({"roomId": room, "sender": "ANN"}),
        json!({"roomId": room, "sender": "ann", "clientId": "same-browser"}),
    ] {
        let e = b.handle_app(&app(5, "/chat.join", body), T0);
        assert_eq!(only_error(&e, 5), "nickname_taken");
    }
    assert_eq!(members(&b, &room), ["ann"]);
}

#[test]
fn a_late_presence_does_not_undo_a_newer_join() {
    let (mut a, mut b, room) = two_nodes();
    let stale = presence_of(&a);
    let e = join(&mut a, 1, &room, "ann");
    deliver(&mut b, &e, T0);
    deliver(&mut b, &stale, T0);
    assert_eq!(
        members(&b, &room),
        ["ann"],
        "the presence is older than the JOIN"
    );
    // And a late JOIN does not undo a newer presence.
    let join_msg = e.clone();
    let leave = a.handle_app(&app(1, "/chat.leave", json!({"roomId": room})), T0);
    let mut c = node_chat(3);
    deliver(&mut c, &two_nodes_room_event(&b, &room), T0);
    deliver(&mut c, &presence_of(&a), T0);
    deliver(&mut c, &join_msg, T0);
    assert!(members(&c, &room).is_empty(), "{:?}", members(&c, &room));
    deliver(&mut c, &leave, T0);
    assert!(members(&c, &room).is_empty());
}

/// The `rooms` event of `chat` (every room it knows), as effects.
fn two_nodes_room_event(chat: &Chat, room: &str) -> Vec<Effect> {
    let r = chat.room(room).unwrap();
    vec![Effect::Publish {
        destination: CLUSTER_TOPIC.into(),
        body: serde_json::to_string(&ClusterEvent::Rooms {
            node: 9,
            rooms: vec![RoomInfo {
                id: r.id().into(),
                name: r.name().into(),
                created: r.created(),
            }],
        })
        .unwrap(),
    }]
}

#[test]
fn dead_nodes_are_dropped_and_the_lowest_live_node_says_so() {
    let mut nodes: Vec<Chat> = (1..=3).map(node_chat).collect();
    let (room, e) = nodes[0].create_room("General", T0).unwrap();
    let room = room.id;
    for n in &mut nodes[1..] {
        deliver(n, &e, T0);
    }
    // ann on node 3, bob on node 2.
    let e = join(&mut nodes[2], 1, &room, "ann");
    let f = join(&mut nodes[1], 1, &room, "bob");
    for i in 0..3 {
        let everyone: Vec<Effect> = (0..3)
            .filter(|&j| j != i)
            .flat_map(|j| presence_of(&nodes[j]))
            .chain(e.iter().cloned())
            .chain(f.iter().cloned())
            .collect();
        let node = &mut nodes[i];
        deliver(node, &everyone, T0);
        assert_eq!(node.live_nodes(), [1, 2, 3]);
    }
    assert_eq!(members(&nodes[0], &room), ["ann", "bob"]);
    // Nodes 1 and 2 keep beating; node 3 falls silent.
    let later = T0 + NODE_TIMEOUT_MS;
    let beats: Vec<Vec<Effect>> = nodes.iter().map(presence_of).collect();
    deliver(&mut nodes[0], &beats[1], later);
    deliver(&mut nodes[1], &beats[0], later);
    assert!(nodes[0].expire_nodes(later).is_empty(), "not yet");
    let dead_at = later + 1;
    let from_1 = nodes[0].expire_nodes(dead_at);
    let from_2 = nodes[1].expire_nodes(dead_at);
    assert_eq!(nodes[0].live_nodes(), [1, 2]);
    assert_eq!(nodes[1].live_nodes(), [1, 2]);
    // Node 1 is the lowest live node: it posts "ann left" (and keeps it).
    let left = published(&from_1);
    assert_eq!(left.len(), 1, "{from_1:?}");
    assert_eq!(left[0].0, room_topic(&room));
    assert_eq!(left[0].1.kind, MessageType::Leave);
    assert_eq!(left[0].1.message, "ann left");
    assert_eq!(node_of(left[0].1.id), 1);
    assert_eq!(persisted(&from_1).len(), 1);
    assert!(from_2.is_empty(), "node 2 is not the lowest: {from_2:?}");
    for n in &nodes[..2] {
        assert_eq!(members(n, &room), ["bob"]);
    }
    // Node 2 files node 1's LEAVE like any message.
    deliver(&mut nodes[1], &from_1, dead_at);
    assert_eq!(
        nodes[1]
            .room(&room)
            .unwrap()
            .history()
            .back()
            .unwrap()
            .message,
        "ann left"
    );
    // A late JOIN from the dead node does not bring its member back; a presence does.
    deliver(&mut nodes[0], &e, dead_at);
    assert_eq!(members(&nodes[0], &room), ["bob"]);
    deliver(&mut nodes[0], &beats[2], dead_at + 1);
    assert_eq!(members(&nodes[0], &room), ["ann", "bob"]);
    assert_eq!(nodes[0].live_nodes(), [1, 2, 3]);
    // Node 1 dies too: node 2, now the lowest, speaks.
    let much_later = dead_at + 2 * NODE_TIMEOUT_MS;
    let from_2 = nodes[1].expire_nodes(much_later);
    assert_eq!(nodes[1].live_nodes(), [2]);
    assert!(published(&from_2).is_empty(), "node 1 had no members");
    // A nickname someone alive still holds is not said to have left.
    let mut solo = node_chat(5);
    deliver(&mut solo, &nodes[0].create_room("Solo", T0).unwrap().1, T0);
    let solo_room = solo.rooms().last().unwrap().id().to_owned();
    let ann_remote = ChatMessage {
        id: cluster_id(1, 6),
        ..remote(0, &solo_room, MessageType::Join, "ann")
    };
    solo.handle_remote_message(ann_remote, T0);
    join(&mut solo, 1, &solo_room, "bob");
    let ann_on_7 = ChatMessage {
        id: cluster_id(2, 7),
        ..remote(0, &solo_room, MessageType::Join, "ANN")
    };
    solo.handle_remote_message(ann_on_7, T0);
    let e = solo.expire_nodes(T0 + 1);
    assert!(e.is_empty());
    let mut beat7 = presence_of(&solo);
    if let Effect::Publish { body, .. } = &mut beat7[0] {
        *body = serde_json::to_string(&ClusterEvent::Presence {
            node: 7,
            last: cluster_id(2, 7),
            members: [(solo_room.clone(), vec!["ANN".to_owned()])].into(),
            rooms: RoomDigest::default(),
        })
        .unwrap();
    }
    deliver(&mut solo, &beat7, T0 + NODE_TIMEOUT_MS + 1);
    let e = solo.expire_nodes(T0 + NODE_TIMEOUT_MS + 1);
    assert!(
        published(&e).is_empty(),
        "ANN on node 7 still holds it: {e:?}"
    );
}

#[test]
fn bye_drops_a_node_at_once() {
    let (mut a, mut b, room) = two_nodes();
    deliver(&mut b, &presence_of(&a), T0);
    deliver(&mut a, &presence_of(&b), T0);
    deliver(&mut b, &join(&mut a, 1, &room, "ann"), T0);
    deliver(&mut b, &join(&mut a, 2, &room, "zed"), T0);
    assert_eq!(members(&b, &room), ["ann", "zed"]);
    // ann's session closes first (its own LEAVE, still on the way), then node 1 says bye
    // with what it still has: zed.
    let leave = a.session_closed(1, T0);
    let bye: Vec<Effect> = a.bye().into_iter().collect();
    assert_eq!(
        cluster_events(&bye),
        [ClusterEvent::Bye {
            node: 1,
            last: published(&leave)[0].1.id,
            members: [(room.clone(), vec!["zed".to_owned()])].into(),
        }]
    );
    let e = deliver(&mut b, &bye, T0);
    assert_eq!(b.live_nodes(), [2]);
    assert!(members(&b, &room).is_empty());
    // Node 2, the only live node, says zed left; ann's LEAVE is node 1's own, arriving late.
    let said: Vec<String> = published(&e).into_iter().map(|(_, m)| m.message).collect();
    assert_eq!(said, ["zed left"]);
    deliver(&mut b, &leave, T0);
    let history: Vec<String> = b
        .room(&room)
        .unwrap()
        .history()
        .iter()
        .map(|m| m.message.clone())
        .collect();
    assert_eq!(
        history,
        ["ann joined", "zed joined", "ann left", "zed left"]
    );
}

#[test]
fn rooms_from_other_nodes_are_added_and_a_late_node_learns_them() {
    let mut a = node_chat(1);
    let mut b = Chat::default();
    b.enable_cluster(ClusterConfig {
        persist_remote: true,
        ..ClusterConfig::new(2)
    });
    let (r1, e1) = a.create_room("One", T0).unwrap();
    assert_eq!(
        cluster_events(&e1),
        [ClusterEvent::Room {
            node: 1,
            id: r1.id.clone(),
            name: "One".into(),
            created: T0,
        }]
    );
    let (r2, _lost) = a.create_room("Two", T0).unwrap();
    // A message for a room not known yet waits for it.
    let early = join(&mut a, 1, &r2.id, "ann");
    assert!(deliver(&mut b, &early, T0).is_empty());
    let got = deliver(&mut b, &e1, T0);
    assert_eq!(
        got,
        [Effect::Persist(PersistOp::CreateRoom {
            id: r1.id.clone(),
            name: "One".into(),
            created: T0,
        })],
        "a store of its own keeps other nodes' rooms"
    );
    // Node 2 missed "Two": the digests differ, so node 1 sends every room it knows.
    let answer = deliver(&mut a, &presence_of(&b), T0);
    let events = cluster_events(&answer);
    assert!(
        matches!(&events[..], [ClusterEvent::Rooms { node: 1, rooms }] if rooms.len() == 2),
        "{events:?}"
    );
    assert!(
        deliver(&mut a, &presence_of(&b), T0 + 1).is_empty(),
        "not again so soon"
    );
    let got = deliver(&mut b, &answer, T0);
    assert_eq!(persisted(&got).len(), 2, "room Two and ann's JOIN: {got:?}");
    assert_eq!(b.rooms().len(), 2);
    assert_eq!(members(&b, &r2.id), ["ann"], "the early JOIN was kept");
    // Same rooms, same digest: nothing more to send either way.
    assert!(cluster_events(&deliver(&mut b, &presence_of(&a), T0)).is_empty());
    assert!(cluster_events(&deliver(&mut a, &presence_of(&b), T0 + NODE_TIMEOUT_MS)).is_empty());
    // Rooms with ids this node would never make are ignored.
    for id in ["", "UPPER-1", "a/b", "x y", &"x".repeat(65)] {
        let bad = ClusterEvent::Room {
            node: 3,
            id: id.into(),
            name: "Bad".into(),
            created: T0,
        };
        assert!(b.handle_cluster_event(bad, T0).is_empty());
    }
    assert_eq!(b.rooms().len(), 2);
}

#[test]
fn merge_loaded_adds_the_rooms_and_messages_missing() {
    let (mut a, mut b, room) = two_nodes();
    let seen = join(&mut a, 1, &room, "ann");
    deliver(&mut b, &seen, T0);
    let missed = talk(&mut a, 1, &room, "while the broker was away");
    let (other, _) = a.create_room("Other", T0).unwrap();
    let state = LoadedState {
        rooms: a
            .rooms()
            .map(|r| LoadedRoom {
                id: r.id().into(),
                name: r.name().into(),
                created: r.created(),
                history: r.history().iter().cloned().collect(),
            })
            .collect(),
    };
    let (rooms, merged) = b.merge_loaded(state.clone());
    assert_eq!((rooms, merged.len()), (1, 1));
    assert_eq!(merged[0].message, "while the broker was away");
    assert!(b.room(&other.id).is_some());
    let last = b.room(&room).unwrap().history().back().unwrap().clone();
    assert_eq!(last, published(&missed)[0].1);
    assert_eq!(b.merge_loaded(state), (0, Vec::new()), "nothing twice");
    let e = join(&mut b, 1, &room, "bob");
    assert!(published(&e)[0].1.id > last.id);
}

#[test]
fn single_node_mode_is_unchanged() {
    let (mut chat, room) = chat_with_room("General");
    assert_eq!(chat.node(), None);
    assert!(chat.presence().is_none() && chat.bye().is_none());
    let e = join(&mut chat, 1, &room, "ann");
    assert_eq!(published(&e)[0].1.id, 1);
    let (r, e) = chat.create_room("Second", T0).unwrap();
    assert_eq!(r.id, "second-2");
    assert!(cluster_events(&e).is_empty(), "no announcement alone");
    assert!(chat
        .handle_remote_message(
            remote(cluster_id(5, 2), &room, MessageType::Join, "bob"),
            T0
        )
        .is_empty());
    assert_eq!(members(&chat, &room), ["ann"]);
    let presence = ClusterEvent::Presence {
        node: 2,
        last: 0,
        members: [(room.clone(), vec!["bob".to_owned()])].into(),
        rooms: RoomDigest::default(),
    };
    assert!(chat.handle_cluster_event(presence, T0).is_empty());
    assert!(chat.expire_nodes(T0 + 1_000_000).is_empty());
    assert_eq!(members(&chat, &room), ["ann"]);
    assert!(chat.live_nodes().is_empty());
}

#[test]
fn cluster_events_read_as_documented() {
    let event: ClusterEvent = serde_json::from_str(
        r#"{"type":"presence","node":3,"last":196611,"members":{"general-65539":["ann"]},"rooms":{"count":1,"hash":42}}"#,
    )
    .unwrap();
    assert_eq!(event.node(), 3);
    let bye: ClusterEvent = serde_json::from_str(r#"{"type":"bye","node":4}"#).unwrap();
    assert_eq!(
        bye,
        ClusterEvent::Bye {
            node: 4,
            last: 0,
            members: MemberLists::new()
        }
    );
    assert_eq!(
        serde_json::to_string(&ClusterEvent::Room {
            node: 1,
            id: "general-65537".into(),
            name: "General".into(),
            created: T0
        })
        .unwrap(),
        format!(
            r#"{{"type":"room","node":1,"id":"general-65537","name":"General","created":{T0}}}"#
        )
    );
    assert_eq!(cluster_id(3, 3), 196_611);
    assert_eq!(node_of(196_611), 3);
}

/// `split` spreads the rooms over shards by id, with their members and history; each shard
/// numbers messages apart from the others, above every id so far; a session's close in each
/// shard leaves the rooms it holds there.
#[test]
fn a_chat_splits_into_shards_that_never_share_an_id() {
    let mut chat = Chat::default();
    let ids: Vec<String> = (0..10)
        .map(|i| chat.create_room(&format!("room {i}"), T0).unwrap().0.id)
        .collect();
    for id in &ids {
        join(&mut chat, 7, id, "ann");
        talk(&mut chat, 7, id, "before");
    }
    let used = chat.next_message_id_bound();
    let mut shards = chat.split(4);
    assert_eq!(shards.len(), 4);
    for (i, shard) in shards.iter().enumerate() {
        for room in shard.rooms() {
            assert_eq!(shard_of(room.id(), 4), i, "{} in shard {i}", room.id());
            assert_eq!(room.nicknames(), ["ann"]);
            assert_eq!(room.history().len(), 2);
        }
    }
    let total: usize = shards.iter().map(|s| s.rooms().len()).sum();
    assert_eq!(total, 10);
    let mut seen = BTreeSet::new();
    for id in &ids {
        let shard = &mut shards[shard_of(id, 4)];
        for _ in 0..3 {
            let (_, m) = published(&talk(shard, 7, id, "after"))
                .pop()
                .expect("a message");
            assert!(m.id >= used, "id {} not above the {used} used", m.id);
            assert!(seen.insert(m.id), "id {} given twice", m.id);
        }
    }
    // Ann's close, shard by shard: she leaves the rooms each holds.
    let mut left = 0;
    for shard in &mut shards {
        let here = shard.rooms().len();
        let gone = published(&shard.session_closed(7, T0 + 3));
        assert_eq!(gone.len(), here, "one LEAVE per room of the shard");
        assert!(shard.rooms_of(7).is_empty());
        left += gone.len();
    }
    assert_eq!(left, 10);
    // A chat in cluster mode stays whole.
    let mut clustered = Chat::default();
    clustered.enable_cluster(ClusterConfig::new(3));
    assert_eq!(clustered.split(4).len(), 1);
}
