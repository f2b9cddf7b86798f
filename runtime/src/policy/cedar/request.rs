//! One call as Cedar sees it: the tool and resource entities, the context
//! (task, history, time, call) and the request.

use super::{Query, Resource};
use cedar_policy::{
    Context, Entities, Entity, EntityId, EntityTypeName, EntityUid, Request, RestrictedExpression,
};
use std::collections::HashMap;
use std::str::FromStr;

fn uid(kind: &str, id: &str) -> Result<EntityUid, String> {
    let t = EntityTypeName::from_str(kind).map_err(|e| e.to_string())?;
    Ok(EntityUid::from_type_name_and_id(t, EntityId::new(id)))
}

fn string(s: &str) -> RestrictedExpression {
    RestrictedExpression::new_string(s.to_owned())
}

fn strings<S: AsRef<str>>(items: impl IntoIterator<Item = S>) -> RestrictedExpression {
    RestrictedExpression::new_set(items.into_iter().map(|s| string(s.as_ref())))
}

fn record(pairs: Vec<(&str, RestrictedExpression)>) -> Result<RestrictedExpression, String> {
    RestrictedExpression::new_record(pairs.into_iter().map(|(k, v)| (k.to_owned(), v)))
        .map_err(|e| e.to_string())
}

fn entity(uid: &EntityUid, attrs: Vec<(&str, RestrictedExpression)>) -> Result<Entity, String> {
    Entity::new(
        uid.clone(),
        attrs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
        Default::default(),
    )
    .map_err(|e| e.to_string())
}

/// The Cedar request and entities for one call.
/// A set of the task's history as a policy sees it: each entry kept as
/// its head and digest that stands for one of the policies' own long
/// strings (`whole`) is that string again.
fn noted<'a>(
    set: &'a super::Noted,
    whole: &'a HashMap<String, String>,
) -> impl Iterator<Item = &'a str> {
    set.iter().map(|e| whole.get(e).map_or(e, String::as_str))
}

pub(super) fn build(
    q: &Query<'_>,
    whole: &HashMap<String, String>,
) -> Result<(Request, Entities), String> {
    let tool = uid("Warden::Tool", &q.tool.name)?;
    let tool_entity = entity(
        &tool,
        vec![
            ("name", string(&q.tool.name)),
            ("identity", string(&q.tool.identity)),
            ("labels", strings(&q.tool.labels)),
        ],
    )?;
    let (resource, attrs) = match &q.resource {
        Resource::Path {
            handle,
            path,
            host_path,
            labels,
        } => (
            uid("Warden::Path", &format!("{handle}:{path}"))?,
            vec![
                ("handle", string(handle)),
                ("path", string(path)),
                ("host_path", string(host_path)),
                ("labels", strings(labels.iter())),
            ],
        ),
        Resource::Host {
            host,
            origin,
            url,
            labels,
            send_to_of,
        } => (
            uid("Warden::Host", host)?,
            vec![
                ("host", string(host)),
                ("origin", string(origin)),
                ("url", string(url)),
                ("labels", strings(labels.iter())),
                ("send_to_of", strings(send_to_of)),
            ],
        ),
        Resource::Secret {
            name,
            labels,
            send_to,
        } => (
            uid("Warden::Secret", name)?,
            vec![
                ("name", string(name)),
                ("labels", strings(labels.iter())),
                ("send_to", strings(send_to.iter())),
            ],
        ),
        Resource::Target {
            name,
            backend,
            labels,
        } => (
            uid("Warden::Target", name)?,
            vec![
                ("name", string(name)),
                ("backend", string(backend)),
                ("labels", strings(labels.iter())),
            ],
        ),
        Resource::Audience { url } => (uid("Warden::Audience", url)?, vec![("url", string(url))]),
    };
    let resource_entity = entity(&resource, attrs)?;
    let h = q.history;
    let days = q.now.div_euclid(86_400);
    let context = Context::from_pairs([
        (
            "task".to_owned(),
            record(vec![
                ("id", string(q.task)),
                ("labels", strings(q.task_labels)),
                (
                    "secrets_revealed",
                    strings(noted(&h.secrets_revealed, whole)),
                ),
                ("hosts_contacted", strings(noted(&h.hosts_contacted, whole))),
                ("files_written", strings(noted(&h.files_written, whole))),
                (
                    "targets_deployed",
                    strings(noted(&h.targets_deployed, whole)),
                ),
            ])?,
        ),
        (
            "time".to_owned(),
            record(vec![
                ("unix", RestrictedExpression::new_long(q.now)),
                (
                    "hour",
                    RestrictedExpression::new_long(q.now.rem_euclid(86_400) / 3600),
                ),
                // 1970-01-01 was a Thursday (3 when Monday is 0).
                (
                    "weekday",
                    RestrictedExpression::new_long((days + 3).rem_euclid(7)),
                ),
            ])?,
        ),
        ("agent".to_owned(), agent(q.agent)?),
        ("invocation".to_owned(), string(q.invocation)),
        ("detail".to_owned(), string(q.detail)),
    ])
    .map_err(|e| e.to_string())?;
    let action = uid("Warden::Action", q.action)?;
    let request = Request::new(tool, action, resource, context, None).map_err(|e| e.to_string())?;
    let entities =
        Entities::from_entities([tool_entity, resource_entity], None).map_err(|e| e.to_string())?;
    Ok((request, entities))
}

/// `context.agent`: how the agent proved itself (`oauth`, `spiffe`,
/// `static-token`, or `none` when nobody authenticated), its issuer and
/// subject, groups and scopes.
fn agent(a: Option<&crate::agent::Agent>) -> Result<RestrictedExpression, String> {
    let none = std::collections::BTreeSet::new();
    let (kind, issuer, subject, groups, scopes) = match a {
        Some(a) => (
            a.kind.as_str(),
            &*a.issuer,
            &*a.subject,
            &a.groups,
            &a.scopes,
        ),
        None => ("none", "", "", &none, &none),
    };
    record(vec![
        ("kind", string(kind)),
        ("issuer", string(issuer)),
        ("subject", string(subject)),
        ("groups", strings(groups)),
        ("scopes", strings(scopes)),
    ])
}
