"""A small loopback HTTP proxy in front of the suite's Azurite that injects faults.

It listens on 127.0.0.1 only and forwards to 127.0.0.1:<upstream> only. Each request is
numbered; rules decide per request: answer 500/503 without forwarding (Azure's transient
errors), hold the request until the test releases it (a deterministic point to kill a process
at: "the manifest's upload has started"), or delay it. Every request is logged with its
outcome, so a test can assert that faults were really injected.
"""

import http.client
import http.server
import re
import threading
import time

HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}


class Rule:
    """matches(method, path) -> bool; action: ("status", code) | ("hold", Event) | ("delay", s).
    every: act on every Nth matching request (1: each); limit: act at most this many times."""

    def __init__(self, method=None, path=None, action=("status", 503), every=1, limit=None):
        self.method, self.path = method, re.compile(path) if path else None
        self.action, self.every, self.limit = action, every, limit
        self.matched = self.acted = 0

    def applies(self, method, path):
        if self.method and method != self.method:
            return False
        if self.path and not self.path.search(path):
            return False
        self.matched += 1
        if self.matched % self.every:
            return False
        if self.limit is not None and self.acted >= self.limit:
            return False
        self.acted += 1
        return True


class FaultProxy:
    def __init__(self, port, upstream_port):
        self.port, self.upstream_port = port, upstream_port
        self.rules, self.log = [], []
        self.lock = threading.Lock()
        self.server = None

    def add(self, rule):
        with self.lock:
            self.rules.append(rule)
        return rule

    def clear(self):
        with self.lock:
            self.rules = []

    def seen(self, method=None, path=None):
        """The logged requests (method, path, outcome) matching."""
        pattern = re.compile(path) if path else None
        with self.lock:
            return [e for e in self.log if (not method or e[0] == method) and (not pattern or pattern.search(e[1]))]

    def wait_seen(self, method=None, path=None, timeout=60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.seen(method, path):
                return
            time.sleep(0.02)
        raise AssertionError("the proxy saw no %s %s in %d s: %s" % (method, path, timeout, self.log[-20:]))

    def wait_held(self, timeout=60):
        """Waits until a request is being held (a hold rule matched it)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                held = [e for e in self.log if e[2] == "held"]
            if held:
                return held[0]
            time.sleep(0.02)
        raise AssertionError("the proxy held no request in %d s: %s" % (timeout, self.log[-20:]))

    def decide(self, method, path):
        with self.lock:
            for rule in self.rules:
                if rule.applies(method, path):
                    return rule.action
        return None

    def record(self, method, path, outcome):
        with self.lock:
            self.log.append((method, path, outcome))

    def start(self):
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _any(self):
                method, path = self.command, self.path
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                action = proxy.decide(method, path)
                if action and action[0] == "status":
                    proxy.record(method, path, action[1])
                    payload = b"injected fault"
                    self.send_response(action[1])
                    self.send_header("Content-Length", str(len(payload)))
                    self.send_header("Content-Type", "text/plain")
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                if action and action[0] == "hold":
                    proxy.record(method, path, "held")
                    action[1].wait(300)
                if action and action[0] == "delay":
                    time.sleep(action[1])
                upstream = http.client.HTTPConnection("127.0.0.1", proxy.upstream_port, timeout=120)
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_HEADERS}
                    upstream.request(method, path, body=body, headers=headers)
                    resp = upstream.getresponse()
                    data = resp.read()
                except OSError:  # Azurite is down: the client sees the connection drop
                    proxy.record(method, path, "upstream-down")
                    self.close_connection = True
                    return
                finally:
                    upstream.close()
                proxy.record(method, path, resp.status)
                self.send_response(resp.status, resp.reason)
                for k, v in resp.getheaders():
                    # HEAD: the upstream's Content-Length is the blob's size; keep it.
                    if k.lower() not in HOP_HEADERS and (method == "HEAD" or k.lower() != "content-length"):
                        self.send_header(k, v)
                if method != "HEAD":
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if method != "HEAD":
                    try:
                        self.wfile.write(data)
                    except OSError:  # the client was killed meanwhile: what the test is about
                        self.close_connection = True

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = do_PATCH = _any  # noqa: N815 - http.server's naming

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self):
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
