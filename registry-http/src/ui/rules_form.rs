//! The rule editors' forms: one row of text fields per rule, named
//! `r<row>.<field>`, read back into rules (and shown again as typed when
//! they are not valid). An operator never writes JSON: patterns are
//! separated by spaces (or commas), durations are written `30d`, `12h`.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use registry_core::Error;
use registry_core::policy::{Immutable, ImmutableRule, Retention, RetentionRule};

use crate::admin_rules::duplicate_name;

/// One row of an editor as typed: field -> text.
pub type Row = BTreeMap<String, String>;

/// A field of an editor's rows.
pub struct Field {
    pub key: &'static str,
    pub label: &'static str,
    pub placeholder: &'static str,
}

const fn field(key: &'static str, label: &'static str, placeholder: &'static str) -> Field {
    Field {
        key,
        label,
        placeholder,
    }
}

pub const RETENTION_FIELDS: [Field; 7] = [
    field("name", "Name", "ci-cleanup"),
    field("repositories", "Repositories", "ci/**"),
    field("tags", "Applies to tags", "all tags"),
    field("keep", "Always keep", "latest v* /^release-/"),
    field("keep_last", "Keep last", "10"),
    field("keep_pushed_within", "Pushed within", "30d"),
    field("keep_pulled_within", "Pulled within", "14d"),
];

pub const IMMUTABLE_FIELDS: [Field; 3] = [
    field("name", "Name", "releases"),
    field("repositories", "Repositories", "team/**"),
    field("tags", "Tags", "v* /^[0-9.]+$/"),
];

/// The rows of a posted editor, in row order (blank rows included).
pub fn rows(form: &HashMap<String, String>) -> Vec<Row> {
    let mut by_row: BTreeMap<usize, Row> = BTreeMap::new();
    for (key, value) in form {
        let Some((row, field)) = key.strip_prefix('r').and_then(|k| k.split_once('.')) else {
            continue;
        };
        if let Ok(row) = row.parse::<usize>() {
            by_row
                .entry(row)
                .or_default()
                .insert(field.to_owned(), value.clone());
        }
    }
    by_row.into_values().collect()
}

fn blank(row: &Row) -> bool {
    row.values().all(|v| v.trim().is_empty())
}

fn text<'r>(row: &'r Row, key: &str) -> &'r str {
    row.get(key).map_or("", |v| v.trim())
}

/// Patterns as typed: separated by white space, or by commas outside a
/// `/regex/` or a glob's `{a,b}` (neither can hold a space a tag could
/// match: tags have none).
fn patterns(text: &str) -> Vec<String> {
    text.split_whitespace()
        .flat_map(|token| {
            let whole = (token.len() > 1 && token.starts_with('/') && token.ends_with('/'))
                || token.contains('{');
            if whole {
                vec![token.to_owned()]
            } else {
                token.split(',').map(str::to_owned).collect()
            }
        })
        .filter(|p| !p.is_empty())
        .collect()
}

fn duration(row: &Row, key: &str, what: &str, rule: &str) -> Result<Option<Duration>, String> {
    match text(row, key) {
        "" => Ok(None),
        t => humantime::parse_duration(t).map(Some).map_err(|e| {
            format!("Rule {rule}: {what} {t:?} is not a duration like 30d or 12h ({e}).")
        }),
    }
}

/// The name of row `n` (counted from 1) in messages.
fn label(row: &Row, n: usize) -> String {
    match text(row, "name") {
        "" => format!("{n}"),
        name => format!("{n} ({name})"),
    }
}

fn capitalized(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|first| first.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

fn compile_error(rule: &str, e: Error) -> String {
    match e {
        Error::InvalidRule(msg) => format!("Rule {rule}: {msg}."),
        e => format!("Rule {rule}: {e}."),
    }
}

fn repositories<'r>(row: &'r Row, rule: &str) -> Result<&'r str, String> {
    match text(row, "repositories") {
        "" => Err(format!(
            "Rule {rule}: say which repositories it covers (a glob such as team/**)."
        )),
        glob => Ok(glob),
    }
}

/// The retention rules of the filled rows, each checked (patterns compile,
/// numbers and durations parse, names present and distinct).
pub fn retention_rules(rows: &[Row]) -> Result<Vec<RetentionRule>, String> {
    let mut rules = Vec::new();
    for (i, row) in rows.iter().enumerate().filter(|(_, r)| !blank(r)) {
        let l = label(row, i + 1);
        let name = text(row, "name");
        if name.is_empty() {
            return Err(format!("Rule {l}: every retention rule needs a name."));
        }
        let repositories = repositories(row, &l)?;
        let keep_last = match text(row, "keep_last") {
            "" => None,
            t => Some(
                t.parse::<usize>()
                    .map_err(|_| format!("Rule {l}: keep last {t:?} is not a whole number."))?,
            ),
        };
        let rule = RetentionRule {
            name: name.to_owned(),
            repositories: repositories.to_owned(),
            tags: patterns(text(row, "tags")),
            keep: patterns(text(row, "keep")),
            keep_last,
            keep_pushed_within: duration(row, "keep_pushed_within", "pushed within", &l)?,
            keep_pulled_within: duration(row, "keep_pulled_within", "pulled within", &l)?,
        };
        Retention::new(std::slice::from_ref(&rule)).map_err(|e| compile_error(&l, e))?;
        rules.push(rule);
    }
    match duplicate_name(rules.iter().map(|r| r.name.as_str())) {
        Some(e) => Err(format!("{}.", capitalized(&e))),
        None => Ok(rules),
    }
}

/// The immutable-tag rules of the filled rows, each checked.
pub fn immutable_rules(rows: &[Row]) -> Result<Vec<ImmutableRule>, String> {
    let mut rules = Vec::new();
    for (i, row) in rows.iter().enumerate().filter(|(_, r)| !blank(r)) {
        let l = label(row, i + 1);
        let repositories = repositories(row, &l)?;
        let tags = patterns(text(row, "tags"));
        if tags.is_empty() {
            return Err(format!(
                "Rule {l}: name the tags it protects (such as v* or /^v[0-9]+$/)."
            ));
        }
        let name = text(row, "name");
        let rule = ImmutableRule {
            name: (!name.is_empty()).then(|| name.to_owned()),
            repositories: repositories.to_owned(),
            tags,
        };
        Immutable::new(std::slice::from_ref(&rule)).map_err(|e| compile_error(&l, e))?;
        rules.push(rule);
    }
    match duplicate_name(rules.iter().filter_map(|r| r.name.as_deref())) {
        Some(e) => Err(format!("{}.", capitalized(&e))),
        None => Ok(rules),
    }
}

fn row_of(fields: &[(&str, String)]) -> Row {
    fields
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect()
}

fn since(d: Option<Duration>) -> String {
    d.map(|d| humantime::format_duration(d).to_string())
        .unwrap_or_default()
}

/// A saved retention rule as an editor row.
pub fn retention_row(r: &RetentionRule) -> Row {
    row_of(&[
        ("name", r.name.clone()),
        ("repositories", r.repositories.clone()),
        ("tags", r.tags.join(" ")),
        ("keep", r.keep.join(" ")),
        (
            "keep_last",
            r.keep_last.map(|n| n.to_string()).unwrap_or_default(),
        ),
        ("keep_pushed_within", since(r.keep_pushed_within)),
        ("keep_pulled_within", since(r.keep_pulled_within)),
    ])
}

/// A saved immutable-tag rule as an editor row.
pub fn immutable_row(r: &ImmutableRule) -> Row {
    row_of(&[
        ("name", r.name.clone().unwrap_or_default()),
        ("repositories", r.repositories.clone()),
        ("tags", r.tags.join(" ")),
    ])
}

/// What a press of one of the editor's buttons asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    Add,
    Remove(usize),
    Preview,
    Save,
}

pub fn action(form: &HashMap<String, String>) -> Option<Action> {
    match form.get("action").map(String::as_str)? {
        "add" => Some(Action::Add),
        "preview" => Some(Action::Preview),
        "save" => Some(Action::Save),
        other => other
            .strip_prefix("remove-")
            .and_then(|n| n.parse().ok())
            .map(Action::Remove),
    }
}

/// Applies an add or a remove to the rows (nothing else changes them).
pub fn edit(rows: &mut Vec<Row>, action: &Action) {
    match action {
        Action::Add => rows.push(Row::new()),
        Action::Remove(i) if *i < rows.len() => {
            rows.remove(*i);
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn rows_become_rules_and_back() {
        let f = form(&[
            ("r1.name", "ci"),
            ("r1.repositories", "ci/**"),
            ("r1.keep", "latest, v*  /^rel-[0-9]{1,3}$/ {a,b}*"),
            ("r1.keep_last", " 3 "),
            ("r1.keep_pushed_within", "30d"),
            ("r0.name", ""),
            ("r0.repositories", " "),
            ("csrf", "x"),
            ("action", "save"),
        ]);
        let rows = rows(&f);
        assert_eq!(rows.len(), 2, "the blank row is kept for the editor");
        let rules = retention_rules(&rows).unwrap();
        assert_eq!(rules.len(), 1, "but gives no rule");
        let r = &rules[0];
        assert_eq!(r.keep, ["latest", "v*", "/^rel-[0-9]{1,3}$/", "{a,b}*"]);
        assert_eq!(r.keep_last, Some(3));
        assert_eq!(r.keep_pushed_within, Some(Duration::from_secs(30 * 86400)));
        assert!(r.tags.is_empty() && r.keep_pulled_within.is_none());
        let again = retention_rules(&[retention_row(r)]).unwrap();
        assert_eq!(
            &again[0], r,
            "a saved rule shown in the editor saves unchanged"
        );
        assert_eq!(action(&f), Some(Action::Save));
    }

    #[test]
    fn bad_rows_say_what_is_wrong() {
        let bad = |pairs: &[(&str, &str)]| retention_rules(&rows(&form(pairs))).unwrap_err();
        let e = bad(&[("r0.name", "a"), ("r0.repositories", "ci/[")]);
        assert!(
            e.contains("Rule 1 (a)") && e.contains("repository glob"),
            "{e}"
        );
        let e = bad(&[
            ("r0.name", "a"),
            ("r0.repositories", "x"),
            ("r0.keep", "/(/"),
        ]);
        assert!(e.contains("tag pattern"), "{e}");
        let e = bad(&[("r0.repositories", "x")]);
        assert!(e.contains("needs a name"), "{e}");
        let e = bad(&[
            ("r0.name", "a"),
            ("r0.repositories", "x"),
            ("r0.keep_last", "-1"),
        ]);
        assert!(e.contains("whole number"), "{e}");
        let e = bad(&[
            ("r0.name", "a"),
            ("r0.repositories", "x"),
            ("r0.keep_pulled_within", "soon"),
        ]);
        assert!(e.contains("duration"), "{e}");
        let e = bad(&[
            ("r0.name", "a"),
            ("r0.repositories", "x"),
            ("r1.name", "a"),
            ("r1.repositories", "y"),
        ]);
        assert!(e.contains("Two rules are named \"a\""), "{e}");
        let e = immutable_rules(&rows(&form(&[("r0.repositories", "x")]))).unwrap_err();
        assert!(e.contains("name the tags"), "{e}");
        let ok = immutable_rules(&rows(&form(&[("r0.repositories", "x"), ("r0.tags", "v1")])));
        assert_eq!(
            ok.unwrap()[0].name,
            None,
            "an immutable rule's name is optional"
        );
    }

    #[test]
    fn add_and_remove_rows() {
        let mut rows = vec![retention_row(&RetentionRule {
            name: "a".into(),
            repositories: "x".into(),
            tags: vec![],
            keep: vec![],
            keep_last: Some(1),
            keep_pushed_within: None,
            keep_pulled_within: None,
        })];
        edit(&mut rows, &Action::Add);
        assert_eq!(rows.len(), 2);
        edit(&mut rows, &Action::Remove(0));
        assert!(rows.len() == 1 && blank(&rows[0]));
        edit(&mut rows, &Action::Remove(7));
        assert_eq!(rows.len(), 1);
        assert_eq!(
            action(&form(&[("action", "remove-3")])),
            Some(Action::Remove(3))
        );
        assert_eq!(action(&form(&[("action", "drop")])), None);
    }
}
