use super::*;

#[test]
fn fields_lists_every_field_in_serialization_order() {
    let mut r = Auditor::discard().record(Event::Decision);
    r.seq = Some(0);
    r.prev = Some(String::new());
    for f in [
        &mut r.capability,
        &mut r.action,
        &mut r.resource,
        &mut r.decision,
        &mut r.rule,
        &mut r.reason,
        &mut r.address,
        &mut r.outcome,
        &mut r.level,
        &mut r.message,
        &mut r.head,
        &mut r.signature,
        &mut r.key,
        &mut r.hash,
    ] {
        *f = Some(String::new());
    }
    r.signer = Some(Arc::from(""));
    r.agent = Some(Arc::from(""));
    r.policies = Some(vec![]);
    r.status = Some(0);
    for f in [
        &mut r.bytes_out,
        &mut r.bytes_in,
        &mut r.duration_us,
        &mut r.count,
    ] {
        *f = Some(0);
    }
    let json = serde_json::to_string(&r).unwrap();
    let mut at = 0;
    for f in FIELDS {
        let key = format!("\"{f}\":");
        let found = json[at..].find(&key).map(|i| i + at);
        assert!(found.is_some(), "{f} missing or out of order in {json}");
        at = found.unwrap_or_default() + key.len();
    }
    let map: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&json).unwrap();
    assert_eq!(map.len(), FIELDS.len());
}

#[test]
fn an_unknown_field_is_refused() {
    let line = r#"{"v":1,"ts":"t","event":"log","invocation":"i","task":"t","tool":"x","identity":"sha256:0","approved_by":"me"}"#;
    let e = serde_json::from_str::<Record>(line).unwrap_err();
    assert!(e.to_string().contains("unknown field `approved_by`"), "{e}");
}

/// A sink whose first `append_all` fails, then keeps what it is given.
#[derive(Default)]
struct FailsOnce {
    failed: std::sync::atomic::AtomicBool,
    records: Mutex<Vec<Record>>,
}

impl AuditSink for FailsOnce {
    fn append(&self, record: &Record) -> Result<(), AuditError> {
        self.append_all(std::slice::from_ref(record))
    }

    fn append_all(&self, records: &[Record]) -> Result<(), AuditError> {
        if !self.failed.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return Err(AuditError::Io {
                path: "trail".into(),
                source: std::io::Error::other("disk full"),
            });
        }
        self.records.lock().unwrap().extend_from_slice(records);
        Ok(())
    }
}

#[test]
fn a_held_start_not_written_is_still_owed_and_redacted() {
    let sink = Arc::new(FailsOnce::default());
    let mut a = Auditor::new(sink.clone(), "inv", "task", "tool", "sha256:0");
    a.set_redactor(Arc::new(crate::redact::Redactor::new([(
        "api",
        "s3cret-value",
    )])));
    let mut start = a.record(Event::InvocationStart);
    start.message = Some("start s3cret-value".into());
    a.hold(start);
    let mut first = a.record(Event::Decision);
    first.reason = Some("first".into());
    assert!(a.write(&first).is_err());
    let mut second = a.record(Event::Decision);
    second.reason = Some("second s3cret-value".into());
    a.write(&second).unwrap();
    let got = sink.records.lock().unwrap();
    let got: Vec<_> = got
        .iter()
        .map(|r| (r.event, r.message.clone(), r.reason.clone()))
        .collect();
    assert_eq!(
        got,
        [
            (
                Event::InvocationStart,
                Some("start [REDACTED:api]".into()),
                None
            ),
            (Event::Decision, None, Some("second [REDACTED:api]".into())),
        ]
    );
}

#[test]
fn nothing_follows_an_invocations_end_from_any_of_its_auditors() {
    for held in [true, false] {
        let sink = MemorySink::new();
        let mut a = Auditor::new(sink.clone(), "inv", "task", "tool", "sha256:0");
        if held {
            a.hold(a.record(Event::InvocationStart));
        } else {
            a.write(&a.record(Event::InvocationStart)).unwrap();
        }
        // The store's gate and a request task hold clones.
        let task = a.clone();
        assert!(!task.ended());
        a.write_end(a.record(Event::InvocationEnd)).unwrap();
        assert!(task.ended());
        let late = task.decision(
            "http",
            "GET",
            "http://x/",
            &crate::Decision::allow("r", "ok".into()),
        );
        assert!(matches!(task.write(&late), Err(AuditError::Ended)));
        assert!(matches!(
            task.write_end(task.record(Event::InvocationEnd)),
            Err(AuditError::Ended)
        ));
        let events: Vec<Event> = sink.records().iter().map(|r| r.event).collect();
        assert_eq!(
            events,
            [Event::InvocationStart, Event::InvocationEnd],
            "held: {held}"
        );
    }
}

/// Each operation allowed owes one outcome: the one its spender writes, or
/// `stopped` written by the end, right before it, for those still open, in
/// the order they were allowed; after the end, neither an outcome nor a
/// new operation is written.
#[test]
fn an_open_operation_gets_exactly_one_outcome_before_the_end() {
    let sink = MemorySink::new();
    let auditor = Auditor::new(sink.clone(), "inv", "task", "tool", "sha256:x");
    let op = |resource: &str| Open {
        capability: "http",
        action: "GET".into(),
        resource: resource.into(),
    };
    let allow = |resource: &str| {
        let mut r = auditor.record(Event::Decision);
        r.resource = Some(resource.into());
        r
    };
    // "c" is never spent: the end records it stopped.
    let [a, b, _, d] = ["a", "b", "c", "d"].map(|n| {
        auditor
            .write_open(&allow(n), op(n))
            .expect("written, noted open")
    });
    auditor
        .settle(b, |o| {
            let mut r = auditor.record(Event::Egress);
            r.resource = Some(o.resource);
            r
        })
        .unwrap();
    auditor.close(d);
    auditor
        .write_end(auditor.record(Event::InvocationEnd))
        .unwrap();
    // Spent after the end: refused, nothing written; and nothing new.
    let late = auditor.settle(a, |o| auditor.stopped(o));
    assert!(matches!(late, Err(AuditError::Ended)), "{late:?}");
    assert!(matches!(
        auditor.write_open(&allow("e"), op("e")),
        Err(AuditError::Ended)
    ));
    let shown: Vec<_> = sink
        .records()
        .iter()
        .map(|r| {
            let event = serde_json::to_value(r.event).unwrap();
            let what = r.outcome.as_deref().or(event.as_str()).unwrap();
            format!("{what} {}", r.resource.as_deref().unwrap_or(""))
        })
        .collect();
    assert_eq!(
        shown,
        [
            "decision a",
            "decision b",
            "decision c",
            "decision d",
            "egress b",
            "stopped a",
            "stopped c",
            "invocation.end ",
        ]
    );
}

/// The default sink logs each record as JSON, which escapes only controls:
/// a tool's log message with a right-to-left override or tag characters
/// reached an embedder's terminal as it was written.
#[test]
fn the_tracing_sink_logs_a_record_escaped_for_a_terminal() {
    let mut r = Auditor::discard().record(Event::Log);
    r.message = Some("invoice\u{202e}txt.exe \u{e0041}\u{200b}".into());
    let logged = crate::logged(tracing::Level::INFO, || TracingSink.append(&r).unwrap());
    assert!(
        logged.contains(r"invoice\u202etxt.exe \udb40\udc41\u200b"),
        "{logged}"
    );
    assert!(
        !logged.contains(['\u{202e}', '\u{e0041}', '\u{200b}']),
        "{logged}"
    );
    // Still the record's JSON.
    let json = &logged[logged.find('{').unwrap()..].trim_end();
    let back: serde_json::Value = serde_json::from_str(json).unwrap();
    assert_eq!(back["message"], "invoice\u{202e}txt.exe \u{e0041}\u{200b}");
}
