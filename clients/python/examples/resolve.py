#!/usr/bin/env python3
"""Whom to notify for an event: ResolveSubscribers over a signed channel.

    HOOKPLANE_ADDR=127.0.0.1:50051 HOOKPLANE_API_ID=... HOOKPLANE_API_SECRET=... \\
        python examples/resolve.py TENANT EVENT_TYPE

Prints one line per target (subscription, endpoint, URL, matched pattern),
following every page. Signing secrets are not printed, even to a caller
allowed to read them. Run `python generate.py` once first to make the stubs.
"""

import argparse
import os
import sys
from pathlib import Path

import grpc

# Run from a checkout without installing: the package is one directory up.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hookplane_client import signed_channel  # noqa: E402
from hookplane_client.v1 import subscription_service_pb2 as subscriptions  # noqa: E402
from hookplane_client.v1 import subscription_service_pb2_grpc as subscriptions_grpc  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description="Resolve the subscribers of one event.")
    parser.add_argument("tenant_id")
    parser.add_argument("event_type")
    args = parser.parse_args()

    address = os.environ.get("HOOKPLANE_ADDR", "127.0.0.1:50051")
    api_id = os.environ.get("HOOKPLANE_API_ID")
    secret = os.environ.get("HOOKPLANE_API_SECRET")
    if not api_id or not secret:
        print("resolve.py: set HOOKPLANE_API_ID and HOOKPLANE_API_SECRET", file=sys.stderr)
        return 2

    with signed_channel(address, api_id, secret) as channel:
        stub = subscriptions_grpc.SubscriptionServiceStub(channel)
        request = subscriptions.ResolveSubscribersRequest(
            tenant_id=args.tenant_id, event_type=args.event_type
        )
        first_revision, count = None, 0
        try:
            while True:
                page = stub.ResolveSubscribers(request, timeout=10)
                if first_revision is None:
                    first_revision = page.revision
                for target in page.targets:
                    count += 1
                    print(
                        f"{target.subscription_id}\t{target.endpoint_id}\t{target.url}"
                        f"\t{target.matched_pattern}"
                    )
                if not page.next_page_token:
                    break
                request.page_token = page.next_page_token
        except grpc.RpcError as err:
            print(f"resolve.py: {err.code().name}: {err.details()}", file=sys.stderr)
            return 1
    # Pages answered at different revisions may overlap or miss a change.
    note = "" if page.revision == first_revision else f" (revision moved from {first_revision})"
    print(f"# {count} target(s) at revision {page.revision}{note}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
