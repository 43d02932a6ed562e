"""Fault harness for dispatch: a receiving webhook server, a non-deduplicating channel that counts
its accepts in a file, and a dispatcher process that can be killed at a chosen moment.

Used by the fault tests (tests/integration/test_delivery_faults.py) and the soak benchmark
(benchmarks/dispatch_soak.py). Nothing here ships to MWAA.

- ``ReceivingServer``: a real HTTP server on a free loopback port that counts every request per
  ``Idempotency-Key`` (``received``) and keeps one copy per key (``unique``), the way a
  deduplicating receiver does. It can hold requests (block until released), fail a share of them
  transiently (503), answer a share only after the client's timeout ("timeout after accept"), or
  answer with a redirect.
- ``AcceptLogChannel``: a channel with no idempotency on the receiving side (``deduplicates =
  False``): every accept is a line in a file, so a resend would show as a second line. It can be
  flaky too, and SIGKILL its own process right after its N-th accept.
- ``python -m notify_tools.faults dispatch ...``: one dispatcher run in its own process.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import signal
import sys
import threading
import time
import urllib.parse
from collections import Counter
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from include.notify.stages.channels import Message, TransientChannelError, UnknownOutcomeError


class _QuietServer(ThreadingHTTPServer):
    """A threading HTTP server that does not print a traceback when a killed client resets."""

    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass


def _fraction(key: str) -> float:
    """A stable pseudo-random number in [0, 1) for a key (the same on every run and process)."""
    return random.Random(key).random()


class ReceivingServer:
    """A deduplicating webhook receiver (see the module docstring); ``url`` once started."""

    def __init__(
        self,
        transient_rate: float = 0.0,
        timeout_after_accept_rate: float = 0.0,
        answer_delay: float = 0.0,
        redirect_to: str | None = None,
        secret: str | None = None,
    ) -> None:
        self.transient_rate = transient_rate
        self.timeout_after_accept_rate = timeout_after_accept_rate
        self.answer_delay = answer_delay
        self.redirect_to = redirect_to
        self.secret = secret
        self.received: Counter[str] = Counter()
        self.unique: dict[str, dict[str, Any]] = {}
        self.bad_signatures = 0
        self.hold = threading.Event()  # cleared: requests for held keys wait until it is set
        self.hold.set()
        self.held_keys: set[str] = set()
        self.holding = threading.Event()  # set once a held request is waiting
        self.kill_pid: int | None = None  # SIGKILL this process right after the kill_after-th accept
        self.kill_after = 0
        self.accepts = 0
        self._lock = threading.Lock()
        self._server: _QuietServer | None = None

    def start(self) -> ReceivingServer:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                owner._handle(self)

            def do_GET(self) -> None:
                owner._handle(self)

            def log_message(self, *args: object) -> None:
                pass

        self._server = _QuietServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_port}/notify"

    def stop(self) -> None:
        self.hold.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def _handle(self, request: BaseHTTPRequestHandler) -> None:
        from include.notify.stages.channels import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify_signature

        length = int(request.headers.get("Content-Length") or 0)
        body = request.rfile.read(length) if length else b""
        key = request.headers.get("Idempotency-Key") or f"<no key {request.command}>"
        with self._lock:
            self.received[key] += 1
            attempt = self.received[key]
        if self.redirect_to is not None:
            request.send_response(302)
            request.send_header("Location", self.redirect_to)
            request.end_headers()
            return
        if self.secret is not None:
            signature = request.headers.get(SIGNATURE_HEADER) or ""
            timestamp = request.headers.get(TIMESTAMP_HEADER) or ""
            if not verify_signature(self.secret, timestamp, body, signature):
                with self._lock:
                    self.bad_signatures += 1
                request.send_response(401)
                request.end_headers()
                return
        if key in self.held_keys and attempt == 1 and not self.hold.is_set():  # only its first copy
            self.holding.set()
            self.hold.wait()
        draw = _fraction(f"{key}#{attempt}")
        if draw < self.transient_rate:
            request.send_response(503)
            request.end_headers()
            return
        with self._lock:  # accepted: a deduplicating receiver keeps the first copy
            self.unique.setdefault(key, json.loads(body or b"{}"))
            self.accepts += 1
            kill = self.kill_pid is not None and self.accepts == self.kill_after
        if draw < self.transient_rate + self.timeout_after_accept_rate:
            time.sleep(self.answer_delay or 3.0)  # accepted, but the answer comes after the client gave up
        request.send_response(200)
        request.end_headers()
        if kill:
            request.wfile.flush()
            os.kill(self.kill_pid, signal.SIGKILL)  # right after this accept reached the sender


class AcceptLogChannel:
    """A non-deduplicating channel: each accept appends the notification id to ``path``.

    ``transient_rate`` of attempts fail before anything is accepted; ``unknown_rate`` are accepted
    and then reported as a timeout (the dangerous case); ``kill_after`` SIGKILLs this process right
    after that many accepts (before dispatch can record anything).
    """

    deduplicates = False

    def __init__(
        self,
        path: Path,
        name: str = "acceptlog",
        transient_rate: float = 0.0,
        unknown_rate: float = 0.0,
        kill_after: int | None = None,
        salt: str = "",
    ) -> None:
        self.path = Path(path)
        self.name = name
        self.transient_rate = transient_rate
        self.unknown_rate = unknown_rate
        self.kill_after = kill_after
        self.attempts: Counter[str] = Counter()
        self.accepts = 0
        # Draws are a function of (salt, id, attempt): repeatable in one process; a dispatcher
        # process passes its pid, or the same ids would fail in every new process for ever.
        self.salt = salt
        self._lock = threading.Lock()

    def send(self, message: Message) -> None:
        with self._lock:
            self.attempts[message.notification_id] += 1
            attempt = self.attempts[message.notification_id]
            draw = _fraction(f"{self.name}#{self.salt}#{message.notification_id}#{attempt}")
        if draw < self.transient_rate:
            raise TransientChannelError(self.name, message.notification_id, "503 try later")
        with self._lock:
            with self.path.open("a") as log:
                log.write(message.notification_id + "\n")
                log.flush()
                os.fsync(log.fileno())
            self.accepts += 1
            if self.kill_after is not None and self.accepts >= self.kill_after:
                os.kill(os.getpid(), signal.SIGKILL)  # right after the accept, before any bookkeeping
        if draw < self.transient_rate + self.unknown_rate:
            raise UnknownOutcomeError(self.name, message.notification_id, "timeout after the message was accepted")

    def close(self) -> None:
        """Nothing to release."""


def accepted_ids(path: Path) -> Counter[str]:
    """How many times the accept log holds each notification id."""
    if not Path(path).exists():
        return Counter()
    return Counter(line for line in Path(path).read_text().splitlines() if line)


def consume_all(bootstrap: str, topic: str, idle_seconds: float = 3.0, limit_seconds: float = 60.0) -> list[dict]:
    """Every message of ``topic`` from the beginning (JSON values), read until it is idle."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"faults-{time.time_ns()}", "enable.auto.commit": False}
    )
    try:
        metadata = consumer.list_topics(topic, timeout=10).topics[topic]
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in metadata.partitions])
        found: list[dict] = []
        idle_since = time.monotonic()
        started = time.monotonic()
        while time.monotonic() - idle_since < idle_seconds and time.monotonic() - started < limit_seconds:
            message = consumer.poll(0.5)
            if message is None or message.error() is not None:
                continue
            found.append(json.loads(message.value()))
            idle_since = time.monotonic()
        return found
    finally:
        consumer.close()


class BufferingProxy:
    """An HTTP proxy in front of dynalite for processes that get SIGKILLed.

    dynalite (4.0.0) throws and exits when a client connection is reset in the middle of a
    request (``req.on('error', err => { throw err })``); DynamoDB does not. The proxy reads each
    request whole before forwarding it on its own connection, so a client killed mid-request
    never reaches dynalite half-sent, and a response nobody waits for any more is read and dropped.
    """

    def __init__(self, upstream: str) -> None:
        parsed = urllib.parse.urlsplit(upstream)
        self.host, self.port = parsed.hostname or "127.0.0.1", int(parsed.port or 80)
        self._server: _QuietServer | None = None

    def start(self) -> BufferingProxy:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                owner._forward(self)

            def log_message(self, *args: object) -> None:
                pass

        self._server = _QuietServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    @property
    def endpoint(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_port}"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def _forward(self, request: BaseHTTPRequestHandler) -> None:
        length = int(request.headers.get("Content-Length") or 0)
        try:
            body = request.rfile.read(length) if length else b""
        except OSError:
            return
        if len(body) < length:
            return  # the client died mid-request: nothing is forwarded
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("connection", "keep-alive")}
        upstream = http.client.HTTPConnection(self.host, self.port, timeout=60)
        try:
            upstream.request(request.command, request.path, body=body, headers=headers)
            response = upstream.getresponse()
            payload = response.read()
            status, reason, reply_headers = response.status, response.reason, response.getheaders()
        finally:
            upstream.close()
        try:
            request.send_response(status, reason)
            for name, value in reply_headers:
                if name.lower() not in ("connection", "keep-alive", "content-length", "transfer-encoding"):
                    request.send_header(name, value)
            request.send_header("Content-Length", str(len(payload)))
            request.end_headers()
            request.wfile.write(payload)
        except OSError:
            pass  # the client is gone; its response is dropped


# ------------------------------------------------------------------------- dispatcher process
def _main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="notify_tools.faults")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("dispatch", help="one dispatcher run in this process")
    run.add_argument("--prefix", required=True)
    run.add_argument("--endpoint", required=True)
    run.add_argument("--kafka", default="")
    run.add_argument("--topic-prefix", default="notify.")
    run.add_argument("--shards", type=int, default=16)
    run.add_argument("--lease", type=int, default=120)
    run.add_argument("--now", required=True)
    run.add_argument("--owner", default=None)
    run.add_argument("--webhook", default="")
    run.add_argument("--webhook-timeout", type=float, default=5.0)
    run.add_argument("--accept-log", default="")
    run.add_argument("--transient-rate", type=float, default=0.0)
    run.add_argument("--unknown-rate", type=float, default=0.0)
    run.add_argument("--kill-after", type=int, default=None)
    run.add_argument("--backoff", type=float, default=0.05)
    run.add_argument("--chunk", type=int, default=500)
    run.add_argument("--workers", type=int, default=8)
    run.add_argument("--stop-after-claim", action="store_true", help="SIGSTOP itself once its first batch is claimed")
    run.add_argument("--quiet-hours-at-send", choices=("expire", "defer"), default="expire")
    args = parser.parse_args(argv)

    from include.notify.config import NotifyConfig
    from include.notify.io.dynamo import Dynamo
    from include.notify.stages.channels import WebhookChannel
    from include.notify.stages.dispatch import Dispatcher, KafkaEventSink, ListEventSink

    config = NotifyConfig(
        table_prefix=args.prefix,
        dynamodb_endpoint_url=args.endpoint,
        schedule_shards=args.shards,
        lease_seconds=args.lease,
        kafka_bootstrap=args.kafka or "127.0.0.1:9",
        topic_prefix=args.topic_prefix,
        webhook_url=args.webhook,
        quiet_hours_at_send=args.quiet_hours_at_send,
    )
    dynamo = Dynamo.from_config(config)
    channels: list[Any] = []
    if args.webhook:
        channels.append(WebhookChannel(config, timeout=args.webhook_timeout))
    if args.accept_log:
        channels.append(
            AcceptLogChannel(Path(args.accept_log), transient_rate=args.transient_rate, unknown_rate=args.unknown_rate,
                             kill_after=args.kill_after, salt=str(os.getpid()))
        )  # fmt: skip
    events = KafkaEventSink(config) if args.kafka else ListEventSink()
    options: dict[str, Any] = {"owner": args.owner} if args.owner else {}
    if args.stop_after_claim:
        stopped: list[int] = []

        def stop_once(_items: list[dict[str, Any]]) -> None:
            if not stopped:
                stopped.append(1)
                # Aimed at this thread, not the process: a process-directed SIGSTOP is taken by
                # the main thread, and under load this worker thread ran on into the begin first.
                signal.pthread_kill(threading.get_ident(), signal.SIGSTOP)  # frozen between claim and begin

        options["after_claim"] = stop_once
    dispatcher = Dispatcher(
        config,
        dynamo,
        channels,
        events,
        backoff_seconds=args.backoff,
        chunk_size=args.chunk,
        workers=args.workers,
        **options,
    )
    counts = dispatcher.run(datetime.fromisoformat(args.now))
    print(json.dumps(counts), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
