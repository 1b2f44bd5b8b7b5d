"""The conformance kit: contract checks a plugin author runs over their components in one line.

    from modkit.testing import check_tokenizer, check_backbone, check_peft, check_objective, check_optimizer
    check_backbone(MyBackbone(MyOptions(vocab_size=100)))

Each check raises AssertionError saying which part of the contract failed. modkit runs the
same checks over every registered component (tests/contracts/).
"""
from modkit.testing.backbones import check_backbone
from modkit.testing.objectives import check_objective
from modkit.testing.optimizers import check_optimizer
from modkit.testing.peft import check_peft
from modkit.testing.sources import check_source
from modkit.testing.tokenizers import SAMPLE_TEXTS, check_tokenizer

__all__ = ["SAMPLE_TEXTS", "check_backbone", "check_objective", "check_optimizer", "check_peft", "check_source",
           "check_tokenizer"]
