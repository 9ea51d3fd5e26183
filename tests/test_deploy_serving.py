"""Static checks for the TF Serving deployment files in deploy/serving."""

import copy
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
SERVING_DIR = REPO_ROOT / "deploy" / "serving"
K8S_DIR = SERVING_DIR / "k8s"
BASE_DIR = K8S_DIR / "base"
CONFIG_DIR = BASE_DIR / "config"
COMPOSE_FILE = SERVING_DIR / "docker-compose.yaml"

DEFAULT_MODEL = "cats-vs-dogs"
# Kubernetes version whose API schemas the manifests are validated against.
K8S_VERSION = "1.33.0"


def _load_all(path):
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _manifest_files():
    return sorted(p for p in BASE_DIR.glob("*.yaml") if p.name != "kustomization.yaml")


def _base_deployment():
    (doc,) = _load_all(BASE_DIR / "deployment.yaml")
    assert doc["kind"] == "Deployment"
    return doc


def _kustomize(path):
    """The manifests `kubectl apply -k path` would apply, rendered by kustomize itself."""
    for command in (["kustomize", "build"], ["kubectl", "kustomize"]):
        if shutil.which(command[0]):
            done = subprocess.run([*command, str(path)], capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, done.stderr
            return [d for d in yaml.safe_load_all(done.stdout) if d]
    pytest.skip("neither kustomize nor kubectl is installed")


def _by_kind(docs, kind):
    found = [d for d in docs if d["kind"] == kind]
    assert found, f"no {kind}"
    return found


@pytest.fixture(scope="module")
def overlays(tmp_path_factory):
    """{model name: rendered manifests}: the checked-in overlays, and a new one
    made as the README says (a copy of ./flowers with another name)."""
    tree = tmp_path_factory.mktemp("k8s") / "k8s"
    shutil.copytree(K8S_DIR, tree)
    shutil.copytree(tree / "flowers", tree / "my-birds")
    model = tree / "my-birds" / "model.yaml"
    model.write_text(model.read_text().replace("flowers", "my-birds"))
    return {DEFAULT_MODEL: _kustomize(K8S_DIR), "flowers": _kustomize(K8S_DIR / "flowers"),
            "my-birds": _kustomize(tree / "my-birds")}


def _interpolate(value, env):
    """Compose's interpolation of ${VAR}, ${VAR:-default} and ${VAR-default},
    defaults nested (compose v2.18+), as `docker compose config` resolves it."""
    if isinstance(value, dict):
        return {k: _interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value
    out, i = [], 0
    while i < len(value):
        if value.startswith("$$", i):
            out.append("$")
            i += 2
        elif value.startswith("${", i):
            depth, j = 1, i + 2
            while depth:
                if value.startswith("${", j):
                    depth, j = depth + 1, j + 2
                else:
                    depth -= value[j] == "}"
                    j += 1
            body = value[i + 2:j - 1]
            match = re.fullmatch(r"([A-Za-z_][A-Za-z0-9_]*)(?:(:?)-(.*))?", body, re.S)
            assert match, f"unsupported interpolation ${{{body}}}"
            name, colon, default = match.groups()
            set_ = name in env and (env[name] != "" or not colon)
            out.append(env[name] if set_ else _interpolate(default or "", env))
            i = j
        else:
            out.append(value[i])
            i += 1
    return "".join(out)


# --- (a) Kubernetes schema validation -----------------------------------------

def _kv():
    return pytest.importorskip("kubernetes_validate")


def test_k8s_version_is_bundled():
    kubernetes_validate = _kv()
    assert K8S_VERSION in kubernetes_validate.utils.all_versions()


def test_base_manifests_serve_what_the_pusher_writes(tmp_path):
    """The Service reaches the pod's TF Serving ports, the pod mounts the PVC at
    /models, and a push leaves <model name>/<version>/ below the serving folder:
    the path TF Serving loads, /models/$MODEL_NAME/<version>, with that folder
    as the volume's root."""
    manifests = {p.stem: _load_all(p) for p in _manifest_files()}
    (deployment,), (service,), (pvc,) = (manifests[n] for n in ("deployment", "service", "pvc"))
    pod = deployment["spec"]["template"]
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    (container,) = pod["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"grpc": 8500, "http": 8501}  # TF Serving's gRPC and REST ports
    assert {p["targetPort"]: p["port"] for p in service["spec"]["ports"]} == ports
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["port"] in (ports["http"], "http")
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    (models,) = [m["name"] for m in container["volumeMounts"] if m["mountPath"] == "/models"]
    assert volumes[models]["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]
    env = {e["name"] for e in container["env"]}
    assert "MODEL_NAME" in env and "MODEL_BASE_PATH" not in env  # the image's /models

    from components.pusher import push
    from components.serving import served_versions
    from pipeline.config import load_config
    config = load_config(None, {"data.root": str(tmp_path / "cats_vs_dogs"),
                                "output_dir": str(tmp_path / "outputs"),
                                "train.weights": "none"}).validate()
    assert config.model_name == DEFAULT_MODEL  # the name the default overlay serves
    model = tmp_path / "model"
    model.mkdir()
    (model / "saved_model.pb").write_bytes(b"")
    push(str(model), f"{config.serving_dir}/{config.model_name}", 1700000000)
    (version,) = served_versions(f"{config.serving_dir}/{config.model_name}").values()
    assert Path(version).relative_to(config.serving_dir) == Path(DEFAULT_MODEL, "1700000000")


@pytest.mark.parametrize("path", _manifest_files(), ids=lambda p: p.name)
def test_manifest_validates_against_k8s_schema(path):
    kubernetes_validate = _kv()
    docs = _load_all(path)
    assert docs
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_validation_rejects_broken_manifests():
    kubernetes_validate = _kv()
    good = _base_deployment()
    kubernetes_validate.validate(good, K8S_VERSION, strict=True)

    bad_type = copy.deepcopy(good)
    bad_type["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "8500"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad_type, K8S_VERSION, strict=True)

    unknown_field = copy.deepcopy(good)
    unknown_field["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(unknown_field, K8S_VERSION, strict=True)


@pytest.mark.parametrize("model", [DEFAULT_MODEL, "flowers", "my-birds"])
def test_rendered_overlay_validates_and_names_its_model_everywhere(overlays, model):
    kubernetes_validate = _kv()
    docs = overlays[model]
    assert {d["kind"] for d in docs} == {"ConfigMap", "Deployment", "PersistentVolumeClaim", "Service"}
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)

    (container,) = _by_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["MODEL_NAME"] == model  # the entrypoint serves /models/$MODEL_NAME
    assert "MODEL_BASE_PATH" not in env  # the image's default, /models: the PVC
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["path"] == f"/v1/models/{model}"
    rendered = yaml.safe_dump_all(docs)
    assert "/v1/models/MODEL_NAME" not in rendered and "value: MODEL_NAME" not in rendered
    for other in {DEFAULT_MODEL, "flowers", "my-birds"} - {model}:
        assert other not in rendered


def test_overlays_differ_only_in_the_model_name(overlays):
    def normalized(docs, name):
        return yaml.safe_dump_all(docs).replace(name, "NAME")

    flowers = normalized(overlays["flowers"], "flowers")
    assert normalized(overlays[DEFAULT_MODEL], DEFAULT_MODEL) == flowers
    assert normalized(overlays["my-birds"], "my-birds") == flowers


# --- (b) kustomization ----------------------------------------------------------


def test_kustomization_references_existing_files():
    for folder in (K8S_DIR, K8S_DIR / "flowers", BASE_DIR, K8S_DIR / "model-name"):
        kust = yaml.safe_load((folder / "kustomization.yaml").read_text())
        referenced = list(kust.get("resources", [])) + list(kust.get("components", []))
        for gen in kust.get("configMapGenerator", []):
            referenced += [f.split("=", 1)[-1] for f in gen.get("files", [])]
        for rel in referenced:
            assert (folder / rel).exists(), f"{folder / rel} does not exist"
            # kustomize refuses files (not folders) outside the kustomization root.
            if (folder / rel).is_file():
                assert folder.resolve() in (folder / rel).resolve().parents
    base = yaml.safe_load((BASE_DIR / "kustomization.yaml").read_text())
    assert {p.name for p in _manifest_files()} <= set(base["resources"])


def test_configmap_generator_feeds_deployment_config_volume(overlays):
    docs = overlays[DEFAULT_MODEL]
    config_maps = {d["metadata"]["name"]: d for d in _by_kind(docs, "ConfigMap")}
    volumes = _by_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]["volumes"]
    (cm_name,) = [v["configMap"]["name"] for v in volumes if "configMap" in v]
    assert cm_name.startswith("tf-serving-config-")  # the content hash rolls the pods
    assert set(config_maps[cm_name]["data"]) == {"batching.config"}
    assert config_maps["tf-serving-model"]["data"] == {"MODEL_NAME": DEFAULT_MODEL}
    pvc_names = {v["persistentVolumeClaim"]["claimName"] for v in volumes if "persistentVolumeClaim" in v}
    (pvc,) = _by_kind(docs, "PersistentVolumeClaim")
    assert pvc_names == {pvc["metadata"]["name"]}


# --- (c) deployment details -----------------------------------------------------


def test_deployment_probes_resources_and_security(overlays):
    pod = _by_kind(overlays[DEFAULT_MODEL], "Deployment")[0]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"].startswith("tensorflow/serving:2.16.")
    for probe in ("readinessProbe", "livenessProbe"):
        http_get = container[probe]["httpGet"]
        assert http_get["path"] == f"/v1/models/{DEFAULT_MODEL}"
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
    # The entrypoint's --model_name/--model_base_path from MODEL_NAME; a
    # --model_config_file would override them with a fixed name.
    assert "--model_config_file" not in args and "--model_name" not in args
    assert "--file_system_poll_wait_seconds=" in args
    assert "--batching_parameters_file=/config/batching.config" in args


def test_service_ports():
    (svc,) = _load_all(BASE_DIR / "service.yaml")
    assert svc["spec"]["type"] == "ClusterIP"
    ports = {p["name"]: p["port"] for p in svc["spec"]["ports"]}
    assert ports == {"grpc": 8500, "http": 8501}


# --- (d) docker compose ---------------------------------------------------------


def _compose_service(env):
    compose = _interpolate(yaml.safe_load(COMPOSE_FILE.read_text()), env)
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


def test_interpolation_as_compose_resolves_it():
    env = {"A": "a", "EMPTY": ""}
    assert _interpolate("${A}/${B:-b}/${EMPTY:-e}/${EMPTY-e}/$${A}", env) == "a/b/e//${A}"
    assert _interpolate("${B:-x/${C:-${A:-z}}/y}", env) == "x/a/y"


@pytest.mark.parametrize("model", [DEFAULT_MODEL, "flowers"])
def test_compose_serves_pushed_models(model):
    env = {} if model == DEFAULT_MODEL else {"MODEL_NAME": model}
    service = _compose_service(env)
    assert service["image"].startswith("tensorflow/serving:2.16.")
    ports = set(_published_ports(service))
    assert {(8501, 8501), (8500, 8500)} <= ports
    assert service["environment"]["MODEL_NAME"] == model

    volumes = {dst: (src, ro) for src, dst, ro in _volume_pairs(service)}
    src, read_only = volumes["/models"]
    assert (SERVING_DIR / src).resolve() == REPO_ROOT / "outputs" / model / "serving"
    assert read_only
    config_src, _ = volumes["/config"]
    assert (SERVING_DIR / config_src).resolve() == CONFIG_DIR.resolve()

    command = " ".join(service["command"])
    for flag in ("--file_system_poll_wait_seconds=", "--enable_batching=true",
                 "--batching_parameters_file=/config/batching.config"):
        assert flag in command
    assert "--model_config_file" not in command and "--model_name" not in command
    assert f"GET /v1/models/{model} HTTP" in " ".join(service["healthcheck"]["test"])
    others = {DEFAULT_MODEL, "flowers"} - {model}
    assert not any(other in yaml.safe_dump(service) for other in others)


def test_compose_serving_dir_overrides_the_default():
    service = _compose_service({"MODEL_NAME": "flowers", "SERVING_DIR": "/data/serving"})
    volumes = {dst: src for src, dst, _ in _volume_pairs(service)}
    assert volumes["/models"] == "/data/serving"


# --- (e) TF Serving config protos -----------------------------------------------


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
    (container,) = _base_deployment()["spec"]["template"]["spec"]["containers"]
    assert params.num_batch_threads.value == int(container["resources"]["limits"]["cpu"])
