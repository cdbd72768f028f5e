#pragma once
// kilnd's OpenStack front from kiln.conf: with [DEFAULT] transport_url set, the compute front
// (openstack/compute/compute_front.h) with its RabbitMQ options, this host's node uuid from
// state_path, nova's inventory options, the [placement] section and a HostProbe over kilnd's
// driver, instances and image cache. Without transport_url, none.

#include <memory>
#include <string>

#include "agent/host_probe.h"
#include "common/clock.h"
#include "common/result.h"
#include "config/config.h"
#include "imagecache/http_client.h"
#include "openstack/compute/compute_front.h"

namespace kiln::agent {

// The front, not started; null without transport_url. `probe`, `instances`, `http` and `clock`
// outlive it.
Result<std::unique_ptr<openstack::compute::ComputeFront>> makeComputeFront(
    const config::KilnConfig& cfg, const std::string& host, HostProbe& probe,
    openstack::compute::InstanceHost& instances, imagecache::HttpClient& http, const Clock& clock);

// The HostProbe's options from kiln.conf (the UEFI firmware searched for as launches do).
HostProbeOptions hostProbeOptions(const config::KilnConfig& cfg, const std::string& host);

// [placement] as the Keystone session's options; nothing when the section sets no auth_type.
std::optional<openstack::keystone::KeystoneAuthOptions> placementAuthOptions(
    const config::KilnConfig& cfg);

}  // namespace kiln::agent
