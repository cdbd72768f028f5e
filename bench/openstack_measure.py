#!/usr/bin/python3
"""bench/openstack's measuring half: boots servers on two compute hosts of one Nova control plane,
alternating, through Nova's REST API (no CLI start-up in the figures), and prints the medians.

  openstack_measure.py FIXTURE_JSON KILN_HOST:KILN_PID NOVA_HOST:NOVA_PID[,HELPER_PID...] N

POST /servers -> ACTIVE and DELETE -> 404 are timed by polling every 50 ms; the compute-side
build is the instance-action event compute__do_build_and_run_instance, which nova-compute and
kilnd both record (start to finish, in Nova's own clock). RSS from /proc/PID/status after the
runs, the helpers' (nova's privsep daemon) added to nova-compute's.
"""
import json
import statistics
import sys
import time
import urllib.error
import urllib.request
from datetime import datetime


def call(fx, method, path, body=None, headers=None):
    # The fixture's Nova runs on SQLite, which fails a write that meets another ("database is
    # locked", HTTP 500) where MySQL would wait; such answers are sent again.
    for attempt in range(5):
        status, answer = call_once(fx, method, path, body, headers)
        if status != 500:
            return status, answer
        time.sleep(0.2 * (attempt + 1))
    return status, answer


def call_once(fx, method, path, body=None, headers=None):
    url = fx["nova"]["url"] + path
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("X-Auth-Token", fx["users"]["admin"]["token"])
    req.add_header("OpenStack-API-Version", "compute 2.88")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            text = resp.read()
            return resp.status, (json.loads(text) if text else None)
    except urllib.error.HTTPError as e:
        return e.code, None


def rss_mib(pids):
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total / 1024


def stamp(text):
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def boot(fx, host, flavor_id, image_id, name):
    body = {"server": {"name": name, "imageRef": image_id, "flavorRef": flavor_id,
                       "networks": "none", "availability_zone": f"nova:{host}"}}
    start = time.monotonic()
    status, created = call(fx, "POST", "/servers", body)
    if status != 202:
        sys.exit(f"POST /servers on {host} answered {status}")
    sid = created["server"]["id"]
    while True:
        _, shown = call(fx, "GET", f"/servers/{sid}")
        state = shown["server"]["status"]
        if state == "ACTIVE":
            break
        if state == "ERROR":
            sys.exit(f"server {sid} on {host} ended ERROR: {shown['server'].get('fault')}")
        time.sleep(0.05)
    active = time.monotonic() - start
    if shown["server"]["OS-EXT-SRV-ATTR:host"] != host:
        sys.exit(f"server {sid} landed on {shown['server']['OS-EXT-SRV-ATTR:host']}, not {host}")
    _, actions = call(fx, "GET", f"/servers/{sid}/os-instance-actions")
    request_id = actions["instanceActions"][-1]["request_id"]
    _, action = call(fx, "GET", f"/servers/{sid}/os-instance-actions/{request_id}")
    build = None
    for event in action["instanceAction"]["events"]:
        if event["event"] == "compute__do_build_and_run_instance" and event["finish_time"]:
            build = stamp(event["finish_time"]) - stamp(event["start_time"])
    start = time.monotonic()
    status, _ = call(fx, "DELETE", f"/servers/{sid}")
    if status != 204:
        sys.exit(f"DELETE of server {sid} on {host} answered {status}")
    while call(fx, "GET", f"/servers/{sid}")[0] != 404:
        time.sleep(0.05)
    gone = time.monotonic() - start
    return active, build, gone


def main():
    fx = json.load(open(sys.argv[1]))
    kiln_host, kiln_pid = sys.argv[2].split(":")
    nova_host, nova_pids = sys.argv[3].split(":")
    n = int(sys.argv[4])
    image_id = fx["image"]["id"]
    flavor_id = fx["flavors"]["kiln.tiny"]["id"]
    hosts = {"kiln": (kiln_host, [int(kiln_pid)]),
             "nova-compute": (nova_host, [int(p) for p in nova_pids.split(",")])}
    runs = {name: [] for name in hosts}
    # One boot each first, not counted: both hosts then have the image cached.
    for name, (host, _) in hosts.items():
        boot(fx, host, flavor_id, image_id, f"bench-warm-{name}")
    for i in range(n):
        order = list(hosts) if i % 2 == 0 else list(reversed(list(hosts)))
        for name in order:
            runs[name].append(boot(fx, hosts[name][0], flavor_id, image_id, f"bench-{name}-{i}"))

    def med(name, k):
        values = [r[k] for r in runs[name] if r[k] is not None]
        return statistics.median(values), min(values), max(values)

    print(f"bench/openstack: {n} boots each of kiln.tiny, image cached, alternating hosts")
    print(f"{'':<14}{'POST->ACTIVE':>20}{'compute build':>20}{'DELETE->gone':>20}{'RSS':>10}")
    for name in hosts:
        cells = []
        for k in range(3):
            m, lo, hi = med(name, k)
            cells.append(f"{m:6.2f} s ({lo:.2f}-{hi:.2f})")
        print(f"{name:<14}{cells[0]:>20}{cells[1]:>20}{cells[2]:>20}"
              f"{rss_mib(hosts[name][1]):>7.0f} MiB")
    for k, label in ((0, "POST->ACTIVE"), (1, "compute build"), (2, "DELETE->gone")):
        print(f"ratio kiln / nova-compute, {label}: {med('kiln', k)[0] / med('nova-compute', k)[0]:.2f}")
    print(f"ratio kiln / nova-compute, RSS: "
          f"{rss_mib(hosts['kiln'][1]) / rss_mib(hosts['nova-compute'][1]):.3f}")


if __name__ == "__main__":
    main()
