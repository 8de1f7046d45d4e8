"""deploy/: every file parses, and what it says agrees with the gateway and with each other."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml

from gateway.config import (
    Config,
    DeploymentsConfig,
    ResumableConfig,
    SourcesConfig,
    StorageConfig,
    config_from_dict,
)
from gateway.server.adapters.lifecycle import (
    deployments_rule,
    gateway_rule,
    resumable_days,
    resumable_rule,
)

from .helpers import MOTO_CREDENTIALS

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
K8S = DEPLOY / "kubernetes"
VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def k8s_documents() -> dict[str, dict[str, Any]]:
    """Every Kubernetes object in deploy/kubernetes, by kind (one of each)."""
    docs: dict[str, dict[str, Any]] = {}
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                assert doc["kind"] not in docs, f"two {doc['kind']} objects"
                docs[doc["kind"]] = doc
    return docs


def memory_bytes(quantity: str) -> int:
    units = {"Ki": 1024, "Mi": 1024**2, "Gi": 1024**3}
    return int(quantity[:-2]) * units[quantity[-2:]]


def configmap_config() -> tuple[str, Config]:
    text = k8s_documents()["ConfigMap"]["data"]["config.yaml"]
    env = {name: f"value-of-{name.lower()}-0123456789" for name in VAR.findall(text)}
    return text, config_from_dict(yaml.safe_load(text), env=env)


@pytest.mark.parametrize(
    "path",
    sorted(p for p in DEPLOY.rglob("*") if p.suffix in (".yaml", ".yml", ".json")),
    ids=lambda p: str(p.relative_to(DEPLOY)),
)
def test_every_yaml_and_json_file_parses(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        assert json.loads(text)
    else:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
        assert docs and all(isinstance(d, dict) for d in docs)


def test_kustomization_lists_every_manifest_but_the_example_secret() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    manifests = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == manifests - {"secret.example.yaml"}


def test_configmap_holds_a_valid_configuration() -> None:
    text, config = configmap_config()
    assert config.server.host == "0.0.0.0"  # reachable from outside the container
    assert config.server.trusted_proxies
    # Every secret comes from the environment, none is written in the file.
    assert set(VAR.findall(text)) == {"GATEWAY_SECRET_KEY", "GATEWAY_API_TOKEN"}


def test_deployment() -> None:
    docs = k8s_documents()
    deployment = docs["Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    _, config = configmap_config()

    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["ports"][0]["containerPort"] == config.server.port
    limits, requests = container["resources"]["limits"], container["resources"]["requests"]
    assert {"cpu", "memory"} <= set(limits) and {"cpu", "memory"} <= set(requests)
    # All uploads' part buffers fit in the memory limit with room for the rest of the process.
    assert config.sources.max_buffer_bytes <= memory_bytes(limits["memory"]) // 2
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    # The grace period covers the preStop sleep and the gateway's own drain.
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    assert pod["terminationGracePeriodSeconds"] > int(pre_stop[1]) + config.server.shutdown_timeout
    # Each ${VAR} of the configuration is set from the Secret.
    secret_env = {
        e["name"]: e["valueFrom"]["secretKeyRef"]
        for e in container["env"]
        if "secretKeyRef" in e.get("valueFrom", {})
    }
    assert set(secret_env) == {"GATEWAY_SECRET_KEY", "GATEWAY_API_TOKEN"}
    example_secret = yaml.safe_load((K8S / "secret.example.yaml").read_text())
    for ref in secret_env.values():
        assert ref["name"] == example_secret["metadata"]["name"]
        assert ref["key"] in example_secret["stringData"]
    mount = container["volumeMounts"][0]["mountPath"]
    assert f"{mount}/config.yaml" in container["args"]
    assert pod["volumes"][0]["configMap"]["name"] == docs["ConfigMap"]["metadata"]["name"]


def test_service_hpa_and_pdb_point_at_the_deployment() -> None:
    docs = k8s_documents()
    deployment = docs["Deployment"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert docs["Service"]["spec"]["selector"].items() <= labels.items()
    assert docs["Service"]["spec"]["ports"][0]["targetPort"] == "http"
    hpa = docs["HorizontalPodAutoscaler"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert hpa["spec"]["minReplicas"] >= 2
    pdb = docs["PodDisruptionBudget"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["spec"]["minAvailable"] < hpa["spec"]["minReplicas"]


def test_dockerfile_runs_gateway_serve_as_non_root() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    users = re.findall(r"^USER\s+(\S+)", text, re.MULTILINE)
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert '\nENTRYPOINT ["gateway"]' in text
    assert '\nCMD ["serve"]' in text
    deployment = k8s_documents()["Deployment"]
    uid = deployment["spec"]["template"]["spec"]["securityContext"]["runAsUser"]
    assert users[-1].split(":")[0] == str(uid)


def test_nginx_example_streams_request_bodies() -> None:
    text = (DEPLOY / "nginx" / "sources-gateway.conf").read_text()
    directives = {
        line.strip().rstrip(";")
        for line in text.splitlines()
        if line.strip() and not line.strip().startswith("#")
    }
    for needed in (
        "proxy_request_buffering off",
        "proxy_http_version 1.1",
        "proxy_buffering off",
        "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for",
    ):
        assert needed in directives, needed
    (size,) = re.findall(r"client_max_body_size (\d+)m;", text)
    assert int(size) * 1024**2 >= SourcesConfig().max_size_bytes
    # The access log format never holds the query string (the token).
    log_format = text[text.index("log_format") : text.index("upstream ")]
    for leaky in ("$request ", '$request"', "$request_uri", "$args", "$query_string"):
        assert leaky not in log_format


def test_lifecycle_rule_is_accepted_by_s3(s3: Any, bucket: str) -> None:
    document = json.loads((DEPLOY / "lifecycle.json").read_text())
    # Exactly the rule the gateway applies itself with the default storage settings, so applying
    # the file by hand and letting the gateway do it are the same thing (same ID: no duplicate).
    assert document == {
        "Rules": [
            # Resumable uploads are on by default: their parts may complete at the sources' keys.
            gateway_rule(StorageConfig(), resumable_days(ResumableConfig())),
            deployments_rule(DeploymentsConfig()),
            resumable_rule(ResumableConfig()),
        ]
    }
    rule, records, uploads = document["Rules"]
    assert uploads["Filter"]["Prefix"] == "uploads/"
    assert uploads["Expiration"]["Days"] == 2  # a day after a resumable upload's life
    assert records["Filter"]["Prefix"] == "deployments/"
    assert records["Expiration"]["Days"] == 30
    assert rule["Filter"]["Prefix"] == "sources/"
    assert rule["Expiration"]["Days"] == 1
    assert rule["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"] == 2
    # botocore validates the shape; the server stores it as given.
    s3.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration=document)
    stored = s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    assert stored[0]["Filter"] == {"Prefix": "sources/"}
    assert stored[0]["Expiration"]["Days"] == 1


def test_iam_policy_is_least_privilege(moto_endpoint: str) -> None:
    text = (DEPLOY / "iam-policy.json").read_text()
    policy = json.loads(text)
    actions: set[str] = set()
    for statement in policy["Statement"]:
        assert statement["Effect"] == "Allow"
        assert "*" not in statement["Resource"].split(":")[-1].split("/")[0]
        actions.update(statement["Action"])
    assert actions == {
        "s3:PutObject",
        "s3:GetObject",
        "s3:PutObjectTagging",
        "s3:GetObjectTagging",
        "s3:AbortMultipartUpload",
        "s3:DeleteObject",
        "s3:ListBucket",
        "s3:GetLifecycleConfiguration",
        "s3:PutLifecycleConfiguration",
        "sqs:SendMessage",
        "sqs:GetQueueUrl",
    }
    objects = next(s for s in policy["Statement"] if "s3:GetObject" in s["Action"])
    assert objects["Resource"].endswith(f"/{StorageConfig().prefix}*")
    # Deployment records: read and (conditionally) written, listed through s3:ListBucket.
    (records,) = [s for s in policy["Statement"] if s.get("Sid") == "DeploymentRecords"]
    assert records["Resource"].endswith(f"/{DeploymentsConfig().prefix}*")
    assert set(records["Action"]) == {"s3:PutObject", "s3:GetObject"}
    # Resumable uploads' state, tails and staging objects: the only objects ever deleted.
    (uploads,) = [s for s in policy["Statement"] if s.get("Sid") == "ResumableUploads"]
    assert uploads["Resource"].endswith(f"/{ResumableConfig().prefix}*")
    assert "s3:DeleteObject" in uploads["Action"]
    # The IAM service checks the document's grammar.
    iam = boto3.client(
        "iam", endpoint_url=moto_endpoint, region_name="us-east-1", **MOTO_CREDENTIALS
    )
    name = f"sources-gateway-{id(policy)}"
    arn = iam.create_policy(PolicyName=name, PolicyDocument=text)["Policy"]["Arn"]
    iam.delete_policy(PolicyArn=arn)
