"""Which ESC-50 categories count as danger and which as safe (TOML, with a built-in default).

A mapping file is TOML with two lists of ESC-50 category names::

    danger = ["dog", "crying_baby", "siren", "chainsaw"]
    safe = ["rain", "clock_tick", "wind", "sea_waves", "keyboard_typing"]

Categories in neither list are left out of training. Unknown names, a name in both lists, or
an empty list are errors (``ValueError``, one line); a mapped category with no clips in the
data is only a warning (``dataset.read_dataset``).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edge_runtime.manifest import Manifest

CLASSES = ("safe", "danger")  # label 0, label 1: classifier column 1 is p(danger)

# The 50 ESC-50 categories (Piczak 2015), by target index 0..49.
ESC50_CATEGORIES = (
    "dog", "rooster", "pig", "cow", "frog", "cat", "hen", "insects", "sheep", "crow",
    "rain", "sea_waves", "crackling_fire", "crickets", "chirping_birds", "water_drops", "wind",
    "pouring_water", "toilet_flush", "thunderstorm",
    "crying_baby", "sneezing", "clapping", "breathing", "coughing", "footsteps", "laughing",
    "brushing_teeth", "snoring", "drinking_sipping",
    "door_wood_knock", "mouse_click", "keyboard_typing", "door_wood_creaks", "can_opening",
    "washing_machine", "vacuum_cleaner", "clock_alarm", "clock_tick", "glass_breaking",
    "helicopter", "chainsaw", "siren", "car_horn", "engine", "train", "church_bells",
    "airplane", "fireworks", "hand_saw",
)

DEFAULT_DANGER = ("dog", "crying_baby", "siren", "chainsaw")
DEFAULT_SAFE = ("rain", "clock_tick", "wind", "sea_waves", "keyboard_typing")


@dataclass(frozen=True)
class Mapping:
    """Category → class assignment; ``source`` says where it came from (file path or default)."""

    danger: tuple[str, ...]
    safe: tuple[str, ...]
    source: str = "default"

    def label(self, category: str) -> int | None:
        """1 for danger, 0 for safe, None for a category left out."""
        if category in self.danger:
            return 1
        if category in self.safe:
            return 0
        return None

    def as_dict(self) -> dict[str, object]:
        return {"danger": list(self.danger), "safe": list(self.safe), "source": self.source}


def validate(danger: list[str], safe: list[str], source: str) -> Mapping:
    """Check names against the 50 ESC-50 categories and return the mapping."""
    for name, cats in (("danger", danger), ("safe", safe)):
        if not cats:
            raise ValueError(f"{source}: class '{name}' has no categories; list at least one")
        unknown = sorted(set(cats) - set(ESC50_CATEGORIES))
        if unknown:
            plural = "y" if len(unknown) == 1 else "ies"
            raise ValueError(f"{source}: unknown ESC-50 categor{plural} in '{name}': "
                             f"{', '.join(unknown)} (see training.mapping."
                             "ESC50_CATEGORIES for the 50 names)")
    both = sorted(set(danger) & set(safe))
    if both:
        raise ValueError(f"{source}: categories in both danger and safe: {', '.join(both)}")
    return Mapping(tuple(dict.fromkeys(danger)), tuple(dict.fromkeys(safe)), source)


def default_mapping() -> Mapping:
    return validate(list(DEFAULT_DANGER), list(DEFAULT_SAFE), "default")


def load_mapping(path: str | Path | None) -> Mapping:
    """The mapping in TOML file ``path``, or the default one when ``path`` is None."""
    if path is None:
        return default_mapping()
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: mapping file not found") from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"{path}: unreadable mapping TOML ({exc})") from exc
    extra = sorted(set(data) - {"danger", "safe"})
    if extra:
        raise ValueError(f"{path}: unexpected keys {', '.join(extra)}; "
                         "expected 'danger' and 'safe'")
    lists = {}
    for key in ("danger", "safe"):
        value = data.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValueError(f"{path}: '{key}' must be a list of category names")
        lists[key] = value
    return validate(lists["danger"], lists["safe"], str(path))


def manifest_mapping(manifest: Manifest) -> Mapping:
    """The danger/safe mapping a model dir was trained with (the default if it has none)."""
    section = manifest.classifier.mapping if manifest.classifier else None
    if not section:
        return default_mapping()
    return validate(list(section["danger"]), list(section["safe"]),
                    str(section.get("source", "manifest")))
