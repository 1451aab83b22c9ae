//! `kiln lint`, infrastructure rules (DNS, GPU, storage, MetalLB, join): each rule is
//! triggered by one edit of the shipped sai profile, reported alone with the right exit
//! code and a human message (snapshotted), and gone once the profile is fixed the way the
//! hint says. Plus the shape of the SARIF and table formats.

mod common;

use std::path::PathBuf;

use common::{copy_dir, repo, Kiln};

const CLUSTER: &str = "profiles/sai/cluster.toml";

/// The test copy of sai, linted with a store inside the scratch directory.
struct Sai {
    kiln: Kiln,
}

impl Sai {
    /// The shipped profile with the repository's pin sets, as shipped.
    fn shipped() -> Sai {
        let kiln = Kiln::new();
        kiln.copy_profile("sai");
        copy_dir(&repo().join("images"), &kiln.path("images"));
        Sai { kiln }
    }

    /// The shipped profile.
    fn new() -> Sai {
        Sai::shipped()
    }

    fn path(&self, relative: &str) -> PathBuf {
        self.kiln.path(relative)
    }

    /// Replace the one occurrence of `from` in a file of the scratch directory.
    fn edit(&self, file: &str, from: &str, to: &str) -> &Self {
        let path = self.path(file);
        let text = fs_err::read_to_string(&path).unwrap();
        assert_eq!(
            text.matches(from).count(),
            1,
            "test edit `{from}` must match exactly once in {file}"
        );
        fs_err::write(&path, text.replacen(from, to, 1)).unwrap();
        self
    }

    /// Add text at the end of a file.
    fn append(&self, file: &str, extra: &str) -> &Self {
        let path = self.path(file);
        let mut text = fs_err::read_to_string(&path).unwrap();
        text.push_str(extra);
        fs_err::write(&path, text).unwrap();
        self
    }

    /// Make the cluster air-gapped, with a login the hub can reach on site (GitHub login is
    /// another rule's finding on an air-gapped cluster).
    fn airgapped(&self) -> &Self {
        self.edit(CLUSTER, "airgapped = false", "airgapped = true")
            .edit(
                CLUSTER,
                r#"authenticator_class = "github""#,
                r#"authenticator_class = "ldapauthenticator.LDAPAuthenticator""#,
            )
    }

    fn lint(&self, extra: &[&str]) -> common::Run {
        let mut args = vec!["--profile", "profiles/sai", "--store", "store", "lint"];
        args.extend_from_slice(extra);
        self.kiln.run_with(&args)
    }

    /// The rule ids of every finding (`lint --format json`), with the exit code.
    fn rules(&self, extra: &[&str]) -> (i32, Vec<String>) {
        let mut args = vec!["--format", "json"];
        args.extend_from_slice(extra);
        let run = self.lint(&args);
        let json: serde_json::Value = serde_json::from_str(&run.stdout).unwrap_or_else(|error| {
            panic!(
                "lint --format json: {error}\n{}\n{}",
                run.stdout, run.stderr
            )
        });
        let rules = json["findings"]
            .as_array()
            .expect("findings")
            .iter()
            .map(|finding| finding["rule"].as_str().unwrap().to_string())
            .collect();
        (run.code, rules)
    }

    /// Assert the profile has exactly `count` findings, all of `rule`, with `code`; return
    /// the human output.
    fn only(&self, rule: &str, count: usize, code: i32, extra: &[&str]) -> String {
        let (actual_code, rules) = self.rules(extra);
        assert_eq!(rules, vec![rule.to_string(); count], "findings");
        assert_eq!(actual_code, code, "exit code");
        let run = self.lint(extra);
        assert_eq!(run.code, code, "exit code of the human format");
        run.stdout
    }

    /// Assert the profile lints clean.
    fn clean(&self, extra: &[&str]) {
        let run = self.lint(extra);
        assert_eq!(
            (run.code, run.stdout.as_str()),
            (0, "no findings\n"),
            "{}",
            run.stderr
        );
    }
}

trait FileWrite {
    fn file_write(&self, path: &str, contents: &str);
}

impl FileWrite for Kiln {
    fn file_write(&self, path: &str, contents: &str) {
        let target = self.path(path);
        fs_err::create_dir_all(target.parent().unwrap()).unwrap();
        fs_err::write(target, contents).unwrap();
    }
}

#[test]
fn sai_lints_clean() {
    Sai::shipped().clean(&[]);
}

#[test]
fn sai_with_test_secrets_lints_clean() {
    let secrets = repo().join("tests/fixtures/sai-secrets.toml");
    Sai::new().clean(&["--secrets", secrets.to_str().unwrap()]);
}

// --- dns ---

#[test]
fn dns_node_override() {
    let sai = Sai::new();
    let node = "ip = \"10.1.24.202\"\n";
    sai.edit(
        CLUSTER,
        node,
        "ip = \"10.1.24.202\"\ndns = { servers = [\"10.1.24.2\", \"10.1.24.3\"], search = [\"cttc.es\"] }\n",
    );
    insta::assert_snapshot!(sai.only("dns-node-override", 1, 1, &[]));
    // The node's own table may repeat [network.dns] exactly.
    sai.edit(
        CLUSTER,
        "search = [\"cttc.es\"] }",
        "search = [\"sai.cttc.es\", \"cttc.es\"] }",
    );
    sai.clean(&[]);
}

#[test]
fn dns_upstream_unroutable() {
    let sai = Sai::new();
    sai.edit(CLUSTER, "gateway = \"10.1.24.1\"\n", "").edit(
        CLUSTER,
        "[microk8s.addons.dns]\n",
        "[microk8s.addons.dns]\nargs = [\"10.1.24.2,10.9.0.53\"]\n",
    );
    insta::assert_snapshot!(sai.only("dns-upstream-unroutable", 1, 1, &[]));
    sai.edit(CLUSTER, "10.1.24.2,10.9.0.53", "10.1.24.2");
    sai.clean(&[]);
}

#[test]
fn dns_upstream_unroutable_from_the_default_servers() {
    // No args: kiln passes the cluster's DNS servers, so the finding points at them.
    let sai = Sai::new();
    sai.edit(CLUSTER, "gateway = \"10.1.24.1\"\n", "").edit(
        CLUSTER,
        "servers = [\"10.1.24.2\", \"10.1.24.3\"]",
        "servers = [\"10.1.24.2\", \"10.9.0.53\"]",
    );
    insta::assert_snapshot!(sai.only("dns-upstream-unroutable", 1, 1, &[]));
    sai.edit(CLUSTER, "\"10.9.0.53\"]", "\"10.1.24.3\"]");
    sai.clean(&[]);
}

#[test]
fn dns_upstream_public() {
    let sai = Sai::new();
    sai.airgapped().edit(
        CLUSTER,
        "[microk8s.addons.dns]\n",
        "[microk8s.addons.dns]\nargs = [\"8.8.8.8\"]\n",
    );
    insta::assert_snapshot!(sai.only("dns-upstream-public", 1, 0, &[]));
    sai.edit(
        CLUSTER,
        "args = [\"8.8.8.8\"]\n",
        "args = [\"10.1.24.2\"]\n",
    );
    sai.clean(&[]);
}

// --- gpu ---

#[test]
fn gpu_no_operator() {
    let sai = Sai::new();
    let release = "[helm.releases.gpu-operator]\nchart = \"gpu-operator\"\nrepository = \"https://helm.ngc.nvidia.com/nvidia\"\nversion = \"v25.3.2\"\nnamespace = \"gpu-operator-resources\"\n";
    sai.edit(CLUSTER, release, "");
    insta::assert_snapshot!(sai.only("gpu-no-operator", 1, 1, &[]));
    sai.append(CLUSTER, &format!("\n{release}"));
    sai.clean(&[]);
}

#[test]
fn gpu_no_driver_pin() {
    let sai = Sai::new();
    // sai-gpu2 moves to a driver branch that nothing pins.
    sai.edit(
        CLUSTER,
        "ip = \"10.1.24.204\"\n",
        "ip = \"10.1.24.204\"\ngpu = { driver = \"575-server\" }\n",
    );
    insta::assert_snapshot!(sai.only("gpu-no-driver-pin", 1, 1, &[]));
    // The hint's second way: the driver as OS packages of the node.
    sai.edit(
        CLUSTER,
        "gpu = { driver = \"575-server\" }\n",
        "gpu = { driver = \"575-server\" }\n\"packages+\" = [\"nvidia-headless-575-server-open\", \"nvidia-utils-575-server\"]\n",
    );
    sai.clean(&[]);
}

#[test]
fn gpu_addon_airgapped() {
    let sai = Sai::new();
    sai.airgapped().edit(
        CLUSTER,
        "[microk8s.addons.helm3]\n",
        "[microk8s.addons.helm3]\n\n[microk8s.addons.nvidia]\n",
    );
    insta::assert_snapshot!(sai.only("gpu-addon-airgapped", 1, 1, &[]));
    sai.edit(CLUSTER, "\n[microk8s.addons.nvidia]\n", "");
    sai.clean(&[]);
}

#[test]
fn jupyterhub_gpu_profile_without_gpu_node() {
    let sai = Sai::new();
    sai.edit(
        CLUSTER,
        "roles = [\"gpu-worker\"]\nmac = \"3c:ec:ef:24:02:03\"",
        "roles = [\"worker\"]\nmac = \"3c:ec:ef:24:02:03\"",
    )
    .edit(
        CLUSTER,
        "roles = [\"gpu-worker\"]\nmac = \"3c:ec:ef:24:02:04\"",
        "roles = [\"worker\"]\nmac = \"3c:ec:ef:24:02:04\"",
    );
    insta::assert_snapshot!(sai.only("jupyterhub-gpu-profile-without-gpu-node", 1, 1, &[]));
    // The hint: drop the GPU limit (no GPU nodes left to serve it).
    sai.edit(
        CLUSTER,
        ", extra_resource_limits = { \"nvidia.com/gpu\" = \"1\" }",
        "",
    );
    sai.clean(&[]);
}

// --- storage ---

#[test]
fn hostpath_default_multinode() {
    let sai = Sai::new();
    sai.edit(CLUSTER, "args = [\"--default-class=false\"]\n", "");
    insta::assert_snapshot!(sai.only("hostpath-default-multinode", 1, 1, &[]));
    // Both spellings of the flag turn it off.
    sai.edit(
        CLUSTER,
        "[microk8s.addons.hostpath-storage]\n",
        "[microk8s.addons.hostpath-storage]\nargs = [\"--default-class\", \"false\"]\n",
    );
    sai.clean(&[]);
}

#[test]
fn jupyterhub_storage_on_hostpath() {
    let sai = Sai::new();
    sai.edit(
        CLUSTER,
        "storageClass = \"nfs-client\"",
        "storageClass = \"microk8s-hostpath\"",
    );
    insta::assert_snapshot!(sai.only("jupyterhub-storage-not-network", 1, 1, &[]));
    sai.edit(
        CLUSTER,
        "storageClass = \"microk8s-hostpath\"",
        "storageClass = \"nfs-client\"",
    );
    sai.clean(&[]);
}

#[test]
fn jupyterhub_storage_on_the_default_class() {
    // No class: the default one, which is NFS's unless the provisioner is told otherwise.
    let sai = Sai::new();
    sai.edit(CLUSTER, "storageClass = \"nfs-client\"\n", "");
    sai.clean(&[]);
    sai.edit(
        CLUSTER,
        "namespace = \"nfs-server-provisioner\"\n",
        "namespace = \"nfs-server-provisioner\"\nvalues = { storageClass = { defaultClass = false } }\n",
    );
    insta::assert_snapshot!(sai.only("jupyterhub-storage-not-network", 1, 1, &[]));
}

#[test]
fn jupyterhub_storage_class_unknown() {
    let sai = Sai::new();
    sai.edit(
        CLUSTER,
        "storageClass = \"nfs-client\"",
        "storageClass = \"nfs\"",
    );
    insta::assert_snapshot!(sai.only("jupyterhub-storage-class-unknown", 1, 0, &[]));
    sai.edit(
        CLUSTER,
        "storageClass = \"nfs\"",
        "storageClass = \"nfs-client\"",
    );
    sai.clean(&[]);
}

#[test]
fn nfs_root_squash() {
    let sai = Sai::new();
    sai.edit(
        CLUSTER,
        "clients = [\"10.1.24.0/24\"]\n",
        "clients = [\"10.1.24.0/24\"]\noptions = [\"rw\", \"sync\", \"no_subtree_check\", \"root_squash\"]\n",
    );
    insta::assert_snapshot!(sai.only("nfs-root-squash", 1, 1, &[]));
    sai.edit(
        CLUSTER,
        "\"no_subtree_check\", \"root_squash\"]",
        "\"no_subtree_check\", \"no_root_squash\"]",
    );
    sai.clean(&[]);
}

// --- metallb ---

const METALLB_ARGS: &str = "args = [\"10.1.24.220-10.1.24.239\"]";

#[test]
fn metallb_no_range() {
    let sai = Sai::new();
    sai.edit(CLUSTER, &format!("{METALLB_ARGS}\n"), "");
    insta::assert_snapshot!(sai.only("metallb-no-range", 1, 1, &[]));
    sai.edit(
        CLUSTER,
        "[microk8s.addons.metallb]\n",
        &format!("[microk8s.addons.metallb]\n{METALLB_ARGS}\n"),
    );
    sai.clean(&[]);
}

#[test]
fn metallb_range_invalid() {
    let sai = Sai::new();
    sai.edit(
        CLUSTER,
        METALLB_ARGS,
        "args = [\"10.1.24.220-10.1.24.239,10.1.24.250\"]",
    );
    insta::assert_snapshot!(sai.only("metallb-range-invalid", 1, 1, &[]));
    sai.edit(CLUSTER, "10.1.24.250\"]", "10.1.24.250/32\"]");
    sai.clean(&[]);
}

#[test]
fn metallb_range_outside_subnet() {
    let sai = Sai::new();
    sai.edit(CLUSTER, METALLB_ARGS, "args = [\"10.1.24.220-10.1.25.10\"]");
    insta::assert_snapshot!(sai.only("metallb-range-outside-subnet", 1, 1, &[]));
    sai.edit(CLUSTER, "10.1.25.10", "10.1.24.239");
    sai.clean(&[]);
}

#[test]
fn metallb_range_overlaps_nodes() {
    let sai = Sai::new();
    sai.edit(
        CLUSTER,
        METALLB_ARGS,
        "args = [\"10.1.24.0/26,10.1.24.200-10.1.24.239\"]",
    );
    // One finding per range: the gateway in the first, the nodes in the second.
    insta::assert_snapshot!(sai.only("metallb-range-overlaps-nodes", 2, 1, &[]));
    sai.edit(CLUSTER, "10.1.24.0/26,10.1.24.200-", "10.1.24.220-");
    sai.clean(&[]);
}

// --- join ---

#[test]
fn join_token_short() {
    let sai = Sai::new();
    let fixture = fs_err::read_to_string(repo().join("tests/fixtures/sai-secrets.toml")).unwrap();
    let short = "sai-token-too-short-7";
    sai.kiln.file_write(
        "secrets.toml",
        &fixture.replace("test-join-token-0123456789abcdef0123", short),
    );
    let output = sai.only("join-token-short", 1, 1, &["--secrets", "secrets.toml"]);
    assert!(!output.contains(short), "the token is printed:\n{output}");
    insta::assert_snapshot!(output);
    // Not supplied: nothing to check.
    sai.clean(&[]);
    sai.kiln.file_write("secrets.toml", &fixture);
    sai.clean(&["--secrets", "secrets.toml"]);
}

/// kiln's launch configuration template, as a profile override.
fn override_launch_config(sai: &Sai) -> &'static str {
    let path = "profiles/sai/templates/microk8s/launch-config.yaml";
    let template =
        fs_err::read_to_string(repo().join("templates/microk8s/launch-config.yaml")).unwrap();
    sai.kiln.file_write(path, &template);
    path
}

#[test]
fn join_address_not_ip() {
    let sai = Sai::new();
    let template = override_launch_config(&sai);
    sai.edit(
        template,
        "url: {{ microk8s.join_url | yaml }}",
        "url: {{ microk8s.first_control_plane.name ~ \".sai.cttc.es:25000/\" ~ microk8s.token | yaml }}",
    );
    // One per joining node: sai-cpu1, sai-gpu1, sai-gpu2.
    let output = sai.only("join-address-not-ip", 3, 1, &[]);
    assert!(!output.contains("kiln-lint-placeholder"), "{output}");
    insta::assert_snapshot!(output);
    sai.edit(
        template,
        "url: {{ microk8s.first_control_plane.name ~ \".sai.cttc.es:25000/\" ~ microk8s.token | yaml }}",
        "url: {{ microk8s.join_url | yaml }}",
    );
    sai.clean(&[]);
}

#[test]
fn join_worker_addons() {
    let sai = Sai::new();
    let template = override_launch_config(&sai);
    let worker = "{%- if node.kubernetes == \"worker\" %}\n  worker: true\n{%- endif %}";
    sai.edit(
        template,
        worker,
        &format!("{worker}\naddons:\n  - name: dns"),
    );
    // One per worker: sai-cpu1, sai-gpu1, sai-gpu2.
    insta::assert_snapshot!(sai.only("join-worker-addons", 3, 1, &[]));
    sai.edit(template, "\naddons:\n  - name: dns", "");
    sai.clean(&[]);
}

// --- formats ---

#[test]
fn sarif_and_table_formats() {
    let sai = Sai::new();
    sai.edit(
        CLUSTER,
        METALLB_ARGS,
        "args = [\"10.1.24.200-10.1.24.239\"]",
    )
    .edit(
        CLUSTER,
        "storageClass = \"nfs-client\"",
        "storageClass = \"nfs\"",
    );

    let run = sai.lint(&["--format", "sarif"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let sarif: serde_json::Value = serde_json::from_str(&run.stdout).expect("SARIF is JSON");
    assert_eq!(sarif["version"], "2.1.0");
    let results = sarif["runs"][0]["results"].as_array().expect("results");
    assert_eq!(results.len(), 2);
    for result in results {
        assert!(result["ruleId"].is_string(), "{result}");
        assert!(
            matches!(result["level"].as_str(), Some("error" | "warning")),
            "{result}"
        );
        let location = &result["locations"][0]["physicalLocation"];
        assert_eq!(location["artifactLocation"]["uri"], CLUSTER);
        assert!(location["region"]["startLine"].as_u64().unwrap() > 0);
    }
    let overlap = results
        .iter()
        .find(|result| result["ruleId"] == "metallb-range-overlaps-nodes")
        .expect("metallb result");
    assert_eq!(overlap["level"], "error");
    let unknown = results
        .iter()
        .find(|result| result["ruleId"] == "jupyterhub-storage-class-unknown")
        .expect("storage class result");
    assert_eq!(unknown["level"], "warning");
    let rules = sarif["runs"][0]["tool"]["driver"]["rules"]
        .as_array()
        .expect("rules");
    for id in ["dns-node-override", "gpu-no-driver-pin", "join-token-short"] {
        assert!(rules.iter().any(|rule| rule["id"] == id), "{id} not listed");
    }

    let run = sai.lint(&["--format", "table"]);
    assert_eq!(run.code, 1);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{}", run.stdout);
    assert!(lines[0].starts_with("error  "), "{}", lines[0]);
    assert!(lines[0].contains("metallb-range-overlaps-nodes"));
    assert!(lines[0].contains(&format!("{CLUSTER}:")));
    assert!(lines[1].starts_with("warning"), "{}", lines[1]);
    assert!(lines[1].contains("jupyterhub-storage-class-unknown"));
}
