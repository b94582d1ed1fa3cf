"""Structural checks of a rendered overlay (`kubectl kustomize
deploy/kubernetes/overlays/NAME`) that neither the schemas nor checkov make:
hardened pods, probes, shutdown timing, the HPA/PDB/spread of the workers,
secrets only referenced, the NetworkPolicies' ports, and what each overlay is
for. Usage: check_manifests.py OVERLAY RENDERED.yaml. Exits non-zero naming
every failed check; prints the number of checks passed.
"""

import sys

import yaml

SECRETS = {"memtrace-control-plane", "memtrace-fleet", "memtrace-etcd-client"}
WORKER_EGRESS = {2379, 8000, 53}
CONTROL_PLANE_EGRESS = {2379, 8000, 53}

failures = []
passed = 0


def check(cond, what):
    global passed
    if cond:
        passed += 1
    else:
        failures.append(what)


def env_of(container):
    return {e["name"]: e for e in container.get("env", [])}


def ports_of(rules):
    return {p["port"] for r in rules for p in r.get("ports", [])}


def main():
    overlay, path = sys.argv[1], sys.argv[2]
    with open(path, encoding="utf-8") as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], {})[d["metadata"]["name"]] = d
        check(d["kind"] != "Secret", f"{d['metadata']['name']}: a Secret is inlined")
        if d["kind"] != "Namespace":
            check(d["metadata"].get("namespace") == "memtrace", f"{d['kind']}/{d['metadata']['name']}: namespace")

    deployments = by_kind.get("Deployment", {})
    check(set(deployments) == {"memtrace-worker", "memtrace-control-plane"}, f"deployments: {sorted(deployments)}")
    accounts = by_kind.get("ServiceAccount", {})
    for name, dep in deployments.items():
        pod = dep["spec"]["template"]["spec"]
        sa = pod.get("serviceAccountName")
        check(sa == name and sa in accounts, f"{name}: dedicated ServiceAccount")
        check(accounts.get(sa, {}).get("automountServiceAccountToken") is False, f"{name}: ServiceAccount automount")
        check(pod.get("automountServiceAccountToken") is False, f"{name}: automountServiceAccountToken")
        psc = pod.get("securityContext", {})
        check(psc.get("runAsNonRoot") is True, f"{name}: pod runAsNonRoot")
        check(psc.get("runAsUser", 0) >= 10000, f"{name}: high uid")
        check(psc.get("seccompProfile", {}).get("type") == "RuntimeDefault", f"{name}: pod seccomp")
        check(any(t["topologyKey"] == "kubernetes.io/hostname" for t in pod.get("topologySpreadConstraints", [])), f"{name}: topology spread")
        (c,) = pod["containers"]
        check(c["image"].split("@")[0].split(":")[0].endswith("memtrace"), f"{name}: image {c['image']}")
        check(c.get("command") == [name], f"{name}: command {c.get('command')}")
        sc = c.get("securityContext", {})
        check(sc.get("readOnlyRootFilesystem") is True, f"{name}: readOnlyRootFilesystem")
        check(sc.get("allowPrivilegeEscalation") is False, f"{name}: allowPrivilegeEscalation")
        check(sc.get("capabilities", {}).get("drop") == ["ALL"], f"{name}: drop ALL")
        check(sc.get("seccompProfile", {}).get("type") == "RuntimeDefault", f"{name}: container seccomp")
        res = c.get("resources", {})
        for part in ("requests", "limits"):
            for r in ("cpu", "memory"):
                check(r in res.get(part, {}), f"{name}: resources.{part}.{r}")
        check(c["readinessProbe"]["httpGet"]["path"] == "/ready", f"{name}: readiness /ready")
        check(c["livenessProbe"]["httpGet"]["path"] == "/health", f"{name}: liveness /health")
        env = env_of(c)
        for var, e in env.items():
            ref = e.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                check(ref["name"] in SECRETS, f"{name}: {var} from unknown Secret {ref['name']}")
        for v in pod.get("volumes", []):
            if "secret" in v:
                check(v["secret"]["secretName"] in SECRETS, f"{name}: secret volume {v['secret']['secretName']}")
        # the drain fits in the grace period: preStop, then SIGTERM and
        # MEMTRACE_SERVER_SHUTDOWN_TIMEOUT, with at least 5 s to spare
        pre_stop = c.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
        drain = int(env["MEMTRACE_SERVER_SHUTDOWN_TIMEOUT"]["value"])
        grace = pod.get("terminationGracePeriodSeconds", 30)
        check(pre_stop > 0, f"{name}: preStop sleep")
        check(grace >= pre_stop + drain + 5, f"{name}: grace {grace} < preStop {pre_stop} + drain {drain} + 5")
        check("MEMTRACE_FLEET_KEY" in env and "secretKeyRef" in env["MEMTRACE_FLEET_KEY"].get("valueFrom", {}), f"{name}: fleet key from a Secret")
        for f in ("CA", "CERT", "KEY"):
            check(f"MEMTRACE_ETCD_{f}_FILE" in env, f"{name}: etcd client TLS {f}")
        check(all(u.startswith("https://") for u in env["MEMTRACE_ETCD_ENDPOINTS"]["value"].split(",")), f"{name}: etcd over TLS")

    worker = deployments["memtrace-worker"]
    wc = worker["spec"]["template"]["spec"]["containers"][0]
    check("MEMTRACE_MASTER_KEY" not in env_of(wc), "worker must not hold the master key")
    check("replicas" not in worker["spec"], "worker replicas belong to the HPA")
    hpa = by_kind.get("HorizontalPodAutoscaler", {}).get("memtrace-worker")
    check(hpa is not None and hpa["spec"]["scaleTargetRef"]["name"] == "memtrace-worker", "worker HPA")
    if hpa:
        check(any(m.get("resource", {}).get("name") == "cpu" for m in hpa["spec"]["metrics"]), "HPA on CPU")
    pdb = by_kind.get("PodDisruptionBudget", {}).get("memtrace-worker")
    check(pdb is not None and pdb["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/name": "memtrace-worker"}, "worker PDB")
    if hpa and pdb:
        check(pdb["spec"]["minAvailable"] < hpa["spec"]["minReplicas"], "PDB leaves room for a drain")

    cp = deployments["memtrace-control-plane"]
    cpc = env_of(cp["spec"]["template"]["spec"]["containers"][0])
    check("secretKeyRef" in cpc["MEMTRACE_MASTER_KEY"].get("valueFrom", {}), "master key from a Secret")
    check("secretKeyRef" in cpc["MEMTRACE_BOOTSTRAP_ADMIN_TOKEN"].get("valueFrom", {}), "bootstrap token from a Secret")

    policies = by_kind.get("NetworkPolicy", {})
    deny = policies.get("memtrace-default-deny")
    check(deny is not None and deny["spec"]["podSelector"] == {} and set(deny["spec"]["policyTypes"]) == {"Ingress", "Egress"} and not deny["spec"].get("ingress") and not deny["spec"].get("egress"), "default deny")

    def allowed(app, direction):
        rules = []
        for p in policies.values():
            if p["spec"]["podSelector"].get("matchLabels", {}).get("app.kubernetes.io/name") == app:
                rules += p["spec"].get(direction, [])
        return rules

    check(ports_of(allowed("memtrace-worker", "ingress")) == {9100}, "worker ingress: its port only")
    check(ports_of(allowed("memtrace-control-plane", "ingress")) == {9200}, "control plane ingress: its port only")
    check(ports_of(allowed("memtrace-worker", "egress")) == WORKER_EGRESS, f"worker egress {ports_of(allowed('memtrace-worker', 'egress'))}")
    for rule in allowed("memtrace-worker", "egress") + allowed("memtrace-control-plane", "egress"):
        check(rule.get("to") and all("ipBlock" not in t for t in rule["to"]), "egress only to selected pods")

    cp_spec = cp["spec"]
    cp_pod = cp_spec["template"]["spec"]
    if overlay == "single-node":
        check(cp_spec["replicas"] == 1, "single-node: 1 control plane")
        check(cp_spec["strategy"]["type"] == "Recreate", "single-node: Recreate (RWO volume)")
        check("MEMTRACE_DATABASE_URL" not in cpc and "MEMTRACE_AUTH_DB_PATH" in cpc, "single-node: SQLite")
        db_dir = cpc["MEMTRACE_AUTH_DB_PATH"]["value"].rsplit("/", 1)[0]
        mounts = {m["mountPath"]: m["name"] for m in cp_pod["containers"][0]["volumeMounts"]}
        vols = {v["name"]: v for v in cp_pod["volumes"]}
        check(db_dir in mounts and "persistentVolumeClaim" in vols[mounts[db_dir]], "single-node: database on the PVC")
        check(ports_of(allowed("memtrace-control-plane", "egress")) == CONTROL_PLANE_EGRESS, "single-node: control plane egress")
    elif overlay in ("ha", "ha-ingest-autoscaling"):
        check(cp_spec["replicas"] >= 2, "ha: at least 2 control planes")
        check("secretKeyRef" in cpc.get("MEMTRACE_DATABASE_URL", {}).get("valueFrom", {}), "ha: database URL from a Secret")
        check("PersistentVolumeClaim" not in by_kind, "ha: no volume for the control plane")
        check("memtrace-control-plane" in by_kind.get("PodDisruptionBudget", {}), "ha: control plane PDB")
        check(ports_of(allowed("memtrace-control-plane", "egress")) == CONTROL_PLANE_EGRESS | {5432}, "ha: control plane egress")
    else:
        failures.append(f"unknown overlay {overlay}")
    if overlay == "ha-ingest-autoscaling" and hpa:
        pods = [m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"] if m.get("type") == "Pods"]
        check(pods == ["memtrace_ingest_rows_written_per_second"], f"ha-ingest-autoscaling: HPA on the ingest rate {pods}")

    if failures:
        for f in failures:
            print(f"check_manifests: {overlay}: FAILED: {f}", file=sys.stderr)
        sys.exit(1)
    print(f"check_manifests: {overlay}: {passed} checks passed")


if __name__ == "__main__":
    main()
