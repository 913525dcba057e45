"""Signed grpcio calls against the real server binary.

The binary is $HOOKPLANE_BIN, or target/debug/hookplane at the repository
root; it must exist (run `cargo build` first): a missing binary fails the
run, it is not skipped. The server runs on ports picked by the system with a
fresh data dir and a bootstrap platform admin, and is killed at the end.
"""

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
import pytest

from hookplane_client import SigningInterceptor, signed_channel
from hookplane_client.v1 import endpoint_service_pb2 as endpoints
from hookplane_client.v1 import endpoint_service_pb2_grpc as endpoints_grpc
from hookplane_client.v1 import event_type_service_pb2 as event_types
from hookplane_client.v1 import event_type_service_pb2_grpc as event_types_grpc
from hookplane_client.v1 import resources_pb2 as resources
from hookplane_client.v1 import subscription_service_pb2 as subscriptions
from hookplane_client.v1 import subscription_service_pb2_grpc as subscriptions_grpc
from hookplane_client.v1 import tenant_service_pb2 as tenants
from hookplane_client.v1 import tenant_service_pb2_grpc as tenants_grpc

CLIENT_DIR = Path(__file__).resolve().parent.parent
REPO_ROOT = CLIENT_DIR.parent.parent
ADMIN_API_ID = "py-admin"
ADMIN_SECRET = "py-admin-secret-" + secrets.token_hex(16)
TENANT = "acme"
EVENT_TYPE = "command.completed"
URL = "https://hooks.example.com/orders"
TIMEOUT = 10


class Server:
    def __init__(self, binary: Path):
        self.work = Path(tempfile.mkdtemp(prefix="hookplane-py-"))
        self.log_path = self.work / "server.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("HOOKPLANE_")}
        env.pop("RUST_LOG", None)
        env["HOOKPLANE_BOOTSTRAP_API_ID"] = ADMIN_API_ID
        env["HOOKPLANE_BOOTSTRAP_SECRET"] = ADMIN_SECRET
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [
                    str(binary), "serve",
                    "--grpc-addr", "127.0.0.1:0",
                    "--http-addr", "127.0.0.1:0",
                    "--data-dir", str(self.work / "data"),
                    "--log-format", "json",
                ],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.grpc_addr = None

    def wait_for_address(self) -> None:
        # Port 0: the server logs the addresses it bound.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            for line in self.log_path.read_text(encoding="utf-8", errors="replace").splitlines():
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                if event.get("message") == "hookplane listening":
                    self.grpc_addr = event["grpc_addr"]
                    return
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited during start-up:\n{self.log_tail()}")
            time.sleep(0.1)
        raise RuntimeError(f"the server did not log 'hookplane listening' in 60 s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(encoding="utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 15 s: the server never outlives the tests."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture(scope="module")
def server():
    binary = Path(os.environ.get("HOOKPLANE_BIN") or REPO_ROOT / "target" / "debug" / "hookplane")
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        pytest.fail(f"no hookplane binary at {binary} (cargo build, or set HOOKPLANE_BIN)")
    running = Server(binary.resolve())
    try:
        running.wait_for_address()
        yield running
    finally:
        running.stop()
        shutil.rmtree(running.work, ignore_errors=True)


def open_channel(server, api_id=ADMIN_API_ID, secret=ADMIN_SECRET):
    channel = signed_channel(server.grpc_addr, api_id, secret)
    grpc.channel_ready_future(channel).result(timeout=TIMEOUT)
    return channel


@pytest.fixture(scope="module")
def admin(server):
    with open_channel(server) as channel:
        yield channel


@pytest.fixture(scope="module")
def world(admin):
    """A tenant, an event type, an endpoint and a subscription, made once."""
    tenant = tenants_grpc.TenantServiceStub(admin).CreateTenant(
        tenants.CreateTenantRequest(tenant=resources.Tenant(tenant_id=TENANT, display_name="Acme")),
        timeout=TIMEOUT,
    )
    event_type = event_types_grpc.EventTypeServiceStub(admin).CreateEventType(
        event_types.CreateEventTypeRequest(event_type=resources.EventType(name=EVENT_TYPE)),
        timeout=TIMEOUT,
    )
    endpoint = endpoints_grpc.EndpointServiceStub(admin).CreateEndpoint(
        endpoints.CreateEndpointRequest(
            endpoint=resources.Endpoint(tenant_id=TENANT, endpoint_id="orders", url=URL)
        ),
        timeout=TIMEOUT,
    )
    subscription = subscriptions_grpc.SubscriptionServiceStub(admin).CreateSubscription(
        subscriptions.CreateSubscriptionRequest(
            subscription=resources.Subscription(
                tenant_id=TENANT,
                subscription_id="completed",
                endpoint_id="orders",
                name="command-completed",
                event_types=["command.*"],
            )
        ),
        timeout=TIMEOUT,
    )
    return {"tenant": tenant, "event_type": event_type, "endpoint": endpoint, "subscription": subscription}


def code_of(call, *args, **kwargs):
    with pytest.raises(grpc.RpcError) as raised:
        call(*args, timeout=TIMEOUT, **kwargs)
    return raised.value.code(), raised.value.details()


def test_signed_writes_create_what_resolve_then_finds(admin, world):
    assert world["tenant"].state == resources.Tenant.ACTIVE
    assert world["endpoint"].secret.startswith("whsec_")
    assert world["subscription"].status == resources.Subscription.ACTIVE

    answer = subscriptions_grpc.SubscriptionServiceStub(admin).ResolveSubscribers(
        subscriptions.ResolveSubscribersRequest(tenant_id=TENANT, event_type=EVENT_TYPE),
        timeout=TIMEOUT,
    )
    assert [(t.subscription_id, t.endpoint_id, t.url, t.matched_pattern) for t in answer.targets] == [
        ("completed", "orders", URL, "command.*")
    ]
    # The platform admin may read secrets: the endpoint's one is there.
    assert list(answer.targets[0].signing_secrets) == [world["endpoint"].secret]
    assert answer.revision > 0


def test_a_server_stream_is_signed_too(admin, world):
    call = subscriptions_grpc.SubscriptionServiceStub(admin).WatchSubscriptions(
        subscriptions.WatchSubscriptionsRequest(tenant_id=TENANT, since_revision=0),
        timeout=TIMEOUT,
    )
    kinds = subscriptions.WatchSubscriptionsResponse
    snapshot = {}
    for message in call:
        if message.kind == kinds.HEARTBEAT:
            # The heartbeat follows the whole snapshot.
            break
        assert message.kind == kinds.SNAPSHOT
        resource = message.WhichOneof("resource")
        snapshot.setdefault(resource, []).append(getattr(message, resource))
    call.cancel()
    assert call.code() == grpc.StatusCode.CANCELLED

    assert [t.tenant_id for t in snapshot["tenant"]] == [TENANT]
    assert EVENT_TYPE in [e.name for e in snapshot["event_type"]]
    assert [e.endpoint_id for e in snapshot["endpoint"]] == ["orders"]
    assert [(s.subscription_id, list(s.event_types)) for s in snapshot["subscription"]] == [
        ("completed", ["command.*"])
    ]


def test_the_callers_request_id_is_kept_and_echoed(admin, world):
    _, call = tenants_grpc.TenantServiceStub(admin).GetTenant.with_call(
        tenants.GetTenantRequest(tenant_id=TENANT),
        metadata=[("x-request-id", "py-request-1")],
        timeout=TIMEOUT,
    )
    assert ("x-request-id", "py-request-1") in call.initial_metadata()


def test_a_wrong_secret_is_unauthenticated(server, admin, world):
    with open_channel(server, secret=ADMIN_SECRET + "-wrong") as channel:
        code, _ = code_of(
            tenants_grpc.TenantServiceStub(channel).GetTenant, tenants.GetTenantRequest(tenant_id=TENANT)
        )
    assert code == grpc.StatusCode.UNAUTHENTICATED


def test_an_unsigned_call_is_unauthenticated_and_names_the_header(server):
    with grpc.insecure_channel(server.grpc_addr) as channel:
        code, details = code_of(
            tenants_grpc.TenantServiceStub(channel).GetTenant, tenants.GetTenantRequest(tenant_id=TENANT)
        )
    assert code == grpc.StatusCode.UNAUTHENTICATED
    assert "x-api-id" in details


def test_a_replayed_nonce_is_unauthenticated_and_writes_nothing(server, admin):
    nonce = secrets.token_urlsafe(24)
    replaying = SigningInterceptor(ADMIN_API_ID, ADMIN_SECRET, nonce_factory=lambda: nonce)
    with grpc.intercept_channel(grpc.insecure_channel(server.grpc_addr), replaying) as channel:
        stub = tenants_grpc.TenantServiceStub(channel)
        stub.CreateTenant(
            tenants.CreateTenantRequest(tenant=resources.Tenant(tenant_id="replay-a")), timeout=TIMEOUT
        )
        # Same nonce, another body: the signature is valid, the nonce spent.
        code, _ = code_of(
            stub.CreateTenant, tenants.CreateTenantRequest(tenant=resources.Tenant(tenant_id="replay-b"))
        )
        assert code == grpc.StatusCode.UNAUTHENTICATED
        # A replayed read is refused as well.
        code, _ = code_of(stub.GetTenant, tenants.GetTenantRequest(tenant_id="replay-a"))
        assert code == grpc.StatusCode.UNAUTHENTICATED

    fresh = tenants_grpc.TenantServiceStub(admin)
    assert fresh.GetTenant(tenants.GetTenantRequest(tenant_id="replay-a"), timeout=TIMEOUT).tenant_id == "replay-a"
    code, _ = code_of(fresh.GetTenant, tenants.GetTenantRequest(tenant_id="replay-b"))
    assert code == grpc.StatusCode.NOT_FOUND


def test_the_example_prints_the_target(server, world):
    env = dict(
        os.environ,
        HOOKPLANE_ADDR=server.grpc_addr,
        HOOKPLANE_API_ID=ADMIN_API_ID,
        HOOKPLANE_API_SECRET=ADMIN_SECRET,
    )
    run = subprocess.run(
        [sys.executable, str(CLIENT_DIR / "examples" / "resolve.py"), TENANT, EVENT_TYPE],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == [f"completed\torders\t{URL}\tcommand.*"]
    assert ADMIN_SECRET not in run.stdout + run.stderr
    assert world["endpoint"].secret not in run.stdout + run.stderr
