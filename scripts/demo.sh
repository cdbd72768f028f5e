#!/usr/bin/env bash
# One command from a fresh Debian 12 machine to a running VM: installs the dependencies, builds
# kiln, starts libvirtd and virtlogd when they are not running, runs kilnd with a demo image, and
# launches a demo instance whose serial console you then see.
#   sudo scripts/demo.sh
# Environment: KILN_DEMO_DIR (default /var/lib/kiln-demo), KILN_DEMO_VIRT_TYPE (default qemu:
# software emulation works everywhere; use kvm on a host with working KVM).
set -euo pipefail
cd "$(dirname "$0")/.."
readonly REPO=$PWD
readonly DEMO_DIR=${KILN_DEMO_DIR:-/var/lib/kiln-demo}
readonly VIRT_TYPE=${KILN_DEMO_VIRT_TYPE:-qemu}
readonly PORT=8790

scripts/install-deps.sh
scripts/start-services.sh
echo "== building kiln"
# Same build directory and options as scripts/test.sh, so neither undoes the other (KILN_WERROR is
# left to the cache: on after a test run, off on a fresh clone).
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DKILN_INTEGRATION=ON >/dev/null
cmake --build build -j"$(nproc)" --target kilnd

# The demo lives in one directory; every directory above a disk needs o+x for QEMU's user.
mkdir -p "$DEMO_DIR/images" "$DEMO_DIR/state"
chmod 0711 "$DEMO_DIR" "$DEMO_DIR/state"

echo "== building the demo image (Debian's cloud kernel + busybox, boots from its own disk)"
tests/guest/build-guest.sh "$DEMO_DIR/guest" >/dev/null
image="$DEMO_DIR/guest/kiln-test-guest.raw"
cp "$image" "$DEMO_DIR/images/demo.img"
# The image record, with Glance's field names; written with jq-free tools but never by hand-made
# JSON: python's json module builds it.
python3 - "$DEMO_DIR/images/demo.img" "$DEMO_DIR/images/demo.json" <<'PY'
import hashlib, json, sys
data = open(sys.argv[1], "rb").read()
json.dump({"id": "demo", "name": "kiln demo guest", "status": "active", "disk_format": "raw",
           "container_format": "bare", "size": len(data),
           "checksum": hashlib.md5(data).hexdigest(), "os_hash_algo": "sha512",
           "os_hash_value": hashlib.sha512(data).hexdigest()}, open(sys.argv[2], "w"), indent=2)
PY

if [[ ! -f "$DEMO_DIR/api-tokens" ]]; then
  (umask 077; echo "$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n') admin,scheduler" \
    >"$DEMO_DIR/api-tokens")
fi
token=$(awk '{print $1; exit}' "$DEMO_DIR/api-tokens")
cat >"$DEMO_DIR/kiln.conf" <<CONF
[DEFAULT]
state_path = $DEMO_DIR/state
flavors_file = $REPO/config/flavors.yaml
[api]
listen = 127.0.0.1:$PORT
token_file = $DEMO_DIR/api-tokens
[libvirt]
virt_type = $VIRT_TYPE
[images]
local_dir = $DEMO_DIR/images
CONF

if [[ -f "$DEMO_DIR/kilnd.pid" ]] && kill -0 "$(cat "$DEMO_DIR/kilnd.pid")" 2>/dev/null; then
  kill "$(cat "$DEMO_DIR/kilnd.pid")"; sleep 1
fi
echo "== starting kilnd (log: $DEMO_DIR/kilnd.log)"
nohup build/agent/kilnd --config "$DEMO_DIR/kiln.conf" >"$DEMO_DIR/kilnd.log" 2>&1 &
echo $! >"$DEMO_DIR/kilnd.pid"
for _ in $(seq 100); do
  curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null && break
  sleep 0.1
done
curl -sf "http://127.0.0.1:$PORT/healthz"; echo

api() { curl -sS -H "Authorization: Bearer $token" -H 'Content-Type: application/json' "$@"; }
uuid=$(python3 -c 'import uuid; print(uuid.uuid4())')
echo "== launching instance $uuid (flavor m1.tiny, image demo)"
body=$(python3 -c 'import json,sys; print(json.dumps({"uuid": sys.argv[1], "name": "demo",
  "flavor": "m1.tiny", "image": {"id": "demo"}}))' "$uuid")
api -X POST "http://127.0.0.1:$PORT/v1/instances" -d "$body"; echo
for _ in $(seq 300); do
  state=$(api "http://127.0.0.1:$PORT/v1/instances/$uuid" | python3 -c 'import json,sys; print(json.load(sys.stdin)["state"])')
  [[ $state != building ]] && break
  sleep 0.1
done
echo "== instance is $state"
api "http://127.0.0.1:$PORT/v1/instances/$uuid" | python3 -m json.tool
echo "== serial console (through GET /v1/instances/$uuid/console)"
for _ in $(seq 120); do
  console=$(api "http://127.0.0.1:$PORT/v1/instances/$uuid/console")
  [[ $console == *KILN-READY* ]] && break
  sleep 0.5
done
printf '%s\n' "$console" | tr -d '\r'
cat <<EOF

kilnd keeps running (pid $(cat "$DEMO_DIR/kilnd.pid")). Try:
  curl -H "Authorization: Bearer $token" http://127.0.0.1:$PORT/v1/instances
  curl -H "Authorization: Bearer $token" -X DELETE http://127.0.0.1:$PORT/v1/instances/$uuid
  kill \$(cat $DEMO_DIR/kilnd.pid)     # stops kilnd; instances keep running
EOF
