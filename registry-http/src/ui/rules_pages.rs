//! The pages of the rules on tags: retention (rules in force, their
//! schedule, the last run and dry run, the editor with its preview) and
//! immutable tags.

use maud::{Markup, html};
use registry_core::policy::{ImmutableRule, RetentionRule};
use registry_core::registry::retention::RetentionReport;

use super::pages::{
    Frame, bytes, count, csrf_field, layout, schedule_form, short, time, trash_icon,
};
use super::rules_form::{Field, IMMUTABLE_FIELDS, RETENTION_FIELDS, Row};

/// Most tags a report lists on a page (the admin API has them all).
const LISTED: usize = 1000;

const PATTERNS: &str = "Patterns are globs (v*, release-*) or regular expressions between \
    slashes (/^v[0-9]+$/), separated by spaces; repositories are globs where * stays within \
    one path component and ** spans several.";

pub struct RetentionPage<'a> {
    pub rules: &'a [RetentionRule],
    pub schedule: Option<&'a str>,
    pub next_run: Option<String>,
    pub retention_first: bool,
    pub last: Option<&'a RetentionReport>,
    pub last_dry_run: Option<&'a RetentionReport>,
    /// The editor's rows (the rules in force, or what was posted).
    pub editor: &'a [Row],
    /// A dry run of the editor's rules, and whether they are unsaved.
    pub preview: Option<(&'a RetentionReport, bool)>,
}

fn tags(r: &RetentionReport) -> String {
    count(r.tags_deleted as usize, "tag", "tags")
}

fn repositories(r: &RetentionReport) -> String {
    count(r.repositories.len(), "repository", "repositories")
}

fn join(list: &[String]) -> String {
    list.join(" ")
}

fn within(d: Option<std::time::Duration>) -> String {
    d.map(|d| humantime::format_duration(d).to_string())
        .unwrap_or_default()
}

/// The tags a run deleted (or would), by repository, with the rule that
/// condemned each and the bytes freed per repository.
fn report_table(id: &str, r: &RetentionReport) -> Markup {
    let rows = r.repositories.iter().flat_map(|repo| {
        repo.tags
            .iter()
            .enumerate()
            .map(move |(i, t)| (repo, i == 0, t))
    });
    let more = (r.tags_deleted as usize).saturating_sub(LISTED);
    html! {
        @if r.repositories.is_empty() {
            p.muted id=(id) { "No tag to delete." }
        } @else {
            table.report id=(id) {
                thead { tr { th { "Repository" } th { "Tag" } th { "Digest" } th { "Rule" } th.num { "Frees" } } }
                tbody {
                    @for (repo, first, t) in rows.take(LISTED) {
                        tr.first[first] data-repository=(repo.repository) data-tag=(t.tag) {
                            td { @if first { a href={ "/ui/r/" (repo.repository) } { (repo.repository) } } }
                            td.tag { (t.tag) }
                            td { code title=(t.digest) { (short(&t.digest)) } }
                            td { (t.rule) }
                            td.num { @if first { (bytes(repo.bytes)) } }
                        }
                    }
                }
            }
            @if more > 0 { p.muted { "… and " (more) " more tags (GET /admin/retention lists them all)." } }
        }
    }
}

/// When a run was, who started it, and what it deleted.
fn report_summary(r: &RetentionReport, verb: &str) -> Markup {
    html! {
        p.muted {
            (time(r.finished_ms)) ", " (r.trigger) " run by " strong { (r.actor) } ": "
            (verb) " " strong { (tags(r)) } " in " (repositories(r)) ", "
            "freeing " strong { (bytes(r.bytes)) } " once a collection runs."
        }
    }
}

fn cards(p: &RetentionPage<'_>) -> Markup {
    let last = |r: Option<&RetentionReport>| {
        html! {
            @match r {
                Some(r) => { div.value { (tags(r)) } div.muted { (bytes(r.bytes)) ", " (time(r.finished_ms)) } }
                None => { div.value { "—" } div.muted { "None yet" } }
            }
        }
    };
    html! {
        div.cards {
            div.card #rules-count { div.label { "Rules in force" } div.value { (p.rules.len()) } }
            div.card #retention-next {
                div.label { "Schedule" }
                @match (p.schedule, &p.next_run) {
                    (Some(s), Some(n)) => { div.value.small { code { (s) } } div.muted { "next run " (n) " UTC" } }
                    _ => { div.value { "Off" } div.muted { "runs when started" } }
                }
            }
            div.card #retention-gc {
                div.label { "With garbage collection" }
                @if p.retention_first {
                    div.value.small { "First phase of every run" } div.muted { "[gc] retention_first = true" }
                } @else {
                    div.value.small { "Not part of collections" } div.muted { "[gc] retention_first = false" }
                }
            }
            div.card #last-retention { div.label { "Last run deleted" } (last(p.last)) }
            div.card #last-retention-dry-run { div.label { "Last dry run would delete" } (last(p.last_dry_run)) }
        }
    }
}

fn rules_table(rules: &[RetentionRule]) -> Markup {
    html! {
        @if rules.is_empty() {
            p.muted #rules { "No retention rules: every tag is kept." }
        } @else {
            table #rules {
                thead { tr { th { "Name" } th { "Repositories" } th { "Applies to" } th { "Always keeps" } th.num { "Keep last" } th { "Pushed within" } th { "Pulled within" } } }
                tbody {
                    @for r in rules {
                        tr data-rule=(r.name) {
                            td { strong { (r.name) } }
                            td { code { (r.repositories) } }
                            td { @if r.tags.is_empty() { span.muted { "all tags" } } @else { code { (join(&r.tags)) } } }
                            td { code { (join(&r.keep)) } }
                            td.num { @if let Some(n) = r.keep_last { (n) } }
                            td { (within(r.keep_pushed_within)) }
                            td { (within(r.keep_pulled_within)) }
                        }
                    }
                }
            }
        }
    }
}

/// An editor of rules: a row of text fields per rule, each with a remove
/// button, and the form's buttons. Enter in a field presses `default`.
fn editor(
    f: &Frame<'_>,
    id: &str,
    action: &str,
    fields: &[Field],
    rows: &[Row],
    default: &str,
    buttons: Markup,
) -> Markup {
    html! {
        form.editor id=(id) method="post" action=(action) {
            (csrf_field(f))
            // The first submit button is the one Enter presses: not a row's remove.
            button.default-action type="submit" name="action" value=(default) tabindex="-1" aria-hidden="true" {}
            table.editor {
                thead { tr { @for fl in fields { th { (fl.label) } } th {} } }
                tbody {
                    @for (i, row) in rows.iter().enumerate() {
                        tr data-row=(i) {
                            @for fl in fields {
                                td {
                                    input type="text" name={ "r" (i) "." (fl.key) } aria-label=(fl.label)
                                        value=(row.get(fl.key).map_or("", String::as_str)) placeholder=(fl.placeholder);
                                }
                            }
                            td {
                                button.trash type="submit" name="action" value={ "remove-" (i) } title="Remove this rule" aria-label="Remove this rule" { (trash_icon()) }
                            }
                        }
                    }
                }
            }
            div.toolbar {
                button type="submit" name="action" value="add" { "Add rule" }
                (buttons)
            }
        }
    }
}

fn preview(report: &RetentionReport, unsaved: bool) -> Markup {
    html! {
        section #preview-section {
            h2 { "Preview" @if unsaved { " of the unsaved rules" } }
            p {
                "A run now would delete " strong #preview-count { (tags(report)) }
                " in " (repositories(report)) "; the collection after it would free "
                strong #preview-bytes { (bytes(report.bytes)) } ". Nothing has been deleted"
                @if unsaved { " or saved" } "."
            }
            (report_table("preview", report))
        }
    }
}

pub fn retention(f: &Frame<'_>, p: &RetentionPage<'_>) -> Markup {
    layout(
        f,
        "Retention",
        "retention",
        html! {
            h1 { "Retention" }
            p.muted {
                "A tag is deleted when a rule applies to it and no rule that applies keeps it. "
                "Immutable tags, and tags an index in the repository needs, are never deleted. "
                "Deleting tags frees their images' bytes at the next garbage collection."
            }
            (cards(p))
            div.toolbar {
                form.inline #retention-run method="post" action="/ui/retention/run"
                    data-confirm="Run the saved retention rules now? The tags they do not keep are deleted." {
                    (csrf_field(f))
                    button.primary #retention-run-now type="submit" disabled[p.rules.is_empty()] { "Run now" }
                }
                a href="/ui/activity?action=tag_delete" { "Deletions in the activity log" }
            }
            @if let Some((report, unsaved)) = p.preview { (preview(report, unsaved)) }
            h2 { "Rules in force" }
            (rules_table(p.rules))
            h2 { "Edit rules" }
            p.muted {
                (PATTERNS) " Applies to: the tags the rule judges (empty: all). A tag is kept if it matches "
                "Always keep, is among the Keep last most recently pushed, or was pushed or pulled within "
                "the durations given (30d, 12h, 2w). Preview tries the rules without saving them."
            }
            (editor(f, "retention-editor", "/ui/retention/rules", &RETENTION_FIELDS, p.editor, "preview", html! {
                button #retention-preview type="submit" name="action" value="preview" { "Preview" }
                button.primary #retention-save type="submit" name="action" value="save" { "Save" }
            }))
            h2 { "Last run" }
            @match p.last {
                Some(r) => { (report_summary(r, "deleted")) (report_table("last-run", r)) }
                None => { p.muted #last-run { "No retention run yet." } }
            }
            h2 { "Last dry run of the rules in force" }
            @match p.last_dry_run {
                Some(r) => { (report_summary(r, "would delete")) (report_table("last-dry-run", r)) }
                None => { p.muted #last-dry-run { "No dry run yet." } }
            }
            h2 { "Schedule" }
            (schedule_form(f, "retention-schedule", "/ui/retention/schedule", p.schedule, p.next_run.as_deref()))
        },
    )
}

pub fn immutable(f: &Frame<'_>, rules: &[ImmutableRule], editor_rows: &[Row]) -> Markup {
    layout(
        f,
        "Immutable tags",
        "immutable",
        html! {
            h1 { "Immutable tags" }
            p.muted {
                "A tag a rule matches cannot be pushed again to another image or deleted, and neither "
                "can its image or its repository, by anyone, until the rule changes. Retention skips it."
            }
            h2 { "Rules in force" }
            @if rules.is_empty() {
                p.muted #immutable-rules { "No immutable tags." }
            } @else {
                table #immutable-rules {
                    thead { tr { th { "Name" } th { "Repositories" } th { "Tags" } } }
                    tbody {
                        @for r in rules {
                            tr {
                                td { @match &r.name { Some(n) => strong { (n) }, None => span.muted { "(unnamed)" } } }
                                td { code { (r.repositories) } }
                                td { code { (join(&r.tags)) } }
                            }
                        }
                    }
                }
            }
            h2 { "Edit rules" }
            p.muted { (PATTERNS) " The name (optional) is what refusals quote." }
            (editor(f, "immutable-editor", "/ui/immutable", &IMMUTABLE_FIELDS, editor_rows, "save", html! {
                button.primary #immutable-save type="submit" name="action" value="save" { "Save" }
            }))
        },
    )
}
