//! The console's pages: plain server-rendered HTML, no script. Every
//! string that is not the console's own passes through [`esc`] on its way
//! into a page: requests and records carry paths, URLs and messages tools
//! chose, and the trail itself may have been written by anyone.

use super::session::Who;
use super::trail::{Chain, EVENTS, Filters, MAX_READ, Trail};
use crate::approval::Waiting;
use crate::audit::show::describe;
use crate::audit::verify::Status;
use crate::redact::escape_control;
use std::fmt::Write as _;

/// The one style sheet, inline; the Content-Security-Policy allows it by
/// its hash and allows nothing else (no script, no image, no frame).
pub(crate) const STYLE: &str = "body{font:14px system-ui,sans-serif;margin:0 2em 2em;color:#222}\
nav{display:flex;gap:1.5em;align-items:center;padding:.8em 0;border-bottom:1px solid #ccc;margin-bottom:1em}\
nav form{margin-left:auto}table{border-collapse:collapse;width:100%}\
td,th{text-align:left;padding:.25em .5em;border-bottom:1px solid #eee;vertical-align:top}\
.mono,pre{font-family:ui-monospace,monospace;white-space:pre-wrap;overflow-wrap:anywhere}td.mono a{text-decoration:none}\
.req{border:1px solid #ccc;border-radius:6px;padding:.5em 1em;margin:1em 0}\
.req dl{display:grid;grid-template-columns:max-content 1fr;gap:.2em 1em}dd{margin:0}\
pre{background:#f6f6f6;padding:.5em;max-height:20em;overflow:auto}\
.ok{color:#075}.bad{color:#b00;font-weight:bold}.warn{color:#a60}.note{background:#eef;padding:.5em}\
button{padding:.3em 1.2em;margin-right:.5em}.ctl{background:#fdd;color:#900}";

/// `s` for a quoted attribute: control characters made visible
/// (`\u{1b}`), then the five HTML metacharacters as references.
pub(crate) fn attr(s: &str) -> String {
    let visible = escape_control(s);
    let mut out = String::with_capacity(visible.len() + 16);
    for c in visible.chars() {
        push_char(&mut out, c);
    }
    out
}

fn push_char(out: &mut String, c: char) {
    match c {
        '&' => out.push_str("&amp;"),
        '<' => out.push_str("&lt;"),
        '>' => out.push_str("&gt;"),
        '"' => out.push_str("&quot;"),
        '\'' => out.push_str("&#39;"),
        c => out.push(c),
    }
}

/// `s` for HTML text: as [`attr`], but each character made visible is
/// marked (`<span class=ctl>`), so a tool's literal `\u{1b}` cannot pass
/// for an escaped control character. (Approval requests reach the console
/// escaped already, `for_people`: there a real control character and its
/// literal spelling look alike.)
pub(crate) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 16);
    let mut one = [0u8; 4];
    for c in s.chars() {
        match escape_control(c.encode_utf8(&mut one)) {
            std::borrow::Cow::Owned(shown) => {
                out.push_str("<span class=ctl>");
                shown.chars().for_each(|c| push_char(&mut out, c));
                out.push_str("</span>");
            }
            std::borrow::Cow::Borrowed(_) => push_char(&mut out, c),
        }
    }
    out
}

/// `s` in a query string.
fn q(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// A whole page: the head, the navigation (when signed in, with the
/// sign-out form carrying `csrf`) and `body`.
fn page(title: &str, who: Option<&Who>, body: &str) -> String {
    let mut out = String::with_capacity(body.len() + 2048);
    let _ = write!(
        out,
        "<!doctype html><html lang=en><head><meta charset=utf-8>\
         <meta name=viewport content=\"width=device-width\">\
         <title>{} · Warden console</title><style>{STYLE}</style></head><body>",
        attr(title)
    );
    if let Some(w) = who {
        let _ = write!(
            out,
            "<nav><strong>Warden</strong><a href=\"{base}/\">Pending approvals</a>\
             <a href=\"{base}/audit\">Audit trail</a>\
             <form method=post action=\"{base}/logout\"><span>{}</span> \
             <input type=hidden name=csrf value=\"{}\"><button>Sign out</button></form></nav>",
            esc(&w.name),
            attr(&w.csrf),
            base = attr(&w.base),
        );
    }
    out.push_str(body);
    out.push_str("</body></html>");
    out
}

pub(crate) fn login(error: Option<&str>) -> String {
    let mut body = String::from("<h1>Warden operator console</h1>");
    if let Some(e) = error {
        let _ = write!(body, "<p class=bad id=error>{}</p>", esc(e));
    }
    body.push_str(
        "<form method=post action=\"/login\"><p><label>Your name (the trail records it with \
         each answer)<br><input name=name required maxlength=64 autocomplete=username></label></p>\
         <p><label>Console token<br><input name=token type=password required \
         autocomplete=current-password></label></p><p><button id=signin>Sign in</button></p></form>",
    );
    page("Sign in", None, &body)
}

/// The pending approvals, each with what is asked and an approve and a
/// deny button.
pub(crate) fn approvals(who: &Who, waiting: Result<&[Waiting], &str>) -> String {
    let mut body = format!(
        "<h1>Pending approvals</h1><p><a href=\"{}/\" id=again>Look again</a> \
         (the page does not reload by itself: a button never moves under a click)</p>",
        attr(&who.base)
    );
    match waiting {
        Err(e) => {
            let _ = write!(body, "<p class=bad>{}</p>", esc(e));
        }
        Ok([]) => body.push_str(
            "<p id=none>Nothing is waiting. Use Look again to see requests that came since.</p>",
        ),
        Ok(list) => {
            for w in list {
                let r = &w.request;
                let _ = write!(
                    body,
                    "<section class=req data-digest=\"{digest_attr}\"><dl>\
                     <dt>Tool</dt><dd class=tool>{tool}</dd>\
                     <dt>Identity</dt><dd class=mono>{identity}</dd>\
                     <dt>Task</dt><dd class=task>{task}</dd>\
                     <dt>Agent</dt><dd>{agent}</dd>\
                     <dt>Invocation</dt><dd class=mono>{invocation}</dd>\
                     <dt>Action</dt><dd class=action>{action}</dd>\
                     <dt>Resource</dt><dd class=\"resource mono\">{resource}</dd>\
                     <dt>Waiting</dt><dd>{waiting:.0} s</dd></dl>\
                     <pre class=preview>{summary}</pre>\
                     <form method=post action=\"{base}/answer\">\
                     <input type=hidden name=csrf value=\"{csrf}\">\
                     <input type=hidden name=digest value=\"{digest_attr}\">\
                     <button name=decision value=approve class=approve>Approve</button>\
                     <button name=decision value=deny class=deny>Deny</button></form></section>",
                    digest_attr = attr(&r.digest),
                    base = attr(&who.base),
                    tool = esc(&r.tool),
                    identity = esc(&r.identity),
                    task = esc(&r.task),
                    agent = esc(r.agent.as_deref().unwrap_or("(none authenticated)")),
                    invocation = esc(&r.invocation),
                    action = esc(&r.action),
                    resource = esc(&r.resource),
                    waiting = w.waiting_s,
                    summary = esc(&r.summary),
                    csrf = attr(&who.csrf),
                );
            }
        }
    }
    page("Pending approvals", Some(who), &body)
}

/// The page after an answer: what became of it, and the way back to the
/// list, but no list: a second click where the button was (a double
/// click) lands on no form, so it cannot answer the next request.
pub(crate) fn answered(who: &Who, notice: &str) -> String {
    let body = format!(
        "<h1>Pending approvals</h1><p class=note id=notice>{}</p>\
         <p><a href=\"{}/\" id=again>Look again</a> for the requests still waiting.</p>",
        esc(notice),
        attr(&who.base)
    );
    page("Answered", Some(who), &body)
}

/// `bytes` for people: bytes, KiB or MiB (to a tenth).
fn size(bytes: u64) -> String {
    if bytes < 1 << 10 {
        format!("{bytes} bytes")
    } else if bytes < 1 << 20 {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    } else {
        format!("{:.1} MiB", bytes as f64 / 1_048_576.0)
    }
}

fn status_line(c: &Chain) -> String {
    let Some(r) = &c.report else {
        return format!(
            "<span class=warn>not verified here: this chain is {}, and a page reads at most {} \
             of the trail, so only its newest {} were read; the records shown are from those \
             (run <code>warden audit verify</code>)</span>",
            size(c.bytes),
            size(MAX_READ),
            size(c.read)
        );
    };
    match r.status() {
        Status::Tampered => {
            let t = r
                .tampered
                .as_ref()
                .map_or((0, ""), |t| (t.line, &*t.reason));
            format!(
                "<span class=bad>ALTERED at line {}: {}</span>",
                t.0,
                esc(t.1)
            )
        }
        Status::UnknownKey => format!(
            "<span class=bad>a checkpoint is signed by a key no replica publishes ({})</span>",
            esc(r.unknown_keys.first().map_or("", |k| &*k.kid))
        ),
        Status::Incomplete => format!(
            "<span class=warn>intact: {} records, {} signed checkpoints; {} records after the \
             last checkpoint, {} invocations without an end (running, or their writer stopped)</span>",
            r.records,
            r.checkpoints,
            r.uncovered,
            r.unfinished.len()
        ),
        Status::Complete => format!(
            "<span class=ok>intact and complete: {} records, {} signed checkpoints</span>",
            r.records, r.checkpoints
        ),
    }
}

fn filter_form(base: &str, f: &Filters) -> String {
    let input = |name: &str, value: &str| {
        format!(
            "<label>{name} <input name={name} value=\"{}\" size=14></label> ",
            attr(value)
        )
    };
    let mut s = format!(
        "<form method=get action=\"{}/audit\" id=filters>",
        attr(base)
    );
    s.push_str(&input("task", &f.task));
    s.push_str(&input("tool", &f.tool));
    s.push_str(&input("invocation", &f.invocation));
    s.push_str("<label>event <select name=event><option value=\"\">any</option>");
    for e in EVENTS {
        let sel = if f.event == *e { " selected" } else { "" };
        let _ = write!(s, "<option{sel}>{e}</option>");
    }
    s.push_str(
        "</select></label> <label>decision <select name=decision><option value=\"\">any</option>",
    );
    for d in ["allow", "deny"] {
        let sel = if f.decision == d { " selected" } else { "" };
        let _ = write!(s, "<option{sel}>{d}</option>");
    }
    s.push_str("</select></label> <button>Filter</button></form>");
    s
}

/// The trail: each chain's verification, then its matching records
/// (those after an altered line marked as such); then how many older
/// chains were left unread.
pub(crate) fn audit(who: &Who, f: &Filters, trail: Result<&Trail, &str>) -> String {
    let base = attr(&who.base);
    let mut body = String::from("<h1>Audit trail</h1>");
    body.push_str(&filter_form(&who.base, f));
    match trail {
        Err(e) => {
            let _ = write!(body, "<p class=bad id=error>{}</p>", esc(e));
        }
        Ok(trail) => {
            if trail.chains.is_empty() && trail.older == 0 {
                body.push_str("<p>The trail holds no records yet.</p>");
            }
            for c in &trail.chains {
                let _ = write!(
                    body,
                    "<h2>Chain {}</h2><p class=status>{}</p><table><tr><th>line</th><th>time</th>\
                     <th>task</th><th>what</th></tr>",
                    esc(&c.name),
                    status_line(c)
                );
                let altered = c
                    .report
                    .as_ref()
                    .and_then(|r| r.tampered.as_ref())
                    .map(|t| t.line);
                for (line, r) in &c.records {
                    let after = match (line, altered) {
                        (Some(l), Some(t)) if *l >= t => {
                            format!(" <span class=bad>(at or after the altered line {t})</span>")
                        }
                        _ => String::new(),
                    };
                    let _ = write!(
                        body,
                        "<tr class=rec><td>{}</td><td>{}</td>\
                         <td><a href=\"{base}/audit?task={}\">{}</a></td>\
                         <td class=mono><a href=\"{base}/audit?invocation={}\">{}</a>{after}</td></tr>",
                        line.map_or_else(|| "…".to_owned(), |l| l.to_string()),
                        esc(&r.ts),
                        attr(&q(&r.task)),
                        esc(&r.task),
                        attr(&q(&r.invocation)),
                        esc(&describe(r)),
                    );
                }
                body.push_str("</table>");
                if c.more > 0 {
                    let _ = write!(
                        body,
                        "<p>{} older matching records not shown; filter to narrow.</p>",
                        c.more
                    );
                }
            }
            if trail.older > 0 {
                let _ = write!(
                    body,
                    "<p class=warn id=older>{} older {} not shown: a page reads at most {} of \
                     the trail, and the newer chains above spent it (run <code>warden audit \
                     verify</code>)</p>",
                    trail.older,
                    if trail.older == 1 { "chain" } else { "chains" },
                    size(MAX_READ)
                );
            }
        }
    }
    page("Audit trail", Some(who), &body)
}

/// A page that says what was wrong with a request.
pub(crate) fn problem(who: Option<&Who>, message: &str) -> String {
    page(
        "Problem",
        who,
        &format!("<h1>Problem</h1><p class=bad id=error>{}</p>", esc(message)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_text_cannot_leave_its_element() {
        assert_eq!(
            esc("<script>alert('x')</script>\"&"),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&quot;&amp;"
        );
        assert_eq!(attr("a\u{1b}[2Jb\u{202e}"), "a\\u{1b}[2Jb\\u{202e}");
        // In text, what was escaped is marked: a literal backslash-u is not.
        assert_eq!(
            esc("a\u{1b}b \\u{1b}"),
            "a<span class=ctl>\\u{1b}</span>b \\u{1b}"
        );
        let p = problem(None, "<img src=x onerror=alert(1)>");
        assert!(!p.contains("<img"), "{p}");
        assert!(p.contains("&lt;img src=x onerror=alert(1)&gt;"));
    }
}
