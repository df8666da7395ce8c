"""The config schema: defaults, overrides, and one clear message per kind of mistake."""

import pytest
import yaml
from mabwiser.mab import LearningPolicy

from pipeline.config import PipelineConfig, load_config
from pipeline.errors import ConfigError
from pipeline.policies import LEARNING_POLICIES

REPO_CONFIGS = ["configs/default.yaml", "configs/byo_example.yaml", "configs/large_synthetic.yaml"]


@pytest.mark.parametrize("path", REPO_CONFIGS)
def test_every_shipped_config_validates(path):
    config = load_config(path)
    assert config.policy_specs(), path


def test_default_yaml_lists_exactly_the_schema_defaults():
    shipped = load_config("configs/default.yaml").resolved()
    schema = PipelineConfig(run={"name": "default"}).resolved()
    assert shipped == schema


def test_overrides_apply_dotted_keys_with_yaml_values(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("seed: 1\n")
    config = load_config(path, ["seed=9", "evaluation.top_k=20", "evaluation.k_list=[1, 20]",
                                "evaluation.leaderboard_k=20", "policies.LinUCB.params.alpha=0.25",
                                "policies.LinGreedy=null"])
    assert config.seed == 9 and config.evaluation.top_k == 20 and config.evaluation.k_list == [1, 20]
    assert config.policies["LinUCB"].params["alpha"] == 0.25
    assert "LinGreedy" not in config.policies
    assert config.run.name == "c"  # runs are named after the config file by default


@pytest.mark.parametrize(
    "yaml_text, overrides, expected",
    [
        ("evaluation: {topk: 5}", [], r"unknown key 'evaluation\.topk'\. Did you mean 'top_k'\?"),
        ("seed: 1", ["data.synthetic.n_event=5"], r"'data\.synthetic\.n_event' \(from --set\)\. Did you mean 'n_events'"),
        ("evaluation: {top_k: five}", [], r"'evaluation\.top_k': Input should be a valid integer.*found 'five'"),
        ("split: {test_fraction: 1.5}", [], r"'split\.test_fraction': Input should be less than 1; found 1\.5"),
        ("data: {synthetic: {n_items: 1}}", [], r"'data\.synthetic\.n_items': Input should be greater than or equal to 2"),
        ("evaluation: {top_k: 3}", [], r"every k in k_list must be <= top_k=3"),
        ("policies: {A: {learning_policy: LinUSB}}", [], r"'policies\.A': unknown learning_policy 'LinUSB'; valid names are: .*LinUCB"),
        ("policies: {A: {learning_policy: LinUCB, params: {alpah: 1}}}", [], r"LinUCB has no parameter 'alpah'; valid parameters: alpha"),
        ("policies: {A: {learning_policy: LinUCB, params: {alpha: -1}}}", [], r"LinUCB\(alpha=-1\): The value of alpha cannot be negative"),
        ("policies: {A: {learning_policy: Random, neighborhood_policy: Nearest}}", [], r"unknown neighborhood_policy 'Nearest'"),
        ("policies: {Oracle: {learning_policy: Random}}", [], r"'Oracle' is reserved"),
        ("policies: {}", [], r"at least one policy is needed"),
        ("policies: {Logging: {learning_policy: Random}}", [], r"'Logging' is reserved"),
        ("evaluation: {decision: {baseline: LinUSB}}", [], r"decision\.baseline is 'LinUSB', which is not a policy"),
        ("evaluation: {decision: {estimator: TIPS}}", [], r"'evaluation\.decision\.estimator'"),
        ("evaluation: {external_policies: {LinUCB: {file: p.csv}}}", [], r"'LinUCB' is already the name of a policy"),
        ("data: {synthetic: {logging: greedy}}", [], r"'data\.synthetic\.logging'"),
        ("features: {item_text: {schema: {transform: [word2vec, pool]}}}", [], r"'word2vec' is not supported: it needs a pretrained download"),
        ("data: {source: files}", [], r"source is 'files' but the 'files' block is missing"),
        ("data: {source: files, files: {train: a.csv}}", [], r"give 'interactions' \(one file\) or both 'train' and 'test'"),
        ("split: {method: given}", [], r"split\.method='given' needs data\.files\.train"),
        ("[1, 2]", [], r"expected a mapping of keys at the top level"),
        ("seed: [", [], r"not valid YAML"),
        ("seed: 1", ["seed"], r"--set 'seed': expected KEY=VALUE"),
        ("seed: 1", ["seed.x=1"], r"--set seed\.x=1: 'seed' holds 1, not a mapping"),
    ],
)
def test_bad_config_gives_one_message_naming_file_and_key(tmp_path, yaml_text, overrides, expected):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError, match=expected) as raised:
        load_config(path, overrides)
    message = str(raised.value)
    assert "\n" not in message
    if not message.startswith("--set"):
        assert message.startswith(str(path))


def test_missing_config_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"config file .*nope\.yaml does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_every_registered_learning_policy_can_be_named(tmp_path):
    policies = {name: {"learning_policy": name} for name in LEARNING_POLICIES}
    path = tmp_path / "all.yaml"
    path.write_text(yaml.safe_dump({"policies": policies}, sort_keys=False))
    specs = load_config(path).policy_specs()
    assert [spec.name for spec in specs] == list(LEARNING_POLICIES)
    assert {"LinUCB", "LinTS", "LinGreedy", "ThompsonSampling", "UCB1", "Softmax", "NeuralLinear"} <= set(LEARNING_POLICIES)


def test_incompatible_neighborhood_combination_is_rejected(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("policies: {A: {learning_policy: LinUCB, neighborhood_policy: TreeBandit}}")
    with pytest.raises(ConfigError, match=r"'policies\.A': LinUCB with TreeBandit"):
        load_config(path)


def test_a_policy_grid_expands_into_one_validated_policy_per_combination(tmp_path):
    path = tmp_path / "grid.yaml"
    path.write_text("policies:\n  LinUCB: {learning_policy: LinUCB, params: {l2_lambda: 2.0},"
                    " grid: {alpha: [0.1, 1.0], scale: [false, true]}}\n")
    specs = load_config(path).policy_specs()
    assert [spec.name for spec in specs] == ["LinUCB(alpha=0.1, scale=False)", "LinUCB(alpha=0.1, scale=True)",
                                             "LinUCB(alpha=1.0, scale=False)", "LinUCB(alpha=1.0, scale=True)"]
    assert specs[3].learning_policy == LearningPolicy.LinUCB(alpha=1.0, l2_lambda=2.0, scale=True)
    path.write_text("policies:\n  LinUCB: {learning_policy: LinUCB, grid: {alhpa: [0.1]}}\n")
    with pytest.raises(ConfigError, match="no parameter 'alhpa'"):
        load_config(path)
    path.write_text("policies:\n  LinUCB: {learning_policy: LinUCB, grid: {alpha: [-1.0]}}\n")
    with pytest.raises(ConfigError, match="alpha"):
        load_config(path)
