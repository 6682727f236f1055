"""Text readers on tiny files in the real formats: ptb.char.*.txt (space-separated characters, `_`
between words, one sentence a line) and enwik8 (raw bytes, 90M/5M/5M split, here scaled down)."""
from __future__ import annotations

import zipfile

import pytest
import torch

from bench import data as datasets
from bench.data import text
from bench.errors import BenchError

PTB_LINES = {
    "train": [" a e r _ b a n k n o t e _ b e r l i t z ", " p i e r r e _ < u n k > _ N _ y e a r s "],
    "valid": [" c o n s u m e r s _ m a y "],
    "test": [" n o _ i t _ w a s _ n ' t ", " $ _ N . N "],
}


def write_ptb(root, lines=PTB_LINES):
    folder = root / "ptb"
    folder.mkdir(parents=True)
    for split, rows in lines.items():
        (folder / f"ptb.char.{split}.txt").write_text("\n".join(rows) + "\n")
    return root


def decode(ds, ids):
    return "".join(ds.vocab[i] for i in ids.tolist())


def test_ptb_char_reader(tmp_path):
    ds = datasets.load_dataset("ptb", write_ptb(tmp_path))
    assert isinstance(ds, text.TextData) and ds.name == "ptb"
    # characters in order, `_` kept as the word boundary, one end-of-sentence token per line
    assert decode(ds, ds.train) == "aer_banknote_berlitz\npierre_<unk>_N_years\n"
    assert decode(ds, ds.test) == "no_it_was_n't\n$_N.N\n"
    assert len(ds.valid) == len("consumers_may") + 1
    assert ds.vocab == sorted(set("".join(decode(ds, t) for t in (ds.train, ds.valid, ds.test))))
    assert ds.train.dtype == torch.uint8 and ds.input_shape == (text.DEFAULT_BPTT,)


def test_ptb_word_level_file_is_refused(tmp_path):
    write_ptb(tmp_path)
    (tmp_path / "ptb" / "ptb.char.train.txt").write_text(" aer banknote berlitz\n")
    with pytest.raises(BenchError, match="not in the ptb.char format"):
        datasets.load_dataset("ptb", tmp_path)


def test_ptb_missing_files_name_them(tmp_path):
    (tmp_path / "ptb").mkdir()
    (tmp_path / "ptb" / "ptb.char.train.txt").write_text(" a\n")
    with pytest.raises(BenchError) as err:
        datasets.check_available("ptb", tmp_path)
    msg = str(err.value)
    assert "ptb.char.valid.txt" in msg and "ptb.char.test.txt" in msg and "simple-examples" in msg
    assert "\n" not in msg


ENWIK8_BYTES = (b"<mediawiki>\n  <page>\n    <title>AccessibleComputing</title>\n" * 3)[:90] + "é".encode() + b"[[x]]"


def test_enwik8_split_scaled(tmp_path):
    """The 90/5/5 split, scaled to 100 bytes; ids over the byte values present (multi-byte UTF-8 kept as bytes)."""
    assert len(ENWIK8_BYTES) == 97
    data = ENWIK8_BYTES + b"\n\n\n"
    ds = text.split_bytes(data, (90, 5, 5), source="tiny")
    assert (len(ds.train), len(ds.valid), len(ds.test)) == (90, 5, 5)
    present = sorted(set(data))
    assert ds.num_classes == len(present)
    back = bytes(present[i] for i in torch.cat([ds.train, ds.valid, ds.test]).tolist())
    assert back == data
    assert "\\xc3" in ds.vocab  # the first byte of "é"
    with pytest.raises(BenchError, match="needs exactly 100"):
        text.split_bytes(data[:-1], (90, 5, 5))


@pytest.mark.parametrize("zipped", [False, True])
def test_enwik8_file_or_zip(tmp_path, zipped):
    folder = tmp_path / "enwik8"
    folder.mkdir()
    data = ENWIK8_BYTES + b"abc"
    if zipped:
        with zipfile.ZipFile(folder / "enwik8.zip", "w") as z:
            z.writestr("enwik8", data)
    else:
        (folder / "enwik8").write_bytes(data)
    datasets.check_available("enwik8", tmp_path)
    ds = text.load_enwik8(tmp_path, sizes=(90, 5, 5))
    assert bytes(sorted(set(data)))[ds.test[-1]] == ord("c")
    with pytest.raises(BenchError, match="100,000,000"):
        text.load_enwik8(tmp_path)  # the real split needs the whole file


def test_enwik8_missing_is_one_line(tmp_path):
    with pytest.raises(BenchError, match="enwik8 data not found") as err:
        datasets.check_available("enwik8", tmp_path)
    assert "\n" not in str(err.value)


def test_download_offline_is_a_clear_error(tmp_path, monkeypatch):
    import urllib.request

    def offline(*a, **k):
        raise OSError("network is unreachable")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(BenchError, match="download of ptb .* failed .*network is unreachable"):
        datasets.download("ptb", tmp_path)


def test_pytext_is_real_text_offline(tmp_path):
    ds = datasets.load_dataset("pytext", tmp_path)  # needs no files: the standard library ships it
    n = len(ds.train) + len(ds.valid) + len(ds.test)
    assert n > 300_000 and len(ds.test) == pytest.approx(0.05 * n, abs=2)
    sample = decode(ds, ds.train[:2000])
    assert "statement" in sample or "expression" in sample
    assert 3.5 < ds.unigram_bpc("test") < 5.5
    assert "pydoc_data" in ds.source


def test_eval_batches_cover_the_split_in_streams():
    ds = text.TextData("t", list("ab"), torch.zeros(10, dtype=torch.uint8), torch.zeros(3, dtype=torch.uint8),
                       torch.arange(23, dtype=torch.int32) % 2, "t", bptt=4)
    segments = list(text.eval_batches(ds, 500, "cpu", streams=2))
    x = torch.cat([s[0] for s in segments], dim=1)
    y = torch.cat([s[1] for s in segments], dim=1)
    assert x.shape == (2, 11) and torch.equal(x[0], torch.arange(11) % 2) and torch.equal(y[1], (torch.arange(12, 23)) % 2)
    assert [s[0].shape[1] for s in segments] == [4, 4, 3]
    limited = list(text.eval_batches(ds, 500, "cpu", streams=2, limit=8))
    assert sum(s[0].numel() for s in limited) == 8
