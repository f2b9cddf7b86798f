//! Grants: what one task receives, issued by the caller at run time.
//!
//! A grant must fit inside the tool's manifest ceiling. It is never narrowed
//! silently: a grant that would have to be narrowed is refused, naming the
//! handle, before anything runs.
//!
//! Three ways to write one:
//! - library: `Grant::new("task-1").fs("workspace", "/src/repo", Rights::READ).secret("api-token")`;
//! - CLI: `--grant fs:workspace=/src/repo:read,write --grant secret:api-token`;
//! - TOML file:
//!
//! ```toml
//! task = "fix-issue-42"
//! secrets = ["api-token"]
//!
//! [fs.workspace]
//! path = "../repo"        # relative to this file
//! rights = ["read", "write"]
//! ```

use crate::agent::Agent;
pub use crate::caps::fs::FsGrant;
pub use crate::caps::http::HttpGrant;
pub use crate::diag::GrantError;
use crate::rights::Rights;
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What one task receives.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grant {
    pub task: String,
    pub fs: BTreeMap<String, FsGrant>,
    /// Names of secrets from the tool's manifest entry.
    pub secrets: BTreeSet<String>,
    /// Egress: URL prefixes (and methods) inside the tool's ceiling.
    pub http: Vec<HttpGrant>,
    /// Names of deploy targets from the tool's manifest entry.
    pub deploy: BTreeSet<String>,
    /// Labels the task carries, for runtime policy (e.g. `release`).
    pub labels: BTreeSet<String>,
    /// The agent the task runs for, when one authenticated (`warden serve
    /// --http`): named in every record of its invocations and seen by
    /// runtime policy as `context.agent`.
    pub agent: Option<Arc<Agent>>,
}

impl Grant {
    /// An empty grant (no capabilities) for a task.
    pub fn new(task: impl Into<String>) -> Self {
        Self {
            task: task.into(),
            fs: BTreeMap::new(),
            secrets: BTreeSet::new(),
            http: Vec::new(),
            deploy: BTreeSet::new(),
            labels: BTreeSet::new(),
            agent: None,
        }
    }

    /// What the grant asks for, in the CLI's grant syntax (for the record
    /// of a refused grant): `fs:repo=/src:read secret:token http:GET=URL
    /// deploy:prod`.
    pub fn requested(&self) -> String {
        let fs = self
            .fs
            .iter()
            .map(|(h, g)| format!("fs:{h}={}:{}", g.path.display(), g.rights));
        let secrets = self.secrets.iter().map(|s| format!("secret:{s}"));
        let http = self.http.iter().map(|g| match &g.methods {
            Some(m) => format!("http:{}={}", m.join(","), g.url),
            None => format!("http:{}", g.url),
        });
        let deploy = self.deploy.iter().map(|t| format!("deploy:{t}"));
        fs.chain(secrets)
            .chain(http)
            .chain(deploy)
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The agent the task runs for, as its records name it.
    pub fn recorded_agent(&self) -> Option<Arc<str>> {
        self.agent.as_ref().map(|a| a.recorded().into())
    }

    /// Adds a task label (runtime policy sees it as `context.task.labels`).
    pub fn label(mut self, label: &str) -> Self {
        self.labels.insert(label.to_owned());
        self
    }

    /// Adds a task label given on the command line or in a task file.
    pub fn add_label(&mut self, label: &str) -> Result<(), GrantError> {
        crate::diag::check_name(label).map_err(|e| GrantError::Syntax {
            spec: label.to_owned(),
            reason: format!("invalid task label {e}"),
        })?;
        self.labels.insert(label.to_owned());
        Ok(())
    }

    /// Adds a deploy target by its manifest name.
    pub fn deploy(mut self, target: &str) -> Self {
        self.deploy.insert(target.to_owned());
        self
    }

    /// Adds egress to a URL prefix, e.g. `https://api.example.com/v1/`,
    /// with the ceiling's methods (or `methods`).
    pub fn http(mut self, url_prefix: &str, methods: Option<&[&str]>) -> Self {
        self.http.push(HttpGrant {
            url: url_prefix.to_owned(),
            methods: methods.map(|ms| ms.iter().map(|m| m.to_ascii_uppercase()).collect()),
        });
        self
    }

    /// Adds a secret by its manifest name.
    pub fn secret(mut self, name: &str) -> Self {
        self.secrets.insert(name.to_owned());
        self
    }

    /// Adds one CLI grant: `fs:HANDLE=DIR:RIGHTS`, `secret:NAME`,
    /// `http:[METHODS=]URL` or `deploy:TARGET`.
    pub fn add_cli(&mut self, spec: &str) -> Result<(), GrantError> {
        if let Some(name) = spec.strip_prefix("deploy:") {
            crate::diag::check_name(name).map_err(|e| GrantError::Syntax {
                spec: spec.to_owned(),
                reason: format!("invalid target name {e}"),
            })?;
            self.deploy.insert(name.to_owned());
            return Ok(());
        }
        if let Some(rest) = spec.strip_prefix("http:") {
            let g = HttpGrant::parse_cli(rest).map_err(|reason| GrantError::Syntax {
                spec: spec.to_owned(),
                reason,
            })?;
            self.http.push(g);
            return Ok(());
        }
        if let Some(name) = spec.strip_prefix("secret:") {
            crate::diag::check_name(name).map_err(|e| GrantError::Syntax {
                spec: spec.to_owned(),
                reason: format!("invalid secret name {e}"),
            })?;
            if !self.secrets.insert(name.to_owned()) {
                return Err(GrantError::DuplicateSecret {
                    name: name.to_owned(),
                });
            }
            return Ok(());
        }
        let (handle, g) = Self::parse_cli(spec)?;
        self.add(handle, g)
    }

    /// Adds (or replaces) a directory handle.
    pub fn fs(mut self, handle: &str, path: impl Into<PathBuf>, rights: Rights) -> Self {
        self.fs.insert(
            handle.to_owned(),
            FsGrant {
                path: path.into(),
                rights,
            },
        );
        self
    }

    /// Adds a handle, refusing one that is already granted.
    pub fn add(&mut self, handle: String, grant: FsGrant) -> Result<(), GrantError> {
        if self.fs.contains_key(&handle) {
            return Err(GrantError::Duplicate { handle });
        }
        self.fs.insert(handle, grant);
        Ok(())
    }

    /// Parses the CLI form `fs:HANDLE=DIR:RIGHTS`, e.g. `fs:repo=./src:read,write`.
    pub fn parse_cli(spec: &str) -> Result<(String, FsGrant), GrantError> {
        let syntax = |reason: &str| GrantError::Syntax {
            spec: spec.to_owned(),
            reason: reason.to_owned(),
        };
        let rest = spec.strip_prefix("fs:").ok_or_else(|| {
            syntax("unknown capability (expected fs:, secret:, http: or deploy:)")
        })?;
        let (handle, rest) = rest.split_once('=').ok_or_else(|| syntax("missing '='"))?;
        let (dir, rights) = rest
            .rsplit_once(':')
            .ok_or_else(|| syntax("missing ':RIGHTS' after the directory"))?;
        crate::diag::check_name(handle).map_err(|e| syntax(&format!("invalid handle name {e}")))?;
        if dir.is_empty() {
            return Err(syntax("empty directory"));
        }
        let rights: Rights = rights.parse().map_err(|e: String| syntax(&e))?;
        Ok((
            handle.to_owned(),
            FsGrant {
                path: PathBuf::from(dir),
                rights,
            },
        ))
    }

    /// Reads a TOML grant file; relative paths are resolved against its directory.
    pub fn load(path: impl AsRef<Path>) -> Result<Grant, GrantError> {
        let path = path.as_ref();
        let file_error = |message: String| GrantError::File {
            file: path.to_owned(),
            message,
        };
        let text = crate::files::read_regular_text(path, crate::files::MAX_CONFIG)
            .map_err(|e| file_error(format!("cannot read the grant file: {e}")))?;
        let raw: RawGrant = toml::from_str(&text).map_err(|e| {
            let line = e
                .span()
                .map_or(0, |s| text[..s.start].matches('\n').count() + 1);
            file_error(format!("line {line}: {}", e.message().trim()))
        })?;
        check_task(&raw.task).map_err(file_error)?;
        let base = path.parent().unwrap_or(Path::new(""));
        let mut grant = Grant::new(raw.task);
        for name in raw.secrets {
            crate::diag::check_name(&name)
                .map_err(|e| file_error(format!("secrets: invalid secret name {e}")))?;
            grant.secrets.insert(name);
        }
        for label in raw.labels {
            grant
                .add_label(&label)
                .map_err(|e| file_error(format!("labels: {e}")))?;
        }
        for name in raw.deploy {
            crate::diag::check_name(&name)
                .map_err(|e| file_error(format!("deploy: invalid target name {e}")))?;
            grant.deploy.insert(name);
        }
        for h in raw.http {
            let spec = match &h.methods {
                Some(m) => format!("{}={}", m.join(","), h.url),
                None => h.url.clone(),
            };
            let g = HttpGrant::parse_cli(&spec).map_err(|e| file_error(format!("http: {e}")))?;
            grant.http.push(g);
        }
        for (handle, g) in raw.fs {
            crate::diag::check_name(&handle)
                .map_err(|e| file_error(format!("fs.{handle}: invalid handle name {e}")))?;
            if g.rights.is_empty() {
                return Err(file_error(format!(
                    "fs.{handle}.rights: no rights (expected a list such as [\"read\"])"
                )));
            }
            grant.fs.insert(
                handle,
                FsGrant {
                    path: base.join(g.path),
                    rights: g.rights,
                },
            );
        }
        Ok(grant)
    }
}

/// Task ids: 1 to 128 printable characters.
pub fn check_task(task: &str) -> Result<(), String> {
    if task.is_empty() || task.len() > 128 || task.chars().any(crate::redact::hidden) {
        // Quoted escaped, and cut: the id may be anything an agent sent.
        let shown = crate::policy::gate::cut(task, 160);
        return Err(format!(
            "invalid task id {shown:?} (expected 1 to 128 printable characters)"
        ));
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGrant {
    task: String,
    #[serde(default)]
    secrets: Vec<String>,
    #[serde(default)]
    fs: BTreeMap<String, RawFsGrant>,
    #[serde(default)]
    http: Vec<RawHttpGrant>,
    #[serde(default)]
    deploy: Vec<String>,
    #[serde(default)]
    labels: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttpGrant {
    url: String,
    methods: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFsGrant {
    path: PathBuf,
    rights: Rights,
}

impl GrantError {
    /// The handle the error is about, if any.
    pub fn handle(&self) -> Option<&str> {
        match self {
            GrantError::Duplicate { handle }
            | GrantError::UnknownHandle { handle, .. }
            | GrantError::OutsideCeiling { handle, .. }
            | GrantError::RightsExceedCeiling { handle, .. }
            | GrantError::Open { handle, .. } => Some(handle),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_form() {
        let (h, g) = Grant::parse_cli("fs:repo=/tmp/a:b:read,write").unwrap();
        assert_eq!(h, "repo");
        assert_eq!(g.path, PathBuf::from("/tmp/a:b"));
        assert_eq!(g.rights, Rights::READ | Rights::WRITE);
    }

    #[test]
    fn cli_form_errors_say_what_was_expected() {
        for (spec, reason) in [
            (
                "net:x=y:read",
                "unknown capability (expected fs:, secret:, http: or deploy:)",
            ),
            ("fs:repo/tmp:read", "missing '='"),
            ("fs:repo=/tmp", "missing ':RIGHTS'"),
            ("fs:repo=/tmp:admin", "unknown right 'admin'"),
            ("fs:Repo=/tmp:read", "invalid handle name"),
        ] {
            let e = Grant::parse_cli(spec).unwrap_err().to_string();
            assert!(e.contains(reason), "{spec}: {e}");
            assert!(e.contains("expected fs:HANDLE=DIR:RIGHTS"), "{e}");
        }
    }

    #[test]
    fn a_bad_task_id_is_reported_once() {
        let e = GrantError::Task(check_task("").unwrap_err()).to_string();
        assert_eq!(
            e,
            "invalid task id \"\" (expected 1 to 128 printable characters)"
        );
        // Two ids that look the same are two tasks: invisible characters
        // (zero-width, bidi, tags, variation selectors) are refused.
        for id in [
            "ci\u{200b}",
            "t\u{202e}x",
            "run\u{e0041}",
            "a\u{fe0f}",
            "x\u{2028}",
        ] {
            let e = check_task(id).unwrap_err();
            assert!(
                e.ends_with("(expected 1 to 128 printable characters)"),
                "{e}"
            );
        }
        assert!(check_task("ticket-7 für Zoë").is_ok());
    }

    #[test]
    fn cli_secrets() {
        let mut g = Grant::new("t");
        g.add_cli("secret:api-token").unwrap();
        assert!(g.secrets.contains("api-token"));
        assert!(matches!(
            g.add_cli("secret:api-token"),
            Err(GrantError::DuplicateSecret { .. })
        ));
        assert!(
            g.add_cli("secret:API")
                .unwrap_err()
                .to_string()
                .contains("invalid secret name")
        );
    }

    #[test]
    fn grant_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("task.toml");
        std::fs::write(
            &f,
            "task = \"t-1\"\n[fs.workspace]\npath = \"repo\"\nrights = [\"read\"]\n",
        )
        .unwrap();
        let g = Grant::load(&f).unwrap();
        assert_eq!(g.task, "t-1");
        assert_eq!(g.fs["workspace"].path, dir.path().join("repo"));

        std::fs::write(
            &f,
            "task = \"t-1\"\n[fs.workspace]\npath = \"repo\"\nrights = [\"rwx\"]\n",
        )
        .unwrap();
        let e = Grant::load(&f).unwrap_err().to_string();
        assert!(
            e.contains("line 4") && e.contains("unknown variant `rwx`"),
            "{e}"
        );

        std::fs::write(&f, "task = \"\"\n").unwrap();
        assert!(
            Grant::load(&f)
                .unwrap_err()
                .to_string()
                .contains("invalid task id")
        );
    }
}
