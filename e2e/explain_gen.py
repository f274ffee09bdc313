"""Seeded generator of Gateway API route sets and HTTP requests for the
`switchyard explain` differential test (pure Python, stdlib only).

    manifests, requests = generate(seed, gw_port=8080, backend_ports=[9001, ...])

`manifests` maps a file name to multi-document YAML for `switchyard
standalone --config-dir` (or `switchyard explain -f DIR`): one GatewayClass,
one Gateway `default/explain` with several HTTP listeners on `gw_port` that
differ by hostname, Namespaces, Services with EndpointSlices (each answered by
one echo backend `backend-<i>` on `backend_ports[i]`), ReferenceGrants, and
one file per HTTPRoute. With `https_port` and `cert` (PEM certificate and key)
the Gateway also has HTTPS listeners on `https_port` with the same hostnames
(names suffixed `-s`), and a share of the requests are `https://` with an
`sni` that is sometimes another host than the Host (or "" for no SNI): 421
Misdirected Request when the Host belongs to another HTTPS listener than the
one the SNI chose. `requests` is a list of dicts in the explain request
format (`id`, `method`, `url`, `headers` as [[name, value], ...], sometimes
`gateway` and `address`, `sni` for https); the Host header to send is the
URL's authority (port included). Keys starting with `_` are notes for the test only
(`_target`: which route and rule the request was built for) and must be
removed before the requests go to explain (see `explain_input`).

The same seed always gives the same manifests and requests (given the same
ports), so a failing run can be replayed.
"""

import copy
import json
import random

GATEWAY = ("default", "explain")
NAMESPACES = ("default", "team-a", "team-b")

# (namespace, service) -> index of the echo backend that answers it.
SERVICES = {
    ("default", "svc-0"): 0,
    ("default", "svc-1"): 1,
    ("team-a", "svc-2"): 2,
    ("team-a", "svc-3"): 3,
    ("team-b", "svc-4"): 4,
    ("team-b", "svc-5"): 5,
}
BACKENDS = 1 + max(SERVICES.values())
# A Service without any EndpointSlice: resolved, 0 endpoints (Envoy: 503).
IDLE_SERVICES = {("default", "svc-idle"), ("team-b", "svc-idle")}

# Listeners of the Gateway, all HTTP on the same port:
# (name, hostname or None, allowedRoutes)
LISTENERS = (
    ("any", None, "{namespaces: {from: All}}"),
    ("wild", "*.example.com", "{namespaces: {from: All}}"),
    ("a", "a.example.com", "{namespaces: {from: Same}}"),
    ("wild-a", "*.a.example.com", "{namespaces: {from: Selector, selector: {matchLabels: {expose: \"yes\"}}}}"),
    ("org", "shop.example.org", "{namespaces: {from: All}}"),
)

ROUTE_HOSTNAMES = (
    "a.example.com", "x.a.example.com", "*.a.example.com", "*.example.com", "b.example.com",
    "shop.example.org", "api.test", "*.test", "other.example.net", "foo.example.com",
)

# Hosts requests are sent to (case and port variants are added at random).
REQUEST_HOSTS = (
    "a.example.com", "x.a.example.com", "y.x.a.example.com", "b.example.com", "foo.example.com",
    "deep.b.example.com", "example.com", "shop.example.org", "api.test", "zzz.test", "other.example.net",
    "unknown.invalid", "a.example.org", "127.0.0.1",
)

PREFIXES = ("/", "/api", "/api/", "/api/v1", "/api/v1/", "/shop", "/static", "/Api", "/api/v2")
EXACTS = ("/", "/api", "/api/", "/api/v1/users", "/login", "/shop/cart", "/static/app.css")

# RegularExpression path values: (pattern, samples that full-match, near misses).
PATH_REGEXES = (
    (r"/api/v[0-9]+/.*", ["/api/v1/x", "/api/v2/users/7", "/api/v10/"], ["/api/v/x", "/api/vx/y", "/api/v1"]),
    (r"/items/\d+", ["/items/1", "/items/42"], ["/items/", "/items/4a", "/items/42/"]),
    (r"/(shop|store)/[a-z]+", ["/shop/cart", "/store/abc"], ["/shop/Cart", "/shops/x", "/store/"]),
    (r"/api/.*", ["/api/", "/api/v1/x"], ["/api", "/apix"]),
    (r"/static/[a-z0-9_-]+\.(css|js)", ["/static/app.css", "/static/a-1.js"], ["/static/app.cssx", "/static/app.png"]),
    (r"/users/[0-9]{2,4}", ["/users/12", "/users/1234"], ["/users/1", "/users/12345"]),
    (r".*/edit", ["/doc/edit", "/api/v1/x/edit"], ["/edit/x", "/editor"]),
    (r"/[A-Z][a-z]*", ["/Api", "/Shop"], ["/api", "/API"]),
    (r"/api(/v1)?", ["/api", "/api/v1"], ["/api/v1/x", "/api/"]),
    (r"/[^/]+/cart", ["/shop/cart", "/x/cart"], ["/cart", "/a/b/cart"]),
)
# Patterns Envoy's RE2 refuses (or that exceed its program size): the
# validator must reject them, and explain must know the rule/route is gone.
BAD_PATH_REGEXES = (
    (r"/(?=api).*", ["/api"], ["/x"]),
    (r"/(a)\1", ["/aa"], ["/a"]),
    (r"/a**", ["/aaa"], ["/b"]),
    (r"/[a-z]{60}", ["/" + "a" * 60], ["/a"]),
)

HEADER_NAMES = ("x-tier", "X-Tier", "x-canary", "X-Version", "x-user")
HEADER_VALUES = {
    "x-tier": ("gold", "silver", "Gold"),
    "x-canary": ("true", "false"),
    "x-version": ("v1", "v2", "v12"),
    "x-user": ("alice", "bob"),
}
HEADER_REGEXES = {
    "x-tier": (("gold|silver", ["gold", "silver"], ["bronze", "golden"]), ("(?i)gold", ["GOLD", "gold"], ["gol"])),
    "x-canary": (("tr.*", ["true", "tr"], ["false", "TRUE"]),),
    "x-version": (("v[0-9]+", ["v1", "v12"], ["v", "V1", "v1a"]),),
    "x-user": (("[a-c].*", ["alice", "bob"], ["dave", "Alice"]),),
}
QUERY_NAMES = ("debug", "v", "lang", "a")
QUERY_VALUES = {"debug": ("1", "true"), "v": ("1", "2"), "lang": ("en", "de"), "a": ("1", "2")}
QUERY_REGEXES = {
    "debug": (("(true|1)", ["1", "true"], ["0", "True"]),),
    "v": (("[0-9]+", ["1", "22"], ["x", "1a"]),),
    "lang": (("e.*", ["en", "es"], ["de", "En"]),),
    "a": (("[0-9]", ["1", "2"], ["12", "b"]),),
}
METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH")
TIMESTAMPS = ("2024-01-01T00:00:00Z", "2024-01-01T00:00:00Z", "2024-03-01T12:00:00Z", None)


def _q(s):
    """A YAML (JSON) double-quoted scalar."""
    return json.dumps(s)


def _host_matches(pattern, host):
    """Gateway API hostname matching: `*.x` matches one or more labels before `.x`."""
    if pattern.startswith("*."):
        return host.endswith(pattern[1:]) and len(host) > len(pattern) - 1
    return host == pattern


def _listener_for(host):
    """The name of the HTTP listener the Host selects (exact, then longest
    wildcard, then the listener without hostname)."""
    host = host.lower()
    exact = [n for n, h, _ in LISTENERS if h == host]
    if exact:
        return exact[0]
    wild = sorted(((len(h), n) for n, h, _ in LISTENERS if h and h.startswith("*.") and _host_matches(h, host)),
                  reverse=True)
    if wild:
        return wild[0][1]
    return next((n for n, h, _ in LISTENERS if h is None), None)


def _listeners_admitting(rt):
    """Names of the HTTP listeners `rt` attaches to (namespace policy and
    sectionName; an HTTPS parentRef counts for the listener of the same name)."""
    names = set()
    for n, _, allowed in LISTENERS:
        if "Same" in allowed and rt.ns != GATEWAY[0]:
            continue
        if "Selector" in allowed and rt.ns != "team-a":  # the namespace labelled expose: "yes"
            continue
        if any(p is None or p in (n, n + "-s") for p in rt.parents):
            names.add(n)
    return names


class _Route:
    """A generated HTTPRoute, kept as data so requests can target its matches."""

    def __init__(self, ns, name):
        self.ns, self.name = ns, name
        self.hostnames = []
        self.parents = []  # sectionName or None
        self.timestamp = None
        self.rules = []  # list of dicts: matches, backends, filters, name

    def yaml(self):
        meta = f"{{name: {self.name}, namespace: {self.ns}"
        if self.timestamp:
            meta += f", creationTimestamp: {_q(self.timestamp)}"
        meta += "}"
        out = [f"apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {meta}\nspec:\n  parentRefs:\n"]
        for section in self.parents:
            ref = f"name: {GATEWAY[1]}, namespace: {GATEWAY[0]}"
            if section:
                ref += f", sectionName: {section}"
            out.append(f"  - {{{ref}}}\n")
        if self.hostnames:
            out.append(f"  hostnames: [{', '.join(_q(h) for h in self.hostnames)}]\n")
        out.append("  rules:\n")
        for rule in self.rules:
            first = True

            def line(text):
                nonlocal first
                out.append(("  - " if first else "    ") + text + "\n")
                first = False

            if rule.get("name"):
                line(f"name: {rule['name']}")
            if rule["matches"]:
                line("matches:")
                for m in rule["matches"]:
                    out.append("    - " + _match_yaml(m) + "\n")
            if rule["filters"]:
                line("filters:")
                for f in rule["filters"]:
                    out.append("    - " + f + "\n")
            if rule["backends"] is not None:
                line("backendRefs:" + ("" if rule["backends"] else " []"))
                for b in rule["backends"]:
                    out.append("    - " + b["yaml"] + "\n")
            if first:
                line("backendRefs: []")
        return "".join(out)


def _match_yaml(m):
    parts = []
    if m.get("path"):
        t, v = m["path"]
        parts.append(f"path: {{type: {t}, value: {_q(v)}}}")
    if m.get("method"):
        parts.append(f"method: {m['method']}")
    if m.get("headers"):
        hs = ", ".join(f"{{type: {t}, name: {n}, value: {_q(v)}}}" for t, n, v, _ in m["headers"])
        parts.append(f"headers: [{hs}]")
    if m.get("query"):
        qs = ", ".join(f"{{type: {t}, name: {n}, value: {_q(v)}}}" for t, n, v, _ in m["query"])
        parts.append(f"queryParams: [{qs}]")
    return "{" + ", ".join(parts) + "}"


# Server names for https requests whose SNI is not the Host ("" : no SNI).
SNI_NAMES = tuple(h for h in REQUEST_HOSTS if not h[0].isdigit()) + ("",)


class _Gen:
    def __init__(self, seed, gw_port, backend_ports, https_port=None, cert=None):
        self.rng = random.Random(seed)
        self.seed = seed
        self.gw_port = gw_port
        self.https_port = https_port
        self.cert = cert
        self.backend_ports = backend_ports
        self.grants = set()  # (from_ns, to_ns, service name or None for all)
        self.routes = []

    # ---- configuration -------------------------------------------------
    def listener_names(self):
        names = [n for n, _, _ in LISTENERS]
        return names + [n + "-s" for n in names] if self.https_port else names

    def base(self):
        listeners = "".join(
            f"  - {{name: {n}, port: {self.gw_port}, protocol: HTTP"
            + (f", hostname: {_q(h)}" if h else "") + f", allowedRoutes: {a}}}\n"
            for n, h, a in LISTENERS)
        if self.https_port:
            listeners += "".join(
                f"  - {{name: {n}-s, port: {self.https_port}, protocol: HTTPS"
                + (f", hostname: {_q(h)}" if h else "") + f", allowedRoutes: {a}, "
                "tls: {certificateRefs: [{name: explain-cert}]}}\n"
                for n, h, a in LISTENERS)
        docs = [
            "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {name: switchyard}\n"
            "spec: {controllerName: switchyard.dev/gateway-controller}\n",
            f"apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: {GATEWAY[1]}, namespace: {GATEWAY[0]}}}\n"
            f"spec:\n  gatewayClassName: switchyard\n  listeners:\n{listeners}",
        ]
        labels = {"default": "{}", "team-a": "{expose: \"yes\"}", "team-b": "{expose: \"no\"}"}
        if self.https_port:
            crt, key = (json.dumps(x) for x in self.cert)
            docs.append(f"apiVersion: v1\nkind: Secret\nmetadata: {{name: explain-cert, namespace: {GATEWAY[0]}}}\n"
                        f"type: kubernetes.io/tls\nstringData:\n  tls.crt: {crt}\n  tls.key: {key}\n")
        for ns in NAMESPACES:
            docs.append(f"apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}, labels: {labels[ns]}}}\n")
        for (ns, name), i in sorted(SERVICES.items()):
            docs.append(f"apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {ns}}}\n"
                        "spec: {ports: [{name: http, port: 80}]}\n")
            docs.append(f"apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {name}-1, namespace: {ns}, "
                        f"labels: {{kubernetes.io/service-name: {name}}}}}\naddressType: IPv4\n"
                        f"ports: [{{name: http, port: {self.backend_ports[i]}}}]\nendpoints: [{{addresses: [127.0.0.1]}}]\n")
        for ns, name in sorted(IDLE_SERVICES):
            docs.append(f"apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {ns}}}\n"
                        "spec: {ports: [{name: http, port: 80}]}\n")
        return "---\n".join(docs)

    def reference_grants(self):
        rng = self.rng
        docs = []
        candidates = [(f, t) for f in NAMESPACES for t in NAMESPACES if f != t]
        for i, (f, t) in enumerate(candidates):
            r = rng.random()
            if r < 0.35:
                continue
            name = None if r < 0.7 else rng.choice(sorted(n for (ns, n) in list(SERVICES) + sorted(IDLE_SERVICES) if ns == t))
            self.grants.add((f, t, name))
            to = "{group: \"\", kind: Service" + (f", name: {name}" if name else "") + "}"
            docs.append(f"apiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\n"
                        f"metadata: {{name: grant-{i}, namespace: {t}}}\n"
                        f"spec:\n  from: [{{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: {f}}}]\n"
                        f"  to: [{to}]\n")
        return "---\n".join(docs) if docs else ""

    def backend(self, ns):
        """One backendRef (as YAML) from a route in `ns`."""
        rng = self.rng
        r = rng.random()
        if r < 0.65:
            to_ns, name = ns, rng.choice([n for (s, n) in SERVICES if s == ns])
        elif r < 0.87:
            to_ns, name = rng.choice(sorted(k for k in SERVICES if k[0] != ns))
        elif r < 0.91:
            to_ns, name = rng.choice(sorted(IDLE_SERVICES))
        elif r < 0.95:
            to_ns, name = ns, "svc-missing"
        elif r < 0.98:
            to_ns, name = ns, rng.choice([n for (s, n) in SERVICES if s == ns] or ["svc-0"])
            port = 81  # a port the Service does not have
            return self._ref(ns, to_ns, name, port)
        else:
            return {"yaml": f"{{group: example.com, kind: Widget, name: w, port: 80{self._weight()}}}"}
        return self._ref(ns, to_ns, name, 80)

    def _weight(self):
        r = self.rng.random()
        if r < 0.5:
            return ""
        return f", weight: {self.rng.choice([0, 1, 1, 10, 50, 100])}"

    def _ref(self, ns, to_ns, name, port):
        ref = f"name: {name}, port: {port}"
        if to_ns != ns:
            ref += f", namespace: {to_ns}"
        return {"yaml": "{" + ref + self._weight() + "}"}

    def path_match(self):
        rng = self.rng
        r = rng.random()
        if r < 0.45:
            return ("PathPrefix", rng.choice(PREFIXES))
        if r < 0.7:
            return ("Exact", rng.choice(EXACTS))
        if r < 0.96:
            return ("RegularExpression", rng.choice(PATH_REGEXES)[0])
        return ("RegularExpression", rng.choice(BAD_PATH_REGEXES)[0])

    def match(self):
        rng = self.rng
        m = {}
        if rng.random() < 0.9:
            m["path"] = self.path_match()
        if rng.random() < 0.2:
            m["method"] = rng.choice(METHODS)
        if rng.random() < 0.3:
            hs = []
            for name in rng.sample(HEADER_NAMES, rng.choice([1, 1, 2])):
                key = name.lower()
                if any(h[1].lower() == key for h in hs):
                    continue
                if rng.random() < 0.7:
                    v = rng.choice(HEADER_VALUES[key])
                    hs.append(("Exact", name, v, (v,)))
                else:
                    pat, ok, _ = rng.choice(HEADER_REGEXES[key])
                    hs.append(("RegularExpression", name, pat, tuple(ok)))
            m["headers"] = hs
        if rng.random() < 0.25:
            qs = []
            for name in rng.sample(QUERY_NAMES, rng.choice([1, 1, 2])):
                if rng.random() < 0.7:
                    v = rng.choice(QUERY_VALUES[name])
                    qs.append(("Exact", name, v, (v,)))
                else:
                    pat, ok, _ = rng.choice(QUERY_REGEXES[name])
                    qs.append(("RegularExpression", name, pat, tuple(ok)))
            m["query"] = qs
        return m

    def filters(self, rule):
        rng = self.rng
        r = rng.random()
        if r < 0.08:
            parts = [f"statusCode: {rng.choice([301, 302])}"]
            if rng.random() < 0.5:
                parts.append(f"hostname: {rng.choice(['moved.example.com', 'b.example.com'])}")
            if rng.random() < 0.3:
                parts.append("scheme: https")
            if rng.random() < 0.4:
                prefix_ok = all((m.get("path") or ("PathPrefix", "/"))[0] == "PathPrefix" for m in rule["matches"]) \
                    and rule["matches"]
                if prefix_ok and rng.random() < 0.5:
                    parts.append("path: {type: ReplacePrefixMatch, replacePrefixMatch: /moved}")
                else:
                    parts.append("path: {type: ReplaceFullPath, replaceFullPath: /elsewhere}")
            rule["backends"] = None if rng.random() < 0.8 else rule["backends"]
            return ["{type: RequestRedirect, requestRedirect: {" + ", ".join(parts) + "}}"]
        if r < 0.16:
            parts = []
            if rng.random() < 0.5:
                parts.append("hostname: rewritten.internal")
            prefix_ok = all((m.get("path") or ("PathPrefix", "/"))[0] == "PathPrefix" for m in rule["matches"]) \
                and rule["matches"]
            if prefix_ok and rng.random() < 0.6:
                parts.append(f"path: {{type: ReplacePrefixMatch, replacePrefixMatch: {rng.choice(['/', '/v2', '/new/'])}}}")
            elif rng.random() < 0.5 or not parts:
                parts.append("path: {type: ReplaceFullPath, replaceFullPath: /rewritten}")
            return ["{type: URLRewrite, urlRewrite: {" + ", ".join(parts) + "}}"]
        if r < 0.22:
            return ["{type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: x-tier, value: rewritten}]}}"]
        return []

    def route(self, i):
        rng = self.rng
        ns = rng.choice(NAMESPACES)
        rt = _Route(ns, f"r{i:02d}-{rng.choice(['web', 'api', 'shop', 'edge', 'app'])}")
        r = rng.random()
        if r < 0.35:
            rt.hostnames = []
        elif r < 0.85:
            rt.hostnames = [rng.choice(ROUTE_HOSTNAMES)]
        else:
            rt.hostnames = sorted(set(rng.sample(ROUTE_HOSTNAMES, rng.choice([2, 3]))))
        r = rng.random()
        if r < 0.75:
            rt.parents = [None]
        elif r < 0.93:
            rt.parents = [rng.choice(self.listener_names())]
        else:
            rt.parents = sorted(rng.sample(self.listener_names(), 2))
        rt.timestamp = rng.choice(TIMESTAMPS)
        twin = rng.choice(self.routes) if self.routes and rng.random() < 0.25 else None
        if twin:
            # Same hostnames and a rule with the same matches as an earlier
            # route: precedence between routes (creationTimestamp, then
            # namespace/name) decides.
            rt.hostnames = list(twin.hostnames)
            rt.timestamp = rng.choice([twin.timestamp, rng.choice(TIMESTAMPS)])
        for j in range(rng.choice([1, 1, 2, 2, 3, 4])):
            nm = rng.choice([1, 1, 1, 2, 3]) if rng.random() < 0.95 else 0
            rule = {"matches": [self.match() for _ in range(nm)],
                    "backends": [self.backend(ns) for _ in range(rng.choice([1, 1, 1, 2, 3]))],
                    "name": f"rule-{j}" if rng.random() < 0.3 else None}
            if rng.random() < 0.03:
                rule["backends"] = []  # no backendRefs at all
            if twin and j == 0:
                rule["matches"] = copy.deepcopy(rng.choice(twin.rules)["matches"])
            rule["filters"] = self.filters(rule)
            rt.rules.append(rule)
        return rt

    # ---- requests ------------------------------------------------------
    def host_variant(self, host):
        rng = self.rng
        r = rng.random()
        if r < 0.15:
            host = "".join(c.upper() if rng.random() < 0.5 else c for c in host)
        return host

    def host_candidate(self, rt):
        """A host that the route's hostnames accept (or any request host)."""
        rng = self.rng
        if not rt.hostnames or rng.random() < 0.1:
            return rng.choice(REQUEST_HOSTS)
        h = rng.choice(rt.hostnames)
        if h.startswith("*."):
            return rng.choice(["x", "foo", "x.y", "b"]) + h[1:]
        return h

    def host_for(self, rt):
        """A host for a request aimed at `rt`: mostly one whose listener (the
        most specific for the Host) admits the route, so that a seed whose
        routes mostly sit in a namespace few listeners admit still reaches
        its rules; the others (a fifth) stay unrestricted near misses. Only
        the aim depends on this model, never the verdict: explain and Envoy
        decide what each request gets."""
        candidates = [self.host_candidate(rt) for _ in range(8)]
        if self.rng.random() < 0.8:
            for host in candidates:
                if _listener_for(host) in _listeners_admitting(rt):
                    return host
        return candidates[0]

    def path_sample(self, m, hit=True):
        rng = self.rng
        if not m.get("path"):
            return rng.choice(["/", "/api", "/x/y", "/shop/cart"])
        t, v = m["path"]
        if t == "PathPrefix":
            if hit:
                base = v.rstrip("/") or ""
                return rng.choice([v, v, base + "/x", base + "/x/y", (base or "") + "/"]) or "/"
            miss = rng.choice([v.rstrip("/") + "x", v.upper(), v.rstrip("/") or "/", v + "x", "/other"])
            return miss if miss.startswith("/") else "/" + miss
        if t == "Exact":
            if hit:
                return v
            return rng.choice([v + "/", v + "x", v.rstrip("/") or "/", v.upper(), v + "/sub"])
        for pat, ok, miss in PATH_REGEXES + BAD_PATH_REGEXES:
            if pat == v:
                return rng.choice(ok if hit else miss)
        return "/"

    def normalize_variant(self, path):
        """A small share of paths Envoy normalizes (merge_slashes, dot segments)."""
        rng = self.rng
        r = rng.random()
        if r < 0.03:
            return "/" + path
        if r < 0.045 and path.count("/") >= 1:
            return path.replace("/", "//", 1)
        if r < 0.06:
            return "/x/.." + path
        if r < 0.07:
            return "/." + path
        if r < 0.08 and any(c.isalpha() for c in path):
            # An unreserved character percent-encoded (RFC 3986 normalization decodes it).
            i = next(i for i, c in enumerate(path) if c.isalpha())
            return path[:i] + f"%{ord(path[i]):02X}" + path[i + 1:]
        return path

    def request_for(self, rid, rt, rule, m):
        """A request built to satisfy match `m` of `rule` of `rt`, then mutated
        (sometimes) into a near miss."""
        rng = self.rng
        host = self.host_for(rt)
        method = m.get("method") or rng.choice(["GET"] * 6 + list(METHODS))
        path = self.path_sample(m, hit=True)
        headers = []
        for t, n, v, ok in m.get("headers") or []:
            name = rng.choice([n, n.lower(), n.upper()])
            headers.append([name, rng.choice(ok)])
        query = []
        for t, n, v, ok in m.get("query") or []:
            query.append((n, rng.choice(ok)))
        # Near misses: break one aspect.
        r = rng.random()
        if r < 0.15:
            path = self.path_sample(m, hit=False)
        elif r < 0.22 and m.get("method"):
            method = rng.choice([x for x in METHODS if x != m["method"]])
        elif r < 0.32 and headers:
            k = rng.randrange(len(headers))
            t, n, v, ok = m["headers"][k]
            key = n.lower()
            bad = [x for x in HEADER_VALUES[key] if x not in ok]
            if t == "RegularExpression":
                bad = [x for pat, _, miss in HEADER_REGEXES[key] if pat == v for x in miss] or bad
            if rng.random() < 0.3 or not bad:
                headers.pop(k)
            else:
                headers[k][1] = rng.choice(bad)
        elif r < 0.4 and query:
            k = rng.randrange(len(query))
            t, n, v, ok = m["query"][k]
            r2 = rng.random()
            if r2 < 0.4:
                # Repeated key: Envoy matches the first value only.
                other = rng.choice(["0", "zz", ok[0]])
                query.insert(k + 1, (n, ok[0]))
                query[k] = (n, other)
            elif r2 < 0.55:
                query[k] = (n.upper(), query[k][1])  # names are case-sensitive
            elif r2 < 0.7:
                # Percent-encoded value (Envoy decodes query values before matching).
                value = query[k][1]
                query[k] = (n, "".join(f"%{ord(c):02X}" if i == 0 else c for i, c in enumerate(value)))
            else:
                query.pop(k)
        elif r < 0.45:
            host = rng.choice(REQUEST_HOSTS)
        # Unrelated extras.
        if rng.random() < 0.3:
            n = rng.choice(HEADER_NAMES)
            headers.append([rng.choice([n, n.upper()]), rng.choice(HEADER_VALUES[n.lower()])])
        if rng.random() < 0.03 and headers:
            # The same header twice (Envoy joins the values with ",").
            headers.append([headers[0][0], headers[0][1]])
        if rng.random() < 0.2:
            n = rng.choice(QUERY_NAMES)
            query.append((n, rng.choice(QUERY_VALUES[n])))
        if rng.random() < 0.05:
            query.append((rng.choice(QUERY_NAMES), None))  # a key without a value
        if rng.random() < 0.3:
            rng.shuffle(headers)
        return self._request(rid, method, self.host_variant(host), self.normalize_variant(path), query, headers,
                             target=f"{rt.ns}/{rt.name} rule {rt.rules.index(rule)}")

    def random_request(self, rid):
        rng = self.rng
        host = self.host_variant(rng.choice(REQUEST_HOSTS))
        path = rng.choice(list(PREFIXES) + list(EXACTS) + [s for _, ok, miss in PATH_REGEXES for s in ok + miss]
                          + ["/x", "/api/v1/users/1", "/API", "/shop/cart/", "/static/app.css"])
        headers = []
        for n in rng.sample(HEADER_NAMES, rng.choice([0, 0, 1, 2])):
            headers.append([n, rng.choice(HEADER_VALUES[n.lower()])])
        query = [(n, rng.choice(QUERY_VALUES[n])) for n in rng.sample(QUERY_NAMES, rng.choice([0, 0, 1, 2]))]
        method = rng.choice(["GET"] * 6 + list(METHODS))
        return self._request(rid, method, host, self.normalize_variant(path), query, headers, target=None)

    def _request(self, rid, method, host, path, query, headers, target):
        rng = self.rng
        qs = "&".join(n if v is None else f"{n}={v}" for n, v in query)
        https = self.https_port and rng.random() < 0.4
        url = f"{'https' if https else 'http'}://{host}:{self.https_port if https else self.gw_port}{path}" \
            + (f"?{qs}" if qs else "")
        req = {"id": rid, "method": method, "url": url, "headers": headers}
        if https:
            # The server name: the Host's (as a browser sends it) or another
            # one (a reused connection, a misdirected request).
            same = host.lower() if not host[0].isdigit() else ""
            req["sni"] = same if rng.random() < 0.4 else rng.choice(SNI_NAMES)
        # The Host header sent is the URL's authority, port included (as curl
        # sends it); optional fields of the request format, now and then.
        if rng.random() < 0.1:
            req["gateway"] = "/".join(GATEWAY)
        if rng.random() < 0.1:
            req["address"] = "127.0.0.1"
        req["_target"] = target
        return req


def generate(seed, gw_port=8080, backend_ports=None, routes=None, requests=1200, https_port=None, cert=None):
    """(manifests {file name: YAML text}, requests [dict]) for `seed`;
    `https_port` and `cert` ((certificate PEM, key PEM)) add HTTPS listeners."""
    backend_ports = backend_ports or [9001 + i for i in range(BACKENDS)]
    assert len(backend_ports) >= BACKENDS, f"need {BACKENDS} backend ports"
    assert (https_port is None) == (cert is None), "https_port and cert go together"
    g = _Gen(seed, gw_port, backend_ports, https_port, cert)
    manifests = {"00-base.yaml": g.base()}
    grants = g.reference_grants()
    if grants:
        manifests["01-grants.yaml"] = grants
    n = routes if routes is not None else g.rng.randint(12, 30)
    for i in range(n):
        rt = g.route(i)
        g.routes.append(rt)
        manifests[f"route-{rt.ns}-{rt.name}.yaml"] = rt.yaml()
    # A sentinel the test waits for before sending (the listener without a
    # hostname accepts any host; a unique path keeps it out of the others' way).
    manifests["zz-sentinel.yaml"] = (
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n"
        f"metadata: {{name: sentinel, namespace: default}}\nspec:\n"
        f"  parentRefs: [{{name: {GATEWAY[1]}, namespace: {GATEWAY[0]}, sectionName: any}}]\n"
        "  hostnames: [sentinel.explain.test]\n"
        "  rules:\n  - backendRefs: [{name: svc-0, port: 80}]\n")
    reqs = []
    targets = [(rt, rule, m) for rt in g.routes for rule in rt.rules for m in (rule["matches"] or [{}])]
    for rid in range(requests):
        if targets and g.rng.random() < 0.8:
            reqs.append(g.request_for(rid, *g.rng.choice(targets)))
        else:
            reqs.append(g.random_request(rid))
    return manifests, reqs


def explain_input(req):
    """The request as the explain CLI reads it (hints removed)."""
    return {k: v for k, v in req.items() if not k.startswith("_")}


def echo_name(namespace, service):
    """The echo backend that answers a Service (None: no endpoints)."""
    i = SERVICES.get((namespace, service))
    return None if i is None else f"backend-{i}"


def route_files(manifests, namespace, name):
    """The manifest file defining an HTTPRoute (None if not generated here)."""
    f = f"route-{namespace}-{name}.yaml"
    if f in manifests:
        return f
    return "zz-sentinel.yaml" if (namespace, name) == ("default", "sentinel") else None


if __name__ == "__main__":
    import sys

    seed = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    m, r = generate(seed)
    for f, text in m.items():
        print(f"# ---- {f}\n{text}")
    for q in r[:20]:
        print(json.dumps(q))
