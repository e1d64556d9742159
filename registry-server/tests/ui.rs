//! The web UI in a real browser (headless Chromium through chromedriver):
//! sign in, see a pushed image, delete a tag through the trash can with its
//! confirmation, see the activity entry, run a dry run and a real GC from
//! the GC page and see the savings. One screenshot of each page is kept.

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
