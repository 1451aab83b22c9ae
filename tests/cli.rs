//! The command line as users meet it: help texts, template overrides, node selection.

mod common;

use common::Kiln;

#[test]
fn help() {
    let run = Kiln::new().args(["--help"]).run();
    assert_eq!(run.code, 0);
    insta::assert_snapshot!(run.stdout);
}

#[test]
fn render_help() {
    let run = Kiln::new().args(["render", "--help"]).run();
    assert_eq!(run.code, 0);
    insta::assert_snapshot!(run.stdout);
}

#[test]
fn eval_help() {
    let run = Kiln::new().args(["eval", "--help"]).run();
    assert_eq!(run.code, 0);
    insta::assert_snapshot!(run.stdout);
}

/// A copy of the demo profile with a replacement template.
fn demo_with_template(name: &str, text: &str) -> Kiln {
    let kiln = Kiln::new();
    let profile = kiln.copy_profile("demo");
    let target = profile.join("templates").join(name);
    fs_err::create_dir_all(target.parent().unwrap()).unwrap();
    fs_err::write(target, text).unwrap();
    kiln
}

#[test]
fn a_profile_template_replaces_kilns() {
    let kiln = demo_with_template(
        "cloud-init/meta-data",
        "instance-id: site-{{ node.name }}\n",
    )
    .args([
        "--profile",
        "profiles/demo",
        "render",
        "--node",
        "demo-client",
        "--out",
        "out",
    ]);
    let run = kiln.run();
    assert_eq!(run.code, 0, "{}", run.stderr);
    let meta = fs_err::read_to_string(kiln.path("out/demo-client/cloud-init/meta-data")).unwrap();
    assert_eq!(meta, "instance-id: site-demo-client\n");
    // Only the chosen node is rendered.
    assert!(!kiln.path("out/demo-server").exists());
    // The other templates are still kiln's.
    let user_data =
        fs_err::read_to_string(kiln.path("out/demo-client/cloud-init/user-data")).unwrap();
    assert!(user_data.starts_with("#cloud-config\n"));
}

#[test]
fn a_profile_template_that_replaces_nothing_is_an_error() {
    let kiln = demo_with_template("cloud-init/meta-date", "x").args([
        "--profile",
        "profiles/demo",
        "render",
        "--all",
        "--out",
        "out",
    ]);
    let run = kiln.run();
    assert_eq!(run.code, 1, "{}", run.stderr);
    insta::assert_snapshot!(run.stderr);
}

#[test]
fn a_broken_profile_template_names_itself() {
    let kiln = demo_with_template("nfs/exports", "{{ nfs.export ").args([
        "--profile",
        "profiles/demo",
        "render",
        "--all",
        "--out",
        "out",
    ]);
    let run = kiln.run();
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("template `nfs/exports` does not parse"),
        "{}",
        run.stderr
    );
}

#[test]
fn templates_cannot_read_the_environment() {
    let kiln = demo_with_template(
        "image/resolv.conf",
        "nameserver {{ get_env(name=\"HOME\") }}\n",
    )
    .env("HOME", "/home/someone")
    .args([
        "--profile",
        "profiles/demo",
        "render",
        "--all",
        "--out",
        "out",
    ]);
    let run = kiln.run();
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("templates cannot read environment variables"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("/home/someone"), "{}", run.stderr);
}

#[test]
fn eval_prints_every_node_and_json_parses() {
    let run = Kiln::new()
        .args([
            "--profile",
            &common::repo().join("profiles/sai").display().to_string(),
            "eval",
            "--json",
        ])
        .run();
    assert_eq!(run.code, 0, "{}", run.stderr);
    let json: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let nodes: Vec<&String> = json["nodes"].as_object().unwrap().keys().collect();
    assert_eq!(
        nodes,
        ["sai-cp1", "sai-cpu1", "sai-gpu1", "sai-gpu2", "sai-nfs1"]
    );
    // Secrets show as references.
    assert_eq!(
        json["microk8s"]["token"],
        serde_json::json!({ "secret": "microk8s-join-token" })
    );
    let client_secret = &json["helm"]["releases"]["jupyterhub"]["values"]["hub"]["config"]
        ["GitHubOAuthenticator"]["client_secret"];
    assert_eq!(
        client_secret,
        &serde_json::json!({ "secret": "github-oauth-client-secret" })
    );
}

#[test]
fn eval_of_one_node_in_toml() {
    let run = Kiln::new()
        .args([
            "--profile",
            &common::repo().join("profiles/demo").display().to_string(),
            "eval",
            "--node",
            "demo-server",
        ])
        .run();
    assert_eq!(run.code, 0, "{}", run.stderr);
    insta::assert_snapshot!(run.stdout);
}

/// Regression: a multi-line secret in Helm values is written as an indented YAML block, so
/// the file never contains the secret verbatim; it must still be root-only.
#[test]
fn values_holding_a_multi_line_secret_are_root_only() {
    use std::os::unix::fs::PermissionsExt;
    let kiln = Kiln::new();
    let profile = kiln.copy_profile("sai");
    let cluster = fs_err::read_to_string(profile.join("cluster.toml")).unwrap();
    let cluster = cluster.replace(
        "[helm.releases.jupyterhub-ssh.values]\n",
        "[helm.releases.jupyterhub-ssh.values]\nhostKey = { secret = \"jupyterhub-tls-key\" }\n",
    );
    fs_err::write(profile.join("cluster.toml"), cluster).unwrap();
    let secrets = common::repo().join("tests/fixtures/sai-secrets.toml");
    let kiln = kiln.args([
        "--profile",
        "profiles/sai",
        "--secrets",
        &secrets.display().to_string(),
        "render",
        "--node",
        "sai-cp1",
        "--out",
        "out",
    ]);
    let run = kiln.run();
    assert_eq!(run.code, 0, "{}", run.stderr);
    let path = kiln.path("out/sai-cp1/root/etc/kiln/helm/jupyterhub-ssh.values.yaml");
    assert!(fs_err::read_to_string(&path)
        .unwrap()
        .contains("TESTKEYBODY"));
    let mode = fs_err::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "values holding a secret must be root-only");
}

/// Regression: `kiln eval | head` closed the pipe and kiln panicked.
#[test]
fn eval_into_a_closed_pipe_does_not_panic() {
    let (reader, writer) = std::io::pipe().unwrap();
    // Nobody reads: every write kiln makes fails with EPIPE.
    drop(reader);
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args([
            "--profile",
            &common::repo().join("profiles/sai").display().to_string(),
            "eval",
            "--json",
        ])
        .stdout(writer)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(output.status.code(), Some(0), "{stderr}");
}

#[test]
fn the_shipped_demo_profile_lints_clean() {
    let profile = common::repo().join("profiles/demo");
    let run = Kiln::new()
        .args(["--profile", &profile.display().to_string(), "lint"])
        .run();
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert_eq!(run.stdout, "no findings\n");
}
