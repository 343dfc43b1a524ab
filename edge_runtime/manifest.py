"""The model directory contract: ``manifest.json`` plus the files it lists, as one typed value.

The manifest is the only thing the workbench (``export/``, ``training/``) and the device
(``edge_runtime``) share. It is parsed and validated here, once, into a frozen
:class:`Manifest`; nothing else reads it by key path. Every field is type- and range-checked
(one line naming the field on error), sizes are bounded so a manifest cannot make the device
allocate gigabytes, and every listed file must lie inside the model dir (no ``..``, no absolute
path, no symlink leading out) and match its sha256 and size before it is loaded.

Format versions: 2 adds the optional ``classes`` section, stores only the name of the training
data folder, and defines the model id over the whole manifest; 3 adds the ``frontend`` graph; 4
the window loudness gain (``gain.onnx``, ``streaming.gain_*``). A manifest is written as the
lowest version that holds it; version 1 is read and upgraded in memory.

The model id (:meth:`Manifest.model_id`) is the sha256 of the canonical JSON of the manifest
(sorted keys, no whitespace) without the volatile fields :data:`VOLATILE` (when and how fast it
was written; format 1 only, exports now keep them in ``.workbench/export.json``) and without the
``workbench`` section (workbench files such as ``end_to_end.onnx``, never deployed, so a model dir
and its device bundle share one id). The files' sha256 are part of it, so any edit of a device
file or of the manifest changes it; ``edge-detect --expect-model ID`` refuses any other model.

``files`` lists what the device loads (a graph's external weights as role ``<graph>_data``);
``workbench`` lists tracked workbench files; both are confined to the model dir.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from edge_runtime.atomic import write_json

MANIFEST_NAME = "manifest.json"
FORMAT = "edge-detect-model"
FORMAT_VERSION = 4
READABLE_VERSIONS = (1, 2, 3, 4)
# Version 3 adds the ``frontend`` role (backbone.onnx then reads the front end's log-mel, not the
# waveform): a manifest is written as 3 only when it lists one, so runtimes that know version 2
# refuse it with one line instead of failing at the first chunk; other model dirs stay 2.
FRONTEND_VERSION = 3
# Version 4 adds the window loudness gain (``streaming.gain_max_db`` > 0, ``gain.onnx``): a
# runtime that knew 3 would silently embed without it, so such a manifest is written as 4.
GAIN_VERSION = 4
VOLATILE = ("created", "export_seconds")  # format 1 only: now in .workbench/export.json
WORKBENCH_DIR = ".workbench"  # inside a model dir: files the device never loads
WORKBENCH_SECTION = "workbench"  # manifest section listing tracked workbench files

DEFAULT_CHUNK_SECONDS = 1.0  # the hop: the backbone runs once per chunk
DEFAULT_WINDOW_CHUNKS = 5  # a window pools its last 5 chunks (5 s)

MAX_MANIFEST_BYTES = 4 << 20
MAX_FILE_BYTES = 2 << 30  # protobuf's own limit for one ONNX file
MAX_TEXT_BYTES = 4 << 20  # labels and other text files are read whole
TEXT_ROLES = ("labels",)
SAMPLE_RATE_RANGE = (8000, 192000)
MAX_CHUNK_SECONDS = 30
MAX_WINDOW_CHUNKS = 64
MAX_WINDOW_SECONDS = 120
MAX_DIM = 1 << 16
MAX_CLASSES = 1024  # bound of classifier.danger_column
MAX_NAMED_CLASSES = 256
ROLE_RE = re.compile(r"[a-z][a-z0-9_]*\Z")
NAME_RE = re.compile(r"[a-z0-9_]+\Z")
SHA_RE = re.compile(r"[0-9a-f]{64}\Z")
EVIDENCE = ("trained", "audioset")
WINDOW_EMBEDDINGS = ("chunked", "whole")
LEVEL_GATE_RANGE = (-120.0, 0.0)
GAIN_TARGET_RANGE = (-60.0, 0.0)  # streaming.gain_target_dbfs
GAIN_TARGET_DEFAULT = -20.0
GAIN_MAX_RANGE = (0.0, 40.0)  # streaming.gain_max_db (0: no loudness gain)
MIN_SECONDS_RANGE = (0.0, 60.0)  # classes.min_seconds (edge_runtime.persistence)


class ManifestError(RuntimeError):
    """The model directory is missing, malformed, or a file fails its checks (one line)."""


def sha256_file(path: str | os.PathLike[str], block: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(block):
            digest.update(chunk)
    return digest.hexdigest()


# --- field checks ---------------------------------------------------------------------------

class _Fields:
    """Typed reads from one JSON object; errors name ``where`` and the dotted field."""

    def __init__(self, data: Any, where: str, prefix: str = "") -> None:
        label = prefix.rstrip(".") or "manifest"
        if not isinstance(data, dict):
            raise ManifestError(f"{where}: {label} must be a JSON object, got "
                                f"{_kind(data)}")
        self.data, self.where, self.prefix = data, where, prefix

    def fail(self, key: str, problem: str) -> ManifestError:
        return ManifestError(f"{self.where}: {self.prefix}{key} {problem}")

    def has(self, key: str) -> bool:
        return self.data.get(key) is not None

    def raw(self, key: str, required: bool = True) -> Any:
        if key not in self.data or self.data[key] is None:
            if required:
                raise self.fail(key, "is missing")
            return None
        return self.data[key]

    def integer(self, key: str, lo: int, hi: int, default: int | None = None,
                required: bool = True) -> int | None:
        value = self.raw(key, required and default is None)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(key, f"must be an integer, got {_kind(value)}")
        if not lo <= value <= hi:
            raise self.fail(key, f"must be in [{lo}, {hi}], got {value}")
        return value

    def number(self, key: str, lo: float, hi: float, *, open_range: bool = False,
               required: bool = True) -> float | None:
        value = self.raw(key, required)
        if value is None:
            return None
        return _number(value, lo, hi, open_range, lambda p: self.fail(key, p))

    def string(self, key: str, default: str | None = None, required: bool = True,
               max_len: int = 4096) -> str | None:
        value = self.raw(key, required and default is None)
        if value is None:
            return default
        if not isinstance(value, str):
            raise self.fail(key, f"must be a string, got {_kind(value)}")
        if len(value) > max_len:
            raise self.fail(key, f"is longer than {max_len} characters")
        return value

    def obj(self, key: str, required: bool = False) -> dict[str, Any] | None:
        value = self.raw(key, required)
        if value is None:
            return None
        if not isinstance(value, dict):
            raise self.fail(key, f"must be a JSON object, got {_kind(value)}")
        return value

    def sub(self, key: str) -> _Fields:
        return _Fields(self.raw(key), self.where, f"{self.prefix}{key}.")

    def rest(self, known: set[str]) -> dict[str, Any]:
        return {k: v for k, v in self.data.items() if k not in known}


def _kind(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
             int: "an integer", float: "a number", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _number(value: Any, lo: float, hi: float, open_range: bool, fail) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise fail(f"must be a number, got {_kind(value)}")
    value = float(value)
    inside = (lo < value < hi) if open_range else (lo <= value <= hi)
    if not math.isfinite(value) or not inside:
        brackets = f"({lo:g}, {hi:g})" if open_range else f"[{lo:g}, {hi:g}]"
        raise fail(f"must be a finite number in {brackets}, got {value!r}")
    return value


# --- sections -------------------------------------------------------------------------------

class _Replace:
    def replace(self, **changes: Any) -> Any:
        """A copy with ``changes`` (frozen dataclasses)."""
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class FileEntry(_Replace):
    """One listed file: a path relative to the model dir, its sha256 and size in bytes."""

    path: str
    sha256: str
    bytes: int

    @classmethod
    def parse(cls, f: _Fields) -> FileEntry:
        path = f.string("path", max_len=255)
        if not path_is_confined(path):
            raise f.fail("path", f"must be a plain relative path inside the model dir, "
                                 f"got {path!r}")
        sha = f.string("sha256", max_len=64)
        if not SHA_RE.match(sha):
            raise f.fail("sha256", "must be 64 lowercase hex digits")
        return cls(path, sha, f.integer("bytes", 0, MAX_FILE_BYTES))

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "sha256": self.sha256, "bytes": self.bytes}


def path_is_confined(path: str) -> bool:
    """True for a non-empty relative POSIX path without ``..``, ``.``-only or odd characters."""
    if not path or "\\" in path or "\0" in path or path.startswith("/") or ":" in path:
        return False
    parts = PurePosixPath(path).parts
    return bool(parts) and all(p not in ("", ".", "..") for p in parts)


@dataclass(frozen=True)
class Backbone(_Replace):
    name: str
    frame_dim: int
    embedding_dim: int
    description: str = ""
    checkpoint: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, f: _Fields) -> Backbone:
        known = {"name", "frame_dim", "embedding_dim", "description", "checkpoint"}
        return cls(f.string("name", max_len=200), f.integer("frame_dim", 1, MAX_DIM),
                   f.integer("embedding_dim", 1, MAX_DIM), f.string("description", ""),
                   f.obj("checkpoint") or {}, f.rest(known))

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description,
                "checkpoint": self.checkpoint, "frame_dim": self.frame_dim,
                "embedding_dim": self.embedding_dim, **self.extra}


@dataclass(frozen=True)
class InputSpec(_Replace):
    sample_rate: int
    min_samples: int
    dtype: str = "float32"
    channels: int = 1
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, f: _Fields) -> InputSpec:
        rate = f.integer("sample_rate", *SAMPLE_RATE_RANGE)
        dtype = f.string("dtype", "float32")
        if dtype != "float32":
            raise f.fail("dtype", f"must be 'float32', got {dtype!r}")
        return cls(rate, f.integer("min_samples", 1, MAX_CHUNK_SECONDS * rate), dtype,
                   f.integer("channels", 1, 1, default=1),
                   f.rest({"sample_rate", "min_samples", "dtype", "channels"}))

    def to_dict(self) -> dict[str, Any]:
        return {"sample_rate": self.sample_rate, "dtype": self.dtype,
                "channels": self.channels, "min_samples": self.min_samples, **self.extra}


@dataclass(frozen=True)
class Streaming(_Replace):
    """The backbone runs once per ``chunk_samples`` (the hop); a window is ``window_chunks``
    chunks, embedded by pooling its chunks' frames (``chunked``) or by one backbone pass over
    its chunks' cached backbone inputs (``whole``); ``chunk_decisions``: each chunk scored alone
    may decide too; ``window_stride``: a window is scored every this many chunks (the decision
    interval); ``gain_max_db`` > 0 (``whole`` windows, ``gain.onnx``): each window is heard
    raised toward ``gain_target_dbfs`` by at most that many dB (:mod:`edge_runtime.loudness`)."""

    chunk_samples: int
    window_chunks: int
    window_embedding: str = "chunked"
    chunk_decisions: bool = True
    window_stride: int = 1
    gain_target_dbfs: float = GAIN_TARGET_DEFAULT
    gain_max_db: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    KNOWN = ("chunk_samples", "window_chunks", "window_embedding", "chunk_decisions",
             "window_stride", "gain_target_dbfs", "gain_max_db")

    @property
    def gain_on(self) -> bool:
        """Whether quiet windows are heard raised (``gain_max_db`` > 0)."""
        return self.gain_max_db > 0

    @classmethod
    def parse(cls, f: _Fields, sample_rate: int) -> Streaming:
        chunk = f.integer("chunk_samples", max(1, sample_rate // 100),
                          MAX_CHUNK_SECONDS * sample_rate)
        window = f.integer("window_chunks", 1, MAX_WINDOW_CHUNKS)
        if chunk * window > MAX_WINDOW_SECONDS * sample_rate:
            raise f.fail("window_chunks", f"× chunk_samples spans more than "
                                          f"{MAX_WINDOW_SECONDS} s of audio")
        mode = f.string("window_embedding", "chunked", max_len=20)
        if mode not in WINDOW_EMBEDDINGS:
            raise f.fail("window_embedding", f"must be one of {', '.join(WINDOW_EMBEDDINGS)}, "
                                             f"got {mode!r}")
        decide = f.raw("chunk_decisions", required=False)
        if decide is not None and not isinstance(decide, bool):
            raise f.fail("chunk_decisions", f"must be true or false, got {_kind(decide)}")
        stride = f.integer("window_stride", 1, window, default=1)
        target = f.number("gain_target_dbfs", *GAIN_TARGET_RANGE, required=False)
        max_db = f.number("gain_max_db", *GAIN_MAX_RANGE, required=False)
        max_db = 0.0 if max_db is None else max_db
        if max_db > 0 and mode != "whole":
            raise f.fail("gain_max_db", "needs window_embedding 'whole' (a window's log-mel "
                                        f"is what gain.onnx raises), got {mode!r}")
        return cls(chunk, window, mode, True if decide is None else decide, stride,
                   GAIN_TARGET_DEFAULT if target is None else target, max_db,
                   f.rest(set(cls.KNOWN)))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"chunk_samples": self.chunk_samples,
                               "window_chunks": self.window_chunks}
        if self.window_embedding != "chunked":
            out["window_embedding"] = self.window_embedding
        if not self.chunk_decisions:
            out["chunk_decisions"] = False
        if self.window_stride != 1:
            out["window_stride"] = self.window_stride
        if self.gain_on:
            out |= {"gain_target_dbfs": self.gain_target_dbfs, "gain_max_db": self.gain_max_db}
        return {**out, **self.extra}


@dataclass(frozen=True)
class ClassifierSpec(_Replace):
    """The binary danger classifier: ``classifier.onnx``'s float ``output`` [batch, 2], column
    ``danger_column`` = p(danger); ``threshold`` its operating point. The other fields record
    how it was trained (free-form, for reports)."""

    kind: str
    threshold: float | None = None
    input: str = "embedding"
    output: str | None = None  # None (format 1): the runtime picks the float output
    danger_column: int = 1
    classes: tuple[str, ...] = ()
    mapping: dict[str, Any] | None = None
    threshold_target: dict[str, Any] | None = None
    cv: dict[str, Any] | None = None
    trained_on: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    FREE = ("mapping", "threshold_target", "cv", "trained_on")

    @classmethod
    def parse(cls, f: _Fields) -> ClassifierSpec:
        classes = f.raw("classes", False) or []
        if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
            raise f.fail("classes", "must be a list of strings")
        free = {key: f.obj(key) for key in cls.FREE}
        known = {"kind", "threshold", "input", "output", "danger_column", "classes", *cls.FREE}
        return cls(kind=f.string("kind", "", max_len=200),
                   threshold=f.number("threshold", 0.0, 1.0, open_range=True, required=False),
                   input=f.string("input", "embedding", max_len=200),
                   output=f.string("output", required=False, max_len=200),
                   danger_column=f.integer("danger_column", 0, MAX_CLASSES - 1, default=1),
                   classes=tuple(classes), **free, extra=f.rest(known))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "input": self.input}
        if self.output is not None:
            out["output"] = self.output
        out["danger_column"] = self.danger_column
        if self.threshold is not None:
            out["threshold"] = self.threshold
        if self.classes:
            out["classes"] = list(self.classes)
        for key in self.FREE:
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        return {**out, **self.extra}


@dataclass(frozen=True)
class ClassSpec(_Replace):
    """Named danger classes: ``output`` [batch, K] of classifier.onnx, one column per name, in
    ``names`` order; ``thresholds`` one per class on the raw score scale; windows quieter than
    ``level_gate_dbfs`` are never danger; ``calibration`` records how thresholds were chosen;
    ``min_seconds`` one per class: how long it must last before it counts
    (:mod:`edge_runtime.persistence`; empty or absent: 0 for every class)."""

    names: tuple[str, ...]
    thresholds: tuple[float, ...]
    output: str = "class_scores"
    evidence: tuple[str, ...] = EVIDENCE
    level_gate_dbfs: float = LEVEL_GATE_RANGE[0]
    calibration: dict[str, Any] = field(default_factory=dict)
    min_seconds: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if not self.min_seconds:  # no persistence: one 0 per class
            object.__setattr__(self, "min_seconds", (0.0,) * len(self.names))

    @classmethod
    def parse(cls, f: _Fields) -> ClassSpec:
        names = f.raw("names")
        if (not isinstance(names, list) or not 1 <= len(names) <= MAX_NAMED_CLASSES
                or not all(isinstance(n, str) and NAME_RE.match(n) for n in names)):
            raise f.fail("names", f"must be a list of 1 to {MAX_NAMED_CLASSES} names of "
                                  "[a-z0-9_]")
        if len(set(names)) != len(names):
            raise f.fail("names", "must be unique")
        thresholds = f.raw("thresholds")
        if not isinstance(thresholds, list) or len(thresholds) != len(names):
            raise f.fail("thresholds", f"must be a list of {len(names)} numbers (one per name)")
        values = tuple(_number(t, 0.0, 1.0, True,
                               lambda p, i=i: f.fail(f"thresholds[{i}]", p))
                       for i, t in enumerate(thresholds))
        evidence = f.raw("evidence", required=False)
        evidence = list(EVIDENCE) if evidence is None else evidence
        if (not isinstance(evidence, list) or not evidence
                or not all(isinstance(e, str) and e in EVIDENCE for e in evidence)
                or len(set(evidence)) != len(evidence)):
            raise f.fail("evidence", f"must be a non-empty list of distinct values from "
                                     f"{list(EVIDENCE)}")
        persist = f.raw("min_seconds", required=False)
        persist = [0.0] * len(names) if persist is None else persist
        if not isinstance(persist, list) or len(persist) != len(names):
            raise f.fail("min_seconds", f"must be a list of {len(names)} numbers (one per name)")
        min_seconds = tuple(_number(m, *MIN_SECONDS_RANGE, False,
                                    lambda p, i=i: f.fail(f"min_seconds[{i}]", p))
                            for i, m in enumerate(persist))
        extra = f.rest({"names", "output", "thresholds", "evidence", "level_gate_dbfs",
                        "calibration", "min_seconds"})
        if extra:
            raise f.fail(sorted(extra)[0], "is not a known field (free-form notes go in "
                                           "classes.calibration)")
        gate = f.number("level_gate_dbfs", *LEVEL_GATE_RANGE, required=False)
        return cls(tuple(names), values, f.string("output", "class_scores", max_len=200),
                   tuple(evidence), LEVEL_GATE_RANGE[0] if gate is None else gate,
                   f.obj("calibration") or {}, min_seconds)

    def with_thresholds(self, thresholds: list[float] | tuple[float, ...]) -> ClassSpec:
        """A copy with other per-class thresholds (calibration)."""
        return self.replace(thresholds=tuple(float(t) for t in thresholds))

    def summary(self) -> str:
        """Each class's threshold (raw score) and the seconds it must last, in one line:
        ``smoke_alarm 0.5 held 6 s, gunshot 0.9837, ...``."""
        return ", ".join(f"{n} {t:.4g}" + (f" held {m:g} s" if m > 0 else "")
                         for n, t, m in zip(self.names, self.thresholds, self.min_seconds,
                                            strict=True))

    def to_dict(self) -> dict[str, Any]:
        out = {"names": list(self.names), "output": self.output,
               "thresholds": list(self.thresholds), "evidence": list(self.evidence),
               "level_gate_dbfs": self.level_gate_dbfs}
        if any(m > 0 for m in self.min_seconds):  # absent when 0: older model ids stay valid
            out["min_seconds"] = list(self.min_seconds)
        return {**out, "calibration": self.calibration} if self.calibration else out

    def as_dict(self) -> dict[str, Any]:
        """:meth:`to_dict` with thresholds rounded to 6 digits (for reports)."""
        return {**self.to_dict(), "thresholds": [round(t, 6) for t in self.thresholds]}


# --- the manifest ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Manifest(_Replace):
    """A parsed, validated ``manifest.json``. Build changed copies with :meth:`replace`."""

    backbone: Backbone
    input: InputSpec
    streaming: Streaming
    files: dict[str, FileEntry]
    classifier: ClassifierSpec | None = None
    classes: ClassSpec | None = None
    quantization: dict[str, Any] | None = None
    opset: int | None = None
    tools: dict[str, Any] = field(default_factory=dict)
    created: str | None = None
    export_seconds: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    workbench: dict[str, FileEntry] = field(default_factory=dict)

    KNOWN = ("format", "format_version", "backbone", "input", "streaming", "files", "classifier",
             "classes", "quantization", "opset", "tools", "created", "export_seconds",
             WORKBENCH_SECTION)

    # reading
    @classmethod
    def from_dict(cls, data: Any, where: str = MANIFEST_NAME) -> Manifest:
        """Validate ``data`` (the JSON value of a manifest); raise ManifestError naming the
        first bad field."""
        f = _Fields(data, where)
        if data.get("format") != FORMAT:
            raise ManifestError(f"{where}: not an edge-detect manifest "
                                f"(format={data.get('format')!r})")
        version = data.get("format_version")
        if isinstance(version, int) and not isinstance(version, bool) \
                and version > FORMAT_VERSION:
            raise ManifestError(f"{where}: format_version {version} is newer than this "
                                f"runtime understands ({FORMAT_VERSION})")
        version = f.integer("format_version", min(READABLE_VERSIONS), FORMAT_VERSION)
        if version == 1:
            data = upgrade_v1(data)
            f = _Fields(data, where)
        inp = InputSpec.parse(f.sub("input"))
        files_f = f.sub("files")
        files = _file_entries(files_f)
        for role in ("backbone", "pooling"):
            if role not in files:
                raise files_f.fail(role, "is missing")
        if "frontend" in files and version < FRONTEND_VERSION:
            raise files_f.fail("frontend", f"needs format_version {FRONTEND_VERSION} "
                                           f"(the manifest says {version})")
        streaming_f = f.sub("streaming")
        streaming = Streaming.parse(streaming_f, inp.sample_rate)
        if streaming.gain_on:
            for role, why in (("gain", "is missing (streaming.gain_max_db is set)"),
                              ("frontend", "is missing (streaming.gain_max_db raises the front "
                                           "end's log-mel)")):
                if role not in files:
                    raise files_f.fail(role, why)
            if version < GAIN_VERSION:
                raise streaming_f.fail("gain_max_db", f"needs format_version {GAIN_VERSION} "
                                                      f"(the manifest says {version})")
        workbench = _file_entries(f.sub(WORKBENCH_SECTION)) if f.has(WORKBENCH_SECTION) else {}
        paths = [e.path for e in (*files.values(), *workbench.values())]
        if len(set(paths)) != len(paths):
            raise ManifestError(f"{where}: files lists one path for two roles")
        opset = f.integer("opset", 1, 1000, required=False)
        tools = f.obj("tools") or {}
        return cls(
            backbone=Backbone.parse(f.sub("backbone")), input=inp,
            streaming=streaming, files=files,
            classifier=(ClassifierSpec.parse(f.sub("classifier"))
                        if f.has("classifier") else None),
            classes=ClassSpec.parse(f.sub("classes")) if f.has("classes") else None,
            quantization=f.obj("quantization"), opset=opset, tools=tools,
            created=f.string("created", required=False, max_len=100),
            export_seconds=f.obj("export_seconds"), extra=f.rest(set(cls.KNOWN)),
            workbench=workbench)

    @classmethod
    def load(cls, model_dir: str | os.PathLike[str]) -> Manifest:
        return load_manifest(model_dir)

    @property
    def format_version(self) -> int:
        """The version this manifest is written as: 4 with a window loudness gain, 3 when a
        front end graph is listed, else 2 (what older runtimes still read)."""
        if self.streaming.gain_on:
            return GAIN_VERSION
        return FRONTEND_VERSION if "frontend" in self.files else 2

    # writing
    def to_dict(self) -> dict[str, Any]:
        """The JSON value (version :attr:`format_version`)."""
        out: dict[str, Any] = {"format": FORMAT, "format_version": self.format_version}
        if self.created is not None:
            out["created"] = self.created
        out |= {"backbone": self.backbone.to_dict(), "input": self.input.to_dict(),
                "streaming": self.streaming.to_dict()}
        if self.opset is not None:
            out["opset"] = self.opset
        out["files"] = {role: e.to_dict() for role, e in self.files.items()}
        if self.tools:
            out["tools"] = self.tools
        if self.export_seconds is not None:
            out["export_seconds"] = self.export_seconds
        if self.classifier is not None:
            out["classifier"] = self.classifier.to_dict()
        if self.classes is not None:
            out["classes"] = self.classes.to_dict()
        if self.quantization is not None:
            out["quantization"] = self.quantization
        if self.workbench:
            out[WORKBENCH_SECTION] = {role: e.to_dict() for role, e in self.workbench.items()}
        return {**out, **self.extra}

    def write(self, model_dir: str | os.PathLike[str]) -> Path:
        """Validate the round trip, then write ``model_dir/manifest.json`` atomically."""
        data = json_safe(self.to_dict())
        Manifest.from_dict(data, str(Path(model_dir) / MANIFEST_NAME))
        return write_json(Path(model_dir) / MANIFEST_NAME, data)

    def with_file(self, model_dir: str | os.PathLike[str], role: str,
                  name: str | None = None) -> Manifest:
        """A copy listing ``model_dir/name`` (default: this role's current path) as ``role``."""
        name = name or self.files[role].path
        return self.replace(files={**self.files, role: file_entry(Path(model_dir), name)})

    def with_workbench_file(self, model_dir: str | os.PathLike[str], role: str,
                            name: str) -> Manifest:
        """A copy listing ``model_dir/name`` as workbench file ``role`` (never deployed; an
        older listing of ``role`` among the device ``files`` is dropped)."""
        files = {r: e for r, e in self.files.items() if r != role}
        return self.replace(files=files, workbench={**self.workbench,
                                                    role: file_entry(Path(model_dir), name)})

    def without_workbench_file(self, role: str) -> Manifest:
        """A copy without workbench file ``role`` (nor a legacy device-file listing of it)."""
        return self.replace(files={r: e for r, e in self.files.items() if r != role},
                            workbench={r: e for r, e in self.workbench.items() if r != role})

    def workbench_path(self, model_dir: str | os.PathLike[str], role: str) -> Path | None:
        """Where workbench file ``role`` lies (``workbench`` section, else a legacy ``files``
        listing), unverified; None when not listed."""
        entry = self.workbench.get(role) or self.files.get(role)
        return None if entry is None else Path(model_dir) / entry.path

    # reading values
    def model_id(self) -> str:
        """sha256 of the canonical JSON without :data:`VOLATILE` fields and the workbench
        section (files' sha256 in): a model dir and its device bundle have the same id."""
        data = {k: v for k, v in json_safe(self.to_dict()).items()
                if k not in VOLATILE and k != WORKBENCH_SECTION}
        text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    @property
    def sample_rate(self) -> int:
        return self.input.sample_rate

    @property
    def hop_s(self) -> float:
        return self.streaming.chunk_samples / self.input.sample_rate

    @property
    def threshold(self) -> float | None:
        return None if self.classifier is None else self.classifier.threshold

    @property
    def quantized(self) -> bool:
        return bool(self.quantization)

    def path(self, model_dir: str | os.PathLike[str], role: str) -> Path | None:
        """Where ``role``'s file lies (unverified) or None when not listed."""
        entry = self.files.get(role)
        return None if entry is None else Path(model_dir) / entry.path


def _file_entries(f: _Fields) -> dict[str, FileEntry]:
    entries = {}
    for role in f.data:
        if not isinstance(role, str) or not ROLE_RE.match(role):
            raise f.fail(str(role)[:40], "is not a valid role name ([a-z0-9_])")
        entries[role] = FileEntry.parse(f.sub(role))
    return entries


def json_safe(value: Any) -> Any:
    """NaN/inf → None and numpy scalars/arrays → Python, so the manifest is strict JSON."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if hasattr(value, "tolist") and not isinstance(value, str | bytes):
        return json_safe(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


CLASS_FIELDS = ("names", "output", "thresholds", "evidence", "level_gate_dbfs", "calibration")


def upgrade_v1(data: dict[str, Any]) -> dict[str, Any]:
    """Format 1 → 2: the training data path becomes the folder's name only; notes beside the
    fields of a ``classes`` section (written by early class builds) move into its
    ``calibration``."""
    data = {**data, "format_version": 2}
    classes = data.get("classes")
    if isinstance(classes, dict):
        notes = {k: v for k, v in classes.items() if k not in CLASS_FIELDS}
        if notes and (classes.get("calibration") is None
                      or isinstance(classes.get("calibration"), dict)):
            kept = {k: v for k, v in classes.items() if k in CLASS_FIELDS}
            data["classes"] = {**kept, "calibration": {**(kept.get("calibration") or {}),
                                                       **notes}}
    clf = data.get("classifier")
    if isinstance(clf, dict) and isinstance(clf.get("trained_on"), dict):
        trained = dict(clf["trained_on"])
        if isinstance(trained.get("data"), str):
            trained["data"] = data_name(trained["data"])
        data["classifier"] = {**clf, "trained_on": trained}
    return data


def data_name(path: str | os.PathLike[str]) -> str:
    """What a manifest records of a training data folder: its name, never the build machine's
    absolute path."""
    return PurePosixPath(str(path).replace("\\", "/")).name or str(path)


# --- model dirs ---------------------------------------------------------------------------

def file_entry(model_dir: Path, name: str) -> FileEntry:
    """Manifest entry (path, sha256, bytes) for a file inside ``model_dir``."""
    path = Path(model_dir) / name
    return FileEntry(name, sha256_file(path), path.stat().st_size)


def load_manifest(model_dir: str | os.PathLike[str]) -> Manifest:
    """Read and validate ``model_dir/manifest.json`` (no checksum work)."""
    path = Path(model_dir) / MANIFEST_NAME
    if not path.is_file():
        raise ManifestError(
            f"{path}: no manifest.json — build a model dir with 'edge-train export' or "
            "'edge-train build'"
        )
    try:
        if path.stat().st_size > MAX_MANIFEST_BYTES:
            raise ManifestError(f"{path}: larger than {MAX_MANIFEST_BYTES >> 20} MiB; "
                                "not a manifest")
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as exc:
        raise ManifestError(f"{path}: unreadable manifest ({exc})") from None
    return Manifest.from_dict(data, str(path))


def confined_path(model_dir: str | os.PathLike[str], manifest: Manifest, role: str) -> Path:
    """The listed, existing regular file of ``role``, resolved inside ``model_dir``."""
    entry = manifest.files.get(role)
    if entry is None:
        raise ManifestError(f"{Path(model_dir) / MANIFEST_NAME}: no '{role}' file listed")
    path = Path(model_dir) / entry.path
    root = Path(model_dir).resolve()
    real = path.resolve()
    if not real.is_relative_to(root):
        raise ManifestError(f"{path}: '{role}' leads outside the model dir (to {real}); "
                            "refusing it")
    if not real.is_file():
        raise ManifestError(f"{path}: listed in the manifest as '{role}' but missing")
    return real


def verify_file(model_dir: str | os.PathLike[str], manifest: Manifest, role: str) -> Path:
    """Return the path of ``role`` after checking it is inside the model dir and matches its
    size and sha256."""
    entry = manifest.files.get(role)
    real = confined_path(model_dir, manifest, role)
    path = Path(model_dir) / entry.path
    size = real.stat().st_size
    if size != entry.bytes:
        raise ManifestError(f"{path}: size mismatch (manifest {entry.bytes} bytes, file {size}); "
                            "refusing to load a model that is not the one the manifest "
                            "describes")
    actual = sha256_file(real)
    if actual != entry.sha256:
        raise ManifestError(
            f"{path}: sha256 mismatch (manifest {entry.sha256[:12]}…, file {actual[:12]}…); "
            "refusing to load a model that is not the one the manifest describes"
        )
    return real


def read_text_file(model_dir: str | os.PathLike[str], manifest: Manifest, role: str) -> str:
    """A verified text file (e.g. labels), bounded in size and decoded as UTF-8."""
    path = verify_file(model_dir, manifest, role)
    if manifest.files[role].bytes > MAX_TEXT_BYTES:
        raise ManifestError(f"{path}: '{role}' is larger than {MAX_TEXT_BYTES >> 20} MiB")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ManifestError(f"{path}: '{role}' is not UTF-8 text ({exc.reason})") from None


def check_expected(manifest: Manifest, expected: str | None, where: str | os.PathLike[str]
                   ) -> None:
    """Refuse a model whose id is not ``expected`` (a full 64-hex-digit id)."""
    if expected is None:
        return
    expected = expected.strip().lower()
    if not SHA_RE.match(expected):
        raise ManifestError(f"--expect-model must be a full model id (64 hex digits), "
                            f"got {expected!r}")
    actual = manifest.model_id()
    if actual != expected:
        raise ManifestError(f"{where}: model id {actual[:16]}… is not the expected "
                            f"{expected[:16]}…; refusing it")
