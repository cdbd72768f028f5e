// kilnd: the composition root. The only file that names concrete classes; everything else gets
// its collaborators through constructors.

#include <grp.h>
#include <signal.h>
#include <sys/stat.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include <fmt/format.h>

#include <boost/program_options.hpp>
#include <chrono>
#include <iostream>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "agent/api/api_dispatcher.h"
#include "agent/api/api_router.h"
#include "agent/lifecycle/image_cache_service.h"
#include "agent/lifecycle/instance_manager.h"
#include "agent/maintenance.h"
#include "agent/openstack_front.h"
#include "agent/openstack_instances.h"
#include "agent/rpc/http_server.h"
#include "agent/rpc/keystone_authenticator.h"
#include "agent/rpc/local_first_authenticator.h"
#include "agent/rpc/policy.h"
#include "agent/rpc/token_auth.h"
#include "agent/state/instance_store.h"
#include "common/command_runner.h"
#include "common/disk_reserve.h"
#include "common/fs.h"
#include "common/log.h"
#include "common/process_hardening.h"
#include "common/secret_box.h"
#include "common/work_queue.h"
#include "config/config.h"
#include "config/flavors.h"
#include "drivers/disk/disk_builder.h"
#include "drivers/libvirt/libvirt_driver.h"
#include "drivers/network/linux_host_network.h"
#include "imagecache/curl_client.h"
#include "imagecache/glance_source.h"
#include "imagecache/image_cache.h"

namespace kiln {
namespace {

namespace po = boost::program_options;

constexpr const char* kVersion = "0.1.0";
constexpr auto kReconcileInterval = std::chrono::seconds(30);

log::Level levelFromName(const std::string& name) {
  if (name == "debug") return log::Level::kDebug;
  if (name == "warning") return log::Level::kWarning;
  if (name == "error") return log::Level::kError;
  return log::Level::kInfo;
}

std::string machineHostname() {
  char buf[256] = {};
  if (::gethostname(buf, sizeof buf - 1) != 0) return "localhost";
  return buf;
}

// Holds the current token set or policy; SIGHUP swaps in a freshly read file.
template <typename T>
class Holder {
 public:
  void set(std::shared_ptr<const T> value) {
    std::lock_guard lock(mutex_);
    value_ = std::move(value);
  }
  std::shared_ptr<const T> get() const {
    std::lock_guard lock(mutex_);
    return value_;
  }

 private:
  mutable std::mutex mutex_;
  std::shared_ptr<const T> value_;
};

// A missing file at the default path means "no local policy": the built-in defaults, as with
// oslo.policy. A missing file at a path the operator chose is a mistake worth stopping for.
Result<std::shared_ptr<const rpc::Policy>> loadPolicy(const std::string& path) {
  auto policy = rpc::Policy::loadFile(path);
  if (!policy) {
    if (policy.error().code == ErrorCode::kNotFound && path == rpc::kDefaultPolicyFile) {
      log::info("Policy file '{}' does not exist; the built-in default policy applies", path);
      return std::make_shared<const rpc::Policy>(rpc::Policy::defaults());
    }
    return policy.error();
  }
  return std::make_shared<const rpc::Policy>(std::move(policy).value());
}

Result<std::shared_ptr<const rpc::TokenAuthenticator>> loadTokens(const std::string& path) {
  auto auth = rpc::TokenAuthenticator::loadFile(path);
  if (!auth) return auth.error();
  return std::make_shared<const rpc::TokenAuthenticator>(std::move(auth).value());
}

// [keystone] accept_token_file: the token file's callers first, then Keystone. A missing file
// means no such callers (an operator may have none, or remove the file to revoke them all); any
// other fault with the file is an error, as without Keystone.
Result<std::shared_ptr<const rpc::Authenticator>> tokensBesideKeystone(
    const std::string& path, std::shared_ptr<const rpc::Authenticator> keystone) {
  auto tokens = rpc::TokenAuthenticator::loadFile(path);
  std::shared_ptr<const rpc::TokenAuthenticator> local;
  if (tokens) {
    local = std::make_shared<const rpc::TokenAuthenticator>(std::move(tokens).value());
  } else if (tokens.error().code != ErrorCode::kNotFound) {
    return tokens.error();
  }
  auto both = std::make_shared<const rpc::LocalFirstAuthenticator>(local, std::move(keystone));
  if (local) {
    log::info("The {} tokens of '{}' are accepted beside Keystone's ([keystone] accept_token_file)",
              local->size(), path);
  } else {
    log::info("Token file '{}' does not exist: Keystone alone validates tokens", path);
  }
  return std::shared_ptr<const rpc::Authenticator>(std::move(both));
}

int fail(const std::string& message) {
  log::error("{}", message);
  sd_notifyf(0, "STATUS=Failed: %s", message.c_str());
  return 1;
}

Result<unsigned> lookupGroupId(const std::string& name) {
  std::vector<char> buf(16384);
  group entry{};
  group* found = nullptr;
  int err = ::getgrnam_r(name.c_str(), &entry, buf.data(), buf.size(), &found);
  if (err != 0 || found == nullptr) {
    return Error::invalid(fmt::format(
        "[libvirt] qemu_group '{}' is not a group on this host (it must be one QEMU runs in)",
        name));
  }
  return static_cast<unsigned>(found->gr_gid);
}

rpc::KeystoneOptions keystoneOptionsFrom(const config::KilnConfig& cfg) {
  rpc::KeystoneOptions keystone;
  keystone.auth_url = cfg.keystone.auth_url;
  keystone.username = cfg.keystone.username;
  keystone.password = cfg.keystone.password;
  keystone.user_domain_name = cfg.keystone.user_domain_name;
  keystone.project_name = cfg.keystone.project_name;
  keystone.project_domain_name = cfg.keystone.project_domain_name;
  keystone.service_token_file = cfg.keystone.service_token_file;
  keystone.cafile = cfg.keystone.cafile;
  keystone.cache_seconds = std::chrono::seconds(cfg.keystone.cache_seconds);
  keystone.timeout = std::chrono::seconds(cfg.keystone.timeout);
  keystone.admin_project_name = cfg.keystone.admin_project_name;
  keystone.admin_project_domain_name = cfg.keystone.admin_project_domain_name;
  keystone.system_scope = cfg.keystone.system_scope;
  return keystone;
}

// Which tokens may be admins or schedulers, since that is what an operator checks first when an
// admin gets 403.
void logKeystoneScopes(const config::KilnConfig& cfg) {
  std::string admin_project =
      cfg.keystone.admin_project_name.empty()
          ? std::string("no project")
          : fmt::format("project '{}' in domain '{}'", cfg.keystone.admin_project_name,
                        cfg.keystone.admin_project_domain_name);
  if (cfg.keystone.admin_project_name.empty() && cfg.keystone.system_scope.empty()) {
    log::warn(
        "No Keystone token can use the admin or scheduler role: [keystone] admin_project_name "
        "and system_scope are both empty");
  } else {
    log::info("Keystone's admin and scheduler roles count on tokens scoped to {}{}", admin_project,
              cfg.keystone.system_scope.empty()
                  ? std::string()
                  : fmt::format(" or to the system '{}'", cfg.keystone.system_scope));
  }
}

imagecache::GlanceOptions glanceOptionsFrom(const config::KilnConfig& cfg) {
  imagecache::GlanceOptions glance;
  glance.api_servers = cfg.glance.api_servers;
  glance.num_retries = cfg.glance.num_retries;
  glance.connect_timeout = std::chrono::seconds(cfg.glance.connect_timeout);
  glance.stall_timeout = std::chrono::seconds(cfg.glance.transfer_timeout);
  glance.token = cfg.glance.token;
  glance.token_file = cfg.glance.token_file;
  glance.ca_file = cfg.glance.cafile;
  glance.allowed_direct_url_schemes = cfg.glance.allowed_direct_url_schemes;
  glance.direct_download_dirs = cfg.image_file_url.filesystems;
  return glance;
}

// SIGHUP: the token file and the policy file again; a file that does not load keeps the old one.
void reloadOnSighup(const config::KilnConfig& cfg,
                    const std::shared_ptr<const rpc::Authenticator>& keystone,
                    Holder<rpc::Authenticator>& authenticator, Holder<rpc::Policy>& policy) {
  if (!keystone) {
    auto fresh = loadTokens(cfg.api.token_file);
    if (fresh) {
      authenticator.set(*fresh);
      log::info("Reloaded the API token file ({} tokens)", (*fresh)->size());
    } else {
      log::error("Keeping the old tokens: {}", fresh.error().message);
    }
  } else if (cfg.keystone.accept_token_file) {
    auto fresh = tokensBesideKeystone(cfg.api.token_file, keystone);
    if (fresh) {
      authenticator.set(*fresh);
    } else {
      log::error("Keeping the old tokens beside Keystone: {}", fresh.error().message);
    }
  }
  auto fresh_policy = loadPolicy(cfg.api.policy_file);
  if (fresh_policy) {
    policy.set(*fresh_policy);
    log::info("Reloaded the API policy from '{}'", cfg.api.policy_file);
  } else {
    log::error("Keeping the old policy: {}", fresh_policy.error().message);
  }
}

// What this invocation of kilnd does: serve, or one of the operator's one-shot commands.
enum class Mode { kServe, kAdopt, kPurgeOrphans };

// Waits (bounded) for the first connection to libvirtd: the one-shot commands need its answers.
bool awaitLibvirt(const drivers::ComputeDriver& driver) {
  for (int i = 0; i < 300 && !driver.connected(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return driver.connected();
}

// [libvirt] as the driver's options.
drivers::libvirt::LibvirtDriverOptions driverOptionsFrom(const config::KilnConfig& cfg) {
  drivers::libvirt::LibvirtDriverOptions options;
  options.connection.uri = cfg.libvirt.uri;
  options.connection.keepalive_interval = static_cast<int>(cfg.libvirt.keepalive_interval);
  options.connection.keepalive_count = cfg.libvirt.keepalive_count;
  options.virt_type = cfg.libvirt.virt_type;
  options.machine_type = cfg.libvirt.hw_machine_type;
  options.cpu_mode = cfg.libvirt.cpu_mode;
  options.uefi_loader = cfg.libvirt.uefi_loader;
  options.uefi_nvram_template = cfg.libvirt.uefi_nvram_template;
  // Secrets name their owner, so the recovery sweep can tell this kilnd's from another's.
  options.secret_owner = cfg.defaults.state_path + "/instances";
  return options;
}

int run(const config::KilnConfig& cfg, Mode mode) {
  log::setMinLevel(levelFromName(cfg.defaults.log_level));
  for (const auto& w : cfg.warnings) log::warn("{}", w);
  // Every file kilnd makes is private unless it says otherwise (bases are made group-readable
  // for QEMU explicitly); its helpers (qemu-img) inherit the mask.
  ::umask(077);
  if (auto r = keepSecretsOutOfCoreDumps(); !r) return fail(r.error().message);

  // Signals are handled by sigwait in this thread only; block them before any thread starts.
  sigset_t signals;
  sigemptyset(&signals);
  for (int s : {SIGTERM, SIGINT, SIGHUP}) sigaddset(&signals, s);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  ::signal(SIGPIPE, SIG_IGN);

  auto flavors = config::loadFlavorFile(cfg.defaults.flavors_file);
  if (!flavors) return fail(flavors.error().message);
  Holder<rpc::Authenticator> authenticator;
  const bool use_keystone = !cfg.keystone.auth_url.empty();
  const bool tokens_beside_keystone = use_keystone && cfg.keystone.accept_token_file;
  std::shared_ptr<const rpc::Authenticator> keystone_authenticator;  // kept for SIGHUP reloads
  if (!use_keystone) {
    auto auth = loadTokens(cfg.api.token_file);
    if (!auth) return fail(auth.error().message);
    authenticator.set(*auth);
    if ((*auth)->size() == 0) {
      log::warn("Token file '{}' holds no token: every API call except /healthz gets 401",
                cfg.api.token_file);
    }
  }
  Holder<rpc::Policy> policy;
  auto initial_policy = loadPolicy(cfg.api.policy_file);
  if (!initial_policy) return fail(initial_policy.error().message);
  policy.set(*initial_policy);

  const std::string state_path = cfg.defaults.state_path;
  // QEMU runs as another user and must traverse state_path to reach the disks.
  if (auto r = fs::makeDirectories(state_path, 0711); !r) return fail(r.error().message);

  drivers::libvirt::LibvirtDriver driver(driverOptionsFrom(cfg));
  if (auto r = driver.start(); !r) {
    log::warn("{}; kilnd keeps trying to connect", r.error().message);
  }

  SystemClock clock;
  PosixCommandRunner runner;
  QemuImg qemu_img(runner);
  const auto ephemeral_clear = drivers::disk::clearMethodFromName(cfg.libvirt.ephemeral_clear)
                                   .value_or(drivers::disk::ClearMethod::kZero);
  if (mode != Mode::kServe) {
    if (!awaitLibvirt(driver)) return fail("libvirt did not answer at " + cfg.libvirt.uri);
    Result<void> done = mode == Mode::kAdopt
                            ? maintenance::adopt(state_path, driver, *flavors, qemu_img, clock)
                            : maintenance::purgeOrphans(state_path, driver, ephemeral_clear);
    driver.stop();
    if (!done) return fail(done.error().message);
    return 0;
  }
  // A lost database is not an empty host: see maintenance.h.
  auto store = maintenance::openStore(state_path, driver);
  if (!store) return fail(store.error().message);
  drivers::disk::DiskBuilder disks(qemu_img);
  // The image service: Glance when api_servers are configured, else the local directory.
  imagecache::CurlClient http;
  if (use_keystone) {
    auto created = rpc::KeystoneAuthenticator::create(keystoneOptionsFrom(cfg), http, clock);
    if (!created) return fail(created.error().message);
    keystone_authenticator = std::move(created).value();
    log::info("API tokens are validated by Keystone at {}", cfg.keystone.auth_url);
    logKeystoneScopes(cfg);
    if (tokens_beside_keystone) {
      auto both = tokensBesideKeystone(cfg.api.token_file, keystone_authenticator);
      if (!both) return fail(both.error().message);
      authenticator.set(*both);
    } else {
      authenticator.set(keystone_authenticator);
    }
  }
  std::unique_ptr<imagecache::ImageSource> image_source;
  std::unique_ptr<imagecache::ImageUploader> uploader;
  if (!cfg.glance.api_servers.empty()) {
    const imagecache::GlanceOptions glance = glanceOptionsFrom(cfg);
    auto source = imagecache::GlanceSource::create(glance, http);
    if (!source) return fail(source.error().message);
    image_source = std::move(source).value();
    auto up = imagecache::GlanceUploader::make(glance, http);
    if (!up) return fail(up.error().message);
    uploader = std::move(up).value();
  } else {
    image_source = std::make_unique<imagecache::LocalDirSource>(cfg.images.local_dir);
    uploader = std::make_unique<imagecache::LocalDirUploader>(cfg.images.local_dir);
  }
  imagecache::ImageCacheOptions cache_options;
  cache_options.base_dir = state_path + "/_base";
  cache_options.force_raw = cfg.defaults.force_raw_images;
  cache_options.max_concurrent_downloads = cfg.image_cache.max_concurrent_downloads;
  // One account of state_path's free space for the image cache and the disks
  // (common/disk_reserve.h).
  auto disk_reserve =
      std::make_shared<DiskReserve>(state_path, cfg.defaults.reserved_host_disk_mb << 20);
  cache_options.disk_reserve = disk_reserve;
  cache_options.max_unsized_image_bytes = cfg.image_cache.max_image_size_gb << 30;
  auto qemu_group = lookupGroupId(cfg.libvirt.qemu_group);
  if (!qemu_group) return fail(qemu_group.error().message);
  cache_options.reader_group = *qemu_group;
  imagecache::ImageCache cache(*image_source, qemu_img, cache_options, clock);
  if (auto r = cache.init(); !r) return fail(r.error().message);

  // CHAP passwords and disk keys are kept sealed with a host key beside the database, never in
  // clear.
  auto secrets = SecretBox::loadOrCreate(state_path + "/secret.key");
  if (!secrets) return fail(secrets.error().message);
  std::unique_ptr<drivers::volume::VolumeConnector> volumes;
  if (cfg.libvirt.iscsi_connector == "kernel") {
    drivers::volume::KernelIscsiOptions kernel;
    kernel.device_dir = cfg.libvirt.volume_device_dir;
    kernel.node_dir = cfg.libvirt.iscsi_node_dir;
    volumes = std::make_unique<drivers::volume::KernelIscsiConnector>(runner, kernel);
  } else {
    volumes = std::make_unique<drivers::volume::NativeIscsiConnector>(driver);
  }
  lifecycle::ManagerOptions manager_options{
      state_path + "/instances", state_path + "/snapshots", cfg.defaults.use_cow_images,
      std::chrono::seconds(cfg.defaults.shutdown_timeout),
      std::chrono::seconds(cfg.libvirt.wait_soft_reboot_seconds)};
  // Validated by the config reader: one of the three names.
  manager_options.ephemeral_clear = ephemeral_clear;
  const auto& encryption = cfg.ephemeral_storage_encryption;
  manager_options.encrypt_ephemeral = encryption.enabled;
  manager_options.ephemeral_luks = {encryption.luks.cipher_alg, encryption.luks.cipher_mode,
                                    encryption.luks.ivgen_alg, encryption.luks.ivgen_hash_alg};
  manager_options.ephemeral_key_bits = encryption.key_size;
  manager_options.reconcile_interval = kReconcileInterval;
  manager_options.quarantine_dir = state_path + "/quarantine";
  manager_options.orphan_action =
      sync::orphanActionFromName(cfg.defaults.orphan_action).value_or(sync::OrphanAction::kReport);
  manager_options.orphan_grace = std::chrono::seconds(cfg.defaults.orphan_grace_period);
  manager_options.job_timeout = std::chrono::seconds(cfg.defaults.instance_job_timeout);
  manager_options.disk_reserve = disk_reserve;
  manager_options.host_network = std::make_shared<drivers::network::LinuxHostNetwork>();
  manager_options.force_config_drive = cfg.defaults.force_config_drive;
  manager_options.interface_detach_timeout =
      std::chrono::seconds(cfg.defaults.interface_detach_timeout);
  manager_options.availability_zone = cfg.defaults.availability_zone;
  // Launches, deletes and actions run here; declared before the manager, which it outlives.
  WorkQueue lifecycle_jobs(cfg.defaults.launch_workers);
  lifecycle::InstanceManager manager(driver, cache, disks, *volumes, *secrets, *uploader, **store,
                                     clock, lifecycle_jobs, manager_options);
  if (auto r = manager.recover(); !r) return fail(r.error().message);
  driver.setEventSink([&manager](const drivers::DomainEvent& ev) { manager.onDomainEvent(ev); });
  // Runs on the driver's reconnect thread: only wakes the reconcile thread.
  driver.setReconnectHook([&manager] { manager.requestReconcile(); });
  manager.startReconciler();

  api::HostIdentity identity{cfg.defaults.host.empty() ? machineHostname() : cfg.defaults.host,
                             cfg.defaults.availability_zone, state_path,
                             cfg.defaults.my_block_storage_ip, cfg.libvirt.iscsi_connector};
  agent::HostProbe host_probe(driver, manager, cache,
                              agent::hostProbeOptions(cfg, identity.hostname));
  agent::OpenStackInstances openstack_instances(manager, *flavors);
  auto compute_front =
      agent::makeComputeFront(cfg, identity.hostname, host_probe, openstack_instances, http, clock);
  if (!compute_front) return fail(compute_front.error().message);
  lifecycle::CacheManagerOptions cache_manager;
  cache_manager.manager_interval = cfg.image_cache.manager_interval;
  cache_manager.remove_unused_base_images = cfg.image_cache.remove_unused_base_images;
  cache_manager.minimum_age =
      std::chrono::seconds(cfg.image_cache.remove_unused_original_minimum_age_seconds);
  lifecycle::ImageCacheService images(cache, manager, cache_manager);
  images.start();

  api::ApiRouter router(
      manager, images, driver, *flavors, [&authenticator] { return authenticator.get(); },
      [&policy] { return policy.get(); }, identity);
  rpc::ServerLimits limits;
  limits.max_body_bytes = cfg.api.max_body_bytes;
  limits.max_header_bytes = cfg.api.max_header_bytes;
  limits.read_timeout = std::chrono::seconds(cfg.api.client_timeout);
  limits.header_timeout = std::chrono::seconds(cfg.api.header_timeout);
  // Bounds the worst case of buffered request bodies (connections x body limit).
  limits.max_connections = cfg.api.max_connections;
  limits.max_connections_per_peer = cfg.api.max_connections_per_peer;
  rpc::ListenSettings listen;
  listen.host = cfg.api.listen_host;
  listen.port = cfg.api.listen_port;
  listen.tls = {cfg.api.cert_file, cfg.api.key_file, cfg.api.ca_file};
  listen.allow_insecure_http = cfg.api.allow_insecure_http;
  listen.unix_socket = {cfg.api.listen_unix_socket, cfg.api.unix_socket_mode,
                        cfg.api.unix_socket_group};
  // Every request but /healthz runs on the API's own workers, so one that waits on Keystone or
  // the image service (a snapshot's image record) holds up a worker, not the I/O threads and with
  // them every caller. Declared after the router and before the server: the server goes first,
  // then the pool (joining its workers), and only then the router they call.
  WorkQueue api_pool(cfg.api.workers, cfg.api.max_queued_requests);
  api::ApiDispatcher dispatcher(
      api_pool, [&router](const rpc::HttpRequest& req) { return router.handle(req); });
  rpc::HttpServer server(listen, limits, dispatcher.asyncHandler());
  // The I/O threads only parse, write and answer /healthz; two keep TLS handshakes from queueing
  // behind each other.
  if (auto r = server.start(2); !r) return fail(r.error().message);

  std::string where;
  if (!listen.host.empty()) {
    where =
        fmt::format("{}:{}{}", listen.host, server.port(), listen.tls.enabled() ? " (https)" : "");
  }
  if (!listen.unix_socket.path.empty()) {
    where += fmt::format("{}unix:{}", where.empty() ? "" : " and ", listen.unix_socket.path);
  }
  log::info("kilnd {} listening on {} (libvirt {}, virt_type {})", kVersion, where, cfg.libvirt.uri,
            cfg.libvirt.virt_type);
  sd_notifyf(0, "READY=1\nSTATUS=Listening on %s", where.c_str());

  // The OpenStack front last: kilnd answers its own API whatever RabbitMQ does.
  if (*compute_front) {
    if (auto r = (*compute_front)->start(); !r) return fail(r.error().message);
  }

  // One-second ticks: often enough for any systemd WatchdogSec of 2 s or more.
  std::uint64_t watchdog_usec = 0;
  bool watchdog = sd_watchdog_enabled(0, &watchdog_usec) > 0;
  const auto tick = std::chrono::seconds(1);
  for (;;) {
    timespec timeout{static_cast<time_t>(tick.count()), 0};
    int sig = sigtimedwait(&signals, nullptr, &timeout);
    if (watchdog) sd_notify(0, "WATCHDOG=1");
    if (sig == SIGTERM || sig == SIGINT) {
      log::info("Received signal {}; stopping (instances keep running)", sig);
      break;
    }
    if (sig == SIGHUP) reloadOnSighup(cfg, keystone_authenticator, authenticator, policy);
  }
  sd_notify(0, "STOPPING=1");
  if (*compute_front) (*compute_front)->stop();
  // No new requests, and answers still to come go nowhere (HttpServer::stop).
  server.stop();
  // Requests still queued are answered without running; the pool then waits only for those
  // already running (one waiting on Keystone: at most [keystone] timeout).
  dispatcher.stop();
  api_pool.shutdown();
  images.stop();
  manager.shutdown();
  lifecycle_jobs.shutdown();  // the jobs already queued still run
  driver.stop();
  return 0;
}

}  // namespace
}  // namespace kiln

int main(int argc, char** argv) {
  namespace po = boost::program_options;
  po::options_description cli("kilnd options");
  std::string config_path;
  cli.add_options()("help,h", "show this help")("version", "print the version")(
      "config", po::value<std::string>(&config_path)->default_value("/etc/kiln/kiln.conf"),
      "configuration file (nova.conf style)")("check-config",
                                              "validate the configuration and exit")(
      "adopt", "rebuild the records of this host's kiln domains that have none, then exit")(
      "purge-orphans", "remove the domains, directories and secrets no record owns, then exit")(
      "backup", po::value<std::string>(),
      "write a consistent copy of the instance database to this new file, then exit");
  po::variables_map vm;
  try {
    po::store(po::parse_command_line(argc, argv, cli), vm);
    po::notify(vm);
  } catch (const po::error& e) {
    std::cerr << "kilnd: " << e.what() << "\n" << cli;
    return 2;
  }
  if (vm.count("help")) {
    std::cout << cli;
    return 0;
  }
  if (vm.count("version")) {
    std::cout << "kilnd " << kiln::kVersion << "\n";
    return 0;
  }
  auto cfg = kiln::config::loadConfigFile(config_path);
  if (!cfg) {
    kiln::log::error("{}", cfg.error().message);
    return 1;
  }
  if (vm.count("check-config")) {
    for (const auto& w : cfg->warnings) kiln::log::warn("{}", w);
    std::cout << "Configuration '" << config_path << "' is valid\n";
    return 0;
  }
  if (vm.count("backup")) {
    const std::string dest = vm["backup"].as<std::string>();
    auto done = kiln::state::InstanceStore::backup(cfg->defaults.state_path + "/kiln.db", dest);
    if (!done) {
      kiln::log::error("{}", done.error().message);
      return 1;
    }
    std::cout << "Backed up the instance database to '" << dest << "'\n";
    return 0;
  }
  if (vm.count("adopt") && vm.count("purge-orphans")) {
    std::cerr << "kilnd: --adopt and --purge-orphans are two different answers; choose one\n";
    return 2;
  }
  using kiln::Mode;
  return kiln::run(*cfg, vm.count("adopt")           ? Mode::kAdopt
                         : vm.count("purge-orphans") ? Mode::kPurgeOrphans
                                                     : Mode::kServe);
}
