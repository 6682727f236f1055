"""Character-level text data sets for the LSTM experiments (Section V-B2), and their BPTT batches.

- ``ptb``:    character-level Penn Treebank, the standard files ``ptb.char.{train,valid,test}.txt``
              (from Mikolov's simple-examples.tgz): characters separated by spaces, ``_`` between
              words, one sentence a line; every line end is an end-of-sentence token (as in
              PyTorch's word_language_model reader). Vocabulary: the symbols of all three files.
              Put them in <root>/ptb/.
- ``enwik8``: the first 10^8 bytes of an English Wikipedia XML dump (Hutter Prize), read as raw
              bytes; the usual split: first 90M bytes train, next 5M valid, last 5M test.
              Vocabulary: the byte values that occur. Put ``enwik8`` (or ``enwik8.zip``) in <root>/enwik8/.
- ``pytext``: the offline stand-in for the cpu and smoke profiles, *not* one of the paper's data sets:
              the help topics of the Python standard library (``pydoc_data.topics``, the language
              reference in plain English with code examples; ~465K characters on Python 3.11),
              joined in sorted topic order, split 90/5/5 like enwik8. Shipped with every CPython.

Training batches (``TextStream``) follow the usual stateful truncated-BPTT layout: the training
text is cut into B contiguous streams (one per batch row) and step s reads segment s mod
(segments per epoch) of every stream, T characters plus the next character as target. The batch
of a step depends on the step only, so a resumed run sees the same batches, and the LSTMs' carried
state (bench.models.LSTMLayer) continues exactly where the previous segment ended.
Evaluation (``eval_batches``) reads the split as EVAL_STREAMS contiguous streams in segments of T,
from a zero state, and scores every character but the first of each stream.
"""
from __future__ import annotations

import io
import shlex
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from bench.errors import BenchError

from .spec import DataSpec

PTB_FOLDER, PTB_FILES = "ptb", {s: f"ptb.char.{s}.txt" for s in ("train", "valid", "test")}
PTB_URL = "http://www.fit.vutbr.cz/~imikolov/rnnlm/simple-examples.tgz"
EOS = "\n"  # the end-of-sentence token of ptb (one per line)
ENWIK8_FOLDER, ENWIK8_FILE = "enwik8", "enwik8"
ENWIK8_URL = "http://mattmahoney.net/dc/enwik8.zip"
ENWIK8_SPLIT = (90_000_000, 5_000_000, 5_000_000)  # train, valid, test bytes
PYTEXT_SPLIT = (0.90, 0.05, 0.05)
PYTEXT_SOURCE = "pydoc_data.topics (Python standard library help topics)"
EVAL_STREAMS = 10  # parallel streams when evaluating (fixed, so a BPC never depends on a caller's batch size)
DEFAULT_BPTT = 150


@dataclass
class TextData:
    """A character-level data set: token ids of the three splits and the symbol of every id."""

    name: str
    vocab: list[str]         # symbol of each id (a character, or a byte shown as \\xNN)
    train: torch.Tensor      # token ids, 1-D, uint8 where the vocabulary allows (converted per batch)
    valid: torch.Tensor
    test: torch.Tensor
    source: str
    bptt: int = DEFAULT_BPTT  # characters per segment; the runner sets the run's value
    augment: bool = False

    @property
    def num_classes(self) -> int:
        return len(self.vocab)

    @property
    def input_shape(self) -> tuple[int]:
        return (self.bptt,)

    def split(self, name: str) -> torch.Tensor:
        if name not in ("train", "valid", "test"):
            raise BenchError(f"unknown split {name!r}; choose 'train', 'valid' or 'test'")
        return getattr(self, name)

    def stream(self, batch_size: int, seed: int = 0, device="cpu") -> "TextStream":
        return TextStream(self, batch_size, seed, device)

    def eval_batches(self, batch_size: int, device, split: str = "test", limit: int | None = None):
        return eval_batches(self, batch_size, device, split, limit)

    def with_bptt(self, bptt: int) -> "TextData":
        if bptt < 1:
            raise BenchError(f"--bptt must be >= 1, got {bptt}")
        self.bptt = bptt
        return self

    def unigram_bpc(self, split: str = "test") -> float:
        """Entropy (bits per character) of the split's own character frequencies: the BPC of the best
        context-free model of that text, the bar a language model has to clear."""
        counts = torch.bincount(self.split(split).long(), minlength=self.num_classes).double()
        p = counts[counts > 0] / counts.sum()
        return float(-(p * p.log2()).sum())


def _ids(tokens: np.ndarray) -> torch.Tensor:
    dtype = np.uint8 if tokens.max(initial=0) < 256 else np.int32
    return torch.from_numpy(np.ascontiguousarray(tokens, dtype=dtype))


# ---------------------------------------------------------------------------------------------------
# Readers


def read_ptb_char(path: Path) -> list[str]:
    """Symbols of one ptb.char.*.txt file: the space-separated characters of each line, then EOS."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise BenchError(f"cannot read {path}: {' '.join(str(err).split())}") from None
    symbols: list[str] = []
    for n, line in enumerate(text.splitlines(), 1):
        chars = line.split()
        long = next((c for c in chars if len(c) != 1), None)
        if long is not None:
            raise BenchError(f"{path}:{n} is not in the ptb.char format (one character per space-separated "
                             f"token): found {long[:20]!r}; is this the word-level ptb.*.txt?")
        symbols += chars
        symbols.append(EOS)
    if not symbols:
        raise BenchError(f"{path} is empty")
    return symbols


def load_ptb(root: Path) -> TextData:
    folder = Path(root) / PTB_FOLDER
    splits = {s: read_ptb_char(folder / f) for s, f in PTB_FILES.items()}
    vocab = sorted(set().union(*splits.values()))
    index = {c: i for i, c in enumerate(vocab)}
    ids = {s: _ids(np.array([index[c] for c in sym], dtype=np.int64)) for s, sym in splits.items()}
    return TextData("ptb", vocab, ids["train"], ids["valid"], ids["test"], str(folder))


def _enwik8_bytes(folder: Path) -> tuple[bytes, str]:
    raw, zipped = folder / ENWIK8_FILE, folder / f"{ENWIK8_FILE}.zip"
    try:
        if raw.is_file():
            return raw.read_bytes(), str(raw)
        with zipfile.ZipFile(zipped) as z:
            return z.read(ENWIK8_FILE), str(zipped)
    except (OSError, KeyError, zipfile.BadZipFile) as err:
        raise BenchError(f"cannot read enwik8 from {folder}: {' '.join(str(err).split())}") from None


def split_bytes(data: bytes, sizes: tuple[int, int, int], name: str = "enwik8",
                source: str = "") -> TextData:
    """Raw bytes -> TextData: ids over the byte values that occur; train/valid/test = consecutive
    `sizes` bytes (enwik8: 90M/5M/5M, which must add up to the whole file)."""
    if len(data) != sum(sizes):
        raise BenchError(f"{name} in {source or 'the input'} has {len(data):,} bytes; the {'/'.join(map(str, sizes))} "
                         f"split needs exactly {sum(sizes):,} (truncated or not the enwik8 file?)")
    arr = np.frombuffer(data, dtype=np.uint8)
    present = np.flatnonzero(np.bincount(arr, minlength=256))
    lookup = np.zeros(256, dtype=np.uint8)
    lookup[present] = np.arange(len(present), dtype=np.uint8)
    ids = lookup[arr]
    a, b = sizes[0], sizes[0] + sizes[1]
    vocab = [chr(v) if 32 <= v < 127 else f"\\x{v:02x}" for v in present]
    return TextData(name, vocab, _ids(ids[:a]), _ids(ids[a:b]), _ids(ids[b:]), source)


def load_enwik8(root: Path, sizes: tuple[int, int, int] = ENWIK8_SPLIT) -> TextData:
    data, source = _enwik8_bytes(Path(root) / ENWIK8_FOLDER)
    return split_bytes(data, sizes, "enwik8", source)


def pytext_string() -> str:
    from pydoc_data.topics import topics  # standard library: always there, offline

    return "\n".join(topics[k].strip() for k in sorted(topics)) + "\n"


def split_text(text: str, fractions: tuple[float, float, float], name: str, source: str) -> TextData:
    """A string -> TextData over its characters; contiguous train/valid/test by the given fractions."""
    vocab = sorted(set(text))
    index = {c: i for i, c in enumerate(vocab)}
    ids = np.array([index[c] for c in text], dtype=np.int64)
    a = int(len(ids) * fractions[0])
    b = a + int(len(ids) * fractions[1])
    return TextData(name, vocab, _ids(ids[:a]), _ids(ids[a:b]), _ids(ids[b:]), source)


def load_pytext() -> TextData:
    import sys

    return split_text(pytext_string(), PYTEXT_SPLIT, "pytext", f"{PYTEXT_SOURCE}, Python {sys.version.split()[0]}")


# ---------------------------------------------------------------------------------------------------
# Availability, loading and download (the registry's functions)


def _hint(name: str, root: Path) -> str:
    return f"or run `python -m bench download {name} --data-root {shlex.quote(str(root))}` on a machine with internet"


def check_available(name: str, root: Path) -> None:
    """One-line BenchError naming the missing files and how to get them; reads no data."""
    root = Path(root)
    if name == "ptb":
        folder = root / PTB_FOLDER
        missing = [f for f in PTB_FILES.values() if not (folder / f).is_file()]
        if missing:
            raise BenchError(f"ptb data not found: missing {', '.join(str(folder / f) for f in missing)}; put "
                             f"ptb.char.train.txt, ptb.char.valid.txt and ptb.char.test.txt (data/ of simple-examples.tgz, "
                             f"{PTB_URL}) in {folder}, {_hint(name, root)}")
    elif name == "enwik8":
        folder = root / ENWIK8_FOLDER
        if not ((folder / ENWIK8_FILE).is_file() or (folder / f"{ENWIK8_FILE}.zip").is_file()):
            raise BenchError(f"enwik8 data not found: missing {folder / ENWIK8_FILE} (or {ENWIK8_FILE}.zip); put the "
                             f"file from {ENWIK8_URL} in {folder}, {_hint(name, root)}")


def download(name: str, root: Path) -> None:
    """Fetch ptb (the three char files out of simple-examples.tgz) or enwik8.zip into <root>."""
    import tarfile
    import urllib.request

    root = Path(root)
    if name == "pytext":
        return
    url = PTB_URL if name == "ptb" else ENWIK8_URL
    folder = root / (PTB_FOLDER if name == "ptb" else ENWIK8_FOLDER)
    try:
        with urllib.request.urlopen(url, timeout=60) as r:
            blob = r.read()
        folder.mkdir(parents=True, exist_ok=True)
        if name == "enwik8":
            (folder / f"{ENWIK8_FILE}.zip").write_bytes(blob)
        else:
            with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tar:
                for f in PTB_FILES.values():
                    member = tar.extractfile(f"./simple-examples/data/{f}") or tar.extractfile(f"simple-examples/data/{f}")
                    (folder / f).write_bytes(member.read())
    except Exception as err:
        raise BenchError(f"download of {name} from {url} failed ({' '.join(str(err).split()) or type(err).__name__}); "
                         f"fetch it on a machine with internet and put it in {folder}") from None
    check_available(name, root)


# ---------------------------------------------------------------------------------------------------
# Batches


class TextStream:
    """Training segments: row b of every batch continues row b of the previous one (stateful TBPTT).

    `batch(step)` -> (x, y), both (B, T) int64: x = characters [j*T, (j+1)*T) of each of the B streams,
    y = the next character of each, with j = step mod segments_per_epoch. Deterministic in the step."""

    def __init__(self, ds: TextData, batch_size: int, seed: int = 0, device: torch.device | str = "cpu"):
        self.ds, self.batch_size, self.seed, self.device = ds, batch_size, seed, torch.device(device)
        self.bptt = ds.bptt
        n = len(ds.train)
        per_stream = n // batch_size if batch_size > 0 else 0
        self.steps_per_epoch = (per_stream - 1) // self.bptt if per_stream > 1 else 0
        if batch_size < 1 or self.steps_per_epoch < 1:
            raise BenchError(f"{ds.name}: {n} training characters cannot fill one segment of {batch_size} streams "
                             f"x {self.bptt + 1} characters (lower --batch-size or --bptt)")
        self._data = ds.train[:batch_size * per_stream].view(batch_size, per_stream).to(self.device)

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        a = (step % self.steps_per_epoch) * self.bptt
        seg = self._data[:, a:a + self.bptt + 1].long()
        return seg[:, :-1], seg[:, 1:]


def eval_batches(ds: TextData, batch_size: int, device, split: str = "test", limit: int | None = None,
                 streams: int = EVAL_STREAMS):
    """(x, y) segments over a split as `streams` contiguous streams (batch_size is not used: the stream
    count is fixed so the BPC is comparable across callers); `limit` caps the characters read."""
    tokens = ds.split(split)
    if limit is not None:
        tokens = tokens[:limit + 1]
    per_stream = (len(tokens) - 1) // streams
    if per_stream < 1:
        raise BenchError(f"{ds.name} {split}: {len(tokens)} characters are too few for {streams} evaluation streams")
    x = tokens[:streams * per_stream].view(streams, per_stream)
    y = tokens[1:streams * per_stream + 1].view(streams, per_stream)
    for a in range(0, per_stream, ds.bptt):
        yield x[:, a:a + ds.bptt].long().to(device), y[:, a:a + ds.bptt].long().to(device)


SPECS = [
    DataSpec("ptb", "text", check=lambda root: check_available("ptb", root), load=load_ptb,
             download=lambda root: download("ptb", root), num_classes=50, files="ptb/ptb.char.{train,valid,test}.txt"),
    DataSpec("enwik8", "text", check=lambda root: check_available("enwik8", root), load=load_enwik8,
             download=lambda root: download("enwik8", root), files="enwik8/enwik8 (or enwik8.zip)"),
    DataSpec("pytext", "text", check=lambda root: None, load=lambda root: load_pytext(), download=None,
             files="(none: the Python standard library's help text)"),
]
