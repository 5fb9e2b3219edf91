"""A local HTTP test double of Azure Resource Manager's storage management-policy endpoint.

There is no emulator for Azure Resource Manager, so lifecycle_policy (mode management_policy)
is tested against this: an http.server on 127.0.0.1 (a random port unless given) that serves

    GET|PUT|DELETE /subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Storage/
                   storageAccounts/{account}/managementPolicies/default?api-version=...

like Azure does (ARM error bodies, 404 ManagementPolicyNotFound), records every request, and
checks what it receives: the bearer token, the api-version, and every PUT body against the
management policy schema (rule names, types, filters, actions, day conditions and their order).
A body that breaks a rule is answered 400 and recorded in `rejected`; the tests assert it stays
empty. It checks what Azure documents, not everything Azure checks.
"""

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

PATH_RE = re.compile(
    r"^/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)/providers/Microsoft\.Storage/"
    r"storageAccounts/(?P<account>[a-z0-9]{3,24})/managementPolicies/default$"
)
BLOB_TYPES = {"blockBlob", "appendBlob"}
BASE_BLOB_ACTIONS = {"tierToCool", "tierToCold", "tierToHot", "tierToArchive", "delete", "enableAutoTierToHotFromCool"}
CONDITIONS = {
    "daysAfterModificationGreaterThan",
    "daysAfterLastAccessTimeGreaterThan",
    "daysAfterLastTierChangeGreaterThan",
    "daysAfterCreationGreaterThan",
}
ORDER = ["tierToCool", "tierToCold", "tierToArchive", "delete"]


def policy_problems(body):
    """What is wrong with a PUT body, as a list of strings (empty: acceptable)."""
    problems = []
    if not isinstance(body, dict) or set(body) - {"properties"}:
        return ["the body must be {'properties': {'policy': ...}} (read-only fields are not sent)"]
    policy = (body.get("properties") or {}).get("policy")
    rules = policy.get("rules") if isinstance(policy, dict) else None
    if not isinstance(rules, list) or not 1 <= len(rules) <= 100:
        return ["properties.policy.rules must be a list of 1 to 100 rules"]
    names = [r.get("name") for r in rules if isinstance(r, dict)]
    if len(set(names)) != len(names):
        problems.append("rule names must be unique")
    for rule in rules:
        name = rule.get("name")
        where = "rule %r" % (name,)
        if set(rule) - {"name", "enabled", "type", "definition"}:
            problems.append(
                "%s has unknown keys %s" % (where, sorted(set(rule) - {"name", "enabled", "type", "definition"}))
            )
        if not isinstance(name, str) or not re.match(r"^[A-Za-z0-9]{1,256}$", name):
            problems.append("%s: a name is 1-256 letters and digits" % where)
        if not isinstance(rule.get("enabled", True), bool) or rule.get("type") != "Lifecycle":
            problems.append("%s: enabled must be a bool and type 'Lifecycle'" % where)
        definition = rule.get("definition") or {}
        filters = definition.get("filters") or {}
        blob_types = filters.get("blobTypes")
        if not isinstance(blob_types, list) or not blob_types or set(blob_types) - BLOB_TYPES:
            problems.append("%s: filters.blobTypes must list blockBlob and/or appendBlob" % where)
        prefixes = filters.get("prefixMatch", [])
        if not isinstance(prefixes, list) or len(prefixes) > 10:
            problems.append("%s: filters.prefixMatch is a list of at most 10 prefixes" % where)
        for prefix in prefixes if isinstance(prefixes, list) else []:
            if not isinstance(prefix, str) or not re.match(r"^[a-z0-9](?!.*--)[a-z0-9-]{1,61}[a-z0-9](/|$)", prefix):
                problems.append("%s: prefix %r must start with a container name" % (where, prefix))
        base_blob = (definition.get("actions") or {}).get("baseBlob")
        if not isinstance(base_blob, dict) or not base_blob:
            problems.append("%s: actions.baseBlob must hold at least one action" % where)
            continue
        if set(base_blob) - BASE_BLOB_ACTIONS:
            problems.append("%s: unknown actions %s" % (where, sorted(set(base_blob) - BASE_BLOB_ACTIONS)))
        for action, condition in base_blob.items():
            if action == "enableAutoTierToHotFromCool":
                continue
            if not isinstance(condition, dict) or not condition or set(condition) - CONDITIONS:
                problems.append("%s: %s needs day conditions among %s" % (where, action, sorted(CONDITIONS)))
                continue
            for key, value in condition.items():
                if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 99999:
                    problems.append("%s: %s.%s must be 0..99999" % (where, action, key))
            if "daysAfterLastTierChangeGreaterThan" in condition and (
                action != "tierToArchive" or "daysAfterModificationGreaterThan" not in condition
            ):
                problems.append(
                    "%s: daysAfterLastTierChangeGreaterThan goes with tierToArchive and "
                    "daysAfterModificationGreaterThan only" % where
                )
        days = [
            base_blob[a]["daysAfterModificationGreaterThan"]
            for a in ORDER
            if isinstance(base_blob.get(a), dict) and "daysAfterModificationGreaterThan" in base_blob[a]
        ]
        if days != sorted(set(days)):
            problems.append("%s: days must grow from tierToCool to tierToCold, tierToArchive and delete" % where)
    return problems


class ArmDouble:
    def __init__(
        self,
        token="arm-double-token",  # noqa: S107 - the double's own test token
        subscription="sub-0001",
        resource_group="rg-backups",
        account="insabackups",
        port=0,
        on_request=None,
    ):
        self.token = token
        self.port = port  # 0: a free one
        self.on_request = on_request  # called with the double after every request (molecule/production)
        self.expected = {"sub": subscription, "rg": resource_group, "account": account}
        self.policy = None  # the stored body: {"properties": {"policy": {"rules": [...]}}}
        self.requests = []
        self.rejected = []
        self._server = None
        self._thread = None

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self._server.server_address[1]

    def methods(self):
        return [r["method"] for r in self.requests]

    def start(self):
        double = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _reply(self, status, body=None):
                data = json.dumps(body).encode() if body is not None else b""
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("x-ms-request-id", "arm-double")
                self.end_headers()
                self.wfile.write(data)

            def _error(self, status, code, message):
                double.rejected.append({"method": self.command, "status": status, "code": code, "message": message})
                self._reply(status, {"error": {"code": code, "message": message}})

            def _handle(self):
                try:
                    return self._answer()
                finally:
                    if double.on_request is not None:
                        double.on_request(double)

            def _answer(self):
                url = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                body = json.loads(raw) if raw else None
                double.requests.append(
                    {"method": self.command, "path": url.path, "query": parse_qs(url.query), "body": body}
                )
                if self.headers.get("Authorization") != "Bearer " + double.token:
                    return self._error(401, "InvalidAuthenticationToken", "The access token is invalid.")
                if not parse_qs(url.query).get("api-version"):
                    return self._error(
                        400, "MissingApiVersionParameter", "The api-version query parameter is required."
                    )
                match = PATH_RE.match(url.path)
                if not match:
                    return self._error(404, "InvalidResourceType", "No route for %s" % url.path)
                if match.groupdict() != double.expected:
                    return self._error(
                        404, "ResourceNotFound", "The storage account %s was not found." % match["account"]
                    )
                resource = {
                    "id": url.path,
                    "name": "DefaultManagementPolicy",
                    "type": "Microsoft.Storage/storageAccounts/managementPolicies",
                }
                if self.command == "GET":
                    if double.policy is None:
                        return self._reply(
                            404,
                            {
                                "error": {
                                    "code": "ManagementPolicyNotFound",
                                    "message": "No ManagementPolicy found for account %s" % match["account"],
                                }
                            },
                        )
                    return self._reply(200, dict(resource, **double.policy))
                if self.command == "PUT":
                    problems = policy_problems(body)
                    if problems:
                        return self._error(400, "InvalidManagementPolicyRule", "; ".join(problems))
                    double.policy = {
                        "properties": {
                            "policy": body["properties"]["policy"],
                            "lastModifiedTime": "2026-11-27T02:00:00Z",
                        }
                    }
                    return self._reply(200, dict(resource, **double.policy))
                if self.command == "DELETE":
                    existed = double.policy is not None
                    double.policy = None
                    return self._reply(200 if existed else 204)
                return self._error(405, "MethodNotAllowed", self.command)

            do_GET = do_PUT = do_DELETE = do_POST = _handle

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self):
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def rules(self):
        return (self.policy or {}).get("properties", {}).get("policy", {}).get("rules")
