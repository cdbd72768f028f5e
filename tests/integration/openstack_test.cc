// kilnd as the nova-compute of a real Nova control plane (the openstack fixture,
// scripts/start-openstack.sh): with [DEFAULT] transport_url it registers its host, keeps it up
// with heartbeats, reports its compute node (`openstack hypervisor show`) and its resource
// provider (`openstack resource provider inventory list`), answers the compute RPC Nova's API
// sends it, and goes down when it stops.

#include <fmt/format.h>

#include <sys/stat.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <string>
#include <thread>

#include "common/command_runner.h"
#include "common/uuid.h"
#include "tests/integration/kilnd_harness.h"

namespace {

using kiln::testing::KilndHarness;
using kiln::testing::virsh;
using nlohmann::json;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

json fixture() {
  // The fixture's directory (tests/integration/CMakeLists.txt), or another control plane's.
  const char* env = std::getenv("KILN_TEST_OPENSTACK_DIR");
  const std::string dir = env != nullptr ? env : KILN_OPENSTACK_DIR;
  std::ifstream in(dir + "/fixture.json");
  REQUIRE(in.good());
  return json::parse(in);
}

struct Cli {
  kiln::CommandOutput out;
  double seconds = 0;
};

// `openstack ARGS` as the cloud's admin.
Cli openstack(const json& fx, const std::string& args) {
  kiln::CommandSpec spec;
  spec.argv = {
      "sh", "-c",
      fmt::format(". '{}' && openstack {}", fx["openrc"]["admin"].get<std::string>(), args)};
  spec.timeout = 120s;
  kiln::PosixCommandRunner runner;
  const auto start = Clock::now();
  // The fixture's Nova runs on SQLite, which fails a write that meets another ("database is
  // locked": nova-api's HTTP 500 names sqlalchemy's OperationalError) where MySQL in production
  // waits. The CLI's calls are the test's scaffolding, so such failures are retried.
  for (int attempt = 1;; ++attempt) {
    auto out = runner.run(spec);
    if (!out) FAIL(out.error().message);
    const bool sqlite_artefact =
        out->stderr_text.find("sqlalchemy.exc.OperationalError") != std::string::npos;
    if (out->succeeded() || !sqlite_artefact || attempt == 4)
      return {*out, std::chrono::duration<double>(Clock::now() - start).count()};
    fmt::print("openstack: 'openstack {}' met the fixture's SQLite; again\n", args);
    std::this_thread::sleep_for(std::chrono::milliseconds(300 * attempt));
  }
}

// `openstack ARGS -f json`, which must succeed.
json openstackJson(const json& fx, const std::string& args) {
  Cli cli = openstack(fx, args + " -f json");
  INFO(args);
  INFO(cli.out.stderr_text);
  REQUIRE(cli.out.succeeded());
  return json::parse(cli.out.stdout_text);
}

std::string readUuidFile(const std::string& path) {
  std::ifstream in(path);
  std::string uuid;
  std::getline(in, uuid);
  return uuid;
}

json serviceOf(const json& fx, const std::string& host) {
  Cli cli =
      openstack(fx, "compute service list --service nova-compute --host " + host + " -f json");
  INFO(cli.out.stderr_text);
  REQUIRE(cli.out.succeeded());
  json services = json::parse(cli.out.stdout_text);
  return services.empty() ? json() : services[0];
}

// The end of a test's host: kilnd stopped and its service row deleted (Placement's provider goes
// with it), so later tests see only their own hosts.
void retireHost(const json& fx, KilndHarness& kilnd, const std::string& host) {
  kilnd.stop();
  openstack(fx, "compute service delete " + serviceOf(fx, host)["ID"].get<std::string>());
}

// kiln.conf's OpenStack front, from the fixture's control plane.
std::string openstackConfig(const json& fx, const std::string& host) {
  const json& kiln = fx["users"]["kiln"];
  return fmt::format(
      "[DEFAULT]\nhost = {}\ntransport_url = {}\nreport_interval = 2\n"
      "[placement]\nauth_type = password\nauth_url = {}\nusername = {}\npassword = {}\n"
      "user_domain_name = Default\nproject_name = {}\nproject_domain_name = Default\nregion_name = "
      "{}\n",
      host, fx["transport_url"].get<std::string>(), fx["keystone"]["auth_url"].get<std::string>(),
      kiln["name"].get<std::string>(), kiln["password"].get<std::string>(),
      kiln["project"].get<std::string>(), fx["region"].get<std::string>());
}

}  // namespace

namespace {

// A file that is removed when the test ends, however it ends.
struct ScratchFile {
  std::string path = (std::filesystem::temp_directory_path() /
                      ("kiln-openstack-" + kiln::randomUuid().substr(0, 8)))
                         .string();
  explicit ScratchFile(const std::string& contents) {
    std::ofstream(path) << contents;
    ::chmod(path.c_str(), 0600);
  }
  ~ScratchFile() { std::filesystem::remove(path); }
};

// kiln.conf's [glance]: the fixture's Glance, with kiln's token in `token`.
std::string glanceConfig(const json& fx, const ScratchFile& token) {
  return fmt::format("[glance]\napi_servers = {}\ntoken_file = {}\n",
                     fx["glance"]["url"].get<std::string>(), token.path);
}

// Waits until `done` holds for `openstack ARGS -f json`, at most `timeout`; returns the last.
json pollJson(const json& fx, const std::string& args, const std::function<bool(const json&)>& done,
              std::chrono::seconds timeout) {
  json last;
  const auto until = Clock::now() + timeout;
  while (Clock::now() < until) {
    last = openstackJson(fx, args);
    if (done(last)) break;
    std::this_thread::sleep_for(1s);
  }
  return last;
}

void discoverHosts(const json& fx) {
  kiln::CommandSpec discover;
  discover.argv = {"nova-manage", "--config-file", fx["nova"]["conf"].get<std::string>(), "cell_v2",
                   "discover_hosts"};
  discover.timeout = 120s;
  kiln::PosixCommandRunner runner;
  auto discovered = runner.run(discover);
  REQUIRE(discovered.ok());
  INFO(discovered->stderr_text);
  REQUIRE(discovered->succeeded());
}

// The allocations Placement holds for `consumer` (an instance), by provider.
json allocationsOf(const json& fx, const std::string& consumer) {
  return openstackJson(fx, "resource provider allocation show " + consumer);
}

// kilnd on `host` up, its provider and inventory in Placement, the host mapped into the cell.
// Returns the node's uuid (the provider's).
std::string waitSchedulable(const json& fx, KilndHarness& kilnd, const std::string& host) {
  pollJson(
      fx, "compute service list --service nova-compute --host " + host,
      [](const json& rows) { return !rows.empty() && rows[0]["State"] == "up"; }, 30s);
  std::string node_uuid;
  const auto until = Clock::now() + 30s;
  while (Clock::now() < until) {
    std::ifstream in(kilnd.statePath() + "/compute_id");
    std::getline(in, node_uuid);
    if (!node_uuid.empty() &&
        !openstackJson(fx, "resource provider inventory list " + node_uuid).empty())
      break;
    std::this_thread::sleep_for(1s);
  }
  REQUIRE_FALSE(node_uuid.empty());
  discoverHosts(fx);
  return node_uuid;
}

std::string createServer(const json& fx, const std::string& host, const std::string& name,
                         bool wait) {
  const json server = openstackJson(
      fx, fmt::format("server create --image {} --flavor kiln.tiny --network none "
                      "--availability-zone nova:{} {}{}",
                      fx["image"]["id"].get<std::string>(), host, wait ? "--wait " : "", name));
  return server["id"].get<std::string>();
}

// The guest's console through Nova (get_console_output on kiln's host).
std::string consoleOf(const json& fx, const std::string& id) {
  Cli cli = openstack(fx, "console log show " + id);
  INFO(cli.out.stderr_text);
  REQUIRE(cli.out.succeeded());
  return cli.out.stdout_text;
}

int countOf(const std::string& text, const std::string& needle) {
  int n = 0;
  for (auto pos = text.find(needle); pos != std::string::npos; pos = text.find(needle, pos + 1))
    ++n;
  return n;
}

// Waits until the console holds `boots` KILN-READY lines (one per boot).
void waitBoots(const json& fx, const std::string& id, int boots) {
  std::string console;
  const auto until = Clock::now() + 120s;
  while (Clock::now() < until) {
    console = consoleOf(fx, id);
    if (countOf(console, "KILN-READY") >= boots) return;
    std::this_thread::sleep_for(1s);
  }
  FAIL("the guest did not boot " << boots << " times:\n" << console);
}

// `server show` once the task state is gone.
json settledServer(const json& fx, const std::string& id) {
  return pollJson(
      fx, "server show " + id, [](const json& s) { return s["OS-EXT-STS:task_state"].is_null(); },
      120s);
}

// The events of the action `verb` (stop, reboot, pause, ...) on the server.
json eventsOf(const json& fx, const std::string& id, const std::string& verb) {
  for (const auto& action : openstackJson(fx, "server event list " + id)) {
    if (action["Action"] == verb) {
      return openstackJson(
          fx, "server event show " + id + " " + action["Request ID"].get<std::string>())["events"];
    }
  }
  return json::array();
}

TEST_CASE("openstack: Nova builds and deletes a server on a kiln host", "[openstack]") {
  const json fx = fixture();
  REQUIRE(fx["image"].is_object());
  const std::string host = "kiln-" + kiln::randomUuid().substr(0, 8);
  const ScratchFile glance_token(fx["users"]["kiln"]["token"].get<std::string>() + "\n");
  KilndHarness kilnd(openstackConfig(fx, host) + glanceConfig(fx, glance_token));
  kilnd.start();
  const std::string node_uuid = waitSchedulable(fx, kilnd, host);

  const std::string image_id = fx["image"]["id"].get<std::string>();
  const std::string name = "kiln-srv-" + kiln::randomUuid().substr(0, 8);
  const auto create_start = Clock::now();
  Cli created = openstack(fx, fmt::format("server create --image {} --flavor kiln.tiny --network "
                                          "none --availability-zone nova:{} --wait -f json {}",
                                          image_id, host, name));
  const double create_seconds = std::chrono::duration<double>(Clock::now() - create_start).count();
  INFO(created.out.stderr_text);
  INFO(kilnd.logText());
  REQUIRE(created.out.succeeded());
  const json server = json::parse(created.out.stdout_text);
  const std::string id = server["id"].get<std::string>();
  fmt::print("openstack: server create --wait took {:.2f} s on kiln host {}\n", create_seconds,
             host);
  CHECK(server["status"] == "ACTIVE");
  CHECK(server["OS-EXT-SRV-ATTR:host"] == host);
  CHECK(server["OS-EXT-STS:power_state"] == 1);  // nova's RUNNING
  CHECK(server["OS-EXT-STS:task_state"].is_null());
  // kiln's own view of the same instance: one lifecycle behind both fronts.
  auto kiln_view = kilnd.api("GET", "/v1/instances/" + id);
  CHECK(kiln_view.status == 200);
  CHECK(json::parse(kiln_view.body)["state"] == "active");
  CHECK(virsh({"domstate", "kiln-" + id}).value_or("").find("running") != std::string::npos);
  // Placement holds the flavor's resources on kiln's provider.
  const json held = allocationsOf(fx, id);
  REQUIRE(held.size() == 1);
  CHECK(held[0]["resource_provider"] == node_uuid);
  // The build's instance-action event, as `openstack server event show` lists it.
  const json actions = openstackJson(fx, "server event list " + id);
  REQUIRE_FALSE(actions.empty());
  const json create_action = openstackJson(
      fx, "server event show " + id + " " + actions.back()["Request ID"].get<std::string>());
  bool build_event = false;
  for (const auto& event : create_action["events"]) {
    if (event["event"] == "compute__do_build_and_run_instance") {
      build_event = true;
      CHECK(event["result"] == "Success");
      CHECK(event["host"] == host);
    }
  }
  CHECK(build_event);

  // The console through Nova, then each power action seen on it and in `server show`.
  waitBoots(fx, id, 1);
  openstack(fx, "server stop " + id);
  json shown = settledServer(fx, id);
  CHECK(shown["status"] == "SHUTOFF");
  CHECK(shown["OS-EXT-STS:power_state"] == 4);                  // nova's SHUTDOWN
  CHECK(countOf(consoleOf(fx, id), "KILN-POWER-BUTTON") == 1);  // a clean shutdown
  openstack(fx, "server start " + id);
  shown = settledServer(fx, id);
  CHECK(shown["status"] == "ACTIVE");
  CHECK(shown["OS-EXT-STS:power_state"] == 1);
  waitBoots(fx, id, 2);
  openstack(fx, "server reboot --soft --wait " + id);
  CHECK(settledServer(fx, id)["status"] == "ACTIVE");
  waitBoots(fx, id, 3);
  CHECK(countOf(consoleOf(fx, id), "KILN-POWER-BUTTON") == 2);
  openstack(fx, "server reboot --hard --wait " + id);
  CHECK(settledServer(fx, id)["status"] == "ACTIVE");
  waitBoots(fx, id, 4);
  CHECK(countOf(consoleOf(fx, id), "KILN-POWER-BUTTON") == 2);  // HARD did not ask the guest
  for (const char* verb : {"stop", "start", "reboot"}) {
    for (const auto& event : eventsOf(fx, id, verb)) {
      INFO(verb << ": " << event.dump());
      CHECK(event["result"] == "Success");
    }
  }

  // A guest that stops outside Nova's actions (here: killed on the host) shows SHUTOFF in Nova
  // within a report interval or two, and starts again through Nova.
  REQUIRE(virsh({"destroy", "kiln-" + id}).has_value());
  shown = pollJson(
      fx, "server show " + id, [](const json& s) { return s["status"] == "SHUTOFF"; }, 60s);
  CHECK(shown["status"] == "SHUTOFF");
  CHECK(shown["OS-EXT-STS:power_state"] == 4);
  openstack(fx, "server start " + id);
  CHECK(settledServer(fx, id)["status"] == "ACTIVE");
  waitBoots(fx, id, 5);
  // The console's last line, as `console log show --lines` asks for it.
  Cli last = openstack(fx, "console log show --lines 1 " + id);
  CHECK(countOf(last.out.stdout_text, "\n") <= 1);

  // An action kiln does not support is answered: no task state left, an Error event.
  Cli paused = openstack(fx, "server pause " + id);
  INFO(paused.out.stderr_text);
  CHECK(paused.out.succeeded());
  shown = settledServer(fx, id);
  CHECK(shown["status"] == "ACTIVE");
  CHECK(shown["OS-EXT-STS:task_state"].is_null());
  const json pause_events = eventsOf(fx, id, "pause");
  REQUIRE(pause_events.size() == 1);
  CHECK(pause_events[0]["event"] == "compute_pause_instance");
  CHECK(pause_events[0]["result"] == "Error");

  Cli deleted = openstack(fx, "server delete --wait " + id);
  INFO(deleted.out.stderr_text);
  REQUIRE(deleted.out.succeeded());
  CHECK(kilnd.api("GET", "/v1/instances/" + id).status == 404);
  CHECK_FALSE(virsh({"domstate", "kiln-" + id}).has_value());
  CHECK_FALSE(std::filesystem::exists(kilnd.statePath() + "/instances/" + id));
  CHECK(allocationsOf(fx, id).empty());

  // A hostile image (a qcow2 that names a host file as its backing file) ends the build in
  // ERROR with the inspector's reason, and frees what the scheduler claimed.
  const std::string hostile_path = kilnd.dir() + "/hostile.qcow2";
  kiln::CommandSpec make;
  make.argv = {"qemu-img",      "create", "-f",  "qcow2",      "-b",
               "/etc/hostname", "-F",     "raw", hostile_path, "64M"};
  kiln::PosixCommandRunner runner;
  auto made = runner.run(make);
  REQUIRE(made.ok());
  REQUIRE(made->succeeded());
  const std::string hostile_name = "kiln-hostile-" + kiln::randomUuid().substr(0, 8);
  const json hostile = openstackJson(
      fx, fmt::format("image create --disk-format qcow2 --container-format bare --public "
                      "--file {} {}",
                      hostile_path, hostile_name));
  const std::string hostile_id = hostile["id"].get<std::string>();
  Cli refused = openstack(fx, fmt::format("server create --image {} --flavor kiln.tiny --network "
                                          "none --availability-zone nova:{} --wait -f json {}",
                                          hostile_id, host, hostile_name));
  // (osc 6.0 exits 0 from a failed --wait: it only says so.)
  CHECK(refused.out.stderr_text.find("Error creating server") != std::string::npos);
  const json errored = openstackJson(fx, "server show " + hostile_name);
  CHECK(errored["status"] == "ERROR");
  CHECK(errored["OS-EXT-STS:task_state"].is_null());
  const std::string fault = errored["fault"].dump();
  INFO(fault);
  CHECK(fault.find("aborted") != std::string::npos);
  CHECK(fault.find("backing") != std::string::npos);
  const std::string errored_id = errored["id"].get<std::string>();
  CHECK(allocationsOf(fx, errored_id).empty());
  CHECK(kilnd.api("GET", "/v1/instances/" + errored_id).status == 404);
  openstack(fx, "server delete --wait " + errored_id);
  openstack(fx, "image delete " + hostile_id);

  retireHost(fx, kilnd, host);
}

}  // namespace

namespace {

// The word after `tag` on the server's console, once the guest printed it.
std::string waitConsoleWord(const json& fx, const std::string& id, const std::string& tag) {
  std::string console;
  const auto until = Clock::now() + 120s;
  while (Clock::now() < until) {
    console = consoleOf(fx, id);
    if (auto at = console.find(tag + " "); at != std::string::npos) {
      std::istringstream words(console.substr(at + tag.size() + 1));
      std::string word;
      words >> word;
      return word;
    }
    std::this_thread::sleep_for(1s);
  }
  FAIL("the guest did not print " << tag << ":\n" << console);
  return "";
}

TEST_CASE("openstack: a server image made on a kiln host boots with the first guest's data",
          "[openstack]") {
  const json fx = fixture();
  REQUIRE(fx["image"].is_object());
  const std::string host = "kiln-" + kiln::randomUuid().substr(0, 8);
  const ScratchFile glance_token(fx["users"]["kiln"]["token"].get<std::string>() + "\n");
  KilndHarness kilnd(openstackConfig(fx, host) + glanceConfig(fx, glance_token));
  kilnd.start();
  waitSchedulable(fx, kilnd, host);
  INFO(kilnd.logText());

  const std::string first = createServer(fx, host, "kiln-snap-src", true);
  const std::string mark = waitConsoleWord(fx, first, "KILN-ROOT-WROTE");
  REQUIRE(mark.size() == 36);

  // nova-api creates the queued image; kiln's host fills it while the guest runs on.
  const std::string image_name = "kiln-snap-" + kiln::randomUuid().substr(0, 8);
  const json image =
      openstackJson(fx, "server image create --wait --name " + image_name + " " + first);
  const std::string image_id = image["id"].get<std::string>();
  const json shown_image = openstackJson(fx, "image show " + image_id);
  CHECK(shown_image["status"] == "active");
  CHECK(shown_image["disk_format"] == "qcow2");
  CHECK(shown_image["container_format"] == "bare");
  CHECK(shown_image["properties"]["instance_uuid"] == first);
  CHECK(shown_image["properties"]["image_type"] == "snapshot");
  const json source = settledServer(fx, first);
  CHECK(source["status"] == "ACTIVE");
  CHECK(source["OS-EXT-STS:power_state"] == 1);
  const json snapshot_events = eventsOf(fx, first, "createImage");
  REQUIRE(snapshot_events.size() == 1);
  CHECK(snapshot_events[0]["event"] == "compute_snapshot_instance");
  CHECK(snapshot_events[0]["result"] == "Success");

  // A server booted from the snapshot finds the mark the first guest wrote on its root disk.
  const json second =
      openstackJson(fx, fmt::format("server create --image {} --flavor kiln.tiny --network none "
                                    "--availability-zone nova:{} --wait kiln-snap-copy",
                                    image_id, host));
  const std::string copy = second["id"].get<std::string>();
  CHECK(settledServer(fx, copy)["status"] == "ACTIVE");
  CHECK(waitConsoleWord(fx, copy, "KILN-ROOT-FOUND") == mark);

  for (const std::string& id : {first, copy}) {
    Cli deleted = openstack(fx, "server delete --wait " + id);
    INFO(deleted.out.stderr_text);
    CHECK(deleted.out.succeeded());
  }
  openstack(fx, "image delete " + image_id);
  retireHost(fx, kilnd, host);
}

// The fixture's own rabbitmqctl (scripts/start-openstack.sh), for its broker only.
kiln::CommandOutput rabbitmqctl(const std::vector<std::string>& args) {
  const char* env = std::getenv("KILN_TEST_OPENSTACK_DIR");
  kiln::CommandSpec spec;
  spec.argv = {std::string(env != nullptr ? env : KILN_OPENSTACK_DIR) + "/rabbitmqctl"};
  spec.argv.insert(spec.argv.end(), args.begin(), args.end());
  spec.timeout = 120s;
  auto out = kiln::PosixCommandRunner().run(spec);
  REQUIRE(out.ok());
  INFO("rabbitmqctl " << args.front() << ": " << out->stderr_text);
  REQUIRE(out->succeeded());
  return std::move(out).value();
}

TEST_CASE("openstack: RabbitMQ restarts under kilnd: kiln reconnects and the next server builds",
          "[openstack]") {
  const json fx = fixture();
  REQUIRE(fx["image"].is_object());
  const std::string host = "kiln-" + kiln::randomUuid().substr(0, 8);
  const ScratchFile glance_token(fx["users"]["kiln"]["token"].get<std::string>() + "\n");
  KilndHarness kilnd(openstackConfig(fx, host) + glanceConfig(fx, glance_token));
  kilnd.start();
  waitSchedulable(fx, kilnd, host);
  INFO(kilnd.logText());

  // The broker's application stops and starts again: every connection is closed and oslo's
  // transient queues are gone, as after a restart of the node.
  rabbitmqctl({"stop_app"});
  rabbitmqctl({"start_app"});
  rabbitmqctl({"await_startup"});
  // kiln declares its queues again, and so do the control plane's services.
  const std::vector<std::string> queues = {"compute." + host, "conductor", "scheduler"};
  std::string listed;
  bool all_back = false;
  for (const auto until = Clock::now() + 90s; !all_back && Clock::now() < until;) {
    listed = rabbitmqctl({"list_queues", "--quiet", "name"}).stdout_text;
    std::set<std::string> names;
    std::istringstream lines(listed);
    for (std::string line; std::getline(lines, line);) names.insert(line);
    all_back = std::all_of(queues.begin(), queues.end(),
                           [&](const std::string& q) { return names.count(q) == 1; });
    if (!all_back) std::this_thread::sleep_for(1s);
  }
  INFO("queues after the restart:\n" << listed);
  REQUIRE(all_back);
  CHECK(countOf(kilnd.logText(), "RPC: lost the connection to RabbitMQ") >= 1);
  CHECK(countOf(kilnd.logText(), "RPC: connected to RabbitMQ") >= 2);

  // The service is still up, and Nova's next build reaches kiln over the new connection.
  pollJson(
      fx, "compute service list --service nova-compute --host " + host,
      [](const json& rows) { return !rows.empty() && rows[0]["State"] == "up"; }, 60s);
  const std::string id = createServer(fx, host, "kiln-after-rabbit", true);
  const json shown = settledServer(fx, id);
  CHECK(shown["status"] == "ACTIVE");
  CHECK(shown["OS-EXT-SRV-ATTR:host"] == host);
  Cli deleted = openstack(fx, "server delete --wait " + id);
  INFO(deleted.out.stderr_text);
  CHECK(deleted.out.succeeded());
  retireHost(fx, kilnd, host);
}

TEST_CASE(
    "openstack: kilnd killed during a build and during a delete leaves no server building "
    "or deleting",
    "[openstack]") {
  const json fx = fixture();
  REQUIRE(fx["image"].is_object());
  const std::string host = "kiln-" + kiln::randomUuid().substr(0, 8);
  const ScratchFile glance_token(fx["users"]["kiln"]["token"].get<std::string>() + "\n");
  KilndHarness kilnd(openstackConfig(fx, host) + glanceConfig(fx, glance_token));
  kilnd.setBinary(KILND_FAILPOINTS_PATH);
  kilnd.setEnv("KILN_FAILPOINTS", "launch.after_root_disk=abort");
  kilnd.start();
  waitSchedulable(fx, kilnd, host);

  // SIGKILLed in the middle of a build (its root disk made, no domain yet).
  const std::string built = createServer(fx, host, "kiln-crash-build", false);
  REQUIRE(kilnd.waitKilled(90s));
  kilnd.setBinary(KILND_PATH);
  kilnd.unsetEnv("KILN_FAILPOINTS");
  kilnd.start();
  json shown = pollJson(
      fx, "server show " + built, [](const json& s) { return s["status"] == "ERROR"; }, 60s);
  INFO(kilnd.logText());
  CHECK(shown["status"] == "ERROR");
  CHECK(shown["OS-EXT-STS:task_state"].is_null());
  CHECK(shown["fault"].dump().find("interrupted") != std::string::npos);
  CHECK(kilnd.api("GET", "/v1/instances/" + built).status == 404);
  CHECK_FALSE(std::filesystem::exists(kilnd.statePath() + "/instances/" + built));
  CHECK(kilnd.logText().find("1 interrupted builds ended in ERROR") != std::string::npos);

  // The restarted host builds the next server.
  const std::string survivor = createServer(fx, host, "kiln-crash-delete", true);
  CHECK(openstackJson(fx, "server show " + survivor)["status"] == "ACTIVE");

  // SIGKILLed in the middle of a delete (the domain gone, its files not yet).
  kilnd.stop();
  kilnd.setBinary(KILND_FAILPOINTS_PATH);
  kilnd.setEnv("KILN_FAILPOINTS", "delete.after_destroy=abort");
  kilnd.start();
  pollJson(
      fx, "compute service list --service nova-compute --host " + host,
      [](const json& rows) { return !rows.empty() && rows[0]["State"] == "up"; }, 30s);
  openstack(fx, "server delete " + survivor);
  REQUIRE(kilnd.waitKilled(90s));
  kilnd.setBinary(KILND_PATH);
  kilnd.unsetEnv("KILN_FAILPOINTS");
  kilnd.start();
  bool gone = false;
  const auto until = Clock::now() + 90s;
  while (Clock::now() < until && !gone) {
    Cli cli = openstack(fx, "server show -f json " + survivor);
    gone = !cli.out.succeeded() || json::parse(cli.out.stdout_text)["status"] == "DELETED";
    if (!gone) std::this_thread::sleep_for(1s);
  }
  CHECK(gone);
  CHECK(kilnd.api("GET", "/v1/instances/" + survivor).status == 404);
  CHECK_FALSE(virsh({"domstate", "kiln-" + survivor}).has_value());
  CHECK_FALSE(std::filesystem::exists(kilnd.statePath() + "/instances/" + survivor));
  CHECK(allocationsOf(fx, survivor).empty());
  CHECK(kilnd.logText().find("1 interrupted deletes completed") != std::string::npos);

  Cli deleted = openstack(fx, "server delete --wait " + built);
  CHECK(deleted.out.succeeded());
  CHECK(allocationsOf(fx, built).empty());
  retireHost(fx, kilnd, host);
}

}  // namespace

namespace {

TEST_CASE(
    "openstack: kilnd registers as nova-compute, answers Nova's RPC, and goes down when stopped",
    "[openstack]") {
  const json fx = fixture();
  const std::string host = "kiln-" + kiln::randomUuid().substr(0, 8);
  KilndHarness kilnd(openstackConfig(fx, host));
  kilnd.start();

  // Up within a few heartbeats.
  json service;
  const auto until = Clock::now() + 30s;
  while (Clock::now() < until) {
    service = serviceOf(fx, host);
    if (!service.is_null() && service["State"] == "up") break;
    std::this_thread::sleep_for(1s);
  }
  INFO(kilnd.logText());
  REQUIRE(!service.is_null());
  CHECK(service["State"] == "up");
  CHECK(service["Status"] == "enabled");
  // The log names the broker, never its password.
  const std::string password = fx["rabbitmq"]["password"].get<std::string>();
  CHECK(kilnd.logText().find(password) == std::string::npos);
  CHECK(kilnd.logText().find("kilnd is nova-compute of host " + host) != std::string::npos);

  // The compute node and its provider share the uuid kept under state_path.
  const std::string node_uuid = readUuidFile(kilnd.statePath() + "/compute_id");
  REQUIRE(kiln::canonicalUuid(node_uuid) == node_uuid);
  json providers;
  const auto provider_until = Clock::now() + 30s;
  while (Clock::now() < provider_until) {
    providers = openstackJson(fx, "resource provider list --uuid " + node_uuid);
    if (!providers.empty()) break;
    std::this_thread::sleep_for(1s);
  }
  REQUIRE(providers.size() == 1);
  CHECK(providers[0]["name"] == host);
  // The inventory as nova's libvirt driver computes it, with the defaults' reservations.
  std::map<std::string, json> inventory;
  const auto inventory_until = Clock::now() + 30s;
  while (Clock::now() < inventory_until && inventory.size() < 3) {
    inventory.clear();
    for (const auto& row : openstackJson(fx, "resource provider inventory list " + node_uuid))
      inventory[row["resource_class"].get<std::string>()] = row;
    if (inventory.size() < 3) std::this_thread::sleep_for(1s);
  }
  REQUIRE(inventory.count("VCPU") == 1);
  REQUIRE(inventory.count("MEMORY_MB") == 1);
  REQUIRE(inventory.count("DISK_GB") == 1);
  CHECK(inventory["VCPU"]["total"] == std::thread::hardware_concurrency());
  CHECK(inventory["VCPU"]["allocation_ratio"] == 16.0);
  CHECK(inventory["MEMORY_MB"]["reserved"] == 512);
  CHECK(inventory["MEMORY_MB"]["allocation_ratio"] == 1.5);
  CHECK(inventory["DISK_GB"]["total"].get<int>() > 0);
  std::set<std::string> traits;
  for (const auto& row : openstackJson(fx, "resource provider trait list " + node_uuid))
    traits.insert(row["name"].get<std::string>());
  for (const char* trait : {"COMPUTE_NODE", "COMPUTE_IMAGE_TYPE_QCOW2", "COMPUTE_VOLUME_ATTACH",
                            "COMPUTE_NET_ATTACH_INTERFACE", "COMPUTE_STORAGE_BUS_VIRTIO"}) {
    INFO(trait);
    CHECK(traits.count(trait) == 1);
  }
  CHECK(traits.count("COMPUTE_STATUS_DISABLED") == 0);

  // discover_hosts maps the host into the cell; then the API shows the hypervisor, its uptime
  // asked of kilnd over RPC.
  discoverHosts(fx);
  const json hypervisor = openstackJson(fx, "hypervisor show " + node_uuid);
  INFO(hypervisor.dump());
  CHECK(hypervisor["hypervisor_hostname"] == host);
  CHECK(hypervisor["hypervisor_type"] == "QEMU");
  CHECK(hypervisor["state"] == "up");
  // The CLI splits `uptime`'s line into these.
  CHECK_FALSE(hypervisor["uptime"].get<std::string>().empty());
  CHECK_FALSE(hypervisor["load_average"].get<std::string>().empty());

  // Disabling calls the host's set_host_enabled: answered at once, not after a 60 s timeout.
  Cli disabled = openstack(
      fx, "compute service set --disable --disable-reason kiln-test " + host + " nova-compute");
  INFO(disabled.out.stderr_text);
  REQUIRE(disabled.out.succeeded());
  CHECK(disabled.seconds < 20);
  CHECK(serviceOf(fx, host)["Status"] == "disabled");
  CHECK(kilnd.logText().find("is disabled") != std::string::npos);
  // The scheduler's prefilter skips the host from the moment the call is answered.
  traits.clear();
  for (const auto& row : openstackJson(fx, "resource provider trait list " + node_uuid))
    traits.insert(row["name"].get<std::string>());
  CHECK(traits.count("COMPUTE_STATUS_DISABLED") == 1);
  CHECK(traits.count("COMPUTE_NODE") == 1);

  // Stopped: no more heartbeats, and Nova calls it down after its service_down_time (20 s).
  kilnd.stop();
  const auto down_until = Clock::now() + 60s;
  while (Clock::now() < down_until && serviceOf(fx, host)["State"] != "down")
    std::this_thread::sleep_for(2s);
  service = serviceOf(fx, host);
  CHECK(service["State"] == "down");
  // Deleting the service takes its compute node and resource provider with it.
  Cli deleted = openstack(fx, "compute service delete " + service["ID"].get<std::string>());
  INFO(deleted.out.stderr_text);
  CHECK(deleted.out.succeeded());
  CHECK(openstackJson(fx, "resource provider list --uuid " + node_uuid).empty());
}

}  // namespace
