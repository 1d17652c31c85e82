"""`facexpr serve` follows the model registry: a `promote` or `rollback` while it runs reaches
the next request (FACEXPR_API_MODEL_REFRESH_S=0), in the answer, its history record and
GET /v1/models; a version that will not load leaves the served one in place."""

from __future__ import annotations

import httpx

from facexpr.cli import main
from facexpr.core.config import load_settings
from facexpr.model.registry import ModelRegistry
from facexpr.storage.history import open_history
from tests.apiserver import ApiServer
from tests.conftest import shipped_card
from tests.test_retrain import registered


def test_a_running_server_serves_what_the_registry_promotes(tiny_model_path, astronaut_bytes, tmp_path,
                                                            capsys):
    settings = load_settings()  # FACEXPR_DATA_DIR: this test's own folder (conftest)
    registered(settings, tiny_model_path, "api-one")
    registered(settings, tiny_model_path, "api-two")
    ModelRegistry(settings).promote("api-one")
    env = {"FACEXPR_DATA_DIR": str(settings.data_dir), "FACEXPR_API_MODEL_REFRESH_S": "0"}

    def answered_by(server: ApiServer) -> str:
        response = httpx.post(server.url + "/v1/predictions", timeout=120,
                              files=[("file", ("face.jpg", astronaut_bytes, "image/jpeg"))])
        assert response.status_code == 200, response.text
        version = response.json()["model_version"]
        history = open_history(settings)
        try:  # the history records the version that answered
            assert history.get(str(history.count()))["model_version"] == version
        finally:
            history.close()
        models = httpx.get(server.url + "/v1/models", timeout=60).json()
        assert models["served"] == version
        assert [m["version"] for m in models["models"] if m["served"]] == [version]
        return version

    with ApiServer(env, log_path=tmp_path / "server.log") as server:
        assert answered_by(server) == "api-one"  # start-up loads the registry's version
        models = httpx.get(server.url + "/v1/models").json()["models"]
        sources = {m["version"]: m["source"] for m in models}
        assert sources["api-one"] == sources["api-two"] == "registry"
        if shipped_card():
            assert sources[shipped_card()["name"]] == "shipped"

        assert main(["promote", "api-two"]) == 0
        assert answered_by(server) == "api-two"
        assert main(["rollback"]) == 0
        assert answered_by(server) == "api-one"

        # A promoted version whose file is broken: the replica keeps answering, with the old one.
        work = settings.data_dir / "work"
        (work / "api-bad.keras").write_bytes(b"not a keras file")
        (work / "api-bad.json").write_text((work / "api-two.json").read_text().replace("api-two", "api-bad"))
        ModelRegistry(settings).add(work / "api-bad.keras")
        assert main(["promote", "api-bad"]) == 0
        assert answered_by(server) == "api-one"
        assert "still serving api-one" in server.log()
    capsys.readouterr()
    assert "Traceback" not in server.log(), server.log()
