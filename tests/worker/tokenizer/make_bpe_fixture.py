#!/usr/bin/env python3
"""Writes the parity fixture of the C++ byte-level BPE tokenizer.

Trains a small byte-level BPE with the reference `tokenizers` library on a
generated corpus, derives a few tokenizer.json variants from it (GPT-2 style,
GPT-NeoX/Pythia style with NFC and added tokens, and a Sequence pre-tokenizer
with string merges and ignore_merges), encodes >= 10,000 varied strings with
each, and writes into --out:

  manifest.json              {"configs": {name: {"round_trip": bool}, ...}}
  tokenizer_<name>.json      the tokenizer
  fixture_<name>.jsonl       one {"text": ..., "ids": [...], "decoded": ...} per line

"decoded" is the reference's decoding of the ids with added tokens kept
verbatim (the reference's own decode runs them through the byte-level
decoder, which turns non-ASCII content such as "café" into U+FFFD).
"round_trip" says decoded == text for every string (no normalizer and no
prefix space).

Deterministic (fixed seed), so a failure reproduces.
"""

import argparse
import json
import os
import random
import sys

from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers
from tokenizers import pre_tokenizers, processors, trainers

GPT2_PATTERN = (r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+"
                r"|\s+(?!\S)|\s+")

WORDS = {
    "english": ("the of and to in is was for that with as on by at from it an be "
                "this which or are have not had but were they their one all there "
                "been has more when who will would can model layer token attention "
                "state space representation gradient transformer network").split(),
    "latin1": "café naïve façade résumé jalapeño Zürich Ærøskøbing déjà über coöperate".split(),
    "greek": "αλφα βήτα γάμμα δέλτα λόγος Ελλάδα φιλοσοφία ψυχή ΩΜΕΓΑ".split(),
    "cyrillic": "привет мир язык модель слово Москва ЁЛКА объём щука".split(),
    "arabic": "مرحبا العالم لغة نموذج كلمة الذكاء".split(),
    "hebrew": "שלום עולם שפה מודל מילה".split(),
    "devanagari": "नमस्ते दुनिया भाषा मॉडल शब्द क्षत्रिय".split(),
    "cjk": "你好 世界 语言模型 日本語 東京 漢字 中文分词".split(),
    "kana": "こんにちは カタカナ ひらがな ﾊﾝｶｸ".split(),
    "hangul": "안녕하세요 세계 언어 모델 한국어".split(),
    "thai": "สวัสดี ภาษาไทย โลก".split(),
    "emoji": ["😀", "🚀", "👍🏽", "👩‍💻", "🇯🇵", "❤️", "🧠", "✨", "🤖🤖", "🏳️‍🌈"],
    "numbers": ["0", "7", "42", "2024", "3.14159", "1,000,000", "٣٤٥", "１２３",
                "²³", "Ⅻ", "½", "0x1F", "1e-9", "-273.15", "৪২"],
    "code": ["def f(x):", "return x**2", "if (a && b) {", "}", "std::vector<int>",
             "x->y", "i++;", "#include <cstdio>", "// comment", "/* block */",
             "print(\"hi\")", "a == b != c", "[1, 2, 3]", "{'k': v}", "foo_bar_baz",
             "camelCaseName", "__init__", "$HOME", "@decorator", "`cmd`", "\\n"],
    "punct": [".", ",", "!", "?", "...", "—", "–", "«", "»", "“", "”", "‘", "’", "¿",
              "¡", "§", "©", "®", "™", "€", "£", "¥", "%", "&", "*", "(", ")", "'", "\""],
    "contractions": ["it's", "don't", "we're", "I've", "I'm", "you'll", "he'd",
                     "'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "O'Neil", "rock'n'roll",
                     "IT'S", "'S", "'Re", "''s", "''"],
    # Decomposed forms (NFC changes them) and lone combining marks.
    "combining": ["cafe\u0301", "n\u0303", "a\u0308\u0304", "\u0301", "\u0300\u0301",
                  "e\u0301\u0302", "\u1100\u1161\u11a8", "x\u20dd", "Å", "\u212b"],
}
SPACES = [" ", "  ", "   ", "    ", "\t", "\t\t", "\n", "\n\n", "\r\n", " \n ", " \t",
          "\u00a0", "\u2003", "\u3000", "\u0085", "\u2028", "\u200b", "\u202f", "\v", "\f"]
SPECIALS = ["<|endoftext|>", "<pad>"]
NEOX_ADDED = ["   ", "\t\t", "<mask>", "foo_bar", "café", "[SEP]"]


def random_word(rng, extra):
    category = rng.choice(list(WORDS))
    word = rng.choice(WORDS[category])
    if rng.random() < 0.1:
        word = word.upper() if rng.random() < 0.5 else word.capitalize()
    if rng.random() < 0.05 and extra:
        word = rng.choice(extra)
    return word


def random_code_point(rng):
    """Any scalar value but surrogates, biased toward the BMP."""
    while True:
        top = 0x10FFFF if rng.random() < 0.2 else 0xFFFF
        cp = rng.randint(0x20, top)
        if not 0xD800 <= cp <= 0xDFFF:
            return chr(cp)


def random_text(rng, extra):
    kind = rng.random()
    if kind < 0.08:  # a sweep of arbitrary code points, mixed with ASCII
        return "".join(random_code_point(rng) if rng.random() < 0.6 else rng.choice("a1 .'\t")
                       for _ in range(rng.randint(1, 12)))
    if kind < 0.12:  # pure whitespace, or whitespace around one word
        text = "".join(rng.choice(SPACES) for _ in range(rng.randint(1, 5)))
        return text if rng.random() < 0.5 else text + random_word(rng, extra) + text
    parts = []
    for _ in range(rng.randint(1, 14)):
        r = rng.random()
        if r < 0.6:
            parts.append(random_word(rng, extra))
        elif r < 0.85:
            parts.append(rng.choice(WORDS["punct"]))
        elif r < 0.95:
            parts.append(rng.choice(SPECIALS + extra) if extra or rng.random() < 0.5
                         else rng.choice(SPECIALS))
        else:
            parts.append(random_code_point(rng))
        # Mostly single spaces, sometimes glued, sometimes odd whitespace.
        s = rng.random()
        parts.append(" " if s < 0.7 else "" if s < 0.85 else rng.choice(SPACES))
    text = "".join(parts)
    if rng.random() < 0.5:
        text = text.rstrip(" ")
    if rng.random() < 0.15:
        text = rng.choice(SPACES) + text
    return text


def corpus(rng, n):
    for _ in range(n):
        yield random_text(rng, [])


def fixed_texts():
    """Hand-picked edge cases, always included."""
    texts = ["", " ", "  ", "\t", "\n", "a", " a", "a ", "  a", "a  ", "hello world",
             "Hello, world!", "it's", "don't stop", "we're here", "   leading", "trailing   ",
             "x\t\ty", "x \ty", "x\n\n\ny", "<|endoftext|>", "a<|endoftext|>b",
             " <|endoftext|> ", "<|endoftext|><|endoftext|>", "<pad><|endoftext|>",
             "<|endoftext", "endoftext|>", "<|endoftext|>hello", "hello<pad>",
             "12345678901234567890", "🤖", "👩‍💻👩‍💻", "cafe\u0301 café", "Å\u212b",
             "foo_bar foo_barbaz xfoo_bar (foo_bar)", " <mask> ", "a   b    c",
             "\t\tcode", "   \n   ", "'''", "'s's's", "'S 'Re", "1'000", "x'll've'd",
             "\u00a0\u00a0x", "a\u0085b", "\u3000全角\u3000", "!!!???", "...---...",
             "\U0001F600" * 20, "a" * 300, " " * 50, "ab" * 200]
    texts += [chr(b) for b in range(0x20, 0x7F)]
    return texts


def train(seed):
    rng = random.Random(seed)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=True)
    trainer = trainers.BpeTrainer(
        vocab_size=2000, min_frequency=2, special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(corpus(rng, 20000), trainer)
    return tok


def variants(base):
    """name -> Tokenizer, each exercising other parts of tokenizer.json."""
    out = {"gpt2": base}

    # GPT-NeoX / Pythia: NFC, prefix space, added tokens with every flag.
    neox = Tokenizer.from_str(base.to_str())
    neox.normalizer = normalizers.NFC()
    neox.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    neox.add_tokens([
        AddedToken("   ", normalized=True),
        AddedToken("\t\t", normalized=True),
        AddedToken("foo_bar", single_word=True, normalized=True),
        AddedToken("café", normalized=True),  # also matches decomposed input
    ])
    neox.add_special_tokens([
        AddedToken("<mask>", lstrip=True, rstrip=False, special=True, normalized=False),
        AddedToken("[SEP]", rstrip=True, special=True, normalized=False),
    ])
    out["neox"] = neox

    # A Sequence pre-tokenizer (Split + ByteLevel without regex), merges in
    # the older "a b" string form, and ignore_merges.
    config = json.loads(base.to_str())
    config["pre_tokenizer"] = {
        "type": "Sequence",
        "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": GPT2_PATTERN},
             "behavior": "Isolated", "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
             "use_regex": False},
        ],
    }
    config["model"]["merges"] = [" ".join(m) if isinstance(m, list) else m
                                 for m in config["model"]["merges"]]
    config["model"]["ignore_merges"] = True
    out["sequence"] = Tokenizer.from_str(json.dumps(config))
    return out


def decode_keeping_added(tok, ids):
    added = {id_: t.content for id_, t in tok.get_added_tokens_decoder().items()}
    out, run = [], []
    for id_ in ids:
        if id_ in added:
            out += [tok.decode(run), added[id_]]
            run = []
        else:
            run.append(id_)
    out.append(tok.decode(run))
    return "".join(out)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", required=True, help="fixture directory")
    parser.add_argument("--count", type=int, default=10000, help="random strings per config")
    parser.add_argument("--seed", type=int, default=1234)
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)

    tokenizers_by_name = variants(train(args.seed))
    manifest = {"configs": {}}
    for name, tok in tokenizers_by_name.items():
        rng = random.Random(args.seed + 1)
        extra = NEOX_ADDED if name == "neox" else []
        texts = fixed_texts() + [random_text(rng, extra) for _ in range(args.count)]
        encodings = tok.encode_batch(texts)
        tok.save(os.path.join(args.out, f"tokenizer_{name}.json"))
        round_trip = True
        with open(os.path.join(args.out, f"fixture_{name}.jsonl"), "w", encoding="utf-8") as f:
            for text, enc in zip(texts, encodings):
                decoded = decode_keeping_added(tok, enc.ids)
                round_trip &= decoded == text
                f.write(json.dumps({"text": text, "ids": enc.ids, "decoded": decoded}) + "\n")
        manifest["configs"][name] = {"round_trip": round_trip}
        print(f"{name}: {len(texts)} strings, vocab {tok.get_vocab_size()}, "
              f"round trip {round_trip}", file=sys.stderr)
    if not manifest["configs"]["gpt2"]["round_trip"]:
        sys.exit("reference: Decode(Encode(s)) != s for the GPT-2 style tokenizer")
    with open(os.path.join(args.out, "manifest.json"), "w") as f:
        json.dump(manifest, f)


if __name__ == "__main__":
    main()
