//! `missive backup` against a real missived (in-process, its API on 127.0.0.1, real RocksDB in
//! a temp dir): a backup written, listed, refused with a wrong key, deleted.

use std::process::Output;
use std::time::Duration;

mod common;

use tokio::process::Command;

const KEY: &str = "cli-test-api-key-0123456789";

async fn cli(api: &str, key: &str, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_missive"));
    cmd.args(["backup", "--api", api, "--key", key])
        .args(args)
        .env_remove("MISSIVE_API")
        .env_remove("MISSIVE_API_KEY")
        .kill_on_drop(true);
    tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("the CLI finishes within 60 s")
        .expect("the CLI runs")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[tokio::test]
async fn a_backup_is_written_listed_and_deleted_through_the_api() {
    let backups = tempfile::tempdir().unwrap();
    let dir = backups.path().to_path_buf();
    let (server, _, _data) = common::server(|c| {
        c.http_listen = "127.0.0.1:0".into();
        c.api_key = Some(KEY.into());
        c.backup_dir = dir;
    })
    .await;
    let api = format!("http://{}", server.http_addr().unwrap());

    let made = cli(&api, KEY, &[]).await;
    assert!(made.status.success(), "{}", text(&made));
    let said = String::from_utf8_lossy(&made.stdout).into_owned();
    // "backup 20261207T181500Z written to /tmp/.../20261207T181500Z: 9 files, 1.2 MiB (31 ms)"
    let name = said
        .strip_prefix("backup ")
        .and_then(|r| r.split(' ').next())
        .unwrap_or_else(|| panic!("{said}"))
        .to_owned();
    let path = backups.path().join(&name);
    assert!(
        said.contains(&format!("written to {}: ", path.display())),
        "{said}"
    );
    assert!(said.contains(" files, "), "{said}");
    assert!(path.join("BACKUP.json").is_file());
    assert!(path.join("db").join("CURRENT").is_file());

    let listed = cli(&api, KEY, &["--list", "--json"]).await;
    assert!(listed.status.success(), "{}", text(&listed));
    let v: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(v["backups"][0]["backup"]["name"], name.as_str());
    let people = cli(&api, KEY, &["--list"]).await;
    assert!(text(&people).contains(&format!("1 backups in {}", backups.path().display())));
    assert!(text(&people).contains(&name));

    let wrong = cli(&api, "not-the-key-0123456789", &["--list"]).await;
    assert!(!wrong.status.success());
    assert!(text(&wrong).contains("API key"), "{}", text(&wrong));

    let bad = cli(&api, KEY, &["--delete", "../.."]).await;
    assert!(!bad.status.success());
    assert!(text(&bad).contains("not a backup's name"), "{}", text(&bad));
    let deleted = cli(&api, KEY, &["--delete", &name]).await;
    assert!(deleted.status.success(), "{}", text(&deleted));
    assert!(!path.exists());
    server.shutdown().await;
}
