#include "agent/openstack_front.h"

#include "common/log.h"
#include "drivers/libvirt/firmware.h"
#include "openstack/messaging/transport_url.h"

namespace kiln::agent {
namespace {

// [DEFAULT] transport_url and [oslo_messaging_rabbit] as the transport's options.
Result<openstack::compute::ComputeFrontOptions> computeFrontOptions(const config::KilnConfig& cfg,
                                                                    const std::string& host) {
  auto url = openstack::messaging::parseTransportUrl(cfg.defaults.transport_url);
  if (!url) return Error::invalid("[DEFAULT] " + url.error().message);
  openstack::compute::ComputeFrontOptions front;
  auto& rabbit = front.rabbit;
  const auto& section = cfg.oslo_messaging_rabbit;
  rabbit.url = std::move(url).value();
  rabbit.control_exchange = cfg.defaults.control_exchange;
  rabbit.amqp_durable_queues = section.amqp_durable_queues;
  rabbit.amqp_auto_delete = section.amqp_auto_delete;
  rabbit.rabbit_ha_queues = section.rabbit_ha_queues;
  rabbit.rabbit_quorum_queue = section.rabbit_quorum_queue;
  rabbit.rabbit_quorum_delivery_limit = static_cast<int>(section.rabbit_quorum_delivery_limit);
  rabbit.rabbit_quorum_max_memory_length =
      static_cast<int>(section.rabbit_quorum_max_memory_length);
  rabbit.rabbit_quorum_max_memory_bytes = static_cast<int>(section.rabbit_quorum_max_memory_bytes);
  rabbit.rabbit_transient_queues_ttl = static_cast<int>(section.rabbit_transient_queues_ttl);
  rabbit.heartbeat_timeout_threshold = static_cast<int>(section.heartbeat_timeout_threshold);
  rabbit.rabbit_retry_interval = std::chrono::seconds(section.rabbit_retry_interval);
  rabbit.rabbit_retry_backoff = std::chrono::seconds(section.rabbit_retry_backoff);
  rabbit.rabbit_interval_max = std::chrono::seconds(section.rabbit_interval_max);
  rabbit.ssl = section.ssl;
  rabbit.ssl_ca_file = section.ssl_ca_file;
  rabbit.ssl_cert_file = section.ssl_cert_file;
  rabbit.ssl_key_file = section.ssl_key_file;
  rabbit.ssl_enforce_hostname_verification = section.ssl_enforce_hostname_verification;
  rabbit.connection_name = "kilnd:" + host;
  if (auto valid = openstack::messaging::validateRabbitOptions(rabbit); !valid)
    return valid.error();
  front.host = host;
  front.report_interval = std::chrono::seconds(cfg.defaults.report_interval);
  front.rpc_response_timeout = std::chrono::seconds(cfg.defaults.rpc_response_timeout);
  front.rpc_workers = cfg.defaults.executor_thread_pool_size;
  auto uuid = openstack::compute::nodeUuid(cfg.defaults.state_path);
  if (!uuid) return uuid.error();
  front.node_uuid = std::move(uuid).value();
  auto& inventory = front.inventory;
  inventory.cpu_allocation_ratio = cfg.defaults.cpu_allocation_ratio;
  inventory.ram_allocation_ratio = cfg.defaults.ram_allocation_ratio;
  inventory.disk_allocation_ratio = cfg.defaults.disk_allocation_ratio;
  inventory.initial_cpu_allocation_ratio = cfg.defaults.initial_cpu_allocation_ratio;
  inventory.initial_ram_allocation_ratio = cfg.defaults.initial_ram_allocation_ratio;
  inventory.initial_disk_allocation_ratio = cfg.defaults.initial_disk_allocation_ratio;
  inventory.reserved_host_cpus = cfg.defaults.reserved_host_cpus;
  inventory.reserved_host_memory_mb = cfg.defaults.reserved_host_memory_mb;
  inventory.reserved_host_disk_mb = cfg.defaults.reserved_host_disk_mb;
  front.placement = placementAuthOptions(cfg);
  return front;
}

}  // namespace

Result<std::unique_ptr<openstack::compute::ComputeFront>> makeComputeFront(
    const config::KilnConfig& cfg, const std::string& host, HostProbe& probe,
    openstack::compute::InstanceHost& instances, imagecache::HttpClient& http, const Clock& clock) {
  if (cfg.defaults.transport_url.empty()) {
    return std::unique_ptr<openstack::compute::ComputeFront>();
  }
  auto options = computeFrontOptions(cfg, host);
  if (!options) return options.error();
  options->measure_host = [&probe] { return probe.measure(); };
  options->instances = &instances;
  log::info("OpenStack: transport_url {}",
            openstack::messaging::redactTransportUrl(cfg.defaults.transport_url));
  return std::make_unique<openstack::compute::ComputeFront>(std::move(options).value(), http,
                                                            clock);
}

HostProbeOptions hostProbeOptions(const config::KilnConfig& cfg, const std::string& host) {
  HostProbeOptions options;
  options.hypervisor_hostname = host;
  options.my_ip = cfg.defaults.my_ip;
  options.virt_type = cfg.libvirt.virt_type;
  options.state_path = cfg.defaults.state_path;
  options.reserved_host_memory_mb = cfg.defaults.reserved_host_memory_mb;
  options.reserved_host_disk_mb = cfg.defaults.reserved_host_disk_mb;
  const auto dirs = drivers::libvirt::defaultFirmwareDescriptorDirs();
  options.uefi = drivers::libvirt::chooseUefiFirmware(dirs, false, cfg.libvirt.uefi_loader,
                                                      cfg.libvirt.uefi_nvram_template)
                     .ok();
  options.uefi_secure_boot =
      drivers::libvirt::chooseUefiFirmware(dirs, true, cfg.libvirt.uefi_loader,
                                           cfg.libvirt.uefi_nvram_template)
          .ok();
  options.ephemeral_encryption = cfg.ephemeral_storage_encryption.enabled;
  return options;
}

std::optional<openstack::keystone::KeystoneAuthOptions> placementAuthOptions(
    const config::KilnConfig& cfg) {
  const auto& section = cfg.placement;
  if (section.auth_type.empty()) return std::nullopt;
  openstack::keystone::KeystoneAuthOptions options;
  options.auth_type = section.auth_type;
  options.auth_url = section.auth_url;
  options.username = section.username;
  options.password = section.password;
  options.user_domain_name = section.user_domain_name;
  options.user_domain_id = section.user_domain_id;
  options.project_name = section.project_name;
  options.project_domain_name = section.project_domain_name;
  options.project_domain_id = section.project_domain_id;
  options.region_name = section.region_name;
  options.valid_interfaces = section.valid_interfaces;
  options.endpoint_override = section.endpoint_override;
  options.cafile = section.cafile;
  options.timeout = std::chrono::seconds(section.timeout);
  return options;
}

}  // namespace kiln::agent
