"""Which categories count as danger and which as safe, and the named danger classes (TOML).

A mapping file is TOML with two lists of ESC-50 category names and, optionally, a table of
danger classes (the packaged default, ``training/default_mapping.toml``, has nine)::

    danger = ["dog", "crying_baby", "siren", "chainsaw"]
    safe = ["rain", "clock_tick", "wind", "sea_waves", "keyboard_typing"]

    [classes.dog_bark]
    audioset = ["Dog", "Bark"]            # zero-shot evidence from the AudioSet head
    categories = ["dog", "dog_bark"]      # training categories (ESC-50 or --extra labels.csv)
    min_seconds = 0                       # optional: how long it must last to count (0-60 s)
    heard_as = ["Growling"]               # optional: labels the head often gives its sounds

Categories in neither list are left out of training. Unknown names, a name in both lists, an
empty list, an unknown AudioSet label or a danger category that belongs to no class are errors
(``ValueError``, one line); a mapped category with no clips in the data is only a warning
(``dataset.read_dataset``). A mapping without ``[classes]`` builds the old binary model.
"""

from __future__ import annotations

import csv
import re
import tomllib
from dataclasses import dataclass
from functools import cache
from importlib import resources
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


DEFAULT_MIN_CLIPS = 8  # fewer training clips than this: a class relies on its AudioSet labels
MAX_MIN_SECONDS = 60.0  # bound of a class's min_seconds (the manifest's classes.min_seconds)
NAME = re.compile(r"^[a-z0-9_]{1,64}$")


@dataclass(frozen=True)
class DangerClass:
    """One named danger class, its evidence (training categories, AudioSet labels) and how
    long it must last before it counts (``min_seconds``, :mod:`edge_runtime.persistence`).
    ``heard_as``: AudioSet labels the head often gives the class's real sounds (gunshots heard
    as fireworks): the head gate of a trained class accepts them, zero-shot scores never use
    them."""

    name: str
    audioset: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    min_seconds: float = 0.0
    heard_as: tuple[str, ...] = ()


@dataclass(frozen=True)
class Mapping:
    """Category → danger/safe assignment and the danger classes; ``source`` says where it came
    from (file path or default)."""

    danger: tuple[str, ...]
    safe: tuple[str, ...]
    source: str = "default"
    classes: tuple[DangerClass, ...] = ()
    min_clips: int = DEFAULT_MIN_CLIPS

    def class_of(self, category: str) -> str | None:
        """The danger class whose training categories include ``category`` (None if none)."""
        for cls in self.classes:
            if category in cls.categories:
                return cls.name
        return None

    def label(self, category: str) -> int | None:
        """1 for danger, 0 for safe, None for a category left out."""
        if category in self.danger:
            return 1
        if category in self.safe:
            return 0
        return None

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"danger": list(self.danger), "safe": list(self.safe),
                                  "source": self.source}
        if self.classes:
            out["classes"] = {c.name: {"audioset": list(c.audioset),
                                       "categories": list(c.categories),
                                       **({"min_seconds": c.min_seconds} if c.min_seconds
                                          else {}),
                                       **({"heard_as": list(c.heard_as)} if c.heard_as
                                          else {})} for c in self.classes}
            out["min_clips"] = self.min_clips
        return out


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


def binary_mapping() -> Mapping:
    """The original two-list mapping (no classes): the seed's binary danger/safe model."""
    return validate(list(DEFAULT_DANGER), list(DEFAULT_SAFE), "binary default")


def default_mapping() -> Mapping:
    """The packaged ``default_mapping.toml``: broad safe categories and nine danger classes."""
    text = resources.files("training").joinpath("default_mapping.toml").read_text("utf-8")
    return parse_mapping(tomllib.loads(text), "default")


@cache
def audioset_labels() -> tuple[str, ...]:
    """The 527 AudioSet display names in head order (the runtime's packaged list)."""
    text = resources.files("edge_runtime").joinpath(
        "data/audioset_class_labels_indices.csv").read_text("utf-8")
    return tuple(row["display_name"] for row in csv.DictReader(text.splitlines()))


def _str_list(value: object, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{where} must be a list of names")
    return list(value)


def parse_classes(table: object, source: str) -> tuple[DangerClass, ...]:
    """Validate the ``[classes.NAME]`` tables of a mapping."""
    if not isinstance(table, dict) or not table:
        raise ValueError(f"{source}: 'classes' must hold at least one [classes.NAME] table")
    known = set(audioset_labels())
    out = []
    for name, spec in table.items():
        where = f"{source}: classes.{name}"
        if not NAME.match(name):
            raise ValueError(f"{where}: class names are 1-64 characters of a-z, 0-9 and _")
        if not isinstance(spec, dict):
            raise ValueError(f"{where} must be a table")
        unexpected = sorted(set(spec) - {"audioset", "categories", "min_seconds", "heard_as"})
        if unexpected:
            raise ValueError(f"{where}: unexpected keys {', '.join(unexpected)}; expected "
                             "'audioset', 'categories', 'min_seconds' and 'heard_as'")
        audioset = _str_list(spec.get("audioset", []), f"{where}.audioset")
        categories = _str_list(spec.get("categories", []), f"{where}.categories")
        heard_as = _str_list(spec.get("heard_as", []), f"{where}.heard_as")
        unknown = sorted(set(audioset + heard_as) - known)
        if unknown:
            raise ValueError(f"{where}: unknown AudioSet label(s) {', '.join(unknown)} (see "
                             "edge_runtime/data/audioset_class_labels_indices.csv)")
        if not audioset and not categories:
            raise ValueError(f"{where}: give 'audioset' labels, 'categories', or both")
        persist = spec.get("min_seconds", 0.0)
        if (isinstance(persist, bool) or not isinstance(persist, int | float)
                or not 0.0 <= persist <= MAX_MIN_SECONDS):  # NaN fails too
            raise ValueError(f"{where}.min_seconds must be a number of seconds in "
                             f"[0, {MAX_MIN_SECONDS:g}], got {persist!r}")
        if heard_as and not audioset:
            raise ValueError(f"{where}: 'heard_as' widens the head gate of 'audioset' labels; "
                             "give 'audioset' too")
        out.append(DangerClass(name, tuple(audioset), tuple(categories), float(persist),
                               tuple(heard_as)))
    return tuple(out)


def parse_mapping(data: dict[str, object], source: str) -> Mapping:
    """A mapping from parsed TOML (``source`` names it in errors)."""
    extra = sorted(set(data) - {"danger", "safe", "classes", "min_clips"})
    if extra:
        raise ValueError(f"{source}: unexpected keys {', '.join(extra)}; "
                         "expected 'danger', 'safe', 'classes' and 'min_clips'")
    lists = {key: _str_list(data.get(key, []), f"{source}: '{key}'")
             for key in ("danger", "safe")}
    mapping = validate(lists["danger"], lists["safe"], source)
    if "classes" not in data:
        return mapping
    classes = parse_classes(data["classes"], source)
    min_clips = data.get("min_clips", DEFAULT_MIN_CLIPS)
    if not isinstance(min_clips, int) or isinstance(min_clips, bool) or not 1 <= min_clips <= 10000:
        raise ValueError(f"{source}: min_clips must be an integer in [1, 10000]")
    mapping = Mapping(mapping.danger, mapping.safe, source, classes, min_clips)
    orphans = [c for c in mapping.danger if mapping.class_of(c) is None]
    if orphans:
        raise ValueError(f"{source}: danger categor{'y' if len(orphans) == 1 else 'ies'} "
                         f"{', '.join(orphans)} belong(s) to no class; add to a class's "
                         "'categories'")
    return mapping


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
    return parse_mapping(data, str(path))


def manifest_mapping(manifest: Manifest) -> Mapping:
    """The danger/safe lists a model dir was trained with, as a binary mapping (the binary
    default when the manifest has none): what the fold-CV commands re-fit."""
    section = manifest.classifier.mapping if manifest.classifier else None
    if not section:
        return binary_mapping()
    return validate(list(section["danger"]), list(section["safe"]),
                    str(section.get("source", "manifest")))
