#!/usr/bin/env python3
"""Assertions on deploy/ that no linter makes: the seeds' required names and values, config keys
that exist, Kubernetes schemas, alert/dashboard structure and runbook links. Run by
scripts/check-deploy.sh (which installs the tools); exits 1 listing every problem."""
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

import hcl2
import yaml

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
os.chdir(ROOT)
problems = []


def check(cond, msg):
    if not cond:
        problems.append(msg)


def section(title):
    print(f"-- {title}")


# Real configuration keys: the generated table in docs/configuration.md.
CONFIG_KEYS = set(re.findall(r"^\| `([A-Z0-9_]+)` \|", open("docs/configuration.md").read(), re.M))
check(len(CONFIG_KEYS) > 30, "could not read the key table of docs/configuration.md")
# Names that are not waygate configuration but legitimately appear in env lists.
NON_CONFIG_ENV = {"NODE_ID"}


def check_env_names(names, where):
    for n in names:
        check(n in CONFIG_KEYS or n in NON_CONFIG_ENV, f"{where}: {n} is not a waygate config key (docs/configuration.md)")


def strip(v):
    return v[1:-1] if isinstance(v, str) and len(v) >= 2 and v[0] == v[-1] == '"' else v


def norm(v):
    """python-hcl2 >= 7 keeps string quotes on keys and values; older versions do not."""
    if isinstance(v, dict):
        return {strip(k): norm(x) for k, x in v.items() if k != "__is_block__"}
    if isinstance(v, list):
        return [norm(x) for x in v]
    return strip(v)


# ---------------------------------------------------------------- Terraform
section("terraform: parse every .tf (python-hcl2) and assert seed 000 / 003 values")
tf = {}
for path in sorted(glob.glob("deploy/terraform/**/*.tf", recursive=True)):
    try:
        with open(path) as f:
            tf[path] = norm(hcl2.load(f))
    except Exception as e:  # noqa: BLE001
        problems.append(f"{path}: HCL parse error: {e}")
    text = open(path).read()
    for i, line in enumerate(text.splitlines(), 1):
        indent = len(line) - len(line.lstrip(" "))
        check("\t" not in line[: indent + 1], f"{path}:{i}: tab indentation")
        check(indent % 2 == 0, f"{path}:{i}: indentation is not a multiple of 2 spaces")


def blocks(module, kind):
    out = {}
    for path, doc in tf.items():
        if path.startswith(module):
            for b in doc.get(kind, []):
                out.update(b)
    return out


def resources(module, rtype):
    out = {}
    for path, doc in tf.items():
        if path.startswith(module):
            for b in doc.get("resource", []):
                for t, named in b.items():
                    if t == rtype:
                        out.update(named)
    return out


aws = "deploy/terraform/aws/"
var = blocks(aws, "variable")
check(var.get("gateway_ws_port", {}).get("default") == 3001, "aws: variable gateway_ws_port must default to 3001")
check(strip(var.get("gateway_ws_health_path", {}).get("default")) == "/health", "aws: gateway_ws_health_path must default to /health")
check(strip(var.get("https_listener_arn", {}).get("default", None)) == "", "aws: https_listener_arn must be optional (default \"\")")
check("gateway_ws_target_group_arn" in blocks(aws, "output"), "aws: output gateway_ws_target_group_arn missing")
aws_text = "".join(open(p).read() for p in tf if p.startswith(aws))
m = re.search(r"ws_paths\s*=\s*\[([^\]]*)\]", aws_text)
check(m and re.findall(r'"([^"]+)"', m.group(1)) == ["/ws", "/ws/*", "/api/gateway/ws", "/api/gateway/ws/*"],
      "aws: listener rule paths must be /ws, /ws/*, /api/gateway/ws, /api/gateway/ws/*")
rule = resources(aws, "aws_lb_listener_rule").get("gateway_ws", {})
check("https_listener_arn" in str(rule.get("count")) and "https_listener_arn" in str(rule.get("listener_arn")),
      "aws: the WS listener rule must exist only when https_listener_arn is set, on that listener")
check("local.ws_paths" in str(rule.get("condition")) and "aws_lb_target_group.ws" in str(rule.get("action")),
      "aws: the WS listener rule must forward local.ws_paths to the WS target group")
tg = resources(aws, "aws_lb_target_group").get("ws", {})
check("var.gateway_ws_port" in str(tg.get("port")) and "var.gateway_ws_health_path" in str(tg.get("health_check")),
      "aws: WS target group must use gateway_ws_port and gateway_ws_health_path")
svc = resources(aws, "aws_ecs_service").get("this", {})
lbs = svc.get("load_balancer", [])
check(len(lbs) == 2, "aws: ECS service must attach both target groups")
check(var.get("alb_idle_timeout", {}).get("default", 0) >= 3600, "aws: ALB idle timeout must suit long-lived sockets (>= 3600 s)")
check("var.alb_idle_timeout" in str(resources(aws, "aws_lb").get("this", {}).get("idle_timeout")), "aws: ALB must use alb_idle_timeout")
env_names = set(re.findall(r"^\s+([A-Z][A-Z0-9_]+)\s*=", aws_text, re.M)) | set(re.findall(r"\{ ([A-Z][A-Z0-9_]+) =", aws_text))
for required in ["GATEWAY_WS_PORT", "GATEWAY_WS_PUBLIC_URL", "GATEWAY_WS_PUBLIC_HOST", "GATEWAY_WS_PUBLIC_PORT", "GATEWAY_WS_PATH", "GATEWAY_DISPATCH_POLL_MS"]:
    check(required in env_names, f"aws: runtime variable {required} not set in the task definition")
check_env_names(env_names, "aws task environment")

gcp = "deploy/terraform/gcp/"
gvar = blocks(gcp, "variable")
check(gvar.get("backend_timeout_sec", {}).get("default") == 86400, "gcp: backend_timeout_sec must default to 86400")
check(gvar.get("session_affinity_ttl_sec", {}).get("default") == 86400, "gcp: session_affinity_ttl_sec must default to 86400")
check(gvar.get("websocket_timeout_sec", {}).get("default") == 86400, "gcp: websocket_timeout_sec must default to 86400")
bs = resources(gcp, "google_compute_backend_service").get("waygate", {})
check(strip(bs.get("session_affinity")) == "GENERATED_COOKIE", "gcp: session_affinity must be GENERATED_COOKIE")
check("var.session_affinity_ttl_sec" in str(bs.get("affinity_cookie_ttl_sec")), "gcp: affinity_cookie_ttl_sec must use session_affinity_ttl_sec")
check("var.backend_timeout_sec" in str(bs.get("timeout_sec")), "gcp: timeout_sec must use backend_timeout_sec")
gcp_text = "".join(open(p).read() for p in tf if p.startswith(gcp))
m = re.search(r"ws_paths\s*=\s*\[([^\]]*)\]", gcp_text)
check(m and re.findall(r'"([^"]+)"', m.group(1)) == ["/ws", "/ws/*", "/websocket", "/websocket/*"],
      "gcp: path rule paths must be /ws, /ws/*, /websocket, /websocket/*")
check("paths   = local.ws_paths" in gcp_text and "var.websocket_timeout_sec" in gcp_text, "gcp: path rule must use ws_paths with the 24 h route timeout")

# ---------------------------------------------------------------- CloudFormation
section("cloudformation: seed 002 values (cfn-lint ran before)")


class CfnLoader(yaml.SafeLoader):
    pass


CfnLoader.add_multi_constructor("!", lambda loader, suffix, node: {
    "scalar": loader.construct_scalar, "sequence": loader.construct_sequence, "mapping": loader.construct_mapping,
}[node.id](node))
cfn = yaml.load(open("deploy/cloudformation/ecs.yaml"), Loader=CfnLoader)
R = cfn["Resources"]
st = R["ScalableTarget"]["Properties"]
check((st["MinCapacity"], st["MaxCapacity"]) == (1, 4), "cfn: autoscaling must be 1-4 tasks")
tt = R["CpuScalingPolicy"]["Properties"]["TargetTrackingScalingPolicyConfiguration"]
check((tt["TargetValue"], tt["ScaleOutCooldown"], tt["ScaleInCooldown"]) == (70, 60, 300), "cfn: CPU target 70 with cooldowns 60/300")
for alarm, metric in [("HighCpuAlarm", "CPUUtilization"), ("HighMemoryAlarm", "MemoryUtilization")]:
    p = R[alarm]["Properties"]
    check(p["MetricName"] == metric and p["Threshold"] == 80 and p["Period"] * p["EvaluationPeriods"] == 600
          and p["ComparisonOperator"] == "GreaterThanThreshold", f"cfn: {alarm} must be {metric} > 80 for 10 minutes")
tgp = R["TargetGroup"]["Properties"]
check(tgp["Port"] == 8080 and tgp["HealthCheckPath"] == "/health", "cfn: target group on 8080 with /health checks")
check("LogGroup" in R and R["TaskRole"]["Properties"].get("Policies") is None and not R["TaskRole"]["Properties"].get("ManagedPolicyArns"),
      "cfn: log group present and task role without permissions")
for q in ["PMQueueName", "DevQueueName", "QAQueueName", "OpsQueueName"]:
    check(q in cfn["Parameters"], f"cfn: queue parameter {q} missing")
container = R["TaskDefinition"]["Properties"]["ContainerDefinitions"][0]
check_env_names([e["Name"] for e in container["Environment"]], "cfn container environment")

# ---------------------------------------------------------------- Kubernetes
section("kubernetes: kustomize build both overlays, validate against the schemas (offline)")
kbuild = None
if shutil.which("kubectl"):
    kbuild = ["kubectl", "kustomize"]
elif shutil.which("kustomize"):
    kbuild = ["kustomize", "build"]
check(kbuild is not None, "kubernetes: neither kubectl nor kustomize is installed")
built = {}
if kbuild:
    tmp = tempfile.mkdtemp()
    for overlay in ["embedded", "cluster"]:
        out = subprocess.run(kbuild + [f"deploy/k8s/overlays/{overlay}"], capture_output=True, text=True)
        check(out.returncode == 0, f"kustomize {overlay}: {out.stderr.strip()}")
        if out.returncode == 0:
            path = os.path.join(tmp, f"{overlay}.yaml")
            open(path, "w").write(out.stdout)
            built[overlay] = [d for d in yaml.safe_load_all(out.stdout) if d]
            v = subprocess.run(["kubernetes-validate", "--strict", "--quiet", "--no-warn", path], capture_output=True, text=True)
            check(v.returncode == 0, f"kubernetes-validate {overlay}: {v.stdout.strip()} {v.stderr.strip()}")


def find(docs, kind, name):
    return next((d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name), None)


for overlay, docs in built.items():
    dep = find(docs, "Deployment", "waygate")
    spec = dep["spec"]["template"]["spec"]
    c = spec["containers"][0]
    cm = find(docs, "ConfigMap", "waygate-config")["data"]
    drain = int(cm["TERMINAL_GATEWAY_DRAIN_TIMEOUT_SECONDS"])
    pre = int(c["lifecycle"]["preStop"]["exec"]["command"][1])
    check(spec["terminationGracePeriodSeconds"] == 45 and drain == 30 and 45 > pre + drain,
          f"{overlay}: grace 45 must exceed preStop {pre} + drain {drain}")
    check(c["readinessProbe"]["httpGet"]["path"] == "/readyz" and c["livenessProbe"]["httpGet"]["path"] == "/healthz",
          f"{overlay}: readiness /readyz, liveness /healthz")
    for d in docs:
        if d["kind"] != "Deployment":
            continue
        ps = d["spec"]["template"]["spec"]
        check(ps["securityContext"].get("runAsNonRoot") is True, f"{overlay}/{d['metadata']['name']}: runAsNonRoot")
        for ct in ps["containers"]:
            sc = ct["securityContext"]
            check(sc.get("readOnlyRootFilesystem") is True and sc.get("capabilities", {}).get("drop") == ["ALL"]
                  and sc.get("allowPrivilegeEscalation") is False, f"{overlay}/{ct['name']}: readOnlyRootFilesystem, drop ALL")
            check("resources" in ct and "requests" in ct["resources"], f"{overlay}/{ct['name']}: resources")
            check_env_names([e["name"] for e in ct.get("env", [])], f"{overlay}/{ct['name']} env")
    check_env_names(cm.keys(), f"{overlay} ConfigMap")
    ing = find(docs, "Ingress", "waygate")
    ann = ing["metadata"]["annotations"]
    check(ann.get("nginx.ingress.kubernetes.io/proxy-read-timeout") == "86400" and ann.get("nginx.ingress.kubernetes.io/proxy-send-timeout") == "86400",
          f"{overlay}: ingress WS timeouts must be 86400")
    paths = {p["path"]: p["pathType"] for r in ing["spec"]["rules"] for p in r["http"]["paths"]}
    for p in ["/ws", "/websocket", "/api/gateway/ws"]:
        check(paths.get(p) == "Prefix", f"{overlay}: ingress path {p} (Prefix, covers {p}/*)")
    check(find(docs, "Deployment", "waygate-agent") is not None, f"{overlay}: agent Deployment")

if "embedded" in built:
    dep = find(built["embedded"], "Deployment", "waygate")
    check(dep["spec"]["replicas"] == 1 and dep["spec"]["strategy"]["type"] == "Recreate", "embedded: 1 replica, Recreate")
    check(find(built["embedded"], "PersistentVolumeClaim", "waygate-data") is not None, "embedded: SQLite PVC")
    check(not any(d["kind"] in ("HorizontalPodAutoscaler", "PodDisruptionBudget") for d in built["embedded"]), "embedded: no HPA/PDB")
if "cluster" in built:
    docs = built["cluster"]
    for kind in ["HorizontalPodAutoscaler", "PodDisruptionBudget", "Secret"]:
        check(any(d["kind"] == kind for d in docs), f"cluster: {kind} missing")
    for name in ["waygate-ingest", "waygate-worker"]:
        check(find(docs, "Deployment", name) is not None, f"cluster: Deployment {name} missing")
    env = find(docs, "Deployment", "waygate")["spec"]["template"]["spec"]["containers"][0]["env"]
    from_secret = {e["name"] for e in env if "secretKeyRef" in e.get("valueFrom", {})}
    check({"DATABASE_URL", "REDIS_URL", "AMQP_URL"} <= from_secret, "cluster: DATABASE_URL/REDIS_URL/AMQP_URL from a Secret")

# ---------------------------------------------------------------- Docker
section("docker: Dockerfile shape (no engine here to build it)")
df = open("deploy/docker/Dockerfile").read()
check(len(re.findall(r"^FROM ", df, re.M)) >= 2, "Dockerfile: multi-stage")
for needle in ["HEALTHCHECK", "STOPSIGNAL SIGTERM", "EXPOSE 8080 3001", "USER 10001"]:
    check(needle in df, f"Dockerfile: {needle} missing")
check(os.path.exists(".dockerignore"), ".dockerignore missing")

# ---------------------------------------------------------------- Prometheus + Grafana
section("prometheus: promtool check rules; runbook_url on every alert; grafana JSON")
if shutil.which("promtool"):
    r = subprocess.run(["promtool", "check", "rules", "deploy/prometheus/alerts.yaml"], capture_output=True, text=True)
    check(r.returncode == 0, f"promtool: {r.stdout}{r.stderr}")
else:
    print("   promtool not available: structure check only")
rules = yaml.safe_load(open("deploy/prometheus/alerts.yaml"))
EXTERNAL_METRICS = {"up", "container_memory_working_set_bytes", "kube_pod_container_resource_limits"}
PROMQL_WORDS = {"sum", "max", "min", "rate", "by", "and", "or", "on", "vector", "deriv", "clamp_min", "histogram_quantile",
                "le", "humanizePercentage", "without", "unless", "ignoring", "count", "avg", "increase", "absent"}


def metric_names(expr):
    expr = re.sub(r"\{[^}]*\}", "", expr)   # label matchers
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges
    expr = re.sub(r'"[^"]*"', "", expr)
    toks = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expr))
    return {t for t in toks if t not in PROMQL_WORDS and not re.fullmatch(r"(e|inf|nan)", t, re.I)}


def metric_ok(name, where):
    ours = name.startswith(("waygate_", "terminal_", "ws_notifications_"))
    check(ours or name in EXTERNAL_METRICS, f"{where}: metric {name} is neither waygate's nor a known external metric")


def runbook_ok(url, where):
    m = re.fullmatch(r"docs/runbooks/([a-z0-9-]+\.md)#([a-z0-9-]+)", url or "")
    if not m:
        problems.append(f"{where}: runbook_url {url!r} must be docs/runbooks/FILE.md#anchor")
        return
    path = os.path.join("docs/runbooks", m.group(1))
    if not os.path.exists(path):
        problems.append(f"{where}: {path} does not exist")
        return
    anchors = {re.sub(r"[^a-z0-9 -]", "", h.strip().lower()).replace(" ", "-")
               for h in re.findall(r"^#+ (.*)$", open(path).read(), re.M)}
    check(m.group(2) in anchors, f"{where}: no heading for #{m.group(2)} in {path}")


count = 0
for g in rules["groups"]:
    for r in g["rules"]:
        count += 1
        where = f"alert {r.get('alert')}"
        check({"alert", "expr", "labels", "annotations"} <= r.keys(), f"{where}: alert, expr, labels, annotations required")
        check(r.get("labels", {}).get("severity") in ("critical", "warning"), f"{where}: severity critical|warning")
        runbook_ok(r.get("annotations", {}).get("runbook_url"), where)
        for n in metric_names(r["expr"]):
            metric_ok(n, where)
check(count >= 15, "fewer alert rules than the seeds' triggers")

dash = json.load(open("deploy/grafana/waygate.json"))
targets = [t for p in dash["panels"] for t in p.get("targets", [])]
check(len(targets) > 20, "grafana: too few queries")
for t in targets:
    for n in metric_names(t["expr"]):
        metric_ok(n, f"grafana {t['expr'][:40]}")

# Runbook links in docs resolve.
for md in glob.glob("docs/**/*.md", recursive=True) + ["README.md"]:
    for link in re.findall(r"\]\(((?:\.\.?/|docs/|runbooks/)[^)#\s]+)", open(md).read()):
        target = os.path.normpath(os.path.join(os.path.dirname(md), link))
        check(os.path.exists(target), f"{md}: broken link {link}")

if problems:
    print("\n".join(f"FAIL {p}" for p in problems))
    sys.exit(1)
print("deploy checks: OK")
