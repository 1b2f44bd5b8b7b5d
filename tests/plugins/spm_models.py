"""SentencePiece ``.model`` files trained here by the ``sentencepiece`` package, one per option
set the parity tests cover, and the held-back multilingual text they are checked on."""
from __future__ import annotations

from pathlib import Path

from conftest import HARD_CASES, fixture_text

#: lines the models train on besides the pydoc slice, so every script below has pieces
TRAINING_LINES = [
    "Привет, как дела? Москва — столица России.", "日本語のテキストです。東京は大きい都市です。",
    "中文文本测试，北京欢迎你。", "مرحبا بالعالم، هذه جملة عربية.", "Ünïcödé façade naïve café résumé",
    "ＦＵＬＬ　ｗｉｄｔｈ　１２３", "emoji 😀🎉 👍🏽 family 👨\u200d👩\u200d👧", "numbers 12345 and 3.14159",
]

#: text none of the models saw: scripts, forms and whitespace that normalisation changes
HELD_BACK = HARD_CASES + [
    "Съешь же ещё этих мягких французских булок, да выпей чаю.", "Широкая электрификация южных губерний",
    "敏捷的棕色狐狸跳过了懒狗。", "吾輩は猫である。名前はまだ無い。", "カタカナとひらがな、漢字まじり",
    "الثعلب البني السريع يقفز فوق الكلب الكسول", "Ｈｅｌｌｏ，　Ｗｏｒｌｄ！　１２３４５", "ｶﾀｶﾅ ﾊﾝｶｸ",
    "ﬁnal ﬂow ½ ⅷ ㎏ ℃ ™ ①②③", "😀😃😄 🇯🇵🇺🇸 👩🏾\u200d💻 🏳️\u200d🌈", "\x00\x01\x02 control \x1b[31m red \x7f",
    "tab\tnew\nline\r\ncarriage\rreturn", "many     spaces    between   words", "   \u3000 leading ideographic space",
    "trailing spaces and tabs \t \t", "Zero\u200bwidth\u200cjoiners\u200d and \ufeff marks", "ǅ ß ẞ İ ΣΑΣ ﬀ",
    "foo bar<sep>baz [MASK] <cls> in text", "▁already▁escaped ▁", "digits 0123456789 ٠١٢٣ ０１２",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝐛𝐨𝐥𝐝 ℌ𝔦𝔩𝔟𝔢𝔯𝔱", "e\u0301 combining a\u0308 o\u0302\u0323", "¨ ´ ¸ spacing marks",
]

#: name -> SentencePieceTrainer options (vocabularies small, so training takes a moment)
OPTION_SETS = {
    "unigram-nmt_nfkc": dict(model_type="unigram", vocab_size=500),
    "unigram-nfkc-byte_fallback": dict(model_type="unigram", vocab_size=800, normalization_rule_name="nfkc",
                                       byte_fallback=True, character_coverage=0.98),
    "unigram-nmt_nfkc_cf-split_digits": dict(model_type="unigram", vocab_size=500,
                                             normalization_rule_name="nmt_nfkc_cf", split_digits=True),
    "unigram-identity-no_dummy_prefix": dict(model_type="unigram", vocab_size=500,
                                             normalization_rule_name="identity", add_dummy_prefix=False),
    "unigram-user_defined": dict(model_type="unigram", vocab_size=500, control_symbols=["<cls>"],
                                 user_defined_symbols=["<sep>", "foo bar", "[MASK]"], pad_id=3),
    # pieces across words (no word cache) and whitespace-only pieces ("▁▁▁": a word starts
    # at a space run's first space)
    "unigram-no_split_by_whitespace": dict(model_type="unigram", vocab_size=500, split_by_whitespace=False),
    "unigram-whitespace_pieces-keep_spaces": dict(model_type="unigram", vocab_size=500,
                                                  allow_whitespace_only_pieces=True,
                                                  remove_extra_whitespaces=False),
    "bpe-nmt_nfkc": dict(model_type="bpe", vocab_size=500),
    "bpe-identity-byte_fallback-keep_spaces": dict(model_type="bpe", vocab_size=800, byte_fallback=True,
                                                   normalization_rule_name="identity",
                                                   remove_extra_whitespaces=False, character_coverage=0.98),
    "bpe-nmt_nfkc_cf-user_defined-split_digits": dict(model_type="bpe", vocab_size=500, split_digits=True,
                                                      normalization_rule_name="nmt_nfkc_cf",
                                                      user_defined_symbols=["<sep>"]),
}


def training_corpus(folder: Path) -> Path:
    lines = [line for line in fixture_text()[:60000].splitlines() if line.strip()]
    path = folder / "corpus.txt"
    path.write_text("\n".join(lines + TRAINING_LINES * 20) + "\n", encoding="utf-8")
    return path


def held_back_paragraphs() -> list[str]:
    """Paragraphs of the slice past what the models trained on."""
    return [p for p in fixture_text()[60000:140000].split("\n\n") if p.strip()]


def train_models(folder: Path) -> dict[str, Path]:
    import sentencepiece

    corpus = training_corpus(folder)
    models = {}
    for name, options in OPTION_SETS.items():
        prefix = folder / name
        sentencepiece.SentencePieceTrainer.train(input=str(corpus), model_prefix=str(prefix), minloglevel=2,
                                                 num_threads=1, **options)
        models[name] = prefix.with_suffix(".model")
    return models
