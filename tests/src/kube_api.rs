//! A request-checking stand-in for the Kubernetes API server, for the paths the agent's
//! `[cluster]` writer uses and nothing else: no API server can be installed on these
//! machines, so the tests check the exact requests instead (verbs, paths, content types,
//! the bearer token, the resourceVersion precondition) and answer as the API server does
//! (strategic merge of `status.conditions` by `type`, 409 on a stale resourceVersion). It
//! is not a cluster: docs/load-balancing.md says what was and was not run.
use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader, Read, Write},
    net::{TcpListener, TcpStream},
    sync::{Arc, Mutex},
};

use serde_json::{json, Value};

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// The path without the query.
    pub path: String,
    pub query: String,
    pub content_type: Option<String>,
    pub authorization: Option<String>,
    pub body: Option<Value>,
    /// The status the server answered.
    pub status: u16,
}

impl Request {
    /// The RBAC (verb, resource) this request needs.
    pub fn rbac(&self) -> (String, String) {
        let verb = match (self.method.as_str(), self.path.as_str()) {
            ("GET", "/api/v1/nodes") => "list",
            ("GET", _) => "get",
            ("PATCH", _) => "patch",
            ("POST", _) => "create",
            (m, _) => m,
        };
        let pods = self.path.contains("/pods/");
        let resource = match (pods, self.path.ends_with("/status")) {
            _ if self.path.ends_with("/eviction") => "pods/eviction",
            (true, true) => "pods/status",
            (true, false) => "pods",
            (false, true) => "nodes/status",
            (false, false) => "nodes",
        };
        (verb.to_string(), resource.to_string())
    }
}

#[derive(Default)]
struct State {
    nodes: BTreeMap<String, Value>,
    /// "namespace/name" -> pod.
    pods: BTreeMap<String, Value>,
    /// Evictions to refuse (429, as a PodDisruptionBudget does) before granting one.
    refuse_evictions: usize,
    version: u64,
    requests: Vec<Request>,
    /// Taints another writer adds to a node just before each of the next taint patches,
    /// making the patch's resourceVersion stale.
    interfere: Vec<Value>,
}

pub struct KubeApi {
    pub port: u16,
    pub token: String,
    state: Arc<Mutex<State>>,
}

impl KubeApi {
    /// Serves `nodes` (name, taints) on a free loopback port.
    pub fn start(nodes: &[(&str, Value)]) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let token = crate::unique("token");
        let mut state = State::default();
        for (name, taints) in nodes {
            state.version += 1;
            state.nodes.insert(
                name.to_string(),
                json!({
                    "apiVersion": "v1",
                    "kind": "Node",
                    "metadata": {"name": name, "resourceVersion": state.version.to_string()},
                    "spec": {"taints": taints},
                    "status": {"conditions": [
                        {"type": "Ready", "status": "True", "reason": "KubeletReady"},
                        {"type": "KernelDeadlock", "status": "False", "reason": "KernelHasNoDeadlock"},
                    ]},
                }),
            );
        }
        let state = Arc::new(Mutex::new(state));
        let shared = state.clone();
        let expected = format!("Bearer {token}");
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let state = shared.clone();
                let expected = expected.clone();
                std::thread::spawn(move || serve(conn, &state, &expected));
            }
        });
        Self { port, token, state }
    }

    /// A kubeconfig that points at this server with its bearer token.
    pub fn kubeconfig(&self) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: http://127.0.0.1:{}\ncontexts:\n- name: test\n  context:\n    cluster: test\n    user: test\ncurrent-context: test\nusers:\n- name: test\n  user:\n    token: {}\n",
            self.port, self.token
        )
    }

    /// A pod the server knows, with the kubelet's own Ready condition.
    pub fn add_pod(&self, namespace: &str, name: &str) {
        let mut s = self.state.lock().unwrap();
        s.version += 1;
        let pod = json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "resourceVersion": s.version.to_string()},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]},
        });
        s.pods.insert(format!("{namespace}/{name}"), pod);
    }

    /// The next `n` evictions are refused as a PodDisruptionBudget refuses them (429).
    pub fn refuse_evictions(&self, n: usize) {
        self.state.lock().unwrap().refuse_evictions = n;
    }

    /// Whether the pod is still there (not evicted).
    pub fn has_pod(&self, namespace: &str, name: &str) -> bool {
        self.state
            .lock()
            .unwrap()
            .pods
            .contains_key(&format!("{namespace}/{name}"))
    }

    pub fn pod(&self, namespace: &str, name: &str) -> Value {
        self.state.lock().unwrap().pods[&format!("{namespace}/{name}")].clone()
    }

    pub fn requests(&self) -> Vec<Request> {
        self.state.lock().unwrap().requests.clone()
    }

    pub fn node(&self, name: &str) -> Value {
        self.state.lock().unwrap().nodes[name].clone()
    }

    /// Before the next taint patch, another writer adds `taint` to the node.
    pub fn interfere_once(&self, taint: Value) {
        self.state.lock().unwrap().interfere.push(taint);
    }
}

fn serve(conn: TcpStream, state: &Mutex<State>, token: &str) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut out = conn;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
            return;
        };
        let (method, target) = (method.to_string(), target.to_string());
        let mut headers = BTreeMap::new();
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
            }
        }
        assert!(
            !headers.contains_key("transfer-encoding"),
            "chunked request bodies are not expected: {headers:?}"
        );
        let len: usize = headers
            .get("content-length")
            .map_or(0, |l| l.parse().unwrap());
        let mut body = vec![0; len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let (path, query) = target.split_once('?').unwrap_or((&target, ""));
        let mut request = Request {
            method,
            path: path.to_string(),
            query: query.to_string(),
            content_type: headers.get("content-type").cloned(),
            authorization: headers.get("authorization").cloned(),
            body: (!body.is_empty()).then(|| serde_json::from_slice(&body).unwrap_or(Value::Null)),
            status: 0,
        };
        let (status, reply) = if request.authorization.as_deref() != Some(token) {
            (
                401,
                failure(401, "Unauthorized", "no or a wrong bearer token"),
            )
        } else {
            answer(&mut state.lock().unwrap(), &request)
        };
        request.status = status;
        state.lock().unwrap().requests.push(request);
        let reply = reply.to_string();
        let head = format!(
            "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            reply.len()
        );
        if out.write_all(head.as_bytes()).is_err() || out.write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}

fn failure(code: u16, reason: &str, message: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Status", "status": "Failure", "code": code, "reason": reason, "message": message})
}

fn answer(s: &mut State, r: &Request) -> (u16, Value) {
    if let Some(rest) = r.path.strip_prefix("/api/v1/namespaces/") {
        return answer_pod(s, r, rest);
    }
    let node_name = r
        .path
        .strip_prefix("/api/v1/nodes/")
        .map(|n| n.trim_end_matches("/status"));
    match (r.method.as_str(), r.path.as_str(), node_name) {
        ("GET", "/api/v1/nodes", _) => (
            200,
            json!({"apiVersion": "v1", "kind": "NodeList", "metadata": {"resourceVersion": s.version.to_string()}, "items": s.nodes.values().collect::<Vec<_>>()}),
        ),
        ("GET", _, Some(name)) => match s.nodes.get(name) {
            Some(n) => (200, n.clone()),
            None => (404, failure(404, "NotFound", "no such node")),
        },
        ("PATCH", path, Some(name)) if path.ends_with("/status") => {
            s.version += 1;
            merge_conditions(s.nodes.get_mut(name), r, s.version)
        }
        ("PATCH", _, Some(name)) => {
            if r.content_type.as_deref() != Some("application/merge-patch+json") {
                return (
                    415,
                    failure(415, "UnsupportedMediaType", "taints by JSON merge patch"),
                );
            }
            let body = r.body.clone().unwrap_or(Value::Null);
            if !s.interfere.is_empty() {
                let other = s.interfere.remove(0);
                s.version += 1;
                let node = s.nodes.get_mut(name).unwrap();
                node["spec"]["taints"].as_array_mut().unwrap().push(other);
                node["metadata"]["resourceVersion"] = json!(s.version.to_string());
            }
            let Some(node) = s.nodes.get_mut(name) else {
                return (404, failure(404, "NotFound", "no such node"));
            };
            if body["metadata"]["resourceVersion"] != node["metadata"]["resourceVersion"] {
                return (409, failure(409, "Conflict", "the object has been modified; please apply your changes to the latest version and try again"));
            }
            let Some(taints) = body["spec"]["taints"].as_array() else {
                return (422, failure(422, "Invalid", "expected spec.taints"));
            };
            node["spec"]["taints"] = json!(taints);
            s.version += 1;
            node["metadata"]["resourceVersion"] = json!(s.version.to_string());
            (200, node.clone())
        }
        _ => (
            404,
            failure(404, "NotFound", "not a path the agent should use"),
        ),
    }
}

/// `PATCH /api/v1/namespaces/<ns>/pods/<name>/status`, conditions merged by type; nothing
/// else under a namespace is a path the agent should use.
fn answer_pod(s: &mut State, r: &Request, rest: &str) -> (u16, Value) {
    let parts: Vec<&str> = rest.split('/').collect();
    if let [namespace, "pods", name, "eviction"] = parts.as_slice() {
        return evict(s, r, namespace, name);
    }
    let [namespace, "pods", name, "status"] = parts.as_slice() else {
        return (
            404,
            failure(404, "NotFound", "not a path the agent should use"),
        );
    };
    if r.method != "PATCH" {
        return (
            405,
            failure(405, "MethodNotAllowed", "only PATCH of pods/status"),
        );
    }
    s.version += 1;
    merge_conditions(s.pods.get_mut(&format!("{namespace}/{name}")), r, s.version)
}

/// A strategic-merge patch of `status.conditions` into `object`: merged by `type`, as the
/// API server does for nodes and pods (other writers' conditions stay).
fn merge_conditions(object: Option<&mut Value>, r: &Request, version: u64) -> (u16, Value) {
    if r.content_type.as_deref() != Some("application/strategic-merge-patch+json") {
        let why = "conditions are a strategic merge";
        return (415, failure(415, "UnsupportedMediaType", why));
    }
    let Some(conditions) = r
        .body
        .as_ref()
        .and_then(|b| b["status"]["conditions"].as_array())
    else {
        return (422, failure(422, "Invalid", "expected status.conditions"));
    };
    let Some(object) = object else {
        return (404, failure(404, "NotFound", "no such object"));
    };
    let existing = object["status"]["conditions"].as_array_mut().unwrap();
    for c in conditions {
        match existing.iter_mut().find(|e| e["type"] == c["type"]) {
            Some(e) => *e = c.clone(),
            None => existing.push(c.clone()),
        }
    }
    object["metadata"]["resourceVersion"] = json!(version.to_string());
    (200, object.clone())
}

/// `POST .../pods/<name>/eviction` with a policy/v1 Eviction naming the pod: refused (429)
/// while `refuse_evictions` lasts, as a PodDisruptionBudget refuses it; then the pod goes.
fn evict(s: &mut State, r: &Request, namespace: &str, name: &str) -> (u16, Value) {
    if r.method != "POST" {
        return (
            405,
            failure(405, "MethodNotAllowed", "evictions are created"),
        );
    }
    if r.content_type.as_deref() != Some("application/json") {
        return (
            415,
            failure(415, "UnsupportedMediaType", "an Eviction is JSON"),
        );
    }
    // As the API server checks it: the object names the pod of the URL; its type, where
    // given, is an Eviction (the server takes it from the URL otherwise).
    let body = r.body.clone().unwrap_or(Value::Null);
    let typed = |k: &str, v: &str| body[k].is_null() || body[k] == v;
    if body["metadata"]["name"] != name
        || !typed("kind", "Eviction")
        || !typed("apiVersion", "policy/v1")
    {
        return (
            400,
            failure(
                400,
                "BadRequest",
                "name in URL does not match name in Eviction object",
            ),
        );
    }
    let key = format!("{namespace}/{name}");
    if !s.pods.contains_key(&key) {
        return (404, failure(404, "NotFound", "no such pod"));
    }
    if s.refuse_evictions > 0 {
        s.refuse_evictions -= 1;
        return (
            429,
            failure(
                429,
                "TooManyRequests",
                "Cannot evict pod as it would violate the pod's disruption budget.",
            ),
        );
    }
    s.pods.remove(&key);
    (
        201,
        json!({"apiVersion": "v1", "kind": "Status", "status": "Success", "code": 201}),
    )
}
