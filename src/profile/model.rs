//! The typed profile: what a cluster file, a role and a node may say.
//!
//! These structs are the schema. `deny_unknown_fields` everywhere makes a misspelt key an
//! error (with its position and the nearest valid key, see `de`). Defaults live here, as
//! serde defaults, so `kiln eval` shows them and `--explain` can say "kiln's default".

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use indexmap::IndexMap;
use serde::{de, Deserialize, Serialize};

use crate::profile::de::INLINE_SECRET;

/// `cluster.toml` without `[defaults]` and `[nodes.*]`, which are merged per node.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSettings {
    /// Identity and site-wide choices.
    pub cluster: Cluster,
    /// The node network.
    pub network: Network,
    /// The administrator account cloud-init creates on every node.
    #[serde(default)]
    pub admin: Admin,
    /// MicroK8s; absent for a cluster without Kubernetes (such as the demo).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub microk8s: Option<MicroK8s>,
    /// The NFS export that holds user data; served by the node with `nfs_server = true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nfs: Option<Nfs>,
    /// Registry mirrors, written for MicroK8s' and standalone containerd.
    #[serde(default)]
    pub registries: Registries,
    /// Helm releases, installed in order on the first control plane.
    #[serde(default)]
    pub helm: Helm,
    /// Kubernetes objects kiln creates on the first control plane.
    #[serde(default)]
    pub kubernetes: KubernetesObjects,
    /// The node disk images.
    #[serde(default)]
    pub image: ImageSettings,
}

/// `[image]`: how node disk images are sized.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ImageSettings {
    /// Free space in the root file system beyond its content (`"512MiB"`, `"2GiB"`, or
    /// bytes). The root grows to fill the disk at the first boot anyway; this is what a
    /// node has before that, and what a VM booted from the image has.
    #[serde(default = "default_headroom")]
    pub headroom: ByteSize,
}

impl Default for ImageSettings {
    fn default() -> Self {
        ImageSettings {
            headroom: default_headroom(),
        }
    }
}

fn default_headroom() -> ByteSize {
    ByteSize(512 << 20)
}

/// A size in bytes, written as a whole number of bytes or with a binary unit
/// (`KiB`, `MiB`, `GiB`, `TiB`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl std::str::FromStr for ByteSize {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        let split = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let number: u64 = number
            .parse()
            .map_err(|_| format!("`{text}` is not a size: write a whole number with a unit such as `512MiB` or `2GiB`"))?;
        let shift = match unit.trim() {
            "" | "B" => 0,
            "KiB" => 10,
            "MiB" => 20,
            "GiB" => 30,
            "TiB" => 40,
            other => {
                return Err(format!(
                    "unknown size unit `{other}`: use B, KiB, MiB, GiB or TiB (binary units)"
                ))
            }
        };
        number
            .checked_mul(1u64 << shift)
            .map(ByteSize)
            .ok_or_else(|| format!("`{text}` is too large"))
    }
}

impl Serialize for ByteSize {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(self.0)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = ByteSize;
            fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
                formatter.write_str("a size such as \"512MiB\" or a number of bytes")
            }
            fn visit_i64<E: serde::de::Error>(self, value: i64) -> Result<ByteSize, E> {
                u64::try_from(value)
                    .map(ByteSize)
                    .map_err(|_| E::custom("a size cannot be negative"))
            }
            fn visit_u64<E: serde::de::Error>(self, value: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(value))
            }
            fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<ByteSize, E> {
                value.parse().map_err(E::custom)
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// `[cluster]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Cluster {
    /// Cluster name: a DNS label; names `out/<name>/`.
    pub name: String,
    /// DNS domain of the nodes (`<hostname>.<domain>`).
    pub domain: String,
    /// Base operating system of the node images.
    pub os: OperatingSystem,
    /// IANA time zone of the nodes.
    #[serde(default = "default_timezone")]
    pub timezone: String,
    /// True when the nodes have no route to the internet (the default: kiln's reason to be).
    #[serde(default = "default_true")]
    pub airgapped: bool,
    /// Pin sets (`images/NAME.toml`) the cluster uses.
    #[serde(default)]
    pub images: Vec<String>,
    /// Users' notebook servers run until their owners stop them (lint: culling must be off).
    #[serde(default)]
    pub user_servers_persist: bool,
    /// The bundle carries the base OS's .debs too, so an air-gapped site can rebuild the
    /// node images (`kiln build bundle --include-debs` does the same once).
    #[serde(default)]
    pub bundle_debs: bool,
}

fn default_timezone() -> String {
    "Etc/UTC".to_string()
}

fn default_true() -> bool {
    true
}

/// Base operating systems kiln can build nodes from.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
pub enum OperatingSystem {
    /// Debian 12.
    #[serde(rename = "debian-12")]
    Debian12,
    /// Ubuntu 22.04 LTS.
    #[serde(rename = "ubuntu-22.04")]
    Ubuntu2204,
    /// Ubuntu 24.04 LTS.
    #[serde(rename = "ubuntu-24.04")]
    Ubuntu2404,
}

impl OperatingSystem {
    /// The release's code name (the archive suite).
    pub fn suite(self) -> &'static str {
        match self {
            OperatingSystem::Debian12 => "bookworm",
            OperatingSystem::Ubuntu2204 => "jammy",
            OperatingSystem::Ubuntu2404 => "noble",
        }
    }
}

/// `[network]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Network {
    /// The node subnet, e.g. `10.1.24.0/24`; every node address must lie in it.
    pub subnet: Cidr,
    /// Default gateway; omit on a network with no route out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<Ipv4Addr>,
    /// DNS servers and search domains every node gets.
    pub dns: Dns,
    /// NTP servers; empty means the OS default.
    #[serde(default)]
    pub ntp: Vec<String>,
    /// MTU of the node interface; omit for the link default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u16>,
    /// Port 80 of the cluster is reachable from the internet (what Let's Encrypt's HTTP
    /// challenge needs).
    #[serde(default)]
    pub internet_http: bool,
}

/// DNS resolvers and search domains.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Dns {
    /// Resolver addresses, in order.
    pub servers: Vec<Ipv4Addr>,
    /// Search domains, in order.
    #[serde(default)]
    pub search: Vec<String>,
}

/// `[admin]`: the account for people.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    /// User name.
    #[serde(default = "default_admin")]
    pub user: String,
    /// Public SSH keys allowed to log in (public keys are not secrets).
    #[serde(default)]
    pub ssh_authorized_keys: Vec<String>,
}

impl Default for Admin {
    fn default() -> Self {
        Admin {
            user: default_admin(),
            ssh_authorized_keys: Vec::new(),
        }
    }
}

fn default_admin() -> String {
    "kiln".to_string()
}

/// `[microk8s]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MicroK8s {
    /// Snap channel, e.g. `1.34/stable`.
    pub channel: String,
    /// The persistent cluster token (at least 32 characters) nodes join with.
    pub token: SecretRef,
    /// Extra names and addresses for the API server certificate.
    #[serde(default)]
    pub extra_sans: Vec<String>,
    /// Addons enabled on the first control plane, in order.
    #[serde(default)]
    pub addons: IndexMap<String, Addon>,
    /// Extra kubelet flags for every node (flag → value).
    #[serde(default)]
    pub kubelet_args: IndexMap<String, String>,
    /// Extra kube-apiserver flags for control planes (flag → value).
    #[serde(default)]
    pub apiserver_args: IndexMap<String, String>,
    /// TCP ports the ingress forwards to services: port → `namespace/service:port`.
    #[serde(default)]
    pub ingress_tcp: IndexMap<String, String>,
}

impl MicroK8s {
    /// `(major, minor)` of the channel's track, if it has a numeric one.
    pub fn track(&self) -> Option<(u32, u32)> {
        let track = self.channel.split('/').next()?;
        let (major, minor) = track.split_once('.')?;
        Some((major.parse().ok()?, minor.parse().ok()?))
    }

    /// The launch configuration version this channel accepts: 0.2.0 from 1.28 on.
    pub fn launch_config_version(&self) -> &'static str {
        match self.track() {
            Some(track) if track < (1, 28) => "0.1.0",
            _ => "0.2.0",
        }
    }
}

/// One MicroK8s addon.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Addon {
    /// False writes `disable: true` (e.g. to turn off an addon the snap enables).
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Arguments for `microk8s enable NAME ARGS…`.
    #[serde(default)]
    pub args: Vec<String>,
}

/// `[nfs]`: the export for persistent user data.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Nfs {
    /// Directory exported by the NFS server node.
    pub export: String,
    /// Clients allowed (host, address or CIDR); default: the node subnet.
    #[serde(default)]
    pub clients: Vec<String>,
    /// Export options (exports(5)).
    #[serde(default = "default_nfs_options")]
    pub options: Vec<String>,
    /// Where NFS client nodes mount the export; omit when only Kubernetes mounts it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mount_point: Option<String>,
    /// Mount options for clients.
    #[serde(default = "default_nfs_mount_options")]
    pub mount_options: Vec<String>,
}

fn default_nfs_options() -> Vec<String> {
    ["rw", "sync", "no_subtree_check", "no_root_squash"]
        .map(String::from)
        .to_vec()
}

fn default_nfs_mount_options() -> Vec<String> {
    vec!["nfsvers=4.1".to_string()]
}

/// `[registries]`.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Registries {
    /// Registry host (as in image references, e.g. `docker.io`) → mirror the nodes pull
    /// through.
    #[serde(default)]
    pub mirrors: IndexMap<String, Mirror>,
    /// Registry host (or an archive suite, or `debian`/`ubuntu`) → URL that `kiln lock` and
    /// `kiln fetch` download from instead (an air-gapped site's local registry or archive).
    /// Digests are unchanged; `--mirror` on the command line wins.
    #[serde(default)]
    pub sources: IndexMap<String, String>,
}

/// A registry mirror.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Mirror {
    /// Mirror URLs, tried in order.
    pub endpoints: Vec<String>,
    /// CA certificate path on the node for the mirror's TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<String>,
}

/// `[helm]`.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Helm {
    /// Releases by name, installed in this order.
    #[serde(default)]
    pub releases: IndexMap<String, Release>,
}

/// A Helm release.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Release {
    /// Chart name (the pin that provides it is found by this name).
    pub chart: String,
    /// Chart repository: an `https://` index URL or an `oci://` reference.
    pub repository: String,
    /// Chart version.
    pub version: String,
    /// Namespace the release is installed into (created when missing).
    pub namespace: String,
    /// Values, merged over kiln's defaults for this chart.
    #[serde(default)]
    pub values: serde_json::Map<String, serde_json::Value>,
}

/// `[kubernetes]`.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesObjects {
    /// Secrets created before the Helm releases, by name.
    #[serde(default)]
    pub secrets: IndexMap<String, KubernetesSecret>,
}

/// A Kubernetes Secret whose data comes from kiln's secrets.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesSecret {
    /// Namespace.
    pub namespace: String,
    /// Secret type, e.g. `kubernetes.io/tls`.
    #[serde(default = "default_secret_type", rename = "type")]
    pub kind: String,
    /// Data keys → secret references.
    pub data: IndexMap<String, SecretRef>,
}

fn default_secret_type() -> String {
    "Opaque".to_string()
}

/// Node settings: what `[defaults]`, role files and `[nodes.NAME]` may say.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSettings {
    /// Role layers applied (in order) between `[defaults]` and the node's own table.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Host name; default: the node's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// MAC address of the cluster interface (selects the node at PXE and first boot).
    pub mac: MacAddress,
    /// IPv4 address of the node in `network.subnet`.
    pub ip: Ipv4Addr,
    /// Name given to the cluster interface.
    #[serde(default = "default_interface")]
    pub interface: String,
    /// The disk the installer writes to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub install_disk: Option<InstallDisk>,
    /// Place in the Kubernetes cluster; absent: not a Kubernetes node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<KubernetesRole>,
    /// NVIDIA GPU settings; absent: a CPU node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<Gpu>,
    /// Serves the cluster's NFS export.
    #[serde(default)]
    pub nfs_server: bool,
    /// Answers DNS for the cluster's domain with dnsmasq: every node's name and address,
    /// and nothing else when the cluster is air-gapped (no upstream server).
    #[serde(default)]
    pub dns_server: bool,
    /// Mounts the cluster's NFS export (checked at first boot).
    #[serde(default)]
    pub nfs_client: bool,
    /// Runs a standalone containerd (not MicroK8s') with the node's images preloaded.
    #[serde(default)]
    pub containerd: bool,
    /// Extra OS packages.
    #[serde(default)]
    pub packages: Vec<String>,
    /// DNS for this node only; default: `network.dns`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<Dns>,
    /// Kubernetes node labels.
    #[serde(default)]
    pub labels: IndexMap<String, String>,
    /// Extra kernel command line arguments.
    #[serde(default)]
    pub kernel_cmdline: Vec<String>,
}

fn default_interface() -> String {
    "lan0".to_string()
}

/// A node's place in Kubernetes.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum KubernetesRole {
    /// Runs the control plane (and workloads).
    ControlPlane,
    /// Runs workloads only.
    Worker,
}

/// `gpu` on a node.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Gpu {
    /// The NVIDIA driver branch, e.g. `580-server`.
    pub driver: String,
    /// Kernel module flavour.
    #[serde(default)]
    pub module: GpuModule,
    /// Allow first boot to finish without a GPU present (e.g. in a test VM).
    #[serde(default)]
    pub optional: bool,
}

/// Which NVIDIA kernel modules to use.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum GpuModule {
    /// The open kernel modules (NVIDIA's default from Turing on).
    #[default]
    Open,
    /// The proprietary modules (needed before Turing).
    Proprietary,
}

/// Which disk the installer writes the image to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InstallDisk {
    /// `/dev/disk/by-id/...`.
    ById(String),
    /// `serial:XYZ`: the disk whose serial number matches.
    Serial(String),
    /// `largest`: the largest non-removable disk.
    Largest,
}

impl FromStr for InstallDisk {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if let Some(rest) = text.strip_prefix("/dev/disk/by-id/") {
            if !rest.is_empty() && !rest.contains('/') {
                return Ok(InstallDisk::ById(text.to_string()));
            }
        } else if let Some(serial) = text.strip_prefix("serial:") {
            if !serial.is_empty() {
                return Ok(InstallDisk::Serial(serial.to_string()));
            }
        } else if text == "largest" {
            return Ok(InstallDisk::Largest);
        }
        Err(format!(
            "invalid install disk `{text}`: expected `/dev/disk/by-id/NAME`, `serial:SERIAL` or `largest`"
        ))
    }
}

impl fmt::Display for InstallDisk {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InstallDisk::ById(path) => formatter.write_str(path),
            InstallDisk::Serial(serial) => write!(formatter, "serial:{serial}"),
            InstallDisk::Largest => formatter.write_str("largest"),
        }
    }
}

/// An IPv4 network in CIDR notation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    /// Network address.
    pub address: Ipv4Addr,
    /// Prefix length (0–32).
    pub prefix: u8,
}

impl Cidr {
    fn mask(self) -> u32 {
        if self.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(self.prefix))
        }
    }

    /// True when `address` lies in this network.
    pub fn contains(self, address: Ipv4Addr) -> bool {
        u32::from(address) & self.mask() == u32::from(self.address) & self.mask()
    }

    /// The network's first address.
    pub fn network(self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.address) & self.mask())
    }

    /// The broadcast address.
    pub fn broadcast(self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.address) | !self.mask())
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid =
            || format!("invalid network `{text}`: expected CIDR notation such as `10.1.24.0/24`");
        let (address, prefix) = text.split_once('/').ok_or_else(invalid)?;
        let address: Ipv4Addr = address.parse().map_err(|_| invalid())?;
        let prefix: u8 = prefix.parse().map_err(|_| invalid())?;
        if prefix > 32 {
            return Err(invalid());
        }
        Ok(Cidr { address, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}/{}", self.address, self.prefix)
    }
}

/// A MAC address, stored in lower case with colons.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct MacAddress(String);

impl MacAddress {
    /// `aa:bb:cc:dd:ee:ff`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for MacAddress {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = text.split([':', '-']).collect();
        let valid = parts.len() == 6
            && parts
                .iter()
                .all(|part| part.len() == 2 && part.chars().all(|c| c.is_ascii_hexdigit()));
        if valid {
            Ok(MacAddress(parts.join(":").to_ascii_lowercase()))
        } else {
            Err(format!(
                "invalid MAC address `{text}`: expected six hex pairs such as `52:54:00:12:34:56`"
            ))
        }
    }
}

impl fmt::Display for MacAddress {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.0)
    }
}

/// Types read from a string with `FromStr` and written back with `Display`.
macro_rules! string_serde {
    ($type:ty, $expecting:literal) => {
        impl<'de> Deserialize<'de> for $type {
            fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct StringVisitor;
                impl de::Visitor<'_> for StringVisitor {
                    type Value = $type;
                    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                        formatter.write_str($expecting)
                    }
                    fn visit_str<E: de::Error>(self, text: &str) -> Result<$type, E> {
                        text.parse().map_err(E::custom)
                    }
                }
                deserializer.deserialize_str(StringVisitor)
            }
        }

        impl Serialize for $type {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }
    };
}

string_serde!(Cidr, "a network in CIDR notation, such as \"10.1.24.0/24\"");
string_serde!(MacAddress, "a MAC address string");
string_serde!(
    InstallDisk,
    "a disk: \"/dev/disk/by-id/NAME\", \"serial:SERIAL\" or \"largest\""
);

/// A reference to a secret by name: `{ secret = "NAME" }`. The value is supplied at build time.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SecretRef {
    /// The secret's name.
    pub name: String,
}

impl Serialize for SecretRef {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(1))?;
        map.serialize_entry("secret", &self.name)?;
        map.end()
    }
}

impl<'de> Deserialize<'de> for SecretRef {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SecretVisitor;
        impl<'de> de::Visitor<'de> for SecretVisitor {
            type Value = SecretRef;
            fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str("a secret reference such as { secret = \"NAME\" }")
            }
            // A plain string here is the secret itself: refuse it without repeating it.
            fn visit_str<E: de::Error>(self, _text: &str) -> Result<SecretRef, E> {
                Err(E::custom(INLINE_SECRET))
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<SecretRef, A::Error> {
                let mut name = None;
                while let Some(key) = map.next_key::<String>()? {
                    if key != "secret" {
                        return Err(de::Error::unknown_field(&key, &["secret"]));
                    }
                    name = Some(map.next_value::<String>()?);
                }
                let name = name.ok_or_else(|| de::Error::missing_field("secret"))?;
                if !is_secret_name(&name) {
                    return Err(de::Error::custom(format!(
                        "invalid secret name `{name}`: use letters, digits, `-` and `_`"
                    )));
                }
                Ok(SecretRef { name })
            }
        }
        deserializer.deserialize_any(SecretVisitor)
    }
}

/// Secret names map to environment variables, so they are kept to a safe alphabet.
pub fn is_secret_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_contains() {
        let subnet: Cidr = "10.1.24.0/24".parse().unwrap();
        assert!(subnet.contains("10.1.24.201".parse().unwrap()));
        assert!(!subnet.contains("10.1.25.1".parse().unwrap()));
        assert_eq!(subnet.broadcast().to_string(), "10.1.24.255");
        assert!("10.1.24.0/33".parse::<Cidr>().is_err());
    }

    #[test]
    fn mac_is_normalized() {
        let mac: MacAddress = "52-54-00-AB-CD-EF".parse().unwrap();
        assert_eq!(mac.as_str(), "52:54:00:ab:cd:ef");
        assert!("52:54:00:ab:cd".parse::<MacAddress>().is_err());
    }

    #[test]
    fn launch_config_version_follows_channel() {
        let mut microk8s = MicroK8s {
            channel: "1.27/stable".into(),
            token: SecretRef { name: "t".into() },
            extra_sans: vec![],
            addons: IndexMap::new(),
            kubelet_args: IndexMap::new(),
            apiserver_args: IndexMap::new(),
            ingress_tcp: IndexMap::new(),
        };
        assert_eq!(microk8s.launch_config_version(), "0.1.0");
        microk8s.channel = "1.34/stable".into();
        assert_eq!(microk8s.launch_config_version(), "0.2.0");
    }
}
