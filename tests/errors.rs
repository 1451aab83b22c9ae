//! Errors a person can act on: each bad profile gets a message with file:line:col, the
//! source line, a caret and a hint, and exit code 1. Messages are snapshotted.

mod common;

use common::Kiln;

/// A small valid cluster to break in one place at a time.
const CLUSTER: &str = r#"[cluster]
name = "lab"
domain = "lab.example"
os = "debian-12"

[network]
subnet = "10.10.0.0/24"
gateway = "10.10.0.1"

[network.dns]
servers = ["10.10.0.2"]
search = ["lab.example"]

[microk8s]
channel = "1.34/stable"
token = { secret = "join-token" }

[microk8s.addons.dns]

[nodes.cp1]
roles = ["control-plane"]
mac = "52:54:00:00:00:01"
ip = "10.10.0.10"

[nodes.gpu1]
roles = ["gpu-worker"]
mac = "52:54:00:00:00:02"
ip = "10.10.0.11"
"#;

const ROLES: &[(&str, &str)] = &[
    ("control-plane", "kubernetes = \"control-plane\"\n"),
    (
        "gpu-worker",
        "kubernetes = \"worker\"\n\"packages+\" = [\"nfs-common\"]\n\n[gpu]\ndriver = \"550-server\"\n",
    ),
];

/// A profile whose cluster file is `CLUSTER` with `from` replaced by `to`.
fn profile(from: &str, to: &str) -> Kiln {
    assert!(CLUSTER.contains(from), "test edit `{from}` does not apply");
    let mut kiln = Kiln::new().file("lab/cluster.toml", &CLUSTER.replace(from, to));
    for (name, text) in ROLES {
        kiln = kiln.file(&format!("roles/{name}.toml"), text);
    }
    kiln
}

fn eval_error(kiln: Kiln) -> String {
    let run = kiln.args(["--profile", "lab", "eval"]).run();
    assert_eq!(
        run.code, 1,
        "expected exit 1, got {}:\n{}{}",
        run.code, run.stdout, run.stderr
    );
    assert!(
        run.stdout.is_empty(),
        "nothing on stdout on error: {}",
        run.stdout
    );
    run.stderr
}

#[test]
fn the_base_profile_is_valid() {
    let run = profile("", "").args(["--profile", "lab", "eval"]).run();
    assert_eq!(run.code, 0, "{}", run.stderr);
}

#[test]
fn misspelt_key() {
    insta::assert_snapshot!(eval_error(profile(
        "[microk8s.addons.dns]",
        "[microk8s.adons.dns]"
    )));
}

#[test]
fn misspelt_key_in_a_node() {
    insta::assert_snapshot!(eval_error(profile(
        "ip = \"10.10.0.11\"",
        "ip = \"10.10.0.11\"\ninstal_disk = \"largest\""
    )));
}

#[test]
fn misspelt_key_in_a_role_points_at_the_role_file() {
    let kiln = profile("", "").file(
        "roles/gpu-worker.toml",
        "kubernetes = \"worker\"\n[gpu]\ndriver = \"550-server\"\noptinal = true\n",
    );
    insta::assert_snapshot!(eval_error(kiln));
}

#[test]
fn wrong_type() {
    insta::assert_snapshot!(eval_error(profile(
        "servers = [\"10.10.0.2\"]",
        "servers = \"10.10.0.2\""
    )));
}

#[test]
fn invalid_address() {
    insta::assert_snapshot!(eval_error(profile(
        "ip = \"10.10.0.11\"",
        "ip = \"10.10.0.300\""
    )));
}

#[test]
fn missing_required_value() {
    insta::assert_snapshot!(eval_error(profile("ip = \"10.10.0.11\"\n", "")));
}

#[test]
fn duplicate_ip() {
    insta::assert_snapshot!(eval_error(profile(
        "ip = \"10.10.0.11\"",
        "ip = \"10.10.0.10\""
    )));
}

#[test]
fn duplicate_mac() {
    insta::assert_snapshot!(eval_error(profile(
        "mac = \"52:54:00:00:00:02\"",
        "mac = \"52:54:00:00:00:01\""
    )));
}

#[test]
fn address_outside_subnet() {
    insta::assert_snapshot!(eval_error(profile(
        "ip = \"10.10.0.11\"",
        "ip = \"10.10.1.11\""
    )));
}

#[test]
fn inline_secret() {
    let stderr = eval_error(profile(
        "token = { secret = \"join-token\" }",
        "token = \"s3cr3t-value-that-must-not-leak\"",
    ));
    assert!(
        !stderr.contains("s3cr3t"),
        "the secret leaked into the message:\n{stderr}"
    );
    insta::assert_snapshot!(stderr);
}

#[test]
fn inline_secret_in_helm_values() {
    let kiln = profile(
        "[nodes.cp1]",
        "[helm.releases.hub]\nchart = \"jupyterhub\"\nrepository = \"https://hub.jupyter.org/helm-chart/\"\nversion = \"4.3.2\"\nnamespace = \"hub\"\n\n[helm.releases.hub.values.hub.config.GitHubOAuthenticator]\nclient_secret = \"oauth-s3cr3t\"\n\n[nodes.cp1]",
    );
    let stderr = eval_error(kiln);
    assert!(
        !stderr.contains("oauth-s3cr3t"),
        "the secret leaked into the message:\n{stderr}"
    );
    insta::assert_snapshot!(stderr);
}

#[test]
fn unknown_role() {
    insta::assert_snapshot!(eval_error(profile(
        "roles = [\"gpu-worker\"]",
        "roles = [\"gpu-wroker\"]"
    )));
}

#[test]
fn toml_syntax_error() {
    insta::assert_snapshot!(eval_error(profile(
        "[microk8s.addons.dns]",
        "[microk8s.addons.dns"
    )));
}

#[test]
fn several_findings_are_reported_together() {
    let kiln = profile("ip = \"10.10.0.11\"", "ip = \"10.10.0.10\"")
        .file("x", "")
        .args(["--profile", "lab", "eval"]);
    let kiln = {
        // Also give the gpu node the first node's MAC.
        let text = fs_err::read_to_string(kiln.path("lab/cluster.toml")).unwrap();
        let text = text.replace("mac = \"52:54:00:00:00:02\"", "mac = \"52:54:00:00:00:01\"");
        fs_err::write(kiln.path("lab/cluster.toml"), text).unwrap();
        kiln
    };
    let run = kiln.run();
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("duplicate-mac") && run.stderr.contains("duplicate-ip"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("2 errors found"), "{}", run.stderr);
}

#[test]
fn missing_secret_is_named_and_nothing_is_written() {
    let run = profile("", "")
        .args(["--profile", "lab", "render", "--all", "--out", "out"])
        .run();
    assert_eq!(run.code, 1);
    assert!(!std::path::Path::new(&run.stderr).exists());
    insta::assert_snapshot!(run.stderr);
}

#[test]
fn secrets_come_from_the_environment() {
    let kiln = profile("", "")
        .env(
            "KILN_SECRET_JOIN_TOKEN",
            "env-token-0123456789abcdef0123456789",
        )
        .args(["--profile", "lab", "render", "--all", "--out", "out"]);
    let run = kiln.run();
    assert_eq!(run.code, 0, "{}", run.stderr);
    let launch = fs_err::read_to_string(kiln.path("out/cp1/root/etc/microk8s.yaml")).unwrap();
    assert!(launch.contains("env-token-0123456789abcdef0123456789"));
    assert!(
        !run.stderr.contains("env-token"),
        "a secret was printed: {}",
        run.stderr
    );
}

#[test]
fn usage_errors_exit_2() {
    let run = Kiln::new().args(["eval", "--no-such-flag"]).run();
    assert_eq!(run.code, 2, "{}", run.stderr);
    let run = profile("", "")
        .args(["--profile", "lab", "eval", "--node", "nope"])
        .run();
    assert_eq!(run.code, 2, "{}", run.stderr);
    insta::assert_snapshot!(run.stderr);
}

#[test]
fn render_refuses_to_overwrite_a_foreign_directory() {
    let kiln = profile("", "")
        .file("out/cp1/precious.txt", "do not delete")
        .env(
            "KILN_SECRET_JOIN_TOKEN",
            "env-token-0123456789abcdef0123456789",
        )
        .args(["--profile", "lab", "render", "--all", "--out", "out"]);
    let run = kiln.run();
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(kiln.path("out/cp1/precious.txt").exists());
    insta::assert_snapshot!(run.stderr);
}

#[test]
fn explain_names_the_role_and_the_node_that_overrode_it() {
    let kiln = profile(
        "ip = \"10.10.0.11\"",
        "ip = \"10.10.0.11\"\ngpu = { driver = \"580-server\" }",
    );
    let run = kiln
        .args([
            "--profile",
            "lab",
            "eval",
            "--explain",
            "nodes.gpu1.gpu.driver",
        ])
        .run();
    assert_eq!(run.code, 0, "{}", run.stderr);
    insta::assert_snapshot!(run.stdout, @r#"
    nodes.gpu1.gpu.driver = "580-server"
      set at lab/cluster.toml:29:18
      overrode "550-server" from roles/gpu-worker.toml:5:10
    "#);
}

#[test]
fn explain_json_and_defaults() {
    let kiln = profile("", "");
    let run = kiln
        .args([
            "--profile",
            "lab",
            "eval",
            "--json",
            "--explain",
            "nodes.gpu1.gpu.optional",
        ])
        .run();
    assert_eq!(run.code, 0, "{}", run.stderr);
    let json: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(json["value"], serde_json::json!(false));
    assert_eq!(json["set_at"], serde_json::Value::Null);
}

#[test]
fn explain_an_appended_list_and_an_unset_value() {
    let kiln = profile(
        "ip = \"10.10.0.11\"",
        "ip = \"10.10.0.11\"\n\"packages+\" = [\"htop\"]\nunset = [\"gpu\"]",
    );
    let run = kiln
        .args([
            "--profile",
            "lab",
            "eval",
            "--explain",
            "nodes.gpu1.packages",
        ])
        .run();
    assert_eq!(run.code, 0, "{}", run.stderr);
    insta::assert_snapshot!(run.stdout, @r#"
    nodes.gpu1.packages = ["nfs-common","htop"]
      set at lab/cluster.toml:29:15
      overrode ["nfs-common"] (appended to) from roles/gpu-worker.toml:2:15
    "#);
    let kiln = profile(
        "ip = \"10.10.0.11\"",
        "ip = \"10.10.0.11\"\nunset = [\"gpu\"]",
    );
    let run = kiln
        .args(["--profile", "lab", "eval", "--explain", "nodes.gpu1.gpu"])
        .run();
    assert_eq!(run.code, 0, "{}", run.stderr);
    insta::assert_snapshot!(run.stdout, @r#"
    nodes.gpu1.gpu is not set
      removed by `unset` at lab/cluster.toml:29:10
      overrode { 1 keys } from roles/gpu-worker.toml:4:1
    "#);
}

#[test]
fn the_readme_example_profile_is_valid() {
    let readme = fs_err::read_to_string(common::repo().join("README.md")).unwrap();
    let start = readme
        .find("A complete example")
        .expect("README has the example");
    let block = &readme[start..];
    let block = &block[block.find("```toml\n").unwrap() + 8..];
    let example = &block[..block.find("```").unwrap()];
    let kiln = Kiln::new().file("lab/cluster.toml", example);
    common::copy_dir(&common::repo().join("profiles/roles"), &kiln.path("roles"));
    let run = kiln.run_with(&["--profile", "lab", "eval", "--json"]);
    assert_eq!(
        run.code, 0,
        "the README's example does not validate:\n{}",
        run.stderr
    );
    let json: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let packages = json["nodes"]["gpu1"]["packages"].as_array().unwrap();
    // [defaults], then the role's "packages+", then the node's "packages+".
    assert_eq!(packages.first().unwrap(), "openssh-server");
    assert!(packages.iter().any(|package| package == "nfs-common"));
    assert_eq!(packages.last().unwrap(), "htop");
    // The README shows `--explain` on this example: it must be what kiln prints.
    common::copy_dir(&kiln.path("lab"), &kiln.path("profiles/lab"));
    common::copy_dir(&kiln.path("roles"), &kiln.path("profiles/roles"));
    let run = kiln.run_with(&[
        "--profile",
        "profiles/lab",
        "eval",
        "--explain",
        "nodes.gpu1.gpu.module",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let shown = format!(
        "$ kiln -p profiles/lab eval --explain nodes.gpu1.gpu.module     # the example above\n{}",
        run.stdout
    );
    assert!(
        readme.contains(&shown),
        "README shows another --explain output than kiln's:\n{shown}"
    );
    assert_eq!(json["nodes"]["gpu1"]["gpu"]["module"], "proprietary");
}

#[test]
fn duplicate_node_name() {
    insta::assert_snapshot!(eval_error(profile("[nodes.gpu1]", "[nodes.cp1]")));
}

#[test]
fn duplicate_host_name() {
    insta::assert_snapshot!(eval_error(profile(
        "ip = \"10.10.0.11\"",
        "ip = \"10.10.0.11\"\nhostname = \"cp1\""
    )));
}
