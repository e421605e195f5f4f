"""Import a torch_brain POYO checkpoint once, into poyo's safe pretrained format.

    python -m poyo.model.torch_brain poyo_mp.ckpt poyo_mp.pt --std 20   # then poyo.load_pretrained("poyo_mp.pt")

torch_brain writes Lightning ``.ckpt`` files whose ``state_dict`` keys start with
``model.``, whose vocabularies are ``{id: row}`` dicts with a reserved ``"NA"`` id at row 0,
and whose ``hyper_parameters["model"]`` holds the model settings. The network is the same
as ours (same rotary periods, GEGLU order and layer shapes), and an imported model keeps the
checkpoint's own float32 rotary frequencies, so its outputs equal torch_brain's to float32
rounding (tested against the real library). Only names differ:

    theirs                                   ours
    enc_ffn.0 / dec_ffn.0 (LayerNorm)        enc_ffn.norm / dec_ffn.norm
    {enc,dec}_ffn.1.net.0 / .net.3           {enc,dec}_ffn.proj_in / .proj_out
    proc_layers.i.0.*                        proc_atn.i.*
    proc_layers.i.1.0 / .1.1.net.0 / .net.3  proc_ffn.i.norm / .proj_in / .proj_out
    readout.*                                readout.<head>.*  (one linear head)
    rotary_emb.omega                         kept exactly (config.rotary_omega), after a check
                                             against the periods of its t_min/t_max
    hyper_parameters sequence_length         config.window_length (other windows warn)

Safety: the file is read with ``weights_only=True`` first. Only if it holds pickled
objects, and only with ``allow_pickle=True`` (``--allow-pickle``), is it unpickled: that
runs code from the file, so do it only for files you trust. The result is written in our
format, which never needs pickle again.
"""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Mapping
from pathlib import Path

import torch

from poyo.model.poyo import POYO
from poyo.model.pretrained import save_pretrained
from poyo.model.rotary import periods
from poyo.readouts import ReadoutConfig, get_readout

_RENAMES = [
    (r"(enc|dec)_ffn\.0\.(weight|bias)", r"\1_ffn.norm.\2"),
    (r"(enc|dec)_ffn\.1\.net\.0\.(weight|bias)", r"\1_ffn.proj_in.\2"),
    (r"(enc|dec)_ffn\.1\.net\.3\.(weight|bias)", r"\1_ffn.proj_out.\2"),
    (r"proc_layers\.(\d+)\.0\.((?:norm|to_qkv|to_out)\.(?:weight|bias))", r"proc_atn.\1.\2"),
    (r"proc_layers\.(\d+)\.1\.0\.(weight|bias)", r"proc_ffn.\1.norm.\2"),
    (r"proc_layers\.(\d+)\.1\.1\.net\.0\.(weight|bias)", r"proc_ffn.\1.proj_in.\2"),
    (r"proc_layers\.(\d+)\.1\.1\.net\.3\.(weight|bias)", r"proc_ffn.\1.proj_out.\2"),
    (r"((?:enc|dec)_atn\.(?:norm|norm_context|to_q|to_kv|to_out)\.(?:weight|bias))", r"\1"),
    (r"(token_type_emb|latent_emb)\.weight", r"\1.weight"),
]
_DEFAULTS = dict(
    dim_head=64,
    latent_step=0.125,
    ffn_dropout=0.2,
    lin_dropout=0.4,
    atn_dropout=0.0,
    emb_init_scale=0.02,
    t_min=1e-4,
    t_max=2.0627,
)


def read_checkpoint(path, *, allow_pickle: bool = False) -> dict:
    """The raw checkpoint dict; unpickles only when needed and allowed."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        if not allow_pickle:
            raise RuntimeError(
                f"{path}: the checkpoint holds pickled Python objects ({type(e).__name__}: {str(e).strip().splitlines()[0][:200]}). "
                "Unpickling runs code from the file; if you trust it, pass allow_pickle=True (--allow-pickle)"
            ) from e
    return torch.load(path, map_location="cpu", weights_only=False)


def _vocab(state: Mapping, name: str, path: Path) -> tuple[list[str], torch.Tensor]:
    vocab, weight = state.get(f"{name}.vocab"), state.get(f"{name}.weight")
    if not isinstance(vocab, Mapping) or weight is None:
        raise ValueError(f"{path}: no {name} vocabulary ({name}.vocab as an id -> row dict, and {name}.weight)")
    rows = sorted((int(r), str(i)) for i, r in vocab.items())
    if [r for r, _ in rows] != list(range(len(rows))) or len(rows) != weight.shape[0]:
        raise ValueError(
            f"{path}: {name}.vocab rows are not 0..{weight.shape[0] - 1} for a weight of {weight.shape[0]} rows"
        )
    keep = [(r, i) for r, i in rows if not (r == 0 and i == "NA")]  # torch_brain's reserved padding id
    return [i for _, i in keep], weight[[r for r, _ in keep]].clone()


def _settings(hp: Mapping, state: Mapping, path: Path) -> dict:
    """POYO settings from the hyper-parameters, checked against (or filled from) the weight shapes."""
    hp = {k: v for k, v in dict(hp).items() if k != "_target_"}
    if "num_latents" in hp and "num_latents_per_step" not in hp:  # older configs' name for the same thing
        hp["num_latents_per_step"] = hp.pop("num_latents")
    s = {k: hp.get(k, d) for k, d in _DEFAULTS.items()}
    dim_head = int(s["dim_head"])
    depth = len({int(m.group(1)) for k in state for m in [re.match(r"proc_layers\.(\d+)\.", k)] if m})
    shapes = dict(
        dim=state["latent_emb.weight"].shape[1],
        num_latents_per_step=state["latent_emb.weight"].shape[0],
        depth=depth,
        cross_heads=state["enc_atn.to_q.weight"].shape[0] // dim_head,
        self_heads=state["proc_layers.0.0.to_qkv.weight"].shape[0] // (3 * dim_head)
        if depth
        else int(hp.get("self_heads", 8)),
    )
    clash = {k: (hp[k], v) for k, v in shapes.items() if k in hp and int(hp[k]) != v}
    if clash:
        raise ValueError(
            f"{path}: hyper-parameters disagree with the weight shapes (setting: (hyper-parameter, from weights)): {clash}"
        )
    s.update({k: int(v) for k, v in shapes.items()})
    s["latent_step"], s["t_min"], s["t_max"] = float(s["latent_step"]), float(s["t_min"]), float(s["t_max"])
    return s


def _rotary(state: Mapping, settings: dict, path: Path) -> list[float] | None:
    """The checkpoint's rotary frequencies, kept exactly (torch_brain computes them in float32,
    which moves outputs by up to ~1e-4 from a float64 recomputation); checked against the
    periods its t_min/t_max give, so a checkpoint of another rotary scheme is refused."""
    omega = state.get("rotary_emb.omega")
    if omega is None:
        return None
    ours = 2 * math.pi / periods(settings["dim_head"] // 4, settings["t_min"], settings["t_max"])
    theirs = omega.double().flatten()
    theirs = theirs[theirs != 0]
    if theirs.shape != ours.shape or not torch.allclose(theirs, ours, rtol=1e-4):
        raise ValueError(
            f"{path}: rotary frequencies differ from poyo's for t_min={settings['t_min']}, t_max={settings['t_max']}: {theirs.tolist()[:4]}..."
        )
    return theirs.tolist()


def convert(ckpt: Mapping, *, readout: str = "cursor_velocity_2d", path: Path = Path("<checkpoint>")) -> POYO:
    """A POYO with the weights and vocabularies of a torch_brain checkpoint dict."""
    if "state_dict" not in ckpt:
        raise ValueError(f"{path}: no state_dict; not a Lightning checkpoint")
    state = {k.removeprefix("model."): v for k, v in ckpt["state_dict"].items()}
    hp = (ckpt.get("hyper_parameters") or {}).get("model") or {}
    needed = ["latent_emb.weight", "enc_atn.to_q.weight", "readout.weight"]
    if any(k not in state for k in needed):
        raise ValueError(f"{path}: not a torch_brain POYO checkpoint (missing {[k for k in needed if k not in state]})")
    settings = _settings(hp, state, path)
    settings["rotary_omega"] = _rotary(state, settings, path)
    if hp.get("sequence_length") is not None:  # the window it was trained on
        settings["window_length"] = float(hp["sequence_length"])
    spec = get_readout(readout)
    dim_out = state["readout.weight"].shape[0]
    if spec.dim != dim_out:
        raise ValueError(
            f"{path}: the checkpoint's readout has {dim_out} outputs, readout '{readout}' has {spec.dim}; pick a readout with {dim_out}"
        )

    ours: dict = {}
    for name in ("unit_emb", "session_emb"):
        ids, weight = _vocab(state, name, path)
        ours[f"{name}.vocab"], ours[f"{name}.weight"] = ids, weight
    ours[f"readout.{readout}.weight"], ours[f"readout.{readout}.bias"] = state["readout.weight"], state["readout.bias"]
    handled = {
        "unit_emb.vocab",
        "unit_emb.weight",
        "session_emb.vocab",
        "session_emb.weight",
        "readout.weight",
        "readout.bias",
        "rotary_emb.omega",
    }
    unknown = []
    for key, value in state.items():
        if key in handled:
            continue
        for pattern, repl in _RENAMES:
            if re.fullmatch(pattern, key):
                ours[re.sub(pattern, repl, key)] = value
                break
        else:
            unknown.append(key)
    if unknown:
        raise ValueError(
            f"{path}: weights poyo's POYO has no place for (is this POYO+ or another model?): {unknown[:6]}"
        )
    model = POYO(**settings, readouts=[readout])
    try:
        model.load_state_dict(ours)
    except RuntimeError as e:
        raise RuntimeError(f"{path}: converted weights do not fit: {e}") from e
    return model.eval()


def import_torch_brain(
    path, out=None, *, readout: str = "cursor_velocity_2d", mean=0.0, std=1.0, allow_pickle: bool = False
) -> POYO:
    """Convert a torch_brain POYO checkpoint; with ``out``, also save it in poyo's format.

    ``mean``/``std``: how the checkpoint's training normalised the readout's targets
    (torch_brain keeps this in its dataset config, not in the checkpoint; e.g. std 20 for
    cursor velocity in the POYO-MP recipe).
    """
    path = Path(path)
    model = convert(read_checkpoint(path, allow_pickle=allow_pickle), readout=readout, path=path)
    model.readout_configs = [ReadoutConfig(readout, mean=mean, std=std)]
    if out is not None:
        save_pretrained(model, out, metadata={"imported_from": str(path), "source_format": "torch_brain"})
    return model


def main(argv=None) -> None:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("checkpoint", help="torch_brain Lightning .ckpt")
    p.add_argument("out", help="where to write the poyo pretrained file (.pt)")
    p.add_argument("--readout", default="cursor_velocity_2d", help="poyo readout name for the checkpoint's linear head")
    p.add_argument("--mean", type=float, default=0.0, help="target mean used in the checkpoint's training")
    p.add_argument("--std", type=float, default=1.0, help="target std used in the checkpoint's training (POYO-MP: 20)")
    p.add_argument(
        "--allow-pickle",
        action="store_true",
        help="unpickle the file if it needs it (runs code from it: trusted files only)",
    )
    a = p.parse_args(argv)
    model = import_torch_brain(
        a.checkpoint, a.out, readout=a.readout, mean=a.mean, std=a.std, allow_pickle=a.allow_pickle
    )
    print(
        f"{a.out}: POYO dim={model.config.dim} depth={model.config.depth}, {len(model.unit_emb)} units, "
        f"{len(model.session_emb)} sessions, readout {a.readout}; load it with poyo.load_pretrained({a.out!r})"
    )


if __name__ == "__main__":
    main()
