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


def test_a_typo_anywhere_is_an_error_naming_the_nearest_key(tmp_path, monkeypatch):
    (tmp_path / "params.yaml").write_text("reprogram:\n  epoch: 1\naudit:\n  bogus: 1\n")
    with pytest.raises(ValueError) as err:
        Settings.load(tmp_path)
    assert "`reprogram.epoch`: did you mean `reprogram.epochs`?" in str(err.value)
    assert "`audit.bogus`" in str(err.value) and str(tmp_path / "params.yaml") in str(err.value)

    (tmp_path / "params.yaml").write_text("reprogram:\n  epochs: 1\n")
    with pytest.raises(ValueError, match=r"--set monitor.alph: .*did you mean `monitor.alpha`"):
        Settings.load(tmp_path, monitor__alph=0.1)
    # A setting that was removed says what replaced it, not the nearest spelling.
    (tmp_path / "params.yaml").write_text("monitor:\n  drift_share_threshold: 0.5\n")
    with pytest.raises(ValueError, match=r"`monitor.drift_share_threshold` is no longer a setting: .*`monitor.alpha`"):
        Settings.load(tmp_path)
    (tmp_path / "params.yaml").write_text("registry:\n  confidence: 0.9\n")
    with pytest.raises(ValueError, match=r"`registry.confidence` is no longer a setting: .*`registry.alpha`"):
        Settings.load(tmp_path)
    (tmp_path / "params.yaml").write_text("reprogram:\n  epochs: 1\n")
    with pytest.raises(ValueError, match=r"unknown key `sed`: did you mean `seed`"):
        Settings.load(tmp_path, sed=3)
    with pytest.raises(ValueError, match=r"`epoch` -> `reprogram.epochs`"):  # the old section name, with a typo
        Settings.load(tmp_path, train__epoch=1)
    monkeypatch.setenv("MIROPS_EAST__TAUU", "3")
    with pytest.raises(ValueError, match=r"environment MIROPS_EAST__TAUU: .*`east.tau`"):
        Settings.load(tmp_path)


def test_mapping_fields_aliases_and_other_mirops_variables_are_not_typos(tmp_path, monkeypatch):
    (tmp_path / "params.yaml").write_text("demo:\n  soundfont: A.sf2\n  split: {train: 0.5, valid: 0.25, test: 0.25}\n"
                                          "east:\n  teacher_sources: {anything: /x}\n")
    monkeypatch.setenv("MIROPS_CACHE_DIR", str(tmp_path))  # not a setting: single underscore
    settings = Settings.load(tmp_path)
    assert settings.demo.soundfonts == ["A.sf2"] and settings.east.teacher_sources == {"anything": "/x"}
    assert Settings.load(tmp_path, demo__soundfonts=["B.sf2"]).demo.soundfonts == ["B.sf2"]  # --set wins
