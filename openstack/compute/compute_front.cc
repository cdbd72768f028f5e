#include "openstack/compute/compute_front.h"

#include "common/command_runner.h"
#include "common/log.h"
#include "openstack/compute/power_sync.h"

namespace kiln::openstack::compute {
namespace {

// What nova's libvirt driver answers get_host_uptime with: `env LANG=C uptime`'s output.
Result<std::string> hostUptime() {
  CommandSpec spec;
  spec.argv = {"env", "LANG=C", "uptime"};
  spec.timeout = std::chrono::seconds(10);
  spec.max_output_bytes = 4096;
  PosixCommandRunner runner;
  auto out = runner.run(spec);
  if (!out) return out.error();
  if (!out->succeeded()) return Error::internal(describeFailure(spec, *out));
  std::string text = out->stdout_text;
  while (!text.empty() && text.back() == '\n') text.pop_back();
  return text;
}

// The ratio Placement holds for `resource_class`, or the fallback when it has no such class.
double ratioOf(const placement::Inventories& inventories, const std::string& resource_class,
               double fallback) {
  const auto found = inventories.find(resource_class);
  return found == inventories.end() ? fallback : found->second.allocation_ratio;
}

}  // namespace

ComputeFront::ComputeFront(ComputeFrontOptions options, imagecache::HttpClient& http,
                           const Clock& clock)
    : options_(std::move(options)),
      handlers_(options_.rpc_workers, 1024),
      rpc_(options_.rabbit, handlers_),
      conductor_(rpc_, options_.rpc_response_timeout),
      service_(conductor_, options_.host),
      node_(conductor_, options_.host, options_.node_uuid),
      compute_rpc_(ComputeRpc::Hooks{[this](bool enabled) { onHostEnabled(enabled); }, hostUptime}),
      http_(http),
      clock_(clock) {
  rpc_.listen(kTopic, options_.host, [this](const messaging::RpcRequest& request) {
    return compute_rpc_.handle(request);
  });
}

ComputeFront::~ComputeFront() { stop(); }

Result<void> ComputeFront::start() {
  if (options_.placement) {
    auto session = keystone::KeystoneSession::create(*options_.placement, http_, clock_);
    if (!session) return Error::invalid("[placement] " + session.error().message);
    placement_session_ = std::move(session).value();
    placement_ = std::make_unique<placement::PlacementClient>(*placement_session_);
  } else {
    log::warn(
        "OpenStack: no [placement] section: host {} keeps no resource provider, and Nova's "
        "scheduler will not place instances on it",
        options_.host);
  }
  log::info(
      "OpenStack: kilnd is nova-compute of host {} (node {}, RabbitMQ {}, exchange '{}')",
      options_.host, options_.node_uuid,
      [&] {
        std::string brokers;
        for (const auto& broker : options_.rabbit.url.brokers) {
          brokers += (brokers.empty() ? "" : ",") + messaging::describeBroker(broker);
        }
        return brokers;
      }(),
      options_.rabbit.control_exchange);
  if (options_.instances != nullptr) {
    instance_operations_ = std::make_unique<InstanceOperations>(InstanceOperations{
        conductor_, placement_.get(), *options_.instances, instance_locks_, options_.host});
    compute_rpc_.define("build_and_run_instance", [this](const messaging::RpcRequest& request) {
      return afterRecovery(request, buildAndRunInstance);
    });
    compute_rpc_.define("terminate_instance", [this](const messaging::RpcRequest& request) {
      return afterRecovery(request, terminateInstance);
    });
    compute_rpc_.define("reboot_instance", [this](const messaging::RpcRequest& request) {
      return afterRecovery(request, rebootInstance);
    });
    compute_rpc_.define("stop_instance", [this](const messaging::RpcRequest& request) {
      return afterRecovery(request, stopInstance);
    });
    compute_rpc_.define("start_instance", [this](const messaging::RpcRequest& request) {
      return afterRecovery(request, startInstance);
    });
    compute_rpc_.define("get_console_output", [this](const messaging::RpcRequest& request) {
      return afterRecovery(request, getConsoleOutput);
    });
    compute_rpc_.define("snapshot_instance", [this](const messaging::RpcRequest& request) {
      return afterRecovery(request, snapshotInstance);
    });
    compute_rpc_.define("external_instance_event", [this](const messaging::RpcRequest& request) {
      return afterRecovery(request, externalInstanceEvent);
    });
    compute_rpc_.setUnsupportedInstanceCast([this](const messaging::RpcRequest& request) {
      return afterRecovery(request, unsupportedInstanceCast);
    });
  }
  rpc_.start();
  reporter_ = std::thread([this] { reportLoop(); });
  return success();
}

void ComputeFront::stop() {
  {
    std::lock_guard lock(mutex_);
    if (stopping_) return;
    stopping_ = true;
  }
  wake_.notify_all();
  // A handler may be waiting for a long download: it must let go now, or stopping kilnd would
  // wait for the build. Nova's view of its instance stays as it is, for the next start.
  if (options_.instances != nullptr) options_.instances->stopWaiting();
  if (reporter_.joinable()) reporter_.join();
  rpc_.stop();
  handlers_.shutdown();
}

void ComputeFront::onHostEnabled(bool enabled) {
  log::info("OpenStack: Nova says service nova-compute on {} is {}", options_.host,
            enabled ? "enabled" : "disabled");
  // As nova's set_host_enabled: the trait changes before the call is answered, so the scheduler
  // stops (or resumes) picking this host at once, not at the next report.
  std::optional<placement::HostCapabilities> capabilities;
  {
    std::lock_guard lock(capabilities_mutex_);
    if (capabilities_) {
      capabilities_->service_disabled = !enabled;
      capabilities = capabilities_;
    }
  }
  if (!placement_ || !capabilities) return;
  if (auto synced = syncProviderTraits(*capabilities); !synced) {
    log::warn("OpenStack: updating COMPUTE_STATUS_DISABLED on provider {} failed: {}",
              options_.node_uuid, synced.error().message);
  }
}

Result<void> ComputeFront::syncProviderTraits(const placement::HostCapabilities& capabilities) {
  auto set = placement_->setOwnedTraits(options_.node_uuid, placement::hostTraits(capabilities),
                                        placement::ownedTraits());
  if (!set) return set.error();
  return success();
}

Result<void> ComputeFront::reportResources() {
  if (!options_.measure_host) return success();
  auto measured = options_.measure_host();
  if (!measured)
    return Error{measured.error().code, "measuring the host: " + measured.error().message};
  HostMeasurement& m = *measured;
  m.capabilities.service_disabled = service_.disabled();
  {
    std::lock_guard lock(capabilities_mutex_);
    capabilities_ = m.capabilities;
  }
  // What Placement held at the last refresh stands in for a fresh read until the refresh is due,
  // as nova's report client keeps its provider tree between refreshes.
  const auto now = std::chrono::steady_clock::now();
  const bool refresh = !placement_state_ || now - refreshed_at_ >= kPlacementRefresh;
  placement::Inventories held =
      placement_state_ ? placement_state_->inventories : placement::Inventories{};
  Result<void> placement_result = success();
  if (placement_ && refresh) {
    auto provider = placement_->ensureProvider(options_.node_uuid, m.node.hypervisor_hostname);
    auto current = provider ? placement_->inventories(options_.node_uuid)
                            : Result<placement::Inventories>(provider.error());
    if (current) {
      held = std::move(current).value();
      refreshed_at_ = now;
    } else {
      placement_result = current.error();
      placement_state_.reset();
    }
  }
  const placement::Inventories inventories =
      placement::hostInventory(m.resources, options_.inventory, held);
  m.node.cpu_allocation_ratio = ratioOf(inventories, "VCPU",
                                        options_.inventory.cpu_allocation_ratio.value_or(
                                            options_.inventory.initial_cpu_allocation_ratio));
  m.node.ram_allocation_ratio = ratioOf(inventories, "MEMORY_MB",
                                        options_.inventory.ram_allocation_ratio.value_or(
                                            options_.inventory.initial_ram_allocation_ratio));
  m.node.disk_allocation_ratio = ratioOf(inventories, "DISK_GB",
                                         options_.inventory.disk_allocation_ratio.value_or(
                                             options_.inventory.initial_disk_allocation_ratio));
  // The compute node first, as nova's resource tracker: the provider's uuid is the node's.
  if (auto reported = node_.report(m.node); !reported) return reported;
  if (!placement_ || !placement_result) return placement_result;
  const std::set<std::string> traits = placement::hostTraits(m.capabilities);
  if (!refresh && placement::sameInventories(placement_state_->inventories, inventories) &&
      placement_state_->traits == traits) {
    return success();
  }
  placement_state_.reset();
  if (auto set = placement_->setInventories(options_.node_uuid, inventories); !set)
    return set.error();
  if (auto synced = syncProviderTraits(m.capabilities); !synced) return synced;
  placement_state_ = PlacementState{inventories, traits};
  return success();
}

messaging::RpcOutcome ComputeFront::afterRecovery(
    const messaging::RpcRequest& request,
    messaging::RpcOutcome (*operation)(const InstanceOperations&, const messaging::RpcRequest&)) {
  {
    std::unique_lock lock(mutex_);
    wake_.wait(lock, [this] { return recovered_ || stopping_; });
    if (!recovered_) {
      return messaging::RpcOutcome::fail("ServiceUnavailable", "nova.exception",
                                         "kilnd is stopping");
    }
  }
  return operation(*instance_operations_, request);
}

bool ComputeFront::recoverOnce() {
  if (!instance_operations_) return true;
  auto recovered = recoverInstances(*instance_operations_);
  if (!recovered) {
    log::warn(
        "OpenStack: settling Nova's instances on {} failed (tried again at the next "
        "report): {}",
        options_.host, recovered.error().message);
    return false;
  }
  log::info(
      "OpenStack: Nova's instances on {} settled: {} interrupted builds ended in ERROR, {} "
      "interrupted deletes completed, {} cut-short tasks cleared, {} guests of deleted "
      "instances removed",
      options_.host, recovered->failed_builds, recovered->completed_deletes,
      recovered->settled_tasks, recovered->removed_deleted);
  return true;
}

bool ComputeFront::recoveredNow() {
  std::lock_guard lock(mutex_);
  return recovered_;
}

void ComputeFront::syncPowerStatesOnce() {
  if (options_.instances == nullptr) return;
  auto synced = syncPowerStates(conductor_, options_.host, *options_.instances);
  if (!synced) {
    if (!power_sync_failed_)
      log::warn("OpenStack: the power-state sync failed: {}", synced.error().message);
    power_sync_failed_ = true;
    return;
  }
  if (power_sync_failed_) log::info("OpenStack: the power-state sync works again");
  power_sync_failed_ = false;
  if (synced->saved > 0) {
    log::info("OpenStack: power-state sync: {} of {} instances saved", synced->saved,
              synced->instances);
  }
}

void ComputeFront::reportLoop() {
  bool beat_failed = false;
  bool report_failed = false;
  for (;;) {
    {
      std::unique_lock lock(mutex_);
      if (stopping_) return;
    }
    // The first pass registers (the heartbeat makes the row when there is none yet).
    if (rpc_.waitConnected(std::chrono::seconds(1))) {
      if (auto beat = service_.heartbeat(); !beat) {
        if (!beat_failed)
          log::warn("OpenStack: the service heartbeat failed: {}", beat.error().message);
        beat_failed = true;
      } else {
        if (beat_failed) log::info("OpenStack: service heartbeats reach nova-conductor again");
        beat_failed = false;
        if (auto reported = reportResources(); !reported) {
          if (!report_failed) {
            log::warn("OpenStack: reporting host {}'s resources failed: {}", options_.host,
                      reported.error().message);
          }
          report_failed = true;
        } else {
          if (report_failed)
            log::info("OpenStack: host {}'s resources are reported again", options_.host);
          report_failed = false;
        }
        if (!recoveredNow() && recoverOnce()) {
          std::lock_guard lock(mutex_);
          recovered_ = true;
          wake_.notify_all();
        }
        syncPowerStatesOnce();
      }
    }
    std::unique_lock lock(mutex_);
    wake_.wait_for(lock, options_.report_interval, [this] { return stopping_; });
    if (stopping_) return;
  }
}

}  // namespace kiln::openstack::compute
