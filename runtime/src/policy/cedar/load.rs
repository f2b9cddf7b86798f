//! Loading runtime policy: reading policy files (a directory stands for its
//! `*.cedar` files), giving each policy its id, validating against the
//! schema, and locating every problem at its file, line and column.

use super::{CEILING, MAX_ENTRY, RuntimePolicy, SCHEMA, TaskHistory};
use crate::diag::line_col;
use cedar_policy::{Authorizer, PolicyId, PolicySet, Schema, ValidationMode, Validator};
use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// One problem in a policy file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyProblem {
    pub file: PathBuf,
    /// 1-based; 0 when the problem is the whole file.
    pub line: usize,
    pub column: usize,
    /// The policy's id, when the problem is in one policy.
    pub policy: Option<String>,
    pub message: String,
}

impl PolicyProblem {
    /// A problem with a whole file.
    fn whole(file: PathBuf, message: String) -> Self {
        Self {
            file,
            line: 0,
            column: 0,
            policy: None,
            message,
        }
    }
}

/// Everything wrong with a set of policy files.
#[derive(Debug, Clone, thiserror::Error)]
pub struct PolicyError {
    pub problems: Vec<PolicyProblem>,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}", p.file.display())?;
            if p.line > 0 {
                write!(f, ":{}:{}", p.line, p.column)?;
            }
            if let Some(id) = &p.policy {
                write!(f, ": policy '{id}'")?;
            }
            write!(f, ": {}", p.message)?;
        }
        Ok(())
    }
}

fn schema() -> Schema {
    // The schema is part of this crate; a test parses it.
    Schema::from_cedarschema_str(SCHEMA)
        .map(|(s, _)| s)
        .unwrap_or_else(|e| unreachable!("the built-in schema does not parse: {e}"))
}

impl RuntimePolicy {
    /// Reads policy files (a directory stands for its `*.cedar` files, in
    /// name order), parses and validates them against [`SCHEMA`].
    pub fn load(paths: &[PathBuf]) -> Result<RuntimePolicy, PolicyError> {
        let mut sources = Vec::new();
        let mut problems = Vec::new();
        for path in paths {
            let whole = |message: String| PolicyProblem::whole(path.clone(), message);
            if path.is_dir() {
                match std::fs::read_dir(path) {
                    Ok(entries) => {
                        let mut files: Vec<PathBuf> = entries
                            .filter_map(|e| e.ok().map(|e| e.path()))
                            .filter(|p| p.extension().is_some_and(|x| x == "cedar"))
                            .collect();
                        files.sort();
                        if files.is_empty() {
                            problems.push(whole(
                                "no *.cedar files in this directory (expected Cedar policy files)"
                                    .into(),
                            ));
                        }
                        for f in files {
                            match crate::files::read_regular_text(&f, crate::files::MAX_CONFIG) {
                                Ok(text) => sources.push((f, text)),
                                Err(e) => problems
                                    .push(PolicyProblem::whole(f, format!("cannot read: {e}"))),
                            }
                        }
                    }
                    Err(e) => problems.push(whole(format!("cannot read the directory: {e}"))),
                }
            } else {
                match crate::files::read_regular_text(path, crate::files::MAX_CONFIG) {
                    Ok(text) => sources.push((path.clone(), text)),
                    Err(e) => problems.push(whole(format!(
                        "cannot read the policy file: {e} (expected a Cedar file or a directory of them)"
                    ))),
                }
            }
        }
        match Self::parse(&sources) {
            Ok(p) if problems.is_empty() => Ok(p),
            Ok(_) => Err(PolicyError { problems }),
            Err(mut e) => {
                problems.append(&mut e.problems);
                Err(PolicyError { problems })
            }
        }
    }

    /// Parses and validates policy texts, each with the file it came from.
    pub fn parse(sources: &[(PathBuf, String)]) -> Result<RuntimePolicy, PolicyError> {
        let mut problems = Vec::new();
        let mut set = PolicySet::new();
        let mut approval = BTreeSet::new();
        let mut reasons = HashMap::new();
        // Policy id -> (file index, text) for locating validation errors.
        let mut origin: HashMap<String, usize> = HashMap::new();
        for (index, (file, text)) in sources.iter().enumerate() {
            let parsed = match PolicySet::from_str(text) {
                Ok(p) => p,
                Err(errors) => {
                    for e in errors.iter() {
                        problems.push(problem(file, text, None, e));
                    }
                    continue;
                }
            };
            if parsed.templates().next().is_some() {
                problems.push(PolicyProblem::whole(
                    file.clone(),
                    "policy templates are not supported (expected static policies)".into(),
                ));
            }
            let stem = file
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            let mut policies: Vec<_> = parsed.policies().collect();
            // Parsed ids are `policy0`, `policy1`, … in file order.
            policies.sort_by_key(|p| {
                p.id()
                    .to_string()
                    .trim_start_matches("policy")
                    .parse::<usize>()
                    .unwrap_or(usize::MAX)
            });
            for (n, p) in policies.into_iter().enumerate() {
                let id = p
                    .annotation("id")
                    .map(str::to_owned)
                    .unwrap_or_else(|| format!("{stem}#{n}"));
                // A parsed policy displays as its own source text.
                let (line, column) = text
                    .find(&p.to_string())
                    .map(|at| line_col(text, at))
                    .unwrap_or((0, 0));
                let at = |message: String| PolicyProblem {
                    file: file.clone(),
                    line,
                    column,
                    policy: Some(id.clone()),
                    message,
                };
                if id == CEILING || origin.contains_key(&id) {
                    problems.push(at(format!(
                        "the id '{id}' is used twice (expected each @id to be unique)"
                    )));
                    continue;
                }
                match p.annotation("approval") {
                    None => {}
                    Some("required") if p.effect() == cedar_policy::Effect::Forbid => {
                        approval.insert(id.clone());
                    }
                    Some("required") => problems.push(at(
                        "@approval(\"required\") on a permit (expected it on a forbid: policies can only restrict)".into(),
                    )),
                    Some(other) => problems.push(at(format!(
                        "@approval(\"{other}\") (expected @approval(\"required\"))"
                    ))),
                }
                if let Some(r) = p.annotation("reason") {
                    reasons.insert(id.clone(), r.to_owned());
                }
                origin.insert(id.clone(), index);
                if let Err(e) = set.add(p.new_id(PolicyId::new(&id))) {
                    problems.push(at(e.to_string()));
                }
            }
        }
        let schema = schema();
        let result = Validator::new(schema).validate(&set, ValidationMode::Strict);
        for e in result.validation_errors() {
            let id = e.policy_id().to_string();
            let (file, text) = match origin.get(&id) {
                Some(&i) => (&sources[i].0, sources[i].1.as_str()),
                None => continue,
            };
            problems.push(problem(file, text, Some(id), e));
        }
        if !problems.is_empty() {
            return Err(PolicyError { problems });
        }
        let internal = |message: String| PolicyError {
            problems: vec![PolicyProblem {
                policy: Some(CEILING.into()),
                ..PolicyProblem::whole(PathBuf::new(), message)
            }],
        };
        let ceiling = cedar_policy::Policy::parse(
            Some(PolicyId::new(CEILING)),
            "permit (principal, action, resource);",
        )
        .map_err(|e| internal(e.to_string()))?;
        // Read from each policy's JSON form, where an attribute's name is
        // as Cedar reads it (`task["files\u{5f}written"]` included); a
        // policy that cannot be shown so counts as reading every set.
        let json: Vec<Option<serde_json::Value>> =
            (set.policies()).map(|p| p.to_json().ok()).collect();
        let shown: Vec<Option<String>> = (json.iter())
            .map(|j| j.as_ref().map(|j| j.to_string()))
            .collect();
        let reads = TaskHistory::KINDS
            .map(|kind| (shown.iter()).any(|j| j.as_ref().is_none_or(|j| j.contains(kind))));
        let mut whole = HashMap::new();
        for j in json.iter().flatten() {
            long_strings(j, &mut whole);
        }
        set.add(ceiling).map_err(|e| internal(e.to_string()))?;
        Ok(RuntimePolicy {
            set,
            reads,
            whole,
            approval,
            reasons,
            files: sources.iter().map(|(f, _)| f.clone()).collect(),
            authorizer: Authorizer::new(),
        })
    }
}

/// A problem at the first labelled position of a Cedar diagnostic.
/// Every string in a policy's JSON form longer than a history entry is
/// kept whole ([`MAX_ENTRY`]), by the form a set keeps it in: a set of the
/// task's history holds a long path as its head and digest, and a policy
/// naming the path must find it all the same.
fn long_strings(json: &serde_json::Value, whole: &mut HashMap<String, String>) {
    match json {
        serde_json::Value::String(s) if s.len() > MAX_ENTRY => {
            whole.insert(super::history::entry(s).into_owned(), s.clone());
        }
        serde_json::Value::Array(items) => {
            for item in items {
                long_strings(item, whole);
            }
        }
        serde_json::Value::Object(fields) => {
            for value in fields.values() {
                long_strings(value, whole);
            }
        }
        _ => {}
    }
}

fn problem(
    file: &Path,
    text: &str,
    policy: Option<String>,
    e: &(impl miette::Diagnostic + fmt::Display),
) -> PolicyProblem {
    let (line, column) = e
        .labels()
        .and_then(|mut l| l.next())
        .map(|l| line_col(text, l.offset()))
        .unwrap_or((0, 0));
    let mut message = e.to_string();
    if let Some(help) = e.help() {
        message.push_str(&format!(" ({help})"));
    }
    PolicyProblem {
        file: file.to_owned(),
        line,
        column,
        policy,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<RuntimePolicy, PolicyError> {
        RuntimePolicy::parse(&[(PathBuf::from("p.cedar"), text.to_owned())])
    }

    #[test]
    fn malformed_policies_are_located_and_explained() {
        let e = parse(
            "permit (principal, action, resource)\nwhen { context.task.labels.contains(\"x\") ;",
        )
        .unwrap_err();
        let msg = e.to_string();
        assert!(msg.starts_with("p.cedar:2:"), "{msg}");

        let e = parse("\n\n@id(\"typo\")\nforbid (principal, action == Warden::Action::\"deploy::run\", resource)\nwhen { resource.lables.contains(\"production\") };").unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("p.cedar:5:"), "{msg}");
        assert!(msg.contains("policy 'typo'"), "{msg}");
        assert!(msg.contains("lables"), "{msg}");

        let e = parse("forbid (principal, action == Warden::Action::\"fs::exec\", resource);")
            .unwrap_err();
        assert!(e.to_string().contains("fs::exec"), "{e}");

        let e = parse("@id(\"a\") forbid (principal, action, resource);\n@id(\"a\") forbid (principal, action, resource);").unwrap_err();
        assert!(e.to_string().contains("the id 'a' is used twice"), "{e}");

        let e = parse("@approval(\"required\") permit (principal, action, resource);").unwrap_err();
        assert!(e.to_string().contains("expected it on a forbid"), "{e}");

        let e = parse("@approval(\"maybe\") forbid (principal, action, resource);").unwrap_err();
        assert!(
            e.to_string().contains("expected @approval(\"required\")"),
            "{e}"
        );
    }
}
