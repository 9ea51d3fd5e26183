"""Static checks for the TF Serving deployment files in deploy/serving."""

import copy
import re
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
SERVING_DIR = REPO_ROOT / "deploy" / "serving"
K8S_DIR = SERVING_DIR / "k8s"
CONFIG_DIR = K8S_DIR / "config"
COMPOSE_FILE = SERVING_DIR / "docker-compose.yaml"

MODEL_NAME = "cats-vs-dogs"
STATUS_PATH = f"/v1/models/{MODEL_NAME}"
# Kubernetes version whose API schemas the manifests are validated against.
K8S_VERSION = "1.33.0"


def _load_all(path):
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _manifest_files():
    return sorted(p for p in K8S_DIR.glob("*.yaml") if p.name != "kustomization.yaml")


def _deployment():
    (doc,) = _load_all(K8S_DIR / "deployment.yaml")
    assert doc["kind"] == "Deployment"
    return doc


def _expand_env_defaults(value):
    """Expand ${VAR:-default} / ${VAR-default} to the default, as compose does when VAR is unset."""
    return re.sub(r"\$\{[A-Za-z_][A-Za-z0-9_]*:?-([^}]*)\}", r"\1", value)


# --- (a) Kubernetes schema validation -----------------------------------------

def _kv():
    return pytest.importorskip("kubernetes_validate")


def test_k8s_version_is_bundled():
    kubernetes_validate = _kv()
    assert K8S_VERSION in kubernetes_validate.utils.all_versions()


def test_manifests_exist():
    names = {p.name for p in _manifest_files()}
    assert {"deployment.yaml", "service.yaml", "pvc.yaml"} <= names


@pytest.mark.parametrize("path", _manifest_files(), ids=lambda p: p.name)
def test_manifest_validates_against_k8s_schema(path):
    kubernetes_validate = _kv()
    docs = _load_all(path)
    assert docs
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_validation_rejects_broken_manifests():
    kubernetes_validate = _kv()
    good = _deployment()
    kubernetes_validate.validate(good, K8S_VERSION, strict=True)

    bad_type = copy.deepcopy(good)
    bad_type["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "8500"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad_type, K8S_VERSION, strict=True)

    unknown_field = copy.deepcopy(good)
    unknown_field["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(unknown_field, K8S_VERSION, strict=True)


# --- (b) kustomization ----------------------------------------------------------


def test_kustomization_references_existing_files():
    kust = yaml.safe_load((K8S_DIR / "kustomization.yaml").read_text())
    assert kust["kind"] == "Kustomization"
    referenced = list(kust.get("resources", []))
    for gen in kust.get("configMapGenerator", []):
        referenced += [f.split("=", 1)[-1] for f in gen.get("files", [])]
    assert referenced
    for rel in referenced:
        path = (K8S_DIR / rel).resolve()
        assert path.is_file(), f"{rel} does not exist"
        # kustomize refuses files outside the kustomization root.
        assert K8S_DIR.resolve() in path.parents, f"{rel} is outside {K8S_DIR}"
    assert {p.name for p in _manifest_files()} <= set(kust["resources"])


def test_configmap_generator_feeds_deployment_config_volume():
    kust = yaml.safe_load((K8S_DIR / "kustomization.yaml").read_text())
    gen_names = {g["name"] for g in kust["configMapGenerator"]}
    volumes = _deployment()["spec"]["template"]["spec"]["volumes"]
    cm_names = {v["configMap"]["name"] for v in volumes if "configMap" in v}
    assert cm_names and cm_names <= gen_names
    pvc_names = {v["persistentVolumeClaim"]["claimName"] for v in volumes if "persistentVolumeClaim" in v}
    (pvc,) = _load_all(K8S_DIR / "pvc.yaml")
    assert pvc_names == {pvc["metadata"]["name"]}


# --- (c) deployment details -----------------------------------------------------


def test_deployment_probes_resources_and_security():
    pod = _deployment()["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"].startswith("tensorflow/serving:2.16.")
    for probe in ("readinessProbe", "livenessProbe"):
        http_get = container[probe]["httpGet"]
        assert http_get["path"] == STATUS_PATH
        assert http_get["port"] in (8501, "http")
    assert {"cpu", "memory"} <= set(container["resources"]["limits"])
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])

    sc = {**pod.get("securityContext", {}), **container["securityContext"]}
    assert sc["runAsNonRoot"] is True
    assert isinstance(sc["runAsUser"], int) and sc["runAsUser"] > 0
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]

    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts["/models"].get("readOnly") is True
    assert "/config" in mounts
    args = " ".join(container.get("args", []))
    assert "--model_config_file=/config/models.config" in args
    assert "--batching_parameters_file=/config/batching.config" in args


def test_service_ports():
    (svc,) = _load_all(K8S_DIR / "service.yaml")
    assert svc["spec"]["type"] == "ClusterIP"
    ports = {p["name"]: p["port"] for p in svc["spec"]["ports"]}
    assert ports == {"grpc": 8500, "http": 8501}


# --- (d) docker compose ---------------------------------------------------------


def _compose_service():
    compose = yaml.safe_load(COMPOSE_FILE.read_text())
    services = [s for s in compose["services"].values() if s["image"].startswith("tensorflow/serving")]
    assert len(services) == 1
    return services[0]


def _volume_pairs(service):
    for vol in service.get("volumes", []):
        if isinstance(vol, dict):
            yield vol["source"], vol["target"], bool(vol.get("read_only"))
        else:  # short syntax: SRC:DST[:MODE]
            src, dst, *mode = vol.split(":")
            yield src, dst, "ro" in mode


def _published_ports(service):
    for port in service.get("ports", []):
        if isinstance(port, dict):
            yield int(port["published"]), int(port["target"])
        else:
            host, container = str(port).split(":")[-2:]
            yield int(host), int(container)


def test_compose_serves_pushed_models():
    service = _compose_service()
    assert service["image"].startswith("tensorflow/serving:2.16.")
    ports = set(_published_ports(service))
    assert {(8501, 8501), (8500, 8500)} <= ports

    volumes = {dst: (src, ro) for src, dst, ro in _volume_pairs(service)}
    src, read_only = volumes["/models"]
    assert "SERVING_DIR" in src
    expanded = _expand_env_defaults(src)
    assert expanded.endswith(f"outputs/{MODEL_NAME}/serving")
    assert (SERVING_DIR / expanded).resolve() == REPO_ROOT / "outputs" / MODEL_NAME / "serving"
    assert read_only

    config_src, _ = volumes["/config"]
    assert (SERVING_DIR / config_src).resolve() == CONFIG_DIR.resolve()

    command = " ".join(service["command"])
    for flag in (
        "--model_config_file=/config/models.config",
        "--model_config_file_poll_wait_seconds=",
        "--file_system_poll_wait_seconds=",
        "--enable_batching=true",
        "--batching_parameters_file=/config/batching.config",
    ):
        assert flag in command
    assert STATUS_PATH in " ".join(service["healthcheck"]["test"])


# --- (e) TF Serving config protos -----------------------------------------------


def test_models_config_parses():
    model_server_config_pb2 = pytest.importorskip("tensorflow_serving.config.model_server_config_pb2")
    from google.protobuf import text_format

    cfg = text_format.Parse((CONFIG_DIR / "models.config").read_text(), model_server_config_pb2.ModelServerConfig())
    (model,) = cfg.model_config_list.config
    assert model.name == MODEL_NAME
    assert model.base_path == f"/models/{MODEL_NAME}"
    assert model.model_platform == "tensorflow"
    assert model.model_version_policy.latest.num_versions == 1


def _batching_parameters_class():
    """BatchingParameters from tensorflow-serving-api if shipped, else a local mirror of the proto."""
    try:
        from tensorflow_serving.servables.tensorflow import session_bundle_config_pb2

        return session_bundle_config_pb2.BatchingParameters
    except ImportError:
        pass
    # tensorflow-serving-api does not ship session_bundle_config_pb2; mirror the
    # stable fields of tensorflow_serving/servables/tensorflow/session_bundle_config.proto.
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, wrappers_pb2

    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(wrappers_pb2.DESCRIPTOR.serialized_pb)
    f = descriptor_pb2.FileDescriptorProto(
        name="session_bundle_config_mirror.proto",
        package="tensorflow.serving",
        syntax="proto3",
        dependency=["google/protobuf/wrappers.proto"],
    )
    msg = f.message_type.add(name="BatchingParameters")
    F = descriptor_pb2.FieldDescriptorProto
    fields = [
        ("max_batch_size", 1, F.TYPE_MESSAGE, ".google.protobuf.Int64Value", F.LABEL_OPTIONAL),
        ("batch_timeout_micros", 2, F.TYPE_MESSAGE, ".google.protobuf.Int64Value", F.LABEL_OPTIONAL),
        ("max_enqueued_batches", 3, F.TYPE_MESSAGE, ".google.protobuf.Int64Value", F.LABEL_OPTIONAL),
        ("num_batch_threads", 4, F.TYPE_MESSAGE, ".google.protobuf.Int64Value", F.LABEL_OPTIONAL),
        ("thread_pool_name", 5, F.TYPE_MESSAGE, ".google.protobuf.StringValue", F.LABEL_OPTIONAL),
        ("allowed_batch_sizes", 6, F.TYPE_INT64, None, F.LABEL_REPEATED),
        ("pad_variable_length_inputs", 7, F.TYPE_BOOL, None, F.LABEL_OPTIONAL),
    ]
    for name, number, ftype, type_name, label in fields:
        field = msg.field.add(name=name, number=number, type=ftype, label=label)
        if type_name:
            field.type_name = type_name
    pool.Add(f)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("tensorflow.serving.BatchingParameters"))


def test_batching_config_parses():
    from google.protobuf import text_format

    params = text_format.Parse((CONFIG_DIR / "batching.config").read_text(), _batching_parameters_class()())
    assert 1 <= params.max_batch_size.value <= 128
    assert 0 < params.batch_timeout_micros.value <= 10_000
    assert params.num_batch_threads.value >= 1
    assert params.max_enqueued_batches.value >= 1

    # The parser is strict: an unknown field must be rejected.
    with pytest.raises(text_format.ParseError):
        text_format.Parse("max_batch_sise { value: 32 }", _batching_parameters_class()())


def test_batching_threads_match_cpu_limit():
    from google.protobuf import text_format

    params = text_format.Parse((CONFIG_DIR / "batching.config").read_text(), _batching_parameters_class()())
    (container,) = _deployment()["spec"]["template"]["spec"]["containers"]
    assert params.num_batch_threads.value == int(container["resources"]["limits"]["cpu"])
