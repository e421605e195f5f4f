"""The POYO model: spike tokens -> rotary PerceiverIO -> one linear head per readout.

What users need: :class:`POYO` (the network; ``POYOConfig`` holds its settings), its
:class:`Tokenizer` (window -> tensors), and pretrained files (:func:`load_pretrained`,
:func:`save_pretrained`). ``BACKENDS`` names the attention implementations. Everything
else lives in its module (``poyo.model.attention``, ``.rotary``, ``.vocab``, ...).
"""

from poyo.model.attention import BACKENDS
from poyo.model.config import POYOConfig
from poyo.model.poyo import POYO
from poyo.model.pretrained import load_pretrained, save_pretrained
from poyo.model.tokenizer import Tokenizer

__all__ = ["BACKENDS", "POYO", "POYOConfig", "Tokenizer", "load_pretrained", "save_pretrained"]
