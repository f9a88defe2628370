//! The chat domain, effect by effect.

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
