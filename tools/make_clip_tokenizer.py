"""Write resources/checkpoints/clip_tokenizer/{vocab.json,merges.txt}: the CLIP byte-level BPE in the
files transformers' CLIPTokenizer reads, from the merges list OpenAI published with CLIP
(`bpe_simple_vocab_16e6.txt.gz`, MIT licence; open_clip_torch ships a copy).

Every CLIP text encoder of SD 1.x, 2.x and SDXL uses this one vocabulary; only the padding token
differs (see each config folder's tokenizer*/tokenizer_config.json). The vocabulary is built the way
CLIP's own SimpleTokenizer builds it: the 256 byte characters, the same with "</w>", one entry per
merge, then the two special tokens (49,408 entries).

    python tools/make_clip_tokenizer.py path/to/bpe_simple_vocab_16e6.txt.gz
"""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engines.testing import bytes_to_unicode  # noqa: E402  (the byte table the test tokenizer uses too)

MERGES = 49152 - 256 - 2  # CLIP uses the first 48,894 merges of the file


def main(source: str) -> None:
    lines = gzip.open(source, "rt", encoding="utf-8").read().split("\n")
    merges = [tuple(line.split()) for line in lines[1 : MERGES + 1]]
    vocab = list(bytes_to_unicode().values())
    vocab += [v + "</w>" for v in vocab]
    vocab += ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    out = ROOT / "resources" / "checkpoints" / "clip_tokenizer"
    out.mkdir(parents=True, exist_ok=True)
    (out / "vocab.json").write_text(json.dumps({token: i for i, token in enumerate(vocab)}, ensure_ascii=False), encoding="utf-8")
    (out / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n", encoding="utf-8")
    print(f"{len(vocab)} tokens, {len(merges)} merges -> {out}")


if __name__ == "__main__":
    main(sys.argv[1])
