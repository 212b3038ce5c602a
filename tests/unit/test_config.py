import pytest
from mlplatform.config import load_config
from mlplatform.errors import ConfigError, PlatformError
from mlplatform.pipeline import PipelineConfig

from tests.conftest import DEMO_CONFIG


def write(tmp_path, text):
    p = tmp_path / "cfg.yaml"
    p.write_text(text)
    return p


def demo_text():
    return DEMO_CONFIG.read_text()


def test_demo_config_loads(monkeypatch, tmp_path):
    monkeypatch.setenv("MLPLATFORM_HOME", str(tmp_path))
    cfg = load_config(DEMO_CONFIG, PipelineConfig)
    assert isinstance(cfg, PipelineConfig)
    assert cfg.data.base_source.name == "profiles"
    assert cfg.data.sources[0].path == f"{tmp_path}/data/demo/profiles.csv"
    assert cfg.train.register_top == 2


def test_config_error_is_a_platform_error():
    assert issubclass(ConfigError, PlatformError)


def test_missing_file():
    with pytest.raises(ConfigError, match="nope.yaml: config file not found"):
        load_config("nope.yaml", PipelineConfig)


def test_malformed_yaml_names_file_and_line(tmp_path):
    p = write(tmp_path, "data:\n  name: x\n  sources: [\n")
    with pytest.raises(ConfigError) as e:
        load_config(p, PipelineConfig)
    assert f"{p}:" in str(e.value) and "malformed YAML" in str(e.value)


def test_unknown_key_names_field_path(tmp_path):
    p = write(tmp_path, demo_text().replace("  num_samples: 4", "  num_samples: 4\n  num_sampels: 3"))
    with pytest.raises(ConfigError) as e:
        load_config(p, PipelineConfig)
    assert "train.num_sampels: unknown key" in str(e.value)
    assert str(p) in str(e.value)


def test_wrong_type_names_field_path_and_value(tmp_path):
    p = write(tmp_path, demo_text().replace("num_boost_round: 60", "num_boost_round: lots"))
    with pytest.raises(ConfigError) as e:
        load_config(p, PipelineConfig)
    assert "train.num_boost_round" in str(e.value) and "'lots'" in str(e.value)


def test_nested_field_path(tmp_path):
    p = write(tmp_path, demo_text().replace("age: {type: int, min: 18, max: 120}", "age: {type: integer}"))
    with pytest.raises(ConfigError, match=r"data\.sources\[0\]\.fields\.age\.type"):
        load_config(p, PipelineConfig)


@pytest.mark.parametrize(
    "old,new,message",
    [
        (
            "max_depth: {type: randint, low: 2, high: 7}",
            "max_depth: {type: randint, low: 9, high: 7}",
            "low \\(9.0\\) must be below high",
        ),
        (
            "max_depth: {type: randint, low: 2, high: 7}",
            "max_depth: {type: normal, low: 2, high: 7}",
            "search_space.max_depth.type",
        ),
        ("format: parquet", "format: xlsx", r"sources\[2\]\.format"),
        ("key: entity_id", "key: customer_id", "join key 'customer_id' is not a field"),
        ("amount: {type: float, min: 0}", "amount: {type: float, min: 5, max: 1}", "min \\(5.0\\) is greater than max"),
        (
            "{name: total_spend, agg: sum, column: amount}",
            "{name: total_spend, agg: sum, column: price}",
            "column 'price' is not one of the source's fields",
        ),
        # text and image sources: whose file it is must come from its path; fields must be readable
        ("      path_fields: '(?P<entity_id>\\d+)\\.txt$'", "", "a text source needs `path_fields`"),
        ("(?P<entity_id>\\d+)\\.txt$", "(?P<entity_id>\\d+\\.txt$", "is not a valid regular expression"),
        ("width: {type: int, min: 8}", "pixels: {type: int, min: 8}", r"fields \['pixels'\] are neither read"),
        ("window: 3}", "window: -3}", r"window"),
        (
            "{name: last_usage, agg: last, column: usage, time_column: day}",
            "{name: last_usage, agg: last, column: usage}",
            "agg 'last' needs `time_column`",
        ),
        # plain tables: the key's type, the label's values, features with one name each
        ("entity_id: {type: int, min: 1}\n        amount", "entity_id: {type: str}\n        amount", "give it one"),
        ("churned: {type: int, allowed: [0, 1]}", "churned: {type: str}", "positive class with `positive:`"),
        ("churned: {type: int, allowed: [0, 1]}", "churned: {type: int, allowed: [1, 2]}", "set `positive:`"),
        ("churned: {type: int, allowed: [0, 1]}", "churned: {type: int, required: false}", "required: false"),
        ("label: churned", "label: churned\n  positive: yes", "holds numbers"),
        ("label: churned", "label: churned\n  positive: 2", "not one of the label's allowed values"),
        ("{name: n_scans, agg: count}", "{name: n_events, agg: count}", "'n_events' comes from both source"),
    ],
)
def test_bad_values(tmp_path, old, new, message):
    assert old in demo_text()
    p = write(tmp_path, demo_text().replace(old, new))
    with pytest.raises(ConfigError, match=message):
        load_config(p, PipelineConfig)


def test_unset_env_var_names_field(tmp_path, monkeypatch):
    monkeypatch.delenv("NO_SUCH_VAR", raising=False)
    p = write(tmp_path, demo_text().replace("${MLPLATFORM_HOME}/datasets", "${NO_SUCH_VAR}/datasets"))
    with pytest.raises(ConfigError, match=r"data\.output_dir: environment variable \$\{NO_SUCH_VAR\} is not set"):
        load_config(p, PipelineConfig)


def test_top_level_must_be_mapping(tmp_path):
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(write(tmp_path, "- a\n- b\n"), PipelineConfig)


def test_missing_source_file_is_a_clear_error(tmp_path, monkeypatch):
    from mlplatform.data.ingest import _files

    monkeypatch.setenv("MLPLATFORM_HOME", str(tmp_path))
    source = load_config(DEMO_CONFIG, PipelineConfig).data.sources[0]
    with pytest.raises(ConfigError, match=r"source 'profiles': no file at '.*profiles.csv'"):
        _files(source)


def test_a_key_given_twice_is_refused_with_file_line_and_key(tmp_path):
    # A second `fields:` would silently replace the first and drop its contract.
    text = demo_text().replace("      fields:\n", "      fields: {entity_id: {type: int}}\n      fields:\n", 1)
    p = write(tmp_path, text)
    line = next(i for i, ln in enumerate(text.splitlines(), 1) if ln == "      fields:")
    with pytest.raises(ConfigError) as e:
        load_config(p, PipelineConfig)
    assert f"{p}:{line}:7: duplicate key 'fields' (first given on line {line - 1})" in str(e.value)


def test_merge_keys_may_still_be_overridden(tmp_path):
    from mlplatform.config import read_yaml

    p = write(tmp_path, "base: &b {x: 1, y: 2}\nmine:\n  <<: *b\n  y: 3\n")
    assert read_yaml(p)["mine"] == {"x": 1, "y": 3}


def test_settings_are_typed(monkeypatch):
    from mlplatform import settings

    monkeypatch.setenv("MLPLATFORM_API_KEYS", " a, ,b ,")
    assert settings.MLPLATFORM_API_KEYS.get() == ["a", "b"]
    monkeypatch.setenv("MLPLATFORM_HOME", "~/somewhere")
    assert settings.platform_home().is_absolute() and "~" not in str(settings.platform_home())
    assert "| `MLPLATFORM_API_KEYS` |" in settings.describe()


def test_the_readme_documents_every_setting():
    from mlplatform import settings

    from tests.conftest import ROOT

    readme = (ROOT / "README.md").read_text()
    assert settings.describe() in readme, "README's settings table is stale: paste `mlplatform.settings.describe()`"
