"""The monitor job's config (bad ones refused naming the field) and the champion's lineage (no Ray)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from mlplatform.config import load_config
from mlplatform.errors import ConfigError, DataContractError
from mlplatform.monitor.config import MonitorConfig
from mlplatform.monitor.loop import _champion_lineage
from mlplatform.pipeline import MonitorJobConfig

from tests.conftest import ROOT


def test_the_shipped_monitor_config_takes_data_and_train_from_the_pipeline():
    cfg = load_config(ROOT / "jobs" / "configs" / "monitor.yaml", MonitorJobConfig)
    assert cfg.data.name == "churn" and cfg.train.model_name == "churn"
    assert cfg.monitor.rollout.app == "churn" and cfg.monitor.rollout.online_test is not None


@pytest.mark.parametrize(
    "change, needle",
    [
        ({"window": "soon"}, "window"),
        ({"triggers": {"schedule": "weekly"}}, "triggers.schedule"),
        ({"drift": {"psi": -1}}, "drift.psi"),
        ({"drift": {"numeric_test": "wasserstein"}}, "drift.numeric_test"),
        ({"rollout": {"steps": [100], "online_test": {}}}, "give a step before 100"),
        ({"rollout": {"online_test": {"require": "maybe"}}}, "rollout.online_test.require"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_bad_monitor_configs_name_the_field(tmp_path, change, needle):
    import yaml

    doc = {"pipeline": str(ROOT / "jobs" / "configs" / "demo.yaml"), "monitor": {"app": "churn", "rollout": {}}}
    doc["monitor"].update(change)
    path = tmp_path / "monitor.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError, match=needle.replace("[", r"\[")) as err:
        load_config(path, MonitorJobConfig)
    assert str(path) in str(err.value)


def test_a_missing_pipeline_file_is_named(tmp_path):
    import yaml

    path = tmp_path / "monitor.yaml"
    path.write_text(yaml.safe_dump({"pipeline": "nowhere.yaml", "monitor": {"app": "a", "rollout": {}}}))
    with pytest.raises(ConfigError, match="nowhere.yaml"):
        load_config(path, MonitorJobConfig)


def test_the_rollout_is_of_the_watched_app():
    cfg = MonitorConfig.model_validate({"app": "churn", "rollout": {"steps": [50, 100]}})
    assert (cfg.rollout.app, cfg.rollout.canary) == ("churn", "challenger")


class FakeClient:
    def __init__(self, tags):
        self.tags = tags

    def get_model_version(self, name, version):
        return SimpleNamespace(tags=self.tags)


def test_a_champion_without_lineage_is_refused_with_what_to_do():
    with pytest.raises(DataContractError, match="no dataset lineage.*mlplatform drift"):
        _champion_lineage(FakeClient({}), "churn", "3")


def test_a_champion_whose_training_data_is_gone_is_refused(tmp_path):
    with pytest.raises(DataContractError, match="training data of churn v3 .* is unusable"):
        _champion_lineage(FakeClient({"mlplatform.dataset.path": str(tmp_path / "gone")}), "churn", "3")
