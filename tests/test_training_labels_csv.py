"""labels.csv as people write it: a spreadsheet's byte order mark, ';' or tab separators,
spaces after commas, another encoding; rows that repeat, contradict or mistype a label."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import soundfile as sf

from tests.runtime_model import SR, hiss
from training.dataset import LABELS_CSV_COLUMNS, LABELS_CSV_LAYOUT, read_table
from training.extra import read_extra
from training.labelled import read_labelled
from training.mapping import default_mapping

ROWS = [{"file": "a.wav", "label": "danger", "category": "dog_bark", "fold": "1"},
        {"file": "b;c.wav", "label": "safe", "category": "rain", "fold": ""}]


@pytest.mark.parametrize("text", [
    "file,label,category,fold\na.wav,danger,dog_bark,1\n\"b;c.wav\",safe,rain,\n",
    "\ufefffile,label,category,fold\na.wav,danger,dog_bark,1\n\"b;c.wav\",safe,rain,\n",
    "file;label;category;fold\na.wav;danger;dog_bark;1\n\"b;c.wav\";safe;rain;\n",
    "file\tlabel\tcategory\tfold\na.wav\tdanger\tdog_bark\t1\nb;c.wav\tsafe\train\t\n",
    "file, label, category, fold\na.wav,danger,dog_bark,1\n\"b;c.wav\",safe,rain,\n",
], ids=["comma", "bom", "semicolon", "tab", "spaces"])
def test_spreadsheet_csv_variants_read_the_same(tmp_path: Path, text: str) -> None:
    table = tmp_path / "labels.csv"
    table.write_text(text, encoding="utf-8")
    assert read_table(table, LABELS_CSV_COLUMNS, LABELS_CSV_LAYOUT) == ROWS


def test_another_encoding_is_one_line_naming_the_file(tmp_path: Path) -> None:
    table = tmp_path / "labels.csv"
    table.write_bytes("file,label,category\nchien_aboie_é.wav,danger,dog_bark\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"labels.csv: not UTF-8 text .*CSV UTF-8"):
        read_table(table, LABELS_CSV_COLUMNS, LABELS_CSV_LAYOUT)


def folder(root: Path, lines: list[str], names: tuple[str, ...] = ("a.wav", "b.wav"),
           header: str = "file,label,category") -> Path:
    (root / "audio").mkdir(parents=True)
    for name in names:
        sf.write(root / "audio" / name, hiss(1.0), SR)
    (root / "labels.csv").write_text(header + "\n" + "\n".join(lines) + "\n")
    return root


def test_a_mistyped_label_is_a_warning_not_a_silent_skip(tmp_path: Path,
                                                         caplog: pytest.LogCaptureFixture
                                                         ) -> None:
    root = folder(tmp_path / "mine", ["a.wav,dangr,dog_bark", "b.wav,safe,rain",
                                      "c.wav,ambiguous,car_horn"])
    with caplog.at_level(logging.INFO):
        clips = read_extra(root, default_mapping())
    assert [c.path.name for c in clips] == ["b.wav"]
    warned = [r.message for r in caplog.records if r.levelname == "WARNING"]
    assert warned == [f"{root / 'labels.csv'}: 1 row(s) left out: label 'dangr' is not "
                      "danger, safe or ambiguous"]
    assert any("left out 1 ambiguous" in r.message for r in caplog.records
               if r.levelname == "INFO")


def test_a_file_listed_twice(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Read once when both rows say the same (spaces aside), refused when they differ in
    label or fold (a fold held out of training would still train on it); a short row or one
    without a file name is no traceback. The evaluator reads the table the same way."""
    same = folder(tmp_path / "same", ["a.wav,danger,dog_bark", "b.wav , safe , rain",
                                      " a.wav,danger,dog_bark", ",safe,rain", "c.wav,danger"],
                  names=("a.wav", "b.wav", "c.wav"))
    with caplog.at_level(logging.WARNING):
        clips = read_extra(same, default_mapping())
    assert sorted((c.path.name, c.category) for c in clips) == [("a.wav", "dog_bark"),
                                                                ("b.wav", "rain")]
    assert [r.message.split(": ", 1)[1] for r in caplog.records] == [
        "1 row(s) without a file name left out",
        "1 row(s) repeat a file listed above; each file is read once",
        "1 danger clip(s) of category '' belong to no class of the mapping; skipped (add "
        "the category to a class)"]
    assert sorted(c.path.name for c in read_labelled(same)) == ["a.wav", "b.wav", "c.wav"]
    both = folder(tmp_path / "both", ["a.wav,danger,dog_bark", "a.wav,safe,dog_bark"])
    with pytest.raises(ValueError, match=r"labels.csv: a.wav is listed twice \(lines 2 and "
                                         r"3\), as danger dog_bark and as safe dog_bark; keep "
                                         r"one row"):
        read_extra(both, default_mapping())
    folds = folder(tmp_path / "folds", ["a.wav,danger,dog_bark,1", "a.wav,danger,dog_bark,2"],
                   header="file,label,category,fold")
    for read in (lambda: read_extra(folds, default_mapping(), ("1",)),
                 lambda: read_labelled(folds, 1)):
        with pytest.raises(ValueError, match=r"as danger dog_bark fold 1 and as danger "
                                             r"dog_bark fold 2"):
            read()
