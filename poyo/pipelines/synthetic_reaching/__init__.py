"""Synthetic primate reaching brainset: the embedded default dataset (no download)."""

from poyo.pipelines.synthetic_reaching.generate import (
    BRAINSET_ID,
    SyntheticConfig,
    ensure,
    generate,
    is_current,
    session_arrays,
    simulate_session,
)

__all__ = ["BRAINSET_ID", "SyntheticConfig", "ensure", "generate", "is_current", "session_arrays", "simulate_session"]
