"""The POYO model: tokenizer -> embeddings -> rotary PerceiverIO -> readouts."""

from poyo.model.attention import BACKENDS, Layout, attend
from poyo.model.poyo import POYO, layout_of, targets
from poyo.model.pretrained import load_pretrained, save_pretrained
from poyo.model.readout import READOUTS, ReadoutSpec, get_readout, readout_loss, register_readout
from poyo.model.rotary import RotaryTime, Rotation, periods
from poyo.model.tokenizer import ReadoutConfig, Tokenizer, latent_grid
from poyo.model.vocab import VocabEmbedding

__all__ = [
    "BACKENDS",
    "POYO",
    "READOUTS",
    "Layout",
    "ReadoutConfig",
    "ReadoutSpec",
    "RotaryTime",
    "Rotation",
    "Tokenizer",
    "VocabEmbedding",
    "attend",
    "get_readout",
    "latent_grid",
    "layout_of",
    "load_pretrained",
    "periods",
    "readout_loss",
    "register_readout",
    "save_pretrained",
    "targets",
]
