/*!
What the host lets a sandbox do beyond reading (SPEC §11.1). The server
checks every request's [`OpClass`] here after validation and before the
scope, so a refused request touches no store.
*/
#![forbid(unsafe_code)]

use std::collections::BTreeSet;

use crate::error::{Error, Result};
use crate::protocol::message::OpClass;

/// The permitted operation classes; reads are always permitted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Permits(BTreeSet<OpClass>);

impl Permits {
    /// Nothing beyond reads (the default).
    pub fn read_only() -> Permits {
        Permits::default()
    }

    /// Adds the classes of one `--permit` value (`refresh`, `login`,
    /// `write`, `github-write`, or a comma list of them).
    pub fn add(&mut self, list: &str) -> Result<()> {
        for name in list.split(',').map(str::trim) {
            let class = OpClass::PERMITTABLE.into_iter().find(|c| c.as_str() == name);
            match (class, name) {
                (Some(c), _) => {
                    self.0.insert(c);
                }
                _ => {
                    return Err(Error::Usage(format!(
                        "--permit {name:?}: not a class (refresh, login, write or github-write)"
                    )));
                }
            }
        }
        Ok(())
    }

    /// Whether requests of `class` are served.
    pub fn allows(&self, class: OpClass) -> bool {
        class == OpClass::Read || self.0.contains(&class)
    }

    /// `read` plus the permitted classes, for logs and `doctor`.
    pub fn describe(&self) -> String {
        let mut names = vec!["read"];
        names.extend(self.0.iter().map(|c| c.as_str()));
        names.join(",")
    }

    /// The fixed text of a refusal.
    pub fn refusal(op: &str, class: OpClass) -> String {
        format!(
            "Operation {op} is not permitted for the sandbox; the host can allow it with --permit {}",
            class.as_str()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_parse_alone_and_as_lists() {
        let mut p = Permits::read_only();
        assert!(p.allows(OpClass::Read) && !p.allows(OpClass::Write));
        p.add("refresh").unwrap();
        p.add("login, write").unwrap();
        assert!(p.allows(OpClass::Refresh) && p.allows(OpClass::Login) && p.allows(OpClass::Write));
        assert_eq!(p.describe(), "read,refresh,login,write");
        assert!(Permits::read_only().add("admin").is_err());
        assert!(Permits::read_only().add("").is_err());
        assert!(Permits::read_only().add("read").is_err(), "reads need no permit");
        p.add("github-write").unwrap();
        assert!(p.allows(OpClass::GithubWrite));
        assert_eq!(p.describe(), "read,refresh,login,write,github-write");
        assert_eq!(
            Permits::refusal("save_token", OpClass::Write),
            "Operation save_token is not permitted for the sandbox; the host can allow it with --permit write"
        );
    }
}
