//! OpenTelemetry, off unless asked for (`--otlp URL`): each invocation a
//! span, its host calls and decisions events on it (the decision, rule and
//! reason as their attributes), and every audit record a log record, sent
//! over OTLP/HTTP.
//!
//! Built from the audit records, after the trail has taken them: what an
//! operator's collector receives is what the trail holds, redacted by the
//! same redactor, and nothing is exported that the trail refused. The
//! exporters run on the SDK's own threads (batched); an unreachable
//! collector loses telemetry, never a call.

use crate::audit::{AuditError, AuditSink, Event, Record};
use opentelemetry::logs::{AnyValue, LogRecord as _, Logger as _, LoggerProvider as _, Severity};
use opentelemetry::trace::{
    SpanKind, Status, TraceContextExt as _, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::logs::{SdkLogger, SdkLoggerProvider};
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// Where and how to send telemetry.
#[derive(Debug, Clone)]
pub struct OtlpOptions {
    /// The collector's base URL (`http://HOST:4318`); traces go to
    /// `/v1/traces` under it, logs to `/v1/logs`.
    pub endpoint: String,
    /// `http/protobuf` (the OTLP default) or `http/json`.
    pub json: bool,
    /// `service.instance.id`: this replica.
    pub instance: Option<String>,
}

/// Why telemetry cannot be set up.
#[derive(Debug, thiserror::Error)]
#[error("--otlp: {why}")]
pub struct TelemetryError {
    why: String,
}

/// Invocations whose end has not come; past this the oldest is ended (as
/// an error: its end record never came).
const MAX_OPEN: usize = 4096;
/// How long a flush at shutdown may take (traces and logs at once).
const FLUSH: Duration = Duration::from_secs(5);
/// How long one export request may take.
const EXPORT_TIME: Duration = Duration::from_secs(5);
/// Events a span keeps: a tool's host calls each add one (its log lines
/// are log records only, so they cannot crowd its decisions out). Every
/// record is a log record too, so none is lost past them.
const MAX_EVENTS: u32 = 128;
/// The bytes of a text attribute (a resource, a reason, a message) sent:
/// the SDK bounds none, and the export queue counts spans, not bytes.
const MAX_ATTRIBUTE: usize = 512;
/// Spans waiting to be exported. With the two bounds above, the spans
/// held at once are about 128 MiB at the most, whatever tools do and
/// however slow the collector is.
const MAX_QUEUED_SPANS: usize = 256;
/// Spans sent in one request: a few MiB at the most, within what
/// collectors take in one body (one refused drops only its own).
const MAX_EXPORT_BATCH: usize = 32;

/// An audit sink that also sends what it writes as OpenTelemetry.
pub struct OtlpSink {
    inner: Arc<dyn AuditSink>,
    tracers: SdkTracerProvider,
    loggers: SdkLoggerProvider,
    tracer: SdkTracer,
    logger: SdkLogger,
    /// Each running invocation's span, by invocation id: UUIDv7, so the
    /// first key is the oldest invocation.
    open: Mutex<BTreeMap<Arc<str>, Context>>,
}

/// The base URL checked: http or https, a host, nothing after the path.
fn base(endpoint: &str) -> Result<String, String> {
    let u = url::Url::parse(endpoint).map_err(|e| format!("not a URL ({e})"))?;
    if !matches!(u.scheme(), "http" | "https") || u.host_str().is_none() {
        return Err(
            "expected http://HOST:PORT or https://HOST:PORT (a collector's OTLP/HTTP endpoint)"
                .into(),
        );
    }
    if u.query().is_some()
        || u.fragment().is_some()
        || !u.username().is_empty()
        || u.password().is_some()
    {
        return Err("expected no credentials, query or fragment in the URL (headers go in OTEL_EXPORTER_OTLP_HEADERS)".into());
    }
    Ok(u.as_str().trim_end_matches('/').to_owned())
}

impl OtlpSink {
    /// Wraps `inner`; builds the exporters (they connect when they first
    /// send).
    pub fn new(
        inner: Arc<dyn AuditSink>,
        options: &OtlpOptions,
    ) -> Result<OtlpSink, TelemetryError> {
        // The URL is not repeated: it may hold credentials.
        let fail = |why: String| TelemetryError { why };
        let base = base(&options.endpoint).map_err(fail)?;
        let protocol = if options.json {
            Protocol::HttpJson
        } else {
            Protocol::HttpBinary
        };
        let mut resource = Resource::builder()
            .with_service_name("warden")
            .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")));
        if let Some(i) = &options.instance {
            resource = resource.with_attribute(KeyValue::new("service.instance.id", i.clone()));
        }
        let resource = resource.build();
        // The blocking HTTP client must not be made on an async runtime's
        // thread: the exporters are built on a thread of their own.
        let (traces, logs) = (format!("{base}/v1/traces"), format!("{base}/v1/logs"));
        let built = std::thread::spawn(move || {
            // No redirects (the collector must not send the telemetry and
            // its headers elsewhere) and no proxy from the environment.
            let client = reqwest013::blocking::Client::builder()
                .redirect(reqwest013::redirect::Policy::none())
                .no_proxy()
                .timeout(EXPORT_TIME)
                .build()
                .map_err(|e| e.to_string())?;
            let spans = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_http_client(client.clone())
                .with_protocol(protocol)
                .with_endpoint(traces)
                .build()
                .map_err(|e| e.to_string())?;
            let logs = opentelemetry_otlp::LogExporter::builder()
                .with_http()
                .with_http_client(client)
                .with_protocol(protocol)
                .with_endpoint(logs)
                .build()
                .map_err(|e| e.to_string())?;
            Ok::<_, String>((spans, logs))
        })
        .join()
        .map_err(|_| fail("the exporters could not be built".into()))?;
        let (spans, logs) = built.map_err(fail)?;
        let queue = opentelemetry_sdk::trace::BatchConfigBuilder::default()
            .with_max_queue_size(MAX_QUEUED_SPANS)
            .with_max_export_batch_size(MAX_EXPORT_BATCH)
            .build();
        let spans = opentelemetry_sdk::trace::BatchSpanProcessor::builder(spans)
            .with_batch_config(queue)
            .build();
        let tracers = SdkTracerProvider::builder()
            .with_max_events_per_span(MAX_EVENTS)
            .with_resource(resource.clone())
            .with_span_processor(spans)
            .build();
        let loggers = SdkLoggerProvider::builder()
            .with_resource(resource)
            .with_batch_exporter(logs)
            .build();
        Ok(OtlpSink {
            inner,
            tracer: tracers.tracer("warden"),
            logger: loggers.logger("warden.audit"),
            tracers,
            loggers,
            open: Mutex::new(BTreeMap::new()),
        })
    }

    fn export(&self, records: &[Record]) {
        for r in records {
            self.export_one(r);
        }
    }

    fn export_one(&self, r: &Record) {
        let at = humantime::parse_rfc3339(&r.ts).unwrap_or_else(|_| SystemTime::now());
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let cx = match r.event {
            Event::Checkpoint => None,
            Event::InvocationStart => {
                if open.len() >= MAX_OPEN
                    && let Some((_, cx)) = open.pop_first()
                {
                    let span = cx.span();
                    span.set_status(Status::error("no end record came"));
                    span.end();
                }
                let span = self
                    .tracer
                    .span_builder(format!("invoke {}", r.tool))
                    .with_kind(SpanKind::Internal)
                    .with_start_time(at)
                    .with_attributes(ids(r))
                    .start(&self.tracer);
                let cx = Context::new().with_span(span);
                open.insert(r.invocation.clone(), cx.clone());
                Some(cx)
            }
            Event::InvocationEnd => open.remove(&r.invocation).inspect(|cx| {
                let span = cx.span();
                let outcome = r.outcome.clone().unwrap_or_default();
                span.set_attribute(KeyValue::new("warden.outcome", outcome.clone()));
                if let Some(us) = r.duration_us {
                    span.set_attribute(KeyValue::new("warden.duration_us", us as i64));
                }
                if outcome != "ok" {
                    span.set_status(Status::error(outcome));
                }
                span.end_with_timestamp(at);
            }),
            Event::Log => open.get(&r.invocation).cloned(),
            _ => open
                .get(&r.invocation)
                .inspect(|cx| {
                    cx.span()
                        .add_event_with_timestamp(event_name(r.event), at, details(r));
                })
                .cloned(),
        };
        drop(open);
        let mut log = self.logger.create_log_record();
        log.set_event_name(event_name(r.event));
        log.set_timestamp(at);
        log.set_severity_number(match r.decision.as_deref() {
            Some("deny") => Severity::Warn,
            _ => Severity::Info,
        });
        let summary = crate::audit::show::summarize(r);
        let summary = crate::policy::gate::cut(&summary, 4 * MAX_ATTRIBUTE).into_owned();
        log.set_body(AnyValue::from(summary));
        for kv in ids(r).into_iter().chain(details(r)) {
            let value = match kv.value {
                opentelemetry::Value::I64(i) => AnyValue::Int(i),
                v => AnyValue::String(v.as_str().into_owned().into()),
            };
            log.add_attribute(kv.key, value);
        }
        if let Some(cx) = &cx {
            let sc = cx.span().span_context().clone();
            log.set_trace_context(sc.trace_id(), sc.span_id(), Some(sc.trace_flags()));
        }
        self.logger.emit(log);
    }
}

fn event_name(e: Event) -> &'static str {
    match e {
        Event::InvocationStart => "invocation.start",
        Event::Decision => "decision",
        Event::Log => "log",
        Event::SecretIssued => "secret.issued",
        Event::SecretExpired => "secret.expired",
        Event::Egress => "egress",
        Event::ApprovalRequested => "approval.requested",
        Event::Outcome => "outcome",
        Event::Deploy => "deploy",
        Event::Checkpoint => "checkpoint",
        Event::InvocationEnd => "invocation.end",
    }
}

/// Who and what: the attributes every span and log record of an
/// invocation carries.
fn ids(r: &Record) -> Vec<KeyValue> {
    let mut kv = vec![
        KeyValue::new("warden.tool", r.tool.to_string()),
        KeyValue::new("warden.identity", r.identity.to_string()),
        KeyValue::new("warden.task", r.task.to_string()),
        KeyValue::new("warden.invocation", r.invocation.to_string()),
    ];
    if let Some(a) = &r.agent {
        kv.push(KeyValue::new("warden.agent", a.to_string()));
    }
    kv
}

/// A host call's fields: its capability, action and resource, and the
/// decision with its rule, reason and policies.
fn details(r: &Record) -> Vec<KeyValue> {
    let mut kv = Vec::new();
    // Cut: the record is redacted already, so a cut leaves no part of a
    // value a whole one would not show.
    let mut text = |k: &'static str, v: &Option<String>| {
        if let Some(v) = v {
            let v = crate::policy::gate::cut(v, MAX_ATTRIBUTE).into_owned();
            kv.push(KeyValue::new(k, v));
        }
    };
    text("warden.capability", &r.capability);
    text("warden.action", &r.action);
    text("warden.resource", &r.resource);
    text("warden.decision", &r.decision);
    text("warden.rule", &r.rule);
    text("warden.reason", &r.reason);
    text("warden.address", &r.address);
    text("warden.outcome", &r.outcome);
    text("warden.level", &r.level);
    text("warden.message", &r.message);
    if let Some(p) = &r.policies {
        kv.push(KeyValue::new("warden.policies", p.join(",")));
    }
    if let Some(s) = r.status {
        kv.push(KeyValue::new("warden.status", i64::from(s)));
    }
    for (k, v) in [
        ("warden.bytes_out", r.bytes_out),
        ("warden.bytes_in", r.bytes_in),
    ] {
        if let Some(v) = v {
            kv.push(KeyValue::new(k, i64::try_from(v).unwrap_or(i64::MAX)));
        }
    }
    kv
}

impl Drop for OtlpSink {
    /// Stops the exporters, sending what they hold within [`FLUSH`].
    fn drop(&mut self) {
        let (t, l) = (self.tracers.clone(), self.loggers.clone());
        let traces = std::thread::spawn(move || t.shutdown_with_timeout(FLUSH));
        let logs = std::thread::spawn(move || l.shutdown_with_timeout(FLUSH));
        let _ = (traces.join(), logs.join());
    }
}

impl AuditSink for OtlpSink {
    fn append(&self, record: &Record) -> Result<(), AuditError> {
        self.inner.append(record)?;
        self.export(std::slice::from_ref(record));
        Ok(())
    }

    fn append_all(&self, records: &[Record]) -> Result<(), AuditError> {
        self.inner.append_all(records)?;
        self.export(records);
        Ok(())
    }

    fn append_behind(&self, records: Vec<Record>) -> Result<(), AuditError> {
        let sent = records.clone();
        self.inner.append_behind(records)?;
        self.export(&sent);
        Ok(())
    }

    fn flush(&self) -> Result<(), AuditError> {
        self.inner.flush()
    }

    /// Settles the trail, then sends what the exporters hold (traces and
    /// logs at once, each bounded by its export timeout). Repeatable.
    fn settle(&self) {
        self.inner.settle();
        let (t, l) = (self.tracers.clone(), self.loggers.clone());
        // Flushing blocks on the exporters' threads; not on a runtime's.
        let traces = std::thread::spawn(move || t.force_flush());
        let logs = std::thread::spawn(move || l.force_flush());
        for (what, done) in [("traces", traces.join()), ("logs", logs.join())] {
            if let Ok(Err(e)) = done {
                tracing::warn!("OpenTelemetry: {what} not all sent: {e}");
            }
        }
    }

    fn health(&self) -> Result<(), String> {
        self.inner.health()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn past_the_limit_the_oldest_open_span_is_ended() {
        let memory = crate::audit::MemorySink::new();
        let options = OtlpOptions {
            endpoint: "http://127.0.0.1:9".into(),
            json: true,
            instance: None,
        };
        let sink = OtlpSink::new(memory.clone(), &options).unwrap();
        let start = || {
            let id: Arc<str> = uuid::Uuid::now_v7().to_string().into();
            Record::new(
                Event::InvocationStart,
                id,
                "t".into(),
                "tool".into(),
                "sha256:x".into(),
            )
        };
        let first = start();
        sink.append(&first).unwrap();
        for _ in 0..MAX_OPEN {
            sink.append(&start()).unwrap();
        }
        let open = sink.open.lock().unwrap();
        assert_eq!(open.len(), MAX_OPEN);
        assert!(!open.contains_key(&first.invocation), "the oldest was kept");
        drop(open);
        assert_eq!(
            memory.records().len(),
            MAX_OPEN + 1,
            "the trail took every record"
        );
    }

    /// A denial naming an 8 KiB resource, 2,000 times an invocation, held
    /// 16 MiB in one span, and 2,048 such spans could wait for a collector
    /// that does not answer: each text is sent cut.
    #[test]
    fn text_attributes_are_sent_cut() {
        let mut r = Record::new(
            Event::Decision,
            "i".into(),
            "t".into(),
            "tool".into(),
            "sha256:x".into(),
        );
        r.resource = Some(format!("workspace:{}", "é".repeat(4000)));
        r.reason = Some("short".into());
        let kv = details(&r);
        let get = |k: &str| {
            kv.iter()
                .find(|kv| kv.key.as_str() == k)
                .map(|kv| kv.value.to_string())
                .unwrap()
        };
        let resource = get("warden.resource");
        assert!(resource.len() <= MAX_ATTRIBUTE + 32, "{}", resource.len());
        assert!(resource.starts_with("workspace:éé"), "{resource}");
        assert!(resource.ends_with("[8010 bytes]"), "{resource}");
        assert_eq!(get("warden.reason"), "short");
    }

    #[test]
    fn the_endpoint_is_a_plain_http_base_url() {
        assert_eq!(
            base("http://127.0.0.1:4318/").unwrap(),
            "http://127.0.0.1:4318"
        );
        assert_eq!(
            base("https://otel.example/base").unwrap(),
            "https://otel.example/base"
        );
        assert!(base("127.0.0.1:4318").unwrap_err().starts_with("not a URL"));
        assert!(base("ftp://x").unwrap_err().starts_with("expected http://"));
        assert!(
            base("http://u:p@x:4318")
                .unwrap_err()
                .contains("no credentials")
        );
        assert!(
            base("http://x:4318/?token=1")
                .unwrap_err()
                .contains("no credentials, query")
        );
    }
}
