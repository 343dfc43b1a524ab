"""Danger/safe mapping: defaults, TOML errors, and dataset-level warnings/errors."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from training.dataset import read_dataset
from training.mapping import (
    ESC50_CATEGORIES,
    binary_mapping,
    default_mapping,
    load_mapping,
)


def write_toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "mapping.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_esc50_has_fifty_distinct_categories() -> None:
    assert len(ESC50_CATEGORIES) == 50
    assert len(set(ESC50_CATEGORIES)) == 50


def test_default_mapping() -> None:
    """The packaged default: the seed's categories plus glass breaking as danger, every other
    ESC-50 category that is plainly not danger as safe, and nine named classes."""
    mapping = default_mapping()
    assert mapping.danger == ("dog", "crying_baby", "siren", "chainsaw", "glass_breaking")
    assert mapping.safe[:5] == ("rain", "clock_tick", "wind", "sea_waves", "keyboard_typing")
    assert {"rooster", "sneezing", "helicopter", "crackling_fire"} <= set(mapping.safe)
    assert mapping.label("siren") == 1
    assert mapping.label("rain") == 0
    assert mapping.label("thunderstorm") is None  # ambiguous: left out
    assert [c.name for c in mapping.classes] == [
        "smoke_alarm", "glass_break", "gunshot", "explosion", "scream", "baby_cry", "dog_bark",
        "siren", "chainsaw"]
    assert mapping.class_of("dog_bark") == mapping.class_of("dog") == "dog_bark"
    assert mapping.class_of("gun_shot") == "gunshot"
    assert mapping.class_of("rain") is None
    # a smoke alarm sounds for minutes, household beeps for 1-2 s: only it must persist
    assert {c.name: c.min_seconds for c in mapping.classes if c.min_seconds} == {
        "smoke_alarm": 6.0}
    assert mapping.as_dict()["classes"]["smoke_alarm"]["min_seconds"] == 6.0
    assert "min_seconds" not in mapping.as_dict()["classes"]["siren"]


def test_class_min_seconds_loads(tmp_path: Path) -> None:
    path = write_toml(tmp_path, 'danger = ["dog"]\nsafe = ["rain"]\n[classes.barking]\n'
                                'categories = ["dog"]\nmin_seconds = 2.5\n[classes.other]\n'
                                'audioset = ["Bark"]\n')
    assert [(c.name, c.min_seconds) for c in load_mapping(path).classes] == [
        ("barking", 2.5), ("other", 0.0)]


def test_binary_mapping_is_the_seeds() -> None:
    mapping = binary_mapping()
    assert mapping.danger == ("dog", "crying_baby", "siren", "chainsaw")
    assert mapping.safe == ("rain", "clock_tick", "wind", "sea_waves", "keyboard_typing")
    assert mapping.classes == ()


def test_classes_table_loads_and_is_validated(tmp_path: Path) -> None:
    ok = write_toml(tmp_path, 'danger = ["dog"]\nsafe = ["rain"]\n'
                              '[classes.barking]\naudioset = ["Bark"]\ncategories = ["dog"]\n')
    mapping = load_mapping(ok)
    assert mapping.class_of("dog") == "barking"
    heard = write_toml(tmp_path, 'danger = ["dog"]\nsafe = ["rain"]\n[classes.barking]\n'
                                 'audioset = ["Bark"]\ncategories = ["dog"]\nheard_as = ["Howl"]\n')
    (barking,) = load_mapping(heard).classes
    assert barking.heard_as == ("Howl",) and barking.audioset == ("Bark",)
    assert load_mapping(heard).as_dict()["classes"]["barking"]["heard_as"] == ["Howl"]
    for body, message in [
        ('[classes.x]\naudioset = ["No such label"]\n', "unknown AudioSet label"),
        ('[classes.x]\ncategories = ["rain"]\n', r"belong\(s\) to no class"),
        ('[classes.Bad-Name]\naudioset = ["Bark"]\ncategories = ["dog"]\n', "class names"),
        ('[classes.x]\n', "give 'audioset' labels"),
        ('[classes.x]\naudioset = "Bark"\ncategories = ["dog"]\n', "must be a list"),
        ('min_clips = 0\n[classes.x]\ncategories = ["dog"]\n', "min_clips"),
        ('[classes.x]\ncategories = ["dog"]\nmin_seconds = -1\n', r"classes.x.min_seconds must"),
        ('[classes.x]\ncategories = ["dog"]\nmin_seconds = 61\n', r"\[0, 60\], got 61"),
        ('[classes.x]\ncategories = ["dog"]\nmin_seconds = "6"\n', r"x.min_seconds .*'6'"),
        ('[classes.x]\ncategories = ["dog"]\nmin_seconds = nan\n', r"x.min_seconds .*nan"),
        ('[classes.x]\ncategories = ["dog"]\nmin_second = 6\n', "unexpected keys min_second"),
        ('[classes.x]\ncategories = ["dog"]\nheard_as = ["Whip"]\n', "give 'audioset' too"),
        ('[classes.x]\naudioset = ["Bark"]\ncategories = ["dog"]\nheard_as = ["Wihp"]\n',
         "unknown AudioSet label.*Wihp"),
    ]:
        path = write_toml(tmp_path, 'danger = ["dog"]\nsafe = ["rain"]\n' + body)
        with pytest.raises(ValueError, match=message) as exc:
            load_mapping(path)
        assert "\n" not in str(exc.value)


def test_toml_mapping_loads(tmp_path: Path) -> None:
    path = write_toml(tmp_path, 'danger = ["glass_breaking"]\nsafe = ["rain", "wind"]\n')
    mapping = load_mapping(path)
    assert mapping.danger == ("glass_breaking",)
    assert mapping.safe == ("rain", "wind")
    assert mapping.source == str(path)


def test_unknown_category_is_an_error(tmp_path: Path) -> None:
    path = write_toml(tmp_path, 'danger = ["dog", "gunshot"]\nsafe = ["rain"]\n')
    with pytest.raises(ValueError, match=r"unknown ESC-50 category in 'danger': gunshot") as exc:
        load_mapping(path)
    assert str(path) in str(exc.value)
    assert "\n" not in str(exc.value)


@pytest.mark.parametrize("text, empty", [('danger = []\nsafe = ["rain"]\n', "danger"),
                                         ('danger = ["dog"]\n', "safe")])
def test_empty_class_is_an_error(tmp_path: Path, text: str, empty: str) -> None:
    with pytest.raises(ValueError, match=f"class '{empty}' has no categories"):
        load_mapping(write_toml(tmp_path, text))


def test_category_in_both_classes_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="in both danger and safe: dog"):
        load_mapping(write_toml(tmp_path, 'danger = ["dog"]\nsafe = ["dog", "rain"]\n'))


def test_unexpected_key_and_bad_toml(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unexpected keys neutral"):
        load_mapping(write_toml(tmp_path, 'danger = ["dog"]\nsafe = ["rain"]\nneutral = []\n'))
    with pytest.raises(ValueError, match="unreadable mapping TOML"):
        load_mapping(write_toml(tmp_path, "danger = [dog"))
    with pytest.raises(FileNotFoundError, match="mapping file not found"):
        load_mapping(tmp_path / "absent.toml")


def test_esc10_default_mapping_names_missing_categories(
        esc10_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        clips = read_dataset(esc10_dir, binary_mapping())
    assert "no clips here for 3 mapped categories (siren, wind, keyboard_typing)" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]  # news, not a problem
    assert len(clips) == 240
    assert sum(c.label for c in clips) == 120
    broad = read_dataset(esc10_dir, default_mapping())  # every ESC-10 category is mapped
    assert len(broad) == 400 and sum(c.label for c in broad) == 120
    assert {c.danger_class for c in broad if c.label} == {"dog_bark", "baby_cry", "chainsaw"}
    assert {c.fold for c in clips} == {1, 2, 3, 4, 5}
    assert all(c.path.suffix == ".flac" and c.path.is_file() for c in clips)


def test_class_without_clips_is_an_error(esc10_dir: Path, tmp_path: Path) -> None:
    path = write_toml(tmp_path, 'danger = ["siren"]\nsafe = ["rain"]\n')  # no siren in ESC-10
    with pytest.raises(ValueError, match="class 'danger' has no clips"):
        read_dataset(esc10_dir, load_mapping(path))


def test_per_fold_limit(esc10_dir: Path) -> None:
    clips = read_dataset(esc10_dir, binary_mapping(), per_fold_limit=2)
    assert len(clips) == 6 * 5 * 2
