"""poyo: decode behaviour from spiking populations with POYO-style spike-token models."""

__version__ = "0.1.0"
