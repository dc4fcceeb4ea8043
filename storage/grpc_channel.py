"""gRPC settings shared by the coordinator and its workers, so that a link cut
mid-call ends the call instead of hanging it: keepalive pings while a call is
open (a silent peer is declared dead in about half a minute), and a deadline on
every storage call. Both end in UNAVAILABLE or DEADLINE_EXCEEDED, which the
worker waits out as an outage (storage/outage.py)."""

from __future__ import annotations

import collections

import grpc

KEEPALIVE_MS, KEEPALIVE_TIMEOUT_MS = 20_000, 10_000
CALL_DEADLINE_S = 120.0  # far above any storage call's time, even a 256-worker queue's
SNAPSHOT_S = 0.5  # how stale a worker's view of the other trials may be (storage/proxy.py)

CLIENT_OPTIONS = [
    ("grpc.max_receive_message_length", -1),  # as Optuna's client: a study's trials in one reply
    ("grpc.keepalive_time_ms", KEEPALIVE_MS),
    ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
    ("grpc.http2.max_pings_without_data", 0),
]
# The server's default answer to pings more often than every 5 min is to drop the link.
SERVER_OPTIONS = [
    ("grpc.http2.min_recv_ping_interval_without_data_ms", KEEPALIVE_MS // 2),
    ("grpc.http2.max_ping_strikes", 0),
]


def channel(host: str, port: int, deadline_s: float | None = None) -> grpc.Channel:
    """A channel to the coordinator; with `deadline_s`, unary calls that set none get it."""
    ch = grpc.insecure_channel(f"{host}:{port}", options=CLIENT_OPTIONS)
    return ch if deadline_s is None else grpc.intercept_channel(ch, _Deadline(deadline_s))


class _Details(collections.namedtuple("_Details", "method timeout metadata credentials wait_for_ready compression"),
               grpc.ClientCallDetails):
    pass


class _Deadline(grpc.UnaryUnaryClientInterceptor):
    def __init__(self, seconds: float):
        self.seconds = seconds

    def intercept_unary_unary(self, continuation, details, request):
        if details.timeout is None:
            details = _Details(details.method, self.seconds, details.metadata, details.credentials,
                               details.wait_for_ready, details.compression)
        return continuation(details, request)
