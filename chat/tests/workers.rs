//! The broker with sessions spread over several workers on purpose: topic subscriptions live
//! in each worker's own table (see `server/shard.rs`), queues and users' destinations in the
//! broker's locked shards (`broker/queues.rs`, `broker/users.rs`, reached without the broker's
//! lock for SEND and ACK), transactions in each session's link, and every STOMP rule must hold
//! whichever worker a session
//! landed on. A session's worker is read from its CONNECTED `session` header (the engine
//! numbers sessions per worker: the index is the id's top 16 bits). Real TCP sockets; every
//! read bounded by `common::TIMEOUT`.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::mpsc;
use std::time::Duration;

use common::{shutdown, Got, Stomp};
use sockeye::server::ServerConfig;
use sockeye_chat::broker::ConnectRequest;
use sockeye_chat::server::{NoApplication, StompConfig, StompServer};

const WORKERS: usize = 4;

fn start() -> StompServer {
    start_with(|_| {})
}

fn start_with(tune: impl FnOnce(&mut StompConfig)) -> StompServer {
    start_tuned(|_| {}, tune)
}

fn start_tuned(
    engine: impl FnOnce(&mut ServerConfig),
    tune: impl FnOnce(&mut StompConfig),
) -> StompServer {
    let mut config = ServerConfig {
        workers: WORKERS,
        shutdown_timeout: Duration::from_secs(2),
        ..ServerConfig::default()
    };
    engine(&mut config);
    let mut stomp = StompConfig::default();
    // The login is the user (no passcode): users' destinations need users.
    stomp.broker.authenticator = Some(std::sync::Arc::new(|req: &ConnectRequest<'_>| {
        Ok(req.login.map(str::to_owned))
    }));
    tune(&mut stomp);
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    StompServer::start(any, Some(any), config, stomp, Box::new(NoApplication))
        .expect("server starts")
}

/// A connected client and the worker its session is on.
fn connect(server: &StompServer, name: &str, login: Option<&str>) -> (Stomp, usize) {
    let mut c = Stomp::open(server.tcp_addr().expect("tcp"), name);
    let login = login.map(|l| format!("login:{l}\n")).unwrap_or_default();
    c.send(&format!("CONNECT\naccept-version:1.2\nhost:x\n{login}\n"));
    let f = c.expect("CONNECTED", "CONNECTED");
    let id: u64 = f
        .header("session")
        .and_then(|s| s.strip_prefix('s'))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{name}: a session header: {f:?}"));
    (c, (id >> 48) as usize)
}

/// `n` clients, connecting more (up to 64 tries) until they sit on at least two workers;
/// their workers, for the record.
fn spread(server: &StompServer, what: &str, n: usize, login: Option<&str>) -> Vec<(Stomp, usize)> {
    let mut clients: Vec<(Stomp, usize)> = Vec::new();
    for i in 0..64 {
        let c = connect(server, &format!("{what}{i}"), login);
        let workers: BTreeSet<usize> = clients.iter().map(|(_, w)| *w).collect();
        // Keep it if it is needed for the count, or brings a worker not seen yet.
        if clients.len() < n.saturating_sub(1) || !workers.contains(&c.1) || workers.len() > 1 {
            clients.push(c);
        }
        let workers: BTreeSet<usize> = clients.iter().map(|(_, w)| *w).collect();
        if clients.len() >= n && workers.len() > 1 {
            clients.truncate(n);
            let kept: BTreeSet<usize> = clients.iter().map(|(_, w)| *w).collect();
            if kept.len() > 1 {
                eprintln!(
                    "{what}: workers {:?}",
                    clients.iter().map(|c| c.1).collect::<Vec<_>>()
                );
                return clients;
            }
        }
    }
    panic!("{what}: 64 connections all landed on one worker of {WORKERS}")
}

fn header_n(f: &Got) -> (String, usize) {
    (
        f.header("x-from").unwrap_or("?").to_owned(),
        f.header("x-n").and_then(|n| n.parse().ok()).expect("x-n"),
    )
}

#[test]
fn topic_messages_reach_subscribers_on_every_worker_once_and_in_order() {
    let server = start();
    let mut subs = spread(&server, "sub", 10, None);
    for (i, (c, _)) in subs.iter_mut().enumerate() {
        // Exact names and patterns alike; one session with both (it must get both copies).
        let destination = if i % 3 == 0 {
            "/topic/w.*"
        } else {
            "/topic/w.x"
        };
        c.subscribe("a", destination);
        if i == 1 {
            c.subscribe("b", "/topic/w.*");
        }
    }
    let publishers = spread(&server, "pub", 2, None);
    let mut threads = Vec::new();
    for (p, (mut c, _)) in publishers.into_iter().enumerate() {
        threads.push(std::thread::spawn(move || {
            for n in 0..100 {
                let receipt = if n == 99 { "receipt:last\n" } else { "" };
                c.send(&format!(
                    "SEND\ndestination:/topic/w.x\nx-from:p{p}\nx-n:{n}\n{receipt}\n"
                ));
            }
            c.expect("RECEIPT", "the receipt of the last SEND");
        }));
    }
    for t in threads {
        t.join().expect("publisher");
    }
    for (i, (c, worker)) in subs.iter_mut().enumerate() {
        let copies = if i == 1 { 2 } else { 1 };
        let mut next: HashMap<(String, String), usize> = HashMap::new();
        for _ in 0..200 * copies {
            let f = c.expect(
                "MESSAGE",
                &format!("messages at subscriber {i} (worker {worker})"),
            );
            let (from, n) = header_n(&f);
            let sub = f.header("subscription").unwrap_or("?").to_owned();
            let expected = next.entry((from.clone(), sub.clone())).or_insert(0);
            assert_eq!(
                n, *expected,
                "subscriber {i}: {from}'s messages in order on {sub}"
            );
            *expected += 1;
            assert_eq!(f.header("destination"), Some("/topic/w.x"));
        }
        c.quiet(
            Duration::from_millis(100),
            "nothing more than each message once",
        );
    }
    // A publisher subscribed to what it sends gets its MESSAGE before the RECEIPT.
    let (mut me, _) = connect(&server, "self", None);
    me.subscribe("mine", "/topic/self");
    for n in 0..20 {
        me.send(&format!(
            "SEND\ndestination:/topic/self\nx-n:{n}\nreceipt:r{n}\n\n"
        ));
    }
    for n in 0..20 {
        let m = me.expect("MESSAGE", "its own message, before the RECEIPT");
        assert_eq!(header_n(&m).1, n);
        let r = me.expect("RECEIPT", "the RECEIPT, after its own message");
        assert_eq!(r.header("receipt-id"), Some(format!("r{n}").as_str()));
    }
    // UNSUBSCRIBE stops delivery on that worker; the others still get it.
    subs[2].0.send("UNSUBSCRIBE\nid:a\nreceipt:u\n\n");
    subs[2].0.expect("RECEIPT", "the receipt of UNSUBSCRIBE");
    let (mut p, _) = connect(&server, "late", None);
    p.send("SEND\ndestination:/topic/w.x\nx-n:0\nreceipt:r\n\n");
    p.expect("RECEIPT", "the receipt of the SEND");
    subs[3]
        .0
        .expect("MESSAGE", "a message after another session unsubscribed");
    subs[2].0.quiet(Duration::from_millis(200), "unsubscribed");
    assert_eq!(
        server.hub().subscription_count(),
        11,
        "9 on w.x or w.*, one extra, and the self-publisher's"
    );
    drop(subs);
    drop(me);
    common::eventually(
        Duration::from_secs(5),
        "subscriptions gone with their sessions",
        || server.hub().subscription_count() == 0,
    );
    shutdown(server);
}

#[test]
fn queues_users_acks_and_transactions_hold_across_workers() {
    let server = start();
    // Round-robin over subscribers on several workers.
    let mut queue = spread(&server, "q", 4, None);
    for (c, _) in queue.iter_mut() {
        c.subscribe("q", "/queue/jobs");
    }
    let (mut p, _) = connect(&server, "producer", None);
    for n in 0..40 {
        p.send(&format!("SEND\ndestination:/queue/jobs\nx-n:{n}\n\n"));
    }
    p.send("SEND\ndestination:/queue/none\nreceipt:sent\n\n");
    p.expect("RECEIPT", "the receipt after 40 queue SENDs");
    let mut seen = BTreeSet::new();
    for (i, (c, _)) in queue.iter_mut().enumerate() {
        for _ in 0..10 {
            let f = c.expect("MESSAGE", &format!("a queue message at consumer {i}"));
            assert!(seen.insert(header_n(&f).1), "each message to one consumer");
        }
        c.quiet(Duration::from_millis(100), "ten each, round-robin");
    }
    assert_eq!(seen.len(), 40);

    // A NACK redelivers to the other subscriber, wherever it is.
    let mut acking = spread(&server, "ack", 2, None);
    for (c, _) in acking.iter_mut() {
        c.send("SUBSCRIBE\nid:n\ndestination:/queue/nack\nack:client-individual\nreceipt:s\n\n");
        c.expect(
            "RECEIPT",
            "the receipt of SUBSCRIBE with client-individual acks",
        );
    }
    p.send("SEND\ndestination:/queue/nack\nx-n:1\n\n");
    let (nacker, first) = match acking[0]
        .0
        .frame_within("the queue message", Duration::from_secs(2))
    {
        Some(f) => (0, f),
        None => (1, acking[1].0.expect("MESSAGE", "the queue message")),
    };
    let ack = first.header("ack").expect("an ack header").to_owned();
    // The one that got it NACKs it; the other gets it again.
    acking[nacker].0.send(&format!("NACK\nid:{ack}\n\n"));
    let redelivered = acking[1 - nacker]
        .0
        .expect("MESSAGE", "the redelivered message");
    assert_eq!(redelivered.header("redelivered"), Some("true"));

    // A user's sessions on several workers all get what is sent to the user.
    let mut user = spread(&server, "u", 2, Some("ursula"));
    for (c, _) in user.iter_mut() {
        c.subscribe("inbox", "/user/queue/inbox");
    }
    p.send("SEND\ndestination:/user/ursula/queue/inbox\nx-n:7\n\n");
    for (c, w) in user.iter_mut() {
        let f = c.expect("MESSAGE", &format!("the user's message on worker {w}"));
        assert_eq!(f.header("destination"), Some("/user/queue/inbox"));
    }

    // Topic SENDs in a transaction reach every worker at COMMIT, not before, in order.
    let mut tx_subs = spread(&server, "t", 4, None);
    for (c, _) in tx_subs.iter_mut() {
        c.subscribe("t", "/topic/tx");
    }
    p.send("BEGIN\ntransaction:t1\n\n");
    for n in 0..3 {
        p.send(&format!(
            "SEND\ndestination:/topic/tx\ntransaction:t1\nx-n:{n}\n\n"
        ));
    }
    p.send("SEND\ndestination:/topic/other\nreceipt:before\n\n");
    p.expect("RECEIPT", "a receipt while the transaction is open");
    for (c, _) in tx_subs.iter_mut() {
        c.quiet(Duration::from_millis(150), "nothing before COMMIT");
    }
    p.send("COMMIT\ntransaction:t1\nreceipt:c\n\n");
    p.expect("RECEIPT", "the receipt of COMMIT");
    for (c, w) in tx_subs.iter_mut() {
        let got: Vec<usize> = (0..3)
            .map(|_| header_n(&c.expect("MESSAGE", &format!("committed messages on worker {w}"))).1)
            .collect();
        assert_eq!(got, [0, 1, 2]);
    }

    // One id space per session across both tables.
    let (mut d, _) = connect(&server, "dup", None);
    d.subscribe("same", "/topic/a");
    d.send("SUBSCRIBE\nid:same\ndestination:/queue/b\n\n");
    let e = d.expect("ERROR", "a duplicate subscription id refused");
    assert!(
        e.header("message").unwrap_or("").contains("duplicate"),
        "{e:?}"
    );
    shutdown(server);
}

#[test]
fn one_id_space_and_one_limit_over_topic_and_queue_subscriptions() {
    let server = start_with(|s| s.broker.max_subscriptions = 3);
    // A queue subscription's id, then a topic subscription with the same id: refused (the
    // topic path asks the broker only because the session holds a queue subscription).
    let (mut a, _) = connect(&server, "a", None);
    a.subscribe("x", "/queue/q");
    a.send("SUBSCRIBE\nid:x\ndestination:/topic/t\n\n");
    let e = a.expect(
        "ERROR",
        "a topic subscription reusing a queue subscription's id",
    );
    assert!(
        e.header("message")
            .unwrap_or("")
            .contains("duplicate subscription id x"),
        "{e:?}"
    );
    // The limit counts both kinds.
    let (mut b, _) = connect(&server, "b", None);
    b.subscribe("1", "/queue/q");
    b.subscribe("2", "/topic/t");
    b.subscribe("3", "/topic/*");
    b.send("SUBSCRIBE\nid:4\ndestination:/topic/u\n\n");
    let e = b.expect("ERROR", "a fourth subscription over the limit of 3");
    assert!(
        e.header("message")
            .unwrap_or("")
            .contains("more than 3 subscriptions"),
        "{e:?}"
    );
    // After an UNSUBSCRIBE there is room again, for either kind.
    let (mut c, _) = connect(&server, "c", None);
    c.subscribe("1", "/queue/q");
    c.subscribe("2", "/topic/t");
    c.subscribe("3", "/topic/u");
    c.send("UNSUBSCRIBE\nid:1\nreceipt:u1\n\n");
    c.expect("RECEIPT", "the receipt of the queue UNSUBSCRIBE");
    c.subscribe("4", "/topic/v");
    c.send("UNSUBSCRIBE\nid:2\nreceipt:u2\n\n");
    c.expect("RECEIPT", "the receipt of the topic UNSUBSCRIBE");
    c.subscribe("5", "/queue/r");
    c.send("UNSUBSCRIBE\nid:nope\n\n");
    let e = c.expect("ERROR", "an UNSUBSCRIBE of no subscription");
    assert!(
        e.header("message")
            .unwrap_or("")
            .contains("no subscription with id nope"),
        "{e:?}"
    );
    shutdown(server);
}

/// A queue pattern subscription holds a part in every queue shard: a limit of its own
/// (`max_queue_patterns`), on the server's path without the broker lock.
#[test]
fn queue_pattern_subscriptions_have_a_limit_of_their_own() {
    let server = start_with(|s| s.broker.max_queue_patterns = 2);
    let (mut a, _) = connect(&server, "a", None);
    a.subscribe("1", "/queue/jobs.*");
    a.subscribe("2", "/queue/mail.**");
    a.send("SUBSCRIBE\nid:3\ndestination:/queue/more.*\n\n");
    let e = a.expect(
        "ERROR",
        "a third queue pattern subscription over the limit of 2",
    );
    assert!(
        e.header("message")
            .unwrap_or("")
            .contains("more than 2 queue pattern subscriptions"),
        "{e:?}"
    );
    // Queues by name, topic patterns and users' queue patterns are not counted.
    let (mut b, _) = connect(&server, "b", None);
    b.subscribe("1", "/queue/jobs.*");
    b.subscribe("2", "/queue/mail.*");
    b.subscribe("3", "/queue/jobs.one");
    b.subscribe("4", "/topic/news.*");
    b.subscribe("5", "/user/queue/*");
    // After an UNSUBSCRIBE of a pattern there is room for another.
    b.send("UNSUBSCRIBE\nid:1\nreceipt:u1\n\n");
    b.expect("RECEIPT", "the receipt of the pattern UNSUBSCRIBE");
    b.subscribe("6", "/queue/other.*");
    // And the patterns still deliver.
    let (mut p, _) = connect(&server, "p", None);
    p.send("SEND\ndestination:/queue/other.x\n\nhello");
    let m = b.expect("MESSAGE", "a message to /queue/other.x through the pattern");
    assert_eq!(m.body, b"hello");
    shutdown(server);
}

/// What a subscriber read of a flood: how many messages, in order, and whether it was then
/// told it fell behind.
fn read_flood(mut c: Stomp, n: usize) -> (usize, bool) {
    let mut got = 0;
    while got < n {
        let Some(f) = c.frame_within("the flood", common::TIMEOUT) else {
            panic!(
                "{}: stalled after {got} of {n} messages, with no word why",
                c.name
            );
        };
        match f.command.as_str() {
            "MESSAGE" => {
                assert_eq!(header_n(&f).1, got, "{}: in order, none missing", c.name);
                got += 1;
            }
            "ERROR" => {
                let message = f.header("message").unwrap_or("");
                assert!(message.contains("slow consumer"), "{}: {f:?}", c.name);
                return (got, true);
            }
            other => panic!("{}: unexpected {other}", c.name),
        }
    }
    (got, false)
}

#[test]
fn a_flood_from_the_application_reaches_every_subscriber_or_tells_it_what_it_missed() {
    // Small inboxes: the application's thread (which no gate can pause) outruns the workers,
    // and a publish a worker's inbox refuses must not vanish: its subscribers there are told.
    let server = start_tuned(|c| c.max_inbox_bytes = 16 << 10, |_| {});
    let subs = spread(&server, "f", 4, None);
    let n = 4000;
    let readers: Vec<_> = subs
        .into_iter()
        .map(|(mut c, w)| {
            c.subscribe("f", "/topic/flood");
            std::thread::spawn(move || (w, read_flood(c, n)))
        })
        .collect();
    let messaging = server.hub().messaging();
    let body = vec![b'x'; 1024];
    for i in 0..n {
        let headers = vec![("x-n".to_owned(), i.to_string())];
        messaging.publish("/topic/flood", headers, body.clone());
    }
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let results: Vec<_> = readers.into_iter().map(|r| r.join()).collect();
        let _ = tx.send(results);
    });
    let results = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("every subscriber read the flood or was told, within 60 s");
    for r in results {
        let (worker, (got, told)) = r.expect("a subscriber's reader");
        eprintln!("worker {worker}: {got} of {n} messages, told it missed the rest: {told}");
        assert!(
            got == n || told,
            "worker {worker}: {got} of {n} and no word"
        );
    }
    shutdown(server);
}

/// Queue SENDs, ACKs and NACKs from sessions on several workers at once (they take only
/// their queue's shard lock, not the broker's): producers on three threads send to three
/// queues; consumers (exact names and a pattern, all `client-individual`) ACK what they get
/// and NACK every seventh message once. Every message is acknowledged exactly once, and a
/// consumer sees each producer's messages on one queue in the order they were sent (except
/// redeliveries).
#[test]
fn concurrent_queue_sends_and_acks_on_several_workers_consume_every_message_once() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;
    use std::time::Instant;

    const PRODUCERS: usize = 3;
    const EACH: usize = 300;
    const QUEUES: [&str; 3] = ["/queue/work.a", "/queue/work.b", "/queue/work.c"];
    let total = PRODUCERS * EACH;
    let server = start();
    let mut consumers = spread(&server, "c", 4, None);
    for (i, (c, _)) in consumers.iter_mut().enumerate() {
        let destination = match i {
            0 => "/queue/work.*",
            i => QUEUES[i - 1],
        };
        c.send(&format!(
            "SUBSCRIBE\nid:w\ndestination:{destination}\nack:client-individual\nreceipt:s\n\n"
        ));
        c.expect("RECEIPT", "the receipt of a queue SUBSCRIBE");
    }
    let producers = spread(&server, "p", PRODUCERS, None);
    let acked = AtomicUsize::new(0);
    let seen: Mutex<HashMap<String, usize>> = Mutex::default();
    let deadline = Instant::now() + Duration::from_secs(60);
    std::thread::scope(|scope| {
        for (p, (mut c, _)) in producers.into_iter().enumerate() {
            scope.spawn(move || {
                for n in 0..EACH {
                    let queue = QUEUES[n % QUEUES.len()];
                    c.send(&format!(
                        "SEND\ndestination:{queue}\nx-from:p{p}\nx-n:{n}\n\np{p}-{n}"
                    ));
                }
                c.send("SEND\ndestination:/queue/none\nreceipt:last\n\n");
                c.expect("RECEIPT", "the receipt after the producer's SENDs");
            });
        }
        for (i, (mut c, w)) in consumers.into_iter().enumerate() {
            let (acked, seen) = (&acked, &seen);
            scope.spawn(move || {
                // Per (producer, queue): the last x-n acknowledged first-hand.
                let mut last: HashMap<(String, String), usize> = HashMap::new();
                while acked.load(Ordering::SeqCst) < total {
                    assert!(
                        Instant::now() < deadline,
                        "consumer {i} (worker {w}): {} of {total} acknowledged within 60 s",
                        acked.load(Ordering::SeqCst)
                    );
                    let Some(f) = c.frame_within("a queue message", Duration::from_millis(200))
                    else {
                        continue;
                    };
                    assert_eq!(f.command, "MESSAGE", "consumer {i}: {f:?}");
                    let ack = f.header("ack").expect("an ack header").to_owned();
                    let (from, n) = header_n(&f);
                    let queue = f.header("destination").unwrap_or("?").to_owned();
                    let redelivered = f.header("redelivered") == Some("true");
                    if !redelivered {
                        if let Some(before) = last.insert((from.clone(), queue.clone()), n) {
                            assert!(
                                before < n,
                                "consumer {i}: {from} on {queue}: {n} after {before}"
                            );
                        }
                        if n % 7 == 0 {
                            c.send(&format!("NACK\nid:{ack}\n\n"));
                            continue;
                        }
                    }
                    c.send(&format!("ACK\nid:{ack}\n\n"));
                    *seen.lock().unwrap().entry(f.text()).or_default() += 1;
                    acked.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
    });
    let seen = seen.into_inner().unwrap();
    assert_eq!(seen.len(), total, "every message acknowledged");
    let twice: Vec<_> = seen.iter().filter(|(_, &n)| n > 1).collect();
    assert!(twice.is_empty(), "acknowledged more than once: {twice:?}");
    shutdown(server);
}

/// Transactions are kept by the session's own link (no broker lock): a queue SEND and a
/// topic SEND in one take effect at COMMIT only, an ACK in an aborted one does not count (the
/// message goes to another subscriber when its holder leaves), one in a committed one does;
/// and each limit or unknown name gets the broker's ERROR and a close.
#[test]
fn transactions_hold_queue_sends_and_acks_until_commit_and_refuse_what_they_must() {
    let server = start_with(|s| {
        s.broker.max_transactions = 2;
        s.broker.max_transaction_frames = 3;
    });
    let (mut first, _) = connect(&server, "first", None);
    first.send("SUBSCRIBE\nid:q\ndestination:/queue/tx\nack:client-individual\nreceipt:s\n\n");
    first.expect("RECEIPT", "the receipt of the queue SUBSCRIBE");
    let (mut watcher, _) = connect(&server, "watcher", None);
    watcher.subscribe("t", "/topic/tx");
    let (mut p, _) = connect(&server, "producer", None);
    p.send("BEGIN\ntransaction:a\n\n");
    p.send("SEND\ndestination:/queue/tx\ntransaction:a\nx-n:1\n\n");
    p.send("SEND\ndestination:/topic/tx\ntransaction:a\nx-n:2\n\n");
    p.send("SEND\ndestination:/queue/tx\nreceipt:outside\nx-n:0\n\n");
    p.expect("RECEIPT", "the receipt of a SEND outside the transaction");
    let m0 = first.expect("MESSAGE", "the message sent outside the transaction");
    assert_eq!(header_n(&m0).1, 0);
    first.quiet(
        Duration::from_millis(150),
        "nothing of transaction a before COMMIT",
    );
    watcher.quiet(
        Duration::from_millis(50),
        "nothing of transaction a before COMMIT",
    );
    p.send("COMMIT\ntransaction:a\nreceipt:c\n\n");
    p.expect("RECEIPT", "the receipt of COMMIT");
    let m1 = first.expect("MESSAGE", "the committed queue message");
    assert_eq!(header_n(&m1).1, 1);
    assert_eq!(
        header_n(&watcher.expect("MESSAGE", "the committed topic message")).1,
        2
    );

    // m0 acknowledged in a committed transaction, m1 in an aborted one.
    let (ack0, ack1) = (m0.header("ack").unwrap(), m1.header("ack").unwrap());
    first.send("BEGIN\ntransaction:k\n\n");
    first.send(&format!("ACK\nid:{ack0}\ntransaction:k\n\n"));
    first.send("COMMIT\ntransaction:k\n\n");
    first.send("BEGIN\ntransaction:x\n\n");
    first.send(&format!("ACK\nid:{ack1}\ntransaction:x\n\n"));
    first.send("ABORT\ntransaction:x\nreceipt:x\n\n");
    first.expect("RECEIPT", "the receipt of ABORT");
    first.send("DISCONNECT\nreceipt:bye\n\n");
    first.expect("RECEIPT", "the receipt of DISCONNECT");
    let (mut second, _) = connect(&server, "second", None);
    // Held messages come at once (before a receipt would).
    second.send("SUBSCRIBE\nid:q\ndestination:/queue/tx\n\n");
    let again = second.expect(
        "MESSAGE",
        "m1, whose ACK was aborted, given to the next subscriber",
    );
    assert_eq!(
        (header_n(&again).1, again.header("redelivered")),
        (1, Some("true"))
    );
    second.quiet(
        Duration::from_millis(150),
        "m0, acknowledged in a committed transaction, is gone",
    );

    let (begin_a, begin_b) = ("BEGIN\ntransaction:a\n\n", "BEGIN\ntransaction:b\n\n");
    let in_a = "SEND\ndestination:/topic/tx\ntransaction:a\n\n";
    let cases: [(&[&str], &str); 7] = [
        (
            &["COMMIT\ntransaction:nope\n\n"],
            "unknown transaction nope",
        ),
        (&["BEGIN\n\n"], "BEGIN without transaction"),
        (&[begin_a, begin_a], "transaction a already started"),
        (
            &[begin_a, begin_b, "BEGIN\ntransaction:c\n\n"],
            "more than 2 open transactions",
        ),
        (
            &[
                begin_a,
                in_a,
                in_a,
                "ACK\nid:m1\ntransaction:a\n\n",
                "NACK\nid:m2\ntransaction:a\n\n",
            ],
            "transaction a has more than 3 frames",
        ),
        (
            &["SEND\ndestination:/queue/tx\ntransaction:none\n\n"],
            "unknown transaction none",
        ),
        (
            &["ACK\nid:m1\ntransaction:none\n\n"],
            "unknown transaction none",
        ),
    ];
    for (frames, message) in cases {
        let (mut c, _) = connect(&server, "offender", None);
        for frame in frames {
            c.send(frame);
        }
        let e = c.expect("ERROR", message);
        assert_eq!(e.header("message"), Some(message), "{frames:?}");
        c.closed(message);
    }
    watcher.quiet(
        Duration::from_millis(100),
        "nothing from the refused transactions",
    );
    shutdown(server);
}
