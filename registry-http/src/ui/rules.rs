//! The handlers of the rules pages: retention (show, edit with a preview
//! of unsaved rules, save, run, schedule) and immutable tags. Everything
//! here is for administrators; `mod.rs` checks that before calling in.

use std::collections::HashMap;

use http::{Response, StatusCode};
use registry_core::Error;
use registry_core::registry::policies::TagRules;
use registry_core::registry::retention::RetentionReport;
use registry_gc::GcError;

use super::pages::count;
use super::rules_form::{self, Action, Row};
use super::rules_pages::{self, RetentionPage};
use super::{Ui, Viewer, redirect, schedule_field, schedule_saved};
use crate::body::Body;

/// The editor's rows for saved rules: one per rule, or a blank one to
/// start from.
fn rows_of<T>(rules: &[T], row: impl Fn(&T) -> Row) -> Vec<Row> {
    match rules.len() {
        0 => vec![Row::new()],
        _ => rules.iter().map(row).collect(),
    }
}

/// What the rules' own checks refuse is the operator's mistake, said on
/// the page; anything else is an error page.
enum Refusal {
    Invalid(String),
    Other(Response<Body>),
}

impl Ui {
    fn refusal(&self, v: &Viewer, e: impl Into<GcError>) -> Refusal {
        match e.into() {
            GcError::Core(Error::InvalidRule(msg)) | GcError::Invalid(msg) => Refusal::Invalid(msg),
            e => Refusal::Other(self.error_page(v, e)),
        }
    }

    /// Stores the rules `change` makes; sends the browser `back` to their
    /// page, saying how many `kind` rules are now in force.
    async fn save(
        &self,
        v: &Viewer,
        (kind, back): (&str, &str),
        change: impl Fn(&mut TagRules) + Send + 'static,
        in_force: fn(&TagRules) -> usize,
    ) -> Result<Response<Body>, Refusal> {
        match self.registry.change_tag_rules(change).await {
            Ok(t) => {
                tracing::info!(actor = %v.actor, "{kind} rules changed");
                let msg = format!("{kind} rules saved: {} in force.", in_force(&t));
                Ok(redirect(back, Some(("msg", &msg))))
            }
            Err(e) => Err(self.refusal(v, e)),
        }
    }

    pub(super) async fn retention_get(&self, v: &Viewer) -> Response<Body> {
        match self.registry.policies().await {
            Ok(p) => {
                let rows = rows_of(&p.rules.retention, rules_form::retention_row);
                self.retention_page(v, StatusCode::OK, &rows, None).await
            }
            Err(e) => self.error_page(v, e),
        }
    }

    async fn retention_page(
        &self,
        v: &Viewer,
        status: StatusCode,
        rows: &[Row],
        preview: Option<(&RetentionReport, bool)>,
    ) -> Response<Body> {
        let (policies, last, last_dry_run) = match tokio::try_join!(
            self.registry.policies(),
            self.registry.last_retention(false),
            self.registry.last_retention(true),
        ) {
            Ok(all) => all,
            Err(e) => return self.error_page(v, e),
        };
        let schedule = self.retainer.schedule();
        let page = RetentionPage {
            rules: &policies.rules.retention,
            schedule: schedule.as_deref(),
            next_run: self
                .retainer
                .next_scheduled()
                .map(|t| t.format("%Y-%m-%d %H:%M").to_string()),
            retention_first: self.collector.config().retention_first,
            last: last.as_ref(),
            last_dry_run: last_dry_run.as_ref(),
            editor: rows,
            preview,
        };
        self.page(v, status, rules_pages::retention(&self.frame(v), &page))
    }

    /// The editor's buttons: add or remove a row (the page again, nothing
    /// saved), preview (a dry run of the rules as edited), save.
    pub(super) async fn retention_rules_post(
        &self,
        v: &mut Viewer,
        form: &HashMap<String, String>,
    ) -> Response<Body> {
        let mut rows = rules_form::rows(form);
        let action = rules_form::action(form);
        let rules = match action {
            Some(Action::Preview | Action::Save) => rules_form::retention_rules(&rows),
            Some(a) => {
                rules_form::edit(&mut rows, &a);
                return self.retention_page(v, StatusCode::OK, &rows, None).await;
            }
            None => Err("Use the editor's buttons.".to_owned()),
        };
        let outcome = match rules {
            Ok(rules) if action == Some(Action::Save) => {
                let change = move |t: &mut TagRules| t.retention = rules.clone();
                match self
                    .save(v, ("Retention", "/ui/retention"), change, |t| {
                        t.retention.len()
                    })
                    .await
                {
                    Ok(res) => return res,
                    Err(refusal) => refusal,
                }
            }
            Ok(rules) => return self.retention_preview(v, &rows, rules).await,
            Err(msg) => Refusal::Invalid(msg),
        };
        self.retention_refused(v, &rows, outcome).await
    }

    async fn retention_refused(
        &self,
        v: &mut Viewer,
        rows: &[Row],
        refusal: Refusal,
    ) -> Response<Body> {
        match refusal {
            Refusal::Invalid(msg) => {
                v.flash = Some((msg, true));
                self.retention_page(v, StatusCode::BAD_REQUEST, rows, None)
                    .await
            }
            Refusal::Other(res) => res,
        }
    }

    /// A dry run of the edited rules. When they are the rules in force it
    /// is a dry run of those, and kept as the last one.
    async fn retention_preview(
        &self,
        v: &mut Viewer,
        rows: &[Row],
        rules: Vec<registry_core::policy::RetentionRule>,
    ) -> Response<Body> {
        let unsaved = match self.registry.policies().await {
            Ok(p) => p.rules.retention != rules,
            Err(e) => return self.error_page(v, e),
        };
        let tried = unsaved.then_some(rules);
        match self.retainer.run(true, tried, "ui", &v.actor).await {
            Ok(report) => {
                self.retention_page(v, StatusCode::OK, rows, Some((&report, unsaved)))
                    .await
            }
            Err(e) => {
                let refusal = self.refusal(v, e);
                self.retention_refused(v, rows, refusal).await
            }
        }
    }

    /// Runs the saved rules for real.
    pub(super) async fn retention_run_post(&self, v: &Viewer) -> Response<Body> {
        match self.retainer.run(false, None, "ui", &v.actor).await {
            Ok(r) => {
                let msg = format!(
                    "Retention run deleted {} in {}; the next collection frees {}.",
                    count(r.tags_deleted as usize, "tag", "tags"),
                    count(r.repositories.len(), "repository", "repositories"),
                    crate::human_bytes(r.bytes)
                );
                redirect("/ui/retention", Some(("msg", &msg)))
            }
            Err(e) => redirect("/ui/retention", Some(("err", &e.to_string()))),
        }
    }

    pub(super) async fn retention_schedule_post(
        &self,
        form: &HashMap<String, String>,
    ) -> Response<Body> {
        let saved = self.retainer.set_schedule(schedule_field(form)).await;
        schedule_saved("/ui/retention", saved)
    }

    pub(super) async fn immutable_get(&self, v: &Viewer) -> Response<Body> {
        match self.registry.policies().await {
            Ok(p) => {
                let rows = rows_of(&p.rules.immutable, rules_form::immutable_row);
                self.immutable_page(v, StatusCode::OK, &rows).await
            }
            Err(e) => self.error_page(v, e),
        }
    }

    async fn immutable_page(&self, v: &Viewer, status: StatusCode, rows: &[Row]) -> Response<Body> {
        match self.registry.policies().await {
            Ok(p) => {
                let markup = rules_pages::immutable(&self.frame(v), &p.rules.immutable, rows);
                self.page(v, status, markup)
            }
            Err(e) => self.error_page(v, e),
        }
    }

    /// The immutable-tag editor's buttons: add or remove a row, save.
    pub(super) async fn immutable_post(
        &self,
        v: &mut Viewer,
        form: &HashMap<String, String>,
    ) -> Response<Body> {
        let mut rows = rules_form::rows(form);
        let rules = match rules_form::action(form) {
            Some(Action::Save) => rules_form::immutable_rules(&rows),
            Some(a @ (Action::Add | Action::Remove(_))) => {
                rules_form::edit(&mut rows, &a);
                return self.immutable_page(v, StatusCode::OK, &rows).await;
            }
            _ => Err("Use the editor's buttons.".to_owned()),
        };
        let refusal = match rules {
            Ok(rules) => {
                let change = move |t: &mut TagRules| t.immutable = rules.clone();
                match self
                    .save(v, ("Immutable-tag", "/ui/immutable"), change, |t| {
                        t.immutable.len()
                    })
                    .await
                {
                    Ok(res) => return res,
                    Err(refusal) => refusal,
                }
            }
            Err(msg) => Refusal::Invalid(msg),
        };
        match refusal {
            Refusal::Invalid(msg) => {
                v.flash = Some((msg, true));
                self.immutable_page(v, StatusCode::BAD_REQUEST, &rows).await
            }
            Refusal::Other(res) => res,
        }
    }
}
