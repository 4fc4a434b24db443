//! What can be checked of `deploy/` without a container engine or systemd running: the image's
//! build stage runs the README's release commands, the image's and the unit's settings are
//! variables the server knows, the binary runs with them and keeps its database where they say,
//! and the unit passes `systemd-analyze verify` where that tool exists.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::EASEL;

fn repository_file(path: &str) -> String {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path);
    std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("reading {}: {e}", file.display()))
}

/// The commands of the README's "Hosting a server" block, comments dropped.
fn readme_hosting_commands() -> Vec<String> {
    let readme = repository_file("README.md");
    let section = readme.split("## Hosting a server").nth(1).expect("a hosting section");
    let block = section.split("```sh").nth(1).and_then(|b| b.split("```").next()).expect("a sh block");
    block
        .lines()
        .map(|line| line.split('#').next().unwrap_or("").trim().to_owned())
        .filter(|line| !line.is_empty())
        .collect()
}

/// The Dockerfile's instructions as (keyword, rest) with continued lines joined.
fn dockerfile() -> Vec<(String, String)> {
    let text = repository_file("deploy/Dockerfile").replace("\\\n", " ");
    text.lines()
        .filter(|line| !line.trim_start().starts_with('#') && !line.trim().is_empty())
        .filter_map(|line| line.trim().split_once(' ').map(|(k, rest)| (k.to_owned(), rest.trim().to_owned())))
        .collect()
}

/// `KEY=VALUE` pairs of a space-separated list.
fn assignments(text: &str) -> Vec<(String, String)> {
    text.split_whitespace().filter_map(|pair| pair.split_once('=')).map(|(k, v)| (k.to_owned(), v.to_owned())).collect()
}

/// Whether `words` appear in `command` in order (other words may come between).
fn runs_in_order(command: &str, words: &[&str]) -> bool {
    let mut rest = command.split_whitespace();
    words.iter().all(|word| rest.any(|w| w == *word))
}

fn serve_help() -> String {
    let output = Command::new(EASEL).args(["serve", "--help"]).output().expect("easel serve --help");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn the_image_is_built_with_the_readmes_commands() {
    let build_commands: Vec<String> = dockerfile()
        .into_iter()
        .filter(|(keyword, _)| keyword == "RUN")
        .flat_map(|(_, command)| command.split("&&").map(|c| c.trim().to_owned()).collect::<Vec<_>>())
        .collect();
    let readme = readme_hosting_commands();
    let builds: Vec<&String> = readme.iter().filter(|c| c.starts_with("cargo ")).collect();
    assert!(builds.len() >= 2, "the README builds the client and the server: {readme:?}");
    for command in builds {
        let words: Vec<&str> = command.split_whitespace().collect();
        assert!(
            build_commands.iter().any(|run| runs_in_order(run, &words)),
            "the Dockerfile does not run the README's `{command}`: {build_commands:?}"
        );
    }
}

#[test]
fn the_image_and_the_unit_set_only_settings_the_server_knows() {
    let help = serve_help();
    let image: Vec<(String, String)> =
        dockerfile().into_iter().filter(|(k, _)| k == "ENV").flat_map(|(_, rest)| assignments(&rest)).collect();
    let unit = unit_environment();
    for (name, _) in image.iter().chain(&unit) {
        assert!(help.contains(&format!("[env: {name}=")), "{name} is not a setting of `easel serve`");
    }
    // Both listen everywhere on the README's port: a container or host reached from outside.
    for settings in [&image, &unit] {
        let value = |key: &str| settings.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
        assert_eq!((value("EASEL_BIND"), value("EASEL_PORT")), (Some("0.0.0.0"), Some("8080")));
    }
    let compose = repository_file("deploy/compose.yaml");
    assert!(compose.contains("dockerfile: deploy/Dockerfile") && compose.contains(":/var/lib/easel"), "{compose}");
    assert!(compose.contains("\"8080:8080/udp\""), "WebTransport's UDP port is published: {compose}");
}

#[test]
fn the_binary_runs_with_the_units_settings_and_keeps_its_data_in_the_state_directory() {
    let state = std::env::temp_dir().join(format!("easel-unit-state-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&state);
    // systemd makes StateDirectory= before the start.
    std::fs::create_dir_all(state.join("easel")).expect("state directory");
    let mut command = Command::new(EASEL);
    command.args(unit_exec_start_args());
    for (name, value) in unit_environment() {
        command.env(name, value.replace("%S", &state.to_string_lossy()));
    }
    // Here the server may only listen on loopback, on a port nobody holds.
    command.env("EASEL_BIND", "127.0.0.1").env("EASEL_PORT", "0");
    let data = run_until_listening_then_stop(command, &state);
    assert_eq!(data, state.join("easel").join("easel.db"));
    let _ = std::fs::remove_dir_all(&state);
}

#[test]
fn the_binary_runs_with_the_images_settings_and_keeps_its_data_on_the_volume() {
    let root = std::env::temp_dir().join(format!("easel-image-root-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let instructions = dockerfile();
    let single = |keyword: &str| {
        let found: Vec<&String> = instructions.iter().filter(|(k, _)| k == keyword).map(|(_, v)| v).collect();
        assert_eq!(found.len(), 1, "one {keyword}: {found:?}");
        found[0].clone()
    };
    let volume = single("VOLUME");
    assert_eq!(single("ENTRYPOINT"), "[\"/usr/local/bin/easel\"]");
    // The image's volume, made as the image makes it, under a temporary root.
    let volume_here = root.join(volume.trim_start_matches('/'));
    std::fs::create_dir_all(&volume_here).expect("volume");
    let mut command = Command::new(EASEL);
    let cmd = single("CMD");
    command.args(cmd.trim_matches(|c| c == '[' || c == ']').split(',').map(|a| a.trim().trim_matches('"')));
    for (_, rest) in instructions.iter().filter(|(k, _)| k == "ENV") {
        for (name, value) in assignments(rest) {
            command.env(name, value.replace(&volume, &volume_here.to_string_lossy()));
        }
    }
    command.env("EASEL_BIND", "127.0.0.1").env("EASEL_PORT", "0");
    let data = run_until_listening_then_stop(command, &root);
    assert_eq!(data, volume_here.join("easel.db"));
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn the_unit_passes_systemd_analyze_verify() {
    let Ok(version) = Command::new("systemd-analyze").arg("--version").output() else {
        eprintln!("systemd-analyze is not on this machine: the unit is checked by the other tests only");
        return;
    };
    assert!(version.status.success());
    let dir = std::env::temp_dir().join(format!("easel-unit-verify-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    // The unit names /usr/local/bin/easel, which verify requires to exist: point it at this build.
    let unit = repository_file("deploy/easel.service").replace("/usr/local/bin/easel", EASEL);
    let file = dir.join("easel.service");
    std::fs::write(&file, unit).expect("writing the unit");
    let output = Command::new("systemd-analyze").arg("verify").arg(&file).output().expect("systemd-analyze verify");
    let complaints = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success() && complaints.trim().is_empty(), "systemd-analyze verify: {complaints}");
    let _ = std::fs::remove_dir_all(&dir);
}

fn unit_lines(key: &str) -> Vec<String> {
    repository_file("deploy/easel.service")
        .lines()
        .filter_map(|line| line.strip_prefix(key)?.strip_prefix('=').map(str::to_owned))
        .collect()
}

fn unit_environment() -> Vec<(String, String)> {
    unit_lines("Environment").iter().flat_map(|line| assignments(line)).collect()
}

fn unit_exec_start_args() -> Vec<String> {
    let exec = unit_lines("ExecStart");
    assert_eq!(exec.len(), 1, "one ExecStart: {exec:?}");
    let mut words = exec[0].split_whitespace().map(str::to_owned);
    assert_eq!(words.next().as_deref(), Some("/usr/local/bin/easel"));
    words.collect()
}

/// Starts `command`, waits for its listening line and one answered `/readyz`, stops it with
/// SIGTERM (exit 0 expected) and returns the database file it made under `root`.
fn run_until_listening_then_stop(mut command: Command, root: &Path) -> PathBuf {
    let mut child = command.current_dir(root).stdout(Stdio::piped()).spawn().expect("starting easel");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("listening line");
    let address = line.trim().strip_prefix("Easel listening on http://").expect("listening line").to_owned();
    let mut http = TcpStream::connect(&address).expect("connect");
    http.write_all(b"GET /readyz HTTP/1.1\r\nHost: easel\r\nConnection: close\r\n\r\n").expect("request");
    let mut response = String::new();
    http.read_to_string(&mut response).expect("response");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let killed = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill");
    assert!(killed.success());
    let deadline = Instant::now() + common::WAIT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "easel did not stop within {:?}", common::WAIT);
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}");
    find_database(root).expect("the server made its database under the state directory")
}

fn find_database(dir: &Path) -> Option<PathBuf> {
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if let Some(found) = find_database(&path) {
                return Some(found);
            }
        } else if path.file_name().is_some_and(|n| n == "easel.db") {
            return Some(path);
        }
    }
    None
}

/// The `EASEL_*` settings of one service of `deploy/compose.cluster.yaml` (its own and the
/// shared `x-cluster` ones), as `(name, value)`.
fn cluster_node_settings(service: &str) -> Vec<(String, String)> {
    let compose = repository_file("deploy/compose.cluster.yaml");
    let setting = |line: &str| {
        let (name, value) = line.trim().split_once(':')?;
        name.starts_with("EASEL_").then(|| (name.to_owned(), value.trim().trim_matches('"').to_owned()))
    };
    let shared = compose.split("x-cluster:").nth(1).and_then(|rest| rest.split("\n\n").next()).expect("x-cluster");
    let own = compose.split(&format!("  {service}:")).nth(1).expect("the service").split("\n  node-").next();
    shared.lines().chain(own.into_iter().flat_map(str::lines)).filter_map(setting).collect()
}

#[test]
fn the_cluster_compose_file_runs_nodes_with_settings_the_server_knows() {
    let help = serve_help();
    let postgres = easel_load::postgres::Postgres::start().expect("a private PostgreSQL");
    for service in ["node-1", "node-2", "node-3"] {
        let settings = cluster_node_settings(service);
        for (name, _) in &settings {
            // Secrets' values are not shown: `[env: NAME]`.
            let known = help.contains(&format!("[env: {name}=")) || help.contains(&format!("[env: {name}]"));
            assert!(known, "{name} is not a setting of `easel serve`");
        }
        let value = |key: &str| settings.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
        let port = value("EASEL_PORT").expect("a port of its own");
        assert_eq!(value("EASEL_PUBLIC_URL"), Some(format!("http://localhost:{port}")), "{service}");
        assert!(value("EASEL_CLUSTER").is_some_and(|url| url.starts_with("postgres://")), "{service}");
        // The node runs with them (its database here the test's, its address loopback).
        let root = std::env::temp_dir().join(format!("easel-cluster-node-{service}-{}", std::process::id()));
        std::fs::create_dir_all(&root).expect("a directory to run in");
        let mut command = Command::new(EASEL);
        command.arg("serve");
        for (name, value) in &settings {
            command.env(name, value);
        }
        command.env("EASEL_CLUSTER", postgres.url()).env("EASEL_BIND", "127.0.0.1").env("EASEL_PORT", "0");
        let mut child = command.current_dir(&root).stdout(Stdio::piped()).spawn().expect("starting easel");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("listening line");
        let address = line.trim().strip_prefix("Easel listening on http://").expect("listening line").to_owned();
        let deadline = Instant::now() + common::WAIT;
        loop {
            let mut http = TcpStream::connect(&address).expect("connect");
            http.write_all(b"GET /readyz HTTP/1.1\r\nHost: easel\r\nConnection: close\r\n\r\n").expect("request");
            let mut response = String::new();
            http.read_to_string(&mut response).expect("response");
            if response.starts_with("HTTP/1.1 200") {
                break;
            }
            assert!(Instant::now() < deadline, "{service} never became ready: {response}");
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        let _ = child.wait();
        assert!(find_database(&root).is_none(), "a node of a cluster keeps nothing on local disk");
        let _ = std::fs::remove_dir_all(&root);
    }
}

#[test]
fn the_agones_manifests_use_the_servers_settings_counter_and_port() {
    let help = serve_help();
    let fleet = repository_file("deploy/agones/fleet.yaml");
    let settings: Vec<&str> = fleet
        .lines()
        .filter_map(|line| line.trim().strip_prefix("- name: "))
        .filter(|name| name.starts_with("EASEL_"))
        .collect();
    assert!(settings.contains(&"EASEL_CLUSTER"), "the fleet's nodes join a cluster: {settings:?}");
    for name in settings {
        let known = help.contains(&format!("[env: {name}=")) || help.contains(&format!("[env: {name}]"));
        assert!(known, "{name} is not a setting of `easel serve`");
    }
    // `--agones` exists in builds with the feature (this test runs the plain build).
    assert!(fleet.contains(r#"args: ["serve", "--agones", "on"]"#), "{fleet}");
    assert!(fleet.contains("portPolicy: Passthrough") && fleet.contains("protocol: TCPUDP"), "one port, TCP and UDP");
    let counter = easel::agones::ROOMS_COUNTER;
    assert!(fleet.contains(&format!("counters:\n        {counter}:")), "the fleet declares the {counter} counter");
    for file in ["fleetautoscaler.yaml", "allocation.yaml"] {
        let text = repository_file(&format!("deploy/agones/{file}"));
        assert!(text.contains(&format!("key: {counter}")) || text.contains(&format!("{counter}:")), "{file}");
    }
    let autoscaler = repository_file("deploy/agones/fleetautoscaler.yaml");
    assert!(autoscaler.contains("fleetName: easel") && autoscaler.contains("type: Counter"), "{autoscaler}");
}
