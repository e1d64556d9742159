//! The web UI in a real browser (headless Chromium through chromedriver):
//! sign in, see a pushed image, delete a tag through the trash can with its
//! confirmation, see the activity entry, run a dry run and a real GC from
//! the GC page and see the savings; set an immutable-tag rule and see the
//! lock, edit, preview, save and run retention rules. One screenshot of
//! each page is kept in `target/tmp/ui-screenshots/`: copy them to `docs/`
//! to refresh the README's.

mod harness;

use std::path::PathBuf;

use harness::webdriver::Browser;
use harness::{Server, sha256};
use reqwest::Method;

fn htpasswd(dir: &std::path::Path) -> String {
    let path = dir.join("htpasswd");
    let text = format!(
        "alice:{}\nbob:{}\n",
        bcrypt::hash("alice-secret", 4).unwrap(),
        bcrypt::hash("bob-secret", 4).unwrap()
    );
    std::fs::write(&path, text).unwrap();
    let config = dir.join("registry.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[auth]
mode = "htpasswd"
htpasswd = "{}"
admins = ["alice"]
[[auth.access]]
repositories = "**"
users = ["alice"]
actions = ["pull", "push", "delete"]
[[auth.access]]
repositories = "**"
users = ["bob"]
actions = ["pull"]
"#,
            path.display()
        ),
    )
    .unwrap();
    config.to_str().unwrap().to_owned()
}

/// Signs in through the form and waits for the repositories.
async fn sign_in(b: &Browser, url: &str, user: &str, password: &str) {
    b.goto(&format!("{url}/ui/login")).await;
    b.type_into("#user", user).await;
    b.type_into("#password", password).await;
    b.click("form.login button").await;
    b.find("table#repositories").await;
}

fn shots() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("ui-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ui_in_a_browser() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_with(&["--config", &htpasswd(dir.path()), "--gc-grace", "0s"]);
    let alice = s.client_as(Some(harness::basic("alice", "alice-secret")));
    let v1 = alice.push_image("team/app", "v1", 2).await;
    alice.push_image("team/app", "v2", 1).await;
    alice.push_image("team/web", "latest", 1).await;
    let shots = shots();
    let b = Browser::start().await;

    // Sign in.
    b.goto(&format!("{}/ui/", s.url)).await;
    assert!(
        b.exists("a[href='/ui/login']").await,
        "anonymous visitors are offered to sign in"
    );
    assert!(
        !b.exists("a[href='/ui/r/team/app']").await,
        "and see nothing they may not pull"
    );
    b.goto(&format!("{}/ui/login", s.url)).await;
    b.type_into("#user", "alice").await;
    b.type_into("#password", "wrong").await;
    b.click("form.login button").await;
    assert!(b.text(".flash.error").await.contains("Wrong"));
    b.type_into("#user", "alice").await;
    b.type_into("#password", "alice-secret").await;
    b.click("form.login button").await;

    // The repositories, with the pushed image.
    b.find("table#repositories").await;
    assert!(b.text("header .who").await.contains("alice"));
    assert!(b.text("table#repositories").await.contains("team/app"));
    b.screenshot(&shots.join("repositories.png")).await;

    // The repository page: tags, digests, sizes, what deleting frees.
    b.click("a[href='/ui/r/team/app']").await;
    b.find("tr[data-tag='v1']").await;
    let row = b.text("tr[data-tag='v1']").await;
    assert!(row.contains(&v1.digest[7..19]), "{row}");
    assert!(row.contains("KiB"), "sizes are shown: {row}");
    b.screenshot(&shots.join("repository.png")).await;

    // The trash can asks first; dismissing keeps the tag.
    b.click("tr[data-tag='v1'] button.trash").await;
    assert!(b.dialog_text().await.contains("Delete tag v1"));
    b.dismiss_dialog().await;
    assert!(b.exists("tr[data-tag='v1']").await);
    // Accepting deletes it.
    b.click("tr[data-tag='v1'] button.trash").await;
    b.dialog_text().await;
    b.accept_dialog().await;
    b.wait_text(".flash", "Tag v1 deleted").await;
    b.wait_gone("tr[data-tag='v1']").await;
    assert_eq!(
        alice.status(Method::GET, "/v2/team/app/manifests/v1").await,
        404
    );

    // Delete the now untagged image itself.
    let selector = format!("tr[data-digest='{}'] button.danger", v1.digest);
    b.click(&selector).await;
    assert!(b.dialog_text().await.contains("Delete image"));
    b.accept_dialog().await;
    b.wait_text(".flash", &format!("Image {} deleted", v1.digest))
        .await;
    assert_eq!(
        alice
            .status(
                Method::GET,
                &format!("/v2/team/app/manifests/{}", v1.digest)
            )
            .await,
        404
    );

    // The activity log shows who did it.
    b.click("header nav a[href='/ui/activity']").await;
    b.find("table#activity").await;
    let first = b.text("table#activity tbody tr:first-child").await;
    assert!(
        first.contains("alice") && first.contains("manifest_delete"),
        "{first}"
    );
    assert!(b.text("table#activity").await.contains("tag_delete"));
    b.screenshot(&shots.join("activity.png")).await;

    // A dry run lists what would go, and deletes nothing.
    b.click("header nav a[href='/ui/gc']").await;
    b.click("#dry-run").await;
    b.find("#run-state .status-succeeded").await;
    let listed = b.text("#run-blobs").await;
    for blob in v1.blobs() {
        assert!(listed.contains(&blob), "dry run lists {blob}: {listed}");
        assert_eq!(
            alice
                .status(Method::HEAD, &format!("/v2/team/app/blobs/{blob}"))
                .await,
            200,
            "a dry run keeps it"
        );
    }
    b.screenshot(&shots.join("gc-dry-run.png")).await;

    // A real run, confirmed, and its savings.
    b.click("a[href='/ui/gc']").await;
    b.click("#run-now").await;
    assert!(b.dialog_text().await.contains("Run garbage collection now"));
    b.accept_dialog().await;
    b.find("#run-state .status-succeeded").await;
    assert!(b.text("#run-freed").await.contains("KiB"));
    b.click("a[href='/ui/gc']").await;
    let savings = b.text("#last-savings").await;
    assert!(
        savings.contains("KiB") && savings.contains("3 blobs"),
        "{savings}"
    );
    assert!(b.exists("svg.chart").await);
    b.screenshot(&shots.join("gc.png")).await;
    let blob_file = |d: &str| {
        let hex = &d[7..];
        s.data_dir().join("blobs/sha256").join(&hex[..2]).join(hex)
    };
    for blob in v1.blobs() {
        assert!(!blob_file(&blob).exists(), "{blob} collected");
    }
    alice.assert_pulls_intact("team/app", "v2").await;

    // The schedule editor.
    b.type_into("#schedule input[name=schedule]", "@daily")
        .await;
    b.click("#schedule button").await;
    b.wait_text(".flash", "Schedule saved").await;
    assert!(b.text("#schedule").await.contains("next run"));

    // bob may pull but not delete or collect: no controls for him.
    b.click("header .who button").await;
    b.find("header a[href='/ui/login']").await;
    sign_in(&b, &s.url, "bob", "bob-secret").await;
    assert!(!b.exists("header nav a[href='/ui/gc']").await);
    b.goto(&format!("{}/ui/r/team/app", s.url)).await;
    b.find("tr[data-tag='v2']").await;
    assert!(!b.exists("button.trash").await && !b.exists("button.danger").await);
    b.goto(&format!("{}/ui/gc", s.url)).await;
    assert!(b.text("main").await.contains("Not allowed"));
    b.quit().await;

    // A form posted without the session's token is refused (CSRF).
    let res = alice
        .http
        .post(format!("{}/ui/r/team/app/tags/v2/delete", s.url))
        .form(&[("csrf", "guess")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    assert_eq!(
        alice.status(Method::GET, "/v2/team/app/manifests/v2").await,
        200
    );
    let _ = sha256(b"");
}

#[tokio::test]
async fn ui_can_be_disabled_and_escapes_what_it_shows() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("off.toml");
    std::fs::write(&cfg, "ui = false\n").unwrap();
    let s = Server::start_with(&["--config", cfg.to_str().unwrap()]);
    assert_eq!(s.client().status(Method::GET, "/ui/").await, 404);

    let s = Server::start();
    let c = s.client();
    c.push_image("esc", "v1", 1).await;
    let page = c
        .get("/ui/?q=<script>alert(1)</script>")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!page.contains("<script>alert(1)"), "query text is escaped");
    assert!(page.contains("&lt;script&gt;"));
    let res = c.get("/ui/r/esc").send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(
        res.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("default-src 'self'")
    );
    assert_eq!(c.status(Method::GET, "/ui/r/nope").await, 404);
    assert_eq!(c.status(Method::GET, "/ui/static/app.js").await, 200);
}

/// A signed-in session of the UI over plain HTTP: what a browser sends
/// (the session cookie, and the CSRF token its forms carry), for requests
/// no page of the UI would make.
struct UiSession {
    http: reqwest::Client,
    base: String,
    cookie: String,
    csrf: String,
}

/// The CSRF token of the first form of a page.
fn csrf_of(page: &str) -> String {
    let at = page.find("name=\"csrf\" value=\"").expect("a form") + 19;
    page[at..].split('"').next().unwrap().to_owned()
}

impl UiSession {
    fn client() -> reqwest::Client {
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap()
    }

    async fn sign_in(base: &str, user: &str, password: &str) -> UiSession {
        let http = UiSession::client();
        let res = http
            .post(format!("{base}/ui/login"))
            .form(&[("user", user), ("password", password)])
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 303, "{user} signs in");
        let set = res.headers()["set-cookie"].to_str().unwrap();
        let cookie = set.split(';').next().unwrap().to_owned();
        let mut s = UiSession {
            http,
            base: base.to_owned(),
            cookie,
            csrf: String::new(),
        };
        s.csrf = csrf_of(&s.get("/ui/").await.1);
        s
    }

    /// The session the browser holds.
    async fn of_browser(b: &Browser, base: &str) -> UiSession {
        UiSession {
            http: UiSession::client(),
            base: base.to_owned(),
            cookie: format!("berth_session={}", b.cookie("berth_session").await.unwrap()),
            csrf: b.attribute("input[name=csrf]", "value").await.unwrap(),
        }
    }

    async fn get(&self, path: &str) -> (u16, String) {
        let res = self
            .http
            .get(format!("{}{path}", self.base))
            .header("cookie", &self.cookie)
            .send()
            .await
            .unwrap();
        (res.status().as_u16(), res.text().await.unwrap())
    }

    /// Posts a form with this session's CSRF token.
    async fn post(&self, path: &str, form: &[(&str, &str)]) -> (u16, String) {
        let mut form = form.to_vec();
        form.push(("csrf", &self.csrf));
        let res = self
            .http
            .post(format!("{}{path}", self.base))
            .header("cookie", &self.cookie)
            .form(&form)
            .send()
            .await
            .unwrap();
        (res.status().as_u16(), res.text().await.unwrap())
    }
}

/// Pushes ci/app's tags one after the other: c1, c2, release-1, c3 (c3
/// the most recently pushed).
async fn push_ci_tags(c: &harness::Client) {
    for tag in ["c1", "c2", "release-1", "c3"] {
        c.push_image("ci/app", tag, 1).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tag_rules_in_a_browser() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_with(&["--config", &htpasswd(dir.path()), "--gc-grace", "0s"]);
    let alice = s.client_as(Some(harness::basic("alice", "alice-secret")));
    let v1 = alice.push_image("team/app", "v1", 2).await;
    alice.push_image("team/app", "v2", 1).await;
    push_ci_tags(&alice).await;
    let b = Browser::start().await;
    sign_in(&b, &s.url, "alice", "alice-secret").await;
    immutable_tags_in_a_browser(&b, &s, &alice, &v1).await;
    retention_in_a_browser(&b, &alice).await;
    b.quit().await;
}

/// An immutable-tag rule set in its editor: the tag shows a lock instead
/// of the trash can, and a delete posted anyway is refused.
async fn immutable_tags_in_a_browser(
    b: &Browser,
    s: &Server,
    alice: &harness::Client,
    v1: &harness::Image,
) {
    b.click("header nav a[href='/ui/immutable']").await;
    b.fill("input[name='r0.name']", "releases").await;
    b.fill("input[name='r0.repositories']", "team/**").await;
    b.fill("input[name='r0.tags']", "v1 /^rc-/").await;
    b.click("#immutable-save").await;
    b.wait_text(".flash", "Immutable-tag rules saved: 1 in force")
        .await;
    assert!(b.text("#immutable-rules").await.contains("releases"));
    b.screenshot(&shots().join("immutable.png")).await;

    b.goto(&format!("{}/ui/r/team/app", s.url)).await;
    let lock = "tr[data-tag='v1'] .lock";
    let title = b.attribute(lock, "title").await.unwrap();
    assert!(title.contains("rule releases"), "{title}");
    assert!(!b.exists("tr[data-tag='v1'] button.trash").await);
    assert!(b.exists("tr[data-tag='v2'] button.trash").await);
    let image = format!("tr[data-digest='{}']", v1.digest);
    assert!(b.exists(&format!("{image} .lock")).await);
    assert!(!b.exists(&format!("{image} button.danger")).await);
    assert!(
        b.text("tr[data-tag='v1'] td.pulled")
            .await
            .contains("never")
    );
    b.screenshot(&shots().join("repository-immutable.png"))
        .await;

    // Posting the delete forms anyway (with the session's own token) is
    // refused with a page that names the rule.
    let forged = UiSession::of_browser(b, &s.url).await;
    let digest_path = format!("/ui/r/team/app/manifests/{}/delete", v1.digest);
    for path in ["/ui/r/team/app/tags/v1/delete", digest_path.as_str()] {
        let (status, page) = forged.post(path, &[]).await;
        assert_eq!(status, 403, "{path}: {page}");
        assert!(page.contains("rule releases"), "{page}");
    }
    alice.assert_pulls_intact("team/app", "v1").await;
}

/// A retention rule typed into the editor, previewed (exactly the tags it
/// would delete, nothing deleted or saved), saved, and run.
async fn retention_in_a_browser(b: &Browser, alice: &harness::Client) {
    b.click("header nav a[href='/ui/retention']").await;
    b.fill("input[name='r0.name']", "ci-cleanup").await;
    b.fill("input[name='r0.repositories']", "ci/*").await;
    b.fill("input[name='r0.keep']", "release-*").await;
    b.fill("input[name='r0.keep_last']", "1").await;
    b.click("#retention-preview").await;
    b.wait_text("#preview-section h2", "unsaved").await;
    assert_eq!(b.texts("#preview td.tag").await, ["c1", "c2"]);
    assert!(b.text("#preview").await.contains("ci-cleanup"));
    assert_eq!(b.text("#rules-count .value").await, "0", "not saved");
    assert_eq!(
        alice.status(Method::GET, "/v2/ci/app/manifests/c1").await,
        200,
        "nothing deleted"
    );
    // Tall enough to show the editor under the preview.
    b.resize(1280, 1400).await;
    b.screenshot(&shots().join("retention.png")).await;
    b.resize(1280, 900).await;

    b.click("#retention-save").await;
    b.wait_text(".flash", "Retention rules saved: 1 in force")
        .await;
    assert!(b.text("#rules").await.contains("ci-cleanup"));
    let saved = alice.json("/admin/retention").await;
    assert_eq!(saved["rules"][0]["keep_last"], 1, "{saved}");

    b.click("#retention-run-now").await;
    assert!(
        b.dialog_text()
            .await
            .contains("Run the saved retention rules")
    );
    b.accept_dialog().await;
    b.wait_text(".flash", "Retention run deleted 2 tags").await;
    assert_eq!(b.texts("#last-run td.tag").await, ["c1", "c2"]);
    for (tag, status) in [("c1", 404), ("c2", 404), ("c3", 200), ("release-1", 200)] {
        let path = format!("/v2/ci/app/manifests/{tag}");
        assert_eq!(alice.status(Method::GET, &path).await, status, "{tag}");
    }
    alice.assert_pulls_intact("ci/app", "release-1").await;

    // The activity log names the rule as the actor of each deletion.
    b.click("header nav a[href='/ui/activity']").await;
    b.find("table#activity").await;
    // Columns: time, who, action, repository, reference, digest, detail.
    let cells = b.texts("table#activity tbody td").await;
    let rows: Vec<&[String]> = cells.chunks(7).collect();
    for tag in ["c1", "c2"] {
        assert!(
            rows.iter().any(|r| r[1] == "retention:ci-cleanup"
                && r[2] == "tag_delete"
                && r[3] == "ci/app"
                && r[4] == tag),
            "{tag} in {rows:#?}"
        );
    }
    assert!(
        rows.iter()
            .any(|r| r[1] == "alice" && r[2] == "retention_run")
    );

    // A rule that does not compile is refused on the page, as typed.
    b.click("header nav a[href='/ui/retention']").await;
    b.click("#retention-editor button[value=add]").await;
    b.fill("input[name='r1.name']", "broken").await;
    b.fill("input[name='r1.repositories']", "ci/*").await;
    b.fill("input[name='r1.keep']", "/(/").await;
    b.click("#retention-preview").await;
    b.wait_text(".flash.error", "Rule 2 (broken): tag pattern")
        .await;
    let kept = b.attribute("input[name='r1.keep']", "value").await;
    assert_eq!(kept.as_deref(), Some("/(/"));
}

/// A server with alice (admin) and bob (pull only), ci/app's tags, and
/// alice signed in to the UI.
async fn signed_in() -> (tempfile::TempDir, Server, harness::Client, UiSession) {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_with(&["--config", &htpasswd(dir.path())]);
    let alice = s.client_as(Some(harness::basic("alice", "alice-secret")));
    push_ci_tags(&alice).await;
    let ui = UiSession::sign_in(&s.url, "alice", "alice-secret").await;
    (dir, s, alice, ui)
}

/// A form from `field=value` words (`r0.name=x r0.repositories=ci/*`).
fn form_of(words: &str) -> Vec<(&str, &str)> {
    words
        .split_whitespace()
        .map(|w| w.split_once('=').unwrap())
        .collect()
}

#[tokio::test]
async fn tag_rule_pages_are_for_administrators() {
    let (_dir, s, _alice, ui) = signed_in().await;
    for page in ["/ui/retention", "/ui/immutable"] {
        let (status, html) = ui.get(page).await;
        assert_eq!(status, 200, "{page}: {html}");
        assert!(html.contains("Rules in force"), "{html}");
        assert_eq!(s.client().status(Method::GET, page).await, 401);
    }
    let bob = UiSession::sign_in(&s.url, "bob", "bob-secret").await;
    assert_eq!(bob.get("/ui/retention").await.0, 403);
    let rule = form_of("action=save r0.name=x r0.repositories=ci/* r0.tags=v1");
    for path in ["/ui/retention/rules", "/ui/retention/run", "/ui/immutable"] {
        assert_eq!(bob.post(path, &rule).await.0, 403, "{path}");
    }
    let stale = UiSession {
        csrf: "guess".into(),
        ..UiSession::sign_in(&s.url, "alice", "alice-secret").await
    };
    assert_eq!(stale.post("/ui/retention/rules", &rule).await.0, 403);
}

#[tokio::test]
async fn tag_rule_editors_refuse_bad_input() {
    let (_dir, _s, alice, ui) = signed_in().await;
    let rule = "r0.name=x r0.repositories=ci/*";
    let refused = [
        (
            "r0.name=x r0.repositories=ci/[",
            "Rule 1 (x): repository glob",
        ),
        (&format!("{rule} r0.tags=/[/"), "tag pattern"),
        ("r0.repositories=ci/* r0.keep_last=1", "needs a name"),
        (&format!("{rule} r0.keep_last=ten"), "whole number"),
        (
            &format!("{rule} r0.keep_pushed_within=fortnight"),
            "duration",
        ),
        (
            &format!("{rule} r1.name=x r1.repositories=b/*"),
            "Two rules are named",
        ),
    ];
    for (words, message) in refused {
        for action in ["preview", "save"] {
            let mut form = form_of(words);
            form.push(("action", action));
            let (status, page) = ui.post("/ui/retention/rules", &form).await;
            assert_eq!(status, 400, "{form:?}: {page}");
            assert!(
                page.contains(message) && page.contains("flash error"),
                "{message}: {page}"
            );
        }
    }
    let (status, page) = ui
        .post("/ui/retention/rules", &form_of("action=drop-table"))
        .await;
    assert!(
        status == 400 && page.contains("the editor's buttons"),
        "{page}"
    );
    for (words, message) in [
        ("r0.repositories=team/** r0.tags=/(/", "tag pattern"),
        ("r0.repositories=team/**", "name the tags"),
        ("r0.tags=v1", "which repositories"),
        (
            "r0.name=a r0.repositories=x r0.tags=v1 r1.name=a r1.repositories=y r1.tags=v1",
            "Two rules",
        ),
    ] {
        let mut form = form_of(words);
        form.push(("action", "save"));
        let (status, page) = ui.post("/ui/immutable", &form).await;
        assert_eq!(status, 400, "{form:?}: {page}");
        assert!(page.contains(message), "{message}: {page}");
    }
    let nothing = serde_json::json!([]);
    assert_eq!(alice.json("/admin/retention").await["rules"], nothing);
    assert_eq!(alice.json("/admin/immutable").await["rules"], nothing);
}

#[tokio::test]
async fn tag_rule_editor_previews_before_saving() {
    let (_dir, _s, alice, ui) = signed_in().await;
    let rule = "r0.name=ci r0.repositories=ci/* r0.keep=release-*";
    let (status, page) = ui
        .post(
            "/ui/retention/rules",
            &form_of(&format!("{rule} action=add")),
        )
        .await;
    assert!(status == 200 && page.contains("name=\"r1.name\""), "{page}");
    let (status, page) = ui
        .post(
            "/ui/retention/rules",
            &form_of(&format!("{rule} action=preview")),
        )
        .await;
    assert_eq!(status, 200, "{page}");
    for tag in ["c1", "c2", "c3"] {
        assert!(
            page.contains(&format!("data-tag=\"{tag}\"")),
            "{tag}: {page}"
        );
    }
    assert!(!page.contains("data-tag=\"release-1\""), "{page}");
    let nothing = serde_json::json!([]);
    assert_eq!(alice.json("/admin/retention").await["rules"], nothing);
    let (status, _) = ui
        .post(
            "/ui/retention/rules",
            &form_of(&format!("{rule} action=save")),
        )
        .await;
    assert_eq!(status, 303);
    assert_eq!(
        alice.json("/admin/retention").await["rules"][0]["name"],
        "ci"
    );
    let (status, page) = ui.get("/ui/retention").await;
    assert!(status == 200 && page.contains("data-rule=\"ci\""), "{page}");
    let (status, _) = ui
        .post("/ui/retention/schedule", &[("schedule", "every tuesday")])
        .await;
    assert_eq!(status, 303, "a bad schedule comes back as a message");
    let schedule = &alice.json("/admin/retention").await["schedule"];
    assert_eq!(schedule, &serde_json::Value::Null);
    let (status, _) = ui
        .post("/ui/retention/schedule", &[("schedule", "@daily")])
        .await;
    assert_eq!(status, 303);
    assert_eq!(alice.json("/admin/retention").await["schedule"], "@daily");

    // A collection that runs retention first says so on its page.
    let id = alice.run_gc(serde_json::json!({"retention": true})).await["id"].clone();
    let (status, page) = ui.get(&format!("/ui/gc/runs/{id}")).await;
    assert_eq!(status, 200);
    let card = &page[page.find("id=\"run-retention\"").expect(&page)..];
    assert!(
        card.contains("3 tags") && card.contains("1 repository"),
        "{card}"
    );
}
