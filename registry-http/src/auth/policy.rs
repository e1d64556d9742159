//! Who may do what: repository globs -> users and groups -> actions.

use std::collections::BTreeMap;

use globset::{GlobBuilder, GlobMatcher};
use serde::{Deserialize, Serialize};

/// The actions a repository grants: what the token protocol calls `pull`,
/// `push` and `delete`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Actions {
    pub pull: bool,
    pub push: bool,
    pub delete: bool,
}

impl Actions {
    pub const NONE: Actions = Actions {
        pull: false,
        push: false,
        delete: false,
    };
    pub const ALL: Actions = Actions {
        pull: true,
        push: true,
        delete: true,
    };
    pub const PULL: Actions = Actions {
        pull: true,
        push: false,
        delete: false,
    };
    /// Pushing needs pulling too (clients check what is there first).
    pub const PUSH: Actions = Actions {
        pull: true,
        push: true,
        delete: false,
    };
    pub const DELETE: Actions = Actions {
        pull: false,
        push: false,
        delete: true,
    };

    pub fn union(self, o: Actions) -> Actions {
        Actions {
            pull: self.pull || o.pull,
            push: self.push || o.push,
            delete: self.delete || o.delete,
        }
    }

    pub fn intersect(self, o: Actions) -> Actions {
        Actions {
            pull: self.pull && o.pull,
            push: self.push && o.push,
            delete: self.delete && o.delete,
        }
    }

    pub fn covers(self, need: Actions) -> bool {
        self.intersect(need) == need
    }

    pub fn is_empty(self) -> bool {
        self == Actions::NONE
    }

    /// Parses `pull,push,delete` (and `*` for all); unknown names are ignored.
    pub fn parse(list: &str) -> Actions {
        list.split(',').fold(Actions::NONE, |a, name| {
            a.union(match name.trim() {
                "pull" => Actions::PULL,
                "push" => Actions {
                    push: true,
                    ..Actions::NONE
                },
                "delete" => Actions::DELETE,
                "*" => Actions::ALL,
                _ => Actions::NONE,
            })
        })
    }

    /// The comma-separated names, in the protocol's order.
    pub fn names(self) -> Vec<&'static str> {
        let mut v = Vec::new();
        if self.pull {
            v.push("pull");
        }
        if self.push {
            v.push("push");
        }
        if self.delete {
            v.push("delete");
        }
        v
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Pull,
    Push,
    Delete,
}

/// One rule: these users and groups may do these actions on repositories
/// matching the glob. The user `*` means any authenticated user and
/// `anonymous` means requests without credentials.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessRule {
    /// `*` stays within one path component, `**` spans several.
    pub repositories: String,
    #[serde(default)]
    pub users: Vec<String>,
    #[serde(default)]
    pub groups: Vec<String>,
    pub actions: Vec<Action>,
}

/// Who is asking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    Anonymous,
    User(String),
}

impl Principal {
    pub fn name(&self) -> Option<&str> {
        match self {
            Principal::Anonymous => None,
            Principal::User(u) => Some(u),
        }
    }
}

struct Compiled {
    glob: GlobMatcher,
    users: Vec<String>,
    groups: Vec<String>,
    actions: Actions,
}

pub struct Policy {
    rules: Vec<Compiled>,
    groups: BTreeMap<String, Vec<String>>,
    admins: Vec<String>,
}

impl Policy {
    /// With no rules at all, every authenticated user may do everything
    /// (and, with no admins named, is an administrator): the shape of the
    /// `--htpasswd` shortcut.
    pub fn new(
        rules: &[AccessRule],
        groups: BTreeMap<String, Vec<String>>,
        admins: Vec<String>,
    ) -> Result<Policy, String> {
        let default_rule = [AccessRule {
            repositories: "**".into(),
            users: vec!["*".into()],
            groups: vec![],
            actions: vec![Action::Pull, Action::Push, Action::Delete],
        }];
        let rules = if rules.is_empty() {
            &default_rule[..]
        } else {
            rules
        };
        let compiled = rules
            .iter()
            .map(|r| {
                let glob = GlobBuilder::new(&r.repositories)
                    .literal_separator(true)
                    .build()
                    .map_err(|e| format!("repository glob {:?}: {e}", r.repositories))?
                    .compile_matcher();
                let actions = r.actions.iter().fold(Actions::NONE, |a, x| {
                    a.union(match x {
                        Action::Pull => Actions::PULL,
                        Action::Push => Actions {
                            push: true,
                            ..Actions::NONE
                        },
                        Action::Delete => Actions::DELETE,
                    })
                });
                for g in &r.groups {
                    if !groups.contains_key(g) {
                        return Err(format!("access rule names unknown group {g:?}"));
                    }
                }
                Ok(Compiled {
                    glob,
                    users: r.users.clone(),
                    groups: r.groups.clone(),
                    actions,
                })
            })
            .collect::<Result<_, String>>()?;
        Ok(Policy {
            rules: compiled,
            groups,
            admins,
        })
    }

    fn in_group(&self, user: &str, group: &str) -> bool {
        self.groups
            .get(group)
            .is_some_and(|members| members.iter().any(|m| m == user))
    }

    fn applies(&self, rule: &Compiled, who: &Principal) -> bool {
        match who {
            Principal::Anonymous => rule.users.iter().any(|u| u == "anonymous"),
            Principal::User(name) => {
                rule.users.iter().any(|u| u == "*" || u == name)
                    || rule.groups.iter().any(|g| self.in_group(name, g))
            }
        }
    }

    /// What `who` may do in `repo`: the union of every rule that applies.
    pub fn allowed(&self, who: &Principal, repo: &str) -> Actions {
        self.rules
            .iter()
            .filter(|r| r.glob.is_match(repo) && self.applies(r, who))
            .fold(Actions::NONE, |a, r| a.union(r.actions))
    }

    /// Whether anonymous requests may do anything at all.
    pub fn anonymous_access(&self) -> bool {
        self.rules
            .iter()
            .any(|r| r.users.iter().any(|u| u == "anonymous"))
    }

    pub fn is_admin(&self, who: &Principal) -> bool {
        match who {
            Principal::Anonymous => false,
            Principal::User(name) => {
                self.admins.is_empty() || self.admins.iter().any(|a| a == name)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(repos: &str, users: &[&str], groups: &[&str], actions: &[Action]) -> AccessRule {
        AccessRule {
            repositories: repos.into(),
            users: users.iter().map(|s| s.to_string()).collect(),
            groups: groups.iter().map(|s| s.to_string()).collect(),
            actions: actions.to_vec(),
        }
    }

    #[test]
    fn rules_combine() {
        let groups = BTreeMap::from([("devs".to_string(), vec!["bob".to_string()])]);
        let p = Policy::new(
            &[
                rule("**", &["anonymous"], &[], &[Action::Pull]),
                rule("team/*", &[], &["devs"], &[Action::Pull, Action::Push]),
                rule(
                    "team/*",
                    &["alice"],
                    &[],
                    &[Action::Pull, Action::Push, Action::Delete],
                ),
            ],
            groups,
            vec!["alice".into()],
        )
        .unwrap();
        let bob = Principal::User("bob".into());
        let alice = Principal::User("alice".into());
        assert_eq!(p.allowed(&Principal::Anonymous, "team/app"), Actions::PULL);
        assert!(p.allowed(&bob, "team/app").covers(Actions::PUSH));
        assert!(!p.allowed(&bob, "team/app").delete);
        assert!(!p.allowed(&bob, "team/app/sub").push, "* is one component");
        assert_eq!(p.allowed(&alice, "team/app"), Actions::ALL);
        assert!(p.anonymous_access());
        assert!(p.is_admin(&alice) && !p.is_admin(&bob));
        assert!(
            Policy::new(
                &[rule("**", &[], &["nope"], &[Action::Pull])],
                BTreeMap::new(),
                vec![]
            )
            .is_err()
        );
    }

    #[test]
    fn no_rules_means_every_user_does_everything() {
        let p = Policy::new(&[], BTreeMap::new(), vec![]).unwrap();
        let u = Principal::User("x".into());
        assert_eq!(p.allowed(&u, "any/thing"), Actions::ALL);
        assert_eq!(p.allowed(&Principal::Anonymous, "any"), Actions::NONE);
        assert!(p.is_admin(&u));
        assert!(!p.anonymous_access());
    }

    #[test]
    fn action_lists() {
        assert_eq!(Actions::parse("pull,push"), Actions::PUSH);
        assert_eq!(Actions::parse("*"), Actions::ALL);
        assert_eq!(Actions::parse("bogus"), Actions::NONE);
        assert_eq!(Actions::ALL.names(), vec!["pull", "push", "delete"]);
    }
}
