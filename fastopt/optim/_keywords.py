"""Keyword checks with a hint: see :mod:`fastopt.kernels._keywords` (the kernels' wrappers use
them too)."""

from ..kernels._keywords import (TORCH_ONLY, TORCH_ONLY_FOR, checked_keywords, keyword_names,
                                 unexpected_keyword)

__all__ = ["checked_keywords", "unexpected_keyword", "keyword_names", "TORCH_ONLY",
           "TORCH_ONLY_FOR"]
