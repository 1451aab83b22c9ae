//! `kiln lint`'s application rules (JupyterHub, TLS, ingress, dashboard, air gap, chart
//! values schemas): each is triggered by one edit of the shipped `sai` profile, which must
//! give exactly that finding, and a fixed profile is clean again.

mod common;

use std::io::Write as _;

use common::{copy_dir, repo, Kiln, Run};
use serde_json::Value;
use sha2::{Digest as _, Sha256};

/// The rules these tests are about.
const RULES: &[&str] = &[
    "jupyterhub-culling-on",
    "jupyterhub-github-airgapped",
    "jupyterhub-nobody-allowed",
    "tls-letsencrypt-unreachable",
    "jupyterhub-ssh-hub-url-unverifiable",
    "tls-verification-off",
    "ingress-tcp-wrong-controller",
    "dashboard-cluster-admin",
    "airgap-addon-downloads",
    "image-not-pinned",
    "helm-values-schema",
];

/// A scratch copy of the shipped sai profile.
struct Sai {
    kiln: Kiln,
    /// Findings of the unmodified copy (none, when every rule agrees the profile is clean).
    baseline: Vec<Value>,
}

impl Sai {
    fn new() -> Sai {
        let kiln = Kiln::new();
        kiln.copy_profile("sai");
        // The repository's shared pin sets (images/NAME.toml), found from the profile's parents.
        copy_dir(&repo().join("images"), &kiln.path("images"));
        let mut sai = Sai {
            kiln,
            baseline: Vec::new(),
        };
        sai.baseline = sai.findings().1;
        sai
    }

    /// Replace `from` by `to` in a file of the profile.
    fn edit(&self, file: &str, from: &str, to: &str) -> &Sai {
        let path = self.kiln.path(&format!("profiles/sai/{file}"));
        let text = fs_err::read_to_string(&path).unwrap();
        assert!(
            text.contains(from),
            "test edit `{from}` does not apply to {file}"
        );
        fs_err::write(&path, text.replacen(from, to, 1)).unwrap();
        self
    }

    /// Append text to the cluster file.
    fn append(&self, text: &str) -> &Sai {
        let path = self.kiln.path("profiles/sai/cluster.toml");
        let mut file = fs_err::OpenOptions::new().append(true).open(path).unwrap();
        file.write_all(text.as_bytes()).unwrap();
        self
    }

    fn lint(&self, format: &str) -> Run {
        self.kiln.run_with(&[
            "--profile",
            "profiles/sai",
            "--store",
            "store",
            "lint",
            "--format",
            format,
        ])
    }

    /// Exit code and findings (as JSON).
    fn findings(&self) -> (i32, Vec<Value>) {
        let run = self.lint("json");
        assert!(
            run.code == 0 || run.code == 1,
            "lint failed:\n{}",
            run.stderr
        );
        let json: Value = serde_json::from_str(&run.stdout)
            .unwrap_or_else(|error| panic!("not JSON ({error}):\n{}", run.stdout));
        (run.code, json["findings"].as_array().unwrap().clone())
    }

    /// Findings that the unmodified profile does not have (by rule, file and message: an
    /// edit may move other findings to other lines).
    fn new_findings(&self) -> (i32, Vec<Value>) {
        let key = |finding: &Value| {
            (
                finding["rule"].clone(),
                finding["file"].clone(),
                finding["message"].clone(),
            )
        };
        let old: Vec<_> = self.baseline.iter().map(key).collect();
        let (code, findings) = self.findings();
        let new = findings
            .into_iter()
            .filter(|finding| !old.contains(&key(finding)))
            .collect();
        (code, new)
    }

    /// Lint: exactly one new finding, of `rule`, exit 1; returns the human report of it.
    fn expect(&self, rule: &str) -> String {
        let (code, new) = self.new_findings();
        assert_eq!(code, 1, "an error finding exits 1: {new:#?}");
        let rules: Vec<&str> = new
            .iter()
            .map(|finding| finding["rule"].as_str().unwrap())
            .collect();
        assert_eq!(rules, [rule], "{new:#?}");
        assert_eq!(new[0]["severity"], "error");
        human_of(&self.lint("human").stdout, rule)
    }

    /// Lint: none of these rules finds anything, and nothing new at all.
    fn expect_clean(&self) {
        let (_, new) = self.new_findings();
        assert!(new.is_empty(), "{new:#?}");
        let (_, findings) = self.findings();
        let ours: Vec<&Value> = findings
            .iter()
            .filter(|finding| RULES.contains(&finding["rule"].as_str().unwrap()))
            .collect();
        assert!(ours.is_empty(), "{ours:#?}");
    }
}

/// The human report's blocks of one rule, with the summary line for them (other modules'
/// rules are written in parallel; their findings on the shipped profile are not ours to
/// snapshot).
fn human_of(report: &str, rule: &str) -> String {
    let blocks: Vec<&str> = report
        .split("\n\n")
        .filter(|block| {
            block.starts_with(&format!("error[{rule}]"))
                || block.starts_with(&format!("warning[{rule}]"))
        })
        .collect();
    assert!(!blocks.is_empty(), "no `{rule}` in:\n{report}");
    let errors = blocks
        .iter()
        .filter(|block| block.starts_with("error["))
        .count();
    format!(
        "{}\n\n{errors} error(s), {} warning(s)\n",
        blocks.join("\n\n"),
        blocks.len() - errors
    )
}

#[test]
fn the_shipped_sai_profile_lints_clean() {
    let sai = Sai::new();
    let run = sai.lint("human");
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert_eq!(run.stdout, "no findings\n");
}

#[test]
fn culling_on_while_user_servers_persist() {
    let sai = Sai::new();
    sai.edit(
        "cluster.toml",
        "[helm.releases.jupyterhub.values.cull]\nenabled = false",
        "[helm.releases.jupyterhub.values.cull]\nenabled = true",
    );
    insta::assert_snapshot!(sai.expect("jupyterhub-culling-on"));
    // Not set at all: the chart's default (true) culls too.
    sai.edit(
        "cluster.toml",
        "[helm.releases.jupyterhub.values.cull]\nenabled = true\n",
        "",
    );
    sai.expect("jupyterhub-culling-on");
    sai.edit(
        "cluster.toml",
        "user_servers_persist = true",
        "user_servers_persist = false",
    );
    sai.expect_clean();
}

#[test]
fn github_login_on_an_airgapped_cluster() {
    let sai = Sai::new();
    sai.edit("cluster.toml", "airgapped = false", "airgapped = true");
    insta::assert_snapshot!(sai.expect("jupyterhub-github-airgapped"));
    sai.edit(
        "cluster.toml",
        "authenticator_class = \"github\"",
        "authenticator_class = \"ldapauthenticator.LDAPAuthenticator\"",
    );
    sai.expect_clean();
}

#[test]
fn an_oauthenticator_that_allows_nobody() {
    let sai = Sai::new();
    sai.edit(
        "cluster.toml",
        "allowed_organizations = [\"sai-cttc\"]\n",
        "",
    );
    insta::assert_snapshot!(sai.expect("jupyterhub-nobody-allowed"));
    // An allow setting under hub.config.Authenticator counts too.
    sai.append("\n[helm.releases.jupyterhub.values.hub.config.Authenticator]\nallowed_users = [\"alice\"]\n");
    sai.expect_clean();
}

#[test]
fn letsencrypt_without_port_80_from_the_internet() {
    let sai = Sai::new();
    sai.edit(
        "cluster.toml",
        "type = \"secret\"",
        "type = \"letsencrypt\"",
    );
    insta::assert_snapshot!(sai.expect("tls-letsencrypt-unreachable"));
    // HTTPS with hosts and no type: the chart's default is letsencrypt.
    sai.edit("cluster.toml", "type = \"letsencrypt\"\n", "");
    sai.expect("tls-letsencrypt-unreachable");
    sai.edit(
        "cluster.toml",
        "enabled = true\nhosts",
        "enabled = true\ntype = \"secret\"\nhosts",
    );
    sai.expect_clean();
}

#[test]
fn jupyterhub_ssh_hub_url_that_cannot_verify() {
    let sai = Sai::new();
    sai.edit(
        "cluster.toml",
        "hubUrl = \"https://jupyterhub.sai.cttc.es\"",
        "hubUrl = \"https://proxy-public\"",
    );
    insta::assert_snapshot!(sai.expect("jupyterhub-ssh-hub-url-unverifiable"));
    for url in [
        "https://10.1.24.220",
        "https://hub.sai.cttc.es",
        "http://proxy-public",
    ] {
        sai.edit(
            "cluster.toml",
            "hubUrl = \"",
            &format!("hubUrl = \"{url}\" #"),
        );
        sai.expect("jupyterhub-ssh-hub-url-unverifiable");
    }
    sai.edit(
        "cluster.toml",
        "hubUrl = \"",
        "hubUrl = \"https://jupyterhub.sai.cttc.es\" #",
    );
    sai.expect_clean();
}

#[test]
fn a_value_that_turns_certificate_verification_off() {
    let sai = Sai::new();
    sai.append("\n[helm.releases.jupyterhub.values.hub.extraEnv]\nPYTHONHTTPSVERIFY = \"0\"\n");
    insta::assert_snapshot!(sai.expect("tls-verification-off"));
    sai.edit(
        "cluster.toml",
        "PYTHONHTTPSVERIFY = \"0\"",
        "SSL_CERT_FILE = \"/etc/ssl/site/ca.pem\"",
    );
    sai.expect_clean();
}

#[test]
fn verification_off_in_other_spellings() {
    let sai = Sai::new();
    sai.append(
        "\n[helm.releases.kube-prom-stack.values.grafana.datasources.tls]\ninsecure_skip_verify = true\n",
    );
    sai.expect("tls-verification-off");
    sai.edit(
        "cluster.toml",
        "insecure_skip_verify = true",
        "ca_file = \"/etc/ssl/site/ca.pem\"",
    );
    sai.expect_clean();
    sai.append(
        "\n[[helm.releases.jupyterhub.values.singleuser.extraEnv]]\nname = \"CURL_CA_BUNDLE\"\nvalue = \"\"\n",
    );
    sai.expect("tls-verification-off");
}

#[test]
fn nginx_tcp_forwarding_on_a_traefik_channel() {
    let sai = Sai::new();
    sai.edit(
        "cluster.toml",
        "channel = \"1.34/stable\"",
        "channel = \"1.35/stable\"",
    );
    insta::assert_snapshot!(sai.expect("ingress-tcp-wrong-controller"));
    // The fix on 1.35: ssh gets its own address from MetalLB instead.
    sai.edit(
        "cluster.toml",
        "[microk8s.ingress_tcp]\n\"2222\" = \"sai/jupyterhub-ssh:22\"\n",
        "",
    );
    sai.edit(
        "cluster.toml",
        "type = \"ClusterIP\"",
        "type = \"LoadBalancer\"",
    );
    sai.expect_clean();
}

#[test]
fn traefik_tcp_entry_points_on_an_nginx_channel() {
    let sai = Sai::new();
    sai.append(
        "\n[helm.releases.traefik]\nchart = \"traefik\"\nrepository = \"https://traefik.github.io/charts\"\nversion = \"37.4.0\"\nnamespace = \"traefik\"\n\n[helm.releases.traefik.values.ports.ssh]\nport = 2222\nexpose = { default = true }\n",
    );
    sai.expect("ingress-tcp-wrong-controller");
}

#[test]
fn dashboard_bound_to_cluster_admin() {
    let sai = Sai::new();
    sai.edit(
        "manifests/dashboard-viewer.yaml",
        "  name: view",
        "  name: cluster-admin",
    );
    insta::assert_snapshot!(sai.expect("dashboard-cluster-admin"));
    sai.edit(
        "manifests/dashboard-viewer.yaml",
        "  name: cluster-admin",
        "  name: view",
    );
    sai.expect_clean();
    // The MicroK8s addon.
    sai.edit(
        "cluster.toml",
        "[microk8s.addons.helm3]",
        "[microk8s.addons.dashboard]\n\n[microk8s.addons.helm3]",
    );
    sai.expect("dashboard-cluster-admin");
}

#[test]
fn an_addon_that_downloads_on_an_airgapped_cluster() {
    let mut sai = Sai::new();
    sai.edit("cluster.toml", "airgapped = false", "airgapped = true");
    sai.edit(
        "cluster.toml",
        "authenticator_class = \"github\"",
        "authenticator_class = \"ldapauthenticator.LDAPAuthenticator\"",
    );
    sai.baseline = sai.findings().1;
    sai.edit(
        "cluster.toml",
        "[microk8s.addons.helm3]",
        "[microk8s.addons.observability]\n\n[microk8s.addons.helm3]",
    );
    insta::assert_snapshot!(sai.expect("airgap-addon-downloads"));
    // The kube-prom-stack release already installs the bundled chart: no addon needed.
    sai.edit("cluster.toml", "[microk8s.addons.observability]\n\n", "");
    sai.expect_clean();
}

#[test]
fn an_image_no_set_pins() {
    let sai = Sai::new();
    sai.edit(
        "cluster.toml",
        "pytorch-notebook:cuda12-2025-09-22",
        "pytorch-notebook:cuda12-2025-10-06",
    );
    insta::assert_snapshot!(sai.expect("image-not-pinned"));
    sai.edit(
        "cluster.toml",
        "pytorch-notebook:cuda12-2025-10-06",
        "pytorch-notebook:cuda12-2025-09-22",
    );
    sai.expect_clean();
    // In a manifest of the profile, normalized (`busybox` is docker.io/library/busybox:latest).
    fs_err::write(
        sai.kiln.path("profiles/sai/manifests/debug.yaml"),
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: debug\n  namespace: sai\nspec:\n  containers:\n    - name: debug\n      image: busybox\n",
    )
    .unwrap();
    sai.expect("image-not-pinned");
    fs_err::write(
        sai.kiln.path("profiles/sai/manifests/debug.yaml"),
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: debug\n  namespace: sai\nspec:\n  containers:\n    - name: debug\n      image: busybox:1.28.4\n",
    )
    .unwrap();
    sai.expect_clean();
}

/// A chart archive: `jupyterhub/{Chart.yaml,values.yaml,values.schema.json}` from the z2jh
/// fixtures (the schema converted from YAML to JSON, as the published chart ships it).
fn z2jh_chart() -> Vec<u8> {
    let fixtures = repo().join("tests/fixtures/z2jh");
    let values = fs_err::read(fixtures.join("values.yaml")).unwrap();
    let schema: Value =
        serde_yaml::from_slice(&fs_err::read(fixtures.join("values.schema.yaml")).unwrap())
            .unwrap();
    let schema = serde_json::to_vec_pretty(&schema).unwrap();
    let chart = b"apiVersion: v2\nname: jupyterhub\nversion: 4.3.2\nappVersion: 5.5.0\n".to_vec();
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::default(),
    ));
    for (name, bytes) in [
        ("jupyterhub/Chart.yaml", &chart),
        ("jupyterhub/values.yaml", &values),
        ("jupyterhub/values.schema.json", &schema),
    ] {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_cksum();
        builder
            .append_data(&mut header, name, bytes.as_slice())
            .unwrap();
    }
    builder.into_inner().unwrap().finish().unwrap()
}

/// Put the chart in the scratch store and pin it in a kiln.lock beside the cluster file.
fn store_and_lock(kiln: &Kiln, chart: &[u8]) {
    let hex = format!("{:x}", Sha256::digest(chart));
    let blob = kiln.path(&format!("store/blobs/sha256/{hex}"));
    fs_err::create_dir_all(blob.parent().unwrap()).unwrap();
    fs_err::write(&blob, chart).unwrap();
    let lock = format!(
        "version = 1\nsource_date_epoch = 1700000000\n\n[[chart]]\nname = \"jupyterhub\"\nversion = \"4.3.2\"\nrepository = \"https://hub.jupyter.org/helm-chart/\"\nurl = \"https://hub.jupyter.org/helm-chart/jupyterhub-4.3.2.tgz\"\ndigest = \"sha256:{hex}\"\nsize = {}\n",
        chart.len()
    );
    fs_err::write(kiln.path("profiles/sai/kiln.lock"), lock).unwrap();
}

#[test]
fn helm_values_the_charts_schema_rejects() {
    let sai = Sai::new();
    store_and_lock(&sai.kiln, &z2jh_chart());
    // The shipped values validate against the chart's schema.
    sai.expect_clean();
    sai.append("\n[helm.releases.jupyterhub.values.hubb]\nconfig = { JupyterHub = { admin_access = true } }\n");
    insta::assert_snapshot!(sai.expect("helm-values-schema"));
    // A value of the wrong type, deeper down.
    sai.edit(
        "cluster.toml",
        "[helm.releases.jupyterhub.values.hubb]\nconfig = { JupyterHub = { admin_access = true } }\n",
        "[helm.releases.jupyterhub.values.prePuller]\ncontinuous = { enabled = \"yes\" }\n",
    );
    sai.expect("helm-values-schema");
    sai.edit(
        "cluster.toml",
        "continuous = { enabled = \"yes\" }",
        "continuous = { enabled = false }",
    );
    sai.expect_clean();
}

#[test]
fn no_chart_in_the_store_no_schema_finding() {
    let sai = Sai::new();
    store_and_lock(&sai.kiln, &z2jh_chart());
    for entry in fs_err::read_dir(sai.kiln.path("store/blobs/sha256")).unwrap() {
        fs_err::remove_file(entry.unwrap().path()).unwrap();
    }
    sai.append("\n[helm.releases.jupyterhub.values.hubb]\nx = 1\n");
    sai.expect_clean();
}
