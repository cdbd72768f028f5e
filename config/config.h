#pragma once
// kiln's configuration: a nova.conf-style INI file read into typed sections. Every option is
// documented with its default in config/kiln.conf; this header is the one place defaults live.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"

namespace kiln::config {

struct DefaultSection {
  std::string state_path = "/var/lib/kiln";
  std::string host;  // empty: the machine's hostname
  std::string availability_zone = "nova";
  std::string flavors_file = "/etc/kiln/flavors.yaml";
  std::string log_level = "info";
  unsigned launch_workers = 4;
  // As nova: convert qcow2/vmdk/vdi/... bases to raw once, in the cache.
  bool force_raw_images = true;
  // true: vda is a qcow2 overlay over the shared base; false: a full copy per instance.
  bool use_cow_images = true;
  // Seconds a stop waits for the guest to shut down cleanly before powering it off.
  unsigned shutdown_timeout = 60;
  // The host address for storage (iSCSI) traffic, reported to the scheduler; empty: unset.
  std::string my_block_storage_ip;
  // What the reconcile does with what no instance owns: report, quarantine or delete, once it
  // has been an orphan for orphan_grace_period seconds (agent/sync/orphan_sweep.h).
  std::string orphan_action = "report";
  unsigned orphan_grace_period = 3600;
  // How long a background operation waits for the instance's current one before giving up.
  unsigned instance_job_timeout = 30;
  // Space on state_path's filesystem no download or disk creation may take (the database, the
  // logs, the console logs growing), as nova's reserved_host_disk_mb.
  std::uint64_t reserved_host_disk_mb = 1024;
  // As nova: every instance gets a config drive, whether its request asks for one or not.
  bool force_config_drive = false;
  // Seconds an interface detach waits for the guest to release the NIC.
  unsigned interface_detach_timeout = 30;

  // The OpenStack front (nova.conf's names and defaults). Empty transport_url: kiln runs
  // standalone, driven by its own API only. Set: kilnd is also this host's nova-compute.
  std::string transport_url;  // a secret: it holds the broker's password
  std::string control_exchange = "nova";
  std::string my_ip;                   // the host's address, reported as the node's host_ip
  unsigned report_interval = 10;       // seconds between service heartbeats
  unsigned rpc_response_timeout = 60;  // seconds a call to the conductor waits
  // Threads that run RPC requests (oslo.messaging's name; nova's default of 64 is for green
  // threads, kiln's handlers never wait on a build).
  unsigned executor_thread_pool_size = 16;
  // Placement inventories, as nova computes them: unset ratios take the initial_* values.
  std::optional<double> cpu_allocation_ratio;
  std::optional<double> ram_allocation_ratio;
  std::optional<double> disk_allocation_ratio;
  double initial_cpu_allocation_ratio = 16.0;
  double initial_ram_allocation_ratio = 1.5;
  double initial_disk_allocation_ratio = 1.0;
  unsigned reserved_host_cpus = 0;
  std::uint64_t reserved_host_memory_mb = 512;
};

// [oslo_messaging_rabbit], oslo.messaging 14's names and defaults. The queue options must be the
// control plane's: RabbitMQ refuses a queue declared with other flags.
struct OsloMessagingRabbitSection {
  bool amqp_durable_queues = false;
  bool amqp_auto_delete = false;
  bool rabbit_ha_queues = false;
  bool rabbit_quorum_queue = false;
  unsigned rabbit_quorum_delivery_limit = 0;
  unsigned rabbit_quorum_max_memory_length = 0;  // oslo: rabbit_quroum_max_memory_length
  unsigned rabbit_quorum_max_memory_bytes = 0;   // oslo: rabbit_quroum_max_memory_bytes
  unsigned rabbit_transient_queues_ttl = 1800;
  unsigned heartbeat_timeout_threshold = 60;
  unsigned heartbeat_rate = 2;  // accepted for nova.conf's sake; librabbitmq paces heartbeats
  unsigned rabbit_retry_interval = 1;
  unsigned rabbit_retry_backoff = 2;
  unsigned rabbit_interval_max = 30;
  std::string rabbit_login_method = "AMQPLAIN";  // AMQPLAIN and PLAIN both log in with PLAIN
  bool ssl = false;
  std::string ssl_ca_file;
  std::string ssl_cert_file;
  std::string ssl_key_file;
  bool ssl_enforce_hostname_verification = false;
};

// A keystoneauth section ([placement]): kiln's service user and where to find the service, as
// nova.conf writes them.
struct KeystoneAuthSection {
  std::string auth_type;  // "password" (the only plugin kiln has); empty: section unused
  std::string auth_url;
  std::string username;
  std::string password;
  std::string user_domain_name;
  std::string user_domain_id;
  std::string project_name;
  std::string project_domain_name;
  std::string project_domain_id;
  std::string region_name;
  std::vector<std::string> valid_interfaces{"internal", "public"};
  std::string endpoint_override;
  std::string cafile;
  unsigned timeout = 30;  // seconds per request
};

struct ApiSection {
  std::string listen_host = "127.0.0.1";  // empty ("listen =" with no value): no TCP listener
  std::uint16_t listen_port = 8790;
  std::string token_file = "/etc/kiln/api-tokens";
  std::uint64_t max_body_bytes = 1024 * 1024;
  std::uint64_t max_header_bytes = 16 * 1024;
  unsigned client_timeout = 30;  // seconds for a TLS handshake, a request, or writing a response
  // Seconds from a connection's accept to its first request's headers (TLS handshake included).
  unsigned header_timeout = 10;
  unsigned max_connections = 256;
  unsigned max_connections_per_peer = 128;
  // TLS on the TCP listener (PEM files); a ca_file requires client certificates from that CA.
  std::string cert_file;
  std::string key_file;
  std::string ca_file;
  bool allow_insecure_http = false;  // plain HTTP on an address that is not loopback
  std::string listen_unix_socket;    // empty: no unix socket listener
  unsigned unix_socket_mode = 0660;
  std::string unix_socket_group;  // empty: kilnd's group
  // The API policy (oslo.policy rules, YAML or JSON). Missing at this default path: the built-in
  // defaults; missing at any other path: a startup error.
  std::string policy_file = "/etc/kiln/policy.yaml";
  // The API worker pool: requests other than /healthz run on `workers` threads; past
  // max_queued_requests waiting, callers get 503 with Retry-After.
  unsigned workers = 8;
  unsigned max_queued_requests = 128;
};

// Keystone token validation; empty auth_url: callers are authenticated by [api] token_file.
struct KeystoneSection {
  std::string auth_url;
  std::string username;
  std::string password;
  std::string user_domain_name = "Default";
  std::string project_name;
  std::string project_domain_name = "Default";
  std::string service_token_file;  // instead of username/password
  std::string cafile;
  unsigned cache_seconds = 60;  // never past a token's expiry
  unsigned timeout = 10;        // seconds per request to Keystone
  // Tokens in [api] token_file (when it exists) are checked first, without Keystone.
  bool accept_token_file = false;
  // Where a token's admin and scheduler roles count: scoped to this project (empty: no
  // project), or system-scoped on system_scope (empty: no system scope).
  std::string admin_project_name;
  std::string admin_project_domain_name = "Default";
  std::string system_scope = "all";
};

struct LibvirtSection {
  std::string uri = "qemu:///system";
  std::string virt_type = "kvm";
  std::string hw_machine_type = "pc";
  std::string cpu_mode;  // empty: host-model under kvm, QEMU's default model under qemu
  // A group QEMU's processes are in (qemu.conf's user is in kvm on Debian): cached bases are
  // shared by every guest, read-only, so they are root-owned 0640 with this group.
  std::string qemu_group = "kvm";
  unsigned keepalive_interval = 5;
  unsigned keepalive_count = 3;
  unsigned wait_soft_reboot_seconds = 120;  // a SOFT reboot becomes HARD after this
  // UEFI firmware overrides (both or neither); empty: chosen from QEMU's firmware descriptors.
  std::string uefi_loader;
  std::string uefi_nvram_template;         // the variables template that goes with uefi_loader
  std::string iscsi_connector = "native";  // native (QEMU's initiator) or kernel (iscsiadm)
  std::string volume_device_dir = "/dev/disk/by-path";  // where the kernel initiator's LUNs appear
  std::string iscsi_node_dir = "/etc/iscsi/nodes";      // open-iscsi's node records (CHAP password)
  // How an instance's private files (vda's overlay or copy, vdb, the console log) are cleared
  // before they are removed: none, discard or zero (drivers/disk/disk_purge.h).
  std::string ephemeral_clear = "zero";
};

// dm-crypt's cipher notation (as nova's [ephemeral_storage_encryption] cipher) in QEMU's terms.
struct LuksCipher {
  std::string cipher_alg = "aes-256";  // aes-256, serpent-128, twofish-192, ...
  std::string cipher_mode = "xts";
  std::string ivgen_alg = "plain64";
  std::string ivgen_hash_alg;  // essiv only
};

struct EphemeralStorageEncryptionSection {
  bool enabled = false;
  std::string cipher = "aes-xts-plain64";
  unsigned key_size = 512;  // bits of key for the cipher; XTS splits it in two
  LuksCipher luks;          // cipher and key_size, checked together once the file is read
};

struct ImagesSection {
  std::string local_dir = "/var/lib/kiln/images";
};

struct GlanceSection {
  std::vector<std::string> api_servers;  // empty: the local image directory is the source
  unsigned num_retries = 3;
  unsigned connect_timeout = 10;   // seconds
  unsigned transfer_timeout = 60;  // seconds without progress before a transfer is abandoned
  std::string token;               // a Keystone token, sent as X-Auth-Token
  std::string token_file;          // or a file holding it (read at each request)
  std::string cafile;
  std::vector<std::string> allowed_direct_url_schemes;  // "file"
};

struct ImageFileUrlSection {
  // Directories under which a file:// image location may be read directly.
  std::vector<std::string> filesystems;
};

struct ImageCacheSection {
  int manager_interval = 2400;  // seconds; 0 = every 60 s; -1 = never
  bool remove_unused_base_images = true;
  std::uint64_t remove_unused_original_minimum_age_seconds = 86400;
  unsigned max_concurrent_downloads = 2;
  // The most an image whose record gives no size may bring (Glance's image_size_cap: 1 TiB).
  std::uint64_t max_image_size_gb = 1024;
};

struct KilnConfig {
  DefaultSection defaults;
  ApiSection api;
  LibvirtSection libvirt;
  ImagesSection images;
  GlanceSection glance;
  ImageFileUrlSection image_file_url;
  ImageCacheSection image_cache;
  EphemeralStorageEncryptionSection ephemeral_storage_encryption;
  KeystoneSection keystone;
  OsloMessagingRabbitSection oslo_messaging_rabbit;
  KeystoneAuthSection placement;
  // Unknown options are not fatal (an operator may share one file between versions), but each
  // one is reported so a typo does not go unnoticed.
  std::vector<std::string> warnings;
};

// Errors name the option: "Invalid value 'xen' for [libvirt] virt_type: must be 'kvm' or 'qemu'".
// A file of more than 1 MiB is refused rather than read.
// Reads and checks `path`: also refused when group or others may write it, or may read it while
// it holds a secret (secretOptionsIn).
Result<KilnConfig> loadConfigFile(const std::string& path);
// The options of `cfg` that hold a secret and are set ("[keystone] password", ...).
std::vector<std::string> secretOptionsIn(const KilnConfig& cfg);
// A file kilnd obeys (kiln.conf, the policy file): never writable by group or others; with
// `secrets` (what it holds, for the message), not accessible by them at all.
Result<void> checkFileMode(const std::string& path, const std::vector<std::string>& secrets,
                           std::string_view what);
Result<KilnConfig> parseConfig(std::string_view text, std::string_view source_name);

// "aes-xts-plain64" with 512 bits -> aes-256, xts, plain64. Errors name both options.
Result<LuksCipher> luksCipherFor(const std::string& cipher, unsigned key_size);

// Every option kilnd reads, as "section.name" (for docs checks and --help).
std::vector<std::string> knownOptions();

}  // namespace kiln::config
