import pytest

from mirops.config import Settings
from tests.conftest import make_project


def test_params_yaml_is_read_and_env_overrides_it(tmp_path, monkeypatch):
    root = tmp_path
    (root / "params.yaml").write_text("seed: 3\nreprogram:\n  epochs: 4\n  lr: 0.01\n")
    settings = Settings.load(root)
    assert (settings.seed, settings.reprogram.epochs, settings.reprogram.lr) == (3, 4, 0.01)
    assert settings.reprogram.batch_size == 8  # defaults fill what the file leaves out

    monkeypatch.setenv("MIROPS_REPROGRAM__EPOCHS", "2")
    assert Settings.load(root).reprogram.epochs == 2


def test_the_old_train_section_is_an_error_naming_its_new_name(tmp_path, monkeypatch):
    (tmp_path / "params.yaml").write_text("train:\n  epochs: 4\n")
    with pytest.raises(ValueError, match="`train` is now `reprogram`"):
        Settings.load(tmp_path)
    (tmp_path / "params.yaml").write_text("reprogram:\n  epochs: 4\n")
    with pytest.raises(ValueError, match="reprogram.X"):
        Settings.load(tmp_path, train__epochs=2)  # what `--set train.epochs=2` becomes
    monkeypatch.setenv("MIROPS_TRAIN__EPOCHS", "2")
    with pytest.raises(ValueError, match="MIROPS_REPROGRAM__"):
        Settings.load(tmp_path)


def test_overrides_and_paths_resolve_under_the_root(tmp_path):
    root = make_project(tmp_path, {})
    settings = Settings.load(root, reprogram__epochs=9)
    assert settings.reprogram.epochs == 9
    assert settings.data_dir == root.resolve() / "data"
    assert settings.tracking_uri == f"sqlite:///{root.resolve() / 'mlruns.db'}"


def test_repository_params_yaml_is_valid():
    from tests.conftest import REPO

    settings = Settings.load(REPO)
    assert settings.reprogram.backbone == "yamnet" and settings.demo.clips > 0
