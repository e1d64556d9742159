//! The pages, as maud templates (escaped by construction).

use maud::{DOCTYPE, Markup, PreEscaped, html};
use registry_core::index::{Activity, ManifestView, RepoSummary, RepositoryView, TagView};
use registry_core::manifest::Kind;
use registry_gc::RunReport;

/// What every page knows about who is looking.
pub struct Frame<'a> {
    pub user: Option<&'a str>,
    pub auth_enabled: bool,
    pub admin: bool,
    pub csrf: &'a str,
    pub flash: Option<(&'a str, bool)>,
}

pub use crate::human_bytes as bytes;

pub fn time(ms: u64) -> String {
    chrono::DateTime::from_timestamp_millis(ms as i64)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_default()
}

pub(super) fn short(digest: &str) -> &str {
    let hex = digest.split_once(':').map_or(digest, |(_, h)| h);
    &hex[..hex.len().min(12)]
}

fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// The icons, drawn once per page as SVG symbols (no icon font or image to
/// fetch); a repository with a thousand tags repeats only the reference.
fn icon_symbols() -> Markup {
    html! {
        svg.icons width="0" height="0" aria-hidden="true" {
            symbol #i-trash viewBox="0 0 16 16" {
                path d="M6 1.5h4M2.5 3.5h11M4 3.5l.7 10.2c.05.75.6 1.3 1.3 1.3h4c.7 0 1.25-.55 1.3-1.3L12 3.5M6.5 6.5v5.5M9.5 6.5v5.5"
                    fill="none" stroke="currentColor" stroke-width="1.3" stroke-linecap="round" {}
            }
            symbol #i-lock viewBox="0 0 16 16" {
                rect x="3" y="7" width="10" height="7.5" rx="1.5" fill="none" stroke="currentColor" stroke-width="1.3" {}
                path d="M5.25 7V5a2.75 2.75 0 0 1 5.5 0v2M8 10v2" fill="none" stroke="currentColor" stroke-width="1.3" stroke-linecap="round" {}
            }
        }
    }
}

/// A padlock standing where a delete control would be: `why` says which
/// rule protects it (as a tooltip, and for screen readers).
fn lock(why: &str) -> Markup {
    html! {
        span.lock title=(why) aria-label=(why) role="img" {
            svg width="16" height="16" aria-hidden="true" { use href="#i-lock" {} }
        }
    }
}

/// `n` things: `1 tag`, `2 tags`.
pub(super) fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// A time to the minute (what the record of pulls resolves).
fn minute(ms: u64) -> String {
    chrono::DateTime::from_timestamp_millis(ms as i64)
        .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_default()
}

/// A trash can.
pub(super) fn trash_icon() -> Markup {
    html! {
        svg width="16" height="16" aria-hidden="true" { use href="#i-trash" {} }
    }
}

pub(super) fn csrf_field(f: &Frame<'_>) -> Markup {
    html! { input type="hidden" name="csrf" value=(f.csrf); }
}

pub fn layout(f: &Frame<'_>, title: &str, active: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Berth" }
                link rel="stylesheet" href="/ui/static/app.css";
                script src="/ui/static/app.js" defer {}
            }
            body {
                (icon_symbols())
                header {
                    a.brand href="/ui/" { "Berth" }
                    nav {
                        a.active[active == "repos"] href="/ui/" { "Repositories" }
                        @if f.admin {
                            a.active[active == "activity"] href="/ui/activity" { "Activity" }
                            a.active[active == "gc"] href="/ui/gc" { "Garbage collection" }
                            a.active[active == "retention"] href="/ui/retention" { "Retention" }
                            a.active[active == "immutable"] href="/ui/immutable" { "Immutable tags" }
                        }
                    }
                    div.who {
                        @match f.user {
                            Some(u) => {
                                span { "Signed in as " strong { (u) } }
                                form.inline method="post" action="/ui/logout" {
                                    (csrf_field(f))
                                    button type="submit" { "Sign out" }
                                }
                            }
                            None if f.auth_enabled => { a href="/ui/login" { "Sign in" } }
                            None => { span.muted { "No authentication configured" } }
                        }
                    }
                }
                main {
                    @if let Some((text, error)) = f.flash {
                        div.flash.error[error] { (text) }
                    }
                    (body)
                }
            }
        }
    }
}

pub fn login(f: &Frame<'_>, error: Option<&str>) -> Markup {
    layout(
        f,
        "Sign in",
        "",
        html! {
            form.login method="post" action="/ui/login" {
                h1 { "Sign in" }
                @if let Some(e) = error { div.flash.error { (e) } }
                (csrf_field(f))
                label for="user" { "User" }
                input #user type="text" name="user" autocomplete="username" autofocus;
                label for="password" { "Password" }
                input #password type="password" name="password" autocomplete="current-password";
                p { button.primary type="submit" { "Sign in" } }
            }
        },
    )
}

pub fn repositories(f: &Frame<'_>, q: &str, repos: &[RepoSummary], next: Option<&str>) -> Markup {
    layout(
        f,
        "Repositories",
        "repos",
        html! {
            h1 { "Repositories" }
            form.toolbar method="get" action="/ui/" {
                input type="search" name="q" value=(q) placeholder="Filter by name";
                button type="submit" { "Search" }
            }
            @if repos.is_empty() {
                p.muted { "No repositories" @if !q.is_empty() { " match " code { (q) } } "." }
            } @else {
                table #repositories {
                    thead { tr { th { "Repository" } th.num { "Tags" } th.num { "Manifests" } th.num { "Size" } th { "Created" } } }
                    tbody {
                        @for r in repos {
                            tr {
                                td { a href={ "/ui/r/" (r.name) } { (r.name) } }
                                td.num { (r.tags) }
                                td.num { (r.manifests) }
                                td.num { (bytes(r.bytes)) }
                                td.muted { (time(r.created_ms)) }
                            }
                        }
                    }
                }
            }
            @if let Some(after) = next {
                p.pager { a href={ "/ui/?q=" (enc(q)) "&after=" (enc(after)) } { "Next page →" } }
            }
        },
    )
}

/// What the repository page needs beyond the index's view.
pub struct RepoPage<'a> {
    pub view: &'a RepositoryView,
    pub can_delete: bool,
    /// Platforms of each index manifest, by digest.
    pub platforms: &'a std::collections::HashMap<String, Vec<String>>,
}

fn manifest_kind(m: &ManifestView) -> String {
    match (&m.artifact_type, m.kind) {
        (_, Kind::Index) => "index".into(),
        (Some(t), Kind::Image)
            if t != "application/vnd.oci.image.config.v1+json"
                && t != "application/vnd.docker.container.image.v1+json" =>
        {
            format!("artifact ({t})")
        }
        _ => "image".into(),
    }
}

fn tag_row(f: &Frame<'_>, p: &RepoPage<'_>, t: &TagView) -> Markup {
    let name = &p.view.name;
    let m = p.view.manifests.iter().find(|m| m.digest == t.digest);
    let platforms = p.platforms.get(t.digest.as_str());
    html! {
        tr data-tag=(t.tag) {
            td { strong { (t.tag) } }
            td { code title=(t.digest) { (short(t.digest.as_str())) } }
            td.muted { (m.map(|m| m.media_type.as_str()).unwrap_or("")) }
            td { @if let Some(p) = platforms { (p.join(", ")) } }
            td.num { (m.map(|m| bytes(m.image_bytes)).unwrap_or_default()) }
            td.muted { (time(t.updated_ms)) }
            td.muted.pulled title="Recorded to the minute; retention rules with \"pulled within\" read it" {
                @match t.pulled_ms { Some(ms) => (minute(ms)), None => "never" }
            }
            td.num title="What deleting this tag frees now (when nothing else keeps its image)" { (bytes(t.freed_if_deleted)) }
            td {
                @if let Some(rule) = &t.immutable {
                    (lock(&format!("Immutable (rule {rule}): it cannot be moved or deleted")))
                } @else if p.can_delete {
                    form.inline method="post" action={ "/ui/r/" (name) "/tags/" (t.tag) "/delete" }
                        data-confirm={ "Delete tag " (t.tag) " from " (name) "? The image stays if other tags or digests still reference it." } {
                        (csrf_field(f))
                        button.trash type="submit" title={ "Delete tag " (t.tag) } aria-label={ "Delete tag " (t.tag) } { (trash_icon()) }
                    }
                }
            }
        }
    }
}

fn manifest_row(f: &Frame<'_>, p: &RepoPage<'_>, m: &ManifestView, referrer: bool) -> Markup {
    let name = &p.view.name;
    let tags: Vec<&str> = p
        .view
        .tags
        .iter()
        .filter(|t| t.digest == m.digest)
        .map(|t| t.tag.as_str())
        .collect();
    html! {
        tr.referrer[referrer] data-digest=(m.digest) {
            td {
                @if referrer { "↳ " }
                code title=(m.digest) { (short(m.digest.as_str())) }
            }
            td { (manifest_kind(m)) }
            td { (tags.join(", ")) }
            td { @if let Some(p) = p.platforms.get(m.digest.as_str()) { (p.join(", ")) } }
            td.num { (bytes(m.image_bytes)) }
            td.muted { (time(m.created_ms)) }
            td.num { @match m.freed_if_deleted { Some(n) => (bytes(n)), None => span.muted { "—" } } }
            td {
                @if let Some(rule) = &m.immutable {
                    (lock(&format!("An immutable tag points at it (rule {rule}): it cannot be deleted")))
                } @else if p.can_delete {
                    @match m.freed_if_deleted {
                        Some(_) => {
                            form.inline method="post" action={ "/ui/r/" (name) "/manifests/" (m.digest) "/delete" }
                                data-confirm={ "Delete image " (m.digest) " and every tag pointing at it from " (name) "?" } {
                                (csrf_field(f))
                                button.danger type="submit" { "Delete image" }
                            }
                        }
                        None => { button.danger disabled title="Listed by an index: delete the index first" { "Delete image" } }
                    }
                }
            }
        }
    }
}

pub fn repository(f: &Frame<'_>, p: &RepoPage<'_>) -> Markup {
    let v = p.view;
    // Referrers are shown under their subject, not on their own.
    let is_referrer = |m: &ManifestView| {
        m.subject
            .as_ref()
            .is_some_and(|s| v.manifests.iter().any(|x| &x.digest == s))
    };
    layout(
        f,
        &v.name,
        "repos",
        html! {
            h1 { (v.name) }
            div.cards {
                div.card { div.label { "Tags" } div.value { (v.tags.len()) } }
                div.card { div.label { "Manifests" } div.value { (v.manifests.len()) } }
                div.card { div.label { "Blobs in repository" } div.value { (bytes(v.bytes)) } }
                div.card { div.label { "Created" } div.value.small { (time(v.created_ms)) } }
            }
            h2 { "Tags" }
            @if v.tags.is_empty() { p.muted { "No tags." } } @else {
                table #tags {
                    thead { tr { th { "Tag" } th { "Digest" } th { "Media type" } th { "Platforms" } th.num { "Size" } th { "Pushed" } th { "Last pulled" } th.num { "Deleting frees" } th {} } }
                    tbody { @for t in &v.tags { (tag_row(f, p, t)) } }
                }
            }
            h2 { "Manifests" }
            @if v.manifests.is_empty() { p.muted { "No manifests." } } @else {
                table #manifests {
                    thead { tr { th { "Digest" } th { "Kind" } th { "Tags" } th { "Platforms" } th.num { "Size" } th { "Created" } th.num { "Deleting frees" } th {} } }
                    tbody {
                        @for m in v.manifests.iter().filter(|m| !is_referrer(m)) {
                            (manifest_row(f, p, m, false))
                            @for r in v.manifests.iter().filter(|r| r.subject.as_ref() == Some(&m.digest)) {
                                (manifest_row(f, p, r, true))
                            }
                        }
                    }
                }
            }
        },
    )
}

pub fn activity(
    f: &Frame<'_>,
    repo: &str,
    action: &str,
    entries: &[Activity],
    next: Option<u64>,
) -> Markup {
    const ACTIONS: [&str; 7] = [
        "push",
        "tag_delete",
        "manifest_delete",
        "blob_delete",
        "repository_delete",
        "gc_run",
        "retention_run",
    ];
    layout(
        f,
        "Activity",
        "activity",
        html! {
            h1 { "Activity" }
            form.toolbar method="get" action="/ui/activity" {
                input type="search" name="repository" value=(repo) placeholder="Repository";
                select name="action" {
                    option value="" { "All actions" }
                    @for a in ACTIONS { option value=(a) selected[a == action] { (a) } }
                }
                button type="submit" { "Filter" }
            }
            @if entries.is_empty() { p.muted { "Nothing recorded." } } @else {
                table #activity {
                    thead { tr { th { "Time" } th { "Who" } th { "Action" } th { "Repository" } th { "Reference" } th { "Digest" } th { "Detail" } } }
                    tbody {
                        @for e in entries {
                            tr data-action=(e.action) {
                                td.muted { (time(e.time_ms)) }
                                td { (e.actor) }
                                td { strong { (e.action) } }
                                td { @if let Some(r) = &e.repository { (r) } }
                                td { @if let Some(r) = &e.reference { (r) } }
                                td { @if let Some(d) = &e.digest { code title=(d) { (short(d)) } } }
                                td.muted { @if !e.detail.is_null() { code { (e.detail.to_string()) } } }
                            }
                        }
                    }
                }
            }
            @if let Some(c) = next {
                p.pager { a href={ "/ui/activity?repository=" (enc(repo)) "&action=" (enc(action)) "&cursor=" (c) } { "Older →" } }
            }
        },
    )
}

/// Stored bytes (line) and bytes freed (bars) per run, oldest first.
fn chart(runs: &[&RunReport]) -> Markup {
    let (w, h, pad) = (640.0_f64, 170.0_f64, 30.0_f64);
    let max = runs
        .iter()
        .map(|r| (r.stored_bytes + r.bytes_freed).max(r.stored_bytes))
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let n = runs.len().max(1) as f64;
    let step = (w - 2.0 * pad) / n;
    let y = |v: u64| h - pad - (v as f64 / max) * (h - 2.0 * pad);
    let points: Vec<String> = runs
        .iter()
        .enumerate()
        .map(|(i, r)| {
            format!(
                "{:.1},{:.1}",
                pad + step * (i as f64 + 0.5),
                y(r.stored_bytes)
            )
        })
        .collect();
    html! {
        svg.chart width=(w) height=(h) viewBox={ "0 0 " (w) " " (h) } role="img" aria-label="Stored and reclaimed bytes per run" {
            line x1=(pad) y1=(h - pad) x2=(w - pad) y2=(h - pad) stroke="#c0c6d1" {}
            @for (i, r) in runs.iter().enumerate() {
                rect x=(format!("{:.1}", pad + step * i as f64 + step * 0.2)) y=(format!("{:.1}", y(r.bytes_freed)))
                    width=(format!("{:.1}", step * 0.6)) height=(format!("{:.1}", h - pad - y(r.bytes_freed))) fill="#9cd3b8" {
                    title { "run " (r.id) ": freed " (bytes(r.bytes_freed)) ", stored " (bytes(r.stored_bytes)) }
                }
            }
            polyline points=(points.join(" ")) fill="none" stroke="#2858d6" stroke-width="2" {}
            @for (i, r) in runs.iter().enumerate() {
                circle cx=(format!("{:.1}", pad + step * (i as f64 + 0.5))) cy=(format!("{:.1}", y(r.stored_bytes))) r="3.5" fill="#2858d6" {
                    title { "run " (r.id) ": " (bytes(r.stored_bytes)) " stored after it" }
                }
            }
            text x=(pad) y="16" font-size="11" fill="#2858d6" { "stored " (bytes(max as u64)) " max" }
            text x=(w - pad - 230.0) y="16" font-size="11" fill="#2858d6" { "● stored after the run" }
            text x=(w - pad - 110.0) y="16" font-size="11" fill="#12805c" { "■ reclaimed per run" }
        }
    }
}

/// A cron schedule's editor (with the shortcuts offered), and when it
/// runs next.
pub(super) fn schedule_form(
    f: &Frame<'_>,
    id: &str,
    action: &str,
    schedule: Option<&str>,
    next_run: Option<&str>,
) -> Markup {
    html! {
        form.toolbar id=(id) method="post" action=(action) {
            (csrf_field(f))
            input type="text" name="schedule" list={ (id) "-shortcuts" } value=(schedule.unwrap_or("")) placeholder="off, @daily, or 0 3 * * *";
            datalist id={ (id) "-shortcuts" } { @for s in ["@hourly", "@daily", "@midnight", "@weekly", "@monthly", "@yearly"] { option value=(s) {} } }
            button type="submit" { "Save" }
            span.muted {
                @match (schedule, next_run) {
                    (Some(s), Some(n)) => { code { (s) } ", next run " (n) " (UTC)" }
                    _ => { "Off: runs only when started." }
                }
            }
        }
    }
}

pub struct GcPage<'a> {
    pub reclaimable_bytes: u64,
    pub reclaimable_blobs: u64,
    pub stored_bytes: u64,
    pub running: Option<u64>,
    pub last: Option<&'a RunReport>,
    pub history: &'a [RunReport],
    pub schedule: Option<&'a str>,
    pub next_run: Option<String>,
    pub grace: String,
}

fn state(r: &RunReport) -> Markup {
    let s = format!("{:?}", r.state).to_lowercase();
    html! { span class={ "status-" (s) } { (s) } }
}

pub fn gc(f: &Frame<'_>, p: &GcPage<'_>) -> Markup {
    let real: Vec<&RunReport> = p
        .history
        .iter()
        .rev()
        .filter(|r| !r.dry_run && r.is_finished())
        .collect();
    layout(
        f,
        "Garbage collection",
        "gc",
        html! {
            @if p.running.is_some() { (PreEscaped("<meta http-equiv=\"refresh\" content=\"2\">")) }
            h1 { "Garbage collection" }
            div.cards {
                div.card #reclaimable { div.label { "Reclaimable now" } div.value { (bytes(p.reclaimable_bytes)) } div.muted { (p.reclaimable_blobs) " unreferenced blobs" } }
                div.card { div.label { "Stored" } div.value { (bytes(p.stored_bytes)) } }
                div.card #last-savings {
                    div.label { "Last savings" }
                    @match p.last {
                        Some(r) => {
                            div.value { (bytes(r.bytes_freed)) }
                            div.muted { (r.blobs_deleted) " blobs, " (r.manifests_deleted) " manifests, " (r.uploads_deleted) " uploads in " (r.duration_ms) " ms; fence " (format!("{:.1}", r.fence_total_ms)) " ms in all, " (format!("{:.1}", r.fence_max_ms)) " ms at most" }
                        }
                        None => { div.value { "—" } div.muted { "No run yet" } }
                    }
                }
                div.card {
                    div.label { "Status" }
                    @match p.running {
                        Some(id) => { div.value.status-running { "Running" } a href={ "/ui/gc/runs/" (id) } { "run " (id) } }
                        None => { div.value { "Idle" } div.muted { "grace period " (p.grace) } }
                    }
                }
            }
            div.toolbar {
                form.inline method="post" action="/ui/gc/run" {
                    (csrf_field(f))
                    input type="hidden" name="dry_run" value="1";
                    button #dry-run type="submit" disabled[p.running.is_some()] { "Dry run" }
                }
                form.inline method="post" action="/ui/gc/run" data-confirm="Run garbage collection now? Unreferenced blobs past their grace period are deleted." {
                    (csrf_field(f))
                    button.primary #run-now type="submit" disabled[p.running.is_some()] { "Run now" }
                }
            }
            h2 { "Schedule" }
            (schedule_form(f, "schedule", "/ui/gc/schedule", p.schedule, p.next_run.as_deref()))
            h2 { "Stored and reclaimed bytes per run" }
            @if real.is_empty() { p.muted { "No finished runs yet." } } @else { (chart(&real)) }
            h2 { "History" }
            table #history {
                thead { tr { th { "Run" } th { "Started" } th { "By" } th { "State" } th.num { "Freed" } th.num { "Blobs" } th.num { "Manifests" } th.num { "Uploads" } th.num { "Fence max" } } }
                tbody {
                    @for r in p.history {
                        tr {
                            td { a href={ "/ui/gc/runs/" (r.id) } { (r.id) } @if r.dry_run { " (dry run)" } }
                            td.muted { (r.started_at.get(..19).unwrap_or(&r.started_at).replace('T', " ")) }
                            td { (r.actor) }
                            td { (state(r)) }
                            td.num { (bytes(r.bytes_freed)) }
                            td.num { (r.blobs_deleted) }
                            td.num { (r.manifests_deleted) }
                            td.num { (r.uploads_deleted) }
                            td.num { (format!("{:.1} ms", r.fence_max_ms)) }
                        }
                    }
                }
            }
        },
    )
}

pub fn gc_run(f: &Frame<'_>, r: &RunReport) -> Markup {
    let verb = if r.dry_run { "Would free" } else { "Freed" };
    layout(
        f,
        &format!("Run {}", r.id),
        "gc",
        html! {
            @if !r.is_finished() { (PreEscaped("<meta http-equiv=\"refresh\" content=\"1\">")) }
            h1 { "Garbage collection run " (r.id) @if r.dry_run { " (dry run)" } }
            div.cards {
                div.card #run-state { div.label { "State" } div.value { (state(r)) } div.muted { "phase: " (r.phase) } }
                div.card #run-freed { div.label { (verb) } div.value { (bytes(r.bytes_freed)) } div.muted { (r.blobs_deleted) " blobs" } }
                div.card { div.label { "Manifests" } div.value { (r.manifests_deleted) } }
                div.card { div.label { "Uploads" } div.value { (r.uploads_deleted) } }
                @if let Some(t) = &r.retention {
                    div.card #run-retention {
                        div.label { a href="/ui/retention" { "Retention" } " (first phase)" }
                        div.value { (count(t.tags_deleted as usize, "tag", "tags")) }
                        div.muted { "in " (count(t.repositories as usize, "repository", "repositories")) ", " (bytes(t.bytes)) }
                    }
                }
                div.card { div.label { "Fence" } div.value { (format!("{:.1} ms", r.fence_total_ms)) } div.muted { (r.fences) " time(s), " (format!("{:.1}", r.fence_max_ms)) " ms at most" } }
            }
            @if let Some(e) = &r.error { div.flash.error { (e) } }
            p.muted { "Started " (r.started_at) " by " (r.actor) " (" (r.trigger) "), " (r.duration_ms) " ms." }
            @if !r.deleted.manifests.is_empty() {
                h2 { "Manifests" }
                table { tbody { @for m in &r.deleted.manifests { tr { td { (m.repository) } td { code { (m.digest) } } td.num { (bytes(m.size)) } } } } }
            }
            @if !r.deleted.blobs.is_empty() {
                h2 { "Blobs" }
                table #run-blobs { tbody { @for b in &r.deleted.blobs { tr { td { code { (b.digest) } } td.num { (bytes(b.size)) } } } } }
            }
            @if !r.deleted.uploads.is_empty() {
                h2 { "Upload sessions" }
                table { tbody { @for u in &r.deleted.uploads { tr { td { code { (u) } } } } } }
            }
            @if r.deleted.truncated { p.muted { "(lists truncated)" } }
            p { a href="/ui/gc" { "← Garbage collection" } }
        },
    )
}

pub fn message(f: &Frame<'_>, title: &str, text: &str) -> Markup {
    layout(
        f,
        title,
        "",
        html! { h1 { (title) } p { (text) } p { a href="/ui/" { "← Repositories" } } },
    )
}
