//! The configuration as an operator meets it: the example file, the table in
//! docs/configuration.md, the environment, `--print-config`, and a bad setting stopping the real
//! binary at start.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use missive::config::{Args, Config};

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/missived.example.toml");
const CONFIGURATION_DOC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/configuration.md");

/// Every setting's name (optional ones included: they serialize as null in JSON).
fn settings() -> Vec<String> {
    match serde_json::to_value(Config::default()).unwrap() {
        serde_json::Value::Object(map) => map.keys().cloned().collect(),
        other => panic!("not a table: {other}"),
    }
}

fn args(list: &[&str]) -> Args {
    Args::try_parse_from(std::iter::once("missived").chain(list.iter().copied())).unwrap()
}

#[test]
fn the_example_file_parses_to_the_defaults_and_names_every_setting() {
    let loaded = Config::load_with_env(&args(&["--config", EXAMPLE]), []).unwrap();
    assert_eq!(
        serde_json::to_value(&loaded).unwrap(),
        serde_json::to_value(Config::default()).unwrap(),
        "missived.example.toml sets every setting to its default"
    );
    let text = std::fs::read_to_string(EXAMPLE).unwrap();
    for name in settings() {
        let named = text.lines().any(|l| {
            let l = l.trim_start_matches('#').trim_start();
            l.starts_with(&format!("{name} = "))
        });
        assert!(named, "missived.example.toml does not document `{name}`");
    }
}

#[test]
fn the_configuration_doc_table_lists_every_setting() {
    let doc = std::fs::read_to_string(CONFIGURATION_DOC).unwrap();
    for name in settings() {
        assert!(
            doc.contains(&format!("| `{name}`")) || doc.contains(&format!(", `{name}`")),
            "docs/configuration.md's table does not list `{name}`"
        );
    }
}

#[test]
fn environment_overrides_the_file_and_flags_override_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("m.toml");
    std::fs::write(
        &file,
        "max_group_size = 50\nhttp_listen = \"127.0.0.1:9000\"\n",
    )
    .unwrap();
    let path = file.to_str().unwrap();
    let env = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let c = Config::load_with_env(
        &args(&["--config", path]),
        env(&[
            ("MISSIVE_MAX_GROUP_SIZE", "70"),
            ("MISSIVE_LISTEN", "127.0.0.1:1,127.0.0.1:2"),
            ("MISSIVE_ALLOW_PLAIN", "true"),
            ("MISSIVE_API_KEY", "0123456789abcdef"),
            ("MISSIVE_USER", "not a setting: ignored"),
        ]),
    )
    .unwrap();
    assert_eq!(c.max_group_size, 70);
    assert_eq!(c.listen, ["127.0.0.1:1", "127.0.0.1:2"]);
    assert_eq!(c.http_listen, "127.0.0.1:9000", "from the file");
    assert_eq!(c.api_key.as_deref(), Some("0123456789abcdef"));
    let c = Config::load_with_env(
        &args(&["--config", path, "--http-listen", ""]),
        env(&[("MISSIVE_HTTP_LISTEN", "127.0.0.1:9001")]),
    )
    .unwrap();
    assert_eq!(
        c.http_listen, "",
        "the flag wins, and empty turns the API off"
    );
    // A numeric-looking secret stays text.
    let c =
        Config::load_with_env(&args(&[]), env(&[("MISSIVE_SECRET", "1234567890123456")])).unwrap();
    assert_eq!(c.secret.as_deref(), Some("1234567890123456"));
}

#[test]
fn bad_values_name_the_setting() {
    let bad = |env: &[(&str, &str)], flags: &[&str]| {
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        Config::load_with_env(&args(flags), env.collect::<Vec<_>>())
            .unwrap_err()
            .to_string()
    };
    let e = bad(&[("MISSIVE_MAX_GROUP_SIZE", "lots")], &[]);
    assert!(
        e.contains("max_group_size") && e.contains("MISSIVE_MAX_GROUP_SIZE"),
        "{e}"
    );
    for (name, value) in [
        ("MISSIVE_DRAIN_RATE_PER_SEC", "0"),
        ("MISSIVE_DRAIN_REDIRECT", "no-port"),
        ("MISSIVE_HTTP_LISTEN", "everywhere"),
        ("MISSIVE_API_KEY", "short"),
        ("MISSIVE_SYSTEM_USER", ""),
        ("MISSIVE_WORKER_THREADS", "5000"),
        ("MISSIVE_HTTP_HEADER_TIMEOUT_MS", "0"),
        ("MISSIVE_HTTP_BODY_TIMEOUT_MS", "600001"),
        ("MISSIVE_HTTP_MAX_CONNECTIONS", "0"),
    ] {
        let e = bad(&[(name, value)], &[]);
        let setting = name.trim_start_matches("MISSIVE_").to_ascii_lowercase();
        assert!(e.contains(&setting), "{name}={value:?}: {e}");
    }
}

/// Runs the binary (on loopback and a temp dir, should it start after all) for at most 20 s.
fn missived(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_missived"));
    cmd.args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("MISSIVE_")) {
        cmd.env_remove(k);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("missived runs");
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn print_config_shows_the_effective_settings_with_secrets_redacted() {
    let out = missived(
        &[
            "--print-config",
            "--http-listen",
            "127.0.0.1:9911",
            "--secret",
            "s3cret-s3cret-s3cret",
        ],
        &[
            ("MISSIVE_MAX_GROUP_SIZE", "321"),
            ("MISSIVE_API_KEY", "key-key-key-key-key"),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let shown: toml::Table = toml::from_str(&text).unwrap();
    assert_eq!(shown["max_group_size"].as_integer(), Some(321));
    assert_eq!(shown["http_listen"].as_str(), Some("127.0.0.1:9911"));
    assert_eq!(shown["drain_rate_per_sec"].as_integer(), Some(500));
    assert!(
        !text.contains("s3cret") && !text.contains("key-key"),
        "{text}"
    );
    assert!(
        shown["api_key"].as_str().unwrap().contains("redacted"),
        "{text}"
    );
    assert!(text.contains("# tls_cert: not set"), "{text}");
}

#[test]
fn the_binary_refuses_a_bad_setting_at_start_and_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "drain_rate_per_sec = 0\n").unwrap();
    let config = ["--config", file.to_str().unwrap()];
    let many = [("MISSIVE_MAX_GROUP_SIZE", "many")];
    let threads = [("MISSIVE_WORKER_THREADS", "5000")];
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);
    let cases: [Case; 4] = [
        (&config, &[], "drain_rate_per_sec"),
        (&[], &many, "max_group_size"),
        (&[], &threads, "worker_threads"),
        (&["--http-listen", "here"], &[], "http_listen"),
    ];
    for (flags, env, setting) in cases {
        let out = missived(flags, env);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{setting}: started");
        assert!(stderr.contains(setting), "{setting}: {stderr}");
    }
}
